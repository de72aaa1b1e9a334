//! Replication on this node: keeping hosted replicas in line with the metadata image
//! (reconcile), the broker's heartbeat to the active controller (lifecycle), followers
//! fetching from leaders (fetcher), and leaders proposing ISR changes.

pub mod fetcher;
pub mod lifecycle;
pub mod throttle;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;

use crate::broker::{now_ms, Broker, OFFSETS_TOPIC};
use crate::metadata::{Command, IsrChange, Outcome};
use crate::partition::Transition;
use crate::replica_manager::{Changes, PartitionRef};

/// Apply the image this node has to its replicas, then act on what changed: start
/// fetchers for new followers, load or unload consumer groups with the leadership of
/// `__consumer_offsets` partitions. Does nothing before the node has caught up with the
/// metadata log (an old image would make it lead what it no longer leads, or delete data).
pub async fn reconcile_now(b: &Broker) {
    if !b.caught_up.load(Ordering::SeqCst) {
        return;
    }
    let _serial = b.replicas.reconcile_lock.lock().await;
    // Read before the image: the image is at least this recent.
    let index = b.metadata.applied_index();
    let img = b.metadata.read(|i| i.clone());
    let me = b.node_id();
    b.leader_quota.set_rate(throttle::parse_rate(img.broker_config(me, throttle::LEADER_RATE)));
    b.follower_quota.set_rate(throttle::parse_rate(img.broker_config(me, throttle::FOLLOWER_RATE)));
    let changes = tokio::task::block_in_place(|| b.replicas.reconcile(&b.config, &img, now_ms(), true));
    on_changes(b, changes);
    b.reconciled_index.fetch_max(index, Ordering::SeqCst);
}

fn on_changes(b: &Broker, changes: Changes) {
    b.metrics.isr_shrinks.inc_by(changes.isr_shrinks);
    b.metrics.isr_expands.inc_by(changes.isr_expands);
    for ((topic, index), tr) in changes.transitions {
        tracing::debug!(topic = %topic, partition = index, transition = ?tr, "replica role changed");
        if topic == OFFSETS_TOPIC {
            match tr {
                Transition::Leader => b.groups.load_partition(b, index),
                _ => b.groups.unload_partition(index),
            }
        }
        if let Transition::Follower { leader } = tr {
            b.fetchers.ensure(leader);
        }
    }
    for (topic, index) in changes.removed {
        if topic == OFFSETS_TOPIC {
            b.groups.unload_partition(index);
        }
    }
}

/// Reconcile after every metadata change.
pub async fn run_reconciler(b: Arc<Broker>) {
    let mut rx = b.metadata.subscribe();
    loop {
        reconcile_now(&b).await;
        if rx.changed().await.is_err() {
            return;
        }
    }
}

const ISR_RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// ISR changes waiting for the next AlterPartitions write (Kafka's AlterPartitionManager
/// batches the same way): whatever queues while one write is in flight goes in the next.
#[derive(Default)]
pub struct IsrBatcher {
    queue: parking_lot::Mutex<Vec<(PartitionRef, IsrChange)>>,
    wake: tokio::sync::Notify,
}

/// Ask the controller for a new ISR (Kafka's AlterPartition). The partition remembers the
/// request so it does not ask twice; the answer arrives as a metadata change.
pub fn propose_isr(b: &Arc<Broker>, part: &PartitionRef, isr: Vec<i32>) {
    // Kafka's leaders check eligibility first too: a fenced broker (restarting, or shutting
    // down) would only be refused, and a thousand partitions would ask in a loop.
    let fenced: Vec<i32> = isr.iter().copied().filter(|r| b.metadata.broker(*r).is_none_or(|m| m.fenced)).collect();
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
    b.isr_batcher.queue.lock().push((part.clone(), change));
    b.isr_batcher.wake.notify_one();
}

/// Write queued ISR changes, one batch at a time.
pub async fn run_isr_batcher(b: Arc<Broker>) {
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
        reconcile_now(&b).await;
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
pub async fn run_isr_maintenance(b: Arc<Broker>) {
    let every = Duration::from_millis((b.config.replica_lag_time_max_ms / 4).clamp(50, 1000) as u64);
    loop {
        tokio::time::sleep(every).await;
        let now = now_ms();
        for part in b.replicas.all() {
            let (role, shrink, topic, index) = {
                let p = part.lock();
                (p.role, p.isr_to_shrink(now, b.config.replica_lag_time_max_ms), p.topic.clone(), p.index)
            };
            // A fetcher for every leader followed here, whatever happened to the last one.
            if let crate::partition::Role::Follower { leader } = role {
                b.fetchers.ensure(leader);
            }
            if let Some(isr) = shrink {
                tracing::info!(topic = %topic, partition = index, ?isr, "shrinking ISR: followers out of sync");
                propose_isr(&b, &part, isr);
            }
        }
    }
}
