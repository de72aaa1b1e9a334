//! The partitions this node hosts, keyed by topic and index, with the wake-up signal that
//! long-polling fetches wait on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::metadata::{ClusterImage, TopicMeta};
use crate::partition::{Partition, Transition};
use crate::storage::log::{LogConfig, RemovedSegments};
use crate::topic_config;

pub type PartitionRef = Arc<Mutex<Partition>>;

/// A partition by topic name and index (Kafka's TopicPartition).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> Self {
        TopicPartition { topic: topic.to_string(), partition }
    }
}

pub struct ReplicaManager {
    data_dir: PathBuf,
    node_id: i32,
    partitions: RwLock<HashMap<TopicPartition, PartitionRef>>,
    appended: watch::Sender<u64>,
    /// High watermarks from the last checkpoint, used when a partition is opened.
    checkpoint: Mutex<HashMap<TopicPartition, i64>>,
    /// One reconcile at a time: two would open the same partition twice.
    pub reconcile_lock: tokio::sync::Mutex<()>,
    /// One checkpoint write at a time: the periodic one and the shutdown one share a
    /// temporary file, and the second rename would find it gone.
    checkpoint_write: Mutex<()>,
}

fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{index}"))
}

const PARTITION_METADATA: &str = "partition.metadata";
const HW_CHECKPOINT: &str = "replication-offset-checkpoint";

/// What one reconcile pass changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Partitions whose role changed, with the new role.
    pub transitions: Vec<(TopicPartition, Transition)>,
    /// Partitions no longer hosted here.
    pub removed: Vec<TopicPartition>,
    /// ISR changes of partitions this node led before and after (whoever decided them:
    /// this leader's AlterPartition, or the controller fencing a broker).
    pub isr_shrinks: u64,
    pub isr_expands: u64,
}

impl ReplicaManager {
    pub fn new(data_dir: &Path, node_id: i32) -> Self {
        let mut checkpoint = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(data_dir.join(HW_CHECKPOINT)) {
            for line in text.lines() {
                let mut it = line.rsplitn(3, ' ');
                if let (Some(hw), Some(p), Some(t)) = (it.next(), it.next(), it.next()) {
                    if let (Ok(hw), Ok(p)) = (hw.parse::<i64>(), p.parse::<i32>()) {
                        checkpoint.insert(TopicPartition::new(t, p), hw);
                    }
                }
            }
        }
        ReplicaManager {
            data_dir: data_dir.to_path_buf(),
            node_id,
            partitions: RwLock::new(HashMap::new()),
            appended: watch::channel(0).0,
            checkpoint: Mutex::new(checkpoint),
            reconcile_lock: tokio::sync::Mutex::new(()),
            checkpoint_write: Mutex::new(()),
        }
    }

    pub fn get(&self, topic: &str, index: i32) -> Option<PartitionRef> {
        self.partitions.read().get(&TopicPartition::new(topic, index)).cloned()
    }

    pub fn all(&self) -> Vec<PartitionRef> {
        self.partitions.read().values().cloned().collect()
    }

    fn open_partition(
        &self,
        broker: &BrokerConfig,
        topic: &TopicMeta,
        index: i32,
        cfg: &LogConfig,
    ) -> Result<PartitionRef> {
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
        let hw = self.checkpoint.lock().get(&TopicPartition::new(&topic.name, index)).copied();
        let p = Partition::open(&dir, &topic.name, index, topic.id, cfg.clone(), broker.node_id, hw)
            .with_context(|| format!("opening partition {}-{}", topic.name, index))?;
        Ok(Arc::new(Mutex::new(p)))
    }

    /// Make the hosted replicas match the image: open the ones assigned here, take each
    /// one's leader, epoch and ISR, and remove the ones no longer assigned (with
    /// `remove_strays`, also directories of topics the image does not know).
    pub fn reconcile(&self, broker: &BrokerConfig, image: &ClusterImage, now_ms: i64, remove_strays: bool) -> Changes {
        let mut changes = Changes::default();
        let mut wanted: HashSet<TopicPartition> = HashSet::new();
        for t in image.topics.values() {
            let mut cfg: Option<LogConfig> = None;
            for (i, meta) in t.assignment.iter().enumerate() {
                if !meta.replicas.contains(&self.node_id) {
                    continue;
                }
                let key = TopicPartition::new(&t.name, i as i32);
                wanted.insert(key.clone());
                let existing = self.partitions.read().get(&key).cloned();
                let part = match existing {
                    Some(p) if p.lock().topic_id == t.id => {
                        // Topic configs may have changed (AlterConfigs on any node).
                        p.lock().log.config =
                            cfg.get_or_insert_with(|| topic_config::log_config(broker, &t.configs)).clone();
                        p
                    }
                    _ => {
                        let cfg = cfg.get_or_insert_with(|| topic_config::log_config(broker, &t.configs));
                        match self.open_partition(broker, t, i as i32, cfg) {
                            Ok(p) => {
                                self.partitions.write().insert(key.clone(), p.clone());
                                p
                            }
                            Err(e) => {
                                tracing::error!(topic = %t.name, partition = i, error = %e, "opening partition failed");
                                continue;
                            }
                        }
                    }
                };
                let mut p = part.lock();
                let throttled =
                    |key| t.configs.get(key).is_some_and(|v| crate::throttle::listed(v, i as i32, self.node_id));
                p.leader_throttled = throttled(crate::throttle::LEADER_REPLICAS);
                p.follower_throttled = throttled(crate::throttle::FOLLOWER_REPLICAS);
                let before = (p.is_leader(), p.leader_epoch, p.isr.len());
                let tr = p.apply_metadata(meta, now_ms);
                if before.0 && p.is_leader() && before.1 == p.leader_epoch {
                    match p.isr.len().cmp(&before.2) {
                        std::cmp::Ordering::Less => changes.isr_shrinks += 1,
                        std::cmp::Ordering::Greater => changes.isr_expands += 1,
                        std::cmp::Ordering::Equal => {}
                    }
                }
                drop(p);
                if tr != Transition::None {
                    changes.transitions.push((key, tr));
                }
            }
        }
        let gone: Vec<TopicPartition> =
            self.partitions.read().keys().filter(|k| !wanted.contains(*k)).cloned().collect();
        for key in gone {
            if let Some(p) = self.partitions.write().remove(&key) {
                let dir = p.lock().log.dir().to_path_buf();
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::error!(dir = %dir.display(), error = %e, "removing partition data failed");
                }
                changes.removed.push(key);
            }
        }
        if remove_strays {
            self.remove_strays(image);
        }
        if !changes.transitions.is_empty() || !changes.removed.is_empty() {
            self.notify_appended();
        }
        changes
    }

    /// Directories of partitions this node does not host (topics deleted while it was
    /// down): Kafka deletes them once it has caught up with metadata, and so do we.
    fn remove_strays(&self, image: &ClusterImage) {
        let hosted: HashSet<PathBuf> = self.all().iter().map(|p| p.lock().log.dir().to_path_buf()).collect();
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else { return };
        for e in entries.flatten() {
            let path = e.path();
            if !path.join(PARTITION_METADATA).exists() || hosted.contains(&path) {
                continue;
            }
            let name = e.file_name().to_string_lossy().to_string();
            let Some((topic, _)) = name.rsplit_once('-') else { continue };
            let _ = image;
            tracing::info!(dir = %path.display(), topic, "removing data of a partition not assigned to this broker");
            let _ = std::fs::remove_dir_all(&path);
        }
    }

    /// Write every hosted partition's high watermark (one file, atomically): a restarted
    /// leader must not expose records its followers never had.
    pub fn checkpoint_high_watermarks(&self) -> Result<()> {
        let _one = self.checkpoint_write.lock();
        let mut entries: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for p in self.all() {
            let p = p.lock();
            entries.insert(TopicPartition::new(&p.topic, p.index), p.high_watermark());
        }
        let mut text = String::new();
        for (tp, hw) in &entries {
            text.push_str(&format!("{} {} {hw}\n", tp.topic, tp.partition));
        }
        let path = self.data_dir.join(HW_CHECKPOINT);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        *self.checkpoint.lock() = entries.into_iter().collect();
        Ok(())
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
            let mut removed = RemovedSegments::default();
            if retention {
                match p.log.apply_retention(now_ms) {
                    Ok(r) if r.is_empty() => {}
                    Ok(r) => {
                        tracing::info!(topic = %p.topic, partition = p.index, segments = r.len(), start = p.log.log_start_offset(), "retention removed segments");
                        removed = r;
                    }
                    Err(e) => tracing::error!(topic = %p.topic, partition = p.index, error = %e, "retention failed"),
                }
            }
            let due = p.log.take_due_syncs();
            let (topic, index) = (p.topic.clone(), p.index);
            // The unlinks and fsyncs wait on the disk: after the lock is released.
            drop(p);
            if let Err(e) = removed.delete() {
                tracing::error!(topic = %topic, partition = index, error = %e, "deleting removed segments failed");
            }
            if let Err(e) = due.and_then(|d| d.run()) {
                tracing::error!(topic = %topic, partition = index, error = %e, "flush failed");
            }
        }
    }

    /// Flush everything (clean shutdown).
    pub fn flush_all(&self) {
        for p in self.all() {
            let mut p = p.lock();
            if let Err(e) = p.close() {
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "flushing at shutdown failed");
            }
        }
    }
}
