//! The committed offsets of consumer groups as records of `__consumer_offsets` (Kafka's
//! GroupMetadataManager): loading a partition's groups from the log when this node
//! becomes its leader, and appending commits and tombstones. The group state machine
//! (`coordinator.rs`) decides what to write; this file only reads and writes the log.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::RecordBatchDecoder;
use tokio::sync::watch;

use super::offsets::{self, CommittedOffset, OffsetRecord};
use super::OFFSETS_TOPIC;
use crate::clock::now_ms;
use crate::partition::Progress;
use crate::replica_manager::{ReplicaManager, TopicPartition};
use crate::storage::batch::{BatchHeader, HEADER_LEN};
use crate::storage::log::ReadError;

/// Where a commit waits for replication: the offsets partition's progress and the last
/// offset written.
pub struct CommitWait {
    pub progress: watch::Receiver<Progress>,
    pub last_offset: i64,
}

/// A group's committed offsets as read back from the log.
#[derive(Debug, Default)]
pub struct LoadedGroup {
    pub offsets: BTreeMap<TopicPartition, CommittedOffset>,
    pub last_commit_ms: Option<i64>,
}

pub struct OffsetsStore {
    replicas: Arc<ReplicaManager>,
    partitions: i32,
}

impl OffsetsStore {
    pub fn new(replicas: Arc<ReplicaManager>, partitions: i32) -> Self {
        OffsetsStore { replicas, partitions }
    }

    /// Rebuild the committed offsets of partition `p`'s groups from its log, up to its end
    /// (as leader, its log is the truth). Groups left with no offset are not returned.
    pub fn load(&self, p: i32) -> Result<HashMap<String, LoadedGroup>> {
        let mut groups: HashMap<String, LoadedGroup> = HashMap::new();
        let mut loaded = 0usize;
        let Some(part) = self.replicas.get(OFFSETS_TOPIC, p) else { return Ok(groups) };
        let part = part.lock();
        let mut offset = part.log.log_start_offset();
        let end = part.log.log_end_offset();
        while offset < end {
            let r = match part.log.read(offset, 1 << 20, end) {
                Ok(r) if !r.bytes.is_empty() => r,
                Ok(_) | Err(ReadError::OffsetOutOfRange) => break,
                Err(ReadError::Storage(e)) => return Err(e),
            };
            // Walk batch by batch on the headers, so progress never depends on what the
            // records inside claim; a batch that does not decode is skipped.
            let mut pos = 0;
            while pos + HEADER_LEN <= r.bytes.len() {
                let h = BatchHeader::parse(&r.bytes[pos..])?;
                let batch = Bytes::copy_from_slice(&r.bytes[pos..pos + h.total_len()]);
                pos += h.total_len();
                offset = offset.max(h.next_offset());
                let set = match RecordBatchDecoder::decode(&mut batch.clone()) {
                    Ok(set) => set,
                    Err(e) => {
                        tracing::warn!(partition = p, base_offset = h.base_offset, error = %e, "skipping undecodable batch in {}", OFFSETS_TOPIC);
                        continue;
                    }
                };
                for rec in set.records {
                    let Some(key) = rec.key.and_then(offsets::decode_key) else { continue };
                    let group = groups.entry(key.group.clone()).or_default();
                    match rec.value {
                        None => {
                            group.offsets.remove(&key.tp);
                        }
                        Some(v) => match offsets::decode_value(v) {
                            Some(v) => {
                                group.last_commit_ms = group.last_commit_ms.max(Some(v.commit_timestamp));
                                group.offsets.insert(key.tp, v);
                                loaded += 1;
                            }
                            None => tracing::warn!(group = %key.group, "skipping an undecodable committed offset"),
                        },
                    }
                }
            }
        }
        groups.retain(|_, g| !g.offsets.is_empty());
        tracing::debug!(partition = p, records = loaded, "read committed offsets");
        Ok(groups)
    }

    /// Append a group's records to its offsets partition; the caller waits on the answer
    /// for the ISR to have them.
    pub fn append(&self, group_id: &str, records: &[OffsetRecord]) -> Result<CommitWait, ResponseError> {
        let p = offsets::partition_for(group_id, self.partitions);
        let part = self.replicas.get(OFFSETS_TOPIC, p).ok_or(ResponseError::NotCoordinator)?;
        let now = now_ms();
        let mut batch = offsets::encode_batch(records, now);
        let may_block = part.lock().log.append_may_block(batch.len(), now);
        let mut append = || {
            let mut part = part.lock();
            let info = part.append(&mut batch, usize::MAX, now).map_err(|e| {
                tracing::error!(group = group_id, error = %e, "writing offsets failed");
                ResponseError::NotCoordinator
            })?;
            Ok(CommitWait { progress: part.progress(), last_offset: info.last_offset })
        };
        // Rolls and fsyncs wait on the disk: off the worker (docs/architecture.md).
        let wait = if may_block { tokio::task::block_in_place(append) } else { append() }?;
        self.replicas.notify_appended();
        Ok(wait)
    }

    /// The lag a commit at `offset` leaves on a partition this node holds a replica of.
    pub fn lag_at(&self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        self.replicas.get(topic, partition).map(|part| {
            let part = part.lock();
            (part.high_watermark() - offset.max(part.log.log_start_offset())).max(0)
        })
    }
}
