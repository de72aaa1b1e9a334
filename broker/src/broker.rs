//! The broker's shared state: configuration, metadata, hosted partitions, the group
//! coordinator, the controller role and metrics. Handlers reach everything through an
//! `Arc<Broker>`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use parking_lot::Mutex;

use crate::config::BrokerConfig;
use crate::controller::Controller;
use crate::group::coordinator::GroupCoordinator;
use crate::metadata::image::assign_replicas;
use crate::metadata::{MetadataStore, PartitionMeta, TopicMeta};
use crate::metrics::Metrics;
use crate::replica_manager::ReplicaManager;
use crate::topic_config;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Each partition is a directory and open files; a request for millions of them is a
/// mistake or an attack, and is refused before anything is created.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// Producer ids a broker takes from the controller at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;

pub struct Broker {
    pub config: BrokerConfig,
    pub metadata: Arc<MetadataStore>,
    pub replicas: ReplicaManager,
    pub groups: GroupCoordinator,
    pub controller: Controller,
    pub metrics: Metrics,
    /// Registered, unfenced and caught up with metadata: serving.
    pub ready: AtomicBool,
    /// Caught up with the metadata log at least once since start.
    pub caught_up: AtomicBool,
    /// The metadata index the hosted replicas last reflected (0 before the first reconcile).
    /// The controller unfences this broker only once it covers its registration: an
    /// unfenced broker is elected leader, and must have its partitions open by then.
    pub reconciled_index: AtomicU64,
    pub shutting_down: AtomicBool,
    /// The registration epoch the controller gave this process.
    pub broker_epoch: AtomicU64,
    pub http_addr: OnceLock<std::net::SocketAddr>,
    pub fetchers: crate::replication::fetcher::FetcherManager,
    /// Replication throttles (reassignment), as leader and as follower.
    pub leader_quota: crate::replication::throttle::Quota,
    pub isr_batcher: crate::replication::IsrBatcher,
    pub follower_quota: crate::replication::throttle::Quota,
    pub started: Instant,
    producer_ids: Mutex<(i64, i64)>,
}

/// A topic as CreateTopics asks for it (-1: broker default).
pub struct TopicRequest {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    /// Explicit replica assignment per partition (CreateTopics' `assignments`).
    pub assignment: Option<Vec<Vec<i32>>>,
}

/// A topic creation failure, with Kafka's error code and a message for the client.
pub type CreateError = (ResponseError, Option<String>);

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Broker {
    pub fn new(config: BrokerConfig, metadata: Arc<MetadataStore>) -> anyhow::Result<Arc<Broker>> {
        let dir = config.data_dir().clone();
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(Broker {
            metrics: Metrics::new(),
            replicas: ReplicaManager::new(&dir, config.node_id),
            groups: GroupCoordinator::new(&config),
            controller: Controller::new(&config),
            metadata,
            config,
            ready: AtomicBool::new(false),
            caught_up: AtomicBool::new(false),
            reconciled_index: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            broker_epoch: AtomicU64::new(0),
            http_addr: OnceLock::new(),
            fetchers: Default::default(),
            leader_quota: Default::default(),
            isr_batcher: Default::default(),
            follower_quota: Default::default(),
            started: Instant::now(),
            producer_ids: Mutex::new((0, 0)),
        }))
    }

    /// (host, port) clients of `listener` should connect to: the advertised listener of
    /// the same name (so an internal and an external listener each hand out their own
    /// address), else the first one.
    pub fn advertised(&self, listener: &str) -> (String, i32) {
        let ls = &self.config.advertised_listeners;
        let l = ls.iter().find(|l| l.name == listener).unwrap_or(&ls[0]);
        let host = if l.host.is_empty() || l.host == "0.0.0.0" || l.host == "::" {
            "localhost".to_string()
        } else {
            l.host.clone()
        };
        (host, l.port as i32)
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// Live brokers with their racks, for replica placement.
    fn live_brokers(&self) -> Vec<(i32, Option<String>)> {
        self.metadata.read(|img| img.brokers.values().filter(|b| !b.fenced).map(|b| (b.id, b.rack.clone())).collect())
    }

    /// Create a topic as CreateTopics does: -1 means the broker default.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, CreateError> {
        let req = TopicRequest { name: name.to_string(), partitions, replication_factor, configs, assignment: None };
        self.create_topics(vec![req], false).await.pop().expect("one result per topic")
    }

    /// Check one requested topic, fill in broker defaults and place its replicas.
    fn check_topic(
        &self,
        t: TopicRequest,
        live: &[(i32, Option<String>)],
        start: usize,
    ) -> Result<TopicMeta, CreateError> {
        let partitions = match &t.assignment {
            Some(a) => a.len() as i32,
            None if t.partitions == -1 => self.config.num_partitions,
            None => t.partitions,
        };
        let rf = match &t.assignment {
            Some(a) => a.first().map(|r| r.len() as i16).unwrap_or(0),
            None if t.replication_factor == -1 => self.config.default_replication_factor,
            None => t.replication_factor,
        };
        if partitions < 1 {
            return Err((ResponseError::InvalidPartitions, Some("Number of partitions must be larger than 0.".into())));
        }
        if partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err((
                ResponseError::InvalidPartitions,
                Some(format!("Number of partitions must be at most {MAX_PARTITIONS_PER_TOPIC}.")),
            ));
        }
        if rf < 1 {
            return Err((
                ResponseError::InvalidReplicationFactor,
                Some("Replication factor must be larger than 0.".into()),
            ));
        }
        if rf as usize > live.len() {
            return Err((
                ResponseError::InvalidReplicationFactor,
                Some(format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {} broker(s) are registered.", live.len())),
            ));
        }
        for (k, v) in &t.configs {
            topic_config::validate(k, v).map_err(|(e, m)| (e, Some(m)))?;
        }
        topic_config::warn_unimplemented(&t.name, &t.configs);
        if !crate::metadata::valid_topic_name(&t.name) {
            return Err((ResponseError::InvalidTopicException, Some(format!("Topic name {:?} is illegal", t.name))));
        }
        let replicas = match t.assignment {
            Some(a) => {
                let known: Vec<i32> = self.metadata.brokers().iter().map(|b| b.id).collect();
                for r in &a {
                    let mut s = r.clone();
                    s.sort_unstable();
                    s.dedup();
                    if r.is_empty()
                        || s.len() != r.len()
                        || r.len() as i16 != rf
                        || r.iter().any(|id| !known.contains(id))
                    {
                        return Err((
                            ResponseError::InvalidReplicaAssignment,
                            Some(format!("Invalid replica assignment {r:?}")),
                        ));
                    }
                }
                a
            }
            None => assign_replicas(live, partitions, rf, start),
        };
        Ok(TopicMeta {
            name: t.name,
            id: uuid::Uuid::new_v4(),
            partitions,
            replication_factor: rf,
            configs: t.configs,
            internal: false,
            assignment: replicas.into_iter().map(new_partition).collect(),
        })
    }

    /// Create topics (one metadata write for the batch).
    pub async fn create_topics(
        &self,
        topics: Vec<TopicRequest>,
        validate_only: bool,
    ) -> Vec<Result<TopicMeta, CreateError>> {
        let live = self.live_brokers();
        let start = rand::random::<u32>() as usize;
        let checked: Vec<Result<TopicMeta, CreateError>> =
            topics.into_iter().enumerate().map(|(i, t)| self.check_topic(t, &live, start.wrapping_add(i))).collect();
        if validate_only {
            return checked
                .into_iter()
                .map(|r| {
                    let t = r?;
                    if self.metadata.topic(&t.name).is_some() {
                        return Err((
                            ResponseError::TopicAlreadyExists,
                            Some(format!("Topic '{}' already exists.", t.name)),
                        ));
                    }
                    Ok(t)
                })
                .collect();
        }
        let mut results: Vec<Option<Result<TopicMeta, CreateError>>> = Vec::with_capacity(checked.len());
        let mut valid = Vec::new();
        for r in checked {
            match r {
                Ok(t) => {
                    valid.push(t);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let names: Vec<String> = valid.iter().map(|t| t.name.clone()).collect();
        let mut created = self.metadata.create_topics(valid).await.into_iter().zip(names).map(|(r, name)| {
            r.map_err(|e| {
                let msg = (e == ResponseError::TopicAlreadyExists).then(|| format!("Topic '{name}' already exists."));
                (e, msg)
            })
            .inspect(|t| tracing::info!(topic = %t.name, partitions = t.partitions, rf = t.replication_factor, id = %t.id, "created topic"))
        });
        let out = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| created.next().expect("a result per valid topic")))
            .collect();
        self.sync_replicas().await;
        out
    }

    /// Bring this node's replicas in line with the metadata it has applied (the reconcile
    /// task does the same after every change; callers that just wrote use this to see
    /// their write take effect before answering).
    pub async fn sync_replicas(&self) {
        crate::replication::reconcile_now(self).await;
    }

    /// Auto-create a topic on first use when `auto.create.topics.enable` allows it.
    pub async fn auto_create(&self, name: &str) -> Option<TopicMeta> {
        if !self.config.auto_create_topics_enable {
            return None;
        }
        match self.create_topic(name, -1, -1, BTreeMap::new()).await {
            Ok(t) => Some(t),
            Err((ResponseError::TopicAlreadyExists, _)) => self.metadata.topic(name),
            Err(_) => None,
        }
    }

    /// Create `__consumer_offsets` on first use, once enough brokers are up to give it
    /// its replication factor (a single-voter cluster uses what it has).
    pub async fn ensure_offsets_topic(&self) -> Result<TopicMeta, ResponseError> {
        if let Some(t) = self.metadata.topic(OFFSETS_TOPIC) {
            return Ok(t);
        }
        let live = self.live_brokers();
        let voters = self.config.voters.len().max(1);
        let want = self.config.offsets_topic_replication_factor.max(1) as usize;
        let rf = if voters < want { voters.min(live.len()) } else { want };
        if rf == 0 || live.len() < rf {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let mut configs = BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert("segment.bytes".to_string(), "104857600".to_string());
        let n = self.config.offsets_topic_num_partitions;
        let t = TopicMeta {
            name: OFFSETS_TOPIC.into(),
            id: uuid::Uuid::new_v4(),
            partitions: n,
            replication_factor: rf as i16,
            configs,
            internal: true,
            assignment: assign_replicas(&live, n, rf as i16, rand::random::<u32>() as usize)
                .into_iter()
                .map(new_partition)
                .collect(),
        };
        let r = self.metadata.create_topics(vec![t]).await.pop().expect("one result");
        self.sync_replicas().await;
        match r {
            Ok(t) => Ok(t),
            Err(ResponseError::TopicAlreadyExists) => {
                self.metadata.topic(OFFSETS_TOPIC).ok_or(ResponseError::CoordinatorNotAvailable)
            }
            Err(e) => Err(e),
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<TopicMeta, ResponseError> {
        if name == OFFSETS_TOPIC {
            return Err(ResponseError::TopicAuthorizationFailed);
        }
        if !self.config.delete_topic_enable {
            return Err(ResponseError::TopicDeletionDisabled);
        }
        let t = self.metadata.delete_topic(name).await?;
        self.sync_replicas().await;
        self.groups.forget_topic(self, name);
        tracing::info!(topic = name, "deleted topic");
        Ok(t)
    }

    /// Add partitions to a topic, placed like a new topic's.
    pub async fn add_partitions(
        &self,
        t: &TopicMeta,
        count: i32,
        assignment: Option<Vec<Vec<i32>>>,
    ) -> Result<TopicMeta, CreateError> {
        let live = self.live_brokers();
        let rf = t.replication_factor;
        let n = count - t.partitions;
        let replicas = match assignment {
            Some(a) => {
                if a.len() as i32 != n
                    || a.iter().any(|r| r.is_empty() || r.iter().any(|id| !live.iter().any(|(l, _)| l == id)))
                {
                    return Err((ResponseError::InvalidReplicaAssignment, None));
                }
                a
            }
            None => {
                if (rf as usize) > live.len() {
                    return Err((
                        ResponseError::InvalidReplicationFactor,
                        Some(format!("only {} broker(s) are available", live.len())),
                    ));
                }
                assign_replicas(&live, n, rf, t.partitions as usize + rand::random::<u16>() as usize)
            }
        };
        let r = self
            .metadata
            .add_partitions(&t.name, replicas.into_iter().map(new_partition).collect())
            .await
            .map_err(|e| (e, None));
        self.sync_replicas().await;
        r
    }

    /// A producer id never handed out before, from this broker's block.
    pub async fn next_producer_id(&self) -> Result<i64, ResponseError> {
        {
            let mut ids = self.producer_ids.lock();
            if ids.0 < ids.1 {
                ids.0 += 1;
                return Ok(ids.0 - 1);
            }
        }
        let first = self.metadata.allocate_producer_ids(PRODUCER_ID_BLOCK).await?;
        let mut ids = self.producer_ids.lock();
        *ids = (first + 1, first + PRODUCER_ID_BLOCK);
        Ok(first)
    }
}

fn new_partition(replicas: Vec<i32>) -> PartitionMeta {
    PartitionMeta {
        leader: replicas.first().copied().unwrap_or(-1),
        isr: replicas.clone(),
        replicas,
        ..Default::default()
    }
}
