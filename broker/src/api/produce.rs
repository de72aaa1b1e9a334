//! Produce: validate each partition's batches and append them as received. With acks=all
//! the answer waits until the ISR has the batch (the high watermark passed it).

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Ctx;
use crate::clock::now_ms;
use crate::partition::{wait_replicated, Progress};
use crate::replica_manager::TopicPartition;
use crate::storage::batch::BatchHeader;
use crate::txn::TxnVersion;

fn partition_error(ctx: &Ctx<'_>, index: i32, e: ResponseError, msg: Option<String>) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(ctx.err(e))
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(msg.map(StrBytes::from_string))
}

/// An acks=all answer waiting for replication: (topic index, partition index, progress,
/// last offset, min ISR).
type Waiting = (usize, usize, tokio::sync::watch::Receiver<Progress>, i64, usize);

pub async fn handle(ctx: &Ctx<'_>, req: ProduceRequest) -> ProduceResponse {
    let b = ctx.broker;
    // Produce v12 and up belong to transaction version 2 (KIP-890).
    let txn_version = if ctx.version >= 12 { TxnVersion::V2 } else { TxnVersion::V1 };
    let mut responses = Vec::with_capacity(req.topic_data.len());
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut appended = false;
    for td in req.topic_data {
        let meta = if td.name.is_empty() && !td.topic_id.is_nil() {
            b.metadata.topic_by_id(td.topic_id)
        } else {
            b.metadata.topic(td.name.as_str())
        };
        let mut parts = Vec::with_capacity(td.partition_data.len());
        for pd in td.partition_data {
            let Some(topic) = meta.as_ref() else {
                parts.push(partition_error(ctx, pd.index, ResponseError::UnknownTopicOrPartition, None));
                continue;
            };
            if topic.internal {
                // Only the broker writes its internal topics (Kafka answers the same way).
                parts.push(partition_error(
                    ctx,
                    pd.index,
                    ResponseError::InvalidTopicException,
                    Some(format!("Cannot append to internal topic {}", topic.name)),
                ));
                continue;
            }
            if !matches!(req.acks, -1..=1) {
                parts.push(partition_error(ctx, pd.index, ResponseError::InvalidRequiredAcks, None));
                continue;
            }
            let Some(partition) = b.replicas.get(&topic.name, pd.index) else {
                let e = if topic.partition(pd.index).is_some() {
                    ResponseError::NotLeaderOrFollower
                } else {
                    ResponseError::UnknownTopicOrPartition
                };
                parts.push(partition_error(ctx, pd.index, e, None));
                continue;
            };
            let Some(records) = pd.records else {
                parts.push(partition_error(ctx, pd.index, ResponseError::CorruptMessage, Some("no records".into())));
                continue;
            };
            // KIP-890: the first batch of a transaction here waits for its coordinator to
            // confirm the partition is in the transaction (version 1) or to add it (2).
            let txn_batch = BatchHeader::parse(&records).ok().filter(|h| h.is_transactional() && !h.is_control());
            if let Some(h) = txn_batch.filter(|h| partition.lock().needs_verification(h)) {
                let tp = TopicPartition::new(&topic.name, pd.index);
                let verified = match req.transactional_id.as_ref().filter(|t| !t.is_empty()) {
                    None => Err(ResponseError::InvalidTxnState),
                    Some(tid) => {
                        ctx.remote
                            .wait(b.txns.verify_partition(
                                tid.as_str(),
                                h.producer_id,
                                h.producer_epoch,
                                &tp,
                                txn_version,
                            ))
                            .await
                    }
                };
                match verified {
                    Ok(()) => partition.lock().set_verified(h.producer_id, h.producer_epoch),
                    Err(e) => {
                        parts.push(partition_error(ctx, pd.index, e, None));
                        continue;
                    }
                }
            }
            // One copy: offsets and the leader epoch are written into the batch header.
            let mut data = records.to_vec();
            let now = now_ms();
            let may_block = partition.lock().append_may_block(data.len(), now);
            let mut append = || {
                let mut p = partition.lock();
                let min_isr = p.log.config.min_insync_replicas.max(1) as usize;
                if !p.is_leader() {
                    Err((ResponseError::NotLeaderOrFollower, None))
                } else if b.replication.check_cut_off(&mut p, now) {
                    ctx.close_after_reply();
                    Err((ResponseError::NotLeaderOrFollower, None))
                } else if req.acks == -1 && p.isr.len() < min_isr {
                    Err((
                        ResponseError::NotEnoughReplicas,
                        Some(format!("min.insync.replicas={min_isr} but the ISR has {} replica(s)", p.isr.len())),
                    ))
                } else if txn_batch.is_some_and(|h| p.needs_verification(&h)) {
                    // Its transaction ended (a marker) after the coordinator confirmed it.
                    Err((ResponseError::InvalidTxnState, None))
                } else {
                    let max = p.log.config.max_message_bytes;
                    p.append(&mut data, max, now)
                        .map(|info| (info, p.log.log_start_offset(), p.progress(), min_isr))
                        .map_err(|e| {
                            if let crate::partition::AppendError::Storage(err) = &e {
                                tracing::error!(topic = %topic.name, partition = pd.index, error = %err, "append failed");
                            }
                            (e.code(), Some(e.to_string()))
                        })
                }
            };
            // Rolls and fsyncs wait on the disk: off the worker (docs/architecture.md).
            let result = if may_block { tokio::task::block_in_place(append) } else { append() };
            match result {
                Ok((info, log_start, progress, min_isr)) => {
                    if !info.duplicate {
                        appended = true;
                        b.metrics.produced(&topic.name, info.records, info.bytes);
                    }
                    if req.acks == -1 {
                        waiting.push((responses.len(), parts.len(), progress, info.last_offset, min_isr));
                    }
                    parts.push(
                        PartitionProduceResponse::default()
                            .with_index(pd.index)
                            .with_base_offset(info.base_offset)
                            .with_log_append_time_ms(info.log_append_time)
                            .with_log_start_offset(log_start),
                    );
                }
                Err((e, msg)) => {
                    if e == ResponseError::CorruptMessage {
                        tracing::warn!(topic = %topic.name, partition = pd.index, client = %ctx.client_id, reason = ?msg, "rejected corrupt batch");
                    }
                    parts.push(partition_error(ctx, pd.index, e, msg));
                }
            }
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(td.name)
                .with_topic_id(td.topic_id)
                .with_partition_responses(parts),
        );
    }
    if appended {
        b.replicas.notify_appended();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(req.timeout_ms.max(0) as u64);
    for (t, p, rx, last, min_isr) in waiting {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Err(e) = ctx.remote.wait(wait_replicated(rx, last, min_isr, left)).await {
            if e == ResponseError::NotLeaderOrFollower && b.replication.controller_unreachable(now_ms()) {
                ctx.close_after_reply(); // cut off while waiting (see `Partition::cut_off`)
            }
            let index = responses[t].partition_responses[p].index;
            responses[t].partition_responses[p] = partition_error(ctx, index, e, None);
        }
    }
    ProduceResponse::default().with_responses(responses)
}
