//! The operator's Prometheus metrics (names listed in docs/metrics.md). Controllers report
//! through these methods only, so the series stay one consistent set.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub controller: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    /// The reconcile step that failed (e.g. `apply`).
    pub step: &'static str,
    /// The cause's kind (e.g. the API server's `Conflict`).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub kind: &'static str,
    /// The Fjord Cluster: a Cluster's own name, a Topic's `spec.cluster`.
    pub cluster: String,
    pub ready: &'static str,
}

/// The `ready` label values, from a resource's Ready condition.
const READINESS: [&str; 3] = ["true", "false", "unknown"];

/// The `ready` label of a resource with these status conditions.
pub fn readiness(conditions: &[Condition]) -> &'static str {
    match conditions.iter().find(|c| c.type_ == fjord_crds::condition::READY).map(|c| c.status.as_str()) {
        Some("True") => "true",
        Some("False") => "false",
        _ => "unknown",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub controller: &'static str,
    /// API object kind (Kubernetes writes) or Kafka API name (broker admin writes).
    pub kind: String,
}

pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabel, Histogram>,
    queue_depth: Family<ControllerLabel, Gauge>,
    resources: Family<ResourceLabels, Gauge>,
    /// The clusters each kind last reported, so series of a cluster that is gone are removed.
    resource_clusters: Mutex<HashMap<&'static str, BTreeSet<String>>>,
    api_writes: Family<WriteLabels, Counter>,
    admin_writes: Family<WriteLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let queue_depth = Family::<ControllerLabel, Gauge>::default();
        let resources = Family::<ResourceLabels, Gauge>::default();
        let api_writes = Family::<WriteLabels, Counter>::default();
        let admin_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "fjord_operator_reconciles",
            "Reconciles by controller and result (ok, error, requeue)",
            reconciles.clone(),
        );
        registry.register(
            "fjord_operator_reconcile_errors",
            "Reconcile errors by controller and reason",
            errors.clone(),
        );
        registry.register_with_unit(
            "fjord_operator_reconcile_duration",
            "Time one reconcile took",
            prometheus_client::registry::Unit::Seconds,
            duration.clone(),
        );
        registry.register(
            "fjord_operator_queue_depth",
            "Objects waiting for a reconcile, by controller",
            queue_depth.clone(),
        );
        registry.register(
            "fjord_operator_resources",
            "Cluster and Topic resources by Fjord cluster and readiness (ready: true, false, unknown)",
            resources.clone(),
        );
        registry.register(
            "fjord_operator_api_writes",
            "Writes to the Kubernetes API, by controller and object kind",
            api_writes.clone(),
        );
        registry.register(
            "fjord_operator_kafka_admin_writes",
            "Admin writes to brokers (CreateTopics, IncrementalAlterConfigs, ...), by controller and Kafka API",
            admin_writes.clone(),
        );
        Arc::new(Metrics {
            registry,
            reconciles,
            errors,
            duration,
            queue_depth,
            resources,
            resource_clusters: Mutex::default(),
            api_writes,
            admin_writes,
        })
    }

    /// One reconcile finished: `result` is "ok", "error" or "requeue"; `error` is the step
    /// that failed and the cause's kind, when there was one.
    pub fn reconciled(
        &self,
        controller: &'static str,
        result: &'static str,
        error: Option<(&'static str, &str)>,
        took: Duration,
    ) {
        self.reconciles.get_or_create(&ResultLabels { controller, result }).inc();
        if let Some((step, reason)) = error {
            self.errors.get_or_create(&ErrorLabels { controller, step, reason: reason.to_string() }).inc();
        }
        self.duration.get_or_create(&ControllerLabel { controller }).observe(took.as_secs_f64());
    }

    pub fn set_queue_depth(&self, controller: &'static str, depth: i64) {
        self.queue_depth.get_or_create(&ControllerLabel { controller }).set(depth);
    }

    /// Replace the readiness counts of one kind ("Cluster" or "Topic") with these resources,
    /// each given as (its Fjord cluster, [`readiness`]). Every cluster named gets all three
    /// `ready` series (zeros included); the series of a cluster no longer named are removed.
    pub fn set_resources<'a>(&self, kind: &'static str, resources: impl IntoIterator<Item = (&'a str, &'static str)>) {
        let mut counts: BTreeMap<String, [i64; 3]> = BTreeMap::new();
        for (cluster, ready) in resources {
            let i = READINESS.iter().position(|r| *r == ready).unwrap_or(2);
            counts.entry(cluster.to_string()).or_default()[i] += 1;
        }
        let mut known = self.resource_clusters.lock().unwrap_or_else(|e| e.into_inner());
        let previous = known.insert(kind, counts.keys().cloned().collect()).unwrap_or_default();
        for gone in previous.iter().filter(|c| !counts.contains_key(*c)) {
            for ready in READINESS {
                self.resources.remove(&ResourceLabels { kind, cluster: gone.clone(), ready });
            }
        }
        for (cluster, n) in counts {
            for (ready, n) in READINESS.into_iter().zip(n) {
                self.resources.get_or_create(&ResourceLabels { kind, cluster: cluster.clone(), ready }).set(n);
            }
        }
    }

    /// A create/update/patch/delete sent to the Kubernetes API.
    pub fn api_write(&self, controller: &'static str, kind: &str) {
        self.api_writes.get_or_create(&WriteLabels { controller, kind: kind.to_string() }).inc();
    }

    /// A write sent to a broker's admin API.
    pub fn admin_write(&self, controller: &'static str, api: &str) {
        self.admin_writes.get_or_create(&WriteLabels { controller, kind: api.to_string() }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(status: &str) -> Condition {
        serde_json::from_value(serde_json::json!({"type": "Ready", "status": status, "reason": "R", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}))
        .unwrap()
    }

    /// The `fjord_operator_resources` samples of the exposition, sorted.
    fn resources(m: &Metrics) -> Vec<String> {
        let mut v: Vec<String> =
            m.encode().lines().filter(|l| l.starts_with("fjord_operator_resources{")).map(String::from).collect();
        v.sort();
        v
    }

    #[test]
    fn readiness_from_the_ready_condition() {
        assert_eq!(readiness(&[condition("True")]), "true");
        assert_eq!(readiness(&[condition("False")]), "false");
        assert_eq!(readiness(&[condition("Unknown")]), "unknown");
        assert_eq!(readiness(&[]), "unknown");
    }

    #[test]
    fn resources_by_cluster_and_readiness_and_gone_clusters_removed() {
        let m = Metrics::new();
        m.set_resources("Topic", [("events", "true"), ("events", "true"), ("events", "false"), ("logs", "unknown")]);
        m.set_resources("Cluster", [("events", "true"), ("logs", "false")]);
        assert_eq!(
            resources(&m),
            [
                r#"fjord_operator_resources{kind="Cluster",cluster="events",ready="false"} 0"#,
                r#"fjord_operator_resources{kind="Cluster",cluster="events",ready="true"} 1"#,
                r#"fjord_operator_resources{kind="Cluster",cluster="events",ready="unknown"} 0"#,
                r#"fjord_operator_resources{kind="Cluster",cluster="logs",ready="false"} 1"#,
                r#"fjord_operator_resources{kind="Cluster",cluster="logs",ready="true"} 0"#,
                r#"fjord_operator_resources{kind="Cluster",cluster="logs",ready="unknown"} 0"#,
                r#"fjord_operator_resources{kind="Topic",cluster="events",ready="false"} 1"#,
                r#"fjord_operator_resources{kind="Topic",cluster="events",ready="true"} 2"#,
                r#"fjord_operator_resources{kind="Topic",cluster="events",ready="unknown"} 0"#,
                r#"fjord_operator_resources{kind="Topic",cluster="logs",ready="false"} 0"#,
                r#"fjord_operator_resources{kind="Topic",cluster="logs",ready="true"} 0"#,
                r#"fjord_operator_resources{kind="Topic",cluster="logs",ready="unknown"} 1"#,
            ]
        );
        // The logs Cluster and its Topics are deleted: their series go, the other kind's stay.
        m.set_resources("Cluster", [("events", "true")]);
        m.set_resources("Topic", [("events", "true")]);
        let now = resources(&m);
        assert!(now.iter().all(|l| l.contains(r#"cluster="events""#)), "{now:?}");
        assert!(now.contains(&r#"fjord_operator_resources{kind="Topic",cluster="events",ready="true"} 1"#.to_string()));
        assert_eq!(now.len(), 6);
    }
}
