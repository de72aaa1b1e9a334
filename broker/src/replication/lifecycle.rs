//! The broker side of membership (Kafka's BrokerLifecycleManager): heartbeat to the active
//! controller, learn the registration epoch, become ready once unfenced and caught up with
//! the metadata log, and on shutdown ask the controller to move leadership away first.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Replication;
use crate::controller::{Heartbeat, Reply, Request};
use crate::metadata::{BrokerMeta, Endpoint};

fn me(b: &Replication) -> BrokerMeta {
    BrokerMeta {
        id: b.config.node_id,
        endpoints: b
            .config
            .advertised_listeners
            .iter()
            .map(|l| {
                let a = b.config.advertised(&l.name);
                Endpoint { name: l.name.clone(), host: a.host, port: a.port }
            })
            .collect(),
        rack: b.config.broker_rack.clone(),
        http: b.state.http_addr.get().map(|a| a.to_string()),
        fenced: true,
        epoch: 0,
        controller: b.config.is_voter(),
    }
}

async fn send(b: &Replication, hb: Heartbeat) -> Option<Reply> {
    let q = b.metadata.quorum()?;
    let req = serde_json::to_vec(&Request::Heartbeat(hb)).expect("heartbeats serialize");
    let timeout = Duration::from_millis(b.config.session_timeout_ms);
    match q.call_leader(req, timeout).await {
        Ok(reply) => serde_json::from_slice(&reply.body).ok(),
        Err(e) => {
            tracing::debug!(error = %e, "heartbeat not delivered");
            None
        }
    }
}

/// Heartbeat until the process stops.
pub async fn run(b: Arc<Replication>) {
    let every = Duration::from_millis(b.config.heartbeat_interval_ms);
    let mut last_ok = Instant::now();
    loop {
        if b.state.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let hb = Heartbeat {
            broker: me(&b),
            epoch: b.state.broker_epoch.load(Ordering::SeqCst),
            applied: b.state.reconciled_index.load(Ordering::SeqCst),
            want_shutdown: false,
            unreachable: b.fetchers.recently_refused(),
        };
        match send(&b, hb).await {
            Some(Reply::Heartbeat { epoch, fenced, controller_applied, .. }) => {
                last_ok = Instant::now();
                b.state.controller_contact_ms.store(crate::clock::now_ms(), Ordering::Relaxed);
                b.state.broker_epoch.store(epoch, Ordering::SeqCst);
                if !b.state.caught_up.load(Ordering::SeqCst) && b.metadata.applied_index() >= controller_applied {
                    tracing::info!(applied = controller_applied, "caught up with the metadata log");
                    b.state.caught_up.store(true, Ordering::SeqCst);
                    // Opening a thousand partitions takes a while: heartbeats must go
                    // on meanwhile, or the session expires right after registration.
                    let b2 = b.clone();
                    tokio::spawn(async move { b2.reconcile_now().await });
                }
                let ready = !fenced && b.state.reconciled_index.load(Ordering::SeqCst) > 0;
                if ready != b.state.ready.swap(ready, Ordering::SeqCst) {
                    tracing::info!(
                        ready,
                        epoch,
                        "broker {}",
                        if ready { "is serving (unfenced)" } else { "is fenced" }
                    );
                }
                // Right after registering, heartbeat again at once to get unfenced sooner.
                if fenced {
                    tokio::time::sleep(every / 5).await;
                    continue;
                }
            }
            Some(Reply::NotController) | None => {
                if last_ok.elapsed() > Duration::from_millis(b.config.session_timeout_ms) * 4 {
                    tracing::warn!(
                        silent_ms = last_ok.elapsed().as_millis() as u64,
                        "no active controller answers heartbeats"
                    );
                    last_ok = Instant::now();
                }
                tokio::time::sleep(every / 5).await;
                continue;
            }
            Some(Reply::Error(e)) => tracing::warn!(error = %e, "heartbeat refused"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Controlled shutdown: ask the controller to move this broker's leaderships away, and
/// wait (bounded) until it has, so producers see a new leader instead of a dead one.
pub async fn controlled_shutdown(b: &Replication) {
    if !b.config.controlled_shutdown || b.config.voters.len() <= 1 {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let hb = Heartbeat {
            broker: me(b),
            epoch: b.state.broker_epoch.load(Ordering::SeqCst),
            applied: b.metadata.applied_index(),
            want_shutdown: true,
            unreachable: vec![],
        };
        if let Some(Reply::Heartbeat { shutdown_ready: true, .. }) = send(b, hb).await {
            tracing::info!("controlled shutdown complete: this broker leads no partition");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("controlled shutdown did not complete in time; stopping anyway");
}
