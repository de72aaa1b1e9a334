//! Transaction state as records of `__transaction_state`, in Kafka's schemas so its tools
//! read them: key v0 (transactional id), value v1 (producer id and epoch, timeout, state,
//! partitions, last update and start times, and as tagged fields the previous and next
//! producer ids of transaction version 2); a null value deletes an expired id. Value v0,
//! which earlier Fjord versions wrote, is still read.

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
    /// none.
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

/// Kafka's unsigned varint (the lengths and tags of flexible versions).
fn put_uvarint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn get_uvarint(b: &mut Bytes) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = b.try_get_u8().ok()?;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A flexible version's length of a compact array or string: n + 1 (0 is null).
fn get_compact_len(b: &mut Bytes) -> Option<usize> {
    (get_uvarint(b)? as usize).checked_sub(1)
}

const TAG_PREVIOUS_PRODUCER_ID: u64 = 0;
const TAG_NEXT_PRODUCER_ID: u64 = 1;

pub fn encode_value(m: &TxnMetadata) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(1);
    b.put_i64(m.producer_id);
    b.put_i16(m.producer_epoch);
    b.put_i32(m.timeout_ms);
    b.put_i8(m.state.id());
    let mut by_topic: IndexMap<&str, Vec<i32>> = IndexMap::new();
    for tp in &m.partitions {
        by_topic.entry(tp.topic.as_str()).or_default().push(tp.partition);
    }
    put_uvarint(&mut b, by_topic.len() as u64 + 1);
    for (topic, parts) in by_topic {
        put_uvarint(&mut b, topic.len() as u64 + 1);
        b.put_slice(topic.as_bytes());
        put_uvarint(&mut b, parts.len() as u64 + 1);
        for p in parts {
            b.put_i32(p);
        }
        put_uvarint(&mut b, 0);
    }
    b.put_i64(m.last_update_ms);
    b.put_i64(m.start_ms);
    let tagged: Vec<(u64, i64)> =
        [(TAG_PREVIOUS_PRODUCER_ID, m.previous_producer_id), (TAG_NEXT_PRODUCER_ID, m.next_producer_id)]
            .into_iter()
            .filter(|(_, id)| *id >= 0)
            .collect();
    put_uvarint(&mut b, tagged.len() as u64);
    for (tag, id) in tagged {
        put_uvarint(&mut b, tag);
        put_uvarint(&mut b, 8);
        b.put_i64(id);
    }
    b.freeze()
}

pub fn decode_value(transactional_id: &str, mut b: Bytes) -> Option<TxnMetadata> {
    let version = b.try_get_i16().ok()?;
    if !(0..=1).contains(&version) {
        return None;
    }
    let flexible = version >= 1;
    let producer_id = b.try_get_i64().ok()?;
    let producer_epoch = b.try_get_i16().ok()?;
    let timeout_ms = b.try_get_i32().ok()?;
    let state = TxnState::from_id(b.try_get_i8().ok()?)?;
    let mut partitions = BTreeSet::new();
    let topics = if flexible { get_compact_len(&mut b).unwrap_or(0) } else { b.try_get_i32().ok()?.max(0) as usize };
    for _ in 0..topics {
        let topic = if flexible {
            let len = get_compact_len(&mut b)?;
            if b.remaining() < len {
                return None;
            }
            String::from_utf8(b.split_to(len).to_vec()).ok()?
        } else {
            get_str(&mut b)?
        };
        let n = if flexible { get_compact_len(&mut b)? } else { b.try_get_i32().ok()?.max(0) as usize };
        for _ in 0..n {
            partitions.insert(TopicPartition::new(&topic, b.try_get_i32().ok()?));
        }
        if flexible {
            skip_tagged_fields(&mut b, |_, _| {})?;
        }
    }
    let last_update_ms = b.try_get_i64().ok()?;
    let start_ms = b.try_get_i64().ok()?;
    let (mut previous_producer_id, mut next_producer_id) = (-1, -1);
    if flexible {
        skip_tagged_fields(&mut b, |tag, mut data| match tag {
            TAG_PREVIOUS_PRODUCER_ID => previous_producer_id = data.try_get_i64().unwrap_or(-1),
            TAG_NEXT_PRODUCER_ID => next_producer_id = data.try_get_i64().unwrap_or(-1),
            _ => {}
        })?;
    }
    Some(TxnMetadata {
        transactional_id: transactional_id.to_string(),
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms,
        start_ms,
        next_producer_id,
        previous_producer_id,
    })
}

/// Read a tagged-field section, giving each field's tag and bytes to `f` (unknown tags,
/// such as Kafka's ClientTransactionVersion, are passed over).
fn skip_tagged_fields(b: &mut Bytes, mut f: impl FnMut(u64, Bytes)) -> Option<()> {
    for _ in 0..get_uvarint(b)? {
        let tag = get_uvarint(b)?;
        let len = get_uvarint(b)? as usize;
        if b.remaining() < len {
            return None;
        }
        f(tag, b.split_to(len));
    }
    Some(())
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
        assert_eq!(decode_value("tx-1", encode_value(&m)), Some(m.clone()));
        // The ids of a transaction-version-2 epoch overflow are kept, as tagged fields.
        let bumped = TxnMetadata { previous_producer_id: 4000, next_producer_id: 4002, ..m.clone() };
        assert_eq!(decode_value("tx-1", encode_value(&bumped)), Some(bumped));
        assert!(decode_value("x", Bytes::from_static(&[0, 9])).is_none());
        // Version 0, as earlier Fjord versions wrote it.
        let mut v0 = BytesMut::new();
        v0.put_i16(0);
        v0.put_i64(4001);
        v0.put_i16(7);
        v0.put_i32(60_000);
        v0.put_i8(TxnState::Ongoing.id());
        v0.put_i32(2);
        put_str(&mut v0, "a");
        v0.put_i32(2);
        v0.put_i32(0);
        v0.put_i32(2);
        put_str(&mut v0, "b");
        v0.put_i32(1);
        v0.put_i32(1);
        v0.put_i64(123);
        v0.put_i64(100);
        assert_eq!(decode_value("tx-1", v0.freeze()), Some(m));
        for id in 0..8 {
            assert_eq!(TxnState::from_id(id).unwrap().id(), id);
        }
    }
}
