//! Transaction state as records of `__transaction_state`, in Kafka's schemas so its tools
//! read them: key v0 (transactional id), value v0 (producer id and epoch, timeout, state,
//! partitions, last update and start times); a null value deletes an expired id.

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use indexmap::IndexMap;

use crate::internal_log::{get_str, put_str};
use crate::replica_manager::TopicPartition;
use crate::storage::records::{encode_internal_batch, BatchWriter, KeyValue};

/// Kafka's TransactionState, with its ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn id(self) -> i8 {
        self as i8
    }

    pub fn from_id(id: i8) -> Option<Self> {
        use TxnState::*;
        [Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort, Dead, PrepareEpochFence]
            .get(id as usize)
            .copied()
    }

    /// Kafka's names, as DescribeTransactions and ListTransactions report them.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Markers are being written: the transaction takes no new request until they are.
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence)
    }
}

/// One transactional id's state, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    pub last_update_ms: i64,
    /// When the open transaction started (its first AddPartitionsToTxn), or -1.
    pub start_ms: i64,
    /// A transaction-version-2 EndTxn that used up the epochs takes a new producer id,
    /// which the id adopts when the transaction completes (Kafka's NextProducerId); -1 if
    /// none. In memory only, like `previous_producer_id`: value version 0 has no field for
    /// them, so a failover in that window leaves the producer to initialize again.
    pub next_producer_id: i64,
    /// The producer id before the last such change (Kafka's PreviousProducerId): a retried
    /// EndTxn still carries it.
    pub previous_producer_id: i64,
}

pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    put_str(&mut b, transactional_id);
    b.freeze()
}

pub fn decode_key(mut b: Bytes) -> Option<String> {
    if b.remaining() < 2 || b.get_i16() != 0 {
        return None;
    }
    get_str(&mut b)
}

pub fn encode_value(m: &TxnMetadata) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i64(m.producer_id);
    b.put_i16(m.producer_epoch);
    b.put_i32(m.timeout_ms);
    b.put_i8(m.state.id());
    let mut by_topic: IndexMap<&str, Vec<i32>> = IndexMap::new();
    for tp in &m.partitions {
        by_topic.entry(tp.topic.as_str()).or_default().push(tp.partition);
    }
    b.put_i32(by_topic.len() as i32);
    for (topic, parts) in by_topic {
        put_str(&mut b, topic);
        b.put_i32(parts.len() as i32);
        for p in parts {
            b.put_i32(p);
        }
    }
    b.put_i64(m.last_update_ms);
    b.put_i64(m.start_ms);
    b.freeze()
}

pub fn decode_value(transactional_id: &str, mut b: Bytes) -> Option<TxnMetadata> {
    // Fjord writes version 0; Kafka's flexible version 1 is not read (a log is never
    // moved from Kafka to Fjord).
    if b.try_get_i16().ok()? != 0 {
        return None;
    }
    let producer_id = b.try_get_i64().ok()?;
    let producer_epoch = b.try_get_i16().ok()?;
    let timeout_ms = b.try_get_i32().ok()?;
    let state = TxnState::from_id(b.try_get_i8().ok()?)?;
    let mut partitions = BTreeSet::new();
    let topics = b.try_get_i32().ok()?;
    for _ in 0..topics.max(0) {
        let topic = get_str(&mut b)?;
        let n = b.try_get_i32().ok()?;
        for _ in 0..n.max(0) {
            partitions.insert(TopicPartition::new(&topic, b.try_get_i32().ok()?));
        }
    }
    Some(TxnMetadata {
        transactional_id: transactional_id.to_string(),
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms: b.try_get_i64().ok()?,
        start_ms: b.try_get_i64().ok()?,
        next_producer_id: -1,
        previous_producer_id: -1,
    })
}

/// One uncompressed batch holding a transactional id's new state (or its tombstone).
pub fn encode_batch(transactional_id: &str, value: Option<&TxnMetadata>, now_ms: i64) -> Vec<u8> {
    let rec = KeyValue { key: encode_key(transactional_id), value: value.map(encode_value) };
    encode_internal_batch(&[rec], BatchWriter::Broker, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_round_trip() {
        assert_eq!(decode_key(encode_key("tx-1")).as_deref(), Some("tx-1"));
        let m = TxnMetadata {
            transactional_id: "tx-1".into(),
            producer_id: 4001,
            producer_epoch: 7,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: [TopicPartition::new("a", 0), TopicPartition::new("a", 2), TopicPartition::new("b", 1)]
                .into_iter()
                .collect(),
            last_update_ms: 123,
            start_ms: 100,
            next_producer_id: -1,
            previous_producer_id: -1,
        };
        assert_eq!(decode_value("tx-1", encode_value(&m)), Some(m));
        assert!(decode_value("x", Bytes::from_static(&[0, 9])).is_none());
        for id in 0..8 {
            assert_eq!(TxnState::from_id(id).unwrap().id(), id);
        }
    }
}
