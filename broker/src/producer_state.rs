//! Idempotent and transactional producer state per partition: for each producer id, its
//! epoch and the last five batches it wrote (Kafka keeps five because a producer has at
//! most five requests in flight), and the first offset of its open transaction. A retried
//! batch is answered with its original offset instead of being written twice; a gap in
//! sequence numbers is refused. The open transactions give the last stable offset; the
//! aborted ones go to the log's `.txnindex` files (`complete` says which).
//!
//! The state is saved in a snapshot at every segment roll (Kafka's `<offset>.snapshot`,
//! `encode`/`decode`) and rebuilt at open from the newest snapshot plus the batch headers
//! after it (and the markers' types from the control batches).

use std::collections::{BTreeMap, HashMap, VecDeque};

use kafka_protocol::error::ResponseError;

use crate::storage::batch::BatchHeader;
pub use crate::storage::txn_index::AbortedTxn;

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
    /// First offset of the transaction this producer has open in this partition.
    txn_first_offset: Option<i64>,
    /// The max timestamp of its last batch (DescribeProducers; `kafka-transactions.sh
    /// find-hanging` compares it with the transaction timeout).
    last_timestamp: i64,
    /// Epoch of the transaction coordinator that wrote the last marker ending one of its
    /// transactions here: a marker from an older coordinator (a zombie) is refused.
    coordinator_epoch: Option<i32>,
}

/// One producer as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerView {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    /// First offset of its open transaction here, or -1.
    pub txn_start_offset: i64,
    /// Epoch of the coordinator of its last marker here, or -1.
    pub coordinator_epoch: i32,
}

/// A marker was appended for a producer that had a transaction open here. The header does
/// not say whether it committed or aborted; the caller, who has the record, does
/// (`ProducerStateManager::complete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub marker_offset: i64,
    /// The first offset of the oldest transaction still open once this one ended, or the
    /// offset after the marker.
    pub last_stable_offset: i64,
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
    /// Open transactions: first offset -> max timestamp of their first batch. The smallest
    /// offset bounds the last stable offset; the timestamp says how long it has waited
    /// (a hanging transaction's alert).
    ongoing: BTreeMap<i64, i64>,
    /// Producers (with the epoch) whose coordinator confirmed this partition is in their
    /// open transaction, before its first batch here (KIP-890 verification); a marker or the
    /// transaction's first batch clears it.
    verified: HashMap<i64, i16>,
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
            // The next transaction (version 2 bumps the epoch) before the marker ending
            // this one: it must not join it. The producer retries until the marker is here.
            if h.is_transactional() && entry.txn_first_offset.is_some() {
                return Err(ResponseError::NotEnoughReplicas);
            }
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

    /// A transactional batch that would start a transaction here, with no confirmation from
    /// the coordinator that the partition is in it: written as it is, a batch that arrives
    /// after its transaction ended would hang the partition's last stable offset. A batch of
    /// another epoch than the open transaction's starts a new one too: with transaction
    /// version 2 the next transaction (the epoch bumped) can send before the marker of the
    /// previous one is here, and must wait for it rather than join that transaction.
    pub fn needs_verification(&self, h: &BatchHeader) -> bool {
        h.is_transactional()
            && !h.is_control()
            && h.base_sequence >= 0
            && self
                .producers
                .get(&h.producer_id)
                .is_none_or(|e| e.txn_first_offset.is_none() || e.epoch != h.producer_epoch)
            && self.verified.get(&h.producer_id) != Some(&h.producer_epoch)
    }

    pub fn set_verified(&mut self, producer_id: i64, epoch: i16) {
        self.verified.insert(producer_id, epoch);
    }

    /// A marker for `producer_id` at `epoch` from a coordinator of `coordinator_epoch` may be
    /// written: a marker of an older epoch is a fenced transaction's, one of an older
    /// coordinator epoch a zombie coordinator's (Kafka's checks).
    pub fn check_marker(&self, producer_id: i64, epoch: i16, coordinator_epoch: i32) -> Result<(), ResponseError> {
        match self.producers.get(&producer_id) {
            Some(e) if epoch < e.epoch => Err(ResponseError::InvalidProducerEpoch),
            Some(e) if e.coordinator_epoch.is_some_and(|c| coordinator_epoch < c) => {
                Err(ResponseError::TransactionCoordinatorFenced)
            }
            _ => Ok(()),
        }
    }

    /// Record a batch that was appended (or found in the log on recovery). Returns the
    /// transaction a control batch ended, for `complete`.
    pub fn update(&mut self, h: &BatchHeader) -> Option<EndedTxn> {
        if !h.has_producer_id() {
            return None;
        }
        if h.is_control() {
            self.verified.remove(&h.producer_id);
            let e = self.producers.entry(h.producer_id).or_default();
            if h.producer_epoch > e.epoch {
                // The coordinator bumped the epoch to fence the producer (a timeout or a new
                // InitProducerId): its next batch starts a new sequence.
                e.epoch = h.producer_epoch;
                e.batches.clear();
            }
            let first_offset = e.txn_first_offset.take()?;
            self.ongoing.remove(&first_offset);
            return Some(EndedTxn {
                producer_id: h.producer_id,
                first_offset,
                marker_offset: h.base_offset,
                last_stable_offset: self.first_unstable_offset().unwrap_or(h.base_offset + 1),
            });
        }
        let e = self.producers.entry(h.producer_id).or_default();
        e.last_timestamp = e.last_timestamp.max(h.max_timestamp);
        if h.is_transactional() && e.txn_first_offset.is_none() {
            self.verified.remove(&h.producer_id);
            e.txn_first_offset = Some(h.base_offset);
            self.ongoing.insert(h.base_offset, h.max_timestamp);
        }
        // A transactional offset commit (TxnOffsetCommit in `__consumer_offsets`) has no
        // sequence: it opens a transaction there, but there is no sequence to remember.
        if h.base_sequence < 0 {
            return None;
        }
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
        None
    }

    /// What the marker that ended `t` said. An abort is returned, for the log's aborted
    /// transaction index.
    pub fn complete(&mut self, t: EndedTxn, commit: bool, coordinator_epoch: i32) -> Option<AbortedTxn> {
        if let Some(e) = self.producers.get_mut(&t.producer_id) {
            e.coordinator_epoch = Some(e.coordinator_epoch.map_or(coordinator_epoch, |c| c.max(coordinator_epoch)));
        }
        (!commit).then_some(AbortedTxn {
            producer_id: t.producer_id,
            first_offset: t.first_offset,
            last_offset: t.marker_offset,
            last_stable_offset: t.last_stable_offset,
        })
    }

    /// First offset of the oldest open transaction, which the last stable offset may not pass.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// Every producer with state here.
    pub fn producers(&self) -> Vec<ProducerView> {
        self.producers
            .iter()
            .map(|(pid, e)| ProducerView {
                producer_id: *pid,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp: e.last_timestamp,
                txn_start_offset: e.txn_first_offset.unwrap_or(-1),
                coordinator_epoch: e.coordinator_epoch.unwrap_or(-1),
            })
            .collect()
    }

    /// How many transactions are open in this partition.
    pub fn open_transactions(&self) -> usize {
        self.ongoing.len()
    }

    /// The first-batch timestamp of the oldest transaction open here.
    pub fn oldest_open_timestamp(&self) -> Option<i64> {
        self.ongoing.values().min().copied()
    }

    /// The state as a snapshot body: every producer's epoch, last batches, open
    /// transaction and coordinator epoch. Confirmations from the coordinator (`verified`)
    /// are not kept: a producer whose confirmation is lost asks again.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.producers.len() * 64);
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut pids: Vec<&i64> = self.producers.keys().collect();
        pids.sort_unstable();
        for pid in pids {
            let e = &self.producers[pid];
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_timestamp.to_be_bytes());
            out.extend_from_slice(&e.coordinator_epoch.unwrap_or(-1).to_be_bytes());
            let txn_first = e.txn_first_offset.unwrap_or(-1);
            out.extend_from_slice(&txn_first.to_be_bytes());
            out.extend_from_slice(&self.ongoing.get(&txn_first).copied().unwrap_or(-1).to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        out
    }

    /// The state from a snapshot body; `None` if it is not one this version wrote.
    pub fn decode(body: &[u8]) -> Option<Self> {
        let mut r = Reader(body);
        if r.take::<1>()?[0] != SNAPSHOT_VERSION {
            return None;
        }
        let mut state = ProducerStateManager::default();
        for _ in 0..u32::from_be_bytes(r.take()?) {
            let pid = i64::from_be_bytes(r.take()?);
            let epoch = i16::from_be_bytes(r.take()?);
            let last_timestamp = i64::from_be_bytes(r.take()?);
            let coordinator_epoch = Some(i32::from_be_bytes(r.take()?)).filter(|c| *c >= 0);
            let txn_first_offset = Some(i64::from_be_bytes(r.take()?)).filter(|o| *o >= 0);
            let txn_first_ts = i64::from_be_bytes(r.take()?);
            let mut batches = VecDeque::new();
            for _ in 0..r.take::<1>()?[0] {
                batches.push_back(BatchMeta {
                    first_seq: i32::from_be_bytes(r.take()?),
                    last_seq: i32::from_be_bytes(r.take()?),
                    base_offset: i64::from_be_bytes(r.take()?),
                    last_offset: i64::from_be_bytes(r.take()?),
                });
            }
            if let Some(first) = txn_first_offset {
                state.ongoing.insert(first, txn_first_ts);
            }
            state
                .producers
                .insert(pid, ProducerEntry { epoch, batches, txn_first_offset, last_timestamp, coordinator_epoch });
        }
        r.0.is_empty().then_some(state)
    }
}

const SNAPSHOT_VERSION: u8 = 1;

/// Fixed-size fields off the front of a snapshot body.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
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

    fn txn(pid: i64, epoch: i16, seq: i32, base: i64) -> BatchHeader {
        BatchHeader { attributes: 0x10, ..hdr(pid, epoch, seq, 1, base) }
    }

    fn marker(pid: i64, epoch: i16, base: i64) -> BatchHeader {
        BatchHeader { attributes: 0x30, base_sequence: -1, ..hdr(pid, epoch, 0, 1, base) }
    }

    #[test]
    fn transactions_bound_the_stable_offset_and_aborts_are_listed() {
        let mut s = ProducerStateManager::default();
        s.update(&txn(1, 0, 0, 10));
        s.update(&txn(2, 0, 0, 11));
        s.update(&txn(1, 0, 1, 12));
        assert_eq!(s.first_unstable_offset(), Some(10));
        let ended = s.update(&marker(1, 0, 13)).unwrap();
        assert_eq!(ended, EndedTxn { producer_id: 1, first_offset: 10, marker_offset: 13, last_stable_offset: 11 });
        assert_eq!(
            s.complete(ended, false, 0),
            Some(AbortedTxn { producer_id: 1, first_offset: 10, last_offset: 13, last_stable_offset: 11 })
        );
        assert_eq!(s.first_unstable_offset(), Some(11));
        let ended = s.update(&marker(2, 0, 14)).unwrap();
        assert_eq!(s.complete(ended, true, 0), None, "a commit is not indexed");
        assert_eq!(s.first_unstable_offset(), None);
        // A marker with no transaction open here (a retried marker) ends nothing.
        assert_eq!(s.update(&marker(2, 0, 15)), None);
    }

    #[test]
    fn a_snapshot_restores_sequences_epochs_and_open_transactions() {
        let mut s = ProducerStateManager::default();
        for i in 0..7 {
            s.update(&hdr(1, 3, i, 1, i as i64));
        }
        s.update(&BatchHeader { max_timestamp: 555, ..txn(2, 0, 0, 7) });
        s.update(&txn(4, 1, 0, 8));
        let ended = s.update(&marker(4, 1, 9)).unwrap();
        s.complete(ended, true, 6);
        let body = s.encode();
        let r = ProducerStateManager::decode(&body).expect("decodes");
        assert_eq!(r.encode(), body);
        assert!(matches!(r.check(&hdr(1, 3, 5, 1, 0)), Ok(SequenceCheck::Duplicate(m)) if m.base_offset == 5));
        assert_eq!(r.check(&hdr(1, 3, 7, 1, 0)), Ok(SequenceCheck::Append));
        assert_eq!(r.check(&hdr(1, 2, 7, 1, 0)), Err(ResponseError::InvalidProducerEpoch));
        assert_eq!(r.first_unstable_offset(), Some(7));
        assert_eq!(r.oldest_open_timestamp(), Some(555));
        assert_eq!(r.check_marker(4, 1, 5), Err(ResponseError::TransactionCoordinatorFenced));
        assert!(ProducerStateManager::decode(&body[..body.len() - 1]).is_none(), "a short body");
        assert!(ProducerStateManager::decode(&[9]).is_none(), "another version");
    }

    #[test]
    fn the_first_batch_of_a_transaction_needs_verification_until_a_marker() {
        let mut s = ProducerStateManager::default();
        assert!(s.needs_verification(&txn(1, 0, 0, 0)));
        assert!(!s.needs_verification(&hdr(1, 0, 0, 1, 0)), "an idempotent batch");
        s.set_verified(1, 0);
        assert!(!s.needs_verification(&txn(1, 0, 0, 0)));
        assert!(s.needs_verification(&txn(1, 1, 0, 0)), "another epoch");
        s.update(&txn(1, 0, 0, 0));
        assert!(!s.needs_verification(&txn(1, 0, 1, 1)), "inside its transaction");
        s.update(&marker(1, 0, 2));
        assert!(s.needs_verification(&txn(1, 0, 2, 3)), "the next transaction");
        s.set_verified(1, 0);
        s.update(&marker(1, 0, 3));
        assert!(s.needs_verification(&txn(1, 0, 2, 4)), "a marker clears a confirmation");
        s.set_verified(1, 0);
        s.update(&txn(1, 0, 2, 4));
        assert!(
            s.needs_verification(&txn(1, 1, 0, 5)),
            "the next transaction of version 2 (epoch bumped) before the marker of this one"
        );
        assert_eq!(s.check(&txn(1, 1, 0, 5)), Err(ResponseError::NotEnoughReplicas), "even once verified");
    }

    #[test]
    fn a_transactional_offset_commit_opens_a_transaction_without_a_sequence() {
        let mut s = ProducerStateManager::default();
        let commit = BatchHeader { base_sequence: -1, ..txn(5, 0, 0, 7) };
        assert_eq!(s.update(&commit), None);
        assert_eq!(s.first_unstable_offset(), Some(7), "the commit is pending until its marker");
        let ended = s.update(&marker(5, 0, 8)).unwrap();
        assert_eq!(
            s.complete(ended, false, 0),
            Some(AbortedTxn { producer_id: 5, first_offset: 7, last_offset: 8, last_stable_offset: 9 })
        );
        assert_eq!(s.first_unstable_offset(), None);
    }

    #[test]
    fn a_fencing_marker_bumps_the_epoch() {
        let mut s = ProducerStateManager::default();
        s.update(&txn(1, 0, 0, 0));
        assert_eq!(s.check_marker(1, 1, 0), Ok(()));
        s.update(&marker(1, 1, 1));
        assert_eq!(s.check(&txn(1, 0, 1, 0)), Err(ResponseError::InvalidProducerEpoch));
        assert_eq!(s.check_marker(1, 0, 0), Err(ResponseError::InvalidProducerEpoch));
        assert_eq!(s.check(&txn(1, 1, 0, 0)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn a_marker_from_an_older_coordinator_is_fenced() {
        let mut s = ProducerStateManager::default();
        s.update(&txn(1, 0, 0, 0));
        let ended = s.update(&marker(1, 0, 1)).unwrap();
        s.complete(ended, true, 5);
        assert_eq!(s.producers()[0].coordinator_epoch, 5);
        assert_eq!(s.check_marker(1, 0, 4), Err(ResponseError::TransactionCoordinatorFenced));
        assert_eq!(s.check_marker(1, 0, 5), Ok(()));
        assert_eq!(s.check_marker(1, 1, 6), Ok(()));
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
