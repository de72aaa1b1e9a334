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
use super::snapshot;
use super::txn_index::AbortedTxn;

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
    /// Producer state snapshots below the new first segment.
    snapshots: Vec<PathBuf>,
}

impl RemovedSegments {
    fn new(segments: Vec<Segment>, snapshots: Vec<PathBuf>) -> Self {
        RemovedSegments { segments, renamed: false, snapshots }
    }

    fn deleted(segments: Vec<Segment>) -> Self {
        RemovedSegments { segments, renamed: true, snapshots: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Delete the files. Blocking: call from `spawn_blocking` or `block_in_place`.
    pub fn delete(self) -> Result<()> {
        for p in &self.snapshots {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
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
    /// Aborted transactions in marker order, from the segments' `.txnindex` files.
    aborted: Vec<AbortedTxn>,
    /// Base offset of the active segment when the last producer state snapshot was taken:
    /// a roll since then makes the next one due.
    snapshot_base: Option<i64>,
    /// A `.txnindex` write failed: no snapshot may be taken (see `note_aborted`).
    txn_index_damaged: bool,
    /// How the last open went (for its log line and tests).
    pub opened: OpenReport,
}

/// What opening a log read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Segments opened from their indexes, without reading their batches.
    pub lazy_segments: usize,
    /// Segments whose every batch header was read.
    pub scanned_segments: usize,
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
/// Kafka's name and format: a version line (0), a count line, then `epoch start_offset`.
const EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

fn read_epochs(dir: &Path) -> Option<Vec<EpochEntry>> {
    let text = std::fs::read_to_string(dir.join(EPOCH_CHECKPOINT_FILE)).ok()?;
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let n: usize = lines.next()?.trim().parse().ok()?;
    let entries: Vec<EpochEntry> = lines
        .map(|l| {
            let (e, o) = l.trim().split_once(' ')?;
            Some(EpochEntry { epoch: e.parse().ok()?, start_offset: o.parse().ok()? })
        })
        .collect::<Option<_>>()?;
    (entries.len() == n
        && entries.windows(2).all(|w| w[0].epoch < w[1].epoch && w[0].start_offset <= w[1].start_offset))
    .then_some(entries)
}

fn write_epochs(dir: &Path, epochs: &[EpochEntry]) -> Result<()> {
    let mut text = format!("0\n{}\n", epochs.len());
    for e in epochs {
        text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
    }
    write_atomically(&dir.join(EPOCH_CHECKPOINT_FILE), &text)
}

/// The cleaner checkpoint file: the clean offset, then the earliest delete horizon of a
/// kept tombstone or marker if there is one (the log needs cleaning then; it is written
/// here because a lazily opened segment is not read for its batches' horizons).
fn read_cleaner_checkpoint(dir: &Path) -> (i64, Option<i64>) {
    let text = std::fs::read_to_string(dir.join(CLEANER_CHECKPOINT_FILE)).unwrap_or_default();
    let mut words = text.split_whitespace().map(|w| w.parse::<i64>().ok());
    (words.next().flatten().unwrap_or(0), words.next().flatten())
}

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
    /// Open (or create) the log in `dir`. The active segment is recovered (every batch's
    /// CRC checked, a torn tail cut); the closed ones are opened from their indexes
    /// (`Segment::open_lazy`) when the leader epoch checkpoint is there to say what their
    /// batches' epochs were, and read through otherwise (a log written before it existed,
    /// or a damaged index). Producer state is not rebuilt here: see `for_each_header_from`
    /// and the snapshot methods.
    pub fn load(dir: &Path, config: LogConfig) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        recover_cleaning(dir)?;
        let bases = list_segments(dir)?;
        let (stored_clean, stored_horizon) = read_cleaner_checkpoint(dir);
        let mut next_delete_horizon: Option<i64> = stored_horizon;
        let mut segments = BTreeMap::new();
        let stored_epochs = read_epochs(dir);
        let lazy_allowed = stored_epochs.is_some();
        let mut epochs: Vec<EpochEntry> = stored_epochs.unwrap_or_default();
        let mut report = OpenReport::default();
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
            if !active && lazy_allowed {
                if let Some(seg) = Segment::open_lazy(dir, *base, config.index_interval)? {
                    report.lazy_segments += 1;
                    segments.insert(*base, seg);
                    continue;
                }
            }
            report.scanned_segments += 1;
            let seg = Segment::open(dir, *base, config.index_interval, active, &mut |h: &BatchHeader| {
                push_epoch(&mut epochs, h.partition_leader_epoch, h.base_offset);
                if h.attributes & DELETE_HORIZON_FLAG != 0 {
                    next_delete_horizon =
                        Some(next_delete_horizon.map_or(h.base_timestamp, |t| t.min(h.base_timestamp)));
                }
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
        let cleaner_checkpoint = stored_clean.clamp(log_start_offset, log_end_offset);
        // What a torn tail took away is not in the log any more.
        epochs.retain(|e| e.start_offset < log_end_offset);
        if read_epochs(dir).as_deref() != Some(&epochs[..]) {
            write_epochs(dir, &epochs)?;
        }
        let mut aborted = Vec::new();
        for seg in segments.iter() {
            aborted.extend(seg.txn_index.load()?);
        }
        aborted.retain(|a: &AbortedTxn| a.last_offset >= log_start_offset);
        // Snapshots of a longer log (a tail cut since) or of removed segments are stale.
        snapshot::delete_unless(dir, |o| o >= first_base && o <= log_end_offset)?;
        let active_base = segments.active().base_offset;
        let snapshot_base = snapshot::list(dir)?.last().is_some_and(|o| *o >= active_base).then_some(active_base);
        let mut log = Log {
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
            aborted,
            snapshot_base,
            txn_index_damaged: false,
            opened: report,
        };
        // An abort marker cut off with a torn tail takes its index entry with it.
        log.forget_aborted_from(log_end_offset)?;
        Ok(log)
    }

    /// `load`, collecting the headers (tests).
    #[cfg(test)]
    pub fn open(dir: &Path, config: LogConfig) -> Result<(Self, Vec<BatchHeader>)> {
        let log = Self::load(dir, config)?;
        let mut headers = Vec::new();
        log.for_each_header_from(0, &mut |h| headers.push(*h))?;
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
    #[cfg(test)]
    pub fn segments_active_base(&self) -> i64 {
        self.segments.active().base_offset
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
    /// (creating files), fsyncs (`flush.messages`) or takes a producer state snapshot. Callers on a runtime worker then run
    /// the append in `block_in_place`; a plain append is a page-cache write.
    pub fn append_may_block(&self, incoming: usize, now_ms: i64) -> bool {
        self.config.flush_messages.is_some() || self.roll_due(incoming, now_ms) || self.snapshot_due()
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
            self.note_epoch(leader_epoch, h.base_offset);
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
            self.note_epoch(h.partition_leader_epoch, h.base_offset);
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
        write_epochs(&self.dir, &self.epochs)?;
        self.cleaner_checkpoint = self.cleaner_checkpoint.min(leo);
        self.forget_aborted_from(leo)?;
        // A snapshot past the cut describes a history this log no longer has.
        snapshot::delete_unless(&self.dir, |o| o <= leo)?;
        self.snapshot_base = None;
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
        write_epochs(&self.dir, &self.epochs)?;
        self.aborted.clear();
        snapshot::delete_unless(&self.dir, |_| false)?;
        self.snapshot_base = None;
        std::fs::write(self.dir.join(LOG_START_FILE), offset.to_string())?;
        Ok(())
    }

    /// Every batch header from the batch starting at or after `offset`, in order
    /// (rebuilding producer state from a snapshot at `offset`).
    pub fn for_each_header_from(&self, offset: i64, f: &mut dyn FnMut(&BatchHeader)) -> Result<()> {
        for seg in self.segments.starting_at(offset) {
            seg.for_each_header(&mut |h| {
                if h.base_offset >= offset {
                    f(h)
                }
            })?;
        }
        Ok(())
    }

    /// Record that `epoch` starts at `offset` if it is newer than the last one known, in
    /// memory and in the leader epoch checkpoint (closed segments are not read at open).
    /// The batch is already written: a failed checkpoint write must not fail the append, and
    /// the file is removed instead, so the next open reads every segment for the epochs.
    fn note_epoch(&mut self, epoch: i32, offset: i64) {
        if push_epoch(&mut self.epochs, epoch, offset) {
            if let Err(e) = write_epochs(&self.dir, &self.epochs) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "leader epoch checkpoint write failed; the next start reads the whole log");
                let _ = std::fs::remove_file(self.dir.join(EPOCH_CHECKPOINT_FILE));
            }
        }
    }

    /// The aborted transactions a read of `[from, upper)` overlaps (Kafka's
    /// `collectAbortedTxns`).
    pub fn aborted_in(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..].iter().filter(|a| a.first_offset < upper).copied().collect()
    }

    /// An abort marker was written at `t.last_offset`: index it in its segment. The marker
    /// is already in the log, so a failed index write does not fail it: snapshots stop
    /// instead, and the next open replays the whole log and writes the index again.
    pub fn note_aborted(&mut self, t: AbortedTxn) {
        let at = self.aborted.partition_point(|a| a.last_offset < t.last_offset);
        if self.aborted.get(at).is_some_and(|a| a.last_offset == t.last_offset) {
            return;
        }
        self.aborted.insert(at, t);
        let written = if at + 1 == self.aborted.len() {
            self.segments.holding_mut(t.last_offset).txn_index.append(&t)
        } else {
            self.rewrite_txn_indexes_from(t.last_offset)
        };
        if let Err(e) = written {
            tracing::warn!(dir = %self.dir.display(), error = %e, "transaction index write failed; the next start replays the whole log");
            self.txn_index_damaged = true;
            let _ = snapshot::delete_unless(&self.dir, |_| false);
        }
    }

    /// Forget the aborted transactions whose marker is at or after `offset` (a truncation,
    /// or a replay from a snapshot at `offset` that finds them again).
    pub fn forget_aborted_from(&mut self, offset: i64) -> Result<()> {
        let keep = self.aborted.partition_point(|a| a.last_offset < offset);
        if keep == self.aborted.len() {
            return Ok(());
        }
        self.aborted.truncate(keep);
        self.rewrite_txn_indexes_from(offset)
    }

    /// Rewrite the `.txnindex` files of the segment holding `offset` and every later one
    /// from the entries in memory.
    fn rewrite_txn_indexes_from(&mut self, offset: i64) -> Result<()> {
        let bases: Vec<i64> = self.segments.starting_at(offset).map(|s| s.base_offset).collect();
        for (i, base) in bases.iter().enumerate() {
            let end = bases.get(i + 1).copied().unwrap_or(i64::MAX);
            let lo = self.aborted.partition_point(|a| a.last_offset < *base);
            let hi = self.aborted.partition_point(|a| a.last_offset < end);
            let seg = self.segments.holding_mut(*base);
            seg.txn_index.rewrite(&self.aborted[lo..hi])?;
            seg.txn_index.reopen();
        }
        Ok(())
    }

    /// Whether a producer state snapshot is due: the log rolled since the last one (Kafka
    /// takes one at every roll), or there is none for the active segment.
    pub fn snapshot_due(&self) -> bool {
        self.snapshot_base != Some(self.segments.active().base_offset)
    }

    /// Store a producer state snapshot as of the log end offset; its fsync runs with the
    /// rolled segment's, after the caller's lock is released.
    pub fn write_snapshot(&mut self, body: &[u8]) -> Result<()> {
        if self.txn_index_damaged {
            return Ok(());
        }
        let f = snapshot::write(&self.dir, self.log_end_offset, body)?;
        self.pending_sync.push(f);
        self.snapshot_base = Some(self.segments.active().base_offset);
        Ok(())
    }

    /// The newest snapshot `decode` accepts, with its offset (at most the log end offset:
    /// older ones than a cut tail were deleted).
    pub fn latest_snapshot<T>(&self, decode: impl Fn(&[u8]) -> Option<T>) -> Result<Option<(i64, T)>> {
        for o in snapshot::list(&self.dir)?.into_iter().rev() {
            if o > self.log_end_offset || o < self.segments.oldest().base_offset {
                continue;
            }
            match snapshot::read(&self.dir, o).as_deref().and_then(&decode) {
                Some(state) => return Ok(Some((o, state))),
                None => {
                    tracing::warn!(dir = %self.dir.display(), offset = o, "skipping an unreadable producer state snapshot")
                }
            }
        }
        Ok(None)
    }

    /// Snapshots below the first segment, once the segments before it are removed.
    fn stale_snapshots(&self) -> Result<Vec<PathBuf>> {
        let first = self.segments.oldest().base_offset;
        snapshot::select(&self.dir, |o| o >= first)
    }

    /// Forget aborted transactions wholly below the log start.
    fn prune_aborted(&mut self) {
        let n = self.aborted.partition_point(|a| a.last_offset < self.log_start_offset);
        self.aborted.drain(..n);
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
        self.prune_aborted();
        let snapshots = if removed.is_empty() { Vec::new() } else { self.stale_snapshots()? };
        Ok(RemovedSegments::new(removed, snapshots))
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
        if removed.is_empty() {
            return Ok(RemovedSegments::default());
        }
        std::fs::write(self.dir.join(LOG_START_FILE), self.log_start_offset.to_string())?;
        self.prune_aborted();
        Ok(RemovedSegments::new(removed, self.stale_snapshots()?))
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
                for ext in ["index", "timeindex", "txnindex"] {
                    let _ = std::fs::remove_file(self.dir.join(file_name(*base, ext)));
                }
            }
            dir_sync()?;
            std::fs::rename(swap, self.dir.join(file_name(g.base_offset, "log")))?;
            dir_sync()?;
            let seg = Segment::open(&self.dir, g.base_offset, self.config.index_interval, false, &mut |_| {})?;
            removed.extend(self.segments.replace(seg, g.end_offset));
            // The markers' entries stay: a transaction may have batches in later segments.
            let lo = self.aborted.partition_point(|a| a.last_offset < g.base_offset);
            let hi = self.aborted.partition_point(|a| a.last_offset < g.end_offset);
            self.segments.holding_mut(g.base_offset).txn_index.rewrite(&self.aborted[lo..hi])?;
        }
        self.cleaner_checkpoint = cleaned.clean_up_to.max(self.cleaner_checkpoint);
        let checkpoint = match cleaned.next_delete_horizon {
            Some(h) => format!("{} {h}", self.cleaner_checkpoint),
            None => self.cleaner_checkpoint.to_string(),
        };
        write_atomically(&self.dir.join(CLEANER_CHECKPOINT_FILE), &checkpoint)?;
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

/// Record that `epoch` starts at `offset` if it is newer than the last one known; true
/// when it was.
fn push_epoch(epochs: &mut Vec<EpochEntry>, epoch: i32, offset: i64) -> bool {
    let newer = epochs.last().is_none_or(|e| epoch > e.epoch);
    if newer {
        epochs.push(EpochEntry { epoch, start_offset: offset });
    }
    newer
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
        follower.for_each_header_from(0, &mut |_| n += 1).unwrap();
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

    type Observed = (i64, i64, Vec<(i64, i64, i64)>, Vec<EpochEntry>, Option<TimestampOffset>);

    /// What a reader sees of a log, to compare a lazy open with a full one.
    fn observed(log: &Log) -> Observed {
        let segs = log.segments.iter().map(|s| (s.base_offset, s.next_offset, s.max_timestamp)).collect();
        (log.log_start_offset(), log.log_end_offset(), segs, log.epochs.clone(), log.max_timestamp())
    }

    #[test]
    fn closed_segments_open_from_their_indexes_as_a_full_read_would() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), cfg(400)).unwrap().0;
        for i in 0..30 {
            let mut b = encode(3, Compression::None, 1000 + (i * 7) % 11);
            let r = split_batches(&b, 1 << 20).unwrap();
            log.append(&mut b, &r, (i / 10) as i32, 1000).unwrap();
        }
        let segments = log.segment_count();
        assert!(segments > 4, "{segments}");
        let before = observed(&log);
        drop(log);
        let (lazy, headers) = Log::open(dir.path(), cfg(400)).unwrap();
        assert_eq!(lazy.opened, OpenReport { lazy_segments: segments - 1, scanned_segments: 1 });
        assert_eq!(observed(&lazy), before);
        assert_eq!(headers.len(), 30);
        assert_eq!(lazy.end_offset_for_epoch(1), EpochEnd { epoch: 1, end_offset: 60 });
        assert_eq!(lazy.read(31, 1, 90).map(|r| BatchHeader::parse(&r.bytes).unwrap().base_offset).unwrap(), 30);
        drop(lazy);
        // Without the epoch checkpoint every segment is read, with the same result.
        std::fs::remove_file(dir.path().join(EPOCH_CHECKPOINT_FILE)).unwrap();
        let full = Log::open(dir.path(), cfg(400)).unwrap().0;
        assert_eq!(full.opened, OpenReport { lazy_segments: 0, scanned_segments: segments });
        assert_eq!(observed(&full), before);
        assert!(dir.path().join(EPOCH_CHECKPOINT_FILE).exists(), "written again");
    }

    #[test]
    fn a_closed_segment_with_a_torn_tail_or_no_index_is_read_through() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), cfg(400)).unwrap().0;
        for i in 0..12 {
            append(&mut log, 3, 1000 + i);
        }
        let bases: Vec<i64> = log.segments.iter().map(|s| s.base_offset).collect();
        let before = observed(&log);
        drop(log);
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join(file_name(bases[0], "log"))).unwrap();
        f.write_all(&[0u8; 30]).unwrap();
        std::fs::remove_file(dir.path().join(file_name(bases[1], "index"))).unwrap();
        let log = Log::open(dir.path(), cfg(400)).unwrap().0;
        assert_eq!(log.opened.scanned_segments, 3, "the torn one, the unindexed one and the active one");
        assert_eq!(observed(&log), before, "the torn bytes are cut");
    }

    fn aborted(pid: i64, first: i64, last: i64) -> AbortedTxn {
        AbortedTxn { producer_id: pid, first_offset: first, last_offset: last, last_stable_offset: last + 1 }
    }

    #[test]
    fn aborted_transactions_are_indexed_per_segment_and_follow_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), LogConfig { retention_ms: 500, ..cfg(400) }).unwrap().0;
        let mut marks = Vec::new();
        for i in 0..16 {
            let at = append(&mut log, 3, 1000 + i);
            let a = aborted(i, at.first_offset, at.last_offset);
            log.note_aborted(a);
            marks.push(a);
        }
        let bases: Vec<i64> = log.segments.iter().map(|s| s.base_offset).collect();
        assert!(dir.path().join(file_name(bases[1], "txnindex")).exists());
        assert_eq!(log.aborted_in(0, i64::MAX), marks);
        assert_eq!(log.aborted_in(10, 13), vec![marks[3], marks[4]]);
        drop(log);
        let mut log = Log::open(dir.path(), LogConfig { retention_ms: 500, ..cfg(400) }).unwrap().0;
        assert_eq!(log.aborted_in(0, i64::MAX), marks, "loaded from the .txnindex files");
        // A truncation forgets what it cut; a reopen agrees.
        log.truncate_to(30).unwrap();
        assert_eq!(log.aborted_in(0, i64::MAX), marks[..10]);
        drop(log);
        let mut log = Log::open(dir.path(), LogConfig { retention_ms: 500, ..cfg(400) }).unwrap().0;
        assert_eq!(log.aborted_in(0, i64::MAX), marks[..10]);
        // Retention forgets what it removed.
        let removed = log.apply_retention(2000).unwrap();
        assert!(!removed.is_empty());
        removed.delete().unwrap();
        let start = log.log_start_offset();
        assert_eq!(
            log.aborted_in(0, i64::MAX),
            marks[..10].iter().filter(|a| a.last_offset >= start).copied().collect::<Vec<_>>()
        );
    }

    #[test]
    fn snapshots_past_a_truncation_or_below_the_log_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), LogConfig { retention_bytes: 600, ..cfg(400) }).unwrap().0;
        let mut taken = Vec::new();
        for i in 0..16 {
            append(&mut log, 3, 1000 + i);
            if log.snapshot_due() {
                log.write_snapshot(&log.log_end_offset().to_be_bytes()).unwrap();
                taken.push(log.log_end_offset());
            }
        }
        assert!(taken.len() > 3, "{taken:?}");
        let decode = |b: &[u8]| Some(i64::from_be_bytes(b.try_into().ok()?));
        assert_eq!(log.latest_snapshot(decode).unwrap(), Some((taken[taken.len() - 1], taken[taken.len() - 1])));
        let cut = taken[2];
        log.truncate_to(cut - 1).unwrap();
        assert_eq!(snapshot::list(dir.path()).unwrap(), taken[..2]);
        assert!(log.snapshot_due(), "the next append takes one");
        log.apply_retention(2000).unwrap().delete().unwrap();
        let first = log.oldest_base_offset();
        assert!(snapshot::list(dir.path()).unwrap().iter().all(|o| *o >= first));
    }
}
