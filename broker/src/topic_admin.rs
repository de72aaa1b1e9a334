//! Topic administration (CreateTopics, DeleteTopics, CreatePartitions, auto-creation,
//! the offsets topic) and producer id allocation: checks a request against the live
//! brokers and Kafka's limits, places replicas, writes the metadata, then reconciles so
//! the caller's answer reflects its own write.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use crate::error::ApiError;

use crate::config::BrokerConfig;
use crate::group::coordinator::GroupCoordinator;
use crate::group::OFFSETS_TOPIC;
use crate::metadata::image::{assign_replicas, UsableBroker};
use crate::metadata::{MetadataStore, PartitionMeta, TopicMeta};
use crate::replication::Replication;
use crate::topic_config;
use crate::txn::TRANSACTION_TOPIC;

/// Each partition is a directory and open files; a request for millions of them is a
/// mistake or an attack, and is refused before anything is created.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// What topic administration is built from.
pub struct TopicAdminDeps {
    pub config: Arc<BrokerConfig>,
    pub metadata: Arc<MetadataStore>,
    pub replication: Arc<Replication>,
    pub groups: Arc<GroupCoordinator>,
}

pub struct TopicAdmin {
    config: Arc<BrokerConfig>,
    metadata: Arc<MetadataStore>,
    replication: Arc<Replication>,
    groups: Arc<GroupCoordinator>,
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

impl TopicAdmin {
    pub fn new(deps: TopicAdminDeps) -> Self {
        TopicAdmin { config: deps.config, metadata: deps.metadata, replication: deps.replication, groups: deps.groups }
    }

    /// Live brokers with their racks, for replica placement.
    fn live_brokers(&self) -> Vec<UsableBroker> {
        self.metadata.read(|img| {
            img.brokers
                .values()
                .filter(|b| !b.fenced)
                .map(|b| UsableBroker { id: b.id, rack: b.rack.clone() })
                .collect()
        })
    }

    /// Create a topic as CreateTopics does: -1 means the broker default.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, ApiError> {
        let req = TopicRequest { name: name.to_string(), partitions, replication_factor, configs, assignment: None };
        self.create_topics(vec![req], false).await.pop().expect("one result per topic")
    }

    /// Check one requested topic, fill in broker defaults and place its replicas.
    fn check_topic(&self, t: TopicRequest, live: &[UsableBroker], start: usize) -> Result<TopicMeta, ApiError> {
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
            return Err(ApiError::new(ResponseError::InvalidPartitions, "Number of partitions must be larger than 0."));
        }
        if partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!("Number of partitions must be at most {MAX_PARTITIONS_PER_TOPIC}."),
            ));
        }
        if rf < 1 {
            return Err(ApiError::new(
                ResponseError::InvalidReplicationFactor,
                "Replication factor must be larger than 0.",
            ));
        }
        if rf as usize > live.len() {
            return Err(ApiError::new(ResponseError::InvalidReplicationFactor, format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {} broker(s) are registered.", live.len())));
        }
        for (k, v) in &t.configs {
            topic_config::validate(k, v)?;
        }
        topic_config::warn_unimplemented(&t.name, &t.configs);
        if !crate::metadata::valid_topic_name(&t.name) {
            return Err(ApiError::new(
                ResponseError::InvalidTopicException,
                format!("Topic name {:?} is illegal", t.name),
            ));
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
                        return Err(ApiError::new(
                            ResponseError::InvalidReplicaAssignment,
                            format!("Invalid replica assignment {r:?}"),
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
    ) -> Vec<Result<TopicMeta, ApiError>> {
        let live = self.live_brokers();
        let start = rand::random::<u32>() as usize;
        let checked: Vec<Result<TopicMeta, ApiError>> =
            topics.into_iter().enumerate().map(|(i, t)| self.check_topic(t, &live, start.wrapping_add(i))).collect();
        if validate_only {
            return checked
                .into_iter()
                .map(|r| {
                    let t = r?;
                    if self.metadata.topic(&t.name).is_some() {
                        return Err(ApiError::new(
                            ResponseError::TopicAlreadyExists,
                            format!("Topic '{}' already exists.", t.name),
                        ));
                    }
                    Ok(t)
                })
                .collect();
        }
        let mut results: Vec<Option<Result<TopicMeta, ApiError>>> = Vec::with_capacity(checked.len());
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
                let message = (e == ResponseError::TopicAlreadyExists).then(|| format!("Topic '{name}' already exists."));
                ApiError { code: e, message }
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
        self.replication.reconcile_now().await;
    }

    /// Auto-create a topic on first use when `auto.create.topics.enable` allows it.
    pub async fn auto_create(&self, name: &str) -> Option<TopicMeta> {
        if !self.config.auto_create_topics_enable {
            return None;
        }
        match self.create_topic(name, -1, -1, BTreeMap::new()).await {
            Ok(t) => Some(t),
            Err(ApiError { code: ResponseError::TopicAlreadyExists, .. }) => self.metadata.topic(name),
            Err(_) => None,
        }
    }

    /// Create `__consumer_offsets` on first use, once enough brokers are up to give it
    /// its replication factor (a single-voter cluster uses what it has).
    pub async fn ensure_offsets_topic(&self) -> Result<TopicMeta, ResponseError> {
        let c = &self.config;
        self.ensure_internal_topic(InternalTopic {
            name: OFFSETS_TOPIC,
            partitions: c.offsets_topic_num_partitions,
            replication_factor: c.offsets_topic_replication_factor,
            segment_bytes: c.offsets_topic_segment_bytes,
            min_isr: None,
        })
        .await
    }

    /// `__transaction_state`, created on the first FindCoordinator for a transactional id.
    pub async fn ensure_transaction_topic(&self) -> Result<TopicMeta, ResponseError> {
        let c = &self.config;
        self.ensure_internal_topic(InternalTopic {
            name: TRANSACTION_TOPIC,
            partitions: c.txn.state_log_num_partitions,
            replication_factor: c.txn.state_log_replication_factor,
            segment_bytes: c.txn.state_log_segment_bytes,
            min_isr: Some(c.txn.state_log_min_isr),
        })
        .await
    }

    /// Create an internal, compacted topic unless it exists. Its replication factor is
    /// capped by the voters and live brokers, so a single-node cluster gets one replica as
    /// Kafka's dev setups configure by hand.
    async fn ensure_internal_topic(&self, spec: InternalTopic) -> Result<TopicMeta, ResponseError> {
        if let Some(t) = self.metadata.topic(spec.name) {
            return Ok(t);
        }
        let live = self.live_brokers();
        let voters = self.config.voters.len().max(1);
        let want = spec.replication_factor.max(1) as usize;
        let rf = if voters < want { voters.min(live.len()) } else { want };
        if rf == 0 || live.len() < rf {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let mut configs = BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert("segment.bytes".to_string(), spec.segment_bytes.to_string());
        if let Some(min_isr) = spec.min_isr {
            configs.insert("min.insync.replicas".to_string(), (min_isr.max(1) as usize).min(rf).to_string());
        }
        let n = spec.partitions;
        let t = TopicMeta {
            name: spec.name.into(),
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
                self.metadata.topic(spec.name).ok_or(ResponseError::CoordinatorNotAvailable)
            }
            Err(e) => Err(e),
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<TopicMeta, ResponseError> {
        if name == OFFSETS_TOPIC || name == TRANSACTION_TOPIC {
            return Err(ResponseError::TopicAuthorizationFailed);
        }
        if !self.config.delete_topic_enable {
            return Err(ResponseError::TopicDeletionDisabled);
        }
        let t = self.metadata.delete_topic(name).await?;
        self.sync_replicas().await;
        self.groups.forget_topic(name);
        tracing::info!(topic = name, "deleted topic");
        Ok(t)
    }

    /// Add partitions to a topic, placed like a new topic's.
    pub async fn add_partitions(
        &self,
        t: &TopicMeta,
        count: i32,
        assignment: Option<Vec<Vec<i32>>>,
    ) -> Result<TopicMeta, ApiError> {
        let live = self.live_brokers();
        let rf = t.replication_factor;
        let n = count - t.partitions;
        let replicas = match assignment {
            Some(a) => {
                if a.len() as i32 != n
                    || a.iter().any(|r| r.is_empty() || r.iter().any(|id| !live.iter().any(|l| l.id == *id)))
                {
                    return Err(ResponseError::InvalidReplicaAssignment.into());
                }
                a
            }
            None => {
                if (rf as usize) > live.len() {
                    return Err(ApiError::new(
                        ResponseError::InvalidReplicationFactor,
                        format!("only {} broker(s) are available", live.len()),
                    ));
                }
                assign_replicas(&live, n, rf, t.partitions as usize + rand::random::<u16>() as usize)
            }
        };
        let r = self
            .metadata
            .add_partitions(&t.name, replicas.into_iter().map(new_partition).collect())
            .await
            .map_err(ApiError::from);
        self.sync_replicas().await;
        r
    }
}

/// The shape of an internal topic, from the broker's keys for it.
struct InternalTopic {
    name: &'static str,
    partitions: i32,
    replication_factor: i16,
    segment_bytes: i32,
    min_isr: Option<i16>,
}

fn new_partition(replicas: Vec<i32>) -> PartitionMeta {
    PartitionMeta {
        leader: replicas.first().copied().unwrap_or(-1),
        isr: replicas.clone(),
        replicas,
        ..Default::default()
    }
}
