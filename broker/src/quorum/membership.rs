//! Cluster formation and membership: bootstrap of voters, learners joining, and the RPC
//! service that answers peers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::election::{self, Timeouts};
use super::network::{LeaderHint, Pool, Request, Response, Service, WriteReply};
use super::types::{Cmd, LogId, Raft};
use super::Handler;

/// The part the RPC server needs; kept apart from `Quorum` so server tasks don't own it.
pub(super) struct Core {
    pub id: u64,
    pub raft: Raft,
    pub handler: Arc<dyn Handler>,
    /// When a leader's AppendEntries (or snapshot) was last accepted, or a vote granted.
    pub last_heard: Mutex<Option<Instant>>,
    /// The election timeouts, for pre-votes (election.rs).
    pub timeouts: Timeouts,
}

impl Service for Core {
    fn leader_heard(&self) {
        *self.last_heard.lock() = Some(Instant::now());
    }

    fn pre_vote(&self, candidate: u64, last_log: Option<LogId>) -> bool {
        let granted = election::grant(self, last_log, &self.timeouts);
        tracing::debug!(node = self.id, candidate, granted, "pre-vote");
        granted
    }

    fn raft(&self) -> &Raft {
        &self.raft
    }

    fn handler(&self) -> &Arc<dyn Handler> {
        &self.handler
    }

    async fn join(&self, id: u64, addr: String) -> Result<(), Option<LeaderHint>> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if m.current_leader != Some(self.id) || m.state != ServerState::Leader {
            let hint =
                m.current_leader.and_then(|l| Some(LeaderHint { id: l, addr: membership.get_node(&l)?.addr.clone() }));
            return Err(hint);
        }
        if membership.voter_ids().any(|v| v == id) || membership.get_node(&id).is_some_and(|n| n.addr == addr) {
            return Ok(());
        }
        tracing::info!(learner = id, %addr, "adding quorum learner");
        match self.raft.add_learner(id, BasicNode::new(addr), false).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(f.leader_id.zip(f.leader_node).map(|(id, n)| LeaderHint { id, addr: n.addr }))
            }
            Err(e) => {
                tracing::warn!(learner = id, error = %e, "add_learner failed");
                Err(None)
            }
        }
    }

    async fn local_write(&self, cmd: Cmd, timeout: Duration) -> WriteReply {
        match tokio::time::timeout(timeout, self.raft.client_write(cmd)).await {
            Err(_) => WriteReply::Timeout,
            Ok(Ok(resp)) => WriteReply::Ok(resp.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => WriteReply::NotLeader(f.leader_id),
            Ok(Err(e)) => WriteReply::Err(e.to_string()),
        }
    }
}

/// A voter with empty storage initializes the cluster with the configured voters, unless
/// another voter already has Raft state. Several voters initializing at once is safe:
/// openraft 0.9 writes the identical entry (log id 0, same membership) on each. Probing
/// first matters for a voter that starts late (or lost its disk): initializing would make
/// it campaign with a stale log and bump terms, deposing a healthy leader; instead it waits
/// to be contacted, and the leader replicates to it as to any lagging member.
pub(super) async fn bootstrap(
    id: u64,
    voters: &BTreeMap<u64, String>,
    raft: &Raft,
    pool: &Arc<Pool>,
    probe_timeout: Duration,
) -> anyhow::Result<()> {
    if raft.is_initialized().await? {
        return Ok(());
    }
    let mut probes = tokio::task::JoinSet::new();
    for (peer, addr) in voters.iter().filter(|(p, _)| **p != id) {
        let (peer, addr, pool) = (*peer, addr.clone(), pool.clone());
        probes.spawn(async move {
            let r = pool.call(&addr, &Request::Probe, probe_timeout).await;
            matches!(r, Ok(Response::Probe(true))).then_some(peer)
        });
    }
    let existing: Vec<u64> = probes.join_all().await.into_iter().flatten().collect();
    if !existing.is_empty() {
        tracing::info!(node = id, peers = ?existing, "joining the existing quorum instead of initializing");
        return Ok(());
    }
    let members: BTreeMap<u64, BasicNode> = voters.iter().map(|(v, addr)| (*v, BasicNode::new(addr))).collect();
    match raft.initialize(members).await {
        Ok(()) => tracing::info!(node = id, "quorum initialized"),
        // Contacted by a voter that initialized first: that is the goal.
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
        Err(e) => anyhow::bail!("quorum initialize failed: {e}"),
    }
    Ok(())
}

/// A learner asks voters (or the leader they point to) to add it, until the membership it has
/// replicated lists it at its current address.
pub(super) async fn join_loop(
    id: u64,
    advertised: String,
    voters: BTreeMap<u64, String>,
    raft: Raft,
    pool: Arc<Pool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut metrics = raft.metrics();
    let mut targets = voters.values().cloned().cycle();
    let mut hint: Option<String> = None;
    loop {
        let member = metrics
            .borrow_and_update()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some_and(|n| n.addr == advertised);
        let pause = if member {
            Duration::from_secs(1)
        } else {
            let addr = hint.take().or_else(|| targets.next()).expect("voters is not empty");
            let req = Request::Join { id, addr: advertised.clone() };
            match pool.call(&addr, &req, Duration::from_secs(2)).await {
                Ok(Response::Join(Ok(()))) => Duration::from_millis(500),
                Ok(Response::Join(Err(leader))) => {
                    hint = leader.map(|l| l.addr);
                    Duration::from_millis(if hint.is_some() { 10 } else { 200 })
                }
                Ok(_) => Duration::from_millis(200),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "quorum join attempt failed");
                    Duration::from_millis(200)
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            r = metrics.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
