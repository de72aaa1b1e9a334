//! The committed offsets of consumer groups as records of `__consumer_offsets` (Kafka's
//! GroupMetadataManager): loading a partition's groups from the log when this node
//! becomes its leader, and appending commits and tombstones. The group state machine
//! (`coordinator.rs`) decides what to write; this file only reads and writes the log.
//!
//! A transactional commit (TxnOffsetCommit) is written in a batch of the producer's id and
//! epoch and takes effect only when the transaction's COMMIT marker reaches this partition;
//! until then it is pending, and a load keeps it pending.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Result;
use kafka_protocol::error::ResponseError;

use super::offsets::{self, CommittedOffset, OffsetKey, OffsetRecord, TxnProducer};
use super::OFFSETS_TOPIC;
use crate::clock::now_ms;
pub use crate::internal_log::CommitWait;
use crate::internal_log::InternalLog;
use crate::replica_manager::{ReplicaManager, TopicPartition};
use crate::storage::control;

/// A transaction's commits of one group, waiting for its marker.
pub type PendingOffsets = BTreeMap<TopicPartition, CommittedOffset>;

/// A group's committed offsets as read back from the log.
#[derive(Debug, Default)]
pub struct LoadedGroup {
    pub offsets: BTreeMap<TopicPartition, CommittedOffset>,
    pub last_commit_ms: Option<i64>,
    /// Transactional commits whose marker is not in the log yet, by producer id.
    pub pending: HashMap<i64, PendingOffsets>,
}

impl LoadedGroup {
    fn apply(&mut self, key: OffsetKey, value: Option<CommittedOffset>) {
        match value {
            None => {
                self.offsets.remove(&key.tp);
            }
            Some(v) => {
                self.last_commit_ms = self.last_commit_ms.max(Some(v.commit_timestamp));
                self.offsets.insert(key.tp, v);
            }
        }
    }
}

pub struct OffsetsStore {
    log: InternalLog,
    partitions: i32,
}

/// A commit or tombstone read from the log.
type Entry = (OffsetKey, Option<CommittedOffset>);

impl OffsetsStore {
    pub fn new(replicas: Arc<ReplicaManager>, partitions: i32) -> Self {
        OffsetsStore { log: InternalLog::new(replicas, OFFSETS_TOPIC), partitions }
    }

    /// Rebuild the committed offsets of partition `p`'s groups from its log, up to its end
    /// (as leader, its log is the truth). Groups left with nothing are not returned.
    pub fn load(&self, p: i32) -> Result<HashMap<String, LoadedGroup>> {
        let mut groups: HashMap<String, LoadedGroup> = HashMap::new();
        // Transactional commits by producer id, until their marker.
        let mut open: HashMap<i64, Vec<Entry>> = HashMap::new();
        let mut loaded = 0usize;
        self.log.replay(p, &mut |h, records| {
            if h.is_control() {
                let commit = records.first().and_then(|r| r.key.as_deref()).and_then(control::marker_from_key);
                if let Some(entries) = open.remove(&h.producer_id) {
                    if commit.is_some_and(|m| m.is_commit()) {
                        for (key, value) in entries {
                            groups.entry(key.group.clone()).or_default().apply(key, value);
                        }
                    }
                }
                return;
            }
            for rec in records {
                let Some(key) = rec.key.and_then(offsets::decode_key) else { continue };
                let value = match rec.value {
                    None => None,
                    Some(v) => match offsets::decode_value(v) {
                        Some(v) => Some(v),
                        None => {
                            tracing::warn!(group = %key.group, "skipping an undecodable committed offset");
                            continue;
                        }
                    },
                };
                loaded += 1;
                if h.is_transactional() {
                    open.entry(h.producer_id).or_default().push((key, value));
                } else {
                    groups.entry(key.group.clone()).or_default().apply(key, value);
                }
            }
        })?;
        for (pid, entries) in open {
            for (key, value) in entries {
                if let Some(v) = value {
                    groups.entry(key.group.clone()).or_default().pending.entry(pid).or_default().insert(key.tp, v);
                }
            }
        }
        groups.retain(|_, g| !g.offsets.is_empty() || !g.pending.is_empty());
        tracing::debug!(partition = p, records = loaded, "read committed offsets");
        Ok(groups)
    }

    /// Append a group's records to its offsets partition (in a transaction when `txn` is
    /// given); the caller waits on the answer for the ISR to have them.
    pub fn append(
        &self,
        group_id: &str,
        records: &[OffsetRecord],
        txn: Option<TxnProducer>,
    ) -> Result<CommitWait, ResponseError> {
        let p = offsets::partition_for(group_id, self.partitions);
        let mut wait = self.log.append(p, offsets::encode_batch(records, now_ms(), txn))?;
        // A commit is answered once the ISR as it is has it, whatever min.insync.replicas
        // says (as before transactions; `__consumer_offsets` sets no min ISR of its own).
        wait.min_isr = 1;
        Ok(wait)
    }

    /// The lag a commit at `offset` leaves on a partition this node holds a replica of.
    pub fn lag_at(&self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        self.log.replicas().get(topic, partition).map(|part| {
            let part = part.lock();
            (part.high_watermark() - offset.max(part.log.log_start_offset())).max(0)
        })
    }
}
