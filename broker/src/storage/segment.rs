//! One log segment: `<base offset>.log` plus its `.index`, `.timeindex` and (once it has
//! an abort marker) `.txnindex`, named with the 20-digit zero-padded base offset exactly as
//! Kafka names them.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use super::index::{OffsetIndex, TimeIndex};
use super::txn_index::TxnIndex;

pub fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{:020}.{}", base_offset, ext)
}

/// A batch found in a segment: its byte position and its header.
#[derive(Debug, Clone, Copy)]
pub struct BatchAt {
    pub position: u64,
    pub header: BatchHeader,
}

impl BatchAt {
    /// The whole batch, read from `segment` (the one it was found in).
    pub fn read(&self, segment: &Segment) -> Result<super::log::StoredBatch> {
        let bytes = segment.read_at(self.position, self.header.total_len())?;
        Ok(super::log::StoredBatch { header: self.header, bytes })
    }
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: i64,
    log_path: PathBuf,
    file: File,
    size: u64,
    index: OffsetIndex,
    time_index: TimeIndex,
    /// Offset after the last batch in this segment (the base offset while empty).
    pub next_offset: i64,
    /// Largest batch max timestamp in the segment, -1 while empty.
    pub max_timestamp: i64,
    /// Wall-clock ms when the first batch was appended; drives `segment.ms` rolls.
    pub first_append_ms: Option<i64>,
    /// Max timestamp of the first batch, -1 while empty: how old the segment's oldest
    /// data is (`max.compaction.lag.ms`).
    pub first_timestamp: i64,
    bytes_since_index: u32,
    index_interval: u32,
    pub txn_index: TxnIndex,
}

impl Segment {
    pub fn create(dir: &Path, base_offset: i64, index_interval: u32) -> Result<Self> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let idx_path = dir.join(file_name(base_offset, "index"));
        let tidx_path = dir.join(file_name(base_offset, "timeindex"));
        let txn_path = dir.join(file_name(base_offset, "txnindex"));
        let _ = std::fs::remove_file(&idx_path);
        let _ = std::fs::remove_file(&tidx_path);
        let _ = std::fs::remove_file(&txn_path);
        Ok(Segment {
            base_offset,
            log_path,
            file,
            size: 0,
            index: OffsetIndex::new(&idx_path),
            time_index: TimeIndex::new(&tidx_path),
            next_offset: base_offset,
            max_timestamp: -1,
            first_append_ms: None,
            first_timestamp: -1,
            bytes_since_index: 0,
            index_interval,
            txn_index: TxnIndex::new(&txn_path),
        })
    }

    /// Open a closed segment without reading it through: its indexes are loaded, and only
    /// the batches after the last offset-index entry are walked to find its end (a log of
    /// many segments opens in time that does not grow with its size, as Kafka's does below
    /// its recovery point). `None` when an index is missing or damaged, or the walk does
    /// not end exactly at the file's end (a torn tail): the caller then opens it with
    /// `open`, which reads every batch header and rebuilds.
    pub fn open_lazy(dir: &Path, base_offset: i64, index_interval: u32) -> Result<Option<Self>> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new().read(true).write(true).open(&log_path)?;
        let size = file.metadata()?.len();
        let Some(index) = OffsetIndex::load(&dir.join(file_name(base_offset, "index")), size) else {
            return Ok(None);
        };
        let Some(time_index) = TimeIndex::load(&dir.join(file_name(base_offset, "timeindex"))) else {
            return Ok(None);
        };
        let mtime_ms = modified_ms(&file);
        let mut seg = Segment {
            base_offset,
            log_path,
            file,
            size,
            max_timestamp: time_index.last_timestamp().unwrap_or(-1),
            index,
            time_index,
            next_offset: base_offset,
            first_append_ms: None,
            first_timestamp: -1,
            bytes_since_index: 0,
            index_interval,
            txn_index: TxnIndex::new(&dir.join(file_name(base_offset, "txnindex"))),
        };
        if size == 0 {
            return Ok(Some(seg));
        }
        let mut pos = seg.index.last_position() as u64;
        while pos + HEADER_LEN as u64 <= size {
            let Ok(h) = seg.header_at(pos) else { return Ok(None) };
            if h.magic != 2 || h.batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
                return Ok(None);
            }
            pos += h.total_len() as u64;
            seg.next_offset = h.next_offset();
        }
        if pos != size || seg.next_offset == base_offset {
            return Ok(None);
        }
        seg.first_timestamp = seg.header_at(0)?.max_timestamp;
        seg.first_append_ms = mtime_ms;
        Ok(Some(seg))
    }

    /// Open an existing segment, calling `on_batch` with the header of every batch in it
    /// (headers are streamed, never collected: a log may hold millions of batches).
    ///
    /// With `recover`, every batch's CRC is checked and the file is truncated at the first
    /// torn or corrupt batch (a crash mid-append), and the indexes are rebuilt. Without it,
    /// only headers are read and indexes are rebuilt only when missing or damaged.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        index_interval: u32,
        recover: bool,
        on_batch: &mut dyn FnMut(&BatchHeader),
    ) -> Result<Self> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new().read(true).write(true).open(&log_path)?;
        let file_len = file.metadata()?.len();
        let idx_path = dir.join(file_name(base_offset, "index"));
        let tidx_path = dir.join(file_name(base_offset, "timeindex"));
        let loaded =
            if recover { None } else { OffsetIndex::load(&idx_path, file_len).zip(TimeIndex::load(&tidx_path)) };
        let rebuild = loaded.is_none();
        let (index, time_index) = match loaded {
            Some(v) => v,
            None => {
                let _ = std::fs::remove_file(&idx_path);
                let _ = std::fs::remove_file(&tidx_path);
                (OffsetIndex::new(&idx_path), TimeIndex::new(&tidx_path))
            }
        };
        let mtime_ms = modified_ms(&file);
        let mut reader = BufReader::with_capacity(1 << 16, file.try_clone()?);
        let mut seg = Segment {
            base_offset,
            log_path,
            file,
            size: 0,
            index,
            time_index,
            next_offset: base_offset,
            max_timestamp: -1,
            first_append_ms: None,
            first_timestamp: -1,
            bytes_since_index: 0,
            index_interval,
            txn_index: TxnIndex::new(&dir.join(file_name(base_offset, "txnindex"))),
        };
        let mut pos: u64 = 0;
        let mut hdr = [0u8; HEADER_LEN];
        let mut body = Vec::new();
        while pos + HEADER_LEN as u64 <= file_len {
            reader.read_exact(&mut hdr)?;
            let h = match BatchHeader::parse(&hdr) {
                Ok(h) if h.magic == 2 && h.batch_length >= (HEADER_LEN - LOG_OVERHEAD) as i32 => h,
                _ => break,
            };
            let total = h.total_len() as u64;
            if pos + total > file_len {
                break;
            }
            if recover {
                body.resize(total as usize, 0);
                body[..HEADER_LEN].copy_from_slice(&hdr);
                reader.read_exact(&mut body[HEADER_LEN..])?;
                if batch::validate(&body).is_err() {
                    break;
                }
            } else {
                reader.seek_relative(total as i64 - HEADER_LEN as i64)?;
            }
            seg.note_batch(pos, &h, rebuild)?;
            on_batch(&h);
            pos += total;
        }
        seg.size = pos;
        if pos < file_len {
            tracing::warn!(segment = %seg.log_path.display(), valid = pos, len = file_len, "truncating torn or corrupt log tail");
            seg.file.set_len(pos)?;
            seg.file.sync_all()?;
            seg.index.truncate_to_position(pos as u32)?;
            seg.time_index.truncate_to_offset((seg.next_offset - base_offset) as u32)?;
        }
        if pos > 0 {
            seg.first_append_ms = mtime_ms;
        }
        Ok(seg)
    }

    /// Index bookkeeping for a batch at `position`.
    fn note_batch(&mut self, position: u64, h: &BatchHeader, write_index: bool) -> Result<()> {
        let rel = (h.base_offset - self.base_offset) as u32;
        if write_index && (position == 0 || self.bytes_since_index >= self.index_interval) {
            self.index.append(rel, position as u32)?;
            self.bytes_since_index = 0;
        }
        if write_index && h.max_timestamp > self.max_timestamp {
            self.time_index.append(h.max_timestamp, rel)?;
        }
        if position == 0 {
            self.first_timestamp = h.max_timestamp;
        }
        self.bytes_since_index += h.total_len() as u32;
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        self.next_offset = h.next_offset();
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// This segment as the cleaner reads it, through a handle of its own.
    pub fn source(&self) -> Result<super::cleaner::SourceSegment> {
        Ok(super::cleaner::SourceSegment {
            base_offset: self.base_offset,
            next_offset: self.next_offset,
            size: self.size,
            file: self.file.try_clone()?,
        })
    }

    /// Append one batch whose offsets are already assigned.
    pub fn append(&mut self, batch: &[u8], h: &BatchHeader, now_ms: i64) -> Result<()> {
        let pos = self.size;
        if let Err(e) = self.file.write_all_at(batch, pos) {
            // A partial write (ENOSPC) must not leave bytes a later append would shadow.
            let _ = self.file.set_len(pos);
            return Err(e.into());
        }
        self.size += batch.len() as u64;
        self.first_append_ms.get_or_insert(now_ms);
        // The indexes are derived data, rebuilt on recovery: failing to write one must not
        // fail an append whose bytes are already in the log.
        if let Err(e) = self.note_batch(pos, h, true) {
            tracing::warn!(segment = %self.log_path.display(), error = %e, "index write failed; it is rebuilt at the next start");
            let _ = std::fs::remove_file(self.log_path.with_extension("index"));
            self.next_offset = h.next_offset();
            self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        }
        Ok(())
    }

    /// Read up to `len` bytes from `position`.
    pub fn read_at(&self, position: u64, len: usize) -> Result<Vec<u8>> {
        let len = len.min(self.size.saturating_sub(position) as usize);
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, position)?;
        Ok(buf)
    }

    fn header_at(&self, position: u64) -> Result<BatchHeader> {
        let mut hdr = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut hdr, position)?;
        Ok(BatchHeader::parse(&hdr)?)
    }

    /// The first batch whose last offset is >= `offset`.
    pub fn find_batch(&self, offset: i64) -> Result<Option<BatchAt>> {
        let rel = (offset - self.base_offset).max(0) as u32;
        let mut pos = self.index.lookup(rel) as u64;
        while pos + HEADER_LEN as u64 <= self.size {
            let h = self.header_at(pos)?;
            if h.last_offset() >= offset {
                return Ok(Some(BatchAt { position: pos, header: h }));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// The first batch at or after `min_offset` whose max timestamp is >= `ts`.
    pub fn find_by_timestamp(&self, ts: i64, min_offset: i64) -> Result<Option<BatchAt>> {
        let rel = self.time_index.lookup(ts);
        let from = (self.base_offset + rel as i64).max(min_offset);
        let Some(start) = self.find_batch(from)? else {
            return Ok(None);
        };
        let mut pos = start.position;
        while pos + HEADER_LEN as u64 <= self.size {
            let h = self.header_at(pos)?;
            if h.max_timestamp >= ts {
                return Ok(Some(BatchAt { position: pos, header: h }));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// Cut the segment before the batch holding `offset` (a follower dropping a divergent
    /// tail); the indexes are rebuilt from what remains.
    pub fn truncate_to(&mut self, dir: &Path, offset: i64) -> Result<()> {
        let Some(at) = self.find_batch(offset)? else { return Ok(()) };
        self.file.set_len(at.position)?;
        self.file.sync_all()?;
        // On error `self` stays as it was: its files were only shortened.
        *self = Segment::open(dir, self.base_offset, self.index_interval, true, &mut |_| {})?;
        Ok(())
    }

    /// Every batch header, in order.
    pub fn for_each_header(&self, f: &mut dyn FnMut(&BatchHeader)) -> Result<()> {
        let mut pos = 0;
        while pos + HEADER_LEN as u64 <= self.size {
            let h = self.header_at(pos)?;
            f(&h);
            pos += h.total_len() as u64;
        }
        Ok(())
    }

    /// Handles of this segment's files (new descriptors of the same files), so that an
    /// fsync can run after the partition lock is released (see `PendingSync`).
    pub fn sync_handles(&self, out: &mut Vec<File>) -> Result<()> {
        out.push(self.file.try_clone()?);
        self.index.sync_handle(out)?;
        self.time_index.sync_handle(out)?;
        self.txn_index.sync_handle(out)
    }

    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data()?;
        self.index.sync()?;
        self.time_index.sync()?;
        self.txn_index.sync()
    }

    /// The partition directory this segment is in.
    pub fn dir(&self) -> &Path {
        self.log_path.parent().expect("a segment file is inside its partition directory")
    }

    pub fn delete(self) -> Result<()> {
        let dir = self.log_path.parent().expect("a segment file is inside its partition directory");
        delete_segment_files(dir, self.base_offset)
    }
}

/// When the file was last written, in wall-clock ms: a reopened segment's first append
/// time for `segment.ms` (the file does not say when its first batch came).
fn modified_ms(file: &File) -> Option<i64> {
    let modified = file.metadata().and_then(|m| m.modified()).ok()?;
    Some(modified.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
}

/// Remove the files of the segment at `base_offset`; missing files are not an error.
pub fn delete_segment_files(dir: &Path, base_offset: i64) -> Result<()> {
    for ext in ["log", "index", "timeindex", "txnindex"] {
        match std::fs::remove_file(dir.join(file_name(base_offset, ext))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// Base offsets of the segments in a partition directory, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            if let Ok(o) = stem.parse::<i64>() {
                out.push(o);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}
