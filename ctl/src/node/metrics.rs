//! `segctl node run --metrics-addr ADDR`: Prometheus metrics (OpenMetrics
//! text at `/metrics`, prometheus-client). Counted from the access log's
//! entries (every request, hook run and refusal, including those its rate
//! limit keeps out of the file), the consumers' acknowledgements and the
//! firewall's transactions; gauges read at each scrape. Labels carry
//! actions, outcomes, error codes and hook kinds — never a secret's value
//! or bytes (nor its name: names are the admin's and may say too much).

use super::access_log::{Entry, Observer, RequestOutcome, Socket};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    socket: &'static str,
    action: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    socket: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    store: String,
    firewall: String,
}

/// What the controller exposes; gauges are set by [`Metrics::render`].
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    denials: Family<DenialLabels, Counter>,
    served: Counter,
    rotations: Family<OutcomeLabels, Counter>,
    hooks: Family<HookLabels, Counter>,
    pub watch_streams: Gauge,
}

/// What the metrics are made from besides the access log.
pub struct Sources {
    pub ack_seconds: Histogram,
    pub firewall: Option<crate::segregation::metrics::FirewallMetrics>,
    pub store: String,
    pub firewall_backend: String,
}

impl Metrics {
    pub fn new(sources: Sources) -> Metrics {
        let mut registry = Registry::with_prefix("seg");
        let (requests, denials) = (Family::default(), Family::default());
        let (served, rotations, hooks) = (Counter::default(), Family::default(), Family::default());
        let watch_streams = Gauge::default();
        registry.register("requests", "Requests on the agent, admin and cluster sockets", requests.clone());
        registry.register("denials", "Requests refused, by error code", denials.clone());
        registry.register("secrets_served", "Secret values handed to sidecars", served.clone());
        registry.register(
            "rotations",
            "Rotations (and puts of a new version), by outcome",
            rotations.clone(),
        );
        registry.register("hook_runs", "Rotation hook runs, by kind and outcome", hooks.clone());
        registry.register("watch_streams", "Watch streams open on the agent socket", watch_streams.clone());
        registry.register(
            "rotation_ack_seconds",
            "From a rotation to each consumer's acknowledgement of the new version",
            sources.ack_seconds,
        );
        if let Some(fw) = sources.firewall {
            registry.register(
                "firewall_transactions",
                "Firewall transactions that changed the kernel",
                fw.transactions,
            );
            registry.register(
                "firewall_transaction_seconds",
                "Duration of each firewall transaction",
                fw.seconds,
            );
            registry.register(
                "firewall_repairs",
                "Repairs after another tool changed seg's rules",
                fw.repairs,
            );
            registry.register("firewall_rules", "seg's rules and set elements in force", fw.rules);
            registry.register("firewall_chains", "seg's chains in force", fw.chains);
        }
        let info: Family<BuildLabels, Gauge> = Family::default();
        let labels = BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
            store: sources.store,
            firewall: sources.firewall_backend,
        };
        info.get_or_create(&labels).set(1);
        registry.register("build_info", "The controller's version, secret store and firewall backend", info);
        Metrics { registry, requests, denials, served, rotations, hooks, watch_streams }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

fn socket_name(socket: Socket) -> &'static str {
    match socket {
        Socket::Agent => "agent",
        Socket::Admin => "admin",
        Socket::Cluster => "cluster",
    }
}

fn outcome_name(outcome: RequestOutcome) -> &'static str {
    match outcome {
        RequestOutcome::Allowed => "allowed",
        RequestOutcome::Denied => "denied",
        RequestOutcome::Error => "error",
    }
}

impl Observer for Metrics {
    fn observe(&self, entry: &Entry) {
        let (socket, outcome) = (socket_name(entry.socket), outcome_name(entry.outcome));
        match entry.action {
            // A summary of lines already counted one by one.
            "suppressed" => return,
            "hook" => {
                let kind = entry.hook.as_ref().map_or("unknown", |h| h.kind);
                self.hooks.get_or_create(&HookLabels { kind, outcome }).inc();
                return;
            }
            "rotate" | "put" => {
                self.rotations.get_or_create(&OutcomeLabels { outcome }).inc();
            }
            "read" if entry.socket == Socket::Agent && entry.outcome == RequestOutcome::Allowed => {
                self.served.inc();
            }
            _ => {}
        }
        self.requests.get_or_create(&RequestLabels { socket, action: entry.action, outcome }).inc();
        if entry.outcome == RequestOutcome::Denied {
            // The code before the message: a short fixed vocabulary.
            let reason = entry.reason.split(':').next().unwrap_or("").trim();
            let reason: String = reason.chars().take(40).collect();
            self.denials.get_or_create(&DenialLabels { socket, reason }).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_series_without_names_or_values() {
        let metrics = Metrics::new(Sources {
            ack_seconds: Histogram::new(super::super::consumers::latency_buckets()),
            firewall: Some(Default::default()),
            store: "embedded".into(),
            firewall_backend: "nftables".into(),
        });
        let mut read = Entry::new(Socket::Agent, "read");
        read.outcome = RequestOutcome::Allowed;
        read.secret = Some("db-password".into());
        metrics.observe(&read);
        let mut denied = Entry::new(Socket::Agent, "read");
        denied.outcome = RequestOutcome::Denied;
        denied.reason = "not_granted: db-password is not granted to shop/web".into();
        metrics.observe(&denied);
        let mut rotate = Entry::new(Socket::Admin, "rotate");
        rotate.outcome = RequestOutcome::Allowed;
        metrics.observe(&rotate);
        metrics.watch_streams.set(3);
        let text = metrics.render();
        for want in [
            r#"seg_requests_total{socket="agent",action="read",outcome="allowed"} 1"#,
            r#"seg_denials_total{socket="agent",reason="not_granted"} 1"#,
            "seg_secrets_served_total 1",
            r#"seg_rotations_total{outcome="allowed"} 1"#,
            "seg_watch_streams 3",
            "seg_firewall_transactions_total 0",
            r#"seg_build_info{version=""#,
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        assert!(!text.contains("db-password") && !text.contains("shop/web"), "{text}");
    }
}
