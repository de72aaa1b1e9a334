//! The HTTP endpoint (`fjord.http.listen`): `/metrics` for Prometheus, `/health` (the
//! process is up), `/ready` (registered, unfenced and caught up with metadata: serving),
//! `/status` (recovery progress and role, as JSON) and `/restart-safe` (whether stopping
//! this broker now would take any partition below its min ISR; the operator's rolling
//! restart asks it before each pod). The JSON bodies are the types of `fjord-contract`,
//! which the operator reads with.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::broker::Broker;

/// OpenMetrics when the scraper asks for it (Prometheus does), else Prometheus text 0.0.4.
async fn metrics(State(b): State<Arc<Broker>>, headers: HeaderMap) -> impl IntoResponse {
    let wants_om = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if wants_om {
        (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            b.metrics.render_openmetrics(),
        )
    } else {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], b.metrics.render_prometheus())
    }
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(b): State<Arc<Broker>>) -> impl IntoResponse {
    if b.state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn status(State(b): State<Arc<Broker>>) -> impl IntoResponse {
    let hosted = b.replicas.all();
    let leaders = hosted.iter().filter(|p| p.lock().is_leader()).count();
    let q = b.metadata.quorum().map(|q| q.status());
    let body = fjord_contract::Status {
        node_id: b.node_id(),
        ready: b.state.ready.load(Ordering::SeqCst),
        caught_up: b.state.caught_up.load(Ordering::SeqCst),
        broker_epoch: b.state.broker_epoch.load(Ordering::SeqCst),
        controller_active: b.controller.is_active(),
        metadata_applied_index: b.metadata.applied_index(),
        quorum: q.map(|q| fjord_contract::Quorum {
            node_id: q.node_id,
            leader: q.leader,
            term: q.term,
            last_log_index: q.last_log_index,
            committed: q.committed,
            applied: q.applied,
            voters: q.voters,
            learners: q.learners,
            replication: q.replication,
        }),
        partitions_hosted: hosted.len() as u64,
        partitions_assigned: assigned(&b).len() as u64,
        partitions_led: leaders as u64,
        uptime_seconds: b.state.started.elapsed().as_secs_f64(),
    };
    ([(header::CONTENT_TYPE, "application/json")], serde_json::to_string(&body).expect("serializes"))
}

/// A partition assigned to this broker, as the metadata image has it.
struct Assigned {
    topic: String,
    partition: usize,
    isr: Vec<i32>,
    replicas: Vec<i32>,
    min_isr: usize,
}

/// Every partition assigned to this broker.
fn assigned(b: &Broker) -> Vec<Assigned> {
    let me = b.node_id();
    b.metadata.read(|img| {
        let mut out = Vec::new();
        for t in img.topics.values() {
            let min_isr = crate::topic_config::log_config(&b.config, &t.configs).min_insync_replicas.max(1) as usize;
            for (i, p) in t.assignment.iter().enumerate() {
                if p.replicas.contains(&me) {
                    out.push(Assigned {
                        topic: t.name.clone(),
                        partition: i,
                        isr: p.isr.clone(),
                        replicas: p.replicas.clone(),
                        min_isr,
                    });
                }
            }
        }
        out
    })
}

/// 200 when stopping this broker now leaves every partition it holds at or above its min
/// ISR; 503 with the partitions that would fall below. A partition whose replication
/// factor leaves no room for one replica to be down (RF <= min ISR, RF=1 included) can
/// never satisfy that: it is reported but does not block, so a rolling restart cannot
/// wait on it forever.
async fn restart_safe(State(b): State<Arc<Broker>>) -> impl IntoResponse {
    let me = b.node_id();
    let mut blocking = Vec::new();
    let mut unsatisfiable = Vec::new();
    for Assigned { topic, partition: i, isr, replicas, min_isr } in assigned(&b) {
        let name = format!("{topic}-{i}");
        if replicas.len() <= min_isr {
            unsatisfiable.push(name);
            continue;
        }
        let remaining = isr.iter().filter(|r| **r != me).count();
        if remaining < min_isr {
            blocking.push(fjord_contract::Blocking { partition: name, isr, min_isr: min_isr as u64 });
        }
    }
    let safe = blocking.is_empty() && b.state.ready.load(Ordering::SeqCst);
    let body = fjord_contract::RestartSafe {
        safe,
        ready: b.state.ready.load(Ordering::SeqCst),
        would_fall_below_min_isr: blocking,
        replication_factor_allows_no_restart: unsatisfiable,
    };
    let code = if safe { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "application/json")], serde_json::to_string(&body).expect("serializes"))
}

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/status", get(status))
        .route("/restart-safe", get(restart_safe))
        .with_state(broker)
}
