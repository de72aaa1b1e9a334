//! Replication on this node: keeping hosted replicas in line with the metadata image
//! (reconcile), the broker's heartbeat to the active controller (lifecycle), followers
//! fetching from leaders (fetcher), and leaders proposing ISR changes.

pub mod fetcher;
pub mod lifecycle;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;

use crate::broker::{now_ms, Broker, OFFSETS_TOPIC};
use crate::metadata::Command;
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
    let img = b.metadata.read(|i| i.clone());
    let changes = tokio::task::block_in_place(|| b.replicas.reconcile(&b.config, &img, now_ms(), true));
    on_changes(b, changes);
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

/// Ask the controller for a new ISR (Kafka's AlterPartition). The partition remembers the
/// request so it does not ask twice; the answer arrives as a metadata change.
pub fn propose_isr(b: &Arc<Broker>, part: &PartitionRef, isr: Vec<i32>) {
    let cmd = {
        let mut p = part.lock();
        if p.pending_isr.is_some() || !p.is_leader() {
            return;
        }
        p.pending_isr = Some((isr.clone(), now_ms()));
        Command::AlterPartition {
            topic: p.topic.clone(),
            partition: p.index,
            leader: p.node_id,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: isr.clone(),
        }
    };
    let b = b.clone();
    let part = part.clone();
    tokio::spawn(async move {
        match b.metadata.write(&cmd).await {
            Ok(_) => reconcile_now(&b).await,
            Err(e) => {
                if e != ResponseError::FencedLeaderEpoch {
                    tracing::warn!(?cmd, error = ?e, "ISR change refused");
                }
            }
        }
        part.lock().pending_isr = None;
        b.replicas.notify_appended();
    });
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
