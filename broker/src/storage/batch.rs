//! Record batch (magic v2) headers: parsed and validated without touching the records,
//! so batches are stored and served exactly as the producer encoded them.
//!
//! Layout (big-endian): baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 |
//! magic i8 | crc u32 | attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 |
//! maxTimestamp i64 | producerId i64 | producerEpoch i16 | baseSequence i32 | records i32.
//! The CRC-32C covers everything from `attributes` to the end, so the broker may rewrite
//! the base offset and leader epoch without recomputing it.

use std::ops::Range;

/// Bytes before `batchLength` counts: baseOffset + batchLength.
pub const LOG_OVERHEAD: usize = 12;
/// Size of a v2 batch header.
pub const HEADER_LEN: usize = 61;
pub const CRC_START: usize = 21;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated")]
    Truncated,
    #[error("unsupported record batch magic {0} (only v2 is accepted)")]
    Magic(i8),
    #[error("record batch length {0} is invalid")]
    Length(i32),
    #[error("record batch CRC mismatch")]
    Crc,
    #[error("record batch has an unknown compression codec {0}")]
    Codec(i16),
    #[error("record batch offsets are inconsistent")]
    Offsets,
    #[error("record batch of {0} bytes exceeds the maximum of {1}")]
    TooLarge(usize, usize),
    #[error("clients may not write control batches")]
    Control,
    #[error("a produce request must carry exactly one record batch per partition, got {0}")]
    BatchCount(usize),
    #[error("Compacted topic cannot accept message without key in topic partition {0}.")]
    NoKey(String),
    #[error("record batch records do not decode: {0}")]
    Records(String),
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}

impl BatchHeader {
    /// Parse the fixed header; `buf` needs at least [`HEADER_LEN`] bytes.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated);
        }
        Ok(BatchHeader {
            base_offset: i64_at(buf, 0),
            batch_length: i32_at(buf, 8),
            partition_leader_epoch: i32_at(buf, 12),
            magic: buf[16] as i8,
            crc: u32::from_be_bytes(buf[17..21].try_into().unwrap()),
            attributes: i16_at(buf, 21),
            last_offset_delta: i32_at(buf, 23),
            base_timestamp: i64_at(buf, 27),
            max_timestamp: i64_at(buf, 35),
            producer_id: i64_at(buf, 43),
            producer_epoch: i16_at(buf, 51),
            base_sequence: i32_at(buf, 53),
            records_count: i32_at(buf, 57),
        })
    }

    /// Whole batch size on disk, including the 12-byte log overhead.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn compression(&self) -> i16 {
        self.attributes & 0x07
    }
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
    /// Written inside a transaction (data or marker).
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        // Sequences wrap at i32::MAX, as in Kafka's DefaultRecordBatch.
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        if last > i32::MAX as i64 {
            (last - i32::MAX as i64 - 1) as i32
        } else {
            last as i32
        }
    }
}

/// Check one complete batch (as produced or as stored): magic, length, codec, offsets, CRC.
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(batch)?;
    if h.magic != 2 {
        return Err(BatchError::Magic(h.magic));
    }
    if (h.batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
        return Err(BatchError::Length(h.batch_length));
    }
    if h.total_len() != batch.len() {
        return Err(BatchError::Length(h.batch_length));
    }
    if h.compression() > 4 {
        return Err(BatchError::Codec(h.compression()));
    }
    if h.records_count < 0 || h.last_offset_delta < 0 {
        return Err(BatchError::Offsets);
    }
    if crc32c::crc32c(&batch[CRC_START..]) != h.crc {
        return Err(BatchError::Crc);
    }
    Ok(h)
}

/// One batch of a record set: where its bytes are, and its validated header.
#[derive(Debug, Clone)]
pub struct BatchSpan {
    pub range: Range<usize>,
    pub header: BatchHeader,
}

/// A record's timestamp and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub timestamp: i64,
    pub offset: i64,
}

/// Split a produce payload into its batches, validating each.
pub fn split_batches(records: &[u8], max_batch: usize) -> Result<Vec<BatchSpan>, BatchError> {
    split(records, max_batch, true)
}

/// Split batches copied from a leader's log: checked like produced batches, except that a
/// cleaned batch may hold fewer records than its offset range (or none), and control
/// batches are the leader's own.
pub fn split_stored_batches(records: &[u8]) -> Result<Vec<BatchSpan>, BatchError> {
    split(records, usize::MAX, false)
}

fn split(records: &[u8], max_batch: usize, produced: bool) -> Result<Vec<BatchSpan>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        if records.len() - pos < HEADER_LEN {
            return Err(BatchError::Truncated);
        }
        let len = i32_at(records, pos + 8);
        if len < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::Length(len));
        }
        let end = pos + LOG_OVERHEAD + len as usize;
        if end > records.len() {
            return Err(BatchError::Truncated);
        }
        if end - pos > max_batch {
            return Err(BatchError::TooLarge(end - pos, max_batch));
        }
        let h = validate(&records[pos..end])?;
        // A produced batch counts its records; an offset range that disagrees with the
        // count would hand out offsets twice or leave holes (Kafka's LogValidator too).
        if produced && (h.records_count < 1 || h.last_offset_delta != h.records_count - 1) {
            return Err(BatchError::Offsets);
        }
        if produced && h.is_control() {
            return Err(BatchError::Control);
        }
        out.push(BatchSpan { range: pos..end, header: h });
        pos = end;
    }
    Ok(out)
}

/// Stamp a batch with the broker's clock (`message.timestamp.type=LogAppendTime`): set the
/// timestamp-type attribute and the max timestamp, which consumers then report for every
/// record, and re-seal the CRC those fields are under.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) -> BatchHeader {
    let attributes = i16_at(batch, 21) | 0x08;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    BatchHeader::parse(batch).expect("a validated batch keeps its header")
}

/// The first record in a stored batch that satisfies `pred(timestamp, offset)`.
///
/// Only uncompressed batches are decoded: decompressing a client's batch has no bound on
/// its output size, so one crafted batch could exhaust memory. Callers fall back to the
/// header (first offset, first or max timestamp) when this returns `None`.
pub fn find_record(h: &BatchHeader, raw: Vec<u8>, pred: impl Fn(i64, i64) -> bool) -> Option<TimestampOffset> {
    if h.compression() != 0 {
        return None;
    }
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes::Bytes::from(raw)).ok()?;
    set.records
        .iter()
        .find(|r| pred(r.timestamp, r.offset))
        .map(|r| TimestampOffset { timestamp: r.timestamp, offset: r.offset })
}

/// Rewrite the broker-assigned fields (outside the CRC) of a batch in place.
pub fn assign(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::*;

    /// Encode `n` records with the crate's encoder, as a client would.
    pub fn encode(n: usize, compression: Compression, ts: i64) -> Vec<u8> {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder starts a new batch unless offset - sequence stays constant; this
                // yields one batch whose base sequence is -1 (no producer id).
                sequence: i as i32 - 1,
                timestamp: ts + i as i64,
                key: None,
                value: Some(bytes::Bytes::from(format!("value-{i}"))),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression }).unwrap();
        buf.to_vec()
    }

    #[test]
    fn accepts_every_codec() {
        for c in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let b = encode(10, c, 1000);
            let v = split_batches(&b, 1 << 20).unwrap();
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].header.records_count, 10);
        }
    }

    #[test]
    fn rejects_corruption_and_truncation() {
        let mut b = encode(3, Compression::None, 1);
        let n = b.len();
        b[n - 2] ^= 0xff;
        assert_eq!(split_batches(&b, 1 << 20).unwrap_err(), BatchError::Crc);
        let b = encode(3, Compression::None, 1);
        assert_eq!(split_batches(&b[..b.len() - 1], 1 << 20).unwrap_err(), BatchError::Truncated);
        let mut b = encode(3, Compression::None, 1);
        b[16] = 1;
        assert_eq!(split_batches(&b, 1 << 20).unwrap_err(), BatchError::Magic(1));
        assert!(matches!(split_batches(&b[..5], 1 << 20), Err(BatchError::Truncated)));
    }

    /// Re-seal a batch after editing its header (recompute the CRC as a client would).
    fn reseal(b: &mut [u8]) {
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn rejects_control_batches_and_inconsistent_counts_from_clients() {
        let mut b = encode(3, Compression::None, 1);
        b[22] |= 0x20; // attributes low byte: control bit
        reseal(&mut b);
        assert_eq!(split_batches(&b, 1 << 20).unwrap_err(), BatchError::Control);
        let mut b = encode(3, Compression::None, 1);
        b[57..61].copy_from_slice(&0i32.to_be_bytes()); // records count 0
        reseal(&mut b);
        assert_eq!(split_batches(&b, 1 << 20).unwrap_err(), BatchError::Offsets);
        let mut b = encode(3, Compression::None, 1);
        b[23..27].copy_from_slice(&1_000_000i32.to_be_bytes()); // lastOffsetDelta
        reseal(&mut b);
        assert_eq!(split_batches(&b, 1 << 20).unwrap_err(), BatchError::Offsets);
    }

    #[test]
    fn assign_keeps_crc_valid() {
        let mut b = encode(3, Compression::None, 1);
        assign(&mut b, 42, 7);
        let h = validate(&b).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch, h.last_offset()), (42, 7, 44));
    }

    #[test]
    fn log_append_time_keeps_the_batch_valid() {
        let mut b = encode(3, Compression::Lz4, 5);
        let h = set_log_append_time(&mut b, 1234);
        assert_eq!((h.max_timestamp, h.attributes & 0x08), (1234, 0x08));
        assert_eq!(validate(&b).unwrap(), h);
    }

    #[test]
    fn sequence_wraps() {
        let mut h = BatchHeader::parse(&encode(3, Compression::None, 1)).unwrap();
        h.base_sequence = i32::MAX - 1;
        assert_eq!(h.last_sequence(), 0);
    }
}
