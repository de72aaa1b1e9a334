//! A partition's log: an ordered set of segments with a log start offset and a log end
//! offset. Appends go to the active (last) segment, which rolls by size and age; retention
//! removes whole segments from the front.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use super::batch::{self, BatchHeader, BatchSpan, TimestampOffset};
use super::cleaner::{self, CleanedLog, CleaningJob};
use super::records::DELETE_HORIZON_FLAG;
use super::segment::{delete_segment_files, file_name, list_segments, Segment};
use super::segments::Segments;

/// Per-topic log settings (Kafka topic config names in comments).
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub segment_bytes: u64,          // segment.bytes
    pub segment_ms: i64,             // segment.ms
    pub retention_ms: i64,           // retention.ms, -1 = forever
    pub retention_bytes: i64,        // retention.bytes, -1 = unlimited
    pub index_interval: u32,         // index.interval.bytes
    pub flush_messages: Option<i64>, // flush.messages
    pub flush_ms: Option<i64>,       // flush.ms
    pub delete_enabled: bool,        // cleanup.policy contains delete
    pub max_message_bytes: usize,    // max.message.bytes (largest batch accepted)
    pub log_append_time: bool,       // message.timestamp.type=LogAppendTime
    pub min_insync_replicas: i32,    // min.insync.replicas (checked by acks=all produces)
    pub compact: bool,               // cleanup.policy contains compact
    pub min_cleanable_ratio: f64,    // min.cleanable.dirty.ratio
    pub min_compaction_lag_ms: i64,  // min.compaction.lag.ms
    pub max_compaction_lag_ms: i64,  // max.compaction.lag.ms
    pub delete_retention_ms: i64,    // delete.retention.ms
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3_600_000,
            retention_ms: 7 * 24 * 3_600_000,
            retention_bytes: -1,
            index_interval: 4096,
            flush_messages: None,
            flush_ms: None,
            delete_enabled: true,
            max_message_bytes: 1048588,
            log_append_time: false,
            min_insync_replicas: 1,
            compact: false,
            min_cleanable_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 86_400_000,
        }
    }
}

/// Why a read returned no batches.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Below the log start or past the log end: Kafka's OFFSET_OUT_OF_RANGE.
    #[error("offset out of range")]
    OffsetOutOfRange,
    /// The segment files could not be read: Kafka's KAFKA_STORAGE_ERROR.
    #[error("reading the log: {0:#}")]
    Storage(#[from] anyhow::Error),
}

#[cfg(test)]
impl ReadError {
    pub fn is_out_of_range(&self) -> bool {
        matches!(self, ReadError::OffsetOutOfRange)
    }
}

/// What a read found: whole batches, and where the next read should start.
#[derive(Debug, Default)]
pub struct ReadResult {
    pub bytes: Vec<u8>,
}

/// Where a leader epoch starts in the log (an entry of Kafka's leader-epoch cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// OffsetForLeaderEpoch's answer: the largest epoch at or below the one asked for, and
/// where it ends (the next epoch's start, or the log end offset). -1/-1 when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    pub epoch: i32,
    pub end_offset: i64,
}

/// The offsets an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedOffsets {
    pub first_offset: i64,
    pub last_offset: i64,
}

/// One stored batch: its header and its bytes as they are on disk.
#[derive(Debug)]
pub struct StoredBatch {
    pub header: BatchHeader,
    pub bytes: Vec<u8>,
}

/// Segments taken out of a log under its lock, whose files are deleted once the caller
/// has released it (unlinking can wait on the disk: docs/architecture.md). A crash in
/// between leaves files wholly below the stored log start offset, which `Log::open_with`
/// deletes.
#[must_use = "the segments' files stay on disk until `delete` runs"]
#[derive(Debug, Default)]
pub struct RemovedSegments {
    segments: Vec<Segment>,
    /// Replaced by a cleaning: their `.log` file was renamed `<name>.deleted`.
    renamed: bool,
}

impl RemovedSegments {
    fn new(segments: Vec<Segment>) -> Self {
        RemovedSegments { segments, renamed: false }
    }

    fn deleted(segments: Vec<Segment>) -> Self {
        RemovedSegments { segments, renamed: true }
    }

    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Delete the files. Blocking: call from `spawn_blocking` or `block_in_place`.
    pub fn delete(self) -> Result<()> {
        for seg in self.segments {
            if self.renamed {
                let dir = seg.dir().to_path_buf();
                let log = dir.join(file_name(seg.base_offset, "log.deleted"));
                match std::fs::remove_file(&log) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            } else {
                seg.delete()?;
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    pub config: LogConfig,
    segments: Segments,
    log_start_offset: i64,
    log_end_offset: i64,
    /// Ascending by epoch.
    epochs: Vec<EpochEntry>,
    unflushed_messages: i64,
    last_flush: Instant,
    /// Files of rolled segments not yet fsynced: the roll happens inside an append, under
    /// the partition lock, so their fsync is left to housekeeping, outside it.
    pending_sync: Vec<std::fs::File>,
    /// Everything below is clean (Kafka's cleaner offset checkpoint), kept in this
    /// partition's `cleaner-offset-checkpoint` file.
    cleaner_checkpoint: i64,
    /// Counts truncations: a cleaning taken before one is not swapped in.
    generation: u64,
    /// Earliest delete horizon of a kept tombstone: the log needs cleaning then.
    next_delete_horizon: Option<i64>,
    /// Wall-clock ms of the last cleaning swapped in (or of the open, before any).
    pub last_cleaned_ms: i64,
}

/// How dirty a compacted log is, for the cleaner's choice (Kafka's LogToClean).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cleanable {
    pub dirty_ratio: f64,
    /// Past `max.compaction.lag.ms`, or a tombstone's delete horizon passed: cleaned
    /// whatever the ratio.
    pub due: bool,
    /// How long past `max.compaction.lag.ms` the oldest dirty record is (0 when not).
    pub compaction_delay_ms: i64,
}

/// fsyncs taken out of a log under its lock, to run after the lock is released: an
/// fsync can wait on the disk for long, and produces and fetches of the partition wait on
/// its lock (the blocking-I/O rule in docs/architecture.md).
#[derive(Default)]
pub struct PendingSync(Vec<std::fs::File>);

impl PendingSync {
    /// Run the fsyncs. Blocking: call from `spawn_blocking` or `block_in_place`.
    pub fn run(self) -> Result<()> {
        for f in self.0 {
            f.sync_data()?;
        }
        Ok(())
    }
}

const LOG_START_FILE: &str = "log-start-offset";
const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

/// Finish or roll back what a cleaning left in `dir` when the process stopped. A
/// `.cleaned` file is incomplete: removed, the old segments stand. A `.swap` file is a
/// complete cleaned group: the segments it replaces (named in it) are removed and it
/// becomes the segment. `.deleted` files were already replaced.
fn recover_cleaning(dir: &Path) -> Result<()> {
    let mut swaps = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().to_string();
        if name.ends_with(".cleaned") || name.ends_with(".deleted") {
            std::fs::remove_file(dir.join(&name))?;
        } else if let Some(range) = cleaner::parse_group_file(&name, "swap") {
            swaps.push((range, name));
        }
    }
    if swaps.is_empty() {
        return Ok(());
    }
    let bases = list_segments(dir)?;
    for ((base, end), name) in swaps {
        tracing::warn!(dir = %dir.display(), base, end, "completing a log cleaning swap interrupted by a stop");
        for b in bases.iter().filter(|b| **b >= base && **b < end) {
            delete_segment_files(dir, *b)?;
        }
        std::fs::rename(dir.join(&name), dir.join(file_name(base, "log")))?;
    }
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

impl Log {
    /// Open (or create) the log in `dir`, recovering the active segment, and call
    /// `on_batch` with the header of every batch (to rebuild producer state).
    pub fn open_with(dir: &Path, config: LogConfig, on_batch: &mut dyn FnMut(&BatchHeader)) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        recover_cleaning(dir)?;
        let bases = list_segments(dir)?;
        let mut next_delete_horizon: Option<i64> = None;
        let mut segments = BTreeMap::new();
        let mut epochs: Vec<EpochEntry> = Vec::new();
        let stored_start = std::fs::read_to_string(dir.join(LOG_START_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        for (i, base) in bases.iter().enumerate() {
            let active = i + 1 == bases.len();
            // Wholly below the log start: removed by retention or DeleteRecords, but not
            // yet unlinked when the process stopped (see `RemovedSegments`).
            if !active && bases[i + 1] <= stored_start {
                delete_segment_files(dir, *base)?;
                continue;
            }
            let seg = Segment::open(dir, *base, config.index_interval, active, &mut |h: &BatchHeader| {
                note_epoch(&mut epochs, h.partition_leader_epoch, h.base_offset);
                if h.attributes & DELETE_HORIZON_FLAG != 0 {
                    next_delete_horizon =
                        Some(next_delete_horizon.map_or(h.base_timestamp, |t| t.min(h.base_timestamp)));
                }
                on_batch(h);
            })?;
            segments.insert(*base, seg);
        }
        let segments = match Segments::from_opened(segments) {
            Some(s) => s,
            None => Segments::new(Segment::create(dir, 0, config.index_interval)?),
        };
        let log_end_offset = segments.active().next_offset;
        let first_base = segments.oldest().base_offset;
        let log_start_offset = stored_start.max(first_base).min(log_end_offset);
        let cleaner_checkpoint = std::fs::read_to_string(dir.join(CLEANER_CHECKPOINT_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0)
            .clamp(log_start_offset, log_end_offset);
        Ok(Log {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            log_end_offset,
            epochs,
            unflushed_messages: 0,
            last_flush: Instant::now(),
            pending_sync: Vec::new(),
            cleaner_checkpoint,
            generation: 0,
            next_delete_horizon,
            last_cleaned_ms: wall_clock_ms(),
        })
    }

    /// `open_with`, collecting the headers (tests and small logs).
    #[cfg(test)]
    pub fn open(dir: &Path, config: LogConfig) -> Result<(Self, Vec<BatchHeader>)> {
        let mut headers = Vec::new();
        let log = Self::open_with(dir, config, &mut |h| headers.push(*h))?;
        Ok((log, headers))
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size()).sum()
    }
    #[cfg(test)]
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    #[cfg(test)]
    pub fn oldest_base_offset(&self) -> i64 {
        self.segments.oldest().base_offset
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn active(&mut self) -> &mut Segment {
        self.segments.active_mut()
    }

    /// Whether appending `incoming` bytes now starts a new segment.
    fn roll_due(&self, incoming: usize, now_ms: i64) -> bool {
        let active = self.segments.active();
        let full = active.size() + incoming as u64 > self.config.segment_bytes;
        let old = active.first_append_ms.is_some_and(|t| now_ms - t >= self.config.segment_ms);
        !active.is_empty() && (full || old)
    }

    /// Whether appending `incoming` bytes now can wait on the disk: it rolls a segment
    /// (creating files) or fsyncs (`flush.messages`). Callers on a runtime worker then run
    /// the append in `block_in_place`; a plain append is a page-cache write.
    pub fn append_may_block(&self, incoming: usize, now_ms: i64) -> bool {
        self.config.flush_messages.is_some() || self.roll_due(incoming, now_ms)
    }

    fn maybe_roll(&mut self, incoming: usize, now_ms: i64) -> Result<()> {
        if self.roll_due(incoming, now_ms) {
            let leo = self.log_end_offset;
            let interval = self.config.index_interval;
            let mut handles = Vec::new();
            self.active().sync_handles(&mut handles)?;
            self.segments.roll(Segment::create(&self.dir, leo, interval)?);
            self.pending_sync.extend(handles);
        }
        Ok(())
    }

    /// Append validated batches (offsets are assigned here), returning the first and last
    /// offsets written.
    pub fn append(
        &mut self,
        batches: &mut [u8],
        ranges: &[BatchSpan],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendedOffsets> {
        let first = self.log_end_offset;
        for BatchSpan { range, header: h } in ranges {
            let b = &mut batches[range.clone()];
            batch::assign(b, self.log_end_offset, leader_epoch);
            let mut h = *h;
            h.base_offset = self.log_end_offset;
            h.partition_leader_epoch = leader_epoch;
            self.maybe_roll(b.len(), now_ms)?;
            self.active().append(b, &h, now_ms)?;
            note_epoch(&mut self.epochs, leader_epoch, h.base_offset);
            self.log_end_offset = h.next_offset();
            self.unflushed_messages += h.records_count as i64;
        }
        if self.config.flush_messages.is_some_and(|n| self.unflushed_messages >= n) {
            self.flush()?;
        }
        Ok(AppendedOffsets { first_offset: first, last_offset: self.log_end_offset - 1 })
    }

    /// Append batches copied from the leader as they are: offsets and leader epochs were
    /// assigned there, and must continue this log exactly.
    pub fn append_replica(&mut self, batches: &[u8], ranges: &[BatchSpan], now_ms: i64) -> Result<()> {
        for BatchSpan { range, header: h } in ranges {
            // A cleaned leader log has gaps between batches (Kafka's follower accepts them).
            anyhow::ensure!(
                h.base_offset >= self.log_end_offset,
                "replicated batch at offset {} is below the log end offset {}",
                h.base_offset,
                self.log_end_offset
            );
            let b = &batches[range.clone()];
            self.maybe_roll(b.len(), now_ms)?;
            self.active().append(b, h, now_ms)?;
            note_epoch(&mut self.epochs, h.partition_leader_epoch, h.base_offset);
            self.log_end_offset = h.next_offset();
            self.unflushed_messages += h.records_count as i64;
        }
        Ok(())
    }

    /// Drop every batch at or after `offset` (a divergent tail after a leader change).
    /// Below the log start offset the log is emptied and restarts at `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        if offset >= self.log_end_offset {
            return Ok(());
        }
        self.generation += 1;
        let interval = self.config.index_interval;
        // A cleaned log may have no batch at `offset`: the log end is then `offset` itself,
        // or the start of the batch holding it.
        let cut_batch_base = self.batch_at(offset)?.map(|b| b.header.base_offset);
        let doomed = if offset < self.log_start_offset { None } else { self.segments.split_above(offset.max(0)) };
        match doomed {
            Some(doomed) => {
                for seg in doomed {
                    seg.delete()?;
                }
                self.segments.active_mut().truncate_to(&self.dir, offset)?;
            }
            // Below the log start, or below every segment: the log restarts at `offset`.
            None => {
                for seg in self.segments.reset(Segment::create(&self.dir, offset, interval)?) {
                    seg.delete()?;
                }
                self.log_start_offset = offset;
                std::fs::write(self.dir.join(LOG_START_FILE), offset.to_string())?;
            }
        }
        let active_end = self.segments.active().next_offset;
        self.log_end_offset = if offset < self.log_start_offset {
            active_end
        } else {
            active_end.max(offset.min(cut_batch_base.unwrap_or(offset)))
        };
        let leo = self.log_end_offset;
        self.epochs.retain(|e| e.start_offset < leo);
        self.cleaner_checkpoint = self.cleaner_checkpoint.min(leo);
        Ok(())
    }

    /// Empty the log and start it at `offset` (a follower behind its leader's log start).
    pub fn restart_at(&mut self, offset: i64) -> Result<()> {
        self.generation += 1;
        self.cleaner_checkpoint = offset;
        for seg in self.segments.reset(Segment::create(&self.dir, offset, self.config.index_interval)?) {
            seg.delete()?;
        }
        self.log_start_offset = offset;
        self.log_end_offset = offset;
        self.epochs.clear();
        std::fs::write(self.dir.join(LOG_START_FILE), offset.to_string())?;
        Ok(())
    }

    /// Every batch header from the log start, in order (rebuilding producer state).
    pub fn for_each_header(&self, f: &mut dyn FnMut(&BatchHeader)) -> Result<()> {
        for seg in self.segments.iter() {
            seg.for_each_header(f)?;
        }
        Ok(())
    }

    /// The latest leader epoch written, and the offset it started at.
    pub fn latest_epoch(&self) -> Option<EpochEntry> {
        self.epochs.last().copied()
    }

    pub fn flush(&mut self) -> Result<()> {
        for f in std::mem::take(&mut self.pending_sync) {
            f.sync_data()?;
        }
        self.active().sync()?;
        self.unflushed_messages = 0;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// The fsyncs due now, to run once the caller has released the partition lock: rolled
    /// segments, and the active segment when `flush.ms` has passed since the last flush.
    pub fn take_due_syncs(&mut self) -> Result<PendingSync> {
        let mut files = std::mem::take(&mut self.pending_sync);
        if let Some(ms) = self.config.flush_ms {
            if self.unflushed_messages > 0 && self.last_flush.elapsed().as_millis() as i64 >= ms {
                self.active().sync_handles(&mut files)?;
                self.unflushed_messages = 0;
                self.last_flush = Instant::now();
            }
        }
        Ok(PendingSync(files))
    }

    /// Read whole batches starting at the batch holding `offset`, up to `max_bytes` (at
    /// least one batch, so a batch larger than the limit still makes progress), stopping
    /// before any batch that reaches `upper` (the high watermark).
    pub fn read(&self, offset: i64, max_bytes: usize, upper: i64) -> Result<ReadResult, ReadError> {
        if offset < self.log_start_offset || offset > self.log_end_offset {
            return Err(ReadError::OffsetOutOfRange);
        }
        if offset >= upper {
            return Ok(ReadResult::default());
        }
        for seg in self.segments.starting_at(offset) {
            let Some(first) = seg.find_batch(offset)? else { continue };
            if first.header.base_offset >= upper {
                break;
            }
            let want = max_bytes.max(first.header.total_len());
            let raw = seg.read_at(first.position, want)?;
            // Trim to whole batches below the high watermark.
            let mut end = 0;
            while end + batch::HEADER_LEN <= raw.len() {
                let h = BatchHeader::parse(&raw[end..]).map_err(anyhow::Error::from)?;
                if end + h.total_len() > raw.len() || h.last_offset() >= upper {
                    break;
                }
                end += h.total_len();
            }
            let mut bytes = raw;
            bytes.truncate(end);
            return Ok(ReadResult { bytes });
        }
        Ok(ReadResult::default())
    }

    /// The header of the batch holding `offset`, if stored.
    pub fn batch_at(&self, offset: i64) -> Result<Option<StoredBatch>> {
        if offset < self.log_start_offset || offset >= self.log_end_offset {
            return Ok(None);
        }
        for seg in self.segments.starting_at(offset) {
            if let Some(at) = seg.find_batch(offset)? {
                return Ok(Some(at.read(seg)?));
            }
        }
        Ok(None)
    }

    /// First batch (header and bytes) whose max timestamp is >= `ts`.
    pub fn batch_for_timestamp(&self, ts: i64) -> Result<Option<StoredBatch>> {
        for seg in self.segments.iter() {
            if seg.max_timestamp < ts {
                continue;
            }
            if let Some(at) = seg.find_by_timestamp(ts, self.log_start_offset)? {
                return Ok(Some(at.read(seg)?));
            }
        }
        Ok(None)
    }

    /// The largest max timestamp, with the offset of the batch holding it.
    pub fn max_timestamp(&self) -> Option<TimestampOffset> {
        let seg = self.segments.iter().filter(|s| !s.is_empty()).max_by_key(|s| s.max_timestamp)?;
        let at = seg.find_by_timestamp(seg.max_timestamp, self.log_start_offset).ok()??;
        Some(TimestampOffset { timestamp: at.header.max_timestamp, offset: at.header.last_offset() })
    }

    /// Move the log start offset forward (DeleteRecords); whole segments below it are
    /// taken out, to be deleted by the caller after it releases the lock.
    pub fn advance_start(&mut self, offset: i64) -> Result<RemovedSegments> {
        let offset = offset.min(self.log_end_offset);
        if offset <= self.log_start_offset {
            return Ok(RemovedSegments::default());
        }
        self.log_start_offset = offset;
        let tmp = self.dir.join(format!("{LOG_START_FILE}.tmp"));
        std::fs::write(&tmp, offset.to_string())?;
        std::fs::rename(&tmp, self.dir.join(LOG_START_FILE))?;
        let mut removed = Vec::new();
        while let Some(seg) = self.segments.pop_oldest_if(|s| s.next_offset <= offset) {
            removed.push(seg);
        }
        Ok(RemovedSegments::new(removed))
    }

    /// Apply `retention.ms` and `retention.bytes`: take whole inactive segments from the
    /// front, to be deleted by the caller after it releases the lock.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<RemovedSegments> {
        if !self.config.delete_enabled {
            return Ok(RemovedSegments::default());
        }
        let mut removed = Vec::new();
        // A quiet topic never rolls by size: once its only live data is past retention,
        // roll so the expired segment can go (Kafka does the same).
        let (retention_ms, interval, leo) = (self.config.retention_ms, self.config.index_interval, self.log_end_offset);
        let active = self.active();
        if retention_ms >= 0
            && !active.is_empty()
            && active.max_timestamp >= 0
            && now_ms - active.max_timestamp > retention_ms
        {
            let mut handles = Vec::new();
            active.sync_handles(&mut handles)?;
            self.segments.roll(Segment::create(&self.dir, leo, interval)?);
            self.pending_sync.extend(handles);
        }
        let mut size = self.size_bytes() as i64;
        let (retention_bytes, retention_ms) = (self.config.retention_bytes, self.config.retention_ms);
        let expired = |seg: &Segment, size: i64| {
            let expired_time = retention_ms >= 0 && seg.max_timestamp >= 0 && now_ms - seg.max_timestamp > retention_ms;
            let over_size = retention_bytes >= 0 && size - seg.size() as i64 >= retention_bytes;
            expired_time || over_size
        };
        while let Some(seg) = self.segments.pop_oldest_if(|s| expired(s, size)) {
            size -= seg.size() as i64;
            self.log_start_offset = self.log_start_offset.max(seg.next_offset);
            removed.push(seg);
        }
        // Written before any file goes, so a crash in between finds them below the start.
        if !removed.is_empty() {
            std::fs::write(self.dir.join(LOG_START_FILE), self.log_start_offset.to_string())?;
        }
        Ok(RemovedSegments::new(removed))
    }

    /// The first offset the cleaner may not touch: the active segment, records not yet
    /// committed (`upper`, the high watermark) and segments younger than
    /// `min.compaction.lag.ms`.
    fn first_uncleanable(&self, upper: i64, now_ms: i64) -> i64 {
        let mut first = self.segments.active().base_offset.min(upper);
        if self.config.min_compaction_lag_ms > 0 {
            let young = self
                .segments
                .iter()
                .find(|s| s.max_timestamp >= 0 && now_ms - s.max_timestamp < self.config.min_compaction_lag_ms);
            if let Some(s) = young {
                first = first.min(s.base_offset);
            }
        }
        first
    }

    fn first_dirty(&self) -> i64 {
        self.cleaner_checkpoint.clamp(self.log_start_offset, self.log_end_offset)
    }

    /// How dirty this log is, if it is compacted and has something to clean.
    pub fn cleanable(&self, upper: i64, now_ms: i64) -> Option<Cleanable> {
        if !self.config.compact {
            return None;
        }
        let first_dirty = self.first_dirty();
        let first_uncleanable = self.first_uncleanable(upper, now_ms);
        let (mut clean, mut dirty) = (0u64, 0u64);
        let mut oldest_dirty: Option<i64> = None;
        for s in self.segments.iter().filter(|s| s.base_offset < first_uncleanable) {
            if s.next_offset <= first_dirty {
                clean += s.size();
            } else {
                dirty += s.size();
                if oldest_dirty.is_none() && s.first_timestamp >= 0 {
                    oldest_dirty = Some(s.first_timestamp);
                }
            }
        }
        let dirty_ratio = if clean + dirty == 0 { 0.0 } else { dirty as f64 / (clean + dirty) as f64 };
        let max_lag = self.config.max_compaction_lag_ms;
        let compaction_delay_ms = match oldest_dirty {
            Some(ts) if max_lag < i64::MAX && dirty > 0 => (now_ms - ts - max_lag).max(0),
            _ => 0,
        };
        let lag_due = oldest_dirty.is_some_and(|ts| max_lag < i64::MAX && dirty > 0 && now_ms - ts >= max_lag);
        let horizon_due = self.next_delete_horizon.is_some_and(|t| t <= now_ms);
        let due = lag_due || horizon_due;
        (due || (dirty > 0 && dirty_ratio >= self.config.min_cleanable_ratio)).then_some(Cleanable {
            dirty_ratio,
            due,
            compaction_delay_ms,
        })
    }

    /// A snapshot for one cleaning: handles on the closed segments below the first
    /// uncleanable offset, and the settings it follows.
    pub fn cleaning_job(
        &self,
        upper: i64,
        now_ms: i64,
        producer_last_batches: std::collections::HashMap<i64, i64>,
    ) -> Result<CleaningJob> {
        let first_uncleanable = self.first_uncleanable(upper, now_ms);
        let active = self.segments.active().base_offset;
        let segments = self
            .segments
            .iter()
            .filter(|s| s.base_offset < first_uncleanable && s.base_offset < active)
            .map(|s| s.source())
            .collect::<Result<Vec<_>>>()?;
        Ok(CleaningJob {
            dir: self.dir.clone(),
            segments,
            first_dirty: self.first_dirty(),
            first_uncleanable,
            segment_bytes: self.config.segment_bytes,
            delete_retention_ms: self.config.delete_retention_ms,
            producer_last_batches,
            aborted: Default::default(),
            generation: self.generation,
        })
    }

    /// Swap the cleaned groups in for their source segments, in Kafka's order: each
    /// `.cleaned` file is renamed `.swap`, the old files are renamed `.deleted`, then the
    /// `.swap` file becomes the segment, with directory fsyncs between, so a stop at any
    /// point leaves either the old segments or the swap file that replaces them
    /// (`recover_cleaning` finishes it). Returns false, swapping nothing, when the log
    /// changed under the cleaning (a truncation, a retention pass): the cleaned files are
    /// then removed. The `.deleted` files are removed by the caller after it releases the
    /// lock (`RemovedSegments`).
    pub fn swap_cleaned(
        &mut self,
        job: &CleaningJob,
        cleaned: &CleanedLog,
        now_ms: i64,
    ) -> Result<(bool, RemovedSegments)> {
        let active = self.segments.active().base_offset;
        let intact = job.generation == self.generation
            && cleaned.groups.iter().all(|g| {
                g.end_offset <= active
                    && g.sources.iter().all(|(base, size)| self.segments.size_of(*base) == Some(*size))
            });
        if !intact {
            cleaner::discard(&cleaned.groups);
            return Ok((false, RemovedSegments::default()));
        }
        let dir_sync = || std::fs::File::open(&self.dir).and_then(|d| d.sync_all());
        // From here a stop is completed by recovery, never rolled back: the sources were
        // checked unchanged under this lock, so no later change to the log can be undone.
        let mut swaps = Vec::with_capacity(cleaned.groups.len());
        for g in &cleaned.groups {
            let swap = cleaner::group_file(&self.dir, g.base_offset, g.end_offset, "swap");
            std::fs::rename(&g.cleaned_path, &swap)?;
            swaps.push(swap);
        }
        dir_sync()?;
        let mut removed = Vec::new();
        for (g, swap) in cleaned.groups.iter().zip(&swaps) {
            for (base, _) in &g.sources {
                let log = self.dir.join(file_name(*base, "log"));
                std::fs::rename(&log, log.with_extension("log.deleted"))?;
                for ext in ["index", "timeindex"] {
                    let _ = std::fs::remove_file(self.dir.join(file_name(*base, ext)));
                }
            }
            dir_sync()?;
            std::fs::rename(swap, self.dir.join(file_name(g.base_offset, "log")))?;
            dir_sync()?;
            let seg = Segment::open(&self.dir, g.base_offset, self.config.index_interval, false, &mut |_| {})?;
            removed.extend(self.segments.replace(seg, g.end_offset));
        }
        self.cleaner_checkpoint = cleaned.clean_up_to.max(self.cleaner_checkpoint);
        write_atomically(&self.dir.join(CLEANER_CHECKPOINT_FILE), &self.cleaner_checkpoint.to_string())?;
        self.next_delete_horizon = cleaned.next_delete_horizon;
        self.last_cleaned_ms = now_ms;
        Ok((true, RemovedSegments::deleted(removed)))
    }

    /// Where `epoch` ends (OffsetForLeaderEpoch, used for follower truncation).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> EpochEnd {
        let (epoch, end_offset) = match self.epochs.partition_point(|e| e.epoch <= epoch) {
            0 => (-1, -1),
            i if i == self.epochs.len() => (self.epochs[i - 1].epoch, self.log_end_offset),
            i => (self.epochs[i - 1].epoch, self.epochs[i].start_offset),
        };
        EpochEnd { epoch, end_offset }
    }
}

/// Record that `epoch` starts at `offset` if it is newer than the last one known.
fn note_epoch(epochs: &mut Vec<EpochEntry>, epoch: i32, offset: i64) {
    if epochs.last().is_none_or(|e| epoch > e.epoch) {
        epochs.push(EpochEntry { epoch, start_offset: offset });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::{split_batches, tests::encode};
    use kafka_protocol::records::Compression;

    fn append(log: &mut Log, n: usize, ts: i64) -> AppendedOffsets {
        let mut b = encode(n, Compression::None, ts);
        let ranges = split_batches(&b, 1 << 20).unwrap();
        log.append(&mut b, &ranges, 0, ts).unwrap()
    }

    fn cfg(segment_bytes: u64) -> LogConfig {
        LogConfig { segment_bytes, index_interval: 100, ..Default::default() }
    }

    #[test]
    fn append_read_roll_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), cfg(500)).unwrap().0;
        for i in 0..20 {
            assert_eq!(append(&mut log, 5, 1000 + i), AppendedOffsets { first_offset: i * 5, last_offset: i * 5 + 4 });
        }
        assert!(log.segment_count() > 2);
        let r = log.read(37, 1, 100).unwrap();
        let h = BatchHeader::parse(&r.bytes).unwrap();
        assert_eq!(h.base_offset, 35);
        assert_eq!(r.bytes.len(), h.total_len());
        assert!(log.read(101, 1000, 100).unwrap_err().is_out_of_range());
        assert!(log.read(100, 1000, 100).unwrap().bytes.is_empty());
        // The high watermark bounds reads.
        let r = log.read(0, 1 << 20, 12).unwrap();
        let last = split_batches(&r.bytes, 1 << 20).unwrap().last().unwrap().header;
        assert_eq!(last.last_offset(), 9);
        drop(log);
        let (log, headers) = Log::open(dir.path(), cfg(500)).unwrap();
        assert_eq!(headers.len(), 20);
        assert_eq!(log.log_end_offset(), 100);
        // Batch i holds timestamps 1000+i ..= 1004+i: the first reaching 1010 is batch 6.
        assert_eq!(log.batch_for_timestamp(1010).unwrap().unwrap().header.base_offset, 30);
    }

    #[test]
    fn recovery_truncates_torn_tail_and_rebuilds_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), cfg(1 << 20)).unwrap().0;
        for i in 0..10 {
            append(&mut log, 3, i);
        }
        drop(log);
        let seg = dir.path().join(crate::storage::segment::file_name(0, "log"));
        let len = std::fs::metadata(&seg).unwrap().len();
        // A torn write: half a batch of garbage at the end.
        let mut data = std::fs::read(&seg).unwrap();
        let torn: Vec<u8> = data[..40].to_vec();
        data.extend_from_slice(&torn);
        std::fs::write(&seg, &data).unwrap();
        std::fs::remove_file(dir.path().join(crate::storage::segment::file_name(0, "index"))).unwrap();
        let (mut log, _) = Log::open(dir.path(), cfg(1 << 20)).unwrap();
        assert_eq!(log.log_end_offset(), 30);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
        assert_eq!(append(&mut log, 1, 99), AppendedOffsets { first_offset: 30, last_offset: 30 });
        assert_eq!(BatchHeader::parse(&log.read(16, 10, 31).unwrap().bytes).unwrap().base_offset, 15);
    }

    #[test]
    fn retention_and_delete_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), LogConfig { retention_ms: 1000, ..cfg(300) }).unwrap().0;
        for i in 0..10 {
            append(&mut log, 4, 1000 + i * 1000);
        }
        let before = log.segment_count();
        let removed = log.apply_retention(8000).unwrap();
        let n = removed.len();
        assert!(n > 0 && log.segment_count() == before - n);
        removed.delete().unwrap();
        assert_eq!(list_segments(dir.path()).unwrap().len(), log.segment_count());
        assert!(log.log_start_offset() > 0);
        assert!(log.read(0, 100, 40).unwrap_err().is_out_of_range());
        log.advance_start(38).unwrap().delete().unwrap();
        assert_eq!(log.log_start_offset(), 38);
        drop(log);
        let log = Log::open(dir.path(), cfg(300)).unwrap().0;
        assert_eq!(log.log_start_offset(), 38);
    }

    #[test]
    fn segments_removed_but_not_deleted_go_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), cfg(300)).unwrap().0;
        for i in 0..10 {
            append(&mut log, 4, i);
        }
        let kept = log.segment_count();
        // A crash after the segments left the log but before their files were unlinked.
        let removed = log.advance_start(30).unwrap();
        assert!(!removed.is_empty());
        let kept = kept - removed.len();
        drop(removed);
        drop(log);
        let (log, headers) = Log::open(dir.path(), cfg(300)).unwrap();
        assert_eq!(log.log_start_offset(), 30);
        assert_eq!(log.segment_count(), kept);
        assert_eq!(list_segments(dir.path()).unwrap().len(), kept);
        assert!(headers.iter().all(|h| h.next_offset() > log.oldest_base_offset()));
    }

    #[test]
    fn retention_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut log =
            Log::open(dir.path(), LogConfig { retention_bytes: 400, retention_ms: -1, ..cfg(200) }).unwrap().0;
        for i in 0..10 {
            append(&mut log, 4, i);
        }
        log.apply_retention(0).unwrap().delete().unwrap();
        assert!(log.size_bytes() <= 400 + 200);
        assert!(log.log_start_offset() > 0);
    }

    #[test]
    fn replica_append_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut leader = Log::open(&dir.path().join("l"), cfg(300)).unwrap().0;
        let mut follower = Log::open(&dir.path().join("f"), cfg(300)).unwrap().0;
        for i in 0..10 {
            let mut b = encode(3, Compression::None, i);
            let r = split_batches(&b, 1 << 20).unwrap();
            leader.append(&mut b, &r, (i / 5) as i32, i).unwrap();
        }
        let mut data = Vec::new();
        while follower.log_end_offset() < 30 {
            data = leader.read(follower.log_end_offset(), 1 << 20, 30).unwrap().bytes;
            let ranges = split_batches(&data, 1 << 20).unwrap();
            follower.append_replica(&data, &ranges, 0).unwrap();
        }
        let ranges = split_batches(&data, 1 << 20).unwrap();
        assert_eq!(follower.log_end_offset(), 30);
        assert_eq!(follower.end_offset_for_epoch(0), EpochEnd { epoch: 0, end_offset: 15 });
        assert!(follower.append_replica(&data, &ranges, 0).is_err(), "a gap or overlap is refused");
        follower.truncate_to(15).unwrap();
        assert_eq!(follower.log_end_offset(), 15);
        assert_eq!(follower.latest_epoch(), Some(EpochEntry { epoch: 0, start_offset: 0 }));
        let mut n = 0;
        follower.for_each_header(&mut |_| n += 1).unwrap();
        assert_eq!(n, 5);
        drop(follower);
        let follower = Log::open(&dir.path().join("f"), cfg(300)).unwrap().0;
        assert_eq!(follower.log_end_offset(), 15);
    }

    #[test]
    fn epochs() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), cfg(1 << 20)).unwrap().0;
        let mut b = encode(2, Compression::None, 1);
        let r = split_batches(&b, 1 << 20).unwrap();
        log.append(&mut b, &r, 0, 1).unwrap();
        let mut b = encode(2, Compression::None, 1);
        log.append(&mut b, &r, 3, 1).unwrap();
        let end = |epoch, end_offset| EpochEnd { epoch, end_offset };
        assert_eq!(log.end_offset_for_epoch(0), end(0, 2));
        assert_eq!(log.end_offset_for_epoch(2), end(0, 2));
        assert_eq!(log.end_offset_for_epoch(5), end(3, 4));
        assert_eq!(log.end_offset_for_epoch(-2), end(-1, -1));
    }
}
