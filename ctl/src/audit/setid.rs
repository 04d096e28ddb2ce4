//! Setuid/setgid regular files in container filesystems (the seed's tip 3:
//! `find / -perm /6000 -type f`), read on the host through overlay2's layer
//! directories from the inspect data's `GraphDriver`.
//!
//! Walking each container's merged view would read the same image once per
//! container. Instead every layer directory is walked once (containers of
//! one image share all but their top two layers), and a container's files
//! are merged from its layers the way overlayfs shows them: a file found in
//! a layer counts unless a layer above has an entry at the same path (a
//! whiteout or a replacement) or hides the path's directory (a whiteout, a
//! non-directory, or a directory marked opaque).

use super::facts::{ContainerFacts, SetidFile};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The opaque-directory marks of overlayfs (root mode, then `userxattr` mode).
const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// The container's layer directories, top first (upper, init, image layers).
pub fn layers(c: &ContainerFacts) -> Result<Vec<PathBuf>, String> {
    let Some(gd) = c.inspect.graph_driver.as_ref() else {
        return Err("the engine reported no GraphDriver".into());
    };
    if !matches!(gd.name.as_str(), "overlay2" | "overlay") {
        return Err(format!(
            "storage driver {} is not read (only overlay2); check with `docker export`",
            gd.name
        ));
    }
    let upper = gd.data.get("UpperDir").ok_or("GraphDriver has no UpperDir")?;
    let mut out = vec![PathBuf::from(upper)];
    let lower = gd.data.get("LowerDir").map(String::as_str).unwrap_or_default();
    out.extend(lower.split(':').filter(|l| !l.is_empty()).map(PathBuf::from));
    Ok(out)
}

/// Every setuid/setgid regular file under `dir`, paths relative to it
/// (`usr/bin/su`). Symbolic links are not followed.
pub fn scan_layer(dir: &Path) -> Result<Vec<SetidFile>, String> {
    let mut found = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(dir.to_owned(), String::new())];
    let mut first = true;
    while let Some((path, rel)) = stack.pop() {
        let entries = match fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if first => return Err(format!("cannot read {}: {e}", path.display())),
            // A directory removed or unreadable mid-walk: skip it.
            Err(_) => continue,
        };
        first = false;
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            if kind.is_dir() {
                stack.push((entry.path(), child_rel));
            } else if kind.is_file() {
                let Ok(m) = entry.metadata() else { continue };
                if m.mode() & 0o6000 != 0 {
                    found.push(SetidFile {
                        path: child_rel,
                        mode: m.mode() & 0o7777,
                        uid: m.uid(),
                        gid: m.gid(),
                    });
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

fn opaque(dir: &Path) -> bool {
    OPAQUE_XATTRS.iter().any(|name| {
        let mut buf = [0u8; 4];
        matches!(rustix::fs::lgetxattr(dir, *name, &mut buf[..]), Ok(1) if buf[0] == b'y')
    })
}

/// Whether `layer` hides the path `rel` of the layers below it.
pub fn masks(layer: &Path, rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    let mut cur = layer.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        cur.push(part);
        let Ok(m) = fs::symlink_metadata(&cur) else {
            // Nothing at this level in this layer, so nothing below it either.
            return false;
        };
        if i + 1 == parts.len() || !m.is_dir() || opaque(&cur) {
            return true;
        }
    }
    false
}

/// Pure over the scans (plus `masks` lookups): a container's visible setid files.
pub fn merge(
    layers: &[PathBuf],
    scans: &BTreeMap<PathBuf, Result<Vec<SetidFile>, String>>,
) -> Result<Vec<SetidFile>, String> {
    let mut out = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let files = scans.get(layer).ok_or_else(|| format!("layer {} was not scanned", layer.display()))?;
        for f in files.as_ref().map_err(Clone::clone)? {
            if !layers[..i].iter().any(|above| masks(above, &f.path)) {
                out.push(SetidFile { path: format!("/{}", f.path), ..f.clone() });
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Scans every distinct layer of `containers` once (on up to `workers`
/// threads) and fills in each container's `setid`.
pub fn scan_containers(containers: &mut [ContainerFacts], workers: usize) {
    let plans: Vec<Result<Vec<PathBuf>, String>> = containers.iter().map(layers).collect();
    let unique: Vec<PathBuf> =
        plans.iter().flatten().flatten().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let scans = scan_many(&unique, workers);
    for (c, plan) in containers.iter_mut().zip(plans) {
        c.setid = plan.and_then(|layers| merge(&layers, &scans));
    }
}

fn scan_many(dirs: &[PathBuf], workers: usize) -> BTreeMap<PathBuf, Result<Vec<SetidFile>, String>> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, dirs.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(dir) = dirs.get(i) else { break };
                let scan = scan_layer(dir);
                results.lock().unwrap_or_else(|e| e.into_inner()).insert(dir.clone(), scan);
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerInspectResponse, DriverData};
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &Path, rel: &str, mode: u32) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, b"x").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// An overlayfs whiteout: a 0/0 character device (needs root, as the audit does).
    fn whiteout(dir: &Path, rel: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .expect("mknod of a whiteout needs root: run the tests as root");
    }

    fn container(upper: &Path, lowers: &[&Path]) -> ContainerFacts {
        let lower = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
        let data = HashMap::from([
            ("UpperDir".to_owned(), upper.display().to_string()),
            ("LowerDir".to_owned(), lower),
            ("MergedDir".to_owned(), "/nonexistent".to_owned()),
        ]);
        let inspect = ContainerInspectResponse {
            graph_driver: Some(DriverData { name: "overlay2".into(), data }),
            ..Default::default()
        };
        ContainerFacts::new(inspect)
    }

    fn paths(c: &ContainerFacts) -> Vec<String> {
        c.setid.as_ref().unwrap().iter().map(|f| format!("{} {:o}", f.path, f.mode)).collect()
    }

    #[test]
    fn layers_merge_like_overlayfs() {
        let t = tempfile::tempdir().unwrap();
        let [base, mid, init, upper, upper2] =
            ["base", "mid", "init", "upper", "upper2"].map(|n| t.path().join(n));
        for d in [&base, &mid, &init, &upper, &upper2] {
            fs::create_dir_all(d).unwrap();
        }
        file(&base, "bin/su", 0o4755);
        file(&base, "usr/bin/passwd", 0o4755);
        file(&base, "usr/bin/wall", 0o2755);
        file(&base, "opt/tool/suid", 0o4711);
        file(&base, "bin/ls", 0o755);
        file(&base, "var/mail/.keep", 0o644);
        fs::set_permissions(base.join("var/mail"), fs::Permissions::from_mode(0o2775)).unwrap();
        whiteout(&mid, "usr/bin/passwd"); // deleted in a later image layer
        file(&mid, "usr/bin/wall", 0o755); // chmod g-s in a later layer
        fs::create_dir_all(mid.join("opt/tool")).unwrap();
        rustix::fs::lsetxattr(
            mid.join("opt/tool"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("trusted xattrs need root and a filesystem that has them");
        file(&upper, "home/app/escalate", 0o6755); // written by the container
        whiteout(&upper2, "bin"); // another container removed /bin entirely

        let mut cs = [container(&upper, &[&init, &mid, &base]), container(&upper2, &[&init, &mid, &base])];
        scan_containers(&mut cs, 2);
        assert_eq!(paths(&cs[0]), ["/bin/su 4755", "/home/app/escalate 6755"]);
        assert!(paths(&cs[1]).is_empty(), "{:?}", paths(&cs[1]));
        assert_eq!(scan_layer(&base).unwrap().len(), 4, "directories with setgid are not files");
    }

    #[test]
    fn unreadable_or_foreign_storage_is_an_error_not_a_pass() {
        let t = tempfile::tempdir().unwrap();
        let mut cs = [container(&t.path().join("gone"), &[])];
        scan_containers(&mut cs, 1);
        assert!(cs[0].setid.as_ref().unwrap_err().contains("cannot read"), "{:?}", cs[0].setid);
        let mut c = container(t.path(), &[]);
        c.inspect.graph_driver.as_mut().unwrap().name = "btrfs".into();
        assert!(layers(&c).unwrap_err().contains("btrfs"));
        c.inspect.graph_driver = None;
        assert!(layers(&c).is_err());
    }
}
