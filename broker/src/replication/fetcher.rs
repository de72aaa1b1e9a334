//! Followers fetch from leaders with the Kafka Fetch API, as Kafka's replica fetcher does:
//! one task and one connection per leader broker, fetching every partition this node
//! follows from it. The request names the follower (replica id) and, per partition, the
//! last leader epoch it holds; a leader that sees the follower's log diverge from its own
//! answers with the epoch's end offset and the follower truncates to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::metadata::MetadataStore;
use crate::metrics::Metrics;
use crate::node_state::NodeState;
use crate::partition::Role;
use crate::replica_manager::{PartitionRef, ReplicaManager};
use crate::throttle::Quota;

const FETCH_VERSION: i16 = 12;

/// What the fetchers are built from.
pub struct FetcherDeps {
    pub config: Arc<BrokerConfig>,
    pub metadata: Arc<MetadataStore>,
    pub replicas: Arc<ReplicaManager>,
    pub metrics: Arc<Metrics>,
    pub state: Arc<NodeState>,
    /// The follower replication throttle.
    pub quota: Arc<Quota>,
}

/// What every fetcher task shares.
struct Shared {
    config: Arc<BrokerConfig>,
    metadata: Arc<MetadataStore>,
    replicas: Arc<ReplicaManager>,
    metrics: Arc<Metrics>,
    state: Arc<NodeState>,
    quota: Arc<Quota>,
    refused: Mutex<HashMap<i32, Instant>>,
}

impl Shared {
    fn node_id(&self) -> i32 {
        self.config.node_id
    }

    fn note_refused(&self, leader: i32) {
        self.refused.lock().insert(leader, Instant::now());
    }
}

pub struct FetcherManager {
    shared: Arc<Shared>,
    tasks: Mutex<HashMap<i32, JoinHandle<()>>>,
}

impl FetcherManager {
    pub fn new(d: FetcherDeps) -> Self {
        let shared = Shared {
            config: d.config,
            metadata: d.metadata,
            replicas: d.replicas,
            metrics: d.metrics,
            state: d.state,
            quota: d.quota,
            refused: Mutex::new(HashMap::new()),
        };
        FetcherManager { shared: Arc::new(shared), tasks: Mutex::new(HashMap::new()) }
    }

    /// Make sure a fetcher runs for `leader`.
    pub fn ensure(&self, leader: i32) {
        if leader == self.shared.node_id() {
            return;
        }
        let mut tasks = self.tasks.lock();
        if tasks.get(&leader).is_some_and(|t| !t.is_finished()) {
            return;
        }
        tasks.insert(leader, tokio::spawn(run(self.shared.clone(), leader)));
    }

    /// Leaders whose port refused a connection in the last few seconds.
    pub fn recently_refused(&self) -> Vec<i32> {
        let mut r = self.shared.refused.lock();
        r.retain(|_, t| t.elapsed() < Duration::from_secs(5));
        r.keys().copied().collect()
    }
}

struct Followed {
    part: PartitionRef,
    topic: String,
    index: i32,
    epoch: i32,
    fetch_offset: i64,
    /// Subject to this follower's throttle (listed, and not in the ISR).
    throttled: bool,
}

fn followed(b: &Shared, leader: i32) -> Vec<Followed> {
    b.replicas
        .all()
        .into_iter()
        .filter_map(|part| {
            let p = part.lock();
            (p.role == Role::Follower { leader }).then(|| Followed {
                topic: p.topic.clone(),
                index: p.index,
                epoch: p.leader_epoch,
                fetch_offset: p.log.log_end_offset(),
                throttled: p.follower_throttled && !p.isr.contains(&p.node_id),
                part: part.clone(),
            })
        })
        .collect()
}

async fn run(b: Arc<Shared>, leader: i32) {
    let mut conn: Option<TcpStream> = None;
    let mut idle_since = Instant::now();
    let mut correlation = 0i32;
    loop {
        if b.state.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut parts = followed(&b, leader);
        if !parts.is_empty() && b.quota.exceeded() {
            parts.retain(|f| !f.throttled);
            if parts.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        if parts.is_empty() {
            if idle_since.elapsed() > Duration::from_secs(5) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        idle_since = Instant::now();
        if conn.is_none() {
            let addr = b
                .metadata
                .broker(leader)
                .and_then(|m| m.endpoint(&b.config.inter_broker_listener).map(|e| format!("{}:{}", e.host, e.port)));
            let Some(addr) = addr else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    conn = Some(s);
                }
                Ok(Err(e)) => {
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        b.note_refused(leader);
                    }
                    tracing::debug!(leader, %addr, error = %e, "replica fetcher cannot connect");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(_) => continue,
            }
        }
        correlation = correlation.wrapping_add(1);
        let req = request(&b, &parts);
        let wait = Duration::from_millis(b.config.replica_fetch_wait_max_ms.max(0) as u64) + Duration::from_secs(5);
        let stream = conn.as_mut().expect("connected");
        let resp = match tokio::time::timeout(
            wait,
            crate::client::round_trip::<_, FetchResponse>(
                stream,
                ApiKey::Fetch,
                FETCH_VERSION,
                correlation,
                &format!("fjord-replica-{}", b.node_id()),
                &req,
            ),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(leader, error = %e, "replica fetch failed; reconnecting");
                conn = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(_) => {
                tracing::warn!(leader, "replica fetch timed out; reconnecting");
                conn = None;
                continue;
            }
        };
        let backoff = tokio::task::block_in_place(|| apply(&b, leader, &parts, resp));
        if backoff {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn request(b: &Shared, parts: &[Followed]) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for f in parts {
        let last_epoch = f.part.lock().log.latest_epoch().map_or(-1, |e| e.epoch);
        let fp = FetchPartition::default()
            .with_partition(f.index)
            .with_current_leader_epoch(f.epoch)
            .with_fetch_offset(f.fetch_offset)
            .with_last_fetched_epoch(last_epoch)
            .with_log_start_offset(-1)
            .with_partition_max_bytes(b.config.replica_fetch_max_bytes);
        match topics.iter_mut().find(|t| t.topic.as_str() == f.topic) {
            Some(t) => t.partitions.push(fp),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(f.topic.clone())))
                    .with_partitions(vec![fp]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(b.node_id()))
        .with_max_wait_ms(b.config.replica_fetch_wait_max_ms)
        .with_min_bytes(1)
        .with_max_bytes(b.config.replica_fetch_response_max_bytes)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// Apply a fetch response. Returns true when the fetcher should back off (errors only).
fn apply(b: &Shared, leader: i32, parts: &[Followed], resp: FetchResponse) -> bool {
    if resp.error_code != 0 {
        return true;
    }
    let mut backoff = false;
    let now = now_ms();
    for t in resp.responses {
        for pd in t.partitions {
            let Some(f) = parts.iter().find(|f| f.topic == t.topic.as_str() && f.index == pd.partition_index) else {
                continue;
            };
            let mut p = f.part.lock();
            // Metadata may have moved on while the request was in flight.
            if p.role != (Role::Follower { leader })
                || p.leader_epoch != f.epoch
                || p.log.log_end_offset() != f.fetch_offset
            {
                continue;
            }
            match ResponseError::try_from_code(pd.error_code) {
                None => {}
                Some(ResponseError::OffsetOutOfRange) => {
                    // Behind the leader's log start (retention ran there): start over at it.
                    // Ahead of its end cannot happen with epoch checks; truncate to its
                    // high watermark if it does.
                    let r = if f.fetch_offset < pd.log_start_offset {
                        p.restart_at(pd.log_start_offset)
                    } else {
                        p.truncate_to(pd.high_watermark.max(0))
                    };
                    if let Err(e) = r {
                        tracing::error!(topic = %f.topic, partition = f.index, error = %e, "resetting replica failed");
                    }
                    continue;
                }
                Some(e) => {
                    tracing::debug!(topic = %f.topic, partition = f.index, leader, error = ?e, "replica fetch error");
                    backoff = true;
                    continue;
                }
            }
            if pd.diverging_epoch.epoch >= 0 {
                let local = p.log.end_offset_for_epoch(pd.diverging_epoch.epoch);
                let to = local.end_offset.min(pd.diverging_epoch.end_offset);
                if let Err(e) = p.truncate_to(to.max(0)) {
                    tracing::error!(topic = %f.topic, partition = f.index, error = %e, "truncation failed");
                }
                continue;
            }
            let records = pd.records.unwrap_or_default();
            match p.append_replica(&records, pd.high_watermark, now) {
                Ok(_) => {
                    if !records.is_empty() {
                        b.metrics.replication_bytes_in.inc_by(records.len() as u64);
                        if f.throttled {
                            b.quota.record(records.len());
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(topic = %f.topic, partition = f.index, error = %e, "appending replicated batches failed");
                    backoff = true;
                }
            }
            if pd.log_start_offset > p.log.log_start_offset() && pd.log_start_offset <= p.log.log_end_offset() {
                let advanced = p.log.advance_start(pd.log_start_offset);
                drop(p);
                // Unlinked after the partition lock is released.
                if let Err(e) = advanced.and_then(|removed| removed.delete()) {
                    tracing::warn!(topic = %f.topic, partition = f.index, error = %e, "following the leader's log start failed");
                }
            }
        }
    }
    backoff
}
