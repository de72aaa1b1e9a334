//! The typed admin calls of one cluster's client.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};
use tokio::sync::{mpsc, oneshot, Mutex as AsyncMutex};

use super::conn::Conn;
use super::{topic_id_string, AdminError, Endpoints};

/// Told the Kafka API name of each admin write sent.
pub type WriteHook = Arc<dyn Fn(&'static str) + Send + Sync>;

/// Topic creates arriving within this window go out as one CreateTopics: a burst of new
/// Topic resources (a Helm install of hundreds) then costs a handful of requests.
const CREATE_BATCH_WINDOW: Duration = Duration::from_millis(50);
const CREATE_BATCH_MAX: usize = 500;
const TOPIC_RESOURCE: i8 = 2;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartitionInfo {
    pub index: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicInfo {
    pub name: String,
    /// Kafka's base64 form; empty when the broker's Metadata version has no topic ids.
    pub id: String,
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
    /// Topics that exist; names asked for but unknown are left out.
    pub topics: Vec<TopicInfo>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    /// Kafka's ConfigSource: 1 is a dynamic topic override ([`super::SOURCE_DYNAMIC_TOPIC`]).
    pub source: i8,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

type Slot = Arc<AsyncMutex<Option<Conn>>>;
type CreateJob = (NewTopic, oneshot::Sender<Result<String, AdminError>>);

pub struct AdminClient {
    endpoints: Mutex<Endpoints>,
    /// Connection to any broker, for metadata and admin writes.
    any: Slot,
    /// Per broker id, for leader- and coordinator-only requests.
    nodes: Mutex<HashMap<i32, (String, Slot)>>,
    /// Bootstrap address to try next: rotates on failure so a dead broker is skipped.
    next: AtomicUsize,
    timeout: Duration,
    on_write: super::WriteHook,
    creates: OnceLock<mpsc::UnboundedSender<CreateJob>>,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl AdminClient {
    pub fn new(timeout: Duration, on_write: WriteHook) -> Self {
        AdminClient {
            endpoints: Mutex::new(Endpoints::default()),
            any: Arc::new(AsyncMutex::new(None)),
            nodes: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            timeout,
            on_write,
            creates: OnceLock::new(),
        }
    }

    pub fn set_endpoints(&self, endpoints: Endpoints) {
        *self.endpoints.lock().unwrap() = endpoints;
    }

    /// The IPs of the cluster's ready broker pods (for their HTTP endpoint).
    pub fn pod_ips(&self) -> Vec<String> {
        self.endpoints.lock().unwrap().pod_ips.values().cloned().collect()
    }

    /// `host:port` for a broker address as advertised: a pod DNS name
    /// (`<pod>.<service>...`) maps to the pod's IP, since the operator may have no cluster DNS.
    fn resolve(&self, host: &str, port: i32) -> String {
        let eps = self.endpoints.lock().unwrap();
        let pod = host.split('.').next().unwrap_or(host);
        match eps.pod_ips.get(pod).or_else(|| eps.pod_ips.get(host)) {
            Some(ip) => format!("{ip}:{port}"),
            None => format!("{host}:{port}"),
        }
    }

    /// Send on the any-broker connection, opening it on the next bootstrap address that
    /// answers. `retry`: safe to resend once on a fresh connection if the pooled one turned
    /// out dead (reads only: a resent create could report its own success as an error).
    async fn call<R: Request>(&self, req: R, cap: i16, retry: bool) -> Result<R::Response, AdminError> {
        let mut slot = self.any.lock().await;
        for attempt in 0..2 {
            let reused = slot.is_some();
            if slot.is_none() {
                *slot = Some(self.open_bootstrap().await?);
            }
            let conn = slot.as_mut().unwrap();
            let version = conn.version::<R>(cap)?;
            match conn.exchange(&req, version, self.timeout).await {
                Err(e) if e.breaks_connection() => {
                    tracing::debug!(addr = %conn.addr, error = %e, "admin connection dropped");
                    *slot = None;
                    self.next.fetch_add(1, Ordering::Relaxed);
                    if !(retry && reused && attempt == 0) {
                        return Err(e);
                    }
                }
                r => return r,
            }
        }
        unreachable!("the second attempt returns")
    }

    async fn open_bootstrap(&self) -> Result<Conn, AdminError> {
        let addrs = self.endpoints.lock().unwrap().bootstrap.clone();
        if addrs.is_empty() {
            return Err(AdminError::NoBrokers);
        }
        let start = self.next.load(Ordering::Relaxed);
        let mut last = AdminError::NoBrokers;
        for i in 0..addrs.len() {
            let addr = &addrs[(start + i) % addrs.len()];
            match Conn::open(addr, self.timeout).await {
                Ok(c) => {
                    self.next.store((start + i) % addrs.len(), Ordering::Relaxed);
                    return Ok(c);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Send to broker `node` at `addr` (resolved) on its own connection.
    async fn call_node<R: Request>(
        &self,
        node: i32,
        addr: String,
        req: R,
        cap: i16,
    ) -> Result<R::Response, AdminError> {
        let slot = {
            let mut nodes = self.nodes.lock().unwrap();
            let entry = nodes.entry(node).or_insert_with(|| (addr.clone(), Arc::new(AsyncMutex::new(None))));
            if entry.0 != addr {
                *entry = (addr.clone(), Arc::new(AsyncMutex::new(None)));
            }
            entry.1.clone()
        };
        let mut slot = slot.lock().await;
        if slot.is_none() {
            *slot = Some(Conn::open(&addr, self.timeout).await?);
        }
        let conn = slot.as_mut().unwrap();
        let version = conn.version::<R>(cap)?;
        let r = conn.exchange(&req, version, self.timeout).await;
        if matches!(&r, Err(e) if e.breaks_connection()) {
            *slot = None;
            self.nodes.lock().unwrap().remove(&node);
        }
        r
    }

    fn wrote(&self, api: &'static str) {
        (self.on_write)(api);
    }

    /// Brokers, controller and the named topics (all topics when `None`).
    pub async fn metadata(&self, topics: Option<&[String]>) -> Result<ClusterMetadata, AdminError> {
        let wanted = topics.map(|ts| {
            ts.iter()
                .map(|t| metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s(t)))))
                .collect()
        });
        let req = MetadataRequest::default().with_topics(wanted).with_allow_auto_topic_creation(false);
        let resp = self.call(req, 12, true).await?;
        AdminError::check(resp.error_code, None)?;
        let mut out = ClusterMetadata {
            cluster_id: resp.cluster_id.map(|c| c.to_string()),
            controller_id: resp.controller_id.0,
            brokers: resp
                .brokers
                .into_iter()
                .map(|b| BrokerInfo { id: b.node_id.0, host: b.host.to_string(), port: b.port })
                .collect(),
            topics: Vec::new(),
        };
        for t in resp.topics {
            if t.error_code == ResponseError::UnknownTopicOrPartition.code() {
                continue;
            }
            let name = t.name.map(|n| n.to_string()).unwrap_or_default();
            // LeaderNotAvailable right after a create still lists partitions; other
            // topic-level errors mean we know nothing useful about it.
            if t.error_code != 0 && t.error_code != ResponseError::LeaderNotAvailable.code() {
                AdminError::check(t.error_code, Some(&s(&format!("metadata of topic {name}"))))?;
            }
            let id = if t.topic_id.is_nil() { String::new() } else { topic_id_string(t.topic_id.as_bytes()) };
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .into_iter()
                .map(|p| PartitionInfo {
                    index: p.partition_index,
                    leader: p.leader_id.0,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline: p.offline_replicas.iter().map(|b| b.0).collect(),
                })
                .collect();
            partitions.sort_by_key(|p| p.index);
            out.topics.push(TopicInfo { name, id, partitions });
        }
        Ok(out)
    }

    #[allow(dead_code)] // part of the admin API; no controller needs it yet
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, AdminError> {
        let resp = self.call(DescribeClusterRequest::default(), 1, true).await?;
        AdminError::check(resp.error_code, resp.error_message.as_ref())?;
        Ok(ClusterDescription { cluster_id: resp.cluster_id.to_string(), controller_id: resp.controller_id.0 })
    }

    /// Create topics in one request; per topic its id (may be empty) or error.
    pub async fn create_topics(&self, topics: &[NewTopic]) -> Result<Vec<CreateResult>, AdminError> {
        let creatable = topics
            .iter()
            .map(|t| {
                create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(s(&t.name)))
                    .with_num_partitions(t.partitions)
                    .with_replication_factor(t.replication_factor)
                    .with_configs(
                        t.configs
                            .iter()
                            .map(|(k, v)| {
                                create_topics_request::CreatableTopicConfig::default()
                                    .with_name(s(k))
                                    .with_value(Some(s(v)))
                            })
                            .collect(),
                    )
            })
            .collect();
        let req =
            CreateTopicsRequest::default().with_topics(creatable).with_timeout_ms(self.timeout.as_millis() as i32);
        self.wrote("CreateTopics");
        let resp = self.call(req, 7, false).await?;
        Ok(resp
            .topics
            .into_iter()
            .map(|t| {
                let r = AdminError::check(t.error_code, t.error_message.as_ref()).map(|_| {
                    if t.topic_id.is_nil() {
                        String::new()
                    } else {
                        topic_id_string(t.topic_id.as_bytes())
                    }
                });
                CreateResult { name: t.name.to_string(), topic_id: r }
            })
            .collect())
    }

    /// Create one topic, coalesced with other creates of this cluster arriving within
    /// [`CREATE_BATCH_WINDOW`] into one CreateTopics. Returns the topic id (may be empty).
    pub async fn create_topic(self: &Arc<Self>, topic: NewTopic) -> Result<String, AdminError> {
        let tx = self.creates.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(create_batcher(Arc::downgrade(self), rx));
            tx
        });
        let (done, wait) = oneshot::channel();
        tx.send((topic, done)).map_err(|_| AdminError::Protocol("create batcher stopped".into()))?;
        wait.await.map_err(|_| AdminError::Protocol("create batcher dropped the request".into()))?
    }

    pub async fn create_partitions(&self, name: &str, total: i32) -> Result<(), AdminError> {
        let topic = create_partitions_request::CreatePartitionsTopic::default()
            .with_name(TopicName(s(name)))
            .with_count(total)
            .with_assignments(None);
        // (the codec's default is an empty assignment list, which asks for no replicas)
        let req = CreatePartitionsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(self.timeout.as_millis() as i32);
        self.wrote("CreatePartitions");
        let resp = self.call(req, 3, false).await?;
        let r = resp.results.first().ok_or_else(|| AdminError::Protocol("empty CreatePartitions response".into()))?;
        AdminError::check(r.error_code, r.error_message.as_ref())
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), AdminError> {
        // Version 5 at most: 6 replaced topic_names with (name, id) pairs.
        let req = DeleteTopicsRequest::default()
            .with_topic_names(vec![TopicName(s(name))])
            .with_timeout_ms(self.timeout.as_millis() as i32);
        self.wrote("DeleteTopics");
        let resp = self.call(req, 5, false).await?;
        let r = resp.responses.first().ok_or_else(|| AdminError::Protocol("empty DeleteTopics response".into()))?;
        AdminError::check(r.error_code, r.error_message.as_ref())
    }

    pub async fn describe_topic_configs(&self, name: &str) -> Result<Vec<ConfigEntry>, AdminError> {
        let res = describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(s(name))
            .with_configuration_keys(None);
        let resp = self.call(DescribeConfigsRequest::default().with_resources(vec![res]), 4, true).await?;
        let r = resp
            .results
            .into_iter()
            .next()
            .ok_or_else(|| AdminError::Protocol("empty DescribeConfigs response".into()))?;
        AdminError::check(r.error_code, r.error_message.as_ref())?;
        Ok(r.configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                source: c.config_source,
            })
            .collect())
    }

    /// Set and delete topic overrides in one IncrementalAlterConfigs.
    pub async fn incremental_alter_topic_configs(
        &self,
        name: &str,
        set: &BTreeMap<String, String>,
        delete: &[String],
    ) -> Result<(), AdminError> {
        use incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
        let mut configs: Vec<AlterableConfig> = set
            .iter()
            .map(|(k, v)| AlterableConfig::default().with_name(s(k)).with_config_operation(0).with_value(Some(s(v))))
            .collect();
        configs.extend(
            delete.iter().map(|k| AlterableConfig::default().with_name(s(k)).with_config_operation(1).with_value(None)),
        );
        let res = AlterConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(s(name))
            .with_configs(configs);
        self.wrote("IncrementalAlterConfigs");
        let resp = self.call(IncrementalAlterConfigsRequest::default().with_resources(vec![res]), 1, false).await?;
        let r = resp
            .responses
            .first()
            .ok_or_else(|| AdminError::Protocol("empty IncrementalAlterConfigs response".into()))?;
        AdminError::check(r.error_code, r.error_message.as_ref())
    }

    /// Brokers from a fresh Metadata, with addresses resolved.
    async fn broker_addrs(&self) -> Result<Vec<BrokerAddr>, AdminError> {
        let md = self.metadata(Some(&[])).await?;
        Ok(md.brokers.iter().map(|b| BrokerAddr { id: b.id, addr: self.resolve(&b.host, b.port) }).collect())
    }

    /// Group ids of every broker's coordinated groups (each broker lists only its own).
    pub async fn list_groups(&self) -> Result<Vec<String>, AdminError> {
        let mut groups = Vec::new();
        for BrokerAddr { id, addr } in self.broker_addrs().await? {
            let resp = self.call_node(id, addr, ListGroupsRequest::default(), 3).await?;
            AdminError::check(resp.error_code, None)?;
            groups.extend(resp.groups.into_iter().map(|g| g.group_id.to_string()));
        }
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    /// Committed offsets of `group`, asked of its coordinator.
    pub async fn offset_fetch(&self, group: &str) -> Result<Vec<GroupOffset>, AdminError> {
        let fc = self.call(FindCoordinatorRequest::default().with_key(s(group)), 3, true).await?;
        AdminError::check(fc.error_code, fc.error_message.as_ref())?;
        let addr = self.resolve(&fc.host, fc.port);
        // Version 7 at most: 8 moved to batched groups.
        let req = OffsetFetchRequest::default().with_group_id(GroupId(s(group))).with_topics(None);
        let resp = self.call_node(fc.node_id.0, addr, req, 7).await?;
        AdminError::check(resp.error_code, None)?;
        let mut out = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code == 0 && p.committed_offset >= 0 {
                    out.push(GroupOffset {
                        group: group.to_string(),
                        topic: t.name.to_string(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Latest (high watermark) offset of each partition, asked of each leader.
    /// `partitions` as Metadata returned them.
    pub async fn list_offsets_latest(
        &self,
        topic: &str,
        partitions: &[PartitionLeader],
    ) -> Result<HashMap<i32, i64>, AdminError> {
        let mut out = HashMap::new();
        for (leader, parts) in by_leader(partitions) {
            let addr = self.leader_addr(leader).await?;
            let ps = parts
                .iter()
                .map(|p| {
                    list_offsets_request::ListOffsetsPartition::default().with_partition_index(*p).with_timestamp(-1)
                })
                .collect();
            let t =
                list_offsets_request::ListOffsetsTopic::default().with_name(TopicName(s(topic))).with_partitions(ps);
            let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![t]);
            let resp = self.call_node(leader, addr, req, 7).await?;
            for p in resp.topics.into_iter().flat_map(|t| t.partitions) {
                AdminError::check(p.error_code, None)?;
                out.insert(p.partition_index, p.offset);
            }
        }
        Ok(out)
    }

    /// Bytes of every partition replica in the cluster, one DescribeLogDirs per broker
    /// (each reports only its own replicas).
    pub async fn partition_sizes(&self) -> Result<HashMap<ReplicaKey, i64>, AdminError> {
        let mut out = HashMap::new();
        for BrokerAddr { id, addr } in self.broker_addrs().await? {
            let resp = self.call_node(id, addr, DescribeLogDirsRequest::default().with_topics(None), 4).await?;
            AdminError::check(resp.error_code, None)?;
            for dir in resp.results.into_iter().filter(|d| d.error_code == 0) {
                for t in dir.topics {
                    for p in t.partitions {
                        let key = ReplicaKey { topic: t.name.to_string(), partition: p.partition_index, broker: id };
                        *out.entry(key).or_default() += p.partition_size;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Committed offsets of every group.
    pub async fn all_group_offsets(&self) -> Result<Vec<GroupOffset>, AdminError> {
        let mut out = Vec::new();
        for group in self.list_groups().await? {
            out.extend(self.offset_fetch(&group).await?);
        }
        Ok(out)
    }

    async fn leader_addr(&self, leader: i32) -> Result<String, AdminError> {
        if let Some((addr, _)) = self.nodes.lock().unwrap().get(&leader) {
            return Ok(addr.clone());
        }
        self.broker_addrs()
            .await?
            .into_iter()
            .find(|b| b.id == leader)
            .map(|b| b.addr)
            .ok_or_else(|| AdminError::Protocol(format!("broker {leader} not in metadata")))
    }
}

/// Partition indexes grouped by leader; partitions without a leader (-1) are skipped.
fn by_leader(partitions: &[PartitionLeader]) -> BTreeMap<i32, Vec<i32>> {
    let mut m: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in partitions.iter().filter(|p| p.leader >= 0) {
        m.entry(p.leader).or_default().push(p.partition);
    }
    m
}

/// A partition and its leader's broker id (-1: none), as Metadata reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLeader {
    pub partition: i32,
    pub leader: i32,
}

/// A broker and the address the operator reaches it at.
#[derive(Debug, Clone)]
struct BrokerAddr {
    id: i32,
    addr: String,
}

/// One group's committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One replica of a partition: which broker holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplicaKey {
    pub topic: String,
    pub partition: i32,
    pub broker: i32,
}

/// DescribeCluster's answer.
#[derive(Debug, Clone)]
#[allow(dead_code)] // part of the admin API; no controller needs it yet
pub struct ClusterDescription {
    pub cluster_id: String,
    pub controller_id: i32,
}

/// One topic's CreateTopics result: its id (may be empty) or why it was not created.
#[derive(Debug, Clone)]
pub struct CreateResult {
    pub name: String,
    pub topic_id: Result<String, AdminError>,
}

/// Collects creates for a short window and sends them as one CreateTopics. Holds the
/// client weakly so the task ends with it.
async fn create_batcher(client: Weak<AdminClient>, mut rx: mpsc::UnboundedReceiver<CreateJob>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + CREATE_BATCH_WINDOW;
        while jobs.len() < CREATE_BATCH_MAX {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => jobs.push(job),
                _ => break,
            }
        }
        let Some(client) = client.upgrade() else { return };
        // A name asked twice in one batch would fail as a duplicate: send it once.
        let mut topics: Vec<NewTopic> = Vec::new();
        for (t, _) in &jobs {
            if !topics.iter().any(|x| x.name == t.name) {
                topics.push(t.clone());
            }
        }
        let results = client.create_topics(&topics).await;
        for (t, done) in jobs {
            let r = match &results {
                Ok(rs) => rs
                    .iter()
                    .find(|r| r.name == t.name)
                    .map(|r| r.topic_id.clone())
                    .unwrap_or_else(|| Err(AdminError::Protocol(format!("no result for topic {}", t.name)))),
                Err(e) => Err(e.clone()),
            };
            let _ = done.send(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_group_by_leader() {
        let pl = |partition, leader| PartitionLeader { partition, leader };
        let m = by_leader(&[pl(0, 1), pl(1, 2), pl(2, 1), pl(3, -1)]);
        assert_eq!(m.into_iter().collect::<Vec<_>>(), vec![(1, vec![0, 2]), (2, vec![1])]);
    }

    #[test]
    fn pod_dns_names_resolve_to_pod_ips() {
        let c = AdminClient::new(Duration::from_secs(1), Arc::new(|_| {}));
        c.set_endpoints(Endpoints {
            bootstrap: vec![],
            pod_ips: [("events-0".to_string(), "10.0.0.5".to_string())].into(),
        });
        assert_eq!(c.resolve("events-0.events-brokers.ns.svc", 9092), "10.0.0.5:9092");
        assert_eq!(c.resolve("10.0.0.9", 9092), "10.0.0.9:9092");
    }

    /// Against a running broker: `FJORD_TEST_BOOTSTRAP=127.0.0.1:9092 cargo test -p
    /// fjord-operator -- --ignored admin_round_trip` (the e2e suite covers it otherwise).
    #[tokio::test]
    #[ignore]
    async fn admin_round_trip() {
        let Ok(addr) = std::env::var("FJORD_TEST_BOOTSTRAP") else { return };
        let c = Arc::new(AdminClient::new(Duration::from_secs(5), Arc::new(|_| {})));
        c.set_endpoints(Endpoints { bootstrap: vec![addr], pod_ips: HashMap::new() });
        let name = "fjord-operator-admin-test".to_string();
        let _ = c.delete_topic(&name).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let configs: BTreeMap<String, String> = [("retention.ms".to_string(), "1000".to_string())].into();
        let id = c
            .create_topic(NewTopic { name: name.clone(), partitions: 2, replication_factor: 1, configs })
            .await
            .unwrap();
        let md = c.metadata(Some(std::slice::from_ref(&name))).await.unwrap();
        assert_eq!(md.topics[0].partitions.len(), 2);
        assert_eq!(md.topics[0].id, id);
        c.create_partitions(&name, 3).await.unwrap();
        let set: BTreeMap<String, String> = [("segment.ms".to_string(), "60000".to_string())].into();
        c.incremental_alter_topic_configs(&name, &set, &["retention.ms".to_string()]).await.unwrap();
        let cfg = c.describe_topic_configs(&name).await.unwrap();
        let dynamic: Vec<_> =
            cfg.iter().filter(|e| e.source == super::super::SOURCE_DYNAMIC_TOPIC).map(|e| e.name.as_str()).collect();
        assert_eq!(dynamic, vec!["segment.ms"]);
        let md = c.metadata(Some(std::slice::from_ref(&name))).await.unwrap();
        let parts: Vec<PartitionLeader> =
            md.topics[0].partitions.iter().map(|p| PartitionLeader { partition: p.index, leader: p.leader }).collect();
        assert_eq!(c.list_offsets_latest(&name, &parts).await.unwrap().len(), 3);
        c.partition_sizes().await.unwrap();
        c.all_group_offsets().await.unwrap();
        c.describe_cluster().await.unwrap();
        let dup = c
            .create_topic(NewTopic {
                name: name.clone(),
                partitions: 1,
                replication_factor: 1,
                configs: BTreeMap::new(),
            })
            .await
            .unwrap_err();
        assert!(dup.is(ResponseError::TopicAlreadyExists), "{dup}");
        c.delete_topic(&name).await.unwrap();
    }
}
