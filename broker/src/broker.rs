//! The broker's shared state: configuration, metadata, hosted partitions, the group
//! coordinator and metrics. Handlers reach everything through an `Arc<Broker>`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use kafka_protocol::error::ResponseError;

use crate::config::BrokerConfig;
use crate::group::coordinator::GroupCoordinator;
use crate::metadata::{MetadataStore, NewTopic, TopicMeta};
use crate::metrics::Metrics;
use crate::replica_manager::ReplicaManager;
use crate::topic_config;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Each partition is a directory and open files; a request for millions of them is a
/// mistake or an attack, and is refused before anything is created.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

pub struct Broker {
    pub config: BrokerConfig,
    pub metadata: MetadataStore,
    pub replicas: ReplicaManager,
    pub groups: GroupCoordinator,
    pub metrics: Metrics,
    pub ready: AtomicBool,
    pub started: Instant,
}

/// A topic as CreateTopics asks for it (-1: broker default).
pub struct TopicRequest {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// A topic creation failure, with Kafka's error code and a message for the client.
pub type CreateError = (ResponseError, Option<String>);

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Broker {
    /// Open the data directory: metadata, every partition (recovering logs), and the
    /// committed offsets of every group.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>> {
        let dir = config.data_dir().clone();
        std::fs::create_dir_all(&dir)?;
        let metadata = MetadataStore::open(&dir, config.cluster_id.as_deref())?;
        let replicas = ReplicaManager::new(&dir);
        for t in metadata.topics() {
            replicas.ensure_topic(&config, &t)?;
        }
        let groups = GroupCoordinator::new(&config);
        let broker = Arc::new(Broker {
            metrics: Metrics::new(),
            config,
            metadata,
            replicas,
            groups,
            ready: AtomicBool::new(false),
            started: Instant::now(),
        });
        if broker.metadata.topic(OFFSETS_TOPIC).is_none() {
            let mut cfg = BTreeMap::new();
            cfg.insert("cleanup.policy".to_string(), "compact".to_string());
            cfg.insert("segment.bytes".to_string(), "104857600".to_string());
            let n = broker.config.offsets_topic_num_partitions;
            let t = NewTopic { name: OFFSETS_TOPIC.into(), partitions: n, replication_factor: 1, configs: cfg, internal: true };
            broker.create_new(vec![t]).pop().unwrap().map_err(|e| anyhow::anyhow!("creating {OFFSETS_TOPIC}: {:?}", e))?;
        }
        broker.groups.load(&broker)?;
        Ok(broker)
    }

    /// (host, port) clients of `listener` should connect to: the advertised listener of
    /// the same name (so an internal and an external listener each hand out their own
    /// address), else the first one.
    pub fn advertised(&self, listener: &str) -> (String, i32) {
        let ls = &self.config.advertised_listeners;
        let l = ls.iter().find(|l| l.name == listener).unwrap_or(&ls[0]);
        let host = if l.host.is_empty() || l.host == "0.0.0.0" || l.host == "::" { "localhost".to_string() } else { l.host.clone() };
        (host, l.port as i32)
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// Create a topic as CreateTopics does: -1 means the broker default.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMeta, CreateError> {
        let req = TopicRequest { name: name.to_string(), partitions, replication_factor, configs };
        self.create_topics(vec![req], validate_only).pop().expect("one result per topic")
    }

    /// Check one requested topic and fill in broker defaults.
    fn check_topic(&self, t: TopicRequest) -> Result<NewTopic, CreateError> {
        let partitions = if t.partitions == -1 { self.config.num_partitions } else { t.partitions };
        let rf = if t.replication_factor == -1 { self.config.default_replication_factor } else { t.replication_factor };
        if partitions < 1 {
            return Err((ResponseError::InvalidPartitions, Some("Number of partitions must be larger than 0.".into())));
        }
        if partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err((ResponseError::InvalidPartitions, Some(format!("Number of partitions must be at most {MAX_PARTITIONS_PER_TOPIC}."))));
        }
        if rf < 1 {
            return Err((ResponseError::InvalidReplicationFactor, Some("Replication factor must be larger than 0.".into())));
        }
        if rf > 1 {
            return Err((
                ResponseError::InvalidReplicationFactor,
                Some(format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only 1 broker(s) are registered.")),
            ));
        }
        for (k, v) in &t.configs {
            topic_config::validate(k, v).map_err(|(e, m)| (e, Some(m)))?;
        }
        topic_config::warn_unimplemented(&t.name, &t.configs);
        if !crate::metadata::valid_topic_name(&t.name) {
            return Err((ResponseError::InvalidTopicException, Some(format!("Topic name {:?} is illegal", t.name))));
        }
        Ok(NewTopic { name: t.name, partitions, replication_factor: rf, configs: t.configs, internal: false })
    }

    /// Create topics (one metadata write for the batch), then their partitions.
    pub fn create_topics(&self, topics: Vec<TopicRequest>, validate_only: bool) -> Vec<Result<TopicMeta, CreateError>> {
        let checked: Vec<Result<NewTopic, CreateError>> = topics.into_iter().map(|t| self.check_topic(t)).collect();
        if validate_only {
            return checked
                .into_iter()
                .map(|r| {
                    let t = r?;
                    if self.metadata.topic(&t.name).is_some() {
                        return Err((ResponseError::TopicAlreadyExists, Some(format!("Topic '{}' already exists.", t.name))));
                    }
                    Ok(TopicMeta {
                        name: t.name,
                        id: uuid::Uuid::nil(),
                        partitions: t.partitions,
                        replication_factor: t.replication_factor,
                        configs: t.configs,
                        internal: false,
                        leader_epochs: vec![],
                    })
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
        let mut created = self.create_new(valid).into_iter();
        results.into_iter().map(|r| r.unwrap_or_else(|| created.next().expect("a result per valid topic"))).collect()
    }

    fn create_new(&self, topics: Vec<NewTopic>) -> Vec<Result<TopicMeta, CreateError>> {
        let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
        self.metadata
            .create_topics(topics)
            .into_iter()
            .zip(names)
            .map(|(r, name)| {
                let t = r.map_err(|e| {
                    let msg = (e == ResponseError::TopicAlreadyExists).then(|| format!("Topic '{name}' already exists."));
                    (e, msg)
                })?;
                self.replicas.ensure_topic(&self.config, &t).map_err(|e| {
                    tracing::error!(topic = %name, error = %e, "creating partitions failed");
                    (ResponseError::KafkaStorageError, Some(e.to_string()))
                })?;
                tracing::info!(topic = %name, partitions = t.partitions, id = %t.id, "created topic");
                Ok(t)
            })
            .collect()
    }

    /// Auto-create a topic on first use when `auto.create.topics.enable` allows it.
    pub fn auto_create(&self, name: &str) -> Option<TopicMeta> {
        if !self.config.auto_create_topics_enable {
            return None;
        }
        match self.create_topic(name, -1, -1, BTreeMap::new(), false) {
            Ok(t) => Some(t),
            Err((ResponseError::TopicAlreadyExists, _)) => self.metadata.topic(name),
            Err(_) => None,
        }
    }

    pub fn delete_topic(&self, name: &str) -> Result<TopicMeta, ResponseError> {
        if name == OFFSETS_TOPIC {
            return Err(ResponseError::TopicAuthorizationFailed);
        }
        if !self.config.delete_topic_enable {
            return Err(ResponseError::TopicDeletionDisabled);
        }
        let t = self.metadata.delete_topic(name)?;
        if let Err(e) = self.replicas.remove_topic(name) {
            tracing::error!(topic = name, error = %e, "removing partition data failed");
        }
        self.groups.forget_topic(self, name);
        tracing::info!(topic = name, "deleted topic");
        Ok(t)
    }
}
