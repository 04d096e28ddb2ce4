//! The controller's segregation state against the in-memory firewall:
//! adoption, container events rewriting only their chains, cleanup after
//! the last policy, fail closed before the first inventory.

use super::api::PolicySource;
use super::kernel::RuleWriter;
use super::live::Known;
use super::state::{Mode, State};
use super::store::{Record, Store};
use crate::firewall::{
    ContainerFacts, FakeFirewall, Firewall, FirewallError, NetEndpoint, NetworkFacts, Table,
};
use crate::policy::{parse_policy, Family};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<FakeFirewall>>);

impl Firewall for Shared {
    fn current(&mut self, family: Family) -> Result<Table, FirewallError> {
        self.0.lock().unwrap().current(family)
    }
    fn restore(&mut self, family: Family, text: &str) -> Result<(), FirewallError> {
        self.0.lock().unwrap().restore(family, text)
    }
}

impl Shared {
    fn seg_chains(&self) -> BTreeMap<String, Vec<String>> {
        let fw = self.0.lock().unwrap();
        fw.chains(Family::V4)
            .iter()
            .filter(|(k, _)| k.starts_with("SEG-"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
    fn restores(&self) -> usize {
        self.0.lock().unwrap().restores.len()
    }
}

fn plain(chains: &BTreeMap<String, crate::firewall::Rules>) -> BTreeMap<String, Vec<String>> {
    chains.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect()
}

const SHOP: &str = "version: 1\nproject: shop\nservices:\n  api: { ingress: [{ from: [web], ports: [9000/tcp] }] }\n  web: { ingress: any }\n";

fn record(text: &str) -> (Record, crate::policy::Policy) {
    let policy = parse_policy(text, "shop.yaml").unwrap();
    let source = PolicySource { file: "shop.yaml".into(), text: text.into(), dir_project: None };
    (Record { name: "shop".into(), source, applied_at: 0, grants: Vec::new() }, policy)
}

fn container(id: &str, service: &str, ip: &str) -> Known {
    let labels = BTreeMap::from([
        ("com.docker.compose.project".to_string(), "shop".to_string()),
        ("com.docker.compose.service".to_string(), service.to_string()),
    ]);
    let endpoints = vec![NetEndpoint { network: "shop_default".into(), ipv4: ip.parse().ok(), ipv6: None }];
    Known {
        facts: ContainerFacts { id: id.into(), labels, endpoints, published: vec![] },
        name: id.into(),
        pid: None,
    }
}

fn networks() -> Vec<NetworkFacts> {
    vec![
        NetworkFacts {
            id: "aaaaaaaaaaaa0000".into(),
            name: "shop_default".into(),
            driver: "bridge".into(),
            subnets: vec!["172.20.0.0/16".parse().unwrap()],
            ..Default::default()
        },
        NetworkFacts {
            id: "bbbbbbbbbbbb0000".into(),
            name: "bridge".into(),
            driver: "bridge".into(),
            subnets: vec!["172.17.0.0/16".parse().unwrap()],
            ..Default::default()
        },
    ]
}

#[test]
fn container_events_rewrite_only_their_chains_and_resync_repairs() {
    let fw = Shared::default();
    let mut st = State::new(vec![record(SHOP)], true, RuleWriter::new(Box::new(fw.clone())));
    assert!(st.reconcile(Mode::Full).unwrap().is_none(), "no inventory yet: the kernel is left alone");
    assert_eq!(fw.restores(), 0);
    st.live.replace(
        vec![container("w1", "web", "172.20.0.2"), container("a1", "api", "172.20.0.3")],
        networks(),
    );
    let (first, _) = st.reconcile(Mode::Full).unwrap().unwrap();
    assert!(first.full && first.v4.contains("-I DOCKER-USER 1 -j SEG-FORWARD"));
    // A second web replica starts: only the chains on its paths change.
    st.live.upsert(container("w2", "web", "172.20.0.4"));
    let (second, desired) = st.reconcile(Mode::Fast).unwrap().unwrap();
    assert!(!second.full && second.changed());
    assert!(!second.v4.contains("DOCKER-USER"), "hooks untouched:\n{}", second.v4);
    assert!(second.report(&desired).chains_written < desired.v4.chains.len());
    assert_eq!(fw.seg_chains(), plain(&desired.v4.chains));
    // A flushed chain survives fast updates (memory says it is fine) and
    // is put back by the resync, which reads the kernel.
    let victim = desired.v4.chains.keys().find(|c| c.starts_with("SEG-IN-shop-api")).unwrap().clone();
    fw.0.lock().unwrap().chains_mut(Family::V4).get_mut(&victim).unwrap().clear();
    assert!(!st.reconcile(Mode::Fast).unwrap().unwrap().0.changed());
    let (repair, _) = st.reconcile(Mode::Full).unwrap().unwrap();
    assert!(repair.v4.contains(&format!(":{victim} - [0:0]")), "{}", repair.v4);
    assert_eq!(fw.seg_chains(), plain(&desired.v4.chains));
}

#[test]
fn rules_are_adopted_at_start_and_removed_with_the_last_policy() {
    let fw = Shared::default();
    let mut st = State::new(vec![record(SHOP)], true, RuleWriter::new(Box::new(fw.clone())));
    st.live.replace(vec![container("a1", "api", "172.20.0.3")], networks());
    st.reconcile(Mode::Full).unwrap();
    let written = fw.restores();
    // A restarted controller finds its rules in place and writes nothing.
    let mut again = State::new(vec![record(SHOP)], true, RuleWriter::new(Box::new(fw.clone())));
    again.live.replace(vec![container("a1", "api", "172.20.0.3")], networks());
    assert!(!again.reconcile(Mode::Full).unwrap().unwrap().0.changed());
    assert_eq!(fw.restores(), written);
    // The last policy goes: one cleanup, then hands off.
    again.take("shop");
    assert!(again.reconcile(Mode::Full).unwrap().unwrap().0.changed());
    assert!(fw.seg_chains().is_empty());
    assert_eq!(fw.0.lock().unwrap().chains(Family::V4)["DOCKER-USER"], ["-j RETURN"]);
    assert!(again.reconcile(Mode::Full).unwrap().is_none(), "nothing to enforce: kernel left alone");
    // A controller with nothing to enforce never touches another's rules.
    fw.0.lock().unwrap().chains_mut(Family::V4).insert("SEG-FORWARD".into(), vec![]);
    let mut idle = State::new(vec![], true, RuleWriter::new(Box::new(fw.clone())));
    idle.live.replace(vec![], networks());
    assert!(idle.reconcile(Mode::Full).unwrap().is_none());
    assert!(fw.seg_chains().contains_key("SEG-FORWARD"));
}

#[test]
fn icc_off_on_docker0_is_part_of_the_ruleset() {
    let fw = Shared::default();
    let mut st = State::new(vec![], false, RuleWriter::new(Box::new(fw.clone())));
    st.live.replace(vec![], networks());
    st.reconcile(Mode::Full).unwrap().unwrap();
    assert_eq!(fw.seg_chains()["SEG-ICC-docker0"], ["-i docker0 -o docker0 -j DROP"]);
    st.docker0_icc = true;
    st.reconcile(Mode::Full).unwrap().unwrap();
    assert!(fw.seg_chains().is_empty(), "ICC back on and no policy: no seg rules at all");
}

#[tokio::test]
async fn a_restarted_controller_loads_what_was_applied() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.save(&record(SHOP).0).unwrap();
    store.save_icc(false).unwrap();
    let seg =
        super::Segregation::new(dir.path(), Box::new(Shared::default()), super::DEFAULT_RESYNC).unwrap();
    let list = seg.list().await;
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].name.as_str(), list[0].services.clone()),
        ("shop", vec!["api".to_string(), "web".to_string()])
    );
    assert!(seg.show("shop").await.unwrap().source.contains("9000/tcp"));
    let err = seg.apply(record(SHOP).0.source, Vec::new()).await.unwrap_err().to_string();
    assert!(err.contains("not connected to Docker"), "{err}");
    let err = seg.apply(
        PolicySource { file: "x.yaml".into(), text: "version: 3\n".into(), dir_project: None },
        Vec::new(),
    );
    assert_eq!(
        err.await.unwrap_err().to_string(),
        "x.yaml:1:10: unsupported policy version 3 (this segctl reads version 1)"
    );
    let check = seg.check("web", "api", "9000/tcp").await.unwrap();
    assert!(check.allowed && check.rule.ends_with("services.api.ingress[0]"), "{check:?}");
    assert!(!seg.check("world", "shop/api", "9000").await.unwrap().allowed);
}

/// Notices from a channel: each `()` sent is one kernel notification.
struct Scripted(tokio::sync::mpsc::UnboundedReceiver<()>);

impl super::clobber::ChangeSource for Scripted {
    fn changed(&mut self) -> futures_util::future::BoxFuture<'_, Option<super::clobber::Burst>> {
        Box::pin(async move { self.0.recv().await.map(|()| super::clobber::Burst::default()) })
    }
    fn drain(&mut self, _: &mut super::clobber::Burst) {
        while self.0.try_recv().is_ok() {}
    }
}

#[tokio::test]
async fn a_burst_of_kernel_changes_brings_one_repair() {
    let dir = tempfile::tempdir().unwrap();
    let fw = Shared::default();
    let seg = super::Segregation::new(dir.path(), Box::new(fw.clone()), super::DEFAULT_RESYNC).unwrap();
    let desired = {
        let mut st = seg.state.lock().await;
        let (record, policy) = record(SHOP);
        st.put(record, policy);
        st.live.replace(vec![container("a1", "api", "172.20.0.3")], networks());
        st.reconcile(Mode::Full).unwrap().unwrap().1
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = seg.repair_on_changes(Box::new(Scripted(rx)));
    // Our own write notified too: its check writes nothing.
    tx.send(()).unwrap();
    tokio::time::sleep(super::clobber::MIN_GAP * 3).await;
    let before = fw.restores();
    // Another tool flushes a chain: one transaction, several notifications.
    let victim = desired.v4.chains.keys().find(|c| c.starts_with("SEG-IN-shop-api")).unwrap().clone();
    fw.0.lock().unwrap().chains_mut(Family::V4).get_mut(&victim).unwrap().clear();
    for _ in 0..5 {
        tx.send(()).unwrap();
    }
    for _ in 0..200 {
        if fw.seg_chains() == plain(&desired.v4.chains) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(fw.seg_chains(), plain(&desired.v4.chains), "repaired");
    tokio::time::sleep(super::clobber::MIN_GAP * 3).await;
    assert_eq!(fw.restores(), before + 1, "the burst was one check and one repair");
    drop(tx);
    watcher.await.unwrap();
}
