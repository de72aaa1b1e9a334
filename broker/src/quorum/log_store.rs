//! Durable Raft log and vote: one append-only file of length-prefixed, crc32c-checked records.
//!
//! All file IO happens on one dedicated thread, in submission order, so a vote, a truncation
//! and the appends around them reach the disk in the order openraft issued them, and several
//! appends queued behind one fsync share it. The in-memory copy is updated before the IO is
//! queued because openraft requires appended entries to be readable when `append` returns.

// openraft's StorageError is large, and it is the error type its storage traits require.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::types::{io_err, Entry, LogId, StorageError, TypeConfig, Vote};

const LOG_FILE: &str = "raft.log";
const LOG_TMP: &str = "raft.log.tmp";
const LOCK_FILE: &str = "LOCK";
/// Larger than any record we write; a bigger length prefix can only be garbage.
const MAX_RECORD: usize = 256 << 20;
const HEADER: usize = 8;
/// Entries per record when compacting, so no single record grows with the log.
const COMPACT_CHUNK: usize = 256;

#[derive(Serialize, Deserialize)]
enum Record {
    Vote(Vote),
    Entries(Vec<Entry>),
    /// Remove entries at and after this index.
    Truncate(u64),
    Purge(LogId),
    Committed(Option<LogId>),
}

#[derive(Default)]
struct Mem {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
}

impl Mem {
    fn apply(&mut self, rec: Record) {
        match rec {
            Record::Vote(v) => self.vote = Some(v),
            Record::Entries(es) => {
                if let Some(first) = es.first() {
                    // An append overwrites whatever followed it, which keeps replay correct even
                    // if a truncation record was lost with a torn tail.
                    self.entries.split_off(&first.log_id.index);
                }
                for e in es {
                    self.entries.insert(e.log_id.index, e);
                }
            }
            Record::Truncate(idx) => {
                self.entries.split_off(&idx);
            }
            Record::Purge(lid) => {
                self.entries = self.entries.split_off(&(lid.index + 1));
                if self.last_purged < Some(lid) {
                    self.last_purged = Some(lid);
                }
            }
            Record::Committed(c) => self.committed = c,
        }
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.entries.values().next_back().map(|e| e.log_id).or(self.last_purged)
    }

    /// The whole state as records, for rewriting the file after a purge.
    fn image(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::new();
        if let Some(v) = self.vote {
            encode_into(&mut out, &Record::Vote(v))?;
        }
        if let Some(p) = self.last_purged {
            encode_into(&mut out, &Record::Purge(p))?;
        }
        encode_into(&mut out, &Record::Committed(self.committed))?;
        let all: Vec<Entry> = self.entries.values().cloned().collect();
        for chunk in all.chunks(COMPACT_CHUNK) {
            encode_into(&mut out, &Record::Entries(chunk.to_vec()))?;
        }
        Ok(out)
    }
}

fn encode_into(out: &mut Vec<u8>, rec: &Record) -> Result<(), serde_json::Error> {
    let payload = serde_json::to_vec(rec)?;
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

fn encode(rec: &Record) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::new();
    encode_into(&mut out, rec).map_err(io_err)?;
    Ok(out)
}

/// Replay records; returns the state and the length of the valid prefix.
fn replay(buf: &[u8]) -> (Mem, usize) {
    let mut mem = Mem::default();
    let mut off = 0;
    while buf.len() - off >= HEADER {
        let len = u32::from_be_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
        let crc = u32::from_be_bytes(buf[off + 4..off + 8].try_into().unwrap());
        if len > MAX_RECORD || buf.len() - off - HEADER < len {
            break;
        }
        let payload = &buf[off + HEADER..off + HEADER + len];
        if crc32c::crc32c(payload) != crc {
            break;
        }
        match serde_json::from_slice::<Record>(payload) {
            Ok(rec) => mem.apply(rec),
            Err(_) => break,
        }
        off += HEADER + len;
    }
    (mem, off)
}

enum Done {
    /// Durability not needed (a lagging committed index is still a valid lower bound).
    Nothing,
    Flushed(LogFlushed<TypeConfig>),
    Ack(oneshot::Sender<io::Result<()>>),
}

impl Done {
    fn needs_sync(&self) -> bool {
        !matches!(self, Done::Nothing)
    }

    fn complete(self, res: &io::Result<()>) {
        let res = match res {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        match self {
            Done::Nothing => {}
            Done::Flushed(cb) => cb.log_io_completed(res),
            Done::Ack(tx) => {
                let _ = tx.send(res);
            }
        }
    }
}

enum Op {
    Append(Vec<u8>, Done),
    /// Replace the whole file with this image (after a purge).
    Rewrite(Vec<u8>, Done),
}

struct Writer {
    dir: PathBuf,
    file: File,
    /// After a failed write the file may end in a partial record; refuse further IO so nothing
    /// is acknowledged on top of it. openraft treats the error as fatal and stops.
    failed: Option<String>,
    _lock: File,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Op>, exited: oneshot::Sender<()>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            let mut pending: Vec<Done> = Vec::new();
            let mut res = self.check();
            for op in batch {
                match op {
                    Op::Append(bytes, done) => {
                        if res.is_ok() {
                            res = self.file.write_all(&bytes);
                        }
                        pending.push(done);
                    }
                    Op::Rewrite(image, done) => {
                        res = self.finish(res, std::mem::take(&mut pending));
                        if res.is_ok() {
                            res = self.rewrite(&image);
                        }
                        self.note(&res);
                        done.complete(&res);
                    }
                }
            }
            self.finish(res, pending).ok();
        }
        drop(self);
        let _ = exited.send(());
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some(e) => Err(io::Error::other(format!("log file unusable after earlier error: {e}"))),
            None => Ok(()),
        }
    }

    fn note(&mut self, res: &io::Result<()>) {
        if let Err(e) = res {
            if self.failed.is_none() {
                tracing::error!(error = %e, "quorum log write failed");
                self.failed = Some(e.to_string());
            }
        }
    }

    /// fsync if anything in `pending` needs it, then complete them all.
    fn finish(&mut self, mut res: io::Result<()>, pending: Vec<Done>) -> io::Result<()> {
        if res.is_ok() && pending.iter().any(Done::needs_sync) {
            res = self.file.sync_data();
        }
        self.note(&res);
        for d in pending {
            d.complete(&res);
        }
        res
    }

    fn rewrite(&mut self, image: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join(LOG_TMP);
        let mut f = File::create(&tmp)?;
        f.write_all(image)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, self.dir.join(LOG_FILE))?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new().append(true).open(self.dir.join(LOG_FILE))?;
        Ok(())
    }
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub struct LogStore {
    mem: Arc<RwLock<Mem>>,
    tx: mpsc::Sender<Op>,
}

#[derive(Clone)]
pub struct LogReader {
    mem: Arc<RwLock<Mem>>,
}

impl LogReader {
    pub fn committed(&self) -> Option<LogId> {
        self.mem.read().committed
    }
}

impl LogStore {
    /// Open (or create) the log in `dir`. The returned receiver fires once the writer thread
    /// has exited, i.e. the directory lock is released and every queued write is on disk.
    pub fn open(dir: &Path) -> anyhow::Result<(LogStore, oneshot::Receiver<()>)> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE))?;
        lock.try_lock()
            .map_err(|e| anyhow::anyhow!("quorum dir {} is in use by another process: {e}", dir.display()))?;
        // A leftover temp file is a compaction that crashed before its rename: the old log is
        // still complete.
        let _ = std::fs::remove_file(dir.join(LOG_TMP));

        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new().create(true).truncate(false).read(true).append(true).open(&path)?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let (mem, valid) = replay(&buf);
        if valid < buf.len() {
            tracing::warn!(
                dropped_bytes = buf.len() - valid,
                "quorum log ends in a torn or corrupt record; truncating it"
            );
            file.set_len(valid as u64)?;
            file.sync_all()?;
        }
        sync_dir(dir)?;
        tracing::info!(
            entries = mem.entries.len(),
            last_purged = ?mem.last_purged,
            last_log = ?mem.last_log_id(),
            "quorum log opened"
        );

        let (tx, rx) = mpsc::channel();
        let (exited_tx, exited_rx) = oneshot::channel();
        let writer = Writer { dir: dir.to_path_buf(), file, failed: None, _lock: lock };
        std::thread::Builder::new().name("quorum-log".into()).spawn(move || writer.run(rx, exited_tx))?;
        Ok((LogStore { mem: Arc::new(RwLock::new(mem)), tx }, exited_rx))
    }

    pub fn reader(&self) -> LogReader {
        LogReader { mem: self.mem.clone() }
    }

    fn submit(&self, op: Op) -> Result<(), StorageError> {
        self.tx.send(op).map_err(|_| io_err("quorum log writer has stopped"))
    }

    /// Queue a write and wait until it is durable.
    async fn durable(&self, op: impl FnOnce(Done) -> Op) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.submit(op(Done::Ack(tx)))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_err(e)),
            Err(_) => Err(io_err("quorum log writer has stopped")),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.mem.read().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.reader().try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mem = self.mem.read();
        Ok(LogState { last_purged_log_id: mem.last_purged, last_log_id: mem.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = encode(&Record::Vote(*vote))?;
        self.mem.write().vote = Some(*vote);
        self.durable(|d| Op::Append(bytes, d)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.mem.read().vote)
    }

    /// Persisting it lets a restarted node re-apply its committed tail at once, before it hears
    /// from a leader.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = encode(&Record::Committed(committed))?;
        self.mem.write().committed = committed;
        self.submit(Op::Append(bytes, Done::Nothing))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.mem.read().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rec = Record::Entries(entries.into_iter().collect());
        let bytes = encode(&rec)?;
        self.mem.write().apply(rec);
        self.submit(Op::Append(bytes, Done::Flushed(callback)))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let rec = Record::Truncate(log_id.index);
        let bytes = encode(&rec)?;
        self.mem.write().apply(rec);
        self.durable(|d| Op::Append(bytes, d)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let image = {
            let mut mem = self.mem.write();
            mem.apply(Record::Purge(log_id));
            mem.image().map_err(io_err)?
        };
        self.durable(|d| Op::Rewrite(image, d)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, 1), index), payload: EntryPayload::Blank }
    }

    #[test]
    fn replay_stops_at_torn_tail_and_honours_truncate_and_purge() {
        let mut buf = Vec::new();
        encode_into(&mut buf, &Record::Entries((1..=10).map(|i| entry(1, i)).collect())).unwrap();
        encode_into(&mut buf, &Record::Truncate(8)).unwrap();
        encode_into(&mut buf, &Record::Purge(entry(1, 3).log_id)).unwrap();
        let good = buf.len();
        encode_into(&mut buf, &Record::Entries(vec![entry(2, 8)])).unwrap();
        buf.truncate(buf.len() - 3);
        let (mem, valid) = replay(&buf);
        assert_eq!(valid, good);
        assert_eq!(mem.entries.keys().copied().collect::<Vec<_>>(), (4..=7).collect::<Vec<_>>());
        assert_eq!(mem.last_purged.unwrap().index, 3);

        // A flipped bit in the payload is caught by the checksum.
        let mut bad = buf[..good].to_vec();
        bad[HEADER + 5] ^= 1;
        assert_eq!(replay(&bad).1, 0);
        // A huge length prefix is rejected without allocating.
        assert_eq!(replay(&[0xff; 16]).1, 0);
    }
}
