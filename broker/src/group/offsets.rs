//! Committed offsets as records of the internal `__consumer_offsets` topic, in Kafka's own
//! key and value schemas so Kafka tooling can read them: key v1 (group, topic, partition),
//! value v3 (offset, leader epoch, metadata, commit timestamp); a null value deletes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::replica_manager::TopicPartition;
use crate::storage::records::{encode_internal_batch, BatchWriter, KeyValue};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

pub use crate::internal_log::partition_for;
use crate::internal_log::{get_str, put_str};

/// The producer a transactional commit is written as (TxnOffsetCommit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

pub fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(1);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn encode_value(c: &CommittedOffset) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    b.put_i64(c.offset);
    b.put_i32(c.leader_epoch);
    put_str(&mut b, &c.metadata);
    b.put_i64(c.commit_timestamp);
    b.freeze()
}

/// An offset-commit key, or `None` for other record kinds (group metadata).
pub fn decode_key(mut k: Bytes) -> Option<OffsetKey> {
    if k.remaining() < 2 {
        return None;
    }
    match k.get_i16() {
        0 | 1 => {
            let group = get_str(&mut k)?;
            let topic = get_str(&mut k)?;
            (k.remaining() >= 4).then(|| OffsetKey { group, tp: TopicPartition { topic, partition: k.get_i32() } })
        }
        _ => None,
    }
}

pub fn decode_value(mut v: Bytes) -> Option<CommittedOffset> {
    if v.remaining() < 2 {
        return None;
    }
    let version = v.get_i16();
    if v.remaining() < 8 {
        return None;
    }
    let offset = v.get_i64();
    let leader_epoch = if version >= 3 && v.remaining() >= 4 { v.get_i32() } else { -1 };
    let metadata = get_str(&mut v)?;
    let commit_timestamp = if v.remaining() >= 8 { v.get_i64() } else { -1 };
    Some(CommittedOffset { offset, leader_epoch, metadata, commit_timestamp })
}

/// One `__consumer_offsets` record: a key and a value, or a tombstone (no value).
#[derive(Debug, Clone)]
pub struct OffsetRecord {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

impl OffsetRecord {
    /// The record of a commit of `offset` for `tp` by `group`.
    pub fn commit(group: &str, tp: &TopicPartition, offset: &CommittedOffset) -> Self {
        OffsetRecord { key: encode_key(group, &tp.topic, tp.partition), value: Some(encode_value(offset)) }
    }

    /// The tombstone that deletes `group`'s committed offset for `tp`.
    pub fn tombstone(group: &str, tp: &TopicPartition) -> Self {
        OffsetRecord { key: encode_key(group, &tp.topic, tp.partition), value: None }
    }
}

/// The key of an offset commit: whose offset, for which partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetKey {
    pub group: String,
    pub tp: TopicPartition,
}

/// One uncompressed batch holding `records`; a transactional commit's batch carries the
/// producer's id and epoch (and no sequence, as in Kafka).
pub fn encode_batch(records: &[OffsetRecord], now_ms: i64, txn: Option<TxnProducer>) -> Vec<u8> {
    let recs: Vec<KeyValue> = records.iter().map(|r| KeyValue { key: r.key.clone(), value: r.value.clone() }).collect();
    let writer = txn.map_or(BatchWriter::Broker, |t| BatchWriter::Transaction {
        producer_id: t.producer_id,
        producer_epoch: t.producer_epoch,
        control: false,
    });
    encode_internal_batch(&recs, writer, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_partitioning() {
        // "test-group".hashCode() == 627841412 in Java.
        assert_eq!(partition_for("test-group", 50), 12);
        assert_eq!(partition_for("", 50), 0);
    }

    #[test]
    fn key_value_round_trip() {
        let key = decode_key(encode_key("g", "t", 3)).unwrap();
        assert_eq!(key, OffsetKey { group: "g".into(), tp: TopicPartition::new("t", 3) });
        let c = CommittedOffset { offset: 42, leader_epoch: 1, metadata: "m".into(), commit_timestamp: 9 };
        assert_eq!(decode_value(encode_value(&c)).unwrap(), c);
        assert!(decode_key(Bytes::from_static(&[0, 2, 0, 1, b'g'])).is_none());
    }
}
