//! Pre-vote (the Raft thesis, section 9.6; Kafka's KIP-996): a voter that lost its leader
//! asks the other voters whether they would vote for it before it starts an election.
//!
//! openraft 0.9 has no pre-vote. A voter cut off from the others campaigned on every election
//! timeout, raising its term each time; once the network healed, that term deposed the
//! healthy leader (and a restarted voter did the same before it heard the leader). So
//! openraft's own election timer is off (`elect(false)`) on every voter of a multi-voter
//! quorum, and `run` starts elections: only after a randomized timeout without a leader, and
//! only when a majority grants the pre-vote. A voter grants it when it has neither heard from
//! a leader nor granted a vote within the maximum election timeout (openraft's own vote lease:
//! a voter refuses real votes for that long, and a pre-vote that wins must not lead to an
//! election that fails and leaves a raised term behind), is not a leader (one elected but not
//! yet acknowledged counts), and the candidate's log is at least as up to date as its own.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use super::membership::Core;
use super::network::{Pool, Request, Response};
use super::types::LogId;

pub(super) struct Timeouts {
    pub min: Duration,
    pub max: Duration,
}

/// Whether `core` would vote for a candidate whose last log id is `candidate_last_log`.
pub(super) fn grant(core: &Core, candidate_last_log: Option<LogId>, timeouts: &Timeouts) -> bool {
    if core.last_heard.lock().is_some_and(|t| t.elapsed() < timeouts.max) {
        return false;
    }
    let leading = {
        let m = core.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader
            && m.millis_since_quorum_ack.is_none_or(|ms| ms < timeouts.max.as_millis() as u64)
    };
    let mine = core.raft.data_metrics().borrow().last_log;
    !leading && candidate_last_log >= mine
}

/// Start elections for this voter until `stop` turns true (see the module comment).
pub(super) async fn run(core: Arc<Core>, pool: Arc<Pool>, timeouts: Timeouts, mut stop: watch::Receiver<bool>) {
    let tick = (timeouts.min / 10).max(Duration::from_millis(10));
    let mut since = Instant::now();
    let mut due = random_timeout(&timeouts);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (leading, voters) = {
            let m = core.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            let voters: Vec<(u64, String)> =
                membership.voter_ids().filter_map(|v| Some((v, membership.get_node(&v)?.addr.clone()))).collect();
            (m.state == ServerState::Leader, voters)
        };
        if leading || !voters.iter().any(|(v, _)| *v == core.id) {
            since = Instant::now();
            continue;
        }
        let heard = *core.last_heard.lock();
        let quiet_since = heard.map_or(since, |h| h.max(since));
        if quiet_since.elapsed() < due {
            continue;
        }
        since = Instant::now();
        due = random_timeout(&timeouts);
        let last_log = core.raft.data_metrics().borrow().last_log;
        let round = Instant::now();
        let mut asks = tokio::task::JoinSet::new();
        for (_, addr) in voters.iter().filter(|(v, _)| *v != core.id) {
            let (pool, addr) = (pool.clone(), addr.clone());
            let req = Request::PreVote { candidate: core.id, last_log };
            let wait = timeouts.min / 2;
            asks.spawn(async move { matches!(pool.call(&addr, &req, wait).await, Ok(Response::PreVote(true))) });
        }
        let mut granted = 1;
        while granted * 2 <= voters.len() {
            match asks.join_next().await {
                Some(Ok(true)) => granted += 1,
                Some(_) => {}
                None => break,
            }
        }
        asks.abort_all();
        // A leader was heard, or a vote granted, while asking: another node won meanwhile,
        // and campaigning now would depose it.
        let overtaken = core.last_heard.lock().is_some_and(|h| h >= round);
        if granted * 2 > voters.len() && !overtaken {
            tracing::info!(node = core.id, granted, voters = voters.len(), "pre-vote won; starting an election");
            if let Err(e) = core.raft.trigger().elect().await {
                tracing::warn!(error = %e, "could not start an election");
                return;
            }
        } else {
            tracing::debug!(node = core.id, granted, overtaken, "pre-vote lost; no election");
        }
    }
}

/// Between the maximum election timeout (before which the other voters refuse) and that plus
/// the spread of the configured timeouts.
fn random_timeout(t: &Timeouts) -> Duration {
    let spread = (t.max - t.min.min(t.max)).max(Duration::from_millis(1));
    t.max + Duration::from_millis(rand::rng().random_range(0..spread.as_millis() as u64))
}
