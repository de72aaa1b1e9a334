//! The operator's Prometheus metrics (names listed in docs/metrics.md). Controllers report
//! through these methods only, so the series stay one consistent set.

use std::sync::Arc;
use std::time::Duration;

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
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub kind: &'static str,
    pub ready: &'static str,
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
    api_writes: Family<WriteLabels, Counter>,
    admin_writes: Family<WriteLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16)));
        let queue_depth = Family::<ControllerLabel, Gauge>::default();
        let resources = Family::<ResourceLabels, Gauge>::default();
        let api_writes = Family::<WriteLabels, Counter>::default();
        let admin_writes = Family::<WriteLabels, Counter>::default();
        registry.register("fjord_operator_reconciles", "Reconciles by controller and result (ok, error, requeue)", reconciles.clone());
        registry.register("fjord_operator_reconcile_errors", "Reconcile errors by controller and reason", errors.clone());
        registry.register_with_unit("fjord_operator_reconcile_duration", "Time one reconcile took", prometheus_client::registry::Unit::Seconds, duration.clone());
        registry.register("fjord_operator_queue_depth", "Objects waiting for a reconcile, by controller", queue_depth.clone());
        registry.register("fjord_operator_resources", "Cluster and Topic resources by readiness (ready: true, false, unknown)", resources.clone());
        registry.register("fjord_operator_api_writes", "Writes to the Kubernetes API, by controller and object kind", api_writes.clone());
        registry.register("fjord_operator_kafka_admin_writes", "Admin writes to brokers (CreateTopics, IncrementalAlterConfigs, ...), by controller and Kafka API", admin_writes.clone());
        Arc::new(Metrics { registry, reconciles, errors, duration, queue_depth, resources, api_writes, admin_writes })
    }

    /// One reconcile finished: `result` is "ok", "error" or "requeue"; `reason` names the
    /// error kind when there was one.
    pub fn reconciled(&self, controller: &'static str, result: &'static str, reason: Option<&str>, took: Duration) {
        self.reconciles.get_or_create(&ResultLabels { controller, result }).inc();
        if let Some(reason) = reason {
            self.errors.get_or_create(&ErrorLabels { controller, reason: reason.to_string() }).inc();
        }
        self.duration.get_or_create(&ControllerLabel { controller }).observe(took.as_secs_f64());
    }

    pub fn set_queue_depth(&self, controller: &'static str, depth: i64) {
        self.queue_depth.get_or_create(&ControllerLabel { controller }).set(depth);
    }

    /// Replace the readiness counts of one kind ("Cluster" or "Topic").
    pub fn set_resources(&self, kind: &'static str, ready: i64, not_ready: i64, unknown: i64) {
        self.resources.get_or_create(&ResourceLabels { kind, ready: "true" }).set(ready);
        self.resources.get_or_create(&ResourceLabels { kind, ready: "false" }).set(not_ready);
        self.resources.get_or_create(&ResourceLabels { kind, ready: "unknown" }).set(unknown);
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
