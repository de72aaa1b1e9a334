//! OffsetCommit and OffsetFetch, including the batched multi-group OffsetFetch (v8+).

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Ctx;
use crate::clock::now_ms;
use crate::group::coordinator::OffsetCommit;
use crate::group::offsets::CommittedOffset;
use crate::replica_manager::TopicPartition;

/// One partition's commit as a request carries it, stamped now.
pub fn commit_entry(
    topic: &str,
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<&StrBytes>,
) -> OffsetCommit {
    OffsetCommit {
        tp: TopicPartition::new(topic, partition),
        offset: CommittedOffset {
            offset,
            leader_epoch,
            metadata: metadata.map(|m| m.to_string()).unwrap_or_default(),
            commit_timestamp: now_ms(),
        },
    }
}

pub async fn commit(ctx: &Ctx<'_>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let b = ctx.broker;
    let mut entries = Vec::new();
    let mut unknown = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            if b.metadata.topic(t.name.as_str()).and_then(|m| m.partition(p.partition_index).cloned()).is_none() {
                unknown.push((t.name.to_string(), p.partition_index));
                continue;
            }
            entries.push(commit_entry(
                t.name.as_str(),
                p.partition_index,
                p.committed_offset,
                p.committed_leader_epoch,
                p.committed_metadata.as_ref(),
            ));
        }
    }
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    // Answer once the ISR has the commit: a coordinator failover must not lose it.
    let result = match b.groups.commit(
        req.group_id.as_str(),
        req.generation_id_or_member_epoch,
        req.member_id.as_str(),
        instance.as_deref(),
        entries,
    ) {
        Ok(Some(w)) => ctx.remote.wait(w.replicated()).await,
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let code = if unknown.contains(&(t.name.to_string(), p.partition_index)) {
                        ctx.err(ResponseError::UnknownTopicOrPartition)
                    } else {
                        ctx.code(result)
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(t.name).with_topic_id(t.topic_id).with_partitions(parts)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// A topic's partitions with their committed offsets (none when never committed).
type TopicOffsets = (TopicName, Vec<(i32, Option<CommittedOffset>)>);

/// The committed offsets of one group for the requested partitions (all when `None`).
fn lookup(ctx: &Ctx<'_>, group: &str, wanted: Option<Vec<(TopicName, Vec<i32>)>>) -> Vec<TopicOffsets> {
    let committed = ctx.broker.groups.fetch_offsets(group);
    match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(t, parts)| {
                let ps = parts
                    .into_iter()
                    .map(|p| (p, committed.get(&TopicPartition::new(t.as_str(), p)).cloned()))
                    .collect();
                (t, ps)
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<String, Vec<(i32, Option<CommittedOffset>)>> = BTreeMap::new();
            for (tp, c) in committed {
                by_topic.entry(tp.topic).or_default().push((tp.partition, Some(c)));
            }
            by_topic.into_iter().map(|(t, ps)| (TopicName(StrBytes::from_string(t)), ps)).collect()
        }
    }
}

/// With `require_stable` (KIP-447), the partitions whose offsets a transaction has
/// committed but not yet completed.
fn unstable(ctx: &Ctx<'_>, group: &str, require_stable: bool) -> HashSet<TopicPartition> {
    if require_stable {
        ctx.broker.groups.unstable_partitions(group)
    } else {
        HashSet::new()
    }
}

/// UNSTABLE_OFFSET_COMMIT for a partition with a pending transactional commit: the client
/// retries until the transaction completes.
fn stable_code(ctx: &Ctx<'_>, unstable: &HashSet<TopicPartition>, topic: &TopicName, p: i32) -> i16 {
    if unstable.contains(&TopicPartition::new(topic.as_str(), p)) {
        ctx.err(ResponseError::UnstableOffsetCommit)
    } else {
        0
    }
}

fn values(c: Option<CommittedOffset>) -> (i64, i32, Option<StrBytes>) {
    match c {
        Some(c) => (c.offset, c.leader_epoch, Some(StrBytes::from_string(c.metadata))),
        None => (-1, -1, Some(StrBytes::default())),
    }
}

pub async fn fetch(ctx: &Ctx<'_>, req: OffsetFetchRequest) -> OffsetFetchResponse {
    if ctx.version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                if let Err(e) = ctx.broker.groups.check(g.group_id.as_str()) {
                    return OffsetFetchResponseGroup::default().with_group_id(g.group_id).with_error_code(ctx.err(e));
                }
                let wanted = g.topics.map(|ts| ts.into_iter().map(|t| (t.name, t.partition_indexes)).collect());
                let unstable = unstable(ctx, g.group_id.as_str(), req.require_stable);
                let topics = lookup(ctx, g.group_id.as_str(), wanted)
                    .into_iter()
                    .map(|(t, parts)| {
                        let partitions = parts
                            .into_iter()
                            .map(|(p, c)| {
                                let code = stable_code(ctx, &unstable, &t, p);
                                let (offset, epoch, meta) = values(if code == 0 { c } else { None });
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(meta)
                                    .with_error_code(code)
                            })
                            .collect();
                        OffsetFetchResponseTopics::default().with_name(t).with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default().with_group_id(g.group_id).with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    if let Err(e) = ctx.broker.groups.check(req.group_id.as_str()) {
        return OffsetFetchResponse::default().with_error_code(ctx.err(e));
    }
    let wanted = req.topics.map(|ts| ts.into_iter().map(|t| (t.name, t.partition_indexes)).collect());
    let unstable = unstable(ctx, req.group_id.as_str(), ctx.version >= 7 && req.require_stable);
    let topics = lookup(ctx, req.group_id.as_str(), wanted)
        .into_iter()
        .map(|(t, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(p, c)| {
                    let code = stable_code(ctx, &unstable, &t, p);
                    let (offset, epoch, meta) = values(if code == 0 { c } else { None });
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(meta)
                        .with_error_code(code)
                })
                .collect();
            OffsetFetchResponseTopic::default().with_name(t).with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
