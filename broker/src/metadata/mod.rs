//! Cluster metadata on this node: the image every node rebuilds by applying the Raft log
//! (the quorum's replicated state machine), and the writes that go through the quorum.
//! Reads are local and never wait; a write returns once the command is committed and
//! applied here too, so a caller that wrote a topic sees it in its own next read.

pub mod image;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

pub use image::{BrokerMeta, ClusterImage, Command, Endpoint, IsrChange, Outcome, PartitionMeta, TopicMeta};

use crate::quorum::{Machine, Quorum, QuorumError, StaleDecision};

/// How long a metadata write may take, forwarding and leader changes included.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A valid Kafka topic name: 1-249 chars of [a-zA-Z0-9._-], not "." or "..".
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub fn random_cluster_id() -> String {
    // Kafka's cluster ids are base64url (no padding) of a random UUID: 22 chars.
    let bytes = Uuid::new_v4().into_bytes();
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(A[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(A[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

/// What `apply` hands back to the writer: the outcome, and the log index it was applied
/// at (so a node that forwarded the write can wait until it has applied it too).
#[derive(Serialize, Deserialize)]
struct Applied {
    index: u64,
    outcome: Outcome,
}

pub struct MetadataStore {
    image: RwLock<ClusterImage>,
    applied: watch::Sender<u64>,
    quorum: OnceLock<Arc<Quorum>>,
    /// Controller decisions this node refused to apply because a deposed controller took them.
    stale_decisions: AtomicU64,
}

impl Default for MetadataStore {
    fn default() -> Self {
        MetadataStore {
            image: RwLock::new(ClusterImage::default()),
            applied: watch::channel(0).0,
            quorum: OnceLock::new(),
            stale_decisions: AtomicU64::new(0),
        }
    }
}

impl Machine for MetadataStore {
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8> {
        let outcome = match serde_json::from_slice::<Command>(command) {
            Ok(cmd) => self.image.write().apply(index, cmd),
            Err(e) => {
                // Every node fails the same way on the same bytes, so they stay equal.
                tracing::error!(index, error = %e, "undecodable metadata command");
                Outcome::Error(ResponseError::InvalidRequest.code())
            }
        };
        self.applied.send_replace(index);
        serde_json::to_vec(&Applied { index, outcome }).expect("outcomes serialize")
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&*self.image.read()).expect("the image serializes")
    }

    fn reject_stale(&self, index: u64, stale: StaleDecision) -> Vec<u8> {
        tracing::warn!(
            index,
            decided_term = stale.decided_term,
            entry_term = stale.entry_term,
            "rejected a controller decision taken by a deposed controller"
        );
        self.stale_decisions.fetch_add(1, Ordering::Relaxed);
        self.applied.send_replace(index);
        let outcome = Outcome::Error(ResponseError::StaleControllerEpoch.code());
        serde_json::to_vec(&Applied { index, outcome }).expect("outcomes serialize")
    }

    fn restore(&self, snapshot: &[u8]) -> anyhow::Result<()> {
        let img: ClusterImage = serde_json::from_slice(snapshot)?;
        *self.image.write() = img;
        self.applied.send_modify(|_| {});
        Ok(())
    }
}

impl MetadataStore {
    pub fn set_quorum(&self, q: Arc<Quorum>) {
        let _ = self.quorum.set(q);
    }

    pub fn quorum(&self) -> Option<&Arc<Quorum>> {
        self.quorum.get()
    }

    /// Fires after every applied command (or snapshot restore).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Read the image without copying it.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterImage) -> T) -> T {
        f(&self.image.read())
    }

    pub fn cluster_id(&self) -> String {
        self.image.read().cluster_id.clone()
    }

    pub fn topics(&self) -> Vec<TopicMeta> {
        self.image.read().topics.values().cloned().collect()
    }

    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        self.image.read().topics.get(name).cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<TopicMeta> {
        self.image.read().topics.values().find(|t| t.id == id).cloned()
    }

    pub fn brokers(&self) -> Vec<BrokerMeta> {
        self.image.read().brokers.values().cloned().collect()
    }

    pub fn broker(&self, id: i32) -> Option<BrokerMeta> {
        self.image.read().brokers.get(&id).cloned()
    }

    /// Controller decisions rejected here since this process started (see `Machine::reject_stale`).
    pub fn stale_decisions(&self) -> u64 {
        self.stale_decisions.load(Ordering::Relaxed)
    }

    /// Commit `cmd` through the quorum and wait until this node has applied it.
    pub async fn write(&self, cmd: &Command) -> Result<Outcome, ResponseError> {
        self.write_with(cmd, None).await
    }

    /// `write` for a decision the active controller took while leading in `term`: it fails
    /// with STALE_CONTROLLER_EPOCH, changing nothing, if a later controller appends it.
    pub async fn write_decided(&self, cmd: &Command, term: u64) -> Result<Outcome, ResponseError> {
        self.write_with(cmd, Some(term)).await
    }

    async fn write_with(&self, cmd: &Command, decided_term: Option<u64>) -> Result<Outcome, ResponseError> {
        let q = self.quorum.get().ok_or(ResponseError::NotController)?;
        let bytes = serde_json::to_vec(cmd).expect("commands serialize");
        let written = match decided_term {
            Some(term) => q.write_decided(bytes, term, WRITE_TIMEOUT).await,
            None => q.write(bytes, WRITE_TIMEOUT).await,
        };
        let out = written.map_err(|e| {
            tracing::warn!(error = %e, "metadata write failed");
            match e {
                QuorumError::Timeout => ResponseError::RequestTimedOut,
                _ => ResponseError::NotController,
            }
        })?;
        let applied: Applied = serde_json::from_slice(&out).map_err(|_| ResponseError::UnknownServerError)?;
        let mut rx = self.applied.subscribe();
        let wait = rx.wait_for(|i| *i >= applied.index);
        if tokio::time::timeout(WRITE_TIMEOUT, wait).await.is_err() {
            return Err(ResponseError::RequestTimedOut);
        }
        match applied.outcome {
            Outcome::Error(code) => {
                Err(ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError))
            }
            o => Ok(o),
        }
    }

    pub async fn create_topics(&self, topics: Vec<TopicMeta>) -> Vec<Result<TopicMeta, ResponseError>> {
        let n = topics.len();
        match self.write(&Command::CreateTopics { topics }).await {
            Ok(Outcome::Topics(v)) => v
                .into_iter()
                .map(|r| r.map_err(|c| ResponseError::try_from_code(c).unwrap_or(ResponseError::UnknownServerError)))
                .collect(),
            Ok(_) => (0..n).map(|_| Err(ResponseError::UnknownServerError)).collect(),
            Err(e) => (0..n).map(|_| Err(e)).collect(),
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<TopicMeta, ResponseError> {
        match self.write(&Command::DeleteTopic { name: name.to_string() }).await? {
            Outcome::Topic(t) => Ok(t),
            _ => Err(ResponseError::UnknownServerError),
        }
    }

    pub async fn add_partitions(&self, name: &str, added: Vec<PartitionMeta>) -> Result<TopicMeta, ResponseError> {
        match self.write(&Command::CreatePartitions { name: name.to_string(), added }).await? {
            Outcome::Topic(t) => Ok(t),
            _ => Err(ResponseError::UnknownServerError),
        }
    }

    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, ResponseError> {
        match self.write(&Command::SetTopicConfigs { name: name.to_string(), configs }).await? {
            Outcome::Topic(t) => Ok(t),
            _ => Err(ResponseError::UnknownServerError),
        }
    }

    /// AlterUserScramCredentials, applied in one quorum entry: a code per deletion, then per
    /// upsertion.
    pub async fn alter_scram_credentials(
        &self,
        deletions: Vec<(String, i8)>,
        upsertions: Vec<(String, i8, image::ScramCredentialMeta)>,
    ) -> Result<Vec<i16>, ResponseError> {
        match self.write(&Command::AlterScramCredentials { deletions, upsertions }).await? {
            Outcome::Codes(c) => Ok(c),
            _ => Err(ResponseError::UnknownServerError),
        }
    }

    pub async fn set_broker_configs(
        &self,
        resource: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), ResponseError> {
        self.write(&Command::SetBrokerConfigs { resource: resource.to_string(), configs }).await.map(|_| ())
    }

    /// A block of producer ids no other broker (or earlier incarnation) was handed.
    pub async fn allocate_producer_ids(&self, count: i64) -> Result<i64, ResponseError> {
        match self.write(&Command::AllocateProducerIds { count }).await? {
            Outcome::ProducerIds { first } => Ok(first),
            _ => Err(ResponseError::UnknownServerError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_fence_changes_nothing_and_answers_stale_controller_epoch() {
        let md = MetadataStore::default();
        let apply = |index, cmd: &Command| md.apply(index, &serde_json::to_vec(cmd).unwrap());
        let broker =
            BrokerMeta { id: 1, endpoints: vec![], rack: None, http: None, fenced: true, epoch: 0, controller: true };
        apply(1, &Command::RegisterBroker { broker });
        apply(2, &Command::Unfence { id: 1 });
        assert!(!md.broker(1).unwrap().fenced);

        // Command::Fence { id: 1 }, decided in term 3 and appended in term 4.
        let out = md.reject_stale(3, StaleDecision { decided_term: 3, entry_term: 4 });
        let applied: Applied = serde_json::from_slice(&out).unwrap();
        assert_eq!(applied.index, 3);
        assert!(matches!(applied.outcome, Outcome::Error(c) if c == ResponseError::StaleControllerEpoch.code()));
        assert!(!md.broker(1).unwrap().fenced, "the stale fence was not applied");
        assert_eq!(md.applied_index(), 3, "a writer waiting for index 3 is released");
        assert_eq!(md.stale_decisions(), 1);
    }
}
