//! Tests of the embedded store (kept apart so the store itself stays short).
use super::super::disk::crash;
use super::*;
use std::os::unix::fs::PermissionsExt;

fn name(s: &str) -> SecretName {
    SecretName::parse(s).unwrap()
}

fn value(s: &str) -> SecretBytes {
    SecretBytes::from_slice(s.as_bytes())
}

fn grant(s: &str) -> GrantTarget {
    GrantTarget::parse(s).unwrap()
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn put_get_versions_and_meta() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.put(&name("db"), &value("one"), None).unwrap(), 1);
    assert_eq!(store.put(&name("db"), &value("two"), Some(60_000)).unwrap(), 2);
    assert_eq!(store.put(&name("db"), &value("three"), None).unwrap(), 3);
    let got = store.get(&name("db")).unwrap();
    assert!(got.value.ct_eq(b"three") && got.version == 3 && got.ttl_ms == 60_000);
    assert!(store.get_version(&name("db"), 2).unwrap().unwrap().value.ct_eq(b"two"));
    assert!(store.get_version(&name("db"), 1).unwrap().is_none(), "only two versions are kept");
    assert!(matches!(store.get(&name("nope")), Err(StoreError::NotFound(_))));
    let meta = store.meta(&name("db")).unwrap();
    assert_eq!((meta.version, meta.ttl_ms), (3, 60_000));
    store.put(&name("api"), &value("k"), None).unwrap();
    let listed: Vec<_> = store.list().unwrap().into_iter().map(|m| (m.name, m.ttl_ms)).collect();
    assert_eq!(listed, [(name("api"), DEFAULT_TTL_MS), (name("db"), 60_000)]);
    assert_eq!(store.kind(), "embedded");
}

#[test]
fn grants_ttl_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert!(matches!(store.grant(&name("db"), &grant("a")), Err(StoreError::NotFound(_))));
    store.put(&name("db"), &value("v"), None).unwrap();
    assert!(store.grant(&name("db"), &grant("shop/app")).unwrap());
    assert!(!store.grant(&name("db"), &grant("shop/app")).unwrap());
    assert!(store.grant(&name("db"), &grant("*/web")).unwrap());
    assert!(store.revoke(&name("db"), &grant("*/web")).unwrap());
    assert!(!store.revoke(&name("db"), &grant("*/web")).unwrap());
    store.set_ttl(&name("db"), 2_000).unwrap();
    let meta = store.meta(&name("db")).unwrap();
    assert_eq!(meta.grants.into_iter().collect::<Vec<_>>(), [grant("shop/app")]);
    assert_eq!(meta.ttl_ms, 2_000);
    store.remove(&name("db")).unwrap();
    assert!(matches!(store.remove(&name("db")), Err(StoreError::NotFound(_))));
    assert!(!dir.path().join("secrets/db.json").exists());
    assert_eq!(store.put(&name("db"), &value("again"), None).unwrap(), 1, "a re-created secret restarts");
}

#[test]
fn limits_are_enforced_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let big = SecretBytes::zeroed(seg_common::name::MAX_VALUE_LEN + 1);
    assert!(matches!(store.put(&name("db"), &big, None), Err(StoreError::TooLarge { .. })));
    let max = SecretBytes::zeroed(seg_common::name::MAX_VALUE_LEN);
    assert_eq!(store.put(&name("db"), &max, None).unwrap(), 1);
    for bad in [0, 999, seg_common::api::MAX_TTL_MS + 1] {
        assert!(matches!(store.put(&name("db"), &value("x"), Some(bad)), Err(StoreError::BadTtl { .. })));
        assert!(matches!(store.set_ttl(&name("db"), bad), Err(StoreError::BadTtl { .. })));
    }
    let meta = store.meta(&name("db")).unwrap();
    assert_eq!((meta.version, meta.ttl_ms), (1, DEFAULT_TTL_MS));
    drop(store);
    let reopened = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(reopened.get(&name("db")).unwrap().value.len(), seg_common::name::MAX_VALUE_LEN);
}

#[test]
fn hooks_are_kept_with_the_metadata_and_checked() {
    use seg_common::api::HookSpec;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let hooks = Hooks {
        pre_rotate: Some(HookSpec {
            command: "psql -c 'ALTER USER app PASSWORD …'".into(),
            timeout_ms: 5_000,
            exec: None,
        }),
        post_rotate: None,
    };
    assert!(matches!(store.set_hooks(&name("db"), &hooks), Err(StoreError::NotFound(_))));
    store.put(&name("db"), &value("v"), None).unwrap();
    assert!(store.set_hooks(&name("db"), &hooks).unwrap());
    assert!(!store.set_hooks(&name("db"), &hooks).unwrap(), "the same hooks are no change");
    store.put(&name("db"), &value("v2"), None).unwrap();
    let bad = Hooks {
        post_rotate: Some(HookSpec { command: String::new(), timeout_ms: 5_000, exec: None }),
        ..hooks.clone()
    };
    assert!(matches!(store.set_hooks(&name("db"), &bad), Err(StoreError::BadHook(_))));
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.meta(&name("db")).unwrap().hooks, hooks, "hooks survive a restart and a new version");
    store.set_hooks(&name("db"), &Hooks::default()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("secrets/db.json")).unwrap();
    assert!(!text.contains("hooks"), "no hooks, no field (format 1 unchanged): {text}");
}

#[test]
fn restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    store.put(&name("db"), &value("old"), Some(5_000)).unwrap();
    store.put(&name("db"), &value("new"), None).unwrap();
    store.grant(&name("db"), &grant("shop/app")).unwrap();
    let before = store.list().unwrap();
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.list().unwrap(), before);
    assert!(store.get(&name("db")).unwrap().value.ct_eq(b"new"));
    assert!(store.get_version(&name("db"), 1).unwrap().unwrap().value.ct_eq(b"old"));
    assert_eq!(store.put(&name("db"), &value("newer"), None).unwrap(), 3);
}

#[test]
fn no_plaintext_on_disk() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let secret = "correct-horse-battery-staple-4242";
    store.put(&name("db"), &value(secret), None).unwrap();
    store.put(&name("db"), &value("second"), None).unwrap();
    let mut needles = vec![secret.as_bytes().to_vec()];
    // Base64 of the value at each of the three possible alignments.
    for skip in 0..3 {
        let part = &secret.as_bytes()[skip..];
        let part = &part[..part.len() / 3 * 3];
        needles.push(base64::engine::general_purpose::STANDARD.encode(part).into_bytes());
        needles.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(part).into_bytes());
    }
    let files = all_files(dir.path());
    assert!(files.len() >= 2);
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for needle in &needles {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_slice()), "{}", file.display());
        }
    }
}

#[test]
fn crash_mid_write_or_before_rename_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    store.put(&name("db"), &value("v1"), None).unwrap();
    for point in [crash::Point::MidWrite, crash::Point::BeforeRename] {
        crash::arm(point);
        assert!(store.put(&name("db"), &value("lost"), None).is_err(), "{point:?}");
        assert!(store.get(&name("db")).unwrap().value.ct_eq(b"v1"), "{point:?}");
    }
    crash::arm(crash::Point::MidWrite);
    assert!(store.put(&name("fresh"), &value("x"), None).is_err());
    assert!(matches!(store.get(&name("fresh")), Err(StoreError::NotFound(_))));
    let temps = std::fs::read_dir(dir.path().join("secrets")).unwrap().count() - 1;
    assert_eq!(temps, 3, "the simulated crashes leave their temp files");
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let got = store.get(&name("db")).unwrap();
    assert!(got.value.ct_eq(b"v1") && got.version == 1);
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(all_files(&dir.path().join("secrets")), [dir.path().join("secrets/db.json")]);
    assert_eq!(store.put(&name("db"), &value("v2"), None).unwrap(), 2);
}

#[test]
fn tampered_or_moved_files_are_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    store.put(&name("db"), &value("value"), None).unwrap();
    drop(store);
    let path = dir.path().join("secrets/db.json");
    let text = std::fs::read_to_string(&path).unwrap();
    // The same sealed blob under another name: AAD binds the name.
    std::fs::write(dir.path().join("secrets/dc.json"), text.replace("\"db\"", "\"dc\"")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sealed = json["versions"][0]["sealed"].as_str().unwrap().to_owned();
    let flipped =
        if sealed.starts_with('A') { sealed.replacen('A', "B", 1) } else { format!("A{}", &sealed[1..]) };
    json["versions"][0]["sealed"] = flipped.into();
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    for (n, file) in [("db", "db.json"), ("dc", "dc.json")] {
        let err = store.get(&name(n)).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(file) && msg.contains("authentication"), "{msg}");
    }
    drop(store);
    std::fs::write(&path, b"{ not json").unwrap();
    let err = EmbeddedStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("db.json") && err.contains("not a valid secret file"), "{err}");
}

#[test]
fn wrong_or_exposed_master_key_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    store.put(&name("db"), &value("value"), None).unwrap();
    drop(store);
    let key_path = dir.path().join("master.key");
    let mode = |m| std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(m)).unwrap();
    assert_eq!(std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(dir.path().join("secrets")).unwrap().permissions().mode() & 0o777, 0o700);
    mode(0o640);
    let err = EmbeddedStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
    mode(0o600);
    std::fs::write(&key_path, [7u8; 32]).unwrap();
    let err = EmbeddedStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("db.json") && err.contains("master key does not match"), "{err}");
    std::fs::remove_file(&key_path).unwrap();
    let err = EmbeddedStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("restore master.key"), "{err}");
    assert!(!key_path.exists(), "no new key may be made next to existing secrets");
}

#[test]
fn one_store_per_state_dir_and_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    assert!(EmbeddedStore::open(dir.path()).unwrap_err().to_string().contains("already uses it"));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || -> Vec<u64> {
                (0..10).map(|i| store.put(&name("db"), &value(&format!("{t}-{i}")), None).unwrap()).collect()
            })
        })
        .collect();
    let mut versions: Vec<u64> = threads.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=40).collect::<Vec<_>>());
    assert_eq!(store.get(&name("db")).unwrap().version, 40);
}
