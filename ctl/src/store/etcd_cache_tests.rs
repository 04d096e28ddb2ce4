use super::*;
use crate::store::record::SealedVersion;

fn name(s: &str) -> SecretName {
    SecretName::parse(s).unwrap()
}

fn record(n: &str, version: u64) -> Record {
    let mut r = Record::new(&name(n), 60_000, 1);
    r.push_version(SealedVersion { version, blob: vec![0; 64], created_at: 1 });
    r
}

fn version(cache: &Cache, n: &str) -> Option<u64> {
    cache.get(&name(n)).map(|r| r.meta.version)
}

#[test]
fn an_older_change_never_replaces_a_newer_one() {
    let mut cache = Cache::default();
    assert!(cache.apply(&name("db"), Some(record("db", 2)), 20));
    // The watch brings the store's own write (same revision) and an older one.
    assert!(!cache.apply(&name("db"), Some(record("db", 2)), 20));
    assert!(!cache.apply(&name("db"), Some(record("db", 1)), 10));
    assert_eq!(version(&cache, "db"), Some(2));
    assert!(cache.apply(&name("db"), Some(record("db", 3)), 30));
    assert_eq!(version(&cache, "db"), Some(3));
}

#[test]
fn a_tombstone_holds_until_the_watch_passes_it() {
    let mut cache = Cache::default();
    cache.apply(&name("db"), None, 40);
    // A late event of the put before the removal must not resurrect it.
    assert!(!cache.apply(&name("db"), Some(record("db", 1)), 35));
    assert_eq!(version(&cache, "db"), None);
    cache.advance(39);
    assert!(!cache.apply(&name("db"), Some(record("db", 1)), 35));
    cache.advance(40);
    assert_eq!(cache.revision(), 40);
    assert_eq!(cache.records().count(), 0);
    // Past the tombstone, a new put (put again after removal) is applied.
    assert!(cache.apply(&name("db"), Some(record("db", 1)), 41));
    cache.advance(30);
    assert_eq!(cache.revision(), 40, "the revision never goes back");
}

#[test]
fn reload_replaces_everything_but_keeps_newer_entries() {
    let mut cache = Cache::default();
    cache.apply(&name("gone"), Some(record("gone", 1)), 5);
    cache.apply(&name("kept"), Some(record("kept", 1)), 6);
    cache.apply(&name("newer"), Some(record("newer", 4)), 60);
    cache.apply(&name("removed"), None, 70);
    cache.reload(vec![(name("kept"), record("kept", 2), 7), (name("newer"), record("newer", 3), 50)], 55);
    assert_eq!(version(&cache, "gone"), None, "a secret removed during the compacted gap disappears");
    assert_eq!(version(&cache, "kept"), Some(2));
    assert_eq!(version(&cache, "newer"), Some(4), "a write after the reload's revision is kept");
    assert_eq!(cache.revision(), 55);
    assert!(!cache.apply(&name("removed"), Some(record("removed", 1)), 65), "tombstone above 55 kept");
}

#[test]
fn decoder_maps_keys_to_names_and_refuses_others() {
    let d = Decoder { key_prefix: "/seg/secrets/".into(), kek_id: "k".into() };
    assert_eq!(d.key(&name("db")), "/seg/secrets/db");
    assert_eq!(d.name(b"/seg/secrets/db"), Some(name("db")));
    assert_eq!(d.name(b"/seg/secrets/bad/name"), None);
    assert_eq!(d.name(b"/other/db"), None);
    let err = d.record(&name("db"), b"{not json").unwrap_err().to_string();
    assert!(err.starts_with("etcd key /seg/secrets/db is damaged"), "{err}");
    let sealed = record("db", 1).encode("other-kek");
    let err = d.record(&name("db"), &sealed).unwrap_err().to_string();
    assert!(err.contains("key-encryption key other-kek") && !err.contains("master.key"), "{err}");
}

#[test]
fn backoff_grows_to_five_seconds() {
    let mut b = Backoff::default();
    let steps: Vec<_> = (0..8).map(|_| b.next().as_millis()).collect();
    assert_eq!(steps, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
}

#[test]
fn a_reload_reports_what_it_changed_and_nothing_else() {
    let mut cache = Cache::default();
    cache.apply(&name("db"), Some(record("db", 1)), 10);
    cache.apply(&name("api"), Some(record("api", 4)), 11);
    cache.apply(&name("old"), Some(record("old", 2)), 12);
    let before = cache.metas();
    // Compacted away meanwhile: db rotated, old removed, new added; api unchanged.
    let loaded = vec![
        (name("api"), record("api", 4), 11),
        (name("db"), record("db", 2), 30),
        (name("new"), record("new", 1), 31),
    ];
    cache.reload(loaded, 40);
    let changes = diff(&before, &cache.metas());
    let summary: Vec<(String, Option<u64>, Option<u64>)> = changes
        .iter()
        .map(|c| {
            let n = c.after.as_ref().or(c.before.as_ref()).unwrap().name.to_string();
            (n, c.before.as_ref().map(|m| m.version), c.after.as_ref().map(|m| m.version))
        })
        .collect();
    assert_eq!(
        summary,
        [("db".into(), Some(1), Some(2)), ("new".into(), None, Some(1)), ("old".into(), Some(2), None)]
    );
}
