//! openraft state machine adapter around the opaque `Machine`, plus the snapshot file.
//!
//! The Machine lives in memory only; durability comes from the snapshot file and the log.
//! A snapshot carries, besides the Machine's bytes, the write-dedup table, so a writer's retry
//! of an already-committed command is recognised on every node, before and after restarts.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::log_store::sync_dir;
use super::types::{io_err, Entry, LogId, Resp, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use super::{Machine, StaleDecision};

const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_TMP: &str = "snapshot.tmp";
/// How many recent command ids are remembered. A writer retries within its timeout, during
/// which far fewer metadata writes than this are committed.
const DEDUP_WINDOW: usize = 4096;

type WriteId = (u64, u64);

#[derive(Clone, Default)]
struct Dedup {
    order: VecDeque<WriteId>,
    results: HashMap<WriteId, Vec<u8>>,
}

impl Dedup {
    fn insert(&mut self, id: WriteId, out: Vec<u8>) {
        if self.results.insert(id, out).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > DEDUP_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.results.remove(&old);
            }
        }
    }

    fn to_list(&self) -> Vec<(WriteId, Resp)> {
        self.order.iter().map(|id| (*id, Resp(self.results[id].clone()))).collect()
    }

    fn from_list(list: Vec<(WriteId, Resp)>) -> Self {
        let mut d = Dedup::default();
        for (id, r) in list {
            d.insert(id, r.0);
        }
        d
    }
}

/// Snapshot body: u32 length + dedup table (json), then the Machine's bytes verbatim.
fn encode_body(dedup: &Dedup, machine: &[u8]) -> Vec<u8> {
    let table = serde_json::to_vec(&dedup.to_list()).expect("dedup table serializes");
    let mut out = Vec::with_capacity(4 + table.len() + machine.len());
    out.extend_from_slice(&(table.len() as u32).to_be_bytes());
    out.extend_from_slice(&table);
    out.extend_from_slice(machine);
    out
}

fn decode_body(body: &[u8]) -> anyhow::Result<(Dedup, &[u8])> {
    anyhow::ensure!(body.len() >= 4, "snapshot body too short");
    let n = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
    anyhow::ensure!(body.len() - 4 >= n, "snapshot body truncated");
    let list: Vec<(WriteId, Resp)> = serde_json::from_slice(&body[4..4 + n])?;
    Ok((Dedup::from_list(list), &body[4 + n..]))
}

#[derive(Clone)]
struct Stored {
    meta: SnapshotMeta,
    body: Vec<u8>,
}

impl Stored {
    fn to_snapshot(&self) -> Snapshot<TypeConfig> {
        Snapshot { meta: self.meta.clone(), snapshot: Box::new(Cursor::new(self.body.clone())) }
    }
}

/// File layout: crc32c of the rest, u32 meta length, meta json, body.
fn write_file(dir: &Path, s: &Stored) -> std::io::Result<()> {
    let meta = serde_json::to_vec(&s.meta)?;
    let mut rest = Vec::with_capacity(4 + meta.len() + s.body.len());
    rest.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    rest.extend_from_slice(&meta);
    rest.extend_from_slice(&s.body);
    let tmp = dir.join(SNAPSHOT_TMP);
    let mut f = File::create(&tmp)?;
    f.write_all(&crc32c::crc32c(&rest).to_be_bytes())?;
    f.write_all(&rest)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    sync_dir(dir)
}

fn read_file(dir: &Path) -> anyhow::Result<Option<Stored>> {
    let buf = match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // The file only ever appears by rename after fsync, so damage here is real corruption,
    // and the log before it is gone: refuse to start rather than silently lose state.
    anyhow::ensure!(buf.len() >= 8, "snapshot file truncated");
    let crc = u32::from_be_bytes(buf[..4].try_into().unwrap());
    anyhow::ensure!(crc32c::crc32c(&buf[4..]) == crc, "snapshot file checksum mismatch");
    let n = u32::from_be_bytes(buf[4..8].try_into().unwrap()) as usize;
    anyhow::ensure!(buf.len() - 8 >= n, "snapshot meta truncated");
    let meta: SnapshotMeta = serde_json::from_slice(&buf[8..8 + n])?;
    Ok(Some(Stored { meta, body: buf[8 + n..].to_vec() }))
}

/// Persist `s` unless an equal or newer snapshot already is; a build that started before an
/// install from the leader may finish after it.
fn persist(dir: &Path, current: &Mutex<Option<Stored>>, s: Stored) -> std::io::Result<()> {
    let mut cur = current.lock();
    if let Some(c) = cur.as_ref() {
        if c.meta.last_log_id >= s.meta.last_log_id {
            return Ok(());
        }
    }
    write_file(dir, &s)?;
    *cur = Some(s);
    Ok(())
}

async fn persist_async(dir: PathBuf, current: Arc<Mutex<Option<Stored>>>, s: Stored) -> Result<(), StorageError> {
    tokio::task::spawn_blocking(move || persist(&dir, &current, s)).await.map_err(io_err)?.map_err(io_err)
}

pub struct StateMachine {
    machine: Arc<dyn Machine>,
    dir: PathBuf,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    dedup: Dedup,
    current: Arc<Mutex<Option<Stored>>>,
    applied_tx: watch::Sender<u64>,
}

impl StateMachine {
    /// Restore the Machine from the latest snapshot in `dir`, if any; openraft then re-applies
    /// the committed log after it.
    pub fn open(dir: &Path, machine: Arc<dyn Machine>, applied_tx: watch::Sender<u64>) -> anyhow::Result<Self> {
        let _ = std::fs::remove_file(dir.join(SNAPSHOT_TMP));
        let stored = read_file(dir)?;
        let mut sm = StateMachine {
            machine,
            dir: dir.to_path_buf(),
            last_applied: None,
            membership: StoredMembership::default(),
            dedup: Dedup::default(),
            current: Arc::new(Mutex::new(None)),
            applied_tx,
        };
        if let Some(s) = stored {
            let (dedup, bytes) = decode_body(&s.body)?;
            sm.machine.restore(bytes)?;
            sm.dedup = dedup;
            sm.last_applied = s.meta.last_log_id;
            sm.membership = s.meta.last_membership.clone();
            tracing::info!(last = ?s.meta.last_log_id, "quorum state restored from snapshot");
            *sm.current.lock() = Some(s);
        }
        sm.applied_tx.send_replace(sm.last_applied.map_or(0, |l| l.index));
        Ok(sm)
    }
}

pub struct Builder {
    dir: PathBuf,
    current: Arc<Mutex<Option<Stored>>>,
    snap: Stored,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        persist_async(self.dir.clone(), self.current.clone(), self.snap.clone()).await?;
        tracing::info!(last = ?self.snap.meta.last_log_id, bytes = self.snap.body.len(), "quorum snapshot built");
        Ok(self.snap.to_snapshot())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Resp>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for e in entries {
            self.last_applied = Some(e.log_id);
            let r = match e.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(cmd) => match cmd.id.and_then(|id| self.dedup.results.get(&id)) {
                    Some(prev) => prev.clone(),
                    None => {
                        let index = e.log_id.index;
                        let entry_term = e.log_id.leader_id.term;
                        let r = match cmd.decided_term {
                            Some(decided_term) if decided_term < entry_term => {
                                self.machine.reject_stale(index, StaleDecision { decided_term, entry_term })
                            }
                            _ => self.machine.apply(index, &cmd.data),
                        };
                        if let Some(id) = cmd.id {
                            self.dedup.insert(id, r.clone());
                        }
                        r
                    }
                },
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    Vec::new()
                }
            };
            out.push(Resp(r));
        }
        if let Some(l) = self.last_applied {
            self.applied_tx.send_replace(l.index);
        }
        Ok(out)
    }

    /// Captures the state here rather than in `build_snapshot`, because openraft runs the
    /// builder in a separate task while it keeps applying entries.
    async fn get_snapshot_builder(&mut self) -> Builder {
        let nonce = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let id = match self.last_applied {
            Some(l) => format!("{}-{}-{nonce}", l.leader_id, l.index),
            None => format!("none-{nonce}"),
        };
        let meta =
            SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone(), snapshot_id: id };
        let body = encode_body(&self.dedup, &self.machine.snapshot());
        Builder { dir: self.dir.clone(), current: self.current.clone(), snap: Stored { meta, body } }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let body = snapshot.into_inner();
        let (dedup, bytes) = decode_body(&body).map_err(io_err)?;
        self.machine.restore(bytes).map_err(io_err)?;
        self.dedup = dedup;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        persist_async(self.dir.clone(), self.current.clone(), Stored { meta: meta.clone(), body }).await?;
        tracing::info!(last = ?meta.last_log_id, "quorum snapshot installed from leader");
        self.applied_tx.send_replace(self.last_applied.map_or(0, |l| l.index));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.current.lock().as_ref().map(Stored::to_snapshot))
    }
}
