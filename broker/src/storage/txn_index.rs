//! The aborted-transaction index of a segment (Kafka's `.txnindex`): one entry per
//! transaction whose abort marker is in the segment, so that a `read_committed` fetch can
//! be told which batches to skip without reading the markers. The file has Kafka's layout
//! (34-byte entries: version, producer id, first offset, last offset, last stable offset),
//! so `kafka-dump-log.sh` reads it. It exists only once the segment has an abort.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;

const ENTRY_LEN: usize = 34;
const VERSION: i16 = 0;

/// A transaction that was aborted: `read_committed` consumers skip this producer's batches
/// from `first_offset` up to the marker at `last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The partition's first unstable offset once the marker was written (Kafka keeps it
    /// to know when a search of later segments can stop).
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..2].copy_from_slice(&VERSION.to_be_bytes());
        b[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        b[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        b[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        b[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let i64_at = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        (i16::from_be_bytes([b[0], b[1]]) == VERSION).then(|| AbortedTxn {
            producer_id: i64_at(2),
            first_offset: i64_at(10),
            last_offset: i64_at(18),
            last_stable_offset: i64_at(26),
        })
    }
}

/// A segment's `.txnindex` file. Entries are appended in marker order.
#[derive(Debug)]
pub struct TxnIndex {
    path: PathBuf,
    file: Option<File>,
}

impl TxnIndex {
    pub fn new(path: &Path) -> Self {
        TxnIndex { path: path.to_path_buf(), file: None }
    }

    /// The entries on disk. A torn last entry (a stop mid-write) is cut off; its marker is
    /// past the producer state snapshot the log is replayed from, so replay writes it again.
    pub fn load(&self) -> Result<Vec<AbortedTxn>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let entries: Vec<AbortedTxn> = bytes.chunks_exact(ENTRY_LEN).map_while(AbortedTxn::decode).collect();
        if entries.len() * ENTRY_LEN != bytes.len() {
            tracing::warn!(file = %self.path.display(), kept = entries.len(), "cutting a damaged transaction index");
            self.rewrite(&entries)?;
        }
        Ok(entries)
    }

    pub fn append(&mut self, t: &AbortedTxn) -> Result<()> {
        if self.file.is_none() {
            self.file = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        }
        self.file.as_mut().expect("opened above").write_all(&t.encode())?;
        Ok(())
    }

    /// Replace the file's entries (truncation, a cleaned segment); no entries, no file.
    pub fn rewrite(&self, entries: &[AbortedTxn]) -> Result<()> {
        if entries.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            };
        }
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.encode()).collect();
        std::fs::write(&self.path, bytes)?;
        Ok(())
    }

    /// Forget the open handle after `rewrite` (appends reopen the new file).
    pub fn reopen(&mut self) {
        self.file = None;
    }

    pub fn sync_handle(&self, out: &mut Vec<File>) -> Result<()> {
        if let Some(f) = &self.file {
            out.push(f.try_clone()?);
        }
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        if let Some(f) = &self.file {
            f.sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let mut idx = TxnIndex::new(&path);
        assert!(idx.load().unwrap().is_empty(), "no file, no entries");
        let a = AbortedTxn { producer_id: 7, first_offset: 3, last_offset: 9, last_stable_offset: 10 };
        let b = AbortedTxn { producer_id: 8, first_offset: 12, last_offset: 20, last_stable_offset: 21 };
        idx.append(&a).unwrap();
        idx.append(&b).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 68, "Kafka's 34-byte entries");
        assert_eq!(idx.load().unwrap(), vec![a, b]);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0, 0, 1]).unwrap();
        assert_eq!(idx.load().unwrap(), vec![a, b]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 68);
        idx.rewrite(&[]).unwrap();
        assert!(!path.exists());
    }
}
