//! A partition replica on this node: its log, leader epoch, high watermark and idempotent
//! producer state. Today every partition is a leader whose in-sync replica set is itself,
//! so the high watermark follows the log end offset; the fields are the ones a follower
//! and an ISR-driven high watermark will need.

use std::path::Path;

use anyhow::Result;
use kafka_protocol::error::ResponseError;
use uuid::Uuid;

use crate::producer_state::{ProducerStateManager, SequenceCheck};
use crate::storage::batch::{split_batches, BatchError};
use crate::storage::log::{Log, LogConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
}

/// `topic_id` and `role` are read once followers exist.
#[allow(dead_code)]
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub topic_id: Uuid,
    pub role: Role,
    pub leader_epoch: i32,
    pub log: Log,
    high_watermark: i64,
    pub producers: ProducerStateManager,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub records: i64,
    pub bytes: usize,
    /// True when the batch was a retry of one already written (nothing was appended).
    pub duplicate: bool,
    /// The broker time stamped on the batch, or -1 for CreateTime topics.
    pub log_append_time: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("{0}")]
    Corrupt(BatchError),
    #[error("{0}")]
    Protocol(ResponseError),
    #[error("storage: {0}")]
    Storage(anyhow::Error),
}

impl AppendError {
    pub fn code(&self) -> ResponseError {
        match self {
            AppendError::Corrupt(BatchError::TooLarge(..)) => ResponseError::MessageTooLarge,
            AppendError::Corrupt(BatchError::Control | BatchError::BatchCount(_) | BatchError::Offsets) => ResponseError::InvalidRecord,
            AppendError::Corrupt(_) => ResponseError::CorruptMessage,
            AppendError::Protocol(e) => *e,
            AppendError::Storage(_) => ResponseError::KafkaStorageError,
        }
    }
}

impl Partition {
    pub fn open(dir: &Path, topic: &str, index: i32, topic_id: Uuid, config: LogConfig, leader_epoch: i32) -> Result<Self> {
        let mut producers = ProducerStateManager::default();
        let log = Log::open_with(dir, config, &mut |h| producers.update(h))?;
        let high_watermark = log.log_end_offset();
        Ok(Partition {
            topic: topic.to_string(),
            index,
            topic_id,
            role: Role::Leader,
            leader_epoch,
            log,
            high_watermark,
            producers,
        })
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Last stable offset: equal to the high watermark until transactions land.
    pub fn last_stable_offset(&self) -> i64 {
        self.high_watermark
    }

    /// Validate and append a produce payload. Nothing is written unless every batch in it
    /// is valid, so a corrupt batch never leaves a partial write behind.
    pub fn append(&mut self, records: &mut [u8], max_batch_bytes: usize, now_ms: i64) -> Result<AppendInfo, AppendError> {
        let mut ranges = split_batches(records, max_batch_bytes).map_err(AppendError::Corrupt)?;
        // Kafka accepts exactly one v2 batch per partition in a produce request; it also
        // makes an append all-or-nothing.
        if ranges.len() != 1 {
            return Err(AppendError::Corrupt(BatchError::BatchCount(ranges.len())));
        }
        for (_, h) in &ranges {
            match self.producers.check(h).map_err(AppendError::Protocol)? {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate(m) => {
                    return Ok(AppendInfo {
                        base_offset: m.base_offset,
                        last_offset: m.last_offset,
                        records: 0,
                        bytes: 0,
                        duplicate: true,
                        log_append_time: -1,
                    })
                }
            }
        }
        if self.log.config.log_append_time {
            for (range, h) in ranges.iter_mut() {
                *h = crate::storage::batch::set_log_append_time(&mut records[range.clone()], now_ms);
            }
        }
        let (base, last) = self
            .log
            .append(records, &ranges, self.leader_epoch, now_ms)
            .map_err(AppendError::Storage)?;
        let mut offset = base;
        let mut count = 0;
        for (_, h) in &ranges {
            let mut h = *h;
            h.base_offset = offset;
            offset = h.next_offset();
            count += h.records_count as i64;
            self.producers.update(&h);
        }
        // ISR = {this replica}: everything appended is replicated to the whole ISR.
        self.high_watermark = self.log.log_end_offset();
        let log_append_time = if self.log.config.log_append_time { now_ms } else { -1 };
        Ok(AppendInfo { base_offset: base, last_offset: last, records: count, bytes: records.len(), duplicate: false, log_append_time })
    }
}
