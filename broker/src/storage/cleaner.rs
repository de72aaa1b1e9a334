//! One cleaning of one compacted log (Kafka's `Cleaner`): build the key → latest offset
//! map over the dirty section, then rewrite the closed segments from the log start up to
//! where the map ends, keeping the latest record of each key, into `.cleaned` files that
//! become `.swap` files when complete. The log swaps them in under its lock
//! (`Log::swap_cleaned`); this file never touches the live log, so it runs without the
//! partition lock on the cleaner's own thread.
//!
//! Offsets never change: a batch keeps its base offset, last offset delta, leader epoch,
//! timestamps and producer fields, and loses only records. The last batch of each producer
//! is kept, empty if need be, so the idempotent producer's sequence check survives.
//! Tombstones are kept `delete.retention.ms` after the first cleaning that passed them
//! (the delete horizon, KIP-534), then removed.
//!
//! Transactions: the batches of an aborted transaction are removed. A marker goes the way
//! of a tombstone once no batch of its transaction is left (Kafka's rule): the first
//! cleaning that finds none sets its delete horizon, a cleaning after the horizon removes
//! it. Until then a `read_committed` reader still needs it to tell what it ended.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::batch::{BatchHeader, HEADER_LEN};
use super::offset_map::OffsetMap;
use super::records::{self, DELETE_HORIZON_FLAG};
use super::segment::file_name;

/// A closed segment as the cleaner reads it: its own handle on the file, which stays
/// valid whatever the log does meanwhile (the swap checks the segment is still there).
#[derive(Debug)]
pub struct SourceSegment {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size: u64,
    pub file: File,
}

/// What one cleaning works on, taken from the log under its lock (`Log::cleaning_job`).
#[derive(Debug)]
pub struct CleaningJob {
    pub dir: PathBuf,
    /// Closed segments from the oldest up to the first uncleanable offset.
    pub segments: Vec<SourceSegment>,
    pub first_dirty: i64,
    pub first_uncleanable: i64,
    pub segment_bytes: u64,
    pub delete_retention_ms: i64,
    /// Base offset of each producer's last batch in the log.
    pub producer_last_batches: HashMap<i64, i64>,
    /// Aborted transactions by producer id: (first offset, marker offset). Their records
    /// are removed and never enter the offset map, so an aborted write never supersedes a
    /// committed one.
    pub aborted: HashMap<i64, Vec<(i64, i64)>>,
    /// The log's truncation count when the job was taken.
    pub generation: u64,
}

impl CleaningJob {
    /// A data batch of an aborted transaction.
    fn is_aborted(&self, h: &BatchHeader) -> bool {
        h.is_transactional()
            && !h.is_control()
            && self.aborted.get(&h.producer_id).is_some_and(|ranges| {
                ranges.iter().any(|(first, last)| *first <= h.base_offset && h.base_offset <= *last)
            })
    }
}

/// Settings of the cleaner threads (`log.cleaner.*`).
#[derive(Debug, Clone)]
pub struct CleanerSettings {
    pub dedupe_buffer_bytes: usize,
    pub io_max_bytes_per_second: f64,
    /// Largest decompressed records section the cleaner handles.
    pub max_decompressed_bytes: usize,
}

/// A cleaned group of segments, ready to be swapped in for its sources.
#[derive(Debug)]
pub struct CleanedGroup {
    pub base_offset: i64,
    /// Next offset of the last source: the swap replaces every segment in [base, end).
    pub end_offset: i64,
    /// (base offset, size) of each source, which the swap checks are unchanged.
    pub sources: Vec<(i64, u64)>,
    /// The complete `.cleaned` file. It becomes `.swap` only under the log's lock, once the
    /// swap has checked the sources are unchanged: a `.swap` file on disk is always one
    /// that recovery may complete.
    pub cleaned_path: PathBuf,
}

/// What one cleaning did.
#[derive(Debug, Default)]
pub struct CleanedLog {
    pub groups: Vec<CleanedGroup>,
    /// The new cleaner checkpoint: everything below is clean.
    pub clean_up_to: i64,
    /// Earliest delete horizon among the tombstones kept, if any.
    pub next_delete_horizon: Option<i64>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    pub map_utilization: f64,
}

/// `<base>-<end>.cleaned`, renamed to `.swap` when complete: the end offset in the name
/// tells recovery which segments a swap replaces.
pub fn group_file(dir: &Path, base: i64, end: i64, ext: &str) -> PathBuf {
    dir.join(format!("{}-{end:020}.{ext}", file_name(base, "log").trim_end_matches(".log")))
}

/// Parse `<base>-<end>.<ext>`.
pub fn parse_group_file(name: &str, ext: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    let (base, end) = stem.split_once('-')?;
    Some((base.parse().ok()?, end.parse().ok()?))
}

/// `log.cleaner.io.max.bytes.per.second`: the cleaner sleeps when ahead of the rate.
struct Throttle {
    rate: f64,
    start: Instant,
    bytes: f64,
}

impl Throttle {
    fn account(&mut self, n: usize) {
        if !self.rate.is_finite() || self.rate <= 0.0 {
            return;
        }
        self.bytes += n as f64;
        let due = Duration::from_secs_f64(self.bytes / self.rate);
        let spent = self.start.elapsed();
        if due > spent + Duration::from_millis(10) {
            std::thread::sleep(due - spent);
        }
    }
}

/// Bytes of a segment read at once: batches are handed out of this buffer, so a segment of
/// small batches (`__consumer_offsets`) costs one read per chunk, not two per batch.
const READ_CHUNK: usize = 4 << 20;

/// Batches of a segment file, read with positioned reads of `READ_CHUNK` bytes (or one
/// batch, when a batch is larger).
fn for_each_batch(seg: &SourceSegment, f: &mut dyn FnMut(&BatchHeader, &[u8]) -> Result<bool>) -> Result<()> {
    let mut buf = vec![0u8; READ_CHUNK.min(seg.size as usize)];
    // buf[..len] holds the file from `start`; `at` is the next batch within it.
    let (mut start, mut len, mut at) = (0u64, 0usize, 0usize);
    loop {
        let pos = start + at as u64;
        if pos + HEADER_LEN as u64 > seg.size {
            return Ok(());
        }
        if at + HEADER_LEN > len {
            (start, at) = (pos, 0);
            len = read_chunk(seg, start, &mut buf)?;
        }
        let h = BatchHeader::parse(&buf[at..at + HEADER_LEN])?;
        let total = h.total_len();
        if total < HEADER_LEN || pos + total as u64 > seg.size {
            bail!("segment {} has a batch past its end at {pos}", seg.base_offset);
        }
        if at + total > len {
            if total > buf.len() {
                buf.resize(total, 0);
            }
            (start, at) = (pos, 0);
            len = read_chunk(seg, start, &mut buf)?;
        }
        if !f(&h, &buf[at..at + total])? {
            return Ok(());
        }
        at += total;
    }
}

/// Fill `buf` from `pos`, or up to the end of the segment: the bytes read.
fn read_chunk(seg: &SourceSegment, pos: u64, buf: &mut [u8]) -> Result<usize> {
    let len = buf.len().min((seg.size - pos) as usize);
    seg.file.read_exact_at(&mut buf[..len], pos)?;
    Ok(len)
}

/// Group consecutive segments so that each output stays within `segment.bytes` and its
/// offsets fit the 32-bit relative offsets of the index.
fn group_segments(segments: &[&SourceSegment], max_bytes: u64) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut size = 0u64;
    for (i, s) in segments.iter().enumerate() {
        let fits = groups.last().is_some_and(|g| {
            let base = segments[g[0]].base_offset;
            size + s.size <= max_bytes && s.next_offset - base < i32::MAX as i64
        });
        if fits {
            groups.last_mut().unwrap().push(i);
            size += s.size;
        } else {
            groups.push(vec![i]);
            size = s.size;
        }
    }
    groups
}

/// Clean one log. On error, the `.cleaned` files written so far are removed.
pub fn clean(job: &CleaningJob, settings: &CleanerSettings, now_ms: i64) -> Result<CleanedLog> {
    let mut out = CleanedLog::default();
    let mut throttle = Throttle { rate: settings.io_max_bytes_per_second, start: Instant::now(), bytes: 0.0 };
    let limit = settings.max_decompressed_bytes;

    // 1. The offset map over [first dirty, first uncleanable), stopping at a batch that
    //    does not fit: the rest is cleaned by a later pass.
    // Offsets bound the number of keys: the map need not be larger.
    let expected: usize = job
        .segments
        .iter()
        .map(|s| (s.next_offset.min(job.first_uncleanable) - s.base_offset.max(job.first_dirty)).max(0) as usize)
        .sum();
    let mut map = OffsetMap::new(settings.dedupe_buffer_bytes, expected);
    let mut map_end = job.first_dirty;
    let mut full = false;
    for seg in job.segments.iter().filter(|s| s.next_offset > job.first_dirty) {
        for_each_batch(seg, &mut |h, bytes| {
            if h.last_offset() < job.first_dirty {
                return Ok(true);
            }
            if h.base_offset >= job.first_uncleanable {
                return Ok(false);
            }
            throttle.account(bytes.len());
            out.bytes_read += bytes.len() as u64;
            if !h.is_control() && h.records_count > 0 && !job.is_aborted(h) {
                if !map.has_room_for(h.records_count as usize) {
                    full = true;
                    return Ok(false);
                }
                let section = records::records_section(bytes, h, limit)?;
                for r in records::parse(&section, h.records_count)? {
                    if let Some(k) = r.key {
                        map.put(k, h.base_offset + r.offset_delta as i64);
                    }
                }
            }
            map_end = h.next_offset();
            Ok(true)
        })?;
        if full {
            break;
        }
    }
    if full && map_end == job.first_dirty {
        bail!("log.cleaner.dedupe.buffer.size is too small for one batch of this log");
    }
    if !full {
        map_end = map_end.max(job.first_uncleanable.min(job.segments.last().map_or(map_end, |s| s.next_offset)));
    }
    out.clean_up_to = map_end;
    out.map_utilization = map.utilization();

    // 2. Rewrite every segment that starts below the map's end.
    let sources: Vec<&SourceSegment> = job.segments.iter().filter(|s| s.base_offset < map_end).collect();
    let groups: Vec<Vec<&SourceSegment>> = group_segments(&sources, job.segment_bytes)
        .into_iter()
        .map(|g| g.iter().map(|i| sources[*i]).collect())
        .collect();
    let path_of = |segs: &[&SourceSegment]| {
        group_file(&job.dir, segs[0].base_offset, segs[segs.len() - 1].next_offset, "cleaned")
    };
    // Producers with a batch of their current transaction read so far in this pass: the
    // marker that ends the transaction must stay.
    let mut txn_batches_seen: HashSet<i64> = HashSet::new();
    let result = (|| -> Result<()> {
        for segs in &groups {
            let base = segs[0].base_offset;
            let end = segs[segs.len() - 1].next_offset;
            let cleaned = path_of(segs);
            // A segment that cleaning leaves as it is is not copied: it stays in place (a
            // group of several is still written, to merge them).
            let alone = if let [seg] = segs.as_slice() { Some(*seg) } else { None };
            let mut w = LazyWriter { path: &cleaned, file: None, unchanged: 0, alone };
            for seg in segs {
                for_each_batch(seg, &mut |h, bytes| {
                    out.bytes_read += bytes.len() as u64;
                    let kept =
                        clean_batch(h, bytes, &map, map_end, job, now_ms, limit, &mut txn_batches_seen, &mut out)?;
                    let written = match &kept {
                        Kept::All => bytes,
                        Kept::Rewritten(b) => b.as_slice(),
                        Kept::Nothing => &[][..],
                    };
                    w.write(written, matches!(kept, Kept::All))?;
                    out.bytes_written += written.len() as u64;
                    throttle.account(bytes.len() + written.len());
                    Ok(true)
                })?;
            }
            let Some(file) = w.file else {
                out.bytes_written -= w.unchanged;
                continue;
            };
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            out.groups.push(CleanedGroup {
                base_offset: base,
                end_offset: end,
                sources: segs.iter().map(|s| (s.base_offset, s.size)).collect(),
                cleaned_path: cleaned,
            });
        }
        Ok(())
    })();
    if let Err(e) = result {
        for segs in &groups {
            let _ = std::fs::remove_file(path_of(segs));
        }
        return Err(e);
    }
    File::open(&job.dir)?.sync_all()?;
    Ok(out)
}

/// The output of one group. For a group of one segment it is created at the first batch
/// that cleaning changes: until then the bytes are only counted, and copied from the
/// segment if a change comes.
struct LazyWriter<'a> {
    path: &'a Path,
    file: Option<BufWriter<File>>,
    /// Bytes at the start of the segment kept as they are and not yet written.
    unchanged: u64,
    /// The group's only segment; None for a group that merges several, always written.
    alone: Option<&'a SourceSegment>,
}

impl LazyWriter<'_> {
    fn write(&mut self, bytes: &[u8], unchanged: bool) -> Result<()> {
        if self.file.is_none() {
            if unchanged && self.alone.is_some() {
                self.unchanged += bytes.len() as u64;
                return Ok(());
            }
            let file = File::create(self.path).with_context(|| format!("creating {}", self.path.display()))?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            if let Some(seg) = self.alone {
                copy_prefix(seg, self.unchanged, &mut w)?;
            }
            self.file = Some(w);
        }
        self.file.as_mut().expect("created above").write_all(bytes)?;
        Ok(())
    }
}

/// Copy the first `len` bytes of a source segment.
fn copy_prefix(seg: &SourceSegment, len: u64, w: &mut impl Write) -> Result<()> {
    let mut buf = vec![0u8; READ_CHUNK.min(len as usize)];
    let mut pos = 0u64;
    while pos < len {
        let n = buf.len().min((len - pos) as usize);
        pos += read_chunk(seg, pos, &mut buf[..n])? as u64;
        w.write_all(&buf[..n])?;
    }
    Ok(())
}

/// Remove the files of a cleaning that will not be swapped in.
pub fn discard(groups: &[CleanedGroup]) {
    for g in groups {
        let _ = std::fs::remove_file(&g.cleaned_path);
    }
}

enum Kept {
    All,
    Rewritten(Vec<u8>),
    Nothing,
}

#[allow(clippy::too_many_arguments)]
fn clean_batch(
    h: &BatchHeader,
    bytes: &[u8],
    map: &OffsetMap,
    map_end: i64,
    job: &CleaningJob,
    now_ms: i64,
    limit: usize,
    txn_batches_seen: &mut HashSet<i64>,
    out: &mut CleanedLog,
) -> Result<Kept> {
    if h.is_transactional() {
        if h.is_control() {
            let data_left = txn_batches_seen.remove(&h.producer_id);
            if h.base_offset < map_end && !data_left {
                return clean_marker(h, bytes, job, now_ms, limit, out);
            }
        } else {
            txn_batches_seen.insert(h.producer_id);
        }
    }
    // Records at or past the map's end are newer than anything in it.
    if h.base_offset >= map_end || h.is_control() || h.records_count == 0 {
        return Ok(Kept::All);
    }
    let last_of_producer = h.has_producer_id() && job.producer_last_batches.get(&h.producer_id) == Some(&h.base_offset);
    if job.is_aborted(h) {
        out.records_removed += h.records_count as u64;
        return Ok(if last_of_producer { Kept::Rewritten(records::empty_batch(h)) } else { Kept::Nothing });
    }
    let has_horizon = h.attributes & DELETE_HORIZON_FLAG != 0;
    let horizon_passed = has_horizon && h.base_timestamp <= now_ms;
    let section = records::records_section(bytes, h, limit)?;
    let recs = records::parse(&section, h.records_count)?;
    let keep: Vec<bool> = recs
        .iter()
        .map(|r| {
            let offset = h.base_offset + r.offset_delta as i64;
            // A record without a key cannot be compacted: Kafka's cleaner drops it too.
            let Some(k) = r.key else { return false };
            let latest = map.get(k).is_none_or(|o| offset >= o);
            latest && !(r.is_tombstone() && horizon_passed)
        })
        .collect();
    let kept = keep.iter().filter(|k| **k).count();
    out.records_removed += (recs.len() - kept) as u64;
    let keeps_tombstone = recs.iter().zip(&keep).any(|(r, k)| *k && r.is_tombstone());
    if keeps_tombstone && has_horizon {
        out.next_delete_horizon = Some(out.next_delete_horizon.map_or(h.base_timestamp, |t| t.min(h.base_timestamp)));
    }
    let set_horizon = keeps_tombstone && !has_horizon;
    if kept == recs.len() && !set_horizon {
        return Ok(Kept::All);
    }
    if kept == 0 {
        return Ok(if last_of_producer { Kept::Rewritten(records::empty_batch(h)) } else { Kept::Nothing });
    }
    let kept_recs: Vec<&records::RecordView> = recs.iter().zip(&keep).filter(|(_, k)| **k).map(|(r, _)| r).collect();
    if set_horizon {
        return with_delete_horizon(h, &kept_recs, job, now_ms, out);
    }
    let mut section_out = Vec::with_capacity(section.len());
    for r in &kept_recs {
        section_out.extend_from_slice(r.raw);
    }
    Ok(Kept::Rewritten(records::build_batch(h, kept as i32, &section_out)?))
}

/// A marker whose transaction has no batch left in the log: kept with a delete horizon,
/// removed once the horizon has passed.
fn clean_marker(
    h: &BatchHeader,
    bytes: &[u8],
    job: &CleaningJob,
    now_ms: i64,
    limit: usize,
    out: &mut CleanedLog,
) -> Result<Kept> {
    if h.attributes & DELETE_HORIZON_FLAG == 0 {
        let section = records::records_section(bytes, h, limit)?;
        let recs = records::parse(&section, h.records_count)?;
        return with_delete_horizon(h, &recs.iter().collect::<Vec<_>>(), job, now_ms, out);
    }
    if h.base_timestamp <= now_ms {
        out.records_removed += h.records_count as u64;
        return Ok(Kept::Nothing);
    }
    out.next_delete_horizon = Some(out.next_delete_horizon.map_or(h.base_timestamp, |t| t.min(h.base_timestamp)));
    Ok(Kept::All)
}

/// `recs` of batch `h` rewritten with the delete horizon `delete.retention.ms` from now
/// (KIP-534: the batch's base timestamp holds it, the records keep their timestamps).
fn with_delete_horizon(
    h: &BatchHeader,
    recs: &[&records::RecordView],
    job: &CleaningJob,
    now_ms: i64,
    out: &mut CleanedLog,
) -> Result<Kept> {
    let horizon = now_ms.saturating_add(job.delete_retention_ms.max(0));
    let mut template = *h;
    template.attributes |= DELETE_HORIZON_FLAG;
    template.base_timestamp = horizon;
    out.next_delete_horizon = Some(out.next_delete_horizon.map_or(horizon, |t| t.min(horizon)));
    let mut section_out = Vec::new();
    for r in recs {
        let ts = h.base_timestamp + r.timestamp_delta;
        r.encode_with_timestamp_delta(&mut section_out, ts - horizon);
    }
    Ok(Kept::Rewritten(records::build_batch(&template, recs.len() as i32, &section_out)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::split_batches;
    use crate::storage::log::{Log, LogConfig};
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::*;

    /// One batch of keyed records (None value: a tombstone), as a client encodes it.
    fn keyed(recs: &[(&str, Option<&str>)], compression: Compression, producer: Option<(i64, i32)>) -> Vec<u8> {
        let records: Vec<Record> = recs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: producer.map_or(-1, |p| p.0),
                producer_epoch: if producer.is_some() { 0 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: producer.map_or(i as i32 - 1, |p| p.1 + i as i32),
                timestamp: 1000 + i as i64,
                key: Some(Bytes::from(k.to_string())),
                value: v.map(|v| Bytes::from(v.to_string())),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression }).unwrap();
        buf.to_vec()
    }

    fn append(log: &mut Log, batch: Vec<u8>) {
        let mut b = batch;
        let ranges = split_batches(&b, 1 << 20).unwrap();
        log.append(&mut b, &ranges, 0, 1000).unwrap();
    }

    fn cfg() -> LogConfig {
        LogConfig {
            segment_bytes: 600,
            index_interval: 100,
            compact: true,
            delete_enabled: false,
            ..Default::default()
        }
    }

    fn settings() -> CleanerSettings {
        CleanerSettings {
            dedupe_buffer_bytes: 1 << 20,
            io_max_bytes_per_second: f64::MAX,
            max_decompressed_bytes: 1 << 20,
        }
    }

    /// Every (offset, key, value) readable from the log start.
    fn read_all(log: &Log) -> Vec<(i64, String, Option<String>)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let r = log.read(offset, 1 << 20, log.log_end_offset()).unwrap();
            if r.bytes.is_empty() {
                break;
            }
            for set in RecordBatchDecoder::decode_all(&mut Bytes::from(r.bytes.clone())).unwrap() {
                for rec in set.records {
                    let s = |b: Option<Bytes>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
                    out.push((rec.offset, s(rec.key).unwrap(), s(rec.value)));
                }
            }
            let spans = crate::storage::batch::split_stored_batches(&r.bytes).unwrap();
            offset = spans.last().unwrap().header.next_offset();
        }
        out
    }

    fn clean_now(log: &mut Log, now: i64, producers: HashMap<i64, i64>) -> bool {
        let job = log.cleaning_job(log.log_end_offset(), now, producers).unwrap();
        let cleaned = clean(&job, &settings(), now).unwrap();
        let (swapped, removed) = log.swap_cleaned(&job, &cleaned, now).unwrap();
        removed.delete().unwrap();
        swapped
    }

    fn fill(log: &mut Log, codec: Compression) {
        for round in 0..10 {
            let vals: Vec<String> = (0..5).map(|_| format!("v{round}")).collect();
            let recs: Vec<(String, Option<&str>)> = (0..5).map(|k| (format!("k{k}"), Some(vals[k].as_str()))).collect();
            let recs: Vec<(&str, Option<&str>)> = recs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            append(log, keyed(&recs, codec, None));
        }
        // The active segment is never cleaned: roll past everything above.
        append(log, keyed(&[("other", Some("x"))], Compression::None, None));
        let mut big = vec![0u8; 0];
        big.resize(700, b'y');
        let big = String::from_utf8(big).unwrap();
        append(log, keyed(&[("other", Some(&big))], Compression::None, None));
    }

    /// A segment whose records are all still the latest is neither rewritten nor swapped.
    #[test]
    fn a_segment_cleaning_does_not_change_stays_in_place() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), cfg()).unwrap().0;
        let value = "s".repeat(120);
        let stable: Vec<(String, Option<&str>)> = (0..5).map(|k| (format!("s{k}"), Some(value.as_str()))).collect();
        let stable: Vec<(&str, Option<&str>)> = stable.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        append(&mut log, keyed(&stable, Compression::None, None));
        let first = dir.path().join(file_name(0, "log"));
        let (bytes, inode) = (std::fs::read(&first).unwrap(), std::fs::metadata(&first).unwrap().ino());
        fill(&mut log, Compression::None);
        assert!(clean_now(&mut log, 5000, HashMap::new()));
        assert_eq!(std::fs::metadata(&first).unwrap().ino(), inode, "the unchanged segment was replaced");
        assert_eq!(std::fs::read(&first).unwrap(), bytes);
        let after = read_all(&log);
        for k in 0..5 {
            assert_eq!(after.iter().filter(|r| r.1 == format!("s{k}")).count(), 1);
            assert_eq!(after.iter().filter(|r| r.1 == format!("k{k}")).count(), 1);
        }
    }

    #[test]
    fn keeps_the_latest_value_per_key_with_offsets_unchanged_in_every_codec() {
        for codec in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(dir.path(), cfg()).unwrap().0;
            fill(&mut log, codec);
            let before = log.size_bytes();
            let leo = log.log_end_offset();
            assert!(log.cleanable(leo, 5000).is_some());
            assert!(clean_now(&mut log, 5000, HashMap::new()));
            let recs = read_all(&log);
            let k: Vec<_> = recs.iter().filter(|r| r.1.starts_with('k')).collect();
            assert_eq!(k.len(), 5, "{codec:?}: {recs:?}");
            assert!(k.iter().all(|r| r.2.as_deref() == Some("v9")));
            // Offsets are the ones assigned at append: round 9 is offsets 45..50.
            assert_eq!(k.iter().map(|r| r.0).collect::<Vec<_>>(), vec![45, 46, 47, 48, 49]);
            assert!(log.size_bytes() < before);
            assert_eq!(log.log_end_offset(), leo);
            assert!(log.cleanable(leo, 5000).is_none(), "nothing left to clean");
            // Reopened, the log is the same.
            drop(log);
            let log = Log::open(dir.path(), cfg()).unwrap().0;
            assert_eq!(read_all(&log).len(), recs.len());
            assert_eq!(log.log_end_offset(), leo);
        }
    }

    #[test]
    fn tombstones_stay_until_their_delete_horizon_then_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), LogConfig { delete_retention_ms: 1000, ..cfg() }).unwrap().0;
        append(&mut log, keyed(&[("a", Some("1")), ("b", Some("1"))], Compression::None, None));
        append(&mut log, keyed(&[("a", None)], Compression::Lz4, None));
        fill(&mut log, Compression::None);
        assert!(clean_now(&mut log, 10_000, HashMap::new()));
        let recs = read_all(&log);
        assert!(recs.iter().any(|r| r.1 == "a" && r.2.is_none()), "the tombstone is kept: {recs:?}");
        assert!(recs.iter().any(|r| r.1 == "b"));
        // The horizon (10 s + 1 s) makes the log due once it passes, whatever its ratio.
        let leo = log.log_end_offset();
        assert!(log.cleanable(leo, 10_500).is_none());
        assert!(log.cleanable(leo, 11_001).is_some_and(|c| c.due));
        assert!(clean_now(&mut log, 11_001, HashMap::new()));
        let recs = read_all(&log);
        assert!(!recs.iter().any(|r| r.1 == "a"), "{recs:?}");
        assert!(recs.iter().any(|r| r.1 == "b"));
    }

    /// A batch of producer `pid` inside a transaction.
    fn transactional(recs: &[(&str, Option<&str>)], pid: i64, seq: i32) -> Vec<u8> {
        let mut b = keyed(recs, Compression::None, Some((pid, seq)));
        // Set the transactional attribute and reseal: the CRC covers the attributes.
        let attrs = i16::from_be_bytes([b[21], b[22]]) | 0x10;
        b[21..23].copy_from_slice(&attrs.to_be_bytes());
        let crc = crc32c::crc32c(&b[crate::storage::batch::CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn an_aborted_transaction_is_removed_and_never_supersedes_a_committed_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), LogConfig { delete_retention_ms: 1000, ..cfg() }).unwrap().0;
        append(&mut log, keyed(&[("a", Some("committed")), ("b", Some("b1"))], Compression::None, None));
        // Offsets 2-3: an aborted transaction of producer 9 overwriting a and b; 4: its marker.
        append(&mut log, transactional(&[("a", Some("aborted")), ("b", Some("aborted"))], 9, 0));
        let mut marker = crate::storage::control::encode_marker(9, 0, crate::storage::control::Marker::Abort, 0, 1000);
        let ranges = crate::storage::batch::split_stored_batches(&marker).unwrap();
        log.append(&mut marker, &ranges, 0, 1000).unwrap();
        append(&mut log, keyed(&[("b", Some("b2"))], Compression::None, None));
        // Filler rolls the segments above closed: the active segment is never cleaned.
        while log.segment_count() < 3 {
            append(&mut log, keyed(&[("z", Some("filler"))], Compression::None, None));
        }
        let mut job = log.cleaning_job(log.log_end_offset(), 5000, HashMap::new()).unwrap();
        job.aborted.insert(9, vec![(2, 4)]);
        let cleaned = clean(&job, &settings(), 5000).unwrap();
        assert!(log.swap_cleaned(&job, &cleaned, 5000).unwrap().0);
        let got: Vec<_> = read_all(&log)
            .into_iter()
            .filter(|r| r.1 != "z" && !r.1.starts_with('\0'))
            .map(|(o, k, v)| (o, k, v.unwrap()))
            .collect();
        assert_eq!(got, vec![(0, "a".into(), "committed".into()), (5, "b".into(), "b2".into())]);
        assert_eq!(count_markers(&log), 1, "the marker stays while this pass read its transaction's batches");
        // The next pass finds the marker alone: it sets its delete horizon; a pass after
        // the horizon removes it.
        let horizon = 6000 + 1000;
        for (now, left) in [(6000, 1), (horizon - 1, 1), (horizon, 0)] {
            let job = log.cleaning_job(log.log_end_offset(), now, HashMap::new()).unwrap();
            let cleaned = clean(&job, &settings(), now).unwrap();
            log.swap_cleaned(&job, &cleaned, now).unwrap().1.delete().unwrap();
            assert_eq!(count_markers(&log), left, "at {now}");
        }
    }

    fn count_markers(log: &Log) -> usize {
        let mut n = 0;
        log.for_each_header_from(0, &mut |h| n += h.is_control() as usize).unwrap();
        n
    }

    #[test]
    fn a_committed_transactions_marker_stays_while_its_records_do() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), LogConfig { delete_retention_ms: 0, ..cfg() }).unwrap().0;
        append(&mut log, transactional(&[("t", Some("committed"))], 9, 0));
        let mut marker = crate::storage::control::encode_marker(9, 0, crate::storage::control::Marker::Commit, 0, 1000);
        let ranges = crate::storage::batch::split_stored_batches(&marker).unwrap();
        log.append(&mut marker, &ranges, 0, 1000).unwrap();
        while log.segment_count() < 3 {
            append(&mut log, keyed(&[("z", Some("filler"))], Compression::None, None));
        }
        for now in [5000, 6000, 7000] {
            clean_now(&mut log, now, HashMap::new());
            assert_eq!(count_markers(&log), 1, "at {now}: the committed record is still there");
        }
        assert!(read_all(&log).iter().any(|r| r.1 == "t"));
    }

    #[test]
    fn a_producers_last_batch_is_kept_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), cfg()).unwrap().0;
        append(&mut log, keyed(&[("p", Some("1"))], Compression::None, Some((7, 0))));
        append(&mut log, keyed(&[("p", Some("2"))], Compression::None, Some((7, 1))));
        fill(&mut log, Compression::None);
        assert!(clean_now(&mut log, 5000, HashMap::from([(7, 1)])));
        let mut kept = Vec::new();
        log.for_each_header_from(0, &mut |h| {
            if h.producer_id == 7 {
                kept.push((h.base_offset, h.base_sequence, h.records_count))
            }
        })
        .unwrap();
        // The first batch is gone; the second (superseded by nothing: "p" is latest) stays.
        assert_eq!(kept, vec![(1, 1, 1)]);
        // Superseded too: only its empty header stays.
        append(&mut log, keyed(&[("p", Some("3"))], Compression::None, None));
        fill(&mut log, Compression::None);
        assert!(clean_now(&mut log, 6000, HashMap::from([(7, 1)])));
        kept.clear();
        log.for_each_header_from(0, &mut |h| {
            if h.producer_id == 7 {
                kept.push((h.base_offset, h.base_sequence, h.records_count))
            }
        })
        .unwrap();
        assert_eq!(kept, vec![(1, 1, 0)]);
    }

    #[test]
    fn a_truncation_during_cleaning_discards_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), cfg()).unwrap().0;
        fill(&mut log, Compression::None);
        let job = log.cleaning_job(log.log_end_offset(), 5000, HashMap::new()).unwrap();
        let cleaned = clean(&job, &settings(), 5000).unwrap();
        log.truncate_to(log.log_end_offset() - 1).unwrap();
        let (swapped, _) = log.swap_cleaned(&job, &cleaned, 5000).unwrap();
        assert!(!swapped);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.ends_with(".swap") || n.ends_with(".cleaned")
            })
            .collect();
        assert!(leftovers.is_empty());
    }

    /// A stop at each step of the swap: the log reopens with all latest values, either
    /// cleaned or not, and never with both the old and the new copy of a range.
    #[test]
    fn recovery_finishes_or_rolls_back_a_swap() {
        for stage in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(dir.path(), cfg()).unwrap().0;
            fill(&mut log, Compression::None);
            let before = read_all(&log);
            let job = log.cleaning_job(log.log_end_offset(), 5000, HashMap::new()).unwrap();
            let cleaned = clean(&job, &settings(), 5000).unwrap();
            drop(log);
            let g = &cleaned.groups[0];
            match stage {
                // Stopped before the swap: the cleaned file may be incomplete.
                0 => {}
                // Stopped after the swap began under the lock (the cleaned file became the swap file).
                1 => {
                    for g in &cleaned.groups {
                        let swap = group_file(dir.path(), g.base_offset, g.end_offset, "swap");
                        std::fs::rename(&g.cleaned_path, swap).unwrap();
                    }
                }
                // Stopped after some old segments were renamed away.
                _ => {
                    for g in &cleaned.groups {
                        let swap = group_file(dir.path(), g.base_offset, g.end_offset, "swap");
                        std::fs::rename(&g.cleaned_path, swap).unwrap();
                    }
                    let (base, _) = g.sources[0];
                    let p = dir.path().join(file_name(base, "log"));
                    std::fs::rename(&p, p.with_extension("log.deleted")).unwrap();
                }
            }
            let log = Log::open(dir.path(), cfg()).unwrap().0;
            let after = read_all(&log);
            let mut latest: HashMap<String, (i64, Option<String>)> = HashMap::new();
            for r in &after {
                latest.insert(r.1.clone(), (r.0, r.2.clone()));
            }
            for k in 0..5 {
                assert_eq!(latest[&format!("k{k}")].1.as_deref(), Some("v9"), "stage {stage}");
            }
            let offsets: Vec<i64> = after.iter().map(|r| r.0).collect();
            assert!(offsets.windows(2).all(|w| w[0] < w[1]), "stage {stage}: offsets repeat {offsets:?}");
            if stage == 0 {
                assert_eq!(after.len(), before.len());
            } else {
                assert!(after.len() < before.len());
            }
            let names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect();
            assert!(!names.iter().any(|n| n.ends_with(".swap") || n.ends_with(".cleaned") || n.ends_with(".deleted")));
        }
    }

    #[test]
    fn a_follower_takes_a_cleaned_range_and_truncates_into_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let mut leader = Log::open(&dir.path().join("l"), cfg()).unwrap().0;
        fill(&mut leader, Compression::None);
        assert!(clean_now(&mut leader, 5000, HashMap::new()));
        let mut follower = Log::open(&dir.path().join("f"), cfg()).unwrap().0;
        while follower.log_end_offset() < leader.log_end_offset() {
            let r = leader.read(follower.log_end_offset(), 1 << 20, leader.log_end_offset()).unwrap();
            let spans = crate::storage::batch::split_stored_batches(&r.bytes).unwrap();
            follower.append_replica(&r.bytes, &spans, 0).unwrap();
        }
        assert_eq!(read_all(&follower), read_all(&leader));
        // Offset 20 was cleaned away: truncating there keeps everything below it.
        follower.truncate_to(20).unwrap();
        assert_eq!(follower.log_end_offset(), 20);
        assert!(read_all(&follower).iter().all(|r| r.0 < 20));
    }
}
