//! The cluster store against a real 3-member etcd with mutual TLS, started
//! by `scripts/etcd` for each test (ports 23790-23795, so the tests take
//! turns). Two `EtcdStore`s on one etcd play two nodes.
//!
//! Needs Debian's `etcd-server` and `etcd-client` (scripts/setup installs
//! them) and `openssl`. It fails, never skips, without them.

use seg_common::api::GrantTarget;
use seg_common::name::SecretName;
use seg_common::secret::SecretBytes;
use segctl::store::envelope::Kek;
use segctl::store::etcd::{EtcdConfig, EtcdStore};
use segctl::store::{SecretStore, StoreChange, StoreError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The fixed ports allow one cluster at a time.
static TURN: Mutex<()> = Mutex::new(());

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/etcd")
}

fn run(args: &[&str]) -> String {
    let out = Command::new(script()).args(args).output().expect("running scripts/etcd");
    assert!(
        out.status.success(),
        "scripts/etcd {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A running cluster in a temp dir; stopped and removed on drop, also when
/// the test fails.
struct Cluster {
    dir: tempfile::TempDir,
    endpoints: Vec<String>,
    _turn: MutexGuard<'static, ()>,
}

impl Cluster {
    fn start() -> Cluster {
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        for tool in ["etcd", "etcdctl", "openssl"] {
            let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap();
            assert!(found.status.success(), "{tool} is not installed: run scripts/setup (as root)");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let env = run(&["start", dir.path().to_str().unwrap()]);
        let endpoints = env
            .lines()
            .find_map(|l| l.strip_prefix("SEG_ETCD_ENDPOINTS="))
            .expect("scripts/etcd prints SEG_ETCD_ENDPOINTS")
            .split(',')
            .map(str::to_owned)
            .collect();
        Cluster { dir, endpoints, _turn: turn }
    }

    fn tls(&self, file: &str) -> PathBuf {
        self.dir.path().join("tls").join(file)
    }

    fn config(&self, endpoints: &[String], kek: &SecretBytes) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints.to_vec(),
            ca: self.tls("ca.crt"),
            identity: Some((self.tls("client.crt"), self.tls("client.key"))),
            prefix: "/seg".into(),
            kek: Kek::from_secret(kek).unwrap(),
            timeout: Duration::from_secs(3),
        }
    }

    fn store(&self, kek: &SecretBytes) -> EtcdStore {
        EtcdStore::open(self.config(&self.endpoints, kek)).expect("opening the etcd store")
    }

    fn member(&self, action: &str, n: usize) {
        run(&[action, &n.to_string(), self.dir.path().to_str().unwrap()]);
    }

    /// `etcdctl` with the client certificate; the raw output.
    fn etcdctl(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints.join(",")))
            .arg(format!("--cacert={}", self.tls("ca.crt").display()))
            .arg(format!("--cert={}", self.tls("client.crt").display()))
            .arg(format!("--key={}", self.tls("client.key").display()))
            .args(args)
            .output()
            .expect("running etcdctl");
        assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["stop", self.dir.path().to_str().unwrap()]).status();
    }
}

fn name(s: &str) -> SecretName {
    SecretName::parse(s).unwrap()
}

fn value(s: &str) -> SecretBytes {
    SecretBytes::from_slice(s.as_bytes())
}

fn kek() -> SecretBytes {
    Kek::random_bytes().unwrap()
}

/// Polls `done` every 10 ms; panics after `limit`. Returns the time taken.
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

fn has_version(store: &EtcdStore, n: &str, version: u64) -> bool {
    store.meta(&name(n)).is_ok_and(|m| m.version == version)
}

#[test]
fn put_get_rotate_grant_remove_round_trip() {
    let cluster = Cluster::start();
    let key = kek();
    let store = cluster.store(&key);
    assert_eq!(store.kind(), "etcd");
    let db = name("db");
    assert_eq!(store.put(&db, &value("one"), Some(60_000)).unwrap(), 1);
    assert_eq!(store.put(&db, &value("two"), None).unwrap(), 2);
    let current = store.get(&db).unwrap();
    assert!(current.value.ct_eq(b"two") && current.version == 2 && current.ttl_ms == 60_000);
    assert!(store.get_version(&db, 1).unwrap().unwrap().value.ct_eq(b"one"));
    assert_eq!(store.put(&db, &value("three"), None).unwrap(), 3);
    assert!(store.get_version(&db, 1).unwrap().is_none(), "two versions are kept");
    let app = GrantTarget::parse("shop/app").unwrap();
    assert!(store.grant(&db, &app).unwrap());
    assert!(!store.grant(&db, &app).unwrap());
    store.set_ttl(&db, 120_000).unwrap();
    // A second store on the same etcd loads what the first one wrote.
    let other = cluster.store(&key);
    let meta = other.meta(&db).unwrap();
    assert_eq!((meta.version, meta.ttl_ms, meta.grants.len()), (3, 120_000, 1));
    assert!(other.get(&db).unwrap().value.ct_eq(b"three"));
    assert!(store.revoke(&db, &app).unwrap());
    store.remove(&db).unwrap();
    assert!(matches!(store.get(&db), Err(StoreError::NotFound(_))));
    assert!(matches!(store.remove(&db), Err(StoreError::NotFound(_))));
    assert_eq!(store.put(&db, &value("again"), None).unwrap(), 1, "a removed secret starts over");
    assert!(matches!(store.set_ttl(&db, 1), Err(StoreError::BadTtl { .. })));
}

#[test]
fn two_nodes_see_each_others_writes_through_the_watch() {
    let cluster = Cluster::start();
    let key = kek();
    let (a, b) = (cluster.store(&key), cluster.store(&key));
    let (mut a_heard, mut b_heard) = (a.changes().expect("a feed"), b.changes().expect("b feed"));
    let limit = Duration::from_secs(2);
    let mut lags = Vec::new();
    for round in 1..=20u64 {
        let (writer, reader) = if round % 2 == 1 { (&a, &b) } else { (&b, &a) };
        writer.put(&name("api"), &value(&format!("value {round}")), None).unwrap();
        lags.push(wait_until("the other node sees the write", limit, || has_version(reader, "api", round)));
        assert!(reader.get(&name("api")).unwrap().value.ct_eq(format!("value {round}").as_bytes()));
    }
    // Each node is told of the other's writes (what it pushes to its own
    // sidecars), each once, in order, and never of its own.
    let heard = |feed: &mut tokio::sync::broadcast::Receiver<StoreChange>| {
        std::iter::from_fn(|| feed.try_recv().ok())
            .map(|c| (c.before.map(|m| m.version), c.after.map(|m| m.version)))
            .collect::<Vec<_>>()
    };
    let expected = |first: u64| -> Vec<(Option<u64>, Option<u64>)> {
        (first..=20).step_by(2).map(|v| ((v > 1).then_some(v - 1), Some(v))).collect()
    };
    assert_eq!(heard(&mut b_heard), expected(1), "b hears a's writes (odd rounds)");
    assert_eq!(heard(&mut a_heard), expected(2), "a hears b's writes (even rounds)");
    a.grant(&name("api"), &GrantTarget::parse("*/worker").unwrap()).unwrap();
    wait_until("the grant reaches b", limit, || b.meta(&name("api")).is_ok_and(|m| m.grants.len() == 1));
    let grant = b_heard.try_recv().expect("b hears the grant");
    assert_eq!(grant.after.map(|m| m.grants.len()), Some(1));
    b.remove(&name("api")).unwrap();
    wait_until("the removal reaches a", limit, || a.meta(&name("api")).is_err());
    lags.sort();
    println!("watch lag over 20 writes: median {:?}, max {:?}", lags[lags.len() / 2], lags[lags.len() - 1]);
}

#[test]
fn concurrent_rotations_from_two_nodes_never_fork_or_lose_a_version() {
    let cluster = Cluster::start();
    let key = kek();
    let (a, b) = (cluster.store(&key), cluster.store(&key));
    let db = name("db");
    a.put(&db, &value("initial"), None).unwrap();
    let rotate = |store: &EtcdStore, who: &str| {
        let mut won = BTreeMap::new();
        let mut conflicts = 0;
        for i in 0..60 {
            let label = format!("{who}-{i}");
            match store.put(&db, &value(&label), None) {
                Ok(version) => assert!(won.insert(version, label).is_none(), "version {version} twice"),
                Err(StoreError::Conflict { name }) => {
                    assert_eq!(name, db);
                    conflicts += 1;
                }
                Err(e) => panic!("a rotation failed with something other than a conflict: {e}"),
            }
        }
        (won, conflicts)
    };
    let ((won_a, lost_a), (won_b, lost_b)) = std::thread::scope(|s| {
        let ta = s.spawn(|| rotate(&a, "a"));
        let tb = s.spawn(|| rotate(&b, "b"));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let mut all = won_a.clone();
    for (v, label) in &won_b {
        assert!(all.insert(*v, label.clone()).is_none(), "both nodes got version {v}: the versions forked");
    }
    let last = 1 + all.len() as u64;
    assert_eq!(
        all.keys().copied().collect::<Vec<_>>(),
        (2..=last).collect::<Vec<_>>(),
        "a version is missing"
    );
    assert_eq!(won_a.len() + won_b.len() + lost_a + lost_b, 120);
    // A fresh node reads exactly what the last two winners wrote.
    let fresh = cluster.store(&key);
    assert_eq!(fresh.meta(&db).unwrap().version, last);
    assert!(fresh.get(&db).unwrap().value.ct_eq(all[&last].as_bytes()));
    assert!(fresh.get_version(&db, last - 1).unwrap().unwrap().value.ct_eq(all[&(last - 1)].as_bytes()));
    println!("120 rotations: {} won, {} conflicts (a {lost_a}, b {lost_b})", all.len(), lost_a + lost_b);
}

#[test]
fn a_dump_of_the_whole_keyspace_holds_no_secret_or_key_bytes() {
    let cluster = Cluster::start();
    let key = kek();
    let store = cluster.store(&key);
    let secrets = ["pg-password-3f9a1c7e", "api-token-ZmFrZS10b2tlbg", "hunter2-but-longer-0xdeadbeef"];
    for (i, s) in secrets.iter().enumerate() {
        store.put(&name(&format!("s{i}")), &value(s), None).unwrap();
        store.put(&name(&format!("s{i}")), &value(&format!("{s}-rotated")), None).unwrap();
    }
    let dump = cluster.etcdctl(&["get", "", "--from-key"]);
    let json = cluster.etcdctl(&["get", "", "--from-key", "-w", "json"]);
    assert!(String::from_utf8_lossy(&dump).contains("/seg/secrets/s0"), "the dump holds the records");
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut needles: Vec<Vec<u8>> =
        vec![key.expose().to_vec(), hex(key.expose()).into(), b64(key.expose()).into()];
    for s in secrets {
        needles.extend([
            s.as_bytes().to_vec(),
            b64(s.as_bytes()).into_bytes(),
            hex(s.as_bytes()).into_bytes(),
        ]);
        needles.push(s.as_bytes()[..12].to_vec());
    }
    for haystack in [&dump, &json] {
        for needle in &needles {
            let found = haystack.windows(needle.len()).any(|w| w == needle.as_slice());
            assert!(!found, "the etcd dump contains secret or KEK bytes ({} bytes long)", needle.len());
        }
    }
}

#[test]
fn a_client_without_a_certificate_of_the_ca_is_refused() {
    let cluster = Cluster::start();
    let key = kek();
    let mut no_cert = cluster.config(&cluster.endpoints, &key);
    no_cert.identity = None;
    let err = EtcdStore::open(no_cert).unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
    println!("without a client certificate: {err}");
    // A certificate of another CA, made like the real one.
    let rogue = tempfile::tempdir().unwrap();
    let d = rogue.path();
    let sh = format!(
        "cd {d} && openssl ecparam -name prime256v1 -genkey -noout -out ca.key && \
         openssl req -x509 -new -key ca.key -subj /CN=rogue -days 1 -out ca.crt && \
         openssl ecparam -name prime256v1 -genkey -noout -out c.key && chmod 600 c.key && \
         openssl req -new -key c.key -subj /CN=client -out c.csr && \
         printf 'extendedKeyUsage=clientAuth\\n' > ext && \
         openssl x509 -req -in c.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out c.crt",
        d = d.display()
    );
    let made = Command::new("sh").args(["-c", &sh]).output().unwrap();
    assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
    let mut rogue_cert = cluster.config(&cluster.endpoints, &key);
    rogue_cert.identity = Some((d.join("c.crt"), d.join("c.key")));
    let err = EtcdStore::open(rogue_cert).unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("https://127.0.0.1:23790") && text.contains("not opened"), "{text}");
    println!("with another CA's certificate: {text}");
    cluster.store(&key).put(&name("ok"), &value("v"), None).expect("the right certificate works");
}

#[test]
fn without_quorum_reads_continue_and_writes_are_refused_then_all_catch_up() {
    let cluster = Cluster::start();
    let key = kek();
    let (a, b) = (cluster.store(&key), cluster.store(&key));
    a.put(&name("db"), &value("before"), None).unwrap();
    wait_until("b has version 1", Duration::from_secs(2), || has_version(&b, "db", 1));
    cluster.member("stop-member", 1);
    a.put(&name("db"), &value("one member down"), None).expect("two of three members keep quorum");
    cluster.member("stop-member", 2);
    for store in [&a, &b] {
        assert!(
            store.get(&name("db")).unwrap().value.ct_eq(b"one member down") || has_version(store, "db", 1)
        );
    }
    let started = Instant::now();
    let err = a.put(&name("db"), &value("refused"), None).unwrap_err();
    let took = started.elapsed();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{text}");
    assert!(
        text.starts_with("etcd at https://127.0.0.1:23790,") && text.contains("nothing was written"),
        "{text}"
    );
    assert!(took < Duration::from_secs(5), "the refusal took {took:?}");
    println!("write without quorum refused in {took:?}: {text}");
    assert!(a.get(&name("db")).unwrap().value.ct_eq(b"one member down"), "reads continue from the cache");
    cluster.member("start-member", 1);
    cluster.member("start-member", 2);
    let back = wait_until("writes work again", Duration::from_secs(30), || {
        a.put(&name("db"), &value("after"), None).is_ok()
    });
    let version = a.meta(&name("db")).unwrap().version;
    assert_eq!(version, 3, "the refused write left no version");
    wait_until("b catches up", Duration::from_secs(10), || has_version(&b, "db", 3));
    assert!(b.get(&name("db")).unwrap().value.ct_eq(b"after"));
    println!("writes accepted again {back:?} after the members were started");
}

#[test]
fn a_node_behind_a_compaction_reloads_everything() {
    let cluster = Cluster::start();
    let key = kek();
    let a = EtcdStore::open(cluster.config(&cluster.endpoints[..2], &key)).unwrap();
    let b = EtcdStore::open(cluster.config(&cluster.endpoints[2..], &key)).unwrap();
    a.put(&name("kept"), &value("k1"), None).unwrap();
    a.put(&name("gone"), &value("g1"), None).unwrap();
    wait_until("b sees both", Duration::from_secs(2), || has_version(&b, "gone", 1));
    // b's only member goes away; a writes, removes and compacts meanwhile.
    cluster.member("stop-member", 2);
    for i in 2..=5 {
        a.put(&name("kept"), &value(&format!("k{i}")), None).unwrap();
    }
    a.remove(&name("gone")).unwrap();
    let status = String::from_utf8(cluster.etcdctl(&["get", "/seg/secrets/kept", "-w", "json"])).unwrap();
    let revision = status.split("\"revision\":").nth(1).unwrap().split(|c: char| !c.is_ascii_digit()).next();
    cluster.etcdctl(&["compact", revision.unwrap()]);
    assert!(has_version(&b, "kept", 1), "b still serves what it had");
    cluster.member("start-member", 2);
    wait_until("b reloads after the compaction", Duration::from_secs(20), || has_version(&b, "kept", 5));
    assert!(b.get(&name("kept")).unwrap().value.ct_eq(b"k5"));
    assert!(matches!(b.get(&name("gone")), Err(StoreError::NotFound(_))), "the removal is seen too");
    a.put(&name("kept"), &value("k6"), None).unwrap();
    wait_until("b's watch runs again", Duration::from_secs(5), || has_version(&b, "kept", 6));
}

#[test]
fn a_damaged_record_or_another_kek_is_named_and_loses_nothing() {
    let cluster = Cluster::start();
    let key = kek();
    let a = cluster.store(&key);
    a.put(&name("db"), &value("good"), None).unwrap();
    let err = EtcdStore::open(cluster.config(&cluster.endpoints, &kek())).unwrap_err().to_string();
    assert!(err.contains("etcd key /seg/secrets/db") && err.contains("key-encryption key"), "{err}");
    // Damage arriving through the watch: the last good version stays served.
    cluster.etcdctl(&["put", "/seg/secrets/db", "{not a record"]);
    a.put(&name("other"), &value("x"), None).unwrap();
    wait_until("a's watch is past the damage", Duration::from_secs(2), || a.revision() >= 4);
    assert!(a.get(&name("db")).unwrap().value.ct_eq(b"good"));
    // A node opening now refuses to start with a secret silently missing.
    let err = EtcdStore::open(cluster.config(&cluster.endpoints, &key)).unwrap_err().to_string();
    assert!(err.starts_with("etcd key /seg/secrets/db is damaged: it is not a valid secret file"), "{err}");
    // A write over the damage fails the same way and writes nothing.
    let err = a.put(&name("db"), &value("new"), None).unwrap_err().to_string();
    assert!(err.contains("is damaged"), "{err}");
    // The way out: remove the damaged record, put the secret again.
    a.remove(&name("db")).unwrap();
    assert_eq!(a.put(&name("db"), &value("new"), None).unwrap(), 1);
    cluster.store(&key);
}

#[test]
fn node_reports_reach_the_other_nodes_and_go_with_a_clean_stop() {
    use segctl::store::NodeRegistry;
    let cluster = Cluster::start();
    let key = kek();
    let (a, b) = (cluster.store(&key), cluster.store(&key));
    let b_changed = b.changed();
    a.publish("a", b"{\"consumers\":{}}".to_vec()).unwrap();
    let limit = Duration::from_secs(3);
    wait_until("b sees a's report", limit, || {
        b.reports().get("a").is_some_and(|r| r.as_slice() == b"{\"consumers\":{}}")
    });
    assert!(b_changed.has_changed().unwrap(), "b was told");
    a.publish("a", b"second".to_vec()).unwrap();
    wait_until("b sees a's new report", limit, || {
        b.reports().get("a").is_some_and(|r| r.as_slice() == b"second")
    });
    // The report lives under a lease: etcd lists it with one.
    let listed = String::from_utf8(cluster.etcdctl(&["get", "/seg/nodes/a", "-w", "json"])).unwrap();
    assert!(listed.contains("\"lease\":"), "{listed}");
    a.withdraw("a").unwrap();
    wait_until("a's report is gone from b", limit, || !b.reports().contains_key("a"));
}

#[test]
fn without_etcd_a_value_is_handed_out_only_until_its_lease_would_end() {
    let cluster = Cluster::start();
    let store = cluster.store(&kek());
    let db = name("db");
    store.put(&db, &value("v"), Some(6_000)).unwrap();
    assert_eq!(store.get(&db).unwrap().ttl_ms, 6_000, "etcd answers: the full lease");
    // The last confirmation is at most a probe (1 s) before this.
    let lost = Instant::now();
    cluster.member("stop-member", 1);
    cluster.member("stop-member", 2);
    // Leases shrink so that they end one TTL after the last contact...
    wait_until("a shortened lease", Duration::from_secs(6), || {
        store.get(&db).is_ok_and(|v| v.ttl_ms < 6_000)
    });
    // ...then the value is no longer handed out; its metadata still is.
    let refused = wait_until("the value to be refused", Duration::from_secs(10), || store.get(&db).is_err());
    let err = store.get(&db).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unreachable { .. }) && text.contains("no confirmed contact"), "{text}");
    assert!(text.contains("sidecars wipe it"), "{text}");
    let after = lost.elapsed();
    assert!(
        after >= Duration::from_secs(4),
        "refused {after:?} after etcd went, before the 6 s lease could end"
    );
    assert_eq!(store.meta(&db).unwrap().version, 1);
    println!("etcd gone: the 6 s value refused {after:?} later (waited {refused:?}): {text}");
    cluster.member("start-member", 1);
    cluster.member("start-member", 2);
    wait_until("the value to be served again", Duration::from_secs(20), || {
        store.get(&db).is_ok_and(|v| v.ttl_ms == 6_000)
    });
}
