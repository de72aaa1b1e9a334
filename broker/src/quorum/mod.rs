//! Raft metadata quorum on openraft 0.9: durable log, snapshotting state machine adapter
//! around an opaque `Machine`, and a small TCP transport that also carries application RPCs.

mod election;
mod log_store;
mod membership;
mod network;
mod state_machine;
mod types;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, ServerState, SnapshotPolicy};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use election::Timeouts;
use log_store::{LogReader, LogStore};
use membership::Core;
use network::{CallError, NetFactory, Pool, Request, Response, Service, WriteReply};
use state_machine::StateMachine;
use types::{Cmd, Raft, RaftMetrics};

/// The leader's answer to an application request, and which node the leader was.
#[derive(Debug)]
pub struct LeaderReply {
    #[cfg_attr(not(test), allow(dead_code))] // the tests check who answered; the broker needs only the body
    pub leader: u64,
    pub body: Vec<u8>,
}

/// Why an application request failed, and whether it certainly never reached the target
/// (then it may be retried without being delivered twice).
#[derive(Debug)]
struct CallFailure {
    error: QuorumError,
    undelivered: bool,
}

pub struct QuorumConfig {
    pub node_id: u64,
    /// Voters: node id -> "host:port" of its quorum (controller) listener. Fixed at bootstrap.
    pub voters: BTreeMap<u64, String>,
    /// Where this node binds its quorum RPC listener (voters and learners both have one).
    pub listen: std::net::SocketAddr,
    /// "host:port" other nodes use to reach this node's quorum listener.
    pub advertised: String,
    /// Durable state (vote, log, snapshot) lives here; created if missing.
    pub dir: std::path::PathBuf,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// Build a snapshot (and purge the log before it) after this many applied entries.
    pub snapshot_every: u64,
}

/// The replicated state machine, as bytes in and out.
pub trait Machine: Send + Sync + 'static {
    /// Apply one committed command (in log order, once each per process lifetime; after a
    /// restart replay starts from the last snapshot). Returns the bytes handed to the writer.
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8>;
    /// Serialize the whole state (called to build a snapshot).
    fn snapshot(&self) -> Vec<u8>;
    /// Replace the whole state with a snapshot.
    fn restore(&self, snapshot: &[u8]) -> anyhow::Result<()>;
    /// A committed command that a leader decided in an older term than the one whose leader
    /// appended it (written with `Quorum::write_decided`): it must not change the state.
    /// Called in its place, in log order like `apply`; returns the bytes handed to the writer.
    fn reject_stale(&self, index: u64, stale: StaleDecision) -> Vec<u8>;
}

/// A decision that reached the log after its leader was deposed: a controller cut off from
/// the other voters that kept deciding, and whose write was forwarded to the new leader
/// once the network healed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleDecision {
    /// The term in which the deposed leader decided the command.
    pub decided_term: u64,
    /// The term of the leader that appended it to the log.
    pub entry_term: u64,
}

/// Application RPCs that ride on the quorum transport.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, from: u64, request: Vec<u8>) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;
}

#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("no leader is known")]
    NoLeader,
    #[error("timed out")]
    Timeout,
    #[error("node {0} is not a known quorum member")]
    UnknownNode(u64),
    #[error("transport error: {0}")]
    Transport(String),
    #[error("remote error: {0}")]
    Remote(String),
    #[error("quorum stopped: {0}")]
    Fatal(String),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct QuorumStatus {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_log_index: u64,
    pub committed: u64,
    pub applied: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// On the leader: matched log index per follower/learner (None when unknown).
    pub replication: BTreeMap<u64, Option<u64>>,
}

/// Check quorum: a leader counts as leader only while a majority of voters has acknowledged
/// it within `duration` (openraft reports the age of the last quorum acknowledgement; openraft
/// 0.9 itself never steps a leader down for silence). A leader cut off from the other voters
/// then stops deciding and stops naming itself, within one election timeout, while the
/// others elect a new one.
struct Lease {
    duration: Duration,
    /// When a majority last acknowledged this node as leader; None when it is not leader.
    acked: Mutex<Option<Instant>>,
}

impl Lease {
    fn observe(&self, m: &RaftMetrics) {
        let now = Instant::now();
        *self.acked.lock() = m.millis_since_quorum_ack.and_then(|ms| now.checked_sub(Duration::from_millis(ms)));
    }

    fn held(&self, id: u64, m: &RaftMetrics) -> bool {
        let mut voters = m.membership_config.membership().voter_ids();
        // A single voter is its own majority; openraft reports its acknowledgement only
        // when something else changes, so its age means nothing.
        if voters.next() == Some(id) && voters.next().is_none() {
            return true;
        }
        self.acked.lock().is_some_and(|t| t.elapsed() <= self.duration)
    }
}

pub struct Quorum {
    id: u64,
    lease: Arc<Lease>,
    voters: BTreeMap<u64, String>,
    core: Arc<Core>,
    pool: Arc<Pool>,
    log: LogReader,
    leader_rx: watch::Receiver<Option<u64>>,
    applied_rx: watch::Receiver<u64>,
    stop_tx: watch::Sender<bool>,
    /// Random per process start, so write ids never repeat across restarts.
    incarnation: u64,
    next_write: AtomicU64,
    server: Mutex<Option<JoinHandle<()>>>,
    leader_task: Mutex<Option<JoinHandle<()>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    log_closed: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Quorum {
    /// Open durable state, bind the listener, start openraft. See `membership::bootstrap` for how a voter
    /// with empty storage forms the cluster. A node not in `voters` is a learner and keeps
    /// asking to be added until it is a member.
    pub async fn start(
        cfg: QuorumConfig,
        machine: Arc<dyn Machine>,
        handler: Arc<dyn Handler>,
    ) -> anyhow::Result<Arc<Quorum>> {
        anyhow::ensure!(!cfg.voters.is_empty(), "quorum needs at least one voter");
        anyhow::ensure!(cfg.snapshot_every > 0, "snapshot_every must be positive");
        let raft_cfg = Config {
            cluster_name: "fjord-metadata".into(),
            election_timeout_min: cfg.election_timeout_min_ms,
            election_timeout_max: cfg.election_timeout_max_ms,
            heartbeat_interval: cfg.heartbeat_interval_ms,
            // The default is sized for chunked transfer; ours is one frame of up to 64 MiB.
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            // A short tail lets a slightly lagging follower catch up from the log, not a snapshot.
            max_in_snapshot_log_to_keep: (cfg.snapshot_every / 2).min(256),
            ..Default::default()
        }
        .validate()?;

        // Bind first so a busy port fails before any state is touched.
        let listener = TcpListener::bind(cfg.listen).await?;
        let (log, log_closed) = LogStore::open(&cfg.dir)?;
        let log_reader = log.reader();
        let (applied_tx, applied_rx) = watch::channel(0);
        let sm = StateMachine::open(&cfg.dir, machine, applied_tx)?;
        let pool = Arc::new(Pool::default());
        let net = NetFactory { id: cfg.node_id, pool: pool.clone() };
        let raft = Raft::new(cfg.node_id, Arc::new(raft_cfg), net, log, sm).await?;

        let timeouts = || Timeouts {
            min: Duration::from_millis(cfg.election_timeout_min_ms),
            max: Duration::from_millis(cfg.election_timeout_max_ms),
        };
        let core = Arc::new(Core {
            id: cfg.node_id,
            raft: raft.clone(),
            handler,
            last_heard: Mutex::new(None),
            timeouts: timeouts(),
        });
        let timeouts = timeouts();
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(network::serve(listener, core.clone(), stop_rx.clone()));
        let (leader_tx, leader_rx) = watch::channel(None);
        let lease =
            Arc::new(Lease { duration: Duration::from_millis(cfg.election_timeout_max_ms), acked: Mutex::new(None) });
        let leader_task = tokio::spawn(watch_leader(raft.clone(), leader_tx, lease.clone()));
        let incarnation = {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(cfg.node_id);
            h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos());
            h.finish()
        };
        let q = Arc::new(Quorum {
            id: cfg.node_id,
            lease,
            voters: cfg.voters.clone(),
            core,
            pool,
            log: log_reader,
            leader_rx,
            applied_rx,
            stop_tx,
            incarnation,
            next_write: AtomicU64::new(0),
            server: Mutex::new(Some(server)),
            leader_task: Mutex::new(Some(leader_task)),
            tasks: Mutex::new(Vec::new()),
            log_closed: Mutex::new(Some(log_closed)),
        });

        let is_voter = cfg.voters.contains_key(&cfg.node_id);
        if is_voter && cfg.voters.len() > 1 {
            // Elections only after a won pre-vote (election.rs): openraft's own timer would
            // let a voter cut off from the others, or just restarted, depose a healthy leader.
            raft.runtime_config().elect(false);
            let elections = election::run(q.core.clone(), q.pool.clone(), timeouts, stop_rx.clone());
            q.tasks.lock().push(tokio::spawn(elections));
        }
        if is_voter {
            let probe_timeout = Duration::from_millis(cfg.election_timeout_min_ms);
            let res = membership::bootstrap(q.id, &q.voters, &raft, &q.pool, probe_timeout).await;
            if let Err(e) = res {
                q.shutdown().await;
                return Err(e);
            }
        } else {
            let join = membership::join_loop(cfg.node_id, cfg.advertised, cfg.voters, raft, q.pool.clone(), stop_rx);
            q.tasks.lock().push(tokio::spawn(join));
        }
        tracing::info!(node = cfg.node_id, listen = %cfg.listen, voter = is_voter, "quorum started");
        Ok(q)
    }

    /// Replicate and apply `command`; returns Machine::apply's output once committed.
    /// Forwards to the leader and retries across leader changes until `timeout`. Each command
    /// carries a unique id, so a resend after an ambiguous failure is applied at most once.
    pub async fn write(&self, command: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, QuorumError> {
        self.write_cmd(command, None, timeout).await
    }

    /// `write` for a decision this node took as leader in `term` (from `leader_term`). It
    /// keeps that term when forwarded; if a later leader appends it, every node hands it to
    /// `Machine::reject_stale` instead of applying it.
    pub async fn write_decided(&self, command: Vec<u8>, term: u64, timeout: Duration) -> Result<Vec<u8>, QuorumError> {
        self.write_cmd(command, Some(term), timeout).await
    }

    async fn write_cmd(
        &self,
        command: Vec<u8>,
        decided_term: Option<u64>,
        timeout: Duration,
    ) -> Result<Vec<u8>, QuorumError> {
        let deadline = Instant::now() + timeout;
        let id = Some((self.incarnation, self.next_write.fetch_add(1, Ordering::Relaxed)));
        let cmd = Cmd { id, data: command, decided_term };
        let mut leader_rx = self.leader_rx.clone();
        // A leader named by the node we just tried, which may know better than we do.
        let mut hint: Option<u64> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let hinted = hint.is_some();
            let leader = hint.take().or(*leader_rx.borrow_and_update());
            if remaining.is_zero() {
                return Err(if leader.is_none() { QuorumError::NoLeader } else { QuorumError::Timeout });
            }
            let Some(leader) = leader else {
                let _ = tokio::time::timeout(remaining, leader_rx.changed()).await;
                continue;
            };
            let reply = if leader == self.id {
                self.core.local_write(cmd.clone(), remaining).await
            } else {
                let Some(addr) = self.addr_of(leader) else {
                    return Err(QuorumError::UnknownNode(leader));
                };
                let req = Request::Write { cmd: cmd.clone(), timeout_ms: remaining.as_millis() as u64 };
                match self.pool.call(&addr, &req, remaining).await {
                    Ok(Response::Write(r)) => r,
                    Ok(_) => WriteReply::Err("unexpected response".into()),
                    Err(CallError::Timeout) => WriteReply::Timeout,
                    Err(e) => {
                        tracing::debug!(leader, error = %e, "forwarded write failed; retrying");
                        WriteReply::NotLeader(None)
                    }
                }
            };
            match reply {
                WriteReply::Ok(r) => return Ok(r.0),
                WriteReply::Timeout => return Err(QuorumError::Timeout),
                WriteReply::Err(e) if leader == self.id => return Err(QuorumError::Fatal(e)),
                // Follow one hint, not a chain: two nodes naming each other must not spin.
                WriteReply::NotLeader(Some(l)) if l != leader && !hinted => hint = Some(l),
                // A remote failure (e.g. the leader shutting down) or a stale leader: wait a
                // moment for news of a new leader, then resend.
                WriteReply::Err(_) | WriteReply::NotLeader(_) => {
                    let pause = remaining.min(Duration::from_millis(50));
                    let _ = tokio::time::timeout(pause, leader_rx.changed()).await;
                }
            }
        }
    }

    /// The leader as this node knows it; never itself while it does not hold the lease.
    pub fn leader(&self) -> Option<u64> {
        let leader = *self.leader_rx.borrow();
        if leader == Some(self.id) && !self.is_leader() {
            return None;
        }
        leader
    }

    /// Leader, and acknowledged by a majority of voters within an election timeout.
    pub fn is_leader(&self) -> bool {
        self.leader_term().is_some()
    }

    /// The term in which this node leads, while it holds the lease: the epoch of the
    /// decisions it takes now (see `write_decided`).
    pub fn leader_term(&self) -> Option<u64> {
        let m = self.core.raft.metrics();
        let m = m.borrow();
        let leads = m.state == ServerState::Leader && m.current_leader == Some(self.id) && self.lease.held(self.id, &m);
        leads.then_some(m.current_term)
    }

    /// Index of the last entry applied to the local Machine (advances on every node).
    #[allow(dead_code)] // quorum API; the broker uses call_leader and MetadataStore's own watch
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied_rx.clone()
    }

    /// Changes whenever the known leader changes.
    #[allow(dead_code)] // quorum API; the broker uses call_leader and MetadataStore's own watch
    pub fn leader_watch(&self) -> watch::Receiver<Option<u64>> {
        self.leader_rx.clone()
    }

    /// An application RPC to node `target` (voter or learner), answered by its Handler.
    /// Delivery is at-least-once in a rare case (see `Pool::call`): keep handlers idempotent.
    #[allow(dead_code)] // quorum API; the broker uses call_leader and MetadataStore's own watch
    pub async fn call(&self, target: u64, request: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, QuorumError> {
        self.call_app(target, request, timeout).await.map_err(|f| f.error)
    }

    /// The same, to whichever node is leader now. Retries only while there is no leader or
    /// it cannot be connected to; an error after the request may have been delivered is
    /// returned, not retried.
    pub async fn call_leader(&self, request: Vec<u8>, timeout: Duration) -> Result<LeaderReply, QuorumError> {
        let deadline = Instant::now() + timeout;
        let mut leader_rx = self.leader_rx.clone();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let leader = *leader_rx.borrow_and_update();
            if remaining.is_zero() {
                return Err(if leader.is_none() { QuorumError::NoLeader } else { QuorumError::Timeout });
            }
            let pause = match leader {
                None => remaining,
                Some(l) => match self.call_app(l, request.clone(), remaining).await {
                    Ok(body) => return Ok(LeaderReply { leader: l, body }),
                    Err(CallFailure { undelivered: true, .. }) => remaining.min(Duration::from_millis(50)),
                    Err(f) => return Err(f.error),
                },
            };
            let _ = tokio::time::timeout(pause, leader_rx.changed()).await;
        }
    }

    async fn call_app(&self, target: u64, request: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, CallFailure> {
        let maybe_delivered = |error| CallFailure { error, undelivered: false };
        if target == self.id {
            let fut = self.core.handler.handle(self.id, request);
            return tokio::time::timeout(timeout, fut).await.map_err(|_| maybe_delivered(QuorumError::Timeout));
        }
        let addr = self.addr_of(target).ok_or(maybe_delivered(QuorumError::UnknownNode(target)))?;
        let req = Request::App { from: self.id, body: request, timeout_ms: timeout.as_millis() as u64 };
        match self.pool.call(&addr, &req, timeout).await {
            Ok(Response::App(body)) => Ok(body),
            Ok(Response::Error(e)) => Err(maybe_delivered(QuorumError::Remote(e))),
            Ok(_) => Err(maybe_delivered(QuorumError::Remote("unexpected response".into()))),
            Err(CallError::Timeout) => Err(maybe_delivered(QuorumError::Timeout)),
            Err(e @ CallError::Connect(_)) => {
                Err(CallFailure { error: QuorumError::Transport(e.to_string()), undelivered: true })
            }
            Err(e) => Err(maybe_delivered(QuorumError::Transport(e.to_string()))),
        }
    }

    fn addr_of(&self, id: u64) -> Option<String> {
        let m = self.core.raft.metrics();
        let from_membership = m.borrow().membership_config.membership().get_node(&id).map(|n| n.addr.clone());
        from_membership.or_else(|| self.voters.get(&id).cloned())
    }

    pub fn status(&self) -> QuorumStatus {
        let m = self.core.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        QuorumStatus {
            node_id: self.id,
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed: self.log.committed().map_or(0, |c| c.index),
            applied: *self.applied_rx.borrow(),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            replication: m
                .replication
                .unwrap_or_default()
                .into_iter()
                .filter(|(id, _)| *id != self.id)
                .map(|(id, l)| (id, l.map(|l| l.index)))
                .collect(),
        }
    }

    /// Stop serving, stop openraft, and wait until the log is closed and the listener is
    /// unbound, so the same directory and port can be reopened right away.
    pub async fn shutdown(&self) {
        self.stop_tx.send_replace(true);
        let server = self.server.lock().take();
        if let Some(server) = server {
            let _ = server.await;
        }
        if let Err(e) = self.core.raft.shutdown().await {
            tracing::warn!(error = %e, "openraft shutdown");
        }
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        // It publishes `None` once openraft's metrics close, so watchers see the node stop.
        let leader_task = self.leader_task.lock().take();
        if let Some(mut t) = leader_task {
            if tokio::time::timeout(Duration::from_secs(1), &mut t).await.is_err() {
                t.abort();
            }
        }
        self.pool.clear();
        let closed = self.log_closed.lock().take();
        if let Some(closed) = closed {
            if tokio::time::timeout(Duration::from_secs(10), closed).await.is_err() {
                tracing::warn!("quorum log writer did not stop within 10s");
            }
        }
    }
}

impl Drop for Quorum {
    /// Dropping without `shutdown` must not leave openraft and the listener running unowned.
    fn drop(&mut self) {
        if self.stop_tx.send_replace(true) {
            return; // `shutdown` already ran
        }
        for t in self.tasks.get_mut().drain(..) {
            t.abort();
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let raft = self.core.raft.clone();
            rt.spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }
}

/// Mirror openraft's metrics into a watch that changes only when the leader does, and into
/// the lease (openraft publishes metrics on every turn of its loop, heartbeats included).
async fn watch_leader(raft: Raft, tx: watch::Sender<Option<u64>>, lease: Arc<Lease>) {
    let mut m = raft.metrics();
    loop {
        let leader = {
            let m = m.borrow_and_update();
            lease.observe(&m);
            m.current_leader
        };
        tx.send_if_modified(|cur| std::mem::replace(cur, leader) != leader);
        if m.changed().await.is_err() {
            tx.send_replace(None);
            return;
        }
    }
}
