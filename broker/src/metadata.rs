//! Cluster metadata: topics (name, id, partition count, config overrides), the cluster id
//! and the producer-id counter. In a single node this node is its own controller and keeps
//! the image in `<log.dir>/__cluster_metadata/image.json`, written atomically (temp file,
//! fsync, rename) before any change is acknowledged. The Raft quorum replaces this store
//! when replication lands; callers already go through the operations below.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kafka_protocol::error::ResponseError;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    pub internal: bool,
    /// Leader epoch per partition; bumps on every leadership change.
    #[serde(default)]
    pub leader_epochs: Vec<i32>,
}

/// A topic to create.
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    pub internal: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct Image {
    cluster_id: String,
    topics: BTreeMap<String, TopicMeta>,
    /// Producer ids below this are handed out; allocated in blocks so the file is not
    /// rewritten for every InitProducerId.
    producer_id_block_end: i64,
}

const PRODUCER_ID_BLOCK: i64 = 1000;

pub struct MetadataStore {
    path: PathBuf,
    image: RwLock<Image>,
    next_producer_id: parking_lot::Mutex<i64>,
}

/// A valid Kafka topic name: 1-249 chars of [a-zA-Z0-9._-], not "." or "..".
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn random_cluster_id() -> String {
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

impl MetadataStore {
    pub fn open(data_dir: &Path, cluster_id: Option<&str>) -> Result<Self> {
        let dir = data_dir.join("__cluster_metadata");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("image.json");
        let image = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice::<Image>(&b).with_context(|| format!("reading {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Image {
                cluster_id: cluster_id.map(str::to_string).unwrap_or_else(random_cluster_id),
                ..Default::default()
            },
            Err(e) => return Err(e.into()),
        };
        if let Some(want) = cluster_id {
            if want != image.cluster_id {
                anyhow::bail!("cluster.id {} does not match the stored cluster id {}", want, image.cluster_id);
            }
        }
        let next = image.producer_id_block_end;
        let store = MetadataStore { path, image: RwLock::new(image), next_producer_id: parking_lot::Mutex::new(next) };
        // Ids of the last block may have been handed out before a crash: skip past them.
        store.image.write().producer_id_block_end = next;
        store.persist(&store.image.read())?;
        Ok(store)
    }

    fn persist(&self, image: &Image) -> Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let data = serde_json::to_vec(image)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn update<T>(&self, f: impl FnOnce(&mut Image) -> Result<T, ResponseError>) -> Result<T, ResponseError> {
        let mut img = self.image.write();
        let mut next = img.clone();
        let out = f(&mut next)?;
        self.persist(&next).map_err(|e| {
            tracing::error!(error = %e, "persisting metadata failed");
            ResponseError::KafkaStorageError
        })?;
        *img = next;
        Ok(out)
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

    #[cfg(test)]
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        internal: bool,
    ) -> Result<TopicMeta, ResponseError> {
        let t = NewTopic { name: name.to_string(), partitions, replication_factor, configs, internal };
        self.create_topics(vec![t]).pop().expect("one result per topic")
    }

    /// Create several topics with one durable write (a CreateTopics request of 100 topics
    /// costs one fsync, not 100).
    pub fn create_topics(&self, topics: Vec<NewTopic>) -> Vec<Result<TopicMeta, ResponseError>> {
        let n = topics.len();
        let out = self.update(|img| {
            Ok(topics
                .into_iter()
                .map(|t| {
                    if !valid_topic_name(&t.name) {
                        return Err(ResponseError::InvalidTopicException);
                    }
                    if t.partitions < 1 {
                        return Err(ResponseError::InvalidPartitions);
                    }
                    if img.topics.contains_key(&t.name) {
                        return Err(ResponseError::TopicAlreadyExists);
                    }
                    let meta = TopicMeta {
                        leader_epochs: vec![0; t.partitions as usize],
                        name: t.name,
                        id: Uuid::new_v4(),
                        partitions: t.partitions,
                        replication_factor: t.replication_factor,
                        configs: t.configs,
                        internal: t.internal,
                    };
                    img.topics.insert(meta.name.clone(), meta.clone());
                    Ok(meta)
                })
                .collect::<Vec<_>>())
        });
        match out {
            Ok(v) => v,
            Err(e) => (0..n).map(|_| Err(e)).collect(),
        }
    }

    pub fn delete_topic(&self, name: &str) -> Result<TopicMeta, ResponseError> {
        self.update(|img| img.topics.remove(name).ok_or(ResponseError::UnknownTopicOrPartition))
    }

    pub fn add_partitions(&self, name: &str, count: i32) -> Result<TopicMeta, ResponseError> {
        self.update(|img| {
            let t = img.topics.get_mut(name).ok_or(ResponseError::UnknownTopicOrPartition)?;
            if count <= t.partitions {
                return Err(ResponseError::InvalidPartitions);
            }
            t.partitions = count;
            t.leader_epochs.resize(count as usize, 0);
            Ok(t.clone())
        })
    }

    pub fn set_topic_configs(&self, name: &str, configs: BTreeMap<String, String>) -> Result<TopicMeta, ResponseError> {
        self.update(|img| {
            let t = img.topics.get_mut(name).ok_or(ResponseError::UnknownTopicOrPartition)?;
            t.configs = configs;
            Ok(t.clone())
        })
    }

    /// Hand out a producer id that was never handed out before, even across crashes.
    pub fn allocate_producer_id(&self) -> Result<i64, ResponseError> {
        let mut next = self.next_producer_id.lock();
        let end = self.image.read().producer_id_block_end;
        if *next >= end {
            self.update(|img| {
                img.producer_id_block_end = end + PRODUCER_ID_BLOCK;
                Ok(())
            })?;
        }
        let id = *next;
        *next += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_producer_ids_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetadataStore::open(dir.path(), None).unwrap();
        let t = s.create_topic("a", 3, 1, BTreeMap::new(), false).unwrap();
        assert_eq!(s.create_topic("a", 3, 1, BTreeMap::new(), false), Err(ResponseError::TopicAlreadyExists));
        assert_eq!(s.create_topic("bad/name", 3, 1, BTreeMap::new(), false), Err(ResponseError::InvalidTopicException));
        let p1 = s.allocate_producer_id().unwrap();
        let p2 = s.allocate_producer_id().unwrap();
        assert_eq!(p2, p1 + 1);
        let cid = s.cluster_id();
        assert_eq!(cid.len(), 22);
        drop(s);
        let s = MetadataStore::open(dir.path(), None).unwrap();
        assert_eq!(s.topic("a").unwrap().id, t.id);
        assert_eq!(s.cluster_id(), cid);
        assert!(s.allocate_producer_id().unwrap() > p2);
        s.add_partitions("a", 5).unwrap();
        assert_eq!(s.topic("a").unwrap().partitions, 5);
        assert_eq!(s.add_partitions("a", 2), Err(ResponseError::InvalidPartitions));
    }
}
