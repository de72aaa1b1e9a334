//! The log cleaner threads (Kafka's LogCleaner and LogCleanerManager): each pass picks the
//! dirtiest compacted log this node hosts, cleans it with `storage::cleaner` off the
//! partition lock, and swaps the result in under it. Every replica cleans its own log, as
//! in Kafka: cleaning never changes an offset, so replicas stay comparable.
//!
//! A log whose cleaning fails (a corrupt or oversized batch, a full disk) is set aside as
//! uncleanable until the broker restarts, and counted, so one bad log does not stop the
//! others from being cleaned.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::metrics::Metrics;
use crate::replica_manager::{PartitionRef, ReplicaManager, TopicPartition};
use crate::storage::cleaner::{self, CleanerSettings};
use crate::storage::log::Cleanable;

/// Largest records section the cleaner decompresses: a batch is at most
/// `message.max.bytes` compressed, and codecs rarely gain more than 16x on real data.
const MAX_DECOMPRESSED_FACTOR: usize = 64;

pub struct LogCleaner {
    replicas: Arc<ReplicaManager>,
    metrics: Arc<Metrics>,
    settings: CleanerSettings,
    threads: usize,
    backoff: Duration,
    enabled: bool,
    /// Logs being cleaned by some thread.
    in_progress: Mutex<HashSet<TopicPartition>>,
    /// Logs the cleaner gave up on, with the reason.
    uncleanable: Mutex<HashMap<TopicPartition, String>>,
    /// Largest dirty ratio seen by the last pass, in millionths.
    max_dirty_ratio: AtomicU64,
}

impl LogCleaner {
    pub fn new(config: &BrokerConfig, replicas: Arc<ReplicaManager>, metrics: Arc<Metrics>) -> Arc<Self> {
        let c = &config.log_cleaner;
        Arc::new(LogCleaner {
            replicas,
            metrics,
            settings: CleanerSettings {
                // Kafka splits the buffer among the threads.
                dedupe_buffer_bytes: c.dedupe_buffer_size / c.threads.max(1),
                io_max_bytes_per_second: c.io_max_bytes_per_second,
                max_decompressed_bytes: (config.message_max_bytes.max(1) as usize)
                    .saturating_mul(MAX_DECOMPRESSED_FACTOR)
                    .max(64 << 20),
            },
            threads: c.threads.max(1),
            backoff: Duration::from_millis(c.backoff_ms.max(10)),
            enabled: c.enable,
            in_progress: Mutex::new(HashSet::new()),
            uncleanable: Mutex::new(HashMap::new()),
            max_dirty_ratio: AtomicU64::new(0),
        })
    }

    /// Start `log.cleaner.threads` threads (none with `log.cleaner.enable=false`). They
    /// are plain threads: a cleaning reads and writes whole segments, which is the
    /// blocking file work that must stay off the runtime's workers.
    pub fn spawn(self: &Arc<Self>) {
        if !self.enabled {
            return;
        }
        for i in 0..self.threads {
            let me = self.clone();
            let spawned = std::thread::Builder::new().name(format!("log-cleaner-{i}")).spawn(move || loop {
                if !me.clean_one() {
                    std::thread::sleep(me.backoff);
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "starting a log cleaner thread failed");
            }
        }
    }

    pub fn uncleanable_count(&self) -> usize {
        self.uncleanable.lock().len()
    }

    pub fn max_dirty_ratio(&self) -> f64 {
        self.max_dirty_ratio.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// The log to clean now: logs past their max compaction lag or delete horizon first,
    /// then the dirtiest above its `min.cleanable.dirty.ratio`.
    fn pick(&self, now: i64) -> Option<(TopicPartition, PartitionRef)> {
        let busy = self.in_progress.lock().clone();
        let skipped = self.uncleanable.lock().keys().cloned().collect::<HashSet<_>>();
        let mut best: Option<(Cleanable, TopicPartition, PartitionRef)> = None;
        let mut max_ratio = 0.0f64;
        for part in self.replicas.all() {
            let (tp, c) = {
                let p = part.lock();
                let tp = TopicPartition::new(&p.topic, p.index);
                if !p.log.config.compact {
                    continue;
                }
                (tp, p.log.cleanable(p.last_stable_offset(), now))
            };
            let Some(c) = c else { continue };
            max_ratio = max_ratio.max(c.dirty_ratio);
            if busy.contains(&tp) || skipped.contains(&tp) {
                continue;
            }
            let better = best.as_ref().is_none_or(|(b, _, _)| (c.due, c.dirty_ratio) > (b.due, b.dirty_ratio));
            if better {
                best = Some((c, tp, part));
            }
        }
        self.max_dirty_ratio.store((max_ratio * 1e6) as u64, Ordering::Relaxed);
        best.map(|(_, tp, part)| (tp, part))
    }

    /// Clean the dirtiest log, if any; false when there was nothing to do.
    pub fn clean_one(&self) -> bool {
        let now = now_ms();
        let Some((tp, part)) = self.pick(now) else { return false };
        if !self.in_progress.lock().insert(tp.clone()) {
            return false;
        }
        let started = Instant::now();
        let result = self.clean(&part, now);
        self.in_progress.lock().remove(&tp);
        match result {
            Ok(true) => {
                self.metrics.cleaner.runs.inc();
                self.metrics.cleaner.duration.observe(started.elapsed().as_secs_f64());
            }
            Ok(false) => {
                tracing::debug!(topic = %tp.topic, partition = tp.partition, "log changed during cleaning; retried later")
            }
            Err(e) => {
                tracing::error!(topic = %tp.topic, partition = tp.partition, error = %format!("{e:#}"), "log cleaning failed; the log is marked uncleanable");
                self.uncleanable.lock().insert(tp, format!("{e:#}"));
            }
        }
        true
    }

    fn clean(&self, part: &PartitionRef, now: i64) -> anyhow::Result<bool> {
        let job = {
            let p = part.lock();
            // Up to the last stable offset, as Kafka's cleaner: an open transaction may still
            // abort, and its records must not supersede committed ones meanwhile.
            let upper = p.last_stable_offset();
            let mut job = p.log.cleaning_job(upper, now, p.producer_last_batches())?;
            for a in p.aborted_transactions(p.log.log_start_offset(), upper) {
                job.aborted.entry(a.producer_id).or_default().push((a.first_offset, a.last_offset));
            }
            job
        };
        if job.segments.is_empty() {
            return Ok(false);
        }
        let cleaned = cleaner::clean(&job, &self.settings, now)?;
        let (swapped, removed) = {
            let mut p = part.lock();
            match p.log.swap_cleaned(&job, &cleaned, now_ms()) {
                Ok(v) => v,
                Err(e) => return Err(e.context("swapping in the cleaned segments")),
            }
        };
        removed.delete()?;
        if swapped {
            self.metrics.cleaner.read_bytes.inc_by(cleaned.bytes_read);
            self.metrics.cleaner.written_bytes.inc_by(cleaned.bytes_written);
            self.metrics.cleaner.records_removed.inc_by(cleaned.records_removed);
            let p = part.lock();
            tracing::info!(
                topic = %p.topic,
                partition = p.index,
                read = cleaned.bytes_read,
                written = cleaned.bytes_written,
                removed = cleaned.records_removed,
                clean_up_to = cleaned.clean_up_to,
                secs = format!("{:.2}", (now_ms() - now) as f64 / 1000.0),
                "log cleaned"
            );
        }
        Ok(swapped)
    }
}
