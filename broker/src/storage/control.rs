//! Control batches: the COMMIT and ABORT markers a transaction coordinator writes into
//! every partition a transaction touched (Kafka's EndTransactionMarker). A marker is one
//! uncompressed batch with the transactional and control attributes set, the producer's id
//! and epoch, and one record whose key is `version i16 | type i16` (0 abort, 1 commit) and
//! whose value is `version i16 | coordinator epoch i32`.

use anyhow::{anyhow, Result};

use super::batch::BatchHeader;
use super::records;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

impl Marker {
    pub fn of(commit: bool) -> Self {
        if commit {
            Marker::Commit
        } else {
            Marker::Abort
        }
    }

    pub fn is_commit(self) -> bool {
        self == Marker::Commit
    }
}

/// The marker batch ending producer `producer_id`'s transaction, ready to append (its
/// offset and leader epoch are assigned by the log).
pub fn encode_marker(
    producer_id: i64,
    producer_epoch: i16,
    marker: Marker,
    coordinator_epoch: i32,
    now_ms: i64,
) -> Vec<u8> {
    let kind: i16 = if marker.is_commit() { 1 } else { 0 };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let writer = records::BatchWriter::Transaction { producer_id, producer_epoch, control: true };
    records::encode_internal_batch(&[records::KeyValue { key: key.into(), value: Some(value.into()) }], writer, now_ms)
}

/// What a stored marker says: COMMIT or ABORT, and the epoch of the coordinator that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerRecord {
    pub marker: Marker,
    pub coordinator_epoch: i32,
}

/// The marker a stored control batch holds (`batch` is the whole batch as stored).
pub fn parse_marker(batch: &[u8], h: &BatchHeader) -> Result<MarkerRecord> {
    let section = records::records_section(batch, h, 1 << 16)?;
    let recs = records::parse(&section, h.records_count.min(1))?;
    let rec = recs.first().ok_or_else(|| anyhow!("control batch without a record"))?;
    let key = rec.key.ok_or_else(|| anyhow!("control batch without a key"))?;
    let marker = marker_from_key(key).ok_or_else(|| anyhow!("unknown control record key {key:?}"))?;
    // The value is `version i16 | coordinator epoch i32`; a marker without one is refused
    // nowhere, so it reads as written by no coordinator in particular.
    let coordinator_epoch = match rec.value {
        Some([_, _, a, b, c, d, ..]) => i32::from_be_bytes([*a, *b, *c, *d]),
        _ => -1,
    };
    Ok(MarkerRecord { marker, coordinator_epoch })
}

/// The marker a control record's key names (`version i16 | type i16`).
pub fn marker_from_key(key: &[u8]) -> Option<Marker> {
    match key {
        [_, _, 0, 0] => Some(Marker::Abort),
        [_, _, 0, 1] => Some(Marker::Commit),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::validate;

    #[test]
    fn markers_round_trip_and_validate() {
        for m in [Marker::Abort, Marker::Commit] {
            let b = encode_marker(42, 3, m, 7, 1000);
            let h = validate(&b).unwrap();
            assert!(h.is_control());
            assert!(h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch, h.records_count), (42, 3, 1));
            assert_eq!(parse_marker(&b, &h).unwrap(), MarkerRecord { marker: m, coordinator_epoch: 7 });
        }
    }
}
