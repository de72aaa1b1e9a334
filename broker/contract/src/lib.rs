//! The broker↔operator contract: the JSON bodies of the broker's HTTP endpoint
//! (`fjord.http.listen`, port 9644) that the operator and the e2e tests read.
//!
//! - `GET /status` → [`Status`], always 200;
//! - `GET /restart-safe` → [`RestartSafe`], 200 when [`RestartSafe::safe`], else 503 with
//!   the same body.
//!
//! The broker builds these bodies from these types and the operator parses them with the
//! same types, so a field cannot be renamed on one side only.
//!
//! # Wire compatibility
//!
//! The field names and shapes are those the broker wrote before this crate existed, and
//! so are the bytes: those bodies went through `serde_json::Value`, whose objects sort
//! their keys, so every struct here declares its fields in alphabetical order
//! (serialization follows declaration order). Keep it so when adding a field.
//!
//! Reading is lenient: a field missing from the body takes its default and unknown fields
//! are ignored, so an operator can talk to brokers one version older or newer during an
//! upgrade.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The body of `GET /status`: recovery progress and role of one broker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    /// The epoch the controller gave this broker at registration; 0 before it registered.
    pub broker_epoch: u64,
    /// The broker has replayed the metadata log up to what the controller had committed
    /// when it registered.
    pub caught_up: bool,
    /// This node is the active controller (the metadata quorum's leader).
    pub controller_active: bool,
    /// Index of the last metadata log entry applied to this broker's metadata image.
    pub metadata_applied_index: u64,
    /// The broker's `node.id` (the pod's ordinal under the operator).
    pub node_id: i32,
    /// Partitions the metadata assigns to this broker (it is in their replica set),
    /// whether or not it hosts them yet.
    pub partitions_assigned: u64,
    /// Partition replicas this broker has open locally.
    pub partitions_hosted: u64,
    /// Of the hosted partitions, those this broker leads.
    pub partitions_led: u64,
    /// The metadata quorum as this node sees it; `null` on a node outside the quorum.
    pub quorum: Option<Quorum>,
    /// Registered, unfenced and caught up: serving clients (what `/ready` answers).
    pub ready: bool,
    /// Seconds since the process started.
    pub uptime_seconds: f64,
}

/// The metadata quorum (Raft) as one member sees it, in `Status::quorum`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Quorum {
    /// Index of the last log entry applied to the state machine.
    pub applied: u64,
    /// Index of the last log entry known committed.
    pub committed: u64,
    /// Index of the last entry in this node's log (0 when empty).
    pub last_log_index: u64,
    /// The current leader's node id, if one is known.
    pub leader: Option<u64>,
    /// Members that replicate the log without voting.
    pub learners: Vec<u64>,
    /// This member's node id.
    pub node_id: u64,
    /// On the leader: the log index each other member has matched (`null` while unknown),
    /// by node id; empty on followers. JSON object keys are the ids as strings.
    #[serde(serialize_with = "keys_as_text")]
    pub replication: BTreeMap<u64, Option<u64>>,
    /// The current Raft term.
    pub term: u64,
    /// The voting members.
    pub voters: Vec<u64>,
}

/// The body of `GET /restart-safe`: whether stopping this broker now would take any
/// partition it holds below its min ISR. The operator's rolling restart asks before it
/// deletes each broker pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartSafe {
    /// Whether the broker is ready (a broker that is not is never safe to restart: it may
    /// be the one replica catching up).
    pub ready: bool,
    /// Partitions (`<topic>-<index>`) whose replication factor leaves no room for one
    /// replica to be down (RF <= min ISR, RF=1 included): they go offline (or below min
    /// ISR) during any restart, so they are reported but do not make the answer unsafe;
    /// a rolling restart would otherwise wait on them forever.
    pub replication_factor_allows_no_restart: Vec<String>,
    /// Safe to stop now: `ready`, and `would_fall_below_min_isr` is empty. The HTTP status
    /// says the same: 200 when safe, 503 when not.
    pub safe: bool,
    /// The partitions whose ISR would drop below min ISR without this broker.
    pub would_fall_below_min_isr: Vec<Blocking>,
}

/// One partition that blocks a restart, in [`RestartSafe::would_fall_below_min_isr`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Blocking {
    /// The partition's in-sync replicas now (node ids), this broker included.
    pub isr: Vec<i32>,
    /// The topic's effective `min.insync.replicas` (at least 1).
    pub min_isr: u64,
    /// `<topic>-<index>`.
    pub partition: String,
}

impl Blocking {
    pub fn new(topic: &str, index: usize, isr: Vec<i32>, min_isr: u64) -> Self {
        Blocking { isr, min_isr, partition: partition_name(topic, index) }
    }
}

/// A partition as these bodies name it: `<topic>-<index>`.
pub fn partition_name(topic: &str, index: usize) -> String {
    format!("{topic}-{index}")
}

/// `replication` as a JSON object whose keys sort as text ("10" before "2"), the order the
/// broker has always written: numeric order would differ from 10 members on.
fn keys_as_text<S: serde::Serializer>(map: &BTreeMap<u64, Option<u64>>, s: S) -> Result<S::Ok, S::Error> {
    let text: BTreeMap<String, &Option<u64>> = map.iter().map(|(k, v)| (k.to_string(), v)).collect();
    text.serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status() -> Status {
        Status {
            broker_epoch: 7,
            caught_up: true,
            controller_active: true,
            metadata_applied_index: 42,
            node_id: 1,
            partitions_assigned: 4,
            partitions_hosted: 3,
            partitions_led: 2,
            quorum: Some(Quorum {
                applied: 42,
                committed: 42,
                last_log_index: 43,
                leader: Some(1),
                learners: vec![3],
                node_id: 1,
                replication: BTreeMap::from([(0, Some(41)), (2, None), (10, Some(40))]),
                term: 5,
                voters: vec![0, 1, 2],
            }),
            ready: true,
            uptime_seconds: 12.5,
        }
    }

    /// The `/status` body exactly as the broker wrote it with `json!` (keys sorted).
    #[test]
    fn status_bytes_are_those_the_broker_wrote() {
        let s = status();
        let q = s.quorum.as_ref().unwrap();
        let before = json!({
            "node_id": s.node_id,
            "ready": s.ready,
            "caught_up": s.caught_up,
            "broker_epoch": s.broker_epoch,
            "controller_active": s.controller_active,
            "metadata_applied_index": s.metadata_applied_index,
            "quorum": {
                "node_id": q.node_id, "leader": q.leader, "term": q.term, "last_log_index": q.last_log_index,
                "committed": q.committed, "applied": q.applied, "voters": q.voters, "learners": q.learners,
                "replication": {"0": 41, "2": null, "10": 40},
            },
            "partitions_hosted": 3usize,
            "partitions_assigned": 4usize,
            "partitions_led": 2usize,
            "uptime_seconds": 12.5,
        });
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(text, before.to_string());
        assert_eq!(
            text,
            r#"{"broker_epoch":7,"caught_up":true,"controller_active":true,"metadata_applied_index":42,"node_id":1,"partitions_assigned":4,"partitions_hosted":3,"partitions_led":2,"quorum":{"applied":42,"committed":42,"last_log_index":43,"leader":1,"learners":[3],"node_id":1,"replication":{"0":41,"10":40,"2":null},"term":5,"voters":[0,1,2]},"ready":true,"uptime_seconds":12.5}"#
        );
        let outside = Status { quorum: None, ..s };
        assert!(serde_json::to_string(&outside).unwrap().contains(r#""quorum":null"#));
    }

    #[test]
    fn restart_safe_bytes_are_those_the_broker_wrote() {
        let blocking = vec![Blocking::new("orders", 0, vec![2, 1], 2)];
        let r = RestartSafe {
            ready: true,
            replication_factor_allows_no_restart: vec![partition_name("single", 0)],
            safe: false,
            would_fall_below_min_isr: blocking,
        };
        let before = json!({
            "safe": false,
            "ready": true,
            "would_fall_below_min_isr": [json!({"partition": "orders-0", "isr": [2, 1], "min_isr": 2usize})],
            "replication_factor_allows_no_restart": ["single-0"],
        });
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, before.to_string());
        assert_eq!(
            text,
            r#"{"ready":true,"replication_factor_allows_no_restart":["single-0"],"safe":false,"would_fall_below_min_isr":[{"isr":[2,1],"min_isr":2,"partition":"orders-0"}]}"#
        );
    }

    #[test]
    fn round_trips() {
        let s = status();
        assert_eq!(serde_json::from_str::<Status>(&serde_json::to_string(&s).unwrap()).unwrap(), s);
        let r = RestartSafe {
            ready: true,
            replication_factor_allows_no_restart: vec!["a-1".into()],
            safe: true,
            would_fall_below_min_isr: vec![Blocking::new("b", 3, vec![1], 1)],
        };
        assert_eq!(serde_json::from_str::<RestartSafe>(&serde_json::to_string(&r).unwrap()).unwrap(), r);
    }

    #[test]
    fn reading_is_lenient_about_missing_and_unknown_fields() {
        let s: Status =
            serde_json::from_str(r#"{"node_id":2,"ready":true,"partitions_hosted":3,"quorum":null,"new_field":[1]}"#)
                .unwrap();
        assert_eq!((s.node_id, s.ready, s.partitions_hosted, s.partitions_assigned), (2, true, 3, 0));
        let r: RestartSafe = serde_json::from_str(r#"{"safe":false}"#).unwrap();
        assert_eq!(r, RestartSafe::default());
        let q: Quorum = serde_json::from_str(r#"{"leader":null,"replication":{"2":5,"10":null}}"#).unwrap();
        assert_eq!(q.replication, BTreeMap::from([(2, Some(5)), (10, None)]));
    }
}
