//! The records inside a v2 batch, for the code that must look at them: the log cleaner
//! (keys, tombstones, offsets) and the produce check of compacted topics (every record has a
//! key). Everything else stores and serves batches as the producer encoded them.
//!
//! Decompression is bounded: a batch's compressed size is limited by `max.message.bytes`,
//! its decompressed size is not, so one crafted batch could otherwise exhaust memory.
//! Compression goes through `kafka_protocol`'s codecs, which write Kafka's framing (xerial
//! snappy, LZ4 frames).

use std::borrow::Cow;
use std::io::Read;

use anyhow::{anyhow, bail, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

use super::batch::{BatchHeader, CRC_START, HEADER_LEN, LOG_OVERHEAD};

/// Attribute bit of a batch whose base timestamp is the delete horizon of its tombstones
/// (KIP-534): set by the cleaner the first time it keeps a tombstone.
pub const DELETE_HORIZON_FLAG: i16 = 0x40;

/// The records section of a stored batch, decompressed (at most `limit` bytes).
pub fn records_section<'a>(batch: &'a [u8], h: &BatchHeader, limit: usize) -> Result<Cow<'a, [u8]>> {
    let body = batch.get(HEADER_LEN..h.total_len()).ok_or_else(|| anyhow!("batch shorter than its length"))?;
    // Uncompressed records are read in place: the cleaner reads every byte of a log twice.
    match h.compression() {
        0 => Ok(Cow::Borrowed(body)),
        codec => decompress(codec, body, limit).map(Cow::Owned),
    }
}

fn read_bounded(mut r: impl Read, limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    r.by_ref().take(limit as u64 + 1).read_to_end(&mut out)?;
    if out.len() > limit {
        bail!("decompressed batch exceeds {limit} bytes");
    }
    Ok(out)
}

/// Decompress a records section written with `codec` (the batch's attribute bits).
pub fn decompress(codec: i16, data: &[u8], limit: usize) -> Result<Vec<u8>> {
    match codec {
        0 => Ok(data.to_vec()),
        1 => read_bounded(flate2::read::MultiGzDecoder::new(data), limit),
        2 => snappy_decompress(data, limit),
        3 => read_bounded(lz4::Decoder::new(data)?, limit),
        4 => read_bounded(zstd::stream::read::Decoder::with_buffer(data)?, limit),
        c => bail!("unknown compression codec {c}"),
    }
}

const SNAPPY_MAGIC: &[u8] = b"\x82SNAPPY\x00";

/// Snappy as Kafka's Java clients write it: xerial's framing (a 16-byte header, then blocks
/// each preceded by its length), or a raw snappy block without the header.
fn snappy_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>> {
    let mut dec = snap::raw::Decoder::new();
    let mut out = Vec::new();
    let mut block = |b: &[u8], out: &mut Vec<u8>| -> Result<()> {
        let n = snap::raw::decompress_len(b)?;
        if out.len() + n > limit {
            bail!("decompressed batch exceeds {limit} bytes");
        }
        let at = out.len();
        out.resize(at + n, 0);
        dec.decompress(b, &mut out[at..])?;
        Ok(())
    };
    if !data.starts_with(SNAPPY_MAGIC) {
        block(data, &mut out)?;
        return Ok(out);
    }
    let mut pos = 16;
    while pos < data.len() {
        let len = data.get(pos..pos + 4).ok_or_else(|| anyhow!("truncated snappy block length"))?;
        let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
        pos += 4;
        let b = data.get(pos..pos + len).ok_or_else(|| anyhow!("truncated snappy block"))?;
        block(b, &mut out)?;
        pos += len;
    }
    Ok(out)
}

/// Compress a records section with `codec`.
pub fn compress(codec: i16, raw: &[u8]) -> Result<Vec<u8>> {
    fn with<C: Compressor<BytesMut, BufMut = BytesMut>>(raw: &[u8]) -> Result<Vec<u8>> {
        let mut out = BytesMut::new();
        C::compress(&mut out, |tmp: &mut BytesMut| {
            tmp.extend_from_slice(raw);
            Ok(())
        })?;
        Ok(out.to_vec())
    }
    match codec {
        0 => Ok(raw.to_vec()),
        1 => with::<Gzip>(raw),
        2 => with::<Snappy>(raw),
        3 => with::<Lz4>(raw),
        4 => with::<Zstd>(raw),
        c => bail!("unknown compression codec {c}"),
    }
}

fn varint(b: &[u8], pos: &mut usize) -> Result<i64> {
    let mut raw: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*pos).ok_or_else(|| anyhow!("truncated varint"))?;
        *pos += 1;
        raw |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    bail!("varint too long")
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn bytes_field<'a>(b: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>> {
    let len = varint(b, pos)?;
    if len < 0 {
        return Ok(None);
    }
    let end = pos.checked_add(len as usize).filter(|e| *e <= b.len()).ok_or_else(|| anyhow!("truncated record"))?;
    let v = &b[*pos..end];
    *pos = end;
    Ok(Some(v))
}

/// One record of a decompressed records section, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// The whole record as stored, length prefix included.
    pub raw: &'a [u8],
    pub attributes: u8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The header count and headers, as stored.
    pub headers: &'a [u8],
}

impl RecordView<'_> {
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Append this record with another timestamp delta (its batch got a new base timestamp).
    pub fn encode_with_timestamp_delta(&self, out: &mut Vec<u8>, timestamp_delta: i64) {
        let mut body = Vec::with_capacity(self.raw.len() + 8);
        body.push(self.attributes);
        put_varint(&mut body, timestamp_delta);
        put_varint(&mut body, self.offset_delta as i64);
        for field in [self.key, self.value] {
            match field {
                None => put_varint(&mut body, -1),
                Some(f) => {
                    put_varint(&mut body, f.len() as i64);
                    body.extend_from_slice(f);
                }
            }
        }
        body.extend_from_slice(self.headers);
        put_varint(out, body.len() as i64);
        out.extend_from_slice(&body);
    }
}

/// Parse `count` records of a decompressed records section.
pub fn parse(section: &[u8], count: i32) -> Result<Vec<RecordView<'_>>> {
    let mut out = Vec::with_capacity(count.clamp(0, 1 << 16) as usize);
    let mut pos = 0;
    for _ in 0..count {
        let start = pos;
        let len = varint(section, &mut pos)?;
        let end = (len >= 0)
            .then(|| pos.checked_add(len as usize))
            .flatten()
            .filter(|e| *e <= section.len())
            .ok_or_else(|| anyhow!("record length {len} out of bounds"))?;
        let rec = &section[..end];
        let attributes = *rec.get(pos).ok_or_else(|| anyhow!("truncated record"))?;
        pos += 1;
        let timestamp_delta = varint(rec, &mut pos)?;
        let offset_delta = varint(rec, &mut pos)? as i32;
        let key = bytes_field(rec, &mut pos)?;
        let value = bytes_field(rec, &mut pos)?;
        if pos > end {
            bail!("record fields overrun its length");
        }
        out.push(RecordView {
            raw: &section[start..end],
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers: &section[pos..end],
        });
        pos = end;
    }
    Ok(out)
}

/// Serialize a batch header; the CRC is left for [`seal`].
pub fn encode_header(h: &BatchHeader) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&h.base_offset.to_be_bytes());
    b[8..12].copy_from_slice(&h.batch_length.to_be_bytes());
    b[12..16].copy_from_slice(&h.partition_leader_epoch.to_be_bytes());
    b[16] = h.magic as u8;
    b[21..23].copy_from_slice(&h.attributes.to_be_bytes());
    b[23..27].copy_from_slice(&h.last_offset_delta.to_be_bytes());
    b[27..35].copy_from_slice(&h.base_timestamp.to_be_bytes());
    b[35..43].copy_from_slice(&h.max_timestamp.to_be_bytes());
    b[43..51].copy_from_slice(&h.producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&h.producer_epoch.to_be_bytes());
    b[53..57].copy_from_slice(&h.base_sequence.to_be_bytes());
    b[57..61].copy_from_slice(&h.records_count.to_be_bytes());
    b
}

/// A whole batch from a header template and its (uncompressed) records section: the
/// section is compressed with the header's codec, and length, count and CRC are set.
pub fn build_batch(template: &BatchHeader, records_count: i32, section: &[u8]) -> Result<Vec<u8>> {
    let body = compress(template.compression(), section)?;
    let mut h = *template;
    h.records_count = records_count;
    h.batch_length = (HEADER_LEN - LOG_OVERHEAD + body.len()) as i32;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&encode_header(&h));
    out.extend_from_slice(&body);
    seal(&mut out);
    Ok(out)
}

/// A batch holding no records that keeps its offsets and producer fields: what the cleaner
/// leaves of a producer's last batch, so its sequence numbers survive (Kafka does the same).
pub fn empty_batch(template: &BatchHeader) -> Vec<u8> {
    let mut h = *template;
    h.attributes &= !0x07;
    h.records_count = 0;
    h.batch_length = (HEADER_LEN - LOG_OVERHEAD) as i32;
    let mut out = encode_header(&h).to_vec();
    seal(&mut out);
    out
}

/// One record of a batch the broker writes itself.
#[derive(Debug, Clone)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// Who a batch the broker writes itself is written for.
#[derive(Debug, Clone, Copy)]
pub enum BatchWriter {
    /// A coordinator's own state (`__consumer_offsets`, `__transaction_state`).
    Broker,
    /// A transactional producer: its offset commits, or (`control`) the marker ending its
    /// transaction. Neither has a sequence, as in Kafka.
    Transaction { producer_id: i64, producer_epoch: i16, control: bool },
}

/// One uncompressed batch holding `records`, ready to append (the log assigns its offsets
/// and leader epoch).
pub fn encode_internal_batch(records: &[KeyValue], writer: BatchWriter, now_ms: i64) -> Vec<u8> {
    let (transactional, control, producer_id, producer_epoch) = match writer {
        BatchWriter::Broker => (false, false, -1, -1),
        BatchWriter::Transaction { producer_id, producer_epoch, control } => {
            (true, control, producer_id, producer_epoch)
        }
    };
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional,
            control,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch unless offset - sequence stays constant; this
            // yields one batch whose base sequence is -1.
            sequence: i as i32 - 1,
            timestamp: now_ms,
            key: Some(r.key.clone()),
            value: r.value.clone(),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &recs, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encoding an uncompressed batch cannot fail");
    buf.to_vec()
}

/// Set the CRC of a complete batch.
pub fn seal(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::validate;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn every_codec_round_trips_and_rebuilds() {
        for c in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let b = crate::storage::batch::tests::encode(20, c, 1000);
            let h = validate(&b).unwrap();
            let section = records_section(&b, &h, 1 << 20).unwrap();
            let recs = parse(&section, h.records_count).unwrap();
            assert_eq!(recs.len(), 20);
            assert_eq!(recs[3].value, Some(&b"value-3"[..]));
            // Keep every other record, with a moved base timestamp, in the same codec.
            let mut kept = Vec::new();
            let mut th = h;
            th.base_timestamp = 500;
            for r in recs.iter().step_by(2) {
                r.encode_with_timestamp_delta(&mut kept, r.timestamp_delta + 500);
            }
            let nb = build_batch(&th, 10, &kept).unwrap();
            let nh = validate(&nb).unwrap();
            assert_eq!((nh.compression(), nh.last_offset_delta, nh.records_count), (h.compression(), 19, 10));
            let set = RecordBatchDecoder::decode(&mut bytes::Bytes::from(nb)).unwrap();
            let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, (0..20).step_by(2).collect::<Vec<_>>());
            assert_eq!(set.records[1].timestamp, 1002, "record timestamps survive a new base");
        }
    }

    #[test]
    fn decompression_is_bounded() {
        let b = crate::storage::batch::tests::encode(200, Compression::Gzip, 1);
        let h = validate(&b).unwrap();
        assert!(records_section(&b, &h, 100).is_err());
        assert!(parse(&[0x02, 0x00], 1).is_err(), "a record shorter than its fields");
    }

    #[test]
    fn empty_batch_keeps_offsets_and_is_valid() {
        let b = crate::storage::batch::tests::encode(5, Compression::Lz4, 1);
        let h = validate(&b).unwrap();
        let e = validate(&empty_batch(&h)).unwrap();
        assert_eq!((e.records_count, e.last_offset_delta, e.compression()), (0, 4, 0));
    }
}
