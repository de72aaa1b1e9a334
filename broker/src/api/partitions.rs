//! Partition placement and leadership: ElectLeaders (preferred-leader election),
//! AlterPartitionReassignments and ListPartitionReassignments, and DescribeLogDirs (which
//! reassignment tools read first). Each is a metadata command
//! decided by the quorum; the replicas then follow the image (new replicas fetch, and the
//! old ones are removed once the new ones are in the ISR).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::*;

use super::{str, Ctx};
use crate::metadata::Command;

fn ids(v: &[i32]) -> Vec<BrokerId> {
    v.iter().map(|i| BrokerId(*i)).collect()
}

pub async fn elect_leaders(ctx: &Ctx<'_>, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let b = ctx.broker;
    if req.election_type != 0 {
        // Unclean election on demand is not offered; the topic config decides it.
        return ElectLeadersResponse::default().with_error_code(ctx.err(ResponseError::InvalidRequest));
    }
    let wanted: Vec<(String, Vec<i32>)> = match req.topic_partitions {
        Some(tp) => tp.into_iter().map(|t| (t.topic.to_string(), t.partitions)).collect(),
        None => b.metadata.topics().into_iter().map(|t| (t.name.clone(), (0..t.partitions).collect())).collect(),
    };
    let mut results = Vec::new();
    for (topic, parts) in wanted {
        let mut pr = Vec::new();
        for p in parts {
            let r = b.metadata.write(&Command::ElectPreferred { topic: topic.clone(), partition: p }).await;
            let code = match r {
                Ok(_) => 0,
                Err(e) => ctx.err(e),
            };
            pr.push(PartitionResult::default().with_partition_id(p).with_error_code(code));
        }
        results.push(ReplicaElectionResult::default().with_topic(TopicName(str(&topic))).with_partition_result(pr));
    }
    b.topics.sync_replicas().await;
    ElectLeadersResponse::default().with_replica_election_results(results)
}

pub async fn alter_reassignments(
    ctx: &Ctx<'_>,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let b = ctx.broker;
    let known: Vec<i32> = b.metadata.brokers().iter().filter(|m| !m.fenced).map(|m| m.id).collect();
    let mut responses = Vec::new();
    for t in req.topics {
        let meta = b.metadata.topic(t.name.as_str());
        let mut parts = Vec::new();
        for p in t.partitions {
            let resp = ReassignablePartitionResponse::default().with_partition_index(p.partition_index);
            let Some(current) = meta.as_ref().and_then(|m| m.partition(p.partition_index).cloned()) else {
                parts.push(resp.with_error_code(ctx.err(ResponseError::UnknownTopicOrPartition)));
                continue;
            };
            let target: Option<Vec<i32>> = p.replicas.map(|r| r.into_iter().map(|b| b.0).collect());
            if let Some(t) = &target {
                let mut dedup = t.clone();
                dedup.sort_unstable();
                dedup.dedup();
                let original = current.replicas.len() - current.adding.len();
                let bad = t.is_empty() || dedup.len() != t.len() || t.iter().any(|id| !known.contains(id));
                if bad {
                    parts.push(
                        resp.with_error_code(ctx.err(ResponseError::InvalidReplicaAssignment))
                            .with_error_message(Some(str("replicas must be distinct live brokers"))),
                    );
                    continue;
                }
                if !req.allow_replication_factor_change && ctx.version >= 1 && t.len() != original {
                    parts.push(resp.with_error_code(ctx.err(ResponseError::InvalidReplicationFactor)));
                    continue;
                }
            }
            let cmd = Command::Reassign { topic: t.name.to_string(), partition: p.partition_index, target };
            let code = match b.metadata.write(&cmd).await {
                Ok(_) => 0,
                Err(e) => ctx.err(e),
            };
            parts.push(resp.with_error_code(code));
        }
        responses.push(ReassignableTopicResponse::default().with_name(t.name).with_partitions(parts));
    }
    b.topics.sync_replicas().await;
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(req.allow_replication_factor_change)
        .with_responses(responses)
}

pub async fn list_reassignments(
    ctx: &Ctx<'_>,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let b = ctx.broker;
    let filter: Option<Vec<(String, Vec<i32>)>> =
        req.topics.map(|ts| ts.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
    let topics = b
        .metadata
        .topics()
        .into_iter()
        .filter_map(|t| {
            let wanted =
                |i: i32| filter.as_ref().is_none_or(|f| f.iter().any(|(n, ps)| *n == t.name && ps.contains(&i)));
            let parts: Vec<OngoingPartitionReassignment> = t
                .assignment
                .iter()
                .enumerate()
                .filter(|(i, p)| wanted(*i as i32) && !(p.adding.is_empty() && p.removing.is_empty()))
                .map(|(i, p)| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(i as i32)
                        .with_replicas(ids(&p.replicas))
                        .with_adding_replicas(ids(&p.adding))
                        .with_removing_replicas(ids(&p.removing))
                })
                .collect();
            (!parts.is_empty())
                .then(|| OngoingTopicReassignment::default().with_name(TopicName(str(&t.name))).with_partitions(parts))
        })
        .collect();
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}

/// DescribeLogDirs: this broker's one log directory and the size of each partition in it.
pub async fn describe_log_dirs(ctx: &Ctx<'_>, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    use kafka_protocol::messages::describe_log_dirs_response::{
        DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
    };
    let b = ctx.broker;
    let wanted = |t: &str, p: i32| {
        req.topics.as_ref().is_none_or(|ts| ts.iter().any(|w| w.topic.as_str() == t && w.partitions.contains(&p)))
    };
    let mut by_topic: std::collections::BTreeMap<String, Vec<DescribeLogDirsPartition>> = Default::default();
    for part in b.replicas.all() {
        let p = part.lock();
        if !wanted(&p.topic, p.index) {
            continue;
        }
        let lag = if p.is_leader() { 0 } else { (p.high_watermark() - p.log.log_end_offset()).max(0) };
        by_topic.entry(p.topic.clone()).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(p.index)
                .with_partition_size(p.log.size_bytes() as i64)
                .with_offset_lag(lag),
        );
    }
    let topics = by_topic
        .into_iter()
        .map(|(t, ps)| DescribeLogDirsTopic::default().with_name(TopicName(str(&t))).with_partitions(ps))
        .collect();
    let dir = b.config.data_dir();
    // -1: unknown, as Kafka answers when it cannot read the file system.
    let space = crate::storage::disk::disk_space(dir);
    let total = space.map_or(-1, |s| s.total as i64);
    let usable = space.map_or(-1, |s| s.free as i64);
    let result = DescribeLogDirsResult::default()
        .with_log_dir(str(&dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable);
    DescribeLogDirsResponse::default().with_results(vec![result])
}
