//! `Cluster`: a Fjord cluster of `replicas` broker pods, some of them metadata-quorum voters.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::Rule; // x_kube attributes get `Rule`/`ListMerge` from the KubeSchema expansion
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Broker properties the operator writes itself: each follows from the pod's identity or
/// from another spec field, and a user value would break the cluster (a wrong node.id or
/// quorum list splits it).
pub const OPERATOR_OWNED_CONFIG: &[&str] = &[
    "node.id",
    "broker.id",
    "process.roles",
    "controller.quorum.voters",
    "controller.listener.names",
    "listeners",
    "advertised.listeners",
    "inter.broker.listener.name",
    "log.dirs",
    "log.dir",
    "cluster.id",
    "broker.rack",
    "fjord.http.listen",
    "fjord.metrics.granularity",
];

// Rules built from the constants the operator uses, so the two cannot disagree.
fn operator_owned_config_rule() -> Rule {
    let list = serde_json::to_string(OPERATOR_OWNED_CONFIG).unwrap().replace('"', "'");
    let message = format!("config cannot set properties the operator manages: {}", OPERATOR_OWNED_CONFIG.join(", "));
    Rule::new(format!("self.all(k, !(k in {list}))")).message(message.as_str())
}

fn reserved_port_rule() -> Rule {
    let (controller, http) = (crate::ports::CONTROLLER, crate::ports::HTTP);
    let message = format!("ports {controller} (controller listener) and {http} (metrics and health) are taken");
    Rule::new(format!("self != {controller} && self != {http}")).message(message.as_str())
}

/// A Fjord cluster: a StatefulSet of brokers, its Services, and (with metrics) the
/// Prometheus objects.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "fjord.dev",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    status = "ClusterStatus",
    derive = "PartialEq",
    shortname = "fjc",
    category = "fjord",
    doc = "A Fjord (Kafka-compatible) cluster managed by the Fjord operator.",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyBrokers"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Bootstrap", type_ = "string", json_path = ".status.bootstrap"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // Pod names (`<name>-<ordinal>`), per-broker Services and the StatefulSet's revision
    // label all derive from the name and must fit a 63-character DNS label.
    validation = Rule::new("self.metadata.name.size() <= 40")
        .message("a Cluster name is at most 40 characters: pod and Service names derive from it"),
    // Once the controller has fixed the voter set (status.voters), scaling below it would
    // delete a voter: Fjord's quorum membership is static.
    validation = Rule::new("!has(self.status) || !has(self.status.voters) || self.spec.replicas >= size(self.status.voters)")
        .message("replicas cannot go below the number of metadata-quorum voters (status.voters)"),
)]
#[x_kube(
    validation = Rule::new("!has(self.voters) || self.voters <= self.replicas")
        .message("voters cannot exceed replicas: every voter is a broker pod"),
    validation = Rule::new("has(self.voters) == has(oldSelf.voters) && (!has(self.voters) || self.voters == oldSelf.voters)")
        .message("voters cannot change after creation: Fjord's controller.quorum.voters is static"),
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Broker container image, e.g. `fjord/broker:0.1.0`. Changing it rolls the brokers one
    /// at a time, each only when stopping it keeps every partition at its min ISR.
    #[x_kube(validation = Rule::new("self.size() > 0").message("image must not be empty"))]
    pub image: String,

    /// Fjord release in the image, for labels and status; informational (the image decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// Number of broker pods.
    #[x_kube(validation = Rule::new("self >= 1").message("replicas must be at least 1"))]
    pub replicas: i32,

    /// How many of the brokers (pods 0..voters-1) are also metadata-quorum voters. Default:
    /// the smaller of replicas and 3, fixed at creation. Odd, because an even count
    /// survives no more failures than the odd count below it; 5 at most, because every
    /// voter takes part in every metadata commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == 1 || self == 3 || self == 5")
        .message("voters must be 1, 3 or 5"))]
    pub voters: Option<i32>,

    /// CPU and memory of each broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Each broker's data volume.
    pub storage: Storage,

    /// Broker property overrides, by Kafka's property names (`log.retention.hours`,
    /// `min.insync.replicas`, ...). A change rolls the brokers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    #[x_kube(validation = operator_owned_config_rule())]
    pub config: BTreeMap<String, String>,

    /// Rack awareness: each broker's `broker.rack` is its node's value of this label, so
    /// replicas of a partition spread across zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<Rack>,

    /// Scheduling and metadata of the broker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,

    /// Client listeners. The controller listener (9093) and the HTTP endpoint (9644) are
    /// always there and not configurable.
    #[serde(default)]
    pub listeners: Listeners,

    /// The address brokers advertise to clients on the internal listener.
    #[serde(default)]
    pub advertise: Advertise,

    /// Prometheus scraping, alert rules and Grafana dashboards.
    #[serde(default)]
    pub metrics: Metrics,
}

/// A broker's persistent volume. It cannot change after creation: it becomes the
/// StatefulSet's volume claim template, which Kubernetes does not let anyone edit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self == oldSelf")
    .message("storage cannot change after creation: it is the StatefulSet's volume claim template"))]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Volume size, e.g. `100Gi`.
    pub size: Quantity,
    /// StorageClass of the volumes; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rack {
    /// Node label whose value names the broker's rack, e.g. `topology.kubernetes.io/zone`.
    #[x_kube(validation = Rule::new("self.size() > 0").message("rack.topologyKey must not be empty"))]
    pub topology_key: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Extra labels on the broker pods (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the broker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Affinity of the broker pods. When unset the operator prefers spreading brokers over
    /// nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.external) || self.external.port != self.internal.port")
    .message("the internal and external listeners need different ports"))]
#[serde(rename_all = "camelCase")]
pub struct Listeners {
    /// The in-cluster listener, served by a headless Service; `status.bootstrap` points here.
    #[serde(default)]
    pub internal: InternalListener,
    /// A listener reachable from outside the Kubernetes cluster, one Service per broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalListener>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InternalListener {
    #[serde(default = "default_internal_port")]
    #[x_kube(
        validation = Rule::new("self >= 1 && self <= 65535").message("port must be between 1 and 65535"),
        validation = reserved_port_rule(),
    )]
    pub port: i32,
}

impl Default for InternalListener {
    fn default() -> Self {
        Self { port: default_internal_port() }
    }
}

fn default_internal_port() -> i32 {
    9092
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalListener {
    /// How each broker's Service is exposed. Brokers advertise the node address and node
    /// port (NodePort) or the load balancer's address (LoadBalancer).
    #[serde(rename = "type")]
    pub type_: ExternalType,
    /// The broker's port for this listener, and the LoadBalancer Services' port.
    #[serde(default = "default_external_port")]
    #[x_kube(
        validation = Rule::new("self >= 1 && self <= 65535").message("port must be between 1 and 65535"),
        validation = reserved_port_rule(),
    )]
    pub port: i32,
    /// NodePort only: broker `i` gets node port `nodePortBase + i` (the bootstrap Service's
    /// node port is left to Kubernetes). Without it Kubernetes allocates every node port
    /// and the operator reads them back from the Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("nodePortBase must be between 1 and 65535"))]
    pub node_port_base: Option<i32>,
    /// Annotations on the external Services, e.g. a cloud's load balancer settings
    /// (`service.beta.kubernetes.io/aws-load-balancer-type: nlb`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn default_external_port() -> i32 {
    9094
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalType {
    NodePort,
    LoadBalancer,
}

/// What a broker puts in `advertised.listeners` for the internal listener.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Advertise {
    /// `<pod>.<headless service>.<namespace>.svc`: stable across restarts, needs cluster DNS.
    #[default]
    PodDnsName,
    /// The pod IP: for clients that cannot resolve cluster DNS (e.g. other meshes);
    /// changes when a pod is rescheduled, which clients handle by re-fetching metadata.
    PodIp,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    /// Create a ServiceMonitor and PrometheusRule (when the Prometheus operator's CRDs
    /// exist). The brokers serve /metrics either way.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The brokers' `fjord.metrics.granularity`: `topic` (default) exports per-topic
    /// series only; `partition` adds a `partition` label to log size and consumer lag and
    /// exports the per-partition offset gauges. A change rolls the brokers.
    #[serde(default)]
    pub granularity: Granularity,
    /// Extra labels on the ServiceMonitor, the PrometheusRule and the dashboards ConfigMap,
    /// e.g. the `release` label a Prometheus selects on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Also create a ConfigMap with Fjord's Grafana dashboard, labelled for Grafana's
    /// dashboard sidecar.
    #[serde(default)]
    pub dashboards: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self { enabled: true, granularity: Granularity::default(), labels: BTreeMap::new(), dashboards: false }
    }
}

fn yes() -> bool {
    true
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Granularity {
    #[default]
    Topic,
    Partition,
}

/// What the controller observed and decided. Counts come from the brokers' metrics.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Brokers passing their readiness probe.
    #[serde(default)]
    pub ready_brokers: i32,
    /// `host:port,...` for in-cluster clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<String>,
    /// `podIP:port,...` of the ready brokers' internal listener, for clients that cannot
    /// resolve cluster DNS; it changes when pods are recreated, like the pod IPs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_ip_bootstrap: Option<String>,
    /// `host:port,...` through the external listener, once its addresses are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_bootstrap: Option<String>,
    /// The Kafka cluster id the quorum wrote into its metadata log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Node ids of the metadata-quorum voters, fixed when the cluster is first created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voters: Vec<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub under_replicated_partitions: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_partitions: Option<i32>,
    /// Hash of the rendered broker configuration and image every broker runs; a spec whose
    /// hash differs starts a roll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Node ids still to restart in the current roll, in order (the active controller
    /// last); empty when no roll is under way. Kept here so a roll resumes where it stopped
    /// when the operator restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_restarts: Vec<i32>,
}
