//! `Topic`: a Kafka topic on a `Cluster` in the same namespace.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
// `Rule` and `ListMerge` in x_kube attributes resolve inside the KubeSchema expansion.
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A Kafka topic kept in line with its spec: created, partitions added, configs altered,
/// and deleted with the resource when the policy says so.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "fjord.dev",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    status = "TopicStatus",
    derive = "PartialEq",
    shortname = "fjt",
    category = "fjord",
    doc = "A Kafka topic on a Fjord Cluster, managed by the Fjord operator.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Topic", type_ = "string", json_path = ".status.topicName"),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".spec.partitions"),
    printcolumn(name = "RF", type_ = "integer", json_path = ".spec.replicationFactor"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // metadata.name allows 253 characters, Kafka 249; its character set is a subset of
    // Kafka's, so length is the only way a defaulted topic name can be illegal.
    validation = Rule::new("has(self.spec.topicName) || self.metadata.name.size() <= 249")
        .message("metadata.name is longer than Kafka's 249-character limit: set spec.topicName"),
)]
#[x_kube(validation = Rule::new(
    "has(self.topicName) == has(oldSelf.topicName) && (!has(self.topicName) || self.topicName == oldSelf.topicName)"
).message("topicName cannot change: Kafka cannot rename a topic; create a new Topic instead"))]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// Name of the Cluster, in this namespace, that hosts the topic.
    #[x_kube(
        validation = Rule::new("self.size() > 0").message("cluster must name a Cluster"),
        validation = Rule::new("self == oldSelf").message("cluster cannot change: a Topic cannot move between clusters"),
    )]
    pub cluster: String,

    /// The Kafka topic name; metadata.name when unset. Use it for names Kubernetes does
    /// not allow, such as upper case or underscores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // maxLength also bounds the API server's cost estimate of the regex rule.
    #[schemars(length(max = 249))]
    #[x_kube(
        validation = Rule::new("self.matches('^[a-zA-Z0-9._-]+$')")
            .message("topicName may only contain ASCII letters, digits, '.', '_' and '-'"),
        validation = Rule::new("self.size() <= 249").message("topicName is at most 249 characters"),
        validation = Rule::new("self != '.' && self != '..'").message("topicName cannot be '.' or '..'"),
    )]
    pub topic_name: Option<String>,

    /// Number of partitions. It can grow (Kafka adds partitions) but never shrink; keyed
    /// producers map keys to different partitions after a change.
    #[x_kube(
        validation = Rule::new("self >= 1").message("partitions must be at least 1"),
        validation = Rule::new("self >= oldSelf").message("partitions can only be increased: Kafka cannot remove partitions"),
    )]
    pub partitions: i32,

    /// Replicas of each partition, at most the Cluster's broker count.
    #[x_kube(
        validation = Rule::new("self >= 1 && self <= 32").message("replicationFactor must be between 1 and 32"),
        validation = Rule::new("self == oldSelf").message(
            "replicationFactor cannot change: Kafka has no topic config for it (it takes a partition reassignment)"
        ),
    )]
    pub replication_factor: i32,

    /// Topic configs by Kafka's names (`retention.ms`, `cleanup.policy`, ...); configs not
    /// listed keep the broker's defaults. Removing a key resets it to the default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    pub config: BTreeMap<String, String>,

    /// What deleting this resource does to the Kafka topic. Only a topic the operator
    /// manages (status.managed) is ever deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Take over a topic that already exists in Kafka (partitions and configs are then made
    /// to match this spec). Without it, an existing topic of that name leaves the resource
    /// not Ready, and the topic is left alone.
    #[serde(default)]
    pub adopt: bool,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Delete the Kafka topic, and its data, with the resource.
    #[default]
    Delete,
    /// Keep the Kafka topic; a later Topic can adopt it.
    Retain,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The Kafka topic name in use (spec.topicName or metadata.name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    /// Kafka's topic id: a topic deleted and re-created outside the operator gets a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// The operator created the topic, or adopted it. Only a managed topic is altered or
    /// deleted; this is how the operator tells its topic from a namesake it must not touch.
    #[serde(default)]
    pub managed: bool,
    /// Partitions the topic has in Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub under_replicated_partitions: Option<i32>,
    /// Bytes stored on the leaders, all partitions (replicas not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// Consumer groups with committed offsets on this topic, and how far behind they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["group".into()]))]
    pub groups: Vec<GroupLag>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GroupLag {
    pub group: String,
    /// Records not yet consumed, summed over partitions.
    pub lag: i64,
    /// Age of the oldest unconsumed record, in seconds (the largest over partitions).
    pub lag_seconds: f64,
}
