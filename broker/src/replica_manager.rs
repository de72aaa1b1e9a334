//! The partitions this node hosts, keyed by topic and index, with the wake-up signal that
//! long-polling fetches wait on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::metadata::TopicMeta;
use crate::partition::Partition;
use crate::storage::log::LogConfig;
use crate::topic_config;

pub type PartitionRef = Arc<Mutex<Partition>>;

pub struct ReplicaManager {
    data_dir: PathBuf,
    partitions: RwLock<HashMap<(String, i32), PartitionRef>>,
    appended: watch::Sender<u64>,
}

fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{index}"))
}

const PARTITION_METADATA: &str = "partition.metadata";

impl ReplicaManager {
    pub fn new(data_dir: &Path) -> Self {
        ReplicaManager {
            data_dir: data_dir.to_path_buf(),
            partitions: RwLock::new(HashMap::new()),
            appended: watch::channel(0).0,
        }
    }

    pub fn get(&self, topic: &str, index: i32) -> Option<PartitionRef> {
        self.partitions.read().get(&(topic.to_string(), index)).cloned()
    }

    pub fn all(&self) -> Vec<PartitionRef> {
        self.partitions.read().values().cloned().collect()
    }

    /// Open or create the replica of every partition of `topic`.
    pub fn ensure_topic(&self, broker: &BrokerConfig, topic: &TopicMeta) -> Result<()> {
        let cfg = topic_config::log_config(broker, &topic.configs);
        for index in 0..topic.partitions {
            if self.get(&topic.name, index).is_some() {
                continue;
            }
            let dir = partition_dir(&self.data_dir, &topic.name, index);
            // A directory left by a deleted topic of the same name is not this topic's data.
            let marker = dir.join(PARTITION_METADATA);
            if let Ok(text) = std::fs::read_to_string(&marker) {
                if !text.contains(&topic.id.to_string()) {
                    tracing::warn!(dir = %dir.display(), "removing data of a previous topic with the same name");
                    std::fs::remove_dir_all(&dir)?;
                }
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            if !marker.exists() {
                std::fs::write(&marker, format!("version: 0\ntopic_id: {}\n", topic.id))?;
            }
            let epoch = topic.leader_epochs.get(index as usize).copied().unwrap_or(0);
            let p = Partition::open(&dir, &topic.name, index, topic.id, cfg.clone(), epoch)
                .with_context(|| format!("opening partition {}-{}", topic.name, index))?;
            self.partitions.write().insert((topic.name.clone(), index), Arc::new(Mutex::new(p)));
        }
        Ok(())
    }

    pub fn remove_topic(&self, topic: &str) -> Result<()> {
        let removed: Vec<PartitionRef> = {
            let mut map = self.partitions.write();
            let keys: Vec<_> = map.keys().filter(|k| k.0 == topic).cloned().collect();
            keys.iter().filter_map(|k| map.remove(k)).collect()
        };
        for p in removed {
            let dir = p.lock().log.dir().to_path_buf();
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }

    pub fn update_config(&self, topic: &str, cfg: &LogConfig) {
        for p in self.partitions.read().iter().filter(|(k, _)| k.0 == topic).map(|(_, p)| p) {
            p.lock().log.config = cfg.clone();
        }
    }

    /// Wake fetches waiting for data.
    pub fn notify_appended(&self) {
        self.appended.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// One retention and flush pass over every partition.
    pub fn housekeeping(&self, now_ms: i64, retention: bool) {
        for p in self.all() {
            let mut p = p.lock();
            if retention {
                match p.log.apply_retention(now_ms) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(topic = %p.topic, partition = p.index, segments = n, start = p.log.log_start_offset(), "retention removed segments"),
                    Err(e) => tracing::error!(topic = %p.topic, partition = p.index, error = %e, "retention failed"),
                }
            }
            if let Err(e) = p.log.flush_if_due() {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "flush failed");
            }
        }
    }

    /// Flush everything (clean shutdown).
    pub fn flush_all(&self) {
        for p in self.all() {
            let _ = p.lock().log.flush();
        }
    }
}
