//! Compose projects: the example pointed at a test controller, edited as
//! YAML, brought up under a unique name and torn down on drop.

use crate::docker::{docker, docker_ok};
use crate::process::{run, Out};
use crate::util::unique_name;
use crate::wait::poll;
use crate::{workspace_root, Controller, AGENT_MOUNT, DOCKER_TIMEOUT, E2E_LABEL, EXAMPLE};
use crate::{SECRET_FILE, SECRET_NAME};
use serde_norway::{Mapping, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A compose project with a unique name, written to a temp dir. Dropping it
/// runs `docker-compose down -v` (printing every service's logs first if the
/// test failed).
pub struct Project {
    pub name: String,
    file: PathBuf,
    /// More `-f` files after `file` (e.g. the override `segctl compose` writes).
    overrides: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

/// The example compose file, parsed, with the agent bind mount pointed at
/// `ctl`'s agent dir and every service and volume labelled [`E2E_LABEL`].
pub fn example_yaml(ctl: &Controller) -> Value {
    let path = workspace_root().join(EXAMPLE);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut doc: Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rewritten = 0;
    for (_, svc) in services_mut(&mut doc) {
        if let Some(Value::Sequence(vols)) = svc.get_mut("volumes") {
            for v in vols.iter_mut() {
                if let Value::String(s) = v {
                    if s.starts_with(&format!("{AGENT_MOUNT}:")) {
                        *s = ctl.agent_volume();
                        rewritten += 1;
                    }
                }
            }
        }
    }
    assert_eq!(rewritten, 1, "{EXAMPLE} should bind-mount {AGENT_MOUNT} exactly once");
    doc
}

/// The services of a compose document, mutable.
pub fn services_mut(doc: &mut Value) -> Vec<(String, &mut Mapping)> {
    let services =
        doc.get_mut("services").and_then(Value::as_mapping_mut).expect("compose file has services");
    services
        .iter_mut()
        .map(|(k, v)| {
            (k.as_str().unwrap_or_default().to_owned(), v.as_mapping_mut().expect("service is a map"))
        })
        .collect()
}

/// One service of a compose document, mutable.
pub fn service_mut<'a>(doc: &'a mut Value, name: &str) -> &'a mut Mapping {
    doc.get_mut("services")
        .and_then(|s| s.get_mut(name))
        .and_then(Value::as_mapping_mut)
        .unwrap_or_else(|| panic!("no service {name}"))
}

/// Adds a service from YAML text.
pub fn add_service(doc: &mut Value, name: &str, yaml: &str) {
    let svc: Value = serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("service {name}: {e}\n{yaml}"));
    doc.get_mut("services").and_then(Value::as_mapping_mut).expect("services").insert(name.into(), svc);
}

/// Adds a tmpfs volume owned by 1000:1000 (like the example's).
pub fn add_tmpfs_volume(doc: &mut Value, name: &str) {
    let vol: Value = serde_norway::from_str(
        "driver_opts: {type: tmpfs, device: tmpfs, o: \"size=1m,uid=1000,gid=1000,mode=0700\"}",
    )
    .expect("yaml");
    let root = doc.as_mapping_mut().expect("compose file is a map");
    let vols = root.entry("volumes".into()).or_insert_with(|| Value::Mapping(Mapping::new()));
    vols.as_mapping_mut().expect("volumes is a map").insert(name.into(), vol);
}

/// The `labels` of a service or volume, created empty if missing.
fn labels_of(m: &mut Mapping) -> &mut Value {
    m.entry("labels".into()).or_insert_with(|| Value::Mapping(Mapping::new()))
}

fn label_everything(doc: &mut Value) {
    for (_, svc) in services_mut(doc) {
        match labels_of(svc) {
            Value::Mapping(m) => {
                m.insert(E2E_LABEL.into(), "1".into());
            }
            Value::Sequence(s) => s.push(format!("{E2E_LABEL}=1").into()),
            _ => panic!("labels must be a map or a list"),
        }
    }
    if let Some(Value::Mapping(vols)) = doc.get_mut("volumes") {
        for (_, v) in vols.iter_mut() {
            if v.is_null() {
                *v = Value::Mapping(Mapping::new());
            }
            let labels = labels_of(v.as_mapping_mut().expect("volume is a map"));
            labels.as_mapping_mut().expect("volume labels map").insert(E2E_LABEL.into(), "1".into());
        }
    }
}

impl Project {
    /// Writes `doc` (labelled for the sweep) as a project with a unique name.
    pub fn new(mut doc: Value) -> Project {
        label_everything(&mut doc);
        let name = unique_name("sege2e");
        let dir = tempfile::Builder::new().prefix("seg-e2e-compose-").tempdir().expect("temp dir");
        let file = dir.path().join("docker-compose.yml");
        fs::write(&file, serde_norway::to_string(&doc).expect("yaml")).expect("write compose file");
        Project { name, file, overrides: Vec::new(), dir }
    }

    /// Replaces the compose file with `doc` (labelled for the sweep).
    pub fn rewrite(&self, mut doc: Value) {
        label_everything(&mut doc);
        fs::write(&self.file, serde_norway::to_string(&doc).expect("yaml")).expect("write compose file");
    }

    /// The compose file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Adds `-f path` after the compose file to every docker-compose call.
    pub fn add_override(&mut self, path: PathBuf) {
        self.overrides.push(path);
    }

    /// The example, pointed at `ctl`.
    pub fn example(ctl: &Controller) -> Project {
        Project::new(example_yaml(ctl))
    }

    /// The grant target for one of its services: `PROJECT/SERVICE`.
    pub fn target(&self, service: &str) -> String {
        format!("{}/{service}", self.name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The usual start of a test: puts `value` as [`SECRET_NAME`] (with
    /// `put_args`, e.g. a TTL), grants it to the app, brings the project up
    /// and waits until the app reads the value at [`SECRET_FILE`].
    pub fn deliver(&self, ctl: &Controller, value: &[u8], put_args: &[&str]) {
        ctl.put(SECRET_NAME, value, put_args);
        ctl.grant(SECRET_NAME, &self.target("app"));
        self.up();
        self.wait_for_file("app", SECRET_FILE, value, Duration::from_secs(30));
    }

    pub fn compose(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("--ansi").arg("never").arg("-p").arg(&self.name).arg("-f").arg(&self.file);
        for extra in &self.overrides {
            cmd.arg("-f").arg(extra);
        }
        cmd.args(args);
        run(&mut cmd, DOCKER_TIMEOUT)
    }

    /// `up -d`; panics with every service's logs on failure.
    pub fn up(&self) {
        let out = self.compose(&["up", "-d"]);
        assert!(
            out.success(),
            "docker-compose up failed ({}): {}\n{}",
            out.code(),
            out.text(),
            self.all_logs()
        );
    }

    /// The container id of a service's (first) container.
    pub fn container(&self, service: &str) -> String {
        let out = self.compose(&["ps", "-a", "-q", service]);
        let id = out.stdout_str().split_whitespace().next().unwrap_or_default().to_owned();
        assert!(!id.is_empty(), "service {service} has no container: {}", out.text());
        id
    }

    /// `docker exec` in a service's container (as its configured user).
    pub fn exec(&self, service: &str, cmd: &[&str]) -> Out {
        let id = self.container(service);
        let mut args = vec!["exec", id.as_str()];
        args.extend_from_slice(cmd);
        docker(&args)
    }

    /// `exec`, panicking on failure; returns stdout bytes.
    pub fn exec_ok(&self, service: &str, cmd: &[&str]) -> Vec<u8> {
        let out = self.exec(service, cmd);
        assert!(out.success(), "exec {cmd:?} in {service} failed ({}): {}", out.code(), out.text());
        out.stdout
    }

    /// The bytes of a file as a service sees it, if it can read it.
    pub fn read_file(&self, service: &str, path: &str) -> Option<Vec<u8>> {
        let out = self.exec(service, &["cat", path]);
        out.success().then_some(out.stdout)
    }

    pub fn logs(&self, service: &str) -> String {
        self.compose(&["logs", "--no-color", service]).text()
    }

    pub fn all_logs(&self) -> String {
        self.compose(&["logs", "--no-color"]).text()
    }

    /// `{{.State.Status}}` and health of a service's container.
    pub fn state(&self, service: &str) -> String {
        let id = self.container(service);
        docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}} exit={{.State.ExitCode}}",
            &id,
        ])
    }

    /// Waits until `service` sees exactly `value` at `path`.
    pub fn wait_for_file(&self, service: &str, path: &str, value: &[u8], timeout: Duration) {
        let mut seen = None;
        let matched = poll(timeout, Duration::from_millis(100), || {
            seen = self.read_file(service, path);
            (seen.as_deref() == Some(value)).then_some(())
        });
        if matched.is_none() {
            let what = match seen {
                None => "no readable file".to_owned(),
                Some(b) => format!("{} bytes that differ from the {} expected", b.len(), value.len()),
            };
            panic!(
                "{service} did not see the expected value at {path} within {timeout:?} ({what})\n{}",
                self.all_logs()
            );
        }
    }

    /// Waits until `path` does not exist for `service`; returns how long it took.
    pub fn wait_for_absence(&self, service: &str, path: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        let gone = poll(timeout, Duration::from_millis(100), || {
            let out = self.exec(service, &["test", "-e", path]);
            // 1 from `test` itself; docker exec failing also exits 1, but says why.
            (out.code() == 1 && out.stderr.trim().is_empty()).then(|| start.elapsed())
        });
        gone.unwrap_or_else(|| {
            panic!("{path} still exists for {service} after {timeout:?}\n{}", self.all_logs())
        })
    }

    pub fn down(&self) {
        let out = self.compose(&["down", "-v", "--remove-orphans", "-t", "2"]);
        if !out.success() {
            eprintln!("docker-compose down failed: {}", out.text());
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- logs of compose project {} ----\n{}", self.name, self.all_logs());
        }
        self.down();
    }
}
