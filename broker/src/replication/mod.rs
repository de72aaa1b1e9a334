//! Replication on this node: keeping hosted replicas in line with the metadata image
//! (reconcile), the broker's heartbeat to the active controller (lifecycle), followers
//! fetching from leaders (fetcher), and leaders proposing ISR changes.
//!
//! `Replication` is built from the components it uses (config, metadata, replicas,
//! metrics, node state). Coordinators that keep state in an internal topic hear of its
//! leadership through `LeadershipListener`, a trait this layer owns, so replication never
//! depends on the coordinators above it.

pub mod fetcher;
pub mod lifecycle;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;

use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::metadata::{Command, IsrChange, MetadataStore, Outcome};
use crate::metrics::Metrics;
use crate::node_state::NodeState;
use crate::partition::{Partition, Transition};
use crate::replica_manager::{Changes, PartitionRef, ReplicaManager};
use crate::throttle::{self, Quota};
use fetcher::FetcherManager;

/// A component that keeps state in the partitions of an internal topic (the group
/// coordinator in `__consumer_offsets`; a transaction coordinator in
/// `__transaction_state`): it loads a partition's state when this node becomes its
/// leader and drops it when leadership moves away.
pub trait LeadershipListener: Send + Sync {
    /// The internal topic whose partitions this listener follows.
    fn topic(&self) -> &str;
    fn became_leader(&self, partition: i32);
    fn resigned(&self, partition: i32);
}

/// What replication is built from.
pub struct ReplicationDeps {
    pub config: Arc<BrokerConfig>,
    pub metadata: Arc<MetadataStore>,
    pub replicas: Arc<ReplicaManager>,
    pub metrics: Arc<Metrics>,
    pub state: Arc<NodeState>,
    pub listeners: Vec<Arc<dyn LeadershipListener>>,
}

pub struct Replication {
    config: Arc<BrokerConfig>,
    metadata: Arc<MetadataStore>,
    replicas: Arc<ReplicaManager>,
    metrics: Arc<Metrics>,
    state: Arc<NodeState>,
    listeners: Vec<Arc<dyn LeadershipListener>>,
    pub fetchers: Arc<FetcherManager>,
    /// Replication throttles (reassignment), as leader and as follower.
    pub leader_quota: Arc<Quota>,
    pub follower_quota: Arc<Quota>,
    isr_batcher: IsrBatcher,
}

const ISR_RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// ISR changes waiting for the next AlterPartitions write (Kafka's AlterPartitionManager
/// batches the same way): whatever queues while one write is in flight goes in the next.
#[derive(Default)]
struct IsrBatcher {
    queue: parking_lot::Mutex<Vec<(PartitionRef, IsrChange)>>,
    wake: tokio::sync::Notify,
}

impl Replication {
    /// `Partition::cut_off` with this broker's contact with the controller and
    /// `broker.session.timeout.ms`.
    pub fn cut_off(&self, p: &Partition, now_ms: i64) -> bool {
        let session = self.config.session_timeout_ms as i64;
        p.cut_off(now_ms, self.state.controller_silence_ms(now_ms), session)
    }

    /// `cut_off`, also recorded in the partition (`Partition::mark_cut_off`) so that acks=all
    /// waiters see it at once, not only at the next maintenance pass: a flag left over from
    /// before contact came back would fail writes that were replicated.
    pub fn check_cut_off(&self, p: &mut Partition, now_ms: i64) -> bool {
        let cut_off = self.cut_off(p, now_ms);
        if p.mark_cut_off(cut_off) {
            if cut_off {
                tracing::warn!(topic = %p.topic, partition = p.index, "leader cut off from the controller and every follower: refusing produce");
            } else {
                tracing::info!(topic = %p.topic, partition = p.index, "leader no longer cut off");
            }
        }
        cut_off
    }

    /// No answer from an active controller for `broker.session.timeout.ms`: the half of
    /// `cut_off` that needs no partition lock.
    pub fn controller_unreachable(&self, now_ms: i64) -> bool {
        self.state.controller_silence_ms(now_ms) > self.config.session_timeout_ms as i64
    }

    pub fn new(deps: ReplicationDeps) -> Arc<Replication> {
        let follower_quota = Arc::new(Quota::default());
        let fetchers = Arc::new(FetcherManager::new(fetcher::FetcherDeps {
            config: deps.config.clone(),
            metadata: deps.metadata.clone(),
            replicas: deps.replicas.clone(),
            metrics: deps.metrics.clone(),
            state: deps.state.clone(),
            quota: follower_quota.clone(),
        }));
        Arc::new(Replication {
            config: deps.config,
            metadata: deps.metadata,
            replicas: deps.replicas,
            metrics: deps.metrics,
            state: deps.state,
            listeners: deps.listeners,
            fetchers,
            leader_quota: Arc::new(Quota::default()),
            follower_quota,
            isr_batcher: IsrBatcher::default(),
        })
    }

    /// Start the background tasks: heartbeats, reconcile on metadata change, ISR
    /// maintenance and the ISR batcher.
    pub fn spawn_tasks(self: &Arc<Self>) {
        tokio::spawn(lifecycle::run(self.clone()));
        tokio::spawn(self.clone().run_reconciler());
        tokio::spawn(self.clone().run_isr_maintenance());
        tokio::spawn(self.clone().run_isr_batcher());
    }

    /// Apply the image this node has to its replicas, then act on what changed: start
    /// fetchers for new followers, tell the leadership listeners about their topics'
    /// partitions. Does nothing before the node has caught up with the metadata log (an
    /// old image would make it lead what it no longer leads, or delete data). Callers that
    /// just wrote metadata use it to see their write take effect before answering.
    pub async fn reconcile_now(&self) {
        if !self.state.caught_up.load(Ordering::SeqCst) {
            return;
        }
        let _serial = self.replicas.reconcile_lock.lock().await;
        // Read before the image: the image is at least this recent.
        let index = self.metadata.applied_index();
        let img = self.metadata.read(|i| i.clone());
        let me = self.config.node_id;
        self.leader_quota.set_rate(throttle::parse_rate(img.broker_config(me, throttle::LEADER_RATE)));
        self.follower_quota.set_rate(throttle::parse_rate(img.broker_config(me, throttle::FOLLOWER_RATE)));
        // Opening and deleting logs waits on the disk (see docs/architecture.md).
        let changes = tokio::task::block_in_place(|| self.replicas.reconcile(&self.config, &img, now_ms(), true));
        self.on_changes(changes);
        self.state.reconciled_index.fetch_max(index, Ordering::SeqCst);
    }

    fn on_changes(&self, changes: Changes) {
        self.metrics.isr_shrinks.inc_by(changes.isr_shrinks);
        self.metrics.isr_expands.inc_by(changes.isr_expands);
        for (part, tr) in changes.transitions {
            tracing::debug!(topic = %part.topic, partition = part.partition, transition = ?tr, "replica role changed");
            for l in self.listeners.iter().filter(|l| l.topic() == part.topic) {
                match tr {
                    Transition::Leader => l.became_leader(part.partition),
                    _ => l.resigned(part.partition),
                }
            }
            if let Transition::Follower { leader } = tr {
                self.fetchers.ensure(leader);
            }
        }
        for part in changes.removed {
            for l in self.listeners.iter().filter(|l| l.topic() == part.topic) {
                l.resigned(part.partition);
            }
        }
    }

    /// Reconcile after every metadata change.
    async fn run_reconciler(self: Arc<Self>) {
        let mut rx = self.metadata.subscribe();
        loop {
            self.reconcile_now().await;
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Ask the controller for a new ISR (Kafka's AlterPartition). The partition remembers the
    /// request so it does not ask twice; the answer arrives as a metadata change.
    pub fn propose_isr(&self, part: &PartitionRef, isr: Vec<i32>) {
        // Kafka's leaders check eligibility first too: a fenced broker (restarting, or shutting
        // down) would only be refused, and a thousand partitions would ask in a loop.
        let fenced: Vec<i32> =
            isr.iter().copied().filter(|r| self.metadata.broker(*r).is_none_or(|m| m.fenced)).collect();
        let change = {
            let mut p = part.lock();
            if p.pending_isr.is_some() || !p.is_leader() || fenced.iter().any(|r| !p.isr.contains(r)) {
                return;
            }
            p.pending_isr = Some((isr.clone(), now_ms()));
            IsrChange {
                topic: p.topic.clone(),
                partition: p.index,
                leader: p.node_id,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr,
            }
        };
        self.isr_batcher.queue.lock().push((part.clone(), change));
        self.isr_batcher.wake.notify_one();
    }

    /// Write queued ISR changes, one batch at a time.
    async fn run_isr_batcher(self: Arc<Self>) {
        let b = &self;
        loop {
            b.isr_batcher.wake.notified().await;
            let batch = std::mem::take(&mut *b.isr_batcher.queue.lock());
            if batch.is_empty() {
                continue;
            }
            let n = batch.len();
            let cmd = Command::AlterPartitions { changes: batch.iter().map(|(_, c)| c.clone()).collect() };
            let codes: Vec<Option<ResponseError>> = match b.metadata.write(&cmd).await {
                Ok(Outcome::Codes(codes)) if codes.len() == n => {
                    codes.into_iter().map(ResponseError::try_from_code).collect()
                }
                Ok(_) => vec![Some(ResponseError::UnknownServerError); n],
                Err(e) => vec![Some(e); n],
            };
            let mut retry_later = Vec::new();
            for ((part, change), code) in batch.into_iter().zip(codes) {
                match code {
                    None => part.lock().pending_isr = None,
                    // A new leader epoch or partition epoch: the partition learns the current
                    // state from metadata and decides again.
                    Some(e @ (ResponseError::FencedLeaderEpoch | ResponseError::InvalidUpdateVersion)) => {
                        tracing::debug!(?change, error = ?e, "ISR change overtaken");
                        part.lock().pending_isr = None;
                    }
                    Some(e) => {
                        tracing::warn!(?change, error = ?e, "ISR change refused");
                        retry_later.push(part);
                    }
                }
            }
            b.reconcile_now().await;
            b.replicas.notify_appended();
            if !retry_later.is_empty() {
                // Not again at the very next fetch: whatever made it fail needs a moment.
                tokio::spawn(async move {
                    tokio::time::sleep(ISR_RETRY_BACKOFF).await;
                    for part in retry_later {
                        part.lock().pending_isr = None;
                    }
                });
            }
        }
    }

    /// Leaders drop followers that stopped keeping up. Runs on every node.
    async fn run_isr_maintenance(self: Arc<Self>) {
        let b = &self;
        // Often enough to notice a lagging follower, and a cut-off leader (`cut_off`), soon.
        let period = (b.config.replica_lag_time_max_ms as u64).min(b.config.session_timeout_ms);
        let every = Duration::from_millis((period / 8).clamp(50, 1000));
        loop {
            tokio::time::sleep(every).await;
            let now = now_ms();
            for part in b.replicas.all() {
                let (role, shrink, topic, index) = {
                    let mut p = part.lock();
                    b.check_cut_off(&mut p, now);
                    (p.role, p.isr_to_shrink(now, b.config.replica_lag_time_max_ms), p.topic.clone(), p.index)
                };
                // A fetcher for every leader followed here, whatever happened to the last one.
                if let crate::partition::Role::Follower { leader } = role {
                    b.fetchers.ensure(leader);
                }
                if let Some(isr) = shrink {
                    tracing::info!(topic = %topic, partition = index, ?isr, "shrinking ISR: followers out of sync");
                    b.propose_isr(&part, isr);
                }
            }
        }
    }
}
