//! Docker start event → that container's rules in the kernel, with N
//! services present. Real Docker, real events, the controller's own code
//! path (`Segregation`: inspect, compile, fast diff, one
//! `iptables-restore --noflush` or one `nft -f`), inside a throwaway
//! network namespace so the host's rules are never touched.
//!
//! `cargo run --release -p segctl --features fakes --example reconcile_bench [-- [iptables|nftables] PROJECTS REPLICAS STARTS]`
//! (defaults 100 projects × 10 services = 1,000 services, 2 replicas = 2,000
//! synthetic containers, 200 real container starts). Needs root, dockerd on
//! /var/run/docker.sock and the image seg-busybox:dev (scripts/build-images).
//!
//! The synthetic services (`segctl::firewall::synth`) are fed to the
//! controller as if Docker listed them; each measured start is a real
//! container labelled as one more replica of the synthetic service p0/s1,
//! on a real network created for the run, so its start rewrites the chains
//! of every service it talks to.

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
#[path = "support/mod.rs"]
mod support;
use segctl::docker::DockerNetworks;
use segctl::firewall::{synth, Backend, ContainerFacts, NetworkFacts, NftablesFirewall};
use segctl::identity::{COMPOSE_NETWORK, COMPOSE_PROJECT, COMPOSE_SERVICE};
use segctl::network::{self, NetworkSpec};
use segctl::segregation::live::Known;
use segctl::segregation::{EventTiming, Segregation};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::pct;

const INSIDE: &str = "SEG_RBENCH_INSIDE";

fn main() {
    let (backends, args) = support::args(&[Backend::Iptables]);
    // One controller per process: its tasks run until the process ends.
    let [backend] = backends[..] else { panic!("one backend per run: iptables or nftables") };
    let projects = args.first().copied().unwrap_or(100);
    let replicas = args.get(1).copied().unwrap_or(2);
    let starts = args.get(2).copied().unwrap_or(200);
    if !support::inside(INSIDE) {
        return support::rerun_in_netns("segt-rbench", INSIDE);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(inside(backend, projects, replicas, starts));
    // The controller's tasks (event stream, resync) run for ever: stop here
    // rather than have the runtime tear them down mid-request.
    std::process::exit(0);
}

fn compose_labels(project: &str, service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (COMPOSE_PROJECT.to_string(), project.to_string()),
        (COMPOSE_SERVICE.to_string(), service.to_string()),
    ])
}

/// The synthetic scenario as the controller's inventory input.
fn synthetic(projects: usize, replicas: usize) -> (Vec<Known>, Vec<NetworkFacts>) {
    let (_, inv) = synth::scenario(projects, replicas);
    let networks = inv
        .networks
        .iter()
        .enumerate()
        .map(|(k, n)| NetworkFacts {
            id: format!("{k:012x}{}", "0".repeat(52)),
            name: n.name.clone(),
            driver: "bridge".into(),
            labels: BTreeMap::from([
                (COMPOSE_PROJECT.to_string(), format!("p{k}")),
                (COMPOSE_NETWORK.to_string(), "default".to_string()),
            ]),
            subnets: n.subnets.clone(),
            ..Default::default()
        })
        .collect();
    let containers = inv
        .containers
        .into_iter()
        .map(|c| {
            let id = c.service.clone().expect("synthetic containers have a service");
            let labels = compose_labels(id.project.as_deref().unwrap_or_default(), &id.service);
            let facts =
                ContainerFacts { id: c.id.clone(), labels, endpoints: c.endpoints, published: c.published };
            Known { facts, name: c.id, pid: None }
        })
        .collect();
    (containers, networks)
}

async fn inside(backend: Backend, projects: usize, replicas: usize, starts: usize) {
    // Docker's iptables(-nft) hooks are there on a Docker host, whichever backend seg uses.
    support::iptables_restore(support::DOCKER_HOOKS);
    let services = projects * synth::SERVICES_PER_PROJECT;
    let state = tempfile::tempdir().unwrap();
    let store = segctl::segregation::store::Store::open(state.path()).unwrap();
    for k in 0..projects {
        let source = seg_common::api::policy::PolicySource {
            file: format!("p{k}.yaml"),
            text: synth::policy_text(k),
            dir_project: None,
        };
        store
            .save(&segctl::segregation::store::Record {
                name: format!("p{k}"),
                source,
                applied_at: 0,
                grants: Vec::new(),
            })
            .unwrap();
    }
    let docker = segctl::docker::connect("/var/run/docker.sock".as_ref()).await.expect("dockerd");
    let api = DockerNetworks { docker: docker.clone() };
    let net = format!("segt-rbench-{}", std::process::id());
    network::create(&api, &NetworkSpec::new(&net, false, true, None).unwrap()).await.expect("bench network");
    let _cleanup = Cleanup(net.clone());
    let link = segctl::docker::DockerLink::new();
    let firewall = support::firewall(backend);
    let seg = Segregation::following(state.path(), firewall, Duration::from_secs(3600), &link).unwrap();
    drop(link.spawn_with(docker.clone()));
    while !seg.synced().await {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (containers, networks) = synthetic(projects, replicas);
    let seeded = Instant::now();
    seg.seed(containers, networks).await;
    let rules = count_rules(backend);
    println!(
        "{services} services, {} synthetic containers, {rules} rules in seg's chains (seeded in {:?})",
        services * replicas,
        seeded.elapsed()
    );
    let (started, died) = measure(&seg, &docker, &net, starts, backend).await;
    report("start", &started);
    report("die", &died);
    bare_floor(backend, rules);
}

/// One bare transaction of the backend's own tool, 100 times, with seg's
/// table this size in place: the floor under every update. iptables: a
/// one-rule chain; nftables: one element into a hash verdict map (what a
/// container event writes), in a table of its own.
fn bare_floor(backend: Backend, rules: usize) {
    let nft = backend == Backend::Nftables;
    if nft {
        support::nft_script(
            "add table inet seg-bare\nadd map inet seg-bare m { type ipv4_addr : verdict; }\n",
        );
    }
    let one = |i: usize| match backend {
        Backend::Iptables => support::iptables_restore(&format!(
            "*filter\n:SEG-ZZ-BARE - [0:0]\n-A SEG-ZZ-BARE -s 10.9.9.{i}/32 -j RETURN\nCOMMIT\n"
        )),
        Backend::Nftables => support::nft_script(&format!(
            "add element inet seg-bare m {{ 10.9.{}.{} : return }}\n",
            i / 250,
            i % 250
        )),
    };
    // 100 samples, or fewer when each takes seconds (nftables at 10,000 services): 5 at least.
    let begun = Instant::now();
    let mut times: Vec<Duration> = Vec::new();
    while times.len() < 100 && (times.len() < 5 || begun.elapsed() < Duration::from_secs(20)) {
        times.push(one(times.len()));
    }
    match backend {
        Backend::Iptables => {
            support::iptables_restore("*filter\n:SEG-ZZ-BARE - [0:0]\n-X SEG-ZZ-BARE\nCOMMIT\n");
        }
        Backend::Nftables => {
            support::nft_script("delete table inet seg-bare\n");
        }
    }
    times.sort();
    let what =
        if nft { "nft -f of one map element" } else { "iptables-restore --noflush of one 1-rule chain" };
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    println!(
        " bare: {what}, {rules} rules in seg's table, n={}: p50 {} p99 {} ms",
        times.len(),
        ms(pct(&times, 0.5)),
        ms(pct(&times, 0.99))
    );
}

/// Removes the run's containers and network, also when it fails.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let out =
            Command::new("docker").args(["ps", "-aq", "--filter", &format!("name={}-", self.0)]).output();
        for id in out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .split_whitespace()
        {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
        let _ = Command::new("docker").args(["network", "rm", &self.0]).output();
    }
}

/// seg's rules in the kernel (nftables: rules and set/map elements).
fn count_rules(backend: Backend) -> usize {
    if backend == Backend::Nftables {
        return NftablesFirewall::new().live().unwrap().map_or(0, |t| t.rule_count());
    }
    let out = Command::new("iptables-save").args(["-t", "filter"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("-A SEG-")).count()
}

/// One measured start: Docker's start event → the first update that put
/// the container into the rules (often the update for its `network
/// connect`, which Docker sends first: then the rules were live before the
/// start event was even sent, and the latency counts as 0).
struct Sample {
    latency: Duration,
    before_start: bool,
    timing: EventTiming,
}

/// Starts and removes `n` containers one at a time.
async fn measure(
    seg: &Arc<Segregation>,
    docker: &Docker,
    net: &str,
    n: usize,
    backend: Backend,
) -> (Vec<Sample>, Vec<Sample>) {
    let (mut started, mut died) = (Vec::new(), Vec::new());
    let labels: std::collections::HashMap<String, String> = compose_labels("p0", "s1").into_iter().collect();
    for i in 0..n {
        let name = format!("{net}-{i}");
        let body = ContainerCreateBody {
            image: Some("seg-busybox:dev".into()),
            cmd: Some(vec!["sleep".into(), "600".into()]),
            labels: Some(labels.clone()),
            host_config: Some(HostConfig { network_mode: Some(net.into()), ..Default::default() }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::new().name(&name).build();
        let id =
            docker.create_container(Some(opts), body).await.expect("create (is seg-busybox:dev built?)").id;
        docker.start_container(&id, None).await.expect("start");
        started.push(wait_for(seg, &id, "container start").await);
        // Read back once: listing seg's table takes ~25 s at 10,000 services with nft.
        if i == 0 {
            assert_live(docker, &id, backend).await;
        }
        let force = RemoveContainerOptionsBuilder::new().force(true).build();
        docker.remove_container(&id, Some(force)).await.expect("remove");
        died.push(wait_for(seg, &id, "container die").await);
    }
    (started, died)
}

async fn wait_for(seg: &Segregation, id: &str, action: &str) -> Sample {
    // Generous: at 10,000 services one nft process takes seconds (see docs/benchmarks.md).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen: Vec<EventTiming> = Vec::new();
    loop {
        seen.extend(seg.take_timings().into_iter().filter(|t| t.container == id));
        if let Some(t) = seen.iter().find(|t| t.action == action) {
            // The update that put the container in (or took it out of) the
            // rules: for a start, often the one for its `network connect`.
            let writer = seen.iter().filter(|t| t.changed).min_by_key(|t| t.done_at).unwrap_or(t);
            let at = t.event_at.expect("Docker stamps events");
            return Sample {
                latency: writer.done_at.saturating_sub(at),
                before_start: writer.done_at < at,
                timing: writer.clone(),
            };
        }
        assert!(Instant::now() < deadline, "no `{action}` handled for {id} within 120 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The container's address is in seg's live rules (read from the kernel).
async fn assert_live(docker: &Docker, id: &str, backend: Backend) {
    let r = docker.inspect_container(id, None).await.unwrap();
    let nets = r.network_settings.and_then(|s| s.networks).unwrap_or_default();
    let ip = nets.values().find_map(|e| e.ip_address.clone().filter(|a| !a.is_empty())).expect("an address");
    let live = match backend {
        Backend::Iptables => {
            let out = Command::new("iptables-save").args(["-t", "filter"]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines().any(|l| l.starts_with("-A SEG-") && l.contains(&format!("{ip}/32")))
        }
        Backend::Nftables => {
            let out = Command::new("nft").args(["list", "table", "inet", "seg"]).output().unwrap();
            // A container address is a map element: `10.x.y.z : goto …`.
            String::from_utf8_lossy(&out.stdout).contains(&format!("{ip} : "))
        }
    };
    assert!(live, "{ip} not live");
}

fn report(what: &str, samples: &[Sample]) {
    let sorted = |f: &dyn Fn(&Sample) -> Duration| {
        let mut v: Vec<Duration> = samples.iter().map(f).collect();
        v.sort();
        v
    };
    let latency = sorted(&|s| s.latency);
    let handling = sorted(&|s| s.timing.handling);
    let compile = sorted(&|s| s.timing.compile);
    let restore = sorted(&|s| s.timing.restore);
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let early = samples.iter().filter(|s| s.before_start).count();
    let full = samples.iter().filter(|s| s.timing.full).count();
    println!(
        "{what:>5}: n={} event→live p50 {} p90 {} p99 {} max {} ms ({early} live before the event) | \
         the writing update: handling p50 {} p99 {}, compile p50 {}, restore p50 {} p99 {} ms | {full} full",
        samples.len(),
        ms(pct(&latency, 0.5)),
        ms(pct(&latency, 0.9)),
        ms(pct(&latency, 0.99)),
        ms(*latency.last().unwrap()),
        ms(pct(&handling, 0.5)),
        ms(pct(&handling, 0.99)),
        ms(pct(&compile, 0.5)),
        ms(pct(&restore, 0.5)),
        ms(pct(&restore, 0.99)),
    );
}
