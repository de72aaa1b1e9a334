//! Fetch (with long polling), ListOffsets and OffsetForLeaderEpoch: the read side.
//! Stored batches are served as they are on disk; no record is decoded on this path except
//! to answer a ListOffsets by timestamp inside a batch.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::*;

use super::{check_epoch, leader_partition, Ctx};
use crate::partition::Partition;
use crate::storage::batch::{find_record, TimestampOffset};
use crate::storage::log::EpochEnd;
use crate::storage::log::ReadError;

struct Resolved {
    name: TopicName,
    topic_id: uuid::Uuid,
    topic: Option<String>,
}

fn read_once(
    ctx: &Ctx<'_>,
    req: &FetchRequest,
    topics: &[Resolved],
    read_committed: bool,
    first: bool,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let b = ctx.broker;
    let replica = req.replica_id.0;
    // The broker's fetch.max.bytes bounds what one response may hold (and allocate),
    // whatever the client asks for.
    let cap = b.config.fetch_max_bytes as usize;
    let mut remaining = if ctx.version >= 3 { (req.max_bytes.max(0) as usize).min(cap) } else { cap };
    let mut total = 0usize;
    let mut any_error = false;
    let mut out = Vec::with_capacity(topics.len());
    for (ft, r) in req.topics.iter().zip(topics) {
        let mut parts = Vec::with_capacity(ft.partitions.len());
        for fp in &ft.partitions {
            let mut pd = PartitionData::default()
                .with_partition_index(fp.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1);
            let part = r.topic.as_ref().and_then(|t| b.replicas.get(t, fp.partition));
            let Some(part) = part else {
                any_error = true;
                parts.push(
                    pd.with_error_code(ctx.err(ResponseError::UnknownTopicOrPartition))
                        .with_records(Some(Bytes::new())),
                );
                continue;
            };
            let mut p = part.lock();
            if !p.is_leader() {
                any_error = true;
                parts.push(
                    pd.with_error_code(ctx.err(ResponseError::NotLeaderOrFollower)).with_records(Some(Bytes::new())),
                );
                continue;
            }
            pd = pd
                .with_high_watermark(p.high_watermark())
                .with_last_stable_offset(p.last_stable_offset())
                .with_log_start_offset(p.log.log_start_offset());
            if read_committed {
                pd = pd.with_aborted_transactions(Some(vec![]));
            }
            if let Err(e) = check_epoch(p.leader_epoch, fp.current_leader_epoch) {
                any_error = true;
                parts.push(pd.with_error_code(ctx.err(e)).with_records(Some(Bytes::new())));
                continue;
            }
            if replica >= 0 && fp.last_fetched_epoch >= 0 {
                let ours = p.log.end_offset_for_epoch(fp.last_fetched_epoch);
                if ours.epoch != fp.last_fetched_epoch || ours.end_offset < fp.fetch_offset {
                    // The follower's log diverged from ours: tell it where to truncate.
                    let div = kafka_protocol::messages::fetch_response::EpochEndOffset::default()
                        .with_epoch(ours.epoch)
                        .with_end_offset(ours.end_offset);
                    parts.push(pd.with_diverging_epoch(div).with_records(Some(Bytes::new())));
                    any_error = true;
                    continue;
                }
            }
            if replica >= 0 && first {
                // A follower's fetch offset is its log end offset (its epoch and its log
                // were checked above): it moves the high watermark and may bring it back
                // into the ISR.
                let hw = p.high_watermark();
                let join = p.record_follower_fetch(replica, fp.fetch_offset, crate::clock::now_ms());
                if p.high_watermark() > hw {
                    // Consumers long-polling at the old high watermark can read now.
                    b.replicas.notify_appended();
                }
                if let Some(isr) = join {
                    drop(p);
                    b.replication.propose_isr(&part, isr);
                    p = part.lock();
                }
            }
            let upper = if replica >= 0 {
                p.log.log_end_offset()
            } else if read_committed {
                p.last_stable_offset()
            } else {
                p.high_watermark()
            };
            // A copy to a replica outside the ISR waits while the leader's throttle is spent.
            let throttled = replica >= 0 && p.leader_throttled && !p.isr.contains(&replica);
            if throttled && b.replication.leader_quota.exceeded() {
                parts.push(pd.with_records(Some(Bytes::new())));
                continue;
            }
            let limit = (fp.partition_max_bytes.max(0) as usize).min(remaining);
            if limit == 0 && total > 0 {
                parts.push(pd.with_records(Some(Bytes::new())));
                continue;
            }
            match p.log.read(fp.fetch_offset, limit.max(1), upper) {
                Ok(r) => {
                    if read_committed && replica < 0 {
                        let aborted = p
                            .aborted_transactions(fp.fetch_offset, upper)
                            .into_iter()
                            .map(|a| {
                                AbortedTransaction::default()
                                    .with_producer_id(ProducerId(a.producer_id))
                                    .with_first_offset(a.first_offset)
                            })
                            .collect();
                        pd = pd.with_aborted_transactions(Some(aborted));
                    }
                    total += r.bytes.len();
                    remaining = remaining.saturating_sub(r.bytes.len());
                    if !r.bytes.is_empty() {
                        if replica >= 0 {
                            b.metrics.replication_bytes_out.inc_by(r.bytes.len() as u64);
                            if throttled {
                                b.replication.leader_quota.record(r.bytes.len());
                            }
                        } else {
                            b.metrics.consumed(&p.topic, &r.bytes);
                        }
                    }
                    parts.push(pd.with_records(Some(Bytes::from(r.bytes))));
                }
                Err(ReadError::OffsetOutOfRange) => {
                    any_error = true;
                    parts.push(
                        pd.with_error_code(ctx.err(ResponseError::OffsetOutOfRange)).with_records(Some(Bytes::new())),
                    );
                }
                Err(e @ ReadError::Storage(_)) => {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "read failed");
                    any_error = true;
                    parts.push(
                        pd.with_error_code(ctx.err(ResponseError::KafkaStorageError)).with_records(Some(Bytes::new())),
                    );
                }
            }
        }
        out.push(
            FetchableTopicResponse::default()
                .with_topic(r.name.clone())
                .with_topic_id(r.topic_id)
                .with_partitions(parts),
        );
    }
    (out, total, any_error)
}

pub async fn handle(ctx: &Ctx<'_>, req: FetchRequest) -> FetchResponse {
    let b = ctx.broker;
    let mut wake = b.replicas.subscribe();
    wake.borrow_and_update();
    let topics: Vec<Resolved> = req
        .topics
        .iter()
        .map(|t| {
            let meta =
                if ctx.version >= 13 { b.metadata.topic_by_id(t.topic_id) } else { b.metadata.topic(t.topic.as_str()) };
            Resolved { name: t.topic.clone(), topic_id: t.topic_id, topic: meta.map(|m| m.name) }
        })
        .collect();
    let read_committed = req.isolation_level == 1;
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let mut first = true;
    loop {
        let (responses, total, any_error) = read_once(ctx, &req, &topics, read_committed, first);
        first = false;
        let now = Instant::now();
        if total >= req.min_bytes.max(0) as usize || any_error || now >= deadline || total > 0 && req.min_bytes <= 1 {
            return FetchResponse::default().with_responses(responses);
        }
        // Long poll: sleep until something is appended anywhere or the wait runs out. A
        // timeout means nothing was appended since this read, so it is the answer.
        if ctx.remote.wait(tokio::time::timeout(deadline - now, wake.changed())).await.is_err() {
            return FetchResponse::default().with_responses(responses);
        }
    }
}

/// Offset of the first record with timestamp >= `ts`: exact for uncompressed batches; for
/// a compressed one, its first offset at or after the log start (a consumer then reads a
/// few records early, never misses one). See `batch::find_record`.
fn offset_for_timestamp(p: &Partition, ts: i64) -> anyhow::Result<Option<TimestampOffset>> {
    let Some(b) = p.log.batch_for_timestamp(ts)? else { return Ok(None) };
    let start = p.log.log_start_offset();
    let exact = find_record(&b.header, b.bytes, |t, offset| t >= ts && offset >= start);
    Ok(Some(
        exact.unwrap_or(TimestampOffset { timestamp: b.header.max_timestamp, offset: b.header.base_offset.max(start) }),
    ))
}

pub async fn list_offsets(ctx: &Ctx<'_>, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let read_committed = req.isolation_level == 1;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|lp| {
                    let resp = ListOffsetsPartitionResponse::default()
                        .with_partition_index(lp.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    let part = match leader_partition(ctx, t.name.as_str(), lp.partition_index, lp.current_leader_epoch)
                    {
                        Ok(p) => p,
                        Err(code) => return resp.with_error_code(code),
                    };
                    let p = part.lock();
                    let found = match lp.timestamp {
                        -2 | -4 => Ok(Some(TimestampOffset { timestamp: -1, offset: p.log.log_start_offset() })),
                        -1 => Ok(Some(TimestampOffset {
                            timestamp: -1,
                            offset: if read_committed { p.last_stable_offset() } else { p.high_watermark() },
                        })),
                        -3 => Ok(p.log.max_timestamp()),
                        ts if ts >= 0 => offset_for_timestamp(&p, ts),
                        _ => Ok(None),
                    };
                    match found {
                        Ok(Some(found)) => {
                            let resp = resp.with_timestamp(found.timestamp).with_offset(found.offset);
                            if ctx.version >= 4 {
                                resp.with_leader_epoch(p.leader_epoch)
                            } else {
                                resp
                            }
                        }
                        Ok(None) => resp,
                        Err(e) => {
                            tracing::error!(error = %e, "list offsets failed");
                            resp.with_error_code(ctx.err(ResponseError::KafkaStorageError))
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(parts)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

pub async fn offset_for_leader_epoch(ctx: &Ctx<'_>, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|op| {
                    let resp = EpochEndOffset::default()
                        .with_partition(op.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let part = match leader_partition(ctx, t.topic.as_str(), op.partition, op.current_leader_epoch) {
                        Ok(p) => p,
                        Err(code) => return resp.with_error_code(code),
                    };
                    let p = part.lock();
                    let ours = if op.leader_epoch >= p.leader_epoch {
                        EpochEnd { epoch: p.leader_epoch, end_offset: p.log.log_end_offset() }
                    } else {
                        p.log.end_offset_for_epoch(op.leader_epoch)
                    };
                    resp.with_leader_epoch(ours.epoch).with_end_offset(ours.end_offset)
                })
                .collect();
            OffsetForLeaderTopicResult::default().with_topic(t.topic).with_partitions(parts)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
