//! Pure decisions of the Topic controller, kept apart from I/O so they can be tested.

use std::collections::{BTreeMap, HashMap};

use fjord_crds::topic::GroupLag;
use fjord_crds::{Topic, TopicStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::cluster::brokers::GroupTopic;
use crate::kafka::{ConfigEntry, Endpoints, GroupOffset, TopicInfo, SOURCE_DYNAMIC_TOPIC};

pub const PAUSED_ANNOTATION: &str = "fjord.dev/paused";

/// The Kafka topic name: spec.topicName, else metadata.name.
pub fn topic_name(t: &Topic) -> String {
    t.spec.topic_name.clone().unwrap_or_else(|| t.name_any())
}

pub fn is_paused(t: &Topic) -> bool {
    t.annotations().get(PAUSED_ANNOTATION).is_some_and(|v| v == "true")
}

/// Topic overrides to set and to delete so that the dynamic overrides equal `desired`
/// exactly. A desired key currently at a non-override source (default, broker config) is
/// set too: it then stays put when the broker default changes.
#[derive(Debug, Default, PartialEq)]
pub struct ConfigChange {
    pub set: BTreeMap<String, String>,
    pub delete: Vec<String>,
}

impl ConfigChange {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.delete.is_empty()
    }

    /// Keys touched, for events and logs.
    pub fn keys(&self) -> Vec<&str> {
        self.set.keys().map(String::as_str).chain(self.delete.iter().map(String::as_str)).collect()
    }
}

pub fn config_diff(desired: &BTreeMap<String, String>, current: &[ConfigEntry]) -> ConfigChange {
    let overrides: HashMap<&str, Option<&str>> = current
        .iter()
        .filter(|c| c.source == SOURCE_DYNAMIC_TOPIC)
        .map(|c| (c.name.as_str(), c.value.as_deref()))
        .collect();
    let set = desired
        .iter()
        .filter(|(k, v)| overrides.get(k.as_str()) != Some(&Some(v.as_str())))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut delete: Vec<String> =
        overrides.keys().filter(|k| !desired.contains_key(**k)).map(|k| k.to_string()).collect();
    delete.sort();
    ConfigChange { set, delete }
}

#[derive(Debug, PartialEq)]
pub enum PartitionPlan {
    Same,
    /// CreatePartitions up to this total.
    Grow(i32),
    /// Kafka has more than the spec asks; partitions cannot be removed.
    TooMany {
        actual: i32,
    },
}

pub fn partition_plan(spec: i32, actual: i32) -> PartitionPlan {
    match spec.cmp(&actual) {
        std::cmp::Ordering::Equal => PartitionPlan::Same,
        std::cmp::Ordering::Greater => PartitionPlan::Grow(spec),
        std::cmp::Ordering::Less => PartitionPlan::TooMany { actual },
    }
}

/// Replicas per partition (the largest, so a partition mid-reassignment does not hide one).
pub fn replication_factor(t: &TopicInfo) -> i32 {
    t.partitions.iter().map(|p| p.replicas.len() as i32).max().unwrap_or(0)
}

pub fn under_replicated(t: &TopicInfo) -> i32 {
    t.partitions.iter().filter(|p| p.isr.len() < p.replicas.len()).count() as i32
}

/// Lag per group on `topic`: latest offset − committed, summed over partitions (never
/// negative: the latest offset is read after the commit and may be stale by a little).
/// Lag in seconds comes from the brokers'
/// `fjord_consumer_group_lag_seconds` (max per group and topic, see
/// [`crate::cluster::brokers::lag_seconds`]), rounded to 0.1 s; 0 for a group no broker
/// reported.
pub fn group_lags(
    topic: &str,
    committed: &[GroupOffset],
    latest: &HashMap<i32, i64>,
    seconds: &HashMap<GroupTopic, f64>,
) -> Vec<GroupLag> {
    let mut by_group: BTreeMap<&str, i64> = BTreeMap::new();
    for c in committed.iter().filter(|c| c.topic == topic) {
        let end = latest.get(&c.partition).copied().unwrap_or(c.offset);
        *by_group.entry(&c.group).or_default() += (end - c.offset).max(0);
    }
    by_group
        .into_iter()
        .map(|(group, lag)| {
            let key = GroupTopic { group: group.to_string(), topic: topic.to_string() };
            let secs = seconds.get(&key).copied().unwrap_or(0.0).max(0.0);
            GroupLag { group: group.to_string(), lag, lag_seconds: (secs * 10.0).round() / 10.0 }
        })
        .collect()
}

/// The Ready condition, keeping the old transition time while its status holds.
pub fn ready_condition(
    old: Option<&TopicStatus>,
    ready: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    let previous = old.and_then(|s| s.conditions.iter().find(|c| c.type_ == fjord_crds::condition::READY));
    let last_transition_time = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    Condition {
        type_: fjord_crds::condition::READY.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The merge patch turning `old` into `new` (fields `new` drops become null), or None when
/// they are equal: an unchanged status is never written.
pub fn status_patch(old: Option<&TopicStatus>, new: &TopicStatus) -> Option<serde_json::Value> {
    if old == Some(new) {
        return None;
    }
    let mut status = serde_json::to_value(new).expect("status serializes");
    if let (Some(old), serde_json::Value::Object(map)) =
        (old.map(|o| serde_json::to_value(o).expect("status serializes")), &mut status)
    {
        for key in old.as_object().into_iter().flat_map(|o| o.keys()) {
            map.entry(key.clone()).or_insert(serde_json::Value::Null);
        }
    }
    Some(serde_json::json!({ "status": status }))
}

/// Broker addresses of the Cluster's Ready pods: pod IP and the internal listener port.
/// Pod IPs come from the API rather than DNS so the operator works without cluster DNS.
pub fn ready_endpoints<'a>(pods: impl IntoIterator<Item = &'a Pod>, port: i32) -> Endpoints {
    let mut ready: Vec<(String, String)> = pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            let ready = status.conditions.as_ref()?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
            ready.then(|| (p.name_any(), ip))
        })
        .collect();
    ready.sort();
    Endpoints {
        bootstrap: ready.iter().map(|(_, ip)| format!("{ip}:{port}")).collect(),
        pod_ips: ready.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::client::PartitionInfo;
    use fjord_crds::TopicSpec;

    fn entry(name: &str, value: &str, source: i8) -> ConfigEntry {
        ConfigEntry { name: name.into(), value: Some(value.into()), source }
    }

    fn topic(name: &str, topic_name: Option<&str>) -> Topic {
        let spec = TopicSpec {
            cluster: "c".into(),
            topic_name: topic_name.map(Into::into),
            partitions: 3,
            replication_factor: 3,
            config: BTreeMap::new(),
            deletion_policy: Default::default(),
            adopt: false,
        };
        Topic::new(name, spec)
    }

    #[test]
    fn name_defaults_to_metadata_name() {
        assert_eq!(topic_name(&topic("orders", None)), "orders");
        assert_eq!(topic_name(&topic("orders", Some("Orders_V2"))), "Orders_V2");
    }

    #[test]
    fn paused_only_with_true() {
        let mut t = topic("a", None);
        assert!(!is_paused(&t));
        t.annotations_mut().insert(PAUSED_ANNOTATION.into(), "false".into());
        assert!(!is_paused(&t));
        t.annotations_mut().insert(PAUSED_ANNOTATION.into(), "true".into());
        assert!(is_paused(&t));
    }

    #[test]
    fn config_diff_sets_differences_and_deletes_foreign_overrides() {
        let desired: BTreeMap<String, String> =
            [("retention.ms", "1000"), ("cleanup.policy", "delete"), ("segment.ms", "5")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into();
        let current = vec![
            entry("retention.ms", "2000", 1),     // changed outside: set back
            entry("cleanup.policy", "delete", 5), // default with the same value: pin it
            entry("segment.ms", "5", 1),          // already right
            entry("max.message.bytes", "10", 1),  // override not in spec: delete
            entry("flush.ms", "7", 4),            // broker default: not ours
        ];
        let change = config_diff(&desired, &current);
        assert_eq!(change.set.keys().collect::<Vec<_>>(), vec!["cleanup.policy", "retention.ms"]);
        assert_eq!(change.delete, vec!["max.message.bytes"]);
        let settled =
            vec![entry("retention.ms", "1000", 1), entry("cleanup.policy", "delete", 1), entry("segment.ms", "5", 1)];
        assert!(config_diff(&desired, &settled).is_empty());
    }

    #[test]
    fn partitions_only_grow() {
        assert_eq!(partition_plan(3, 3), PartitionPlan::Same);
        assert_eq!(partition_plan(6, 3), PartitionPlan::Grow(6));
        assert_eq!(partition_plan(3, 6), PartitionPlan::TooMany { actual: 6 });
    }

    #[test]
    fn replication_and_under_replication() {
        let p = |i, r: &[i32], isr: &[i32]| PartitionInfo {
            index: i,
            leader: r[0],
            replicas: r.to_vec(),
            isr: isr.to_vec(),
            offline: vec![],
        };
        let t = TopicInfo {
            name: "t".into(),
            id: String::new(),
            partitions: vec![p(0, &[1, 2, 3], &[1, 2, 3]), p(1, &[2, 3, 1], &[2])],
        };
        assert_eq!(replication_factor(&t), 3);
        assert_eq!(under_replicated(&t), 1);
    }

    #[test]
    fn lag_is_latest_minus_committed_per_group() {
        let offset = |group: &str, topic: &str, partition, offset| GroupOffset {
            group: group.into(),
            topic: topic.into(),
            partition,
            offset,
        };
        let committed = vec![
            offset("g1", "t", 0, 5),
            offset("g1", "t", 1, 10),
            offset("g2", "t", 0, 8),
            offset("g2", "other", 0, 0),
        ];
        let latest: HashMap<i32, i64> = [(0, 8), (1, 9)].into();
        let key = |group: &str, topic: &str| GroupTopic { group: group.into(), topic: topic.into() };
        let seconds: HashMap<GroupTopic, f64> = [(key("g1", "t"), 12.345), (key("g1", "other"), 99.0)].into();
        let lags = group_lags("t", &committed, &latest, &seconds);
        assert_eq!(
            lags.iter().map(|g| (g.group.as_str(), g.lag, g.lag_seconds)).collect::<Vec<_>>(),
            vec![("g1", 3, 12.3), ("g2", 0, 0.0)],
            "seconds of this topic only, rounded; a group no broker reports has 0"
        );
    }

    #[test]
    fn status_patch_only_on_change_and_nulls_dropped_fields() {
        let old = TopicStatus { bytes: Some(5), managed: true, ..Default::default() };
        assert_eq!(status_patch(Some(&old), &old.clone()), None);
        let new = TopicStatus { managed: true, ..Default::default() };
        let patch = status_patch(Some(&old), &new).unwrap();
        assert_eq!(patch["status"]["bytes"], serde_json::Value::Null);
        assert_eq!(patch["status"]["managed"], true);
    }

    #[test]
    fn transition_time_kept_while_status_holds() {
        let first = ready_condition(None, true, "Created", String::new(), Some(1));
        let old = TopicStatus { conditions: vec![first.clone()], ..Default::default() };
        let again = ready_condition(Some(&old), true, "UpToDate", String::new(), Some(2));
        assert_eq!(again.last_transition_time, first.last_transition_time);
        assert_eq!(again.reason, "UpToDate");
    }

    #[test]
    fn endpoints_from_ready_pods() {
        let pod = |name: &str, ip: &str, ready: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}
            }))
            .unwrap()
        };
        let pods = [pod("c-1", "10.0.0.2", "True"), pod("c-0", "10.0.0.1", "True"), pod("c-2", "10.0.0.3", "False")];
        let eps = ready_endpoints(pods.iter(), 9092);
        assert_eq!(eps.bootstrap, vec!["10.0.0.1:9092", "10.0.0.2:9092"]);
        assert_eq!(eps.pod_ips.get("c-1").map(String::as_str), Some("10.0.0.2"));
    }
}
