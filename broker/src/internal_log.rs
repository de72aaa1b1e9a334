//! Reading and appending the records of an internal topic (`__consumer_offsets`,
//! `__transaction_state`), which the coordinators keep their state in: a coordinator
//! replays a partition's log when this node becomes its leader, and appends its state
//! changes, answering once the ISR has them.

use std::sync::Arc;

use anyhow::Result;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::{Record, RecordBatchDecoder};
use tokio::sync::watch;

use crate::clock::now_ms;
use crate::partition::{wait_replicated, Progress};
use crate::replica_manager::ReplicaManager;
use crate::storage::batch::{BatchHeader, HEADER_LEN};
use crate::storage::log::ReadError;

/// Kafka's partition for a coordinator key (group or transactional id):
/// abs(javaStringHashCode(key)) % partitions.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in key.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    (h & 0x7fff_ffff) % partitions
}

/// A string of the internal topics' record schemas (int16 length, UTF-8).
pub fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

/// Read a string written by `put_str`; `None` if truncated or not UTF-8.
pub fn get_str(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let n = b.get_i16();
    if n < 0 || b.remaining() < n as usize {
        return None;
    }
    String::from_utf8(b.split_to(n as usize).to_vec()).ok()
}

/// Where an append waits for replication: the partition's progress and the last offset
/// written.
pub struct CommitWait {
    pub progress: watch::Receiver<Progress>,
    pub last_offset: i64,
    pub min_isr: usize,
}

impl CommitWait {
    /// Wait until the ISR has the append; a leadership change meanwhile is NOT_COORDINATOR.
    pub async fn replicated(self) -> Result<(), ResponseError> {
        wait_replicated(self.progress, self.last_offset, self.min_isr, std::time::Duration::from_secs(5)).await.map_err(
            |e| match e {
                ResponseError::NotLeaderOrFollower => ResponseError::NotCoordinator,
                e => e,
            },
        )
    }
}

/// One internal topic's partitions on this node.
pub struct InternalLog {
    replicas: Arc<ReplicaManager>,
    topic: &'static str,
}

impl InternalLog {
    pub fn new(replicas: Arc<ReplicaManager>, topic: &'static str) -> Self {
        InternalLog { replicas, topic }
    }

    pub fn replicas(&self) -> &Arc<ReplicaManager> {
        &self.replicas
    }

    /// Replay partition `p` from its log start to its end (as leader, its log is the
    /// truth): each batch's header and records, in order. A batch whose records do not
    /// decode is skipped with a warning; control batches are passed with their records.
    pub fn replay(&self, p: i32, f: &mut dyn FnMut(&BatchHeader, Vec<Record>)) -> Result<()> {
        let Some(part) = self.replicas.get(self.topic, p) else { return Ok(()) };
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
            // records inside claim.
            let mut pos = 0;
            while pos + HEADER_LEN <= r.bytes.len() {
                let h = BatchHeader::parse(&r.bytes[pos..])?;
                let batch = Bytes::copy_from_slice(&r.bytes[pos..pos + h.total_len()]);
                pos += h.total_len();
                offset = offset.max(h.next_offset());
                match RecordBatchDecoder::decode(&mut batch.clone()) {
                    Ok(set) => f(&h, set.records),
                    Err(e) => {
                        tracing::warn!(topic = self.topic, partition = p, base_offset = h.base_offset, error = %e, "skipping undecodable batch");
                    }
                }
            }
        }
        Ok(())
    }

    /// Append one batch to partition `p` as its leader; the caller waits on the answer
    /// for the ISR to have it.
    pub fn append(&self, p: i32, mut batch: Vec<u8>) -> Result<CommitWait, ResponseError> {
        let part = self.replicas.get(self.topic, p).ok_or(ResponseError::NotCoordinator)?;
        let now = now_ms();
        let may_block = part.lock().append_may_block(batch.len(), now);
        let mut append = || {
            let mut part = part.lock();
            let info = part.append(&mut batch, usize::MAX, now).map_err(|e| {
                tracing::error!(topic = self.topic, partition = p, error = %e, "writing coordinator state failed");
                ResponseError::NotCoordinator
            })?;
            let min_isr = part.log.config.min_insync_replicas.max(1) as usize;
            Ok(CommitWait { progress: part.progress(), last_offset: info.last_offset, min_isr })
        };
        // Rolls and fsyncs wait on the disk: off the worker (docs/architecture.md).
        let wait = if may_block { tokio::task::block_in_place(append) } else { append() }?;
        self.replicas.notify_appended();
        Ok(wait)
    }
}
