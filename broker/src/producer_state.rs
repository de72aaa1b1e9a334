//! Idempotent producer state per partition: for each producer id, its epoch and the last
//! five batches it wrote (Kafka keeps five because a producer has at most five requests in
//! flight). A retried batch is answered with its original offset instead of being written
//! twice; a gap in sequence numbers is refused.
//!
//! The state is rebuilt from batch headers when the log opens, so it survives a crash
//! without a separate snapshot file.

use std::collections::{HashMap, VecDeque};

use kafka_protocol::error::ResponseError;

use crate::storage::batch::BatchHeader;

const CACHED_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
}

/// The outcome of checking a batch before it is appended.
#[derive(Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// Already written: answer with this batch's original offsets.
    Duplicate(BatchMeta),
}

#[derive(Debug, Default)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerStateManager {
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck, ResponseError> {
        if !h.has_producer_id() || h.base_sequence < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // A producer with no state here may have had all its batches removed by
            // retention or DeleteRecords; like Kafka, accept its sequence as the new start.
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        if h.producer_epoch > entry.epoch {
            return if h.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(ResponseError::OutOfOrderSequenceNumber)
            };
        }
        let last_seq = h.last_sequence();
        if let Some(dup) = entry.batches.iter().find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq) {
            return Ok(SequenceCheck::Duplicate(*dup));
        }
        match entry.batches.back() {
            Some(last) if h.base_sequence == next_seq(last.last_seq) => Ok(SequenceCheck::Append),
            None if h.base_sequence == 0 => Ok(SequenceCheck::Append),
            _ => Err(ResponseError::OutOfOrderSequenceNumber),
        }
    }

    /// Record a batch that was appended (or found in the log on recovery).
    /// Base offset of each producer's last batch: the batch the log cleaner keeps (empty if
    /// need be) so the producer's sequence numbers survive cleaning and a restart.
    pub fn last_batch_offsets(&self) -> HashMap<i64, i64> {
        self.producers.iter().filter_map(|(pid, e)| Some((*pid, e.batches.back()?.base_offset))).collect()
    }

    pub fn update(&mut self, h: &BatchHeader) {
        if !h.has_producer_id() || h.base_sequence < 0 {
            return;
        }
        let e = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != e.epoch {
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        e.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        while e.batches.len() > CACHED_BATCHES {
            e.batches.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(pid: i64, epoch: i16, seq: i32, n: i32, base: i64) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: n,
        }
    }

    #[test]
    fn in_order_duplicate_and_gap() {
        let mut s = ProducerStateManager::default();
        assert_eq!(s.check(&hdr(7, 0, 0, 5, 0)), Ok(SequenceCheck::Append));
        s.update(&hdr(7, 0, 0, 5, 0));
        assert_eq!(s.check(&hdr(7, 0, 5, 5, 0)), Ok(SequenceCheck::Append));
        s.update(&hdr(7, 0, 5, 5, 5));
        match s.check(&hdr(7, 0, 0, 5, 0)) {
            Ok(SequenceCheck::Duplicate(m)) => assert_eq!(m.base_offset, 0),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.check(&hdr(7, 0, 20, 5, 0)), Err(ResponseError::OutOfOrderSequenceNumber));
        assert_eq!(s.check(&hdr(9, 0, 3, 1, 0)), Ok(SequenceCheck::Append), "unknown producers may start anywhere");
    }

    #[test]
    fn epochs() {
        let mut s = ProducerStateManager::default();
        s.update(&hdr(7, 2, 0, 1, 0));
        assert_eq!(s.check(&hdr(7, 1, 1, 1, 0)), Err(ResponseError::InvalidProducerEpoch));
        assert_eq!(s.check(&hdr(7, 3, 0, 1, 0)), Ok(SequenceCheck::Append));
        assert_eq!(s.check(&hdr(7, 3, 4, 1, 0)), Err(ResponseError::OutOfOrderSequenceNumber));
    }

    #[test]
    fn only_five_batches_are_remembered() {
        let mut s = ProducerStateManager::default();
        for i in 0..7 {
            s.update(&hdr(1, 0, i, 1, i as i64));
        }
        assert!(matches!(s.check(&hdr(1, 0, 3, 1, 0)), Ok(SequenceCheck::Duplicate(_))));
        assert_eq!(s.check(&hdr(1, 0, 1, 1, 0)), Err(ResponseError::OutOfOrderSequenceNumber));
    }
}
