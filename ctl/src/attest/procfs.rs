//! What the kernel says about a peer process: its start time (to detect PID
//! reuse) and the container its cgroup belongs to. Parsing is pure; reading
//! goes through a configurable proc root so tests can use fixture trees.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("process {pid} is gone")]
    Gone { pid: i32 },
    #[error("cannot read {path}: {cause}; the controller must run as root in the host PID namespace")]
    Read { path: PathBuf, cause: io::Error },
    #[error("cannot parse {path}: {what}")]
    Malformed { path: PathBuf, what: &'static str },
    #[error("process {pid} is in the cgroups of two containers ({first} and {second}); refused")]
    AmbiguousCgroup { pid: i32, first: String, second: String },
}

/// Two lines of one `/proc/<pid>/cgroup` name different containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupConflict {
    pub first: String,
    pub second: String,
}

/// Field 22 (`starttime`, clock ticks since boot) of `/proc/<pid>/stat`.
///
/// Field 2 (`comm`) is user-controlled and may contain spaces and `)`, so the
/// fields are counted from the LAST `)`; the first field after it is field 3.
pub fn start_time_from_stat(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

/// A full Docker container id: exactly 64 lowercase hex digits.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The container id in one cgroup path, if any:
/// `/docker/<id>` (cgroupfs driver, v1 and v2), `…/docker-<id>.scope`
/// (systemd driver), also with more path below (`/docker/<id>/init.scope`).
///
/// The OUTERMOST match wins: a process that can create sub-cgroups inside its
/// own container (`/docker/<mine>/docker-<other>.scope`) must not be able to
/// pass for another container, and with Docker-in-Docker the outer id is the
/// one our engine knows.
pub fn container_id_in_path(path: &str) -> Option<&str> {
    let segments: Vec<&str> = path.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        if let Some(id) = seg.strip_prefix("docker-").and_then(|s| s.strip_suffix(".scope")) {
            if is_container_id(id) {
                return Some(id);
            }
        }
        if *seg == "docker" {
            if let Some(id) = segments.get(i + 1).filter(|id| is_container_id(id)) {
                return Some(id);
            }
        }
    }
    None
}

/// The container id of a `/proc/<pid>/cgroup` file (`hierarchy:controllers:path`
/// lines; v2 has the single line `0::path`). Lines without an id (hierarchies
/// left at `/`) are ignored; lines naming different containers are a conflict.
pub fn container_id_from_cgroup(content: &str) -> Result<Option<String>, CgroupConflict> {
    let mut found: Option<&str> = None;
    for line in content.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else { continue };
        let Some(id) = container_id_in_path(path) else { continue };
        match found {
            Some(first) if first != id => {
                return Err(CgroupConflict { first: first.to_owned(), second: id.to_owned() })
            }
            _ => found = Some(id),
        }
    }
    Ok(found.map(str::to_owned))
}

/// Reads `<root>/<pid>/<file>`; a vanished process reads as [`ProcError::Gone`].
fn read_proc_file(root: &Path, pid: i32, file: &str) -> Result<(PathBuf, String), ProcError> {
    let path = root.join(pid.to_string()).join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((path, text)),
        // ENOENT: the /proc/<pid> directory is gone; ESRCH: the process
        // exited between open and read.
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) =>
        {
            Err(ProcError::Gone { pid })
        }
        Err(cause) => Err(ProcError::Read { path, cause }),
    }
}

/// Start time of `pid` under `root` (normally `/proc`).
pub fn read_start_time(root: &Path, pid: i32) -> Result<u64, ProcError> {
    let (path, text) = read_proc_file(root, pid, "stat")?;
    start_time_from_stat(&text).ok_or(ProcError::Malformed { path, what: "no start time in field 22" })
}

/// Container id of `pid` under `root`; `None` when not in a container.
pub fn read_container_id(root: &Path, pid: i32) -> Result<Option<String>, ProcError> {
    let (_, text) = read_proc_file(root, pid, "cgroup")?;
    container_id_from_cgroup(&text).map_err(|c| ProcError::AmbiguousCgroup {
        pid,
        first: c.first,
        second: c.second,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "bc08f7e75288921fdf8c5c33bff4d43f064091f3ec20d451da1280db951cc1d3";
    const B: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn start_time_is_field_22() {
        let stat = "8587 (sleep) S 8567 8587 8587 0 -1 4194560 1079 0 0 0 0 1 0 0 20 0 1 0 41186 \
                    2322432 324 18446744073709551615 4198400 5785993";
        assert_eq!(start_time_from_stat(stat), Some(41186));
    }

    #[test]
    fn start_time_survives_hostile_comm() {
        let tail = " S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0";
        // comm is whatever the process chose (up to 15 bytes); the kernel wraps it in parens.
        for comm in ["a b", "a) b 9 9 9", ")", " ) ) (", "x\ny", "", ") S 1 2 3 4"] {
            let stat = format!("42 ({comm}){tail}");
            assert_eq!(start_time_from_stat(&stat), Some(777), "{comm:?}");
        }
    }

    #[test]
    fn start_time_refuses_junk() {
        for bad in
            ["", "42 (x) S 1 2 3", "no paren at all", "42 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 abc"]
        {
            assert_eq!(start_time_from_stat(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ids_in_paths() {
        let cases: Vec<(String, Option<&str>)> = vec![
            (format!("/docker/{A}"), Some(A)),
            (format!("/docker/{A}/init.scope"), Some(A)),
            (format!("/system.slice/docker-{A}.scope"), Some(A)),
            (format!("/system.slice/docker-{A}.scope/init.scope"), Some(A)),
            (format!("/docker/{A}/docker/{B}"), Some(A)),
            (format!("/docker/{A}/docker-{B}.scope"), Some(A)),
            (format!("/system.slice/docker-{B}.scope/docker/{A}"), Some(B)),
            (format!("/kubepods/besteffort/pod1/{A}"), None),
            (format!("/docker/{}", &A[..63]), None),
            (format!("/docker/{}", A.to_uppercase()), None),
            (format!("/docker/{A}0"), None),
            (format!("/docker-{A}"), None),
            (format!("/system.slice/containerd-{A}.scope"), None),
            (format!("/dockerx/{A}"), None),
            ("/docker".to_owned(), None),
            ("/docker/".to_owned(), None),
            ("/".to_owned(), None),
            ("/process_api/69ed842a39db11f0e3f323147e199d5e".to_owned(), None),
            ("/user.slice/user-1000.slice/session-3.scope".to_owned(), None),
        ];
        for (path, want) in cases {
            assert_eq!(container_id_in_path(&path), want, "{path}");
        }
    }

    #[test]
    fn cgroup_v1_file() {
        let mut file = String::new();
        for (n, ctl) in ["name=systemd", "pids", "memory", "cpu,cpuacct"].iter().enumerate() {
            file.push_str(&format!("{}:{ctl}:/docker/{A}\n", 9 - n));
        }
        file.push_str("3:cpuset:/\n0::/\n");
        assert_eq!(container_id_from_cgroup(&file), Ok(Some(A.to_owned())));
    }

    #[test]
    fn cgroup_v2_files() {
        for file in [format!("0::/system.slice/docker-{A}.scope\n"), format!("0::/docker/{A}\n")] {
            assert_eq!(container_id_from_cgroup(&file), Ok(Some(A.to_owned())), "{file}");
        }
    }

    #[test]
    fn cgroup_of_host_processes() {
        let host_v1 = "9:name=systemd:/\n4:memory:/process_api/69ed842a39db11f0e3f323147e199d5e\n0::/\n";
        for file in
            [host_v1, "0::/init.scope\n", "0::/user.slice/user-0.slice/session-1.scope\n", "", "junk\n"]
        {
            assert_eq!(container_id_from_cgroup(file), Ok(None), "{file:?}");
        }
    }

    #[test]
    fn cgroup_conflict_is_refused() {
        let file = format!("4:memory:/docker/{A}\n0::/system.slice/docker-{B}.scope\n");
        assert_eq!(
            container_id_from_cgroup(&file),
            Err(CgroupConflict { first: A.to_owned(), second: B.to_owned() })
        );
    }

    #[test]
    fn cgroup_path_may_contain_colons() {
        let file = format!("1:name=systemd:/docker/{A}/a:b\n");
        assert_eq!(container_id_from_cgroup(&file), Ok(Some(A.to_owned())));
    }

    #[test]
    fn reading_fixture_trees() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("77");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("stat"), "77 (a) b) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0").unwrap();
        std::fs::write(dir.join("cgroup"), format!("0::/docker/{A}\n")).unwrap();
        assert_eq!(read_start_time(root.path(), 77).unwrap(), 5);
        assert_eq!(read_container_id(root.path(), 77).unwrap().as_deref(), Some(A));
        assert!(matches!(read_start_time(root.path(), 78), Err(ProcError::Gone { pid: 78 })));
        assert!(matches!(read_container_id(root.path(), 78), Err(ProcError::Gone { pid: 78 })));
        std::fs::write(dir.join("stat"), "garbage").unwrap();
        assert!(matches!(read_start_time(root.path(), 77), Err(ProcError::Malformed { .. })));
    }

    #[test]
    fn reading_real_proc_self() {
        let me = std::process::id() as i32;
        let t = read_start_time(Path::new("/proc"), me).unwrap();
        assert_eq!(read_start_time(Path::new("/proc"), me).unwrap(), t);
    }
}
