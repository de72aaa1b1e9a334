//! Start a broker: open storage, bind the listeners and the HTTP endpoint, run the
//! background tasks, and shut down cleanly on SIGINT/SIGTERM.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;

use crate::broker::{now_ms, Broker};
use crate::config::BrokerConfig;
use crate::connection;

pub struct Running {
    pub broker: Arc<Broker>,
    pub kafka_addrs: Vec<std::net::SocketAddr>,
    pub http_addr: Option<std::net::SocketAddr>,
}

/// Bind everything and start serving; returns once the broker is ready.
pub async fn start(config: BrokerConfig) -> Result<Running> {
    let broker = tokio::task::block_in_place(|| Broker::open(config))?;
    broker.metrics.attach(&broker);

    let mut kafka_addrs = Vec::new();
    for l in &broker.config.listeners {
        let listener = TcpListener::bind(l.bind_addr()).await.with_context(|| format!("binding listener {}", l.bind_addr()))?;
        kafka_addrs.push(listener.local_addr()?);
        tokio::spawn(accept_loop(broker.clone(), listener, Arc::from(l.name.as_str())));
    }
    let http_addr = match broker.config.http_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.with_context(|| format!("binding fjord.http.listen {addr}"))?;
            let local = listener.local_addr()?;
            let app = crate::http::router(broker.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "http server stopped");
                }
            });
            Some(local)
        }
        None => None,
    };

    let b = broker.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            b.groups.tick();
        }
    });
    let b = broker.clone();
    tokio::spawn(async move {
        let retention_every = Duration::from_millis(b.config.log_retention_check_interval_ms.max(100));
        let mut last_retention = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let due = last_retention.elapsed() >= retention_every;
            if due {
                last_retention = tokio::time::Instant::now();
            }
            let b = b.clone();
            let _ = tokio::task::spawn_blocking(move || b.replicas.housekeeping(now_ms(), due)).await;
        }
    });

    broker.ready.store(true, Ordering::SeqCst);
    tracing::info!(node_id = broker.node_id(), listeners = ?kafka_addrs, http = ?http_addr, startup_ms = broker.started.elapsed().as_millis() as u64, "broker ready");
    Ok(Running { broker, kafka_addrs, http_addr })
}

async fn accept_loop(broker: Arc<Broker>, listener: TcpListener, name: Arc<str>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if broker.metrics.connections.get() as usize >= broker.config.max_connections {
            tracing::warn!(%peer, "max.connections reached; refusing connection");
            broker.metrics.closed("max_connections");
            drop(stream);
            continue;
        }
        broker.metrics.connections_accepted.inc();
        broker.metrics.connections.inc();
        let b = broker.clone();
        let name = name.clone();
        tokio::spawn(async move {
            connection::serve(b.clone(), stream, peer, name).await;
            b.metrics.connections.dec();
        });
    }
}

/// Wait for SIGINT or SIGTERM, then flush every log.
pub async fn wait_for_shutdown(broker: &Arc<Broker>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    broker.ready.store(false, Ordering::SeqCst);
    let b = broker.clone();
    let _ = tokio::task::spawn_blocking(move || b.replicas.flush_all()).await;
}
