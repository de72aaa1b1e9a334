//! Transaction APIs: AddPartitionsToTxn, AddOffsetsToTxn and EndTxn (to the transaction
//! coordinator), TxnOffsetCommit (to the group coordinator) and WriteTxnMarkers (from a
//! transaction coordinator to partition leaders). Thin adapters over the coordinators;
//! the markers are appended here because a marker on `__consumer_offsets` must also reach
//! the group coordinator.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::*;

use super::offsets::commit_entry;
use super::{leader_partition, Ctx};
use crate::clock::now_ms;
use crate::group::offsets::TxnProducer;
use crate::group::OFFSETS_TOPIC;
use crate::partition::wait_replicated;
use crate::replica_manager::TopicPartition;
use crate::storage::control::Marker;
use crate::txn::records::TxnState;
use crate::txn::TxnVersion;

/// How long a marker waits for its partition's ISR before the coordinator retries it.
const MARKER_REPLICATION_TIMEOUT: Duration = Duration::from_secs(10);

/// One transaction's partitions checked and added: the per-partition answer.
async fn add_one(
    ctx: &Ctx<'_>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    verify_only: bool,
    topics: &[AddPartitionsToTxnTopic],
) -> Vec<AddPartitionsToTxnTopicResult> {
    let b = ctx.broker;
    let mut wanted = Vec::new();
    let mut unknown = Vec::new();
    for t in topics {
        let meta = b.metadata.topic(t.name.as_str());
        for p in &t.partitions {
            let tp = TopicPartition::new(t.name.as_str(), *p);
            if meta.as_ref().and_then(|m| m.partition(*p)).is_some() {
                wanted.push(tp);
            } else {
                unknown.push(tp);
            }
        }
    }
    // Kafka's answer when some partitions do not exist: those are UNKNOWN_TOPIC_OR_PARTITION,
    // the others OPERATION_NOT_ATTEMPTED, and nothing is added.
    let codes: Vec<(TopicPartition, i16)> = if !unknown.is_empty() {
        let mut out: Vec<_> =
            unknown.into_iter().map(|tp| (tp, ctx.err(ResponseError::UnknownTopicOrPartition))).collect();
        out.extend(wanted.into_iter().map(|tp| (tp, ctx.err(ResponseError::OperationNotAttempted))));
        out
    } else if verify_only {
        match b.txns.verify_partitions(transactional_id, producer_id, epoch, &wanted) {
            Ok(found) => wanted
                .into_iter()
                .zip(found)
                .map(|(tp, ok)| (tp, if ok { 0 } else { ctx.err(ResponseError::InvalidTxnState) }))
                .collect(),
            Err(e) => {
                let code = ctx.err(e);
                wanted.into_iter().map(|tp| (tp, code)).collect()
            }
        }
    } else {
        let code = ctx.code(b.txns.add_partitions(transactional_id, producer_id, epoch, &wanted).await);
        wanted.into_iter().map(|tp| (tp, code)).collect()
    };
    let mut results: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for (tp, code) in codes {
        let r = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(tp.partition)
            .with_partition_error_code(code);
        match results.iter_mut().find(|t| t.name.as_str() == tp.topic) {
            Some(t) => t.results_by_partition.push(r),
            None => results.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(super::str(&tp.topic)))
                    .with_results_by_partition(vec![r]),
            ),
        }
    }
    results
}

pub async fn add_partitions(ctx: &Ctx<'_>, req: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    if ctx.version <= 3 {
        let results = add_one(
            ctx,
            req.v3_and_below_transactional_id.as_str(),
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            false,
            &req.v3_and_below_topics,
        )
        .await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    let mut by_txn = Vec::with_capacity(req.transactions.len());
    for t in &req.transactions {
        let results =
            add_one(ctx, t.transactional_id.as_str(), t.producer_id.0, t.producer_epoch, t.verify_only, &t.topics)
                .await;
        by_txn.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(results),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(by_txn)
}

pub async fn add_offsets(ctx: &Ctx<'_>, req: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let b = ctx.broker;
    let r = async {
        b.topics.ensure_offsets_topic().await?;
        let tp = TopicPartition::new(OFFSETS_TOPIC, b.groups.partition_of(req.group_id.as_str()));
        b.txns.add_partitions(req.transactional_id.as_str(), req.producer_id.0, req.producer_epoch, &[tp]).await
    }
    .await;
    AddOffsetsToTxnResponse::default().with_error_code(ctx.code(r))
}

/// EndTxn v5 and up belong to transaction version 2: the answer carries the bumped epoch.
pub async fn end(ctx: &Ctx<'_>, req: EndTxnRequest) -> EndTxnResponse {
    let version = if ctx.version >= 5 { TxnVersion::V2 } else { TxnVersion::V1 };
    let r = ctx
        .broker
        .txns
        .end_txn(req.transactional_id.as_str(), req.producer_id.0, req.producer_epoch, req.committed, version)
        .await;
    let (id, epoch) = r.as_ref().map_or((-1, -1), |p| (p.producer_id, p.producer_epoch));
    EndTxnResponse::default()
        .with_error_code(ctx.code(r.map(|_| ())))
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
}

pub async fn offset_commit(ctx: &Ctx<'_>, req: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let b = ctx.broker;
    let entries = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                commit_entry(
                    t.name.as_str(),
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.committed_metadata.as_ref(),
                )
            })
        })
        .collect();
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let txn = TxnProducer { producer_id: req.producer_id.0, producer_epoch: req.producer_epoch };
    // A version 2 client sends no AddOffsetsToTxn: the group's offsets partition joins the
    // transaction here, before the commit is written.
    if ctx.version >= 5 {
        let tp = TopicPartition::new(OFFSETS_TOPIC, b.groups.partition_of(req.group_id.as_str()));
        let added = ctx
            .remote
            .wait(b.txns.verify_partition(
                req.transactional_id.as_str(),
                txn.producer_id,
                txn.producer_epoch,
                &tp,
                TxnVersion::V2,
            ))
            .await;
        if let Err(e) = added {
            return txn_offset_commit_answer(req.topics, ctx.err(e));
        }
    }
    let result = match b.groups.txn_commit(
        req.group_id.as_str(),
        txn,
        req.generation_id,
        req.member_id.as_str(),
        instance.as_deref(),
        entries,
    ) {
        Ok(Some(w)) => ctx.remote.wait(w.replicated()).await,
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    txn_offset_commit_answer(req.topics, ctx.code(result))
}

/// The same error code for every partition of a TxnOffsetCommit.
fn txn_offset_commit_answer(
    topics: Vec<txn_offset_commit_request::TxnOffsetCommitRequestTopic>,
    code: i16,
) -> TxnOffsetCommitResponse {
    let topics = topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            TxnOffsetCommitResponseTopic::default().with_name(t.name).with_partitions(parts)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// Append one marker as leader and wait for the ISR to have it.
async fn write_marker(
    ctx: &Ctx<'_>,
    tp: &TopicPartition,
    producer_id: i64,
    epoch: i16,
    marker: Marker,
    coordinator_epoch: i32,
) -> i16 {
    let part = match leader_partition(ctx, &tp.topic, tp.partition, -1) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let now = now_ms();
    // An abort is indexed in the segment's `.txnindex`, whose first entry creates the file.
    let may_block = !marker.is_commit() || part.lock().append_may_block(256, now);
    let append = || {
        let mut p = part.lock();
        let min_isr = p.log.config.min_insync_replicas.max(1) as usize;
        p.append_marker(producer_id, epoch, marker, coordinator_epoch, now).map(|info| (info, p.progress(), min_isr))
    };
    // Rolls and fsyncs wait on the disk: off the worker (docs/architecture.md).
    let appended = if may_block { tokio::task::block_in_place(append) } else { append() };
    let (info, progress, min_isr) = match appended {
        Ok(a) => a,
        Err(e) => {
            if let crate::partition::AppendError::Storage(err) = &e {
                tracing::error!(topic = %tp.topic, partition = tp.partition, error = %err, "writing a transaction marker failed");
            }
            return ctx.err(e.code());
        }
    };
    ctx.broker.replicas.notify_appended();
    match ctx.remote.wait(wait_replicated(progress, info.last_offset, min_isr, MARKER_REPLICATION_TIMEOUT)).await {
        Ok(()) => {
            if tp.topic == OFFSETS_TOPIC {
                ctx.broker.groups.complete_txn(tp.partition, producer_id, marker.is_commit());
            }
            0
        }
        Err(e) => ctx.err(e),
    }
}

pub async fn write_markers(ctx: &Ctx<'_>, req: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let mut results = Vec::with_capacity(req.markers.len());
    for m in &req.markers {
        let marker = Marker::of(m.transaction_result);
        let mut topics = Vec::with_capacity(m.topics.len());
        for t in &m.topics {
            let mut parts = Vec::with_capacity(t.partition_indexes.len());
            for p in &t.partition_indexes {
                let tp = TopicPartition::new(t.name.as_str(), *p);
                let code = write_marker(ctx, &tp, m.producer_id.0, m.producer_epoch, marker, m.coordinator_epoch).await;
                parts.push(WritableTxnMarkerPartitionResult::default().with_partition_index(*p).with_error_code(code));
            }
            topics.push(WritableTxnMarkerTopicResult::default().with_name(t.name.clone()).with_partitions(parts));
        }
        results.push(WritableTxnMarkerResult::default().with_producer_id(m.producer_id).with_topics(topics));
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}

/// ListTransactions: the transactions this broker coordinates (the admin client asks
/// every broker and merges), filtered by state, producer id and (v1) running time.
pub async fn list(ctx: &Ctx<'_>, req: ListTransactionsRequest) -> ListTransactionsResponse {
    const STATES: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];
    let unknown: Vec<_> =
        req.state_filters.iter().filter(|s| !STATES.iter().any(|k| k.name() == s.as_str())).cloned().collect();
    let now = now_ms();
    let states = ctx
        .broker
        .txns
        .list()
        .into_iter()
        .filter(|m| req.state_filters.is_empty() || req.state_filters.iter().any(|s| s.as_str() == m.state.name()))
        .filter(|m| req.producer_id_filters.is_empty() || req.producer_id_filters.contains(&ProducerId(m.producer_id)))
        .filter(|m| req.duration_filter < 0 || (m.start_ms >= 0 && now - m.start_ms >= req.duration_filter))
        .map(|m| {
            list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(super::str(&m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(super::str(m.state.name()))
        })
        .collect();
    ListTransactionsResponse::default().with_unknown_state_filters(unknown).with_transaction_states(states)
}

pub async fn describe(ctx: &Ctx<'_>, req: DescribeTransactionsRequest) -> DescribeTransactionsResponse {
    let states = req
        .transactional_ids
        .into_iter()
        .map(|tid| {
            let out = describe_transactions_response::TransactionState::default()
                .with_transactional_id(tid.clone())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1);
            match ctx.broker.txns.describe(tid.as_str()) {
                Err(e) => out.with_error_code(ctx.err(e)),
                Ok(None) => out.with_error_code(ctx.err(ResponseError::TransactionalIdNotFound)),
                Ok(Some(m)) => {
                    let mut topics: Vec<describe_transactions_response::TopicData> = Vec::new();
                    for tp in &m.partitions {
                        match topics.iter_mut().find(|t| t.topic.as_str() == tp.topic) {
                            Some(t) => t.partitions.push(tp.partition),
                            None => topics.push(
                                describe_transactions_response::TopicData::default()
                                    .with_topic(TopicName(super::str(&tp.topic)))
                                    .with_partitions(vec![tp.partition]),
                            ),
                        }
                    }
                    out.with_transaction_state(super::str(m.state.name()))
                        .with_transaction_timeout_ms(m.timeout_ms)
                        .with_transaction_start_time_ms(m.start_ms)
                        .with_producer_id(ProducerId(m.producer_id))
                        .with_producer_epoch(m.producer_epoch)
                        .with_topics(topics)
                }
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// DescribeProducers: the producer state of partitions this broker leads.
pub async fn describe_producers(ctx: &Ctx<'_>, req: DescribeProducersRequest) -> DescribeProducersResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&index| {
                    let out = describe_producers_response::PartitionResponse::default().with_partition_index(index);
                    let part = match leader_partition(ctx, t.name.as_str(), index, -1) {
                        Ok(p) => p,
                        Err(code) => return out.with_error_code(code),
                    };
                    let producers = part
                        .lock()
                        .producers()
                        .into_iter()
                        .map(|v| {
                            describe_producers_response::ProducerState::default()
                                .with_producer_id(ProducerId(v.producer_id))
                                .with_producer_epoch(v.epoch as i32)
                                .with_last_sequence(v.last_sequence)
                                .with_last_timestamp(v.last_timestamp)
                                .with_coordinator_epoch(v.coordinator_epoch)
                                .with_current_txn_start_offset(v.txn_start_offset)
                        })
                        .collect();
                    out.with_active_producers(producers)
                })
                .collect();
            describe_producers_response::TopicResponse::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
