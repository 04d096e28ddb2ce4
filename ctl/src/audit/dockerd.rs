//! dockerd's effective configuration for the daemon checks: its command line
//! over its config file (dockerd refuses to start when both set one option,
//! so either source is authoritative for the options it sets).
//!
//! `docker info` does not report no-new-privileges, userland-proxy, the
//! listeners or their TLS settings, so these come from the process itself:
//! `/proc/<pid>/cmdline` of dockerd and the file its `--config-file` names.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// The config file dockerd reads when `--config-file` is not given.
pub const DEFAULT_CONFIG: &str = crate::daemon_json::DEFAULT_PATH;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonConfig {
    /// `-H`/`--host` and `"hosts"`: `unix:///…`, `tcp://…`, `fd://`.
    pub hosts: Vec<String>,
    pub tlsverify: bool,
    pub tlscacert: bool,
    pub tlscert: bool,
    pub tlskey: bool,
    /// `--icc` / `"icc"`; `None`: not set (dockerd's default, on).
    pub icc: Option<bool>,
    pub userns_remap: Option<String>,
    pub no_new_privileges: bool,
    pub live_restore: bool,
    /// On unless set to false.
    pub userland_proxy: bool,
    /// The config file that was read (or would have been).
    pub config_file: PathBuf,
}

/// Flags that take a value (the next word when not given as `--name=value`);
/// the others read are booleans.
const VALUE_FLAGS: [&str; 6] = ["host", "tlscacert", "tlscert", "tlskey", "userns-remap", "config-file"];

/// One flag as given: `--name`, `--name=value`, `--name value`, `-H value`.
#[derive(Debug, PartialEq, Eq)]
struct Flag {
    name: String,
    value: Option<String>,
}

fn flags(args: &[String]) -> Vec<Flag> {
    let mut out = Vec::new();
    let mut i = 1; // args[0] is the program
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let (name, inline) = if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (long.to_owned(), None),
            }
        } else if let Some(short) = arg.strip_prefix("-H") {
            ("host".to_owned(), Some(short.trim_start_matches('=').to_owned()).filter(|s| !s.is_empty()))
        } else {
            continue;
        };
        let value = match inline {
            Some(v) => Some(v),
            // A value flag takes the next word; a bool flag never does (pflag).
            None if VALUE_FLAGS.contains(&name.as_str()) && i < args.len() => {
                i += 1;
                Some(args[i - 1].clone())
            }
            None => None,
        };
        out.push(Flag { name, value });
    }
    out
}

fn truthy(v: Option<&str>) -> bool {
    // pflag: a bare bool flag is true; `=false`/`=0` turn it off.
    !matches!(v, Some("false" | "0" | "f" | "F" | "FALSE" | "False"))
}

/// The config file dockerd reads, from its command line.
pub fn config_file(args: &[String]) -> PathBuf {
    flags(args)
        .into_iter()
        .filter(|f| f.name == "config-file")
        .filter_map(|f| f.value)
        .next_back()
        .map_or_else(|| PathBuf::from(DEFAULT_CONFIG), PathBuf::from)
}

/// Pure: dockerd's command line and parsed config file → the options.
pub fn effective(args: &[String], json: Option<&Value>) -> DaemonConfig {
    let mut cfg = DaemonConfig { userland_proxy: true, config_file: config_file(args), ..Default::default() };
    if let Some(Value::Object(map)) = json {
        let b = |k: &str| map.get(k).and_then(Value::as_bool);
        let s = |k: &str| map.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
        if let Some(Value::Array(hosts)) = map.get("hosts") {
            cfg.hosts.extend(hosts.iter().filter_map(Value::as_str).map(str::to_owned));
        }
        cfg.tlsverify = b("tlsverify").unwrap_or(false);
        (cfg.tlscacert, cfg.tlscert, cfg.tlskey) =
            (s("tlscacert").is_some(), s("tlscert").is_some(), s("tlskey").is_some());
        cfg.icc = b("icc");
        cfg.userns_remap = s("userns-remap").map(str::to_owned);
        cfg.no_new_privileges = b("no-new-privileges").unwrap_or(false);
        cfg.live_restore = b("live-restore").unwrap_or(false);
        cfg.userland_proxy = b("userland-proxy").unwrap_or(true);
    }
    for f in flags(args) {
        let v = f.value.as_deref();
        match f.name.as_str() {
            "host" => cfg.hosts.extend(v.map(str::to_owned)),
            "tlsverify" => cfg.tlsverify = truthy(v),
            "tlscacert" => cfg.tlscacert = v.is_some_and(|s| !s.is_empty()),
            "tlscert" => cfg.tlscert = v.is_some_and(|s| !s.is_empty()),
            "tlskey" => cfg.tlskey = v.is_some_and(|s| !s.is_empty()),
            "icc" => cfg.icc = Some(truthy(v)),
            "userns-remap" => cfg.userns_remap = v.filter(|s| !s.is_empty()).map(str::to_owned),
            "no-new-privileges" => cfg.no_new_privileges = truthy(v),
            "live-restore" => cfg.live_restore = truthy(v),
            "userland-proxy" => cfg.userland_proxy = truthy(v),
            _ => {}
        }
    }
    cfg
}

/// dockerd's command line: from its pid file, else the first process named
/// `dockerd` in `proc`.
pub fn dockerd_cmdline(proc: &Path, pid_file: &Path) -> Result<Vec<String>, String> {
    let by_pid = |pid: &str| -> Option<Vec<String>> {
        let comm = fs::read_to_string(proc.join(pid).join("comm")).ok()?;
        if comm.trim() != "dockerd" {
            return None;
        }
        let raw = fs::read(proc.join(pid).join("cmdline")).ok()?;
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        (!args.is_empty()).then_some(args)
    };
    if let Some(args) = fs::read_to_string(pid_file).ok().and_then(|p| by_pid(p.trim())) {
        return Ok(args);
    }
    let entries = fs::read_dir(proc).map_err(|e| format!("cannot list {}: {e}", proc.display()))?;
    entries
        .flatten()
        .filter_map(|e| {
            e.file_name().to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())).map(str::to_owned)
        })
        .find_map(|pid| by_pid(&pid))
        .ok_or_else(|| {
            "no dockerd process is visible (remote or rootless engine, or another PID namespace)".into()
        })
}

/// The parsed config file: `Ok(None)` when it does not exist.
pub fn read_config(path: &Path) -> Result<Option<Value>, String> {
    match fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => serde_json::from_str(text.trim_start_matches('\u{feff}'))
            .map(Some)
            .map_err(|e| format!("{} is not valid JSON: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn flags_override_the_file_and_defaults_hold() {
        let c = effective(&args("dockerd --host unix:///var/run/docker.sock"), None);
        assert_eq!(c.hosts, ["unix:///var/run/docker.sock"]);
        assert!(c.userland_proxy && !c.no_new_privileges && !c.live_restore && c.icc.is_none());
        assert_eq!(c.config_file, PathBuf::from("/etc/docker/daemon.json"));
        let file = json!({"icc": false, "no-new-privileges": true, "userland-proxy": false,
                          "hosts": ["tcp://0.0.0.0:2376"], "tlsverify": true, "tlscacert": "/ca.pem"});
        let c =
            effective(&args("dockerd -H fd:// --live-restore --icc=true --config-file /x.json"), Some(&file));
        assert_eq!(c.hosts, ["tcp://0.0.0.0:2376", "fd://"]);
        assert_eq!(c.icc, Some(true));
        assert!(c.no_new_privileges && !c.userland_proxy && c.live_restore && c.tlsverify && c.tlscacert);
        assert!(!c.tlscert);
        assert_eq!(c.config_file, PathBuf::from("/x.json"));
    }

    #[test]
    fn flag_spellings() {
        let c = effective(
            &args("dockerd -Htcp://1.2.3.4:2375 --userland-proxy=false --tlsverify=0 --userns-remap default"),
            None,
        );
        assert_eq!(c.hosts, ["tcp://1.2.3.4:2375"]);
        assert!(!c.userland_proxy && !c.tlsverify);
        assert_eq!(c.userns_remap.as_deref(), Some("default"));
    }

    #[test]
    fn finds_dockerd_by_pid_file_then_by_scan() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("proc");
        for (pid, comm, cmd) in [("7", "bash", "bash\0"), ("42", "dockerd", "dockerd\0--icc=false\0")] {
            fs::create_dir_all(proc.join(pid)).unwrap();
            fs::write(proc.join(pid).join("comm"), format!("{comm}\n")).unwrap();
            fs::write(proc.join(pid).join("cmdline"), cmd).unwrap();
        }
        let pid_file = dir.path().join("docker.pid");
        fs::write(&pid_file, "7").unwrap(); // stale: another process now
        assert_eq!(dockerd_cmdline(&proc, &pid_file).unwrap(), ["dockerd", "--icc=false"]);
        fs::write(&pid_file, "42\n").unwrap();
        assert_eq!(dockerd_cmdline(&proc, &pid_file).unwrap(), ["dockerd", "--icc=false"]);
        fs::remove_dir_all(proc.join("42")).unwrap();
        assert!(dockerd_cmdline(&proc, &pid_file).unwrap_err().contains("no dockerd"));
    }

    #[test]
    fn config_file_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.json");
        assert_eq!(read_config(&p).unwrap(), None);
        fs::write(&p, "{\"icc\": false}").unwrap();
        assert_eq!(read_config(&p).unwrap(), Some(json!({"icc": false})));
        fs::write(&p, "{nope").unwrap();
        assert!(read_config(&p).unwrap_err().contains("not valid JSON"));
    }
}
