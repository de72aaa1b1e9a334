//! Sparse per-segment indexes, as in Kafka: the offset index maps a relative offset to a
//! byte position, the time index maps a max timestamp to a relative offset. Both are kept in
//! memory and appended to a file; a missing or inconsistent file is rebuilt from the log.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Result;

/// Fixed-size entries appended to a file and mirrored in memory.
#[derive(Debug)]
struct EntryFile {
    path: PathBuf,
    file: Option<File>,
}

impl EntryFile {
    fn open(path: PathBuf) -> Self {
        EntryFile { path, file: None }
    }

    fn read_all(&self, entry_len: usize) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        File::open(&self.path).ok()?.read_to_end(&mut buf).ok()?;
        (buf.len() % entry_len == 0).then_some(buf)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        if self.file.is_none() {
            self.file = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        }
        self.file.as_mut().unwrap().write_all(bytes)?;
        Ok(())
    }

    fn rewrite(&mut self, bytes: &[u8]) -> Result<()> {
        self.file = None;
        std::fs::write(&self.path, bytes)?;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        if let Some(f) = &self.file {
            f.sync_data()?;
        }
        Ok(())
    }

    fn sync_handle(&self, out: &mut Vec<File>) -> Result<()> {
        if let Some(f) = &self.file {
            out.push(f.try_clone()?);
        }
        Ok(())
    }
}

/// A fixed-size index entry: two big-endian numbers.
trait Entry: Copy {
    const LEN: usize;
    fn encode(&self) -> Vec<u8>;
    fn decode(b: &[u8]) -> Self;
}

impl Entry for (u32, u32) {
    const LEN: usize = 8;
    fn encode(&self) -> Vec<u8> {
        self.0.to_be_bytes().into_iter().chain(self.1.to_be_bytes()).collect()
    }
    fn decode(b: &[u8]) -> Self {
        (u32::from_be_bytes(b[0..4].try_into().unwrap()), u32::from_be_bytes(b[4..8].try_into().unwrap()))
    }
}

impl Entry for (i64, u32) {
    const LEN: usize = 12;
    fn encode(&self) -> Vec<u8> {
        self.0.to_be_bytes().into_iter().chain(self.1.to_be_bytes()).collect()
    }
    fn decode(b: &[u8]) -> Self {
        (i64::from_be_bytes(b[0..8].try_into().unwrap()), u32::from_be_bytes(b[8..12].try_into().unwrap()))
    }
}

/// Entries strictly increasing in both fields, kept in memory and appended to a file.
#[derive(Debug)]
struct Sparse<E> {
    entries: Vec<E>,
    file: EntryFile,
}

impl<E: Entry + PartialOrd> Sparse<E> {
    fn new(path: &Path) -> Self {
        Sparse { entries: Vec::new(), file: EntryFile::open(path.to_path_buf()) }
    }

    fn load(path: &Path, ordered: impl Fn(&E, &E) -> bool) -> Option<Self> {
        let raw = EntryFile::open(path.to_path_buf()).read_all(E::LEN)?;
        let entries: Vec<E> = raw.chunks_exact(E::LEN).map(E::decode).collect();
        entries
            .windows(2)
            .all(|w| ordered(&w[0], &w[1]))
            .then(|| Sparse { entries, file: EntryFile::open(path.to_path_buf()) })
    }

    fn append(&mut self, e: E) -> Result<()> {
        self.entries.push(e);
        self.file.append(&e.encode())
    }

    /// Keep only the first `keep` entries.
    fn truncate(&mut self, keep: usize) -> Result<()> {
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            let bytes: Vec<u8> = self.entries.iter().flat_map(|e| e.encode()).collect();
            self.file.rewrite(&bytes)?;
        }
        Ok(())
    }
}

fn both_increase<A: PartialOrd, B: PartialOrd>(a: &(A, B), b: &(A, B)) -> bool {
    a.0 < b.0 && a.1 < b.1
}

/// Offset index: (offset relative to the segment base, byte position in the segment).
#[derive(Debug)]
pub struct OffsetIndex(Sparse<(u32, u32)>);

impl OffsetIndex {
    pub fn new(path: &Path) -> Self {
        OffsetIndex(Sparse::new(path))
    }

    /// Load from disk; `None` when absent or damaged (the caller rebuilds it).
    pub fn load(path: &Path, segment_len: u64) -> Option<Self> {
        let s = Sparse::load(path, both_increase)?;
        s.entries.last().is_none_or(|e| (e.1 as u64) < segment_len).then_some(OffsetIndex(s))
    }

    pub fn append(&mut self, rel_offset: u32, position: u32) -> Result<()> {
        if self.0.entries.last().is_some_and(|e| e.0 >= rel_offset) {
            return Ok(());
        }
        self.0.append((rel_offset, position))
    }

    /// Position of the last indexed batch starting at or before `rel_offset`.
    pub fn lookup(&self, rel_offset: u32) -> u32 {
        match self.0.entries.partition_point(|e| e.0 <= rel_offset) {
            0 => 0,
            i => self.0.entries[i - 1].1,
        }
    }

    /// Position of the last indexed batch (0 when the index is empty).
    pub fn last_position(&self) -> u32 {
        self.0.entries.last().map_or(0, |e| e.1)
    }

    /// Drop entries at or past `position` (log truncation).
    pub fn truncate_to_position(&mut self, position: u32) -> Result<()> {
        let keep = self.0.entries.partition_point(|e| e.1 < position);
        self.0.truncate(keep)
    }

    pub fn sync(&mut self) -> Result<()> {
        self.0.file.sync()
    }

    pub fn sync_handle(&self, out: &mut Vec<File>) -> Result<()> {
        self.0.file.sync_handle(out)
    }
}

/// Time index: (max timestamp seen so far, relative offset of the batch holding it).
#[derive(Debug)]
pub struct TimeIndex(Sparse<(i64, u32)>);

impl TimeIndex {
    pub fn new(path: &Path) -> Self {
        TimeIndex(Sparse::new(path))
    }

    pub fn load(path: &Path) -> Option<Self> {
        Sparse::load(path, both_increase).map(TimeIndex)
    }

    pub fn append(&mut self, timestamp: i64, rel_offset: u32) -> Result<()> {
        if self.0.entries.last().is_some_and(|e| e.0 >= timestamp || e.1 >= rel_offset) {
            return Ok(());
        }
        self.0.append((timestamp, rel_offset))
    }

    /// The largest timestamp indexed: the segment's max timestamp, as an entry is written
    /// whenever it grows.
    pub fn last_timestamp(&self) -> Option<i64> {
        self.0.entries.last().map(|e| e.0)
    }

    /// Relative offset from which to scan for the first batch with max timestamp >= `ts`.
    pub fn lookup(&self, ts: i64) -> u32 {
        match self.0.entries.partition_point(|e| e.0 < ts) {
            0 => 0,
            i => self.0.entries[i - 1].1,
        }
    }

    pub fn truncate_to_offset(&mut self, rel_offset: u32) -> Result<()> {
        let keep = self.0.entries.partition_point(|e| e.1 < rel_offset);
        self.0.truncate(keep)
    }

    pub fn sync(&mut self) -> Result<()> {
        self.0.file.sync()
    }

    pub fn sync_handle(&self, out: &mut Vec<File>) -> Result<()> {
        self.0.file.sync_handle(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_round_trip_and_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.index");
        let mut idx = OffsetIndex::new(&p);
        idx.append(0, 0).unwrap();
        idx.append(10, 4096).unwrap();
        idx.append(20, 8192).unwrap();
        assert_eq!(idx.lookup(15), 4096);
        assert_eq!(idx.lookup(9), 0);
        let loaded = OffsetIndex::load(&p, 10_000).unwrap();
        assert_eq!(loaded.lookup(25), 8192);
        assert!(OffsetIndex::load(&p, 5000).is_none(), "entry past the log end is damage");
        idx.truncate_to_position(8192).unwrap();
        assert_eq!(OffsetIndex::load(&p, 10_000).unwrap().lookup(25), 4096);
    }

    #[test]
    fn time_index_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = TimeIndex::new(&dir.path().join("0.timeindex"));
        t.append(100, 0).unwrap();
        t.append(200, 5).unwrap();
        assert_eq!(t.lookup(150), 0);
        assert_eq!(t.lookup(250), 5);
        assert_eq!(t.lookup(50), 0);
    }
}
