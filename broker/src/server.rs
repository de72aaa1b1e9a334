//! Start a node: join the metadata quorum, catch up, register with the active controller,
//! then serve; run the background tasks; on SIGTERM hand leadership over and stop.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::connection;
use crate::controller::Controller;
use crate::group::coordinator::GroupCoordinator;
use crate::log_cleaner::LogCleaner;
use crate::metadata::MetadataStore;
use crate::metrics::collector::{BrokerCollector, Sources};
use crate::metrics::Metrics;
use crate::node_state::NodeState;
use crate::producer_ids::ProducerIds;
use crate::quorum::{Handler, Quorum, QuorumConfig};
use crate::replica_manager::ReplicaManager;
use crate::replication::{LeadershipListener, Replication, ReplicationDeps};
use crate::topic_admin::{TopicAdmin, TopicAdminDeps};
use crate::txn::coordinator::TransactionCoordinator;

pub struct Running {
    pub broker: Arc<Broker>,
    pub kafka_addrs: Vec<std::net::SocketAddr>,
    pub http_addr: Option<std::net::SocketAddr>,
}

/// Controller RPCs arriving over the quorum transport.
struct ControllerRpc(Arc<Controller>);

impl Handler for ControllerRpc {
    fn handle(
        &self,
        _from: u64,
        request: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send>> {
        let controller = self.0.clone();
        Box::pin(async move {
            let reply = match serde_json::from_slice::<crate::controller::Request>(&request) {
                Ok(req) => controller.handle(req).await,
                Err(e) => crate::controller::Reply::Error(format!("undecodable request: {e}")),
            };
            serde_json::to_vec(&reply).expect("replies serialize")
        })
    }
}

/// The quorum settings from Kafka's keys. Without `controller.quorum.voters` the node is
/// a one-voter quorum on a loopback port of its own.
fn quorum_config(cfg: &BrokerConfig) -> Result<QuorumConfig> {
    let dir = cfg.data_dir().join("__cluster_metadata-0");
    let (voters, listen, advertised) = if cfg.voters.is_empty() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = probe.local_addr()?;
        drop(probe);
        let mut v = BTreeMap::new();
        v.insert(cfg.node_id as u64, addr.to_string());
        (v, addr, addr.to_string())
    } else {
        let l = cfg.controller_listener.as_ref().context("no controller listener")?;
        let listen: std::net::SocketAddr =
            l.bind_addr().parse().with_context(|| format!("controller listener {}", l.bind_addr()))?;
        let advertised = cfg
            .voters
            .iter()
            .find(|(id, _)| *id == cfg.node_id)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| format!("{}:{}", if l.host.is_empty() { "127.0.0.1" } else { &l.host }, l.port));
        (cfg.voters.iter().map(|(id, a)| (*id as u64, a.clone())).collect(), listen, advertised)
    };
    let election = cfg.election_timeout_ms.max(100);
    Ok(QuorumConfig {
        node_id: cfg.node_id as u64,
        voters,
        listen,
        advertised,
        dir,
        election_timeout_min_ms: election / 2,
        election_timeout_max_ms: election,
        heartbeat_interval_ms: (election / 10).max(20),
        snapshot_every: cfg.snapshot_interval_entries.max(100),
    })
}

/// Build the node's components, each from what it uses, lowest first. Nothing is
/// attached afterwards: a component that needs another gets it here, and up-calls go
/// through traits the lower layer owns (`LeadershipListener`).
fn build(config: BrokerConfig) -> Result<Broker> {
    let dir = config.data_dir().clone();
    std::fs::create_dir_all(&dir)?;
    let config = Arc::new(config);
    let state = Arc::new(NodeState::default());
    let metadata = Arc::new(MetadataStore::default());
    let metrics = Arc::new(Metrics::new().with_listeners(&config.listeners));
    let replicas = Arc::new(ReplicaManager::new(&dir, config.node_id));
    let groups = Arc::new(GroupCoordinator::new(&config, replicas.clone()));
    let controller = Arc::new(Controller::new(&config, metadata.clone()));
    let producer_ids = Arc::new(ProducerIds::new(metadata.clone()));
    let txns = TransactionCoordinator::new(config.clone(), metadata.clone(), replicas.clone(), producer_ids.clone());
    let cleaner = LogCleaner::new(&config, replicas.clone(), metrics.clone());
    let replication = Replication::new(ReplicationDeps {
        config: config.clone(),
        metadata: metadata.clone(),
        replicas: replicas.clone(),
        metrics: metrics.clone(),
        state: state.clone(),
        listeners: vec![groups.clone() as Arc<dyn LeadershipListener>, txns.clone() as Arc<dyn LeadershipListener>],
    });
    let topics = TopicAdmin::new(TopicAdminDeps {
        config: config.clone(),
        metadata: metadata.clone(),
        replication: replication.clone(),
        groups: groups.clone(),
    });
    metrics.register_collector(BrokerCollector::new(Sources {
        config: config.clone(),
        state: state.clone(),
        metadata: metadata.clone(),
        replicas: replicas.clone(),
        groups: groups.clone(),
        controller: controller.clone(),
        leader_quota: replication.leader_quota.clone(),
        follower_quota: replication.follower_quota.clone(),
        series_dropped: metrics.series_dropped.clone(),
        cleaner: cleaner.clone(),
        txns: txns.clone(),
    }));
    Ok(Broker {
        config,
        state,
        metadata,
        metrics,
        replicas,
        groups,
        txns,
        producer_ids,
        controller,
        replication,
        topics,
        cleaner,
    })
}

/// Bind everything and start serving; returns once the broker is ready.
pub async fn start(config: BrokerConfig) -> Result<Running> {
    let qcfg = quorum_config(&config)?;
    let broker = Arc::new(build(config)?);

    let http_addr = match broker.config.http_listen {
        Some(addr) => {
            let listener =
                TcpListener::bind(addr).await.with_context(|| format!("binding fjord.http.listen {addr}"))?;
            let local = listener.local_addr()?;
            let _ = broker.state.http_addr.set(local);
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

    let rpc = Arc::new(ControllerRpc(broker.controller.clone()));
    let quorum = Quorum::start(qcfg, broker.metadata.clone(), rpc).await.context("starting the metadata quorum")?;
    broker.metadata.set_quorum(quorum);

    broker.replication.spawn_tasks();
    broker.cleaner.spawn();
    let (groups, txns, controller) = (broker.groups.clone(), broker.txns.clone(), broker.controller.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            groups.tick();
            txns.tick();
            controller.check_sessions().await;
        }
    });
    let b = broker.clone();
    tokio::spawn(async move {
        let retention_every = Duration::from_millis(b.config.log_retention_check_interval_ms.max(100));
        let mut last_retention = tokio::time::Instant::now();
        let mut last_checkpoint = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let due = last_retention.elapsed() >= retention_every;
            if due {
                last_retention = tokio::time::Instant::now();
            }
            let checkpoint = last_checkpoint.elapsed() >= Duration::from_secs(1);
            if checkpoint {
                last_checkpoint = tokio::time::Instant::now();
            }
            let b = b.clone();
            let _ = tokio::task::spawn_blocking(move || {
                b.replicas.housekeeping(now_ms(), due);
                if checkpoint {
                    if let Err(e) = b.replicas.checkpoint_high_watermarks() {
                        tracing::warn!(error = %e, "writing the high watermark checkpoint failed");
                    }
                }
            })
            .await;
        }
    });

    // Serve only once this node knows the cluster as it is now: answering Metadata from
    // an old image would send clients to leaders that are no more.
    let mut waited = 0u64;
    while !broker.state.ready.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 20;
        if waited.is_multiple_of(10_000) {
            tracing::info!(
                waited_ms = waited,
                caught_up = broker.state.caught_up.load(Ordering::SeqCst),
                "waiting to join the cluster"
            );
        }
    }

    let mut kafka_addrs = Vec::new();
    for l in &broker.config.listeners {
        // Built before binding: a key store that cannot be read stops the start.
        let tls = match broker.config.listener_ssl.get(&l.name) {
            Some(ssl) => Some(Arc::new(crate::tls::TlsListener::new(ssl.clone())?)),
            None => None,
        };
        let listener =
            TcpListener::bind(l.bind_addr()).await.with_context(|| format!("binding listener {}", l.bind_addr()))?;
        kafka_addrs.push(listener.local_addr()?);
        if let Some(tls) = &tls {
            tokio::spawn(reload_certificates(tls.clone()));
        }
        let sasl = broker.config.listener_sasl.get(&l.name).cloned().map(Arc::new);
        tokio::spawn(accept_loop(broker.clone(), listener, Arc::from(l.name.as_str()), tls, sasl));
    }
    tracing::info!(node_id = broker.node_id(), listeners = ?kafka_addrs, http = ?http_addr, startup_ms = broker.state.started.elapsed().as_millis() as u64, "broker ready");
    Ok(Running { broker, kafka_addrs, http_addr })
}

/// Watch an SSL listener's files and rebuild its TLS configuration when they change
/// (certificate rotation without a restart).
async fn reload_certificates(tls: Arc<crate::tls::TlsListener>) {
    let mut tick = tokio::time::interval(CERTIFICATE_CHECK_INTERVAL);
    loop {
        tick.tick().await;
        let t = tls.clone();
        match tokio::task::spawn_blocking(move || t.reload_if_changed()).await {
            Ok(Ok(true)) => tracing::info!(listener = tls.listener(), "TLS key store or trust store changed: reloaded"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::error!(listener = tls.listener(), error = %e, "TLS reload failed; serving the previous certificates")
            }
            Err(e) => tracing::error!(error = %e, "TLS reload task failed"),
        }
    }
}

/// How often SSL listeners look at their files.
const CERTIFICATE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    name: Arc<str>,
    tls: Option<Arc<crate::tls::TlsListener>>,
    sasl: connection::Sasl,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if broker.metrics.open_connections() >= broker.config.max_connections {
            tracing::warn!(%peer, "max.connections reached; refusing connection");
            broker.metrics.closed("max_connections");
            drop(stream);
            continue;
        }
        broker.metrics.connection_opened(&name);
        match &tls {
            Some(tls) => {
                let acceptor = tls.acceptor();
                tokio::spawn(connection::serve_tls(broker.clone(), stream, peer, name.clone(), acceptor, sasl.clone()));
            }
            None => {
                tokio::spawn(connection::serve(broker.clone(), stream, peer, name.clone(), sasl.clone()));
            }
        }
    }
}

/// Wait for SIGINT or SIGTERM, hand leadership over (controlled shutdown), then flush
/// every log.
pub async fn wait_for_shutdown(broker: &Arc<Broker>) {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    broker.state.shutting_down.store(true, Ordering::SeqCst);
    crate::replication::lifecycle::controlled_shutdown(&broker.replication).await;
    broker.state.ready.store(false, Ordering::SeqCst);
    let b = broker.clone();
    let _ = tokio::task::spawn_blocking(move || {
        b.replicas.flush_all();
        let _ = b.replicas.checkpoint_high_watermarks();
    })
    .await;
    if let Some(q) = broker.metadata.quorum() {
        q.shutdown().await;
    }
}
