//! The active controller: the node that leads the metadata quorum also decides what only
//! a live view can decide. Brokers heartbeat to it; it registers them, unfences them once
//! they have caught up with the metadata log, and fences the ones that stop heartbeating
//! (the image then elects new leaders from the ISR, see `metadata::image`). On a
//! controlled shutdown it moves leadership away before the broker exits.
//!
//! Every decision is a command in the Raft log, so a new controller carries on from the
//! image; only the heartbeat clocks are in memory, and a new controller restarts them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::config::BrokerConfig;
use crate::metadata::{BrokerMeta, Command, MetadataStore};

/// Messages brokers send the active controller over the quorum transport.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Heartbeat(Heartbeat),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub broker: BrokerMeta,
    /// The registration epoch this process got (0 before its first registration).
    pub epoch: u64,
    /// The metadata log index this broker has applied.
    pub applied: u64,
    pub want_shutdown: bool,
    /// Brokers whose replica fetch connection was refused recently (process gone).
    pub unreachable: Vec<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    Heartbeat { epoch: u64, fenced: bool, shutdown_ready: bool, controller_applied: u64 },
    NotController,
    Error(String),
}

pub struct Controller {
    metadata: Arc<MetadataStore>,
    /// `cluster.id` from the config, written once by the first active controller.
    cluster_id: Option<String>,
    session_timeout: Duration,
    heartbeat_interval: Duration,
    last_heartbeat: Mutex<HashMap<i32, Instant>>,
    unreachable_reports: Mutex<HashMap<i32, Instant>>,
    /// When this node last became the active controller.
    active_since: Mutex<Option<Instant>>,
    /// When the session check last ran: a long gap means this process was paused
    /// (SIGSTOP, a VM freeze), and heartbeats that arrived meanwhile were never read.
    last_check: Mutex<Option<Instant>>,
}

impl Controller {
    pub fn new(config: &BrokerConfig, metadata: Arc<MetadataStore>) -> Self {
        Controller {
            metadata,
            cluster_id: config.cluster_id.clone(),
            session_timeout: Duration::from_millis(config.session_timeout_ms),
            heartbeat_interval: Duration::from_millis(config.heartbeat_interval_ms),
            last_heartbeat: Mutex::new(HashMap::new()),
            unreachable_reports: Mutex::new(HashMap::new()),
            active_since: Mutex::new(None),
            last_check: Mutex::new(None),
        }
    }

    pub fn is_active(&self) -> bool {
        self.term().is_some()
    }

    /// The controller epoch: the quorum term in which this node leads (and holds the lease).
    /// Every decision is written with it, so one taken by a deposed controller is rejected.
    fn term(&self) -> Option<u64> {
        self.metadata.quorum().and_then(|q| q.leader_term())
    }

    pub async fn handle(&self, req: Request) -> Reply {
        let Some(term) = self.term() else {
            return Reply::NotController;
        };
        match req {
            Request::Heartbeat(hb) => match self.heartbeat(hb, term).await {
                Ok(r) => r,
                Err(e) => Reply::Error(format!("{e:?}")),
            },
        }
    }

    async fn heartbeat(&self, hb: Heartbeat, term: u64) -> Result<Reply, kafka_protocol::error::ResponseError> {
        let id = hb.broker.id;
        self.last_heartbeat.lock().insert(id, Instant::now());
        {
            let mut reports = self.unreachable_reports.lock();
            for r in &hb.unreachable {
                reports.insert(*r, Instant::now());
            }
        }
        let md = &self.metadata;
        let same =
            |b: &BrokerMeta| b.endpoints == hb.broker.endpoints && b.rack == hb.broker.rack && b.http == hb.broker.http;
        let registered = md.broker(id).filter(|b| b.epoch == hb.epoch && hb.epoch != 0 && same(b));
        let reg = match registered {
            Some(b) => b,
            None => {
                md.write_decided(&Command::RegisterBroker { broker: hb.broker.clone() }, term).await?;
                let b = md.broker(id).expect("just registered");
                tracing::info!(broker = id, epoch = b.epoch, "registered broker");
                return Ok(self.reply(&b, false));
            }
        };
        if hb.want_shutdown {
            if !reg.fenced {
                md.write_decided(&Command::ControlledShutdown { id }, term).await?;
                tracing::info!(broker = id, "controlled shutdown: leadership moved away");
            }
            let b = md.broker(id).expect("registered");
            return Ok(self.reply(&b, true));
        }
        // Unfence once it has applied its own registration: it then knows every
        // partition's state as of then, and fetches the rest like any follower.
        if reg.fenced && hb.applied >= reg.epoch {
            md.write_decided(&Command::Unfence { id }, term).await?;
            tracing::info!(broker = id, "unfenced broker");
        }
        let b = md.broker(id).expect("registered");
        Ok(self.reply(&b, false))
    }

    fn reply(&self, b: &BrokerMeta, shutdown: bool) -> Reply {
        let led = shutdown
            && self.metadata.read(|img| img.topics.values().any(|t| t.assignment.iter().any(|p| p.leader == b.id)));
        Reply::Heartbeat {
            epoch: b.epoch,
            fenced: b.fenced,
            shutdown_ready: shutdown && b.fenced && !led,
            controller_applied: self.metadata.applied_index(),
        }
    }

    /// Fence brokers whose session expired. Runs every few hundred ms on every node;
    /// does something only on the active controller.
    pub async fn check_sessions(&self) {
        let Some(term) = self.term() else {
            *self.active_since.lock() = None;
            *self.last_check.lock() = None;
            return;
        };
        let now = Instant::now();
        let paused =
            self.last_check.lock().replace(now).is_some_and(|t| now.duration_since(t) > self.heartbeat_interval * 2);
        if paused {
            // Silence measured across our own pause is ours, not the brokers'. A paused
            // old controller may also not know yet that another has taken over: giving
            // everyone a fresh session leaves it time to find out before it fences anyone.
            tracing::warn!("the session check was paused; restarting every broker's session");
            *self.active_since.lock() = Some(now);
            self.last_heartbeat.lock().clear();
            self.unreachable_reports.lock().clear();
        }
        let since = *self.active_since.lock().get_or_insert(now);
        let live: Vec<i32> =
            self.metadata.read(|img| img.brokers.values().filter(|b| !b.fenced).map(|b| b.id).collect());
        let mut doomed = Vec::new();
        {
            let mut last = self.last_heartbeat.lock();
            let reports = self.unreachable_reports.lock();
            for id in live {
                // A new controller gives every broker a full session from its start.
                let seen = (*last.entry(id).or_insert(since)).max(since);
                let silent = now.duration_since(seen);
                let refused = reports.get(&id).is_some_and(|t| now.duration_since(*t) < self.session_timeout);
                // A refused connection means the process is gone: two missed heartbeats
                // then suffice, instead of the whole session.
                if silent > self.session_timeout || (refused && silent > self.heartbeat_interval * 2) {
                    doomed.push((id, silent, refused));
                }
            }
        }
        for (id, silent, refused) in doomed {
            tracing::warn!(broker = id, silent_ms = silent.as_millis() as u64, refused, "fencing broker: no heartbeat");
            if let Err(e) = self.metadata.write_decided(&Command::Fence { id }, term).await {
                tracing::warn!(broker = id, error = ?e, "fencing failed");
            }
        }
        if self.metadata.cluster_id().is_empty() {
            let id = self.cluster_id.clone().unwrap_or_else(crate::metadata::random_cluster_id);
            let _ = self.metadata.write_decided(&Command::SetClusterId { id }, term).await;
        }
        // Measured from the end, so a slow write above does not look like a pause.
        *self.last_check.lock() = Some(Instant::now());
    }
}
