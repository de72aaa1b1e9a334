//! A partition replica on this node: its log, its role (leader or follower of a leader
//! epoch), the high watermark and the idempotent producer state.
//!
//! As leader it tracks how far each follower has fetched: the high watermark is the
//! smallest log end offset in the ISR, and a follower that has not caught up within
//! `replica.lag.time.max.ms` is proposed for removal from the ISR (the controller decides).
//! As follower it appends what the leader sent, byte for byte, and takes the leader's
//! high watermark.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use kafka_protocol::error::ResponseError;
use tokio::sync::watch;
use uuid::Uuid;

use crate::metadata::PartitionMeta;
use crate::producer_state::{AbortedTxn, ProducerStateManager, SequenceCheck};
use crate::storage::batch::{split_batches, split_stored_batches, BatchError};
use crate::storage::control::{self, Marker};
use crate::storage::log::{Log, LogConfig};

/// How producer state was rebuilt (the open's log line, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Offset of the snapshot it started from; 0 with none.
    pub snapshot_offset: i64,
    /// Batch headers read after it.
    pub replayed_batches: u64,
}

/// Rebuild producer state from the newest snapshot the log has and the batch headers after
/// it: the headers say which transactions a marker ended, the markers themselves whether
/// they committed or aborted. The aborts found on the way are indexed again.
fn rebuild_producers(log: &mut Log) -> Result<(ProducerStateManager, Rebuilt)> {
    let (from, mut producers) = log.latest_snapshot(ProducerStateManager::decode)?.unwrap_or_default();
    let mut ended = Vec::new();
    let mut replayed_batches = 0;
    log.for_each_header_from(from, &mut |h| {
        replayed_batches += 1;
        ended.extend(producers.update(h));
    })?;
    log.forget_aborted_from(from)?;
    for t in ended {
        // A marker below the log start (DeleteRecords inside a segment) no longer matters.
        if let Some(b) = log.batch_at(t.marker_offset)? {
            let m = control::parse_marker(&b.bytes, &b.header)?;
            if let Some(aborted) = producers.complete(t, m.marker.is_commit(), m.coordinator_epoch) {
                log.note_aborted(aborted);
            }
        }
    }
    Ok((producers, Rebuilt { snapshot_offset: from, replayed_batches }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower {
        leader: i32,
    },
    /// Assigned here but nobody leads it (or this node does not know yet).
    Offline,
}

/// What the leader knows of one follower (Kafka's replica fetch state).
#[derive(Debug, Clone, Copy)]
pub struct FollowerState {
    pub log_end_offset: i64,
    pub last_caught_up_ms: i64,
    last_fetch_ms: i64,
    leader_leo_at_last_fetch: i64,
}

/// Published to producers waiting for acks=all and to anything else that must notice a
/// high watermark move or a leadership change without holding the partition lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub high_watermark: i64,
    pub leader_epoch: i32,
    pub leader: bool,
    pub isr_len: usize,
    /// A leader cut off from the cluster (`Partition::cut_off`): acks=all waiters give up.
    pub cut_off: bool,
}

#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub topic_id: Uuid,
    pub node_id: i32,
    pub role: Role,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub log: Log,
    high_watermark: i64,
    pub producers: ProducerStateManager,
    pub followers: HashMap<i32, FollowerState>,
    /// The ISR change this leader asked the controller for, not yet seen in metadata.
    pub pending_isr: Option<(Vec<i32>, i64)>,
    /// The topic lists this replica in `leader.replication.throttled.replicas` (as leader)
    /// or `follower.replication.throttled.replicas` (as follower).
    pub leader_throttled: bool,
    pub follower_throttled: bool,
    progress: watch::Sender<Progress>,
    /// Wall-clock ms when this replica last became leader.
    leader_since_ms: i64,
    /// `cut_off` as replication maintenance last found it (published in `Progress`).
    marked_cut_off: bool,
    /// How producer state was last rebuilt (at open, or after a truncation).
    pub rebuilt: Rebuilt,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub records: i64,
    pub bytes: usize,
    /// True when the batch was a retry of one already written (nothing was appended).
    pub duplicate: bool,
    /// The broker time stamped on the batch, or -1 for CreateTime topics.
    pub log_append_time: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("{0}")]
    Corrupt(BatchError),
    #[error("{0}")]
    Protocol(ResponseError),
    #[error("storage: {0}")]
    Storage(anyhow::Error),
}

impl AppendError {
    pub fn code(&self) -> ResponseError {
        match self {
            AppendError::Corrupt(BatchError::TooLarge(..)) => ResponseError::MessageTooLarge,
            AppendError::Corrupt(
                BatchError::Control | BatchError::BatchCount(_) | BatchError::Offsets | BatchError::NoKey(_),
            ) => ResponseError::InvalidRecord,
            AppendError::Corrupt(_) => ResponseError::CorruptMessage,
            AppendError::Protocol(e) => *e,
            AppendError::Storage(_) => ResponseError::KafkaStorageError,
        }
    }
}

impl Partition {
    pub fn open(
        dir: &Path,
        topic: &str,
        index: i32,
        topic_id: Uuid,
        config: LogConfig,
        node_id: i32,
        checkpoint_hw: Option<i64>,
    ) -> Result<Self> {
        let mut log = Log::load(dir, config)?;
        let (producers, rebuilt) = rebuild_producers(&mut log)?;
        if log.log_end_offset() > 0 {
            tracing::info!(
                topic,
                partition = index,
                log_end_offset = log.log_end_offset(),
                lazy_segments = log.opened.lazy_segments,
                scanned_segments = log.opened.scanned_segments,
                snapshot_offset = rebuilt.snapshot_offset,
                replayed_batches = rebuilt.replayed_batches,
                "loaded log and producer state"
            );
            if log.snapshot_due() {
                log.write_snapshot(&producers.encode())?;
            }
        }
        let high_watermark = checkpoint_hw.unwrap_or(0).clamp(log.log_start_offset(), log.log_end_offset());
        Ok(Partition {
            topic: topic.to_string(),
            index,
            topic_id,
            node_id,
            role: Role::Offline,
            leader_epoch: -1,
            partition_epoch: -1,
            replicas: vec![],
            isr: vec![],
            log,
            high_watermark,
            producers,
            followers: HashMap::new(),
            pending_isr: None,
            leader_since_ms: 0,
            marked_cut_off: false,
            rebuilt,
            leader_throttled: false,
            follower_throttled: false,
            progress: watch::channel(Progress {
                high_watermark,
                leader_epoch: -1,
                leader: false,
                isr_len: 0,
                cut_off: false,
            })
            .0,
        })
    }

    /// See `ProducerStateManager::last_batch_offsets`.
    pub fn producer_last_batches(&self) -> std::collections::HashMap<i64, i64> {
        self.producers.last_batch_offsets()
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Last stable offset: the high watermark, or the first offset of the oldest open
    /// transaction when that is lower. `read_committed` consumers read up to it.
    pub fn last_stable_offset(&self) -> i64 {
        match self.producers.first_unstable_offset() {
            Some(first) => first.min(self.high_watermark),
            None => self.high_watermark,
        }
    }

    /// Aborted transactions overlapping `[from, upper)`, for a `read_committed` fetch.
    pub fn aborted_transactions(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        self.log.aborted_in(from, upper)
    }

    /// Open transactions in this partition.
    pub fn open_transactions(&self) -> usize {
        self.producers.open_transactions()
    }

    /// The first-batch timestamp of the oldest transaction open here.
    pub fn oldest_open_transaction_ms(&self) -> Option<i64> {
        self.producers.oldest_open_timestamp()
    }

    /// See `ProducerStateManager::needs_verification`.
    pub fn needs_verification(&self, h: &crate::storage::batch::BatchHeader) -> bool {
        self.producers.needs_verification(h)
    }

    pub fn set_verified(&mut self, producer_id: i64, epoch: i16) {
        self.producers.set_verified(producer_id, epoch);
    }

    /// The producers with state here (DescribeProducers).
    pub fn producers(&self) -> Vec<crate::producer_state::ProducerView> {
        self.producers.producers()
    }

    /// Whether a leader's append now can wait on the disk (`Log::append_may_block`), or
    /// starts this replica's leader epoch in the log, which rewrites the epoch checkpoint.
    pub fn append_may_block(&self, incoming: usize, now_ms: i64) -> bool {
        self.log.append_may_block(incoming, now_ms)
            || self.log.latest_epoch().is_none_or(|e| e.epoch < self.leader_epoch)
    }

    /// Clean shutdown: a producer state snapshot at the log end (the next start replays
    /// nothing), then everything flushed.
    pub fn close(&mut self) -> Result<()> {
        if self.log.log_end_offset() > 0 {
            self.log.write_snapshot(&self.producers.encode())?;
        }
        self.log.flush()
    }

    /// Take a producer state snapshot if the log rolled since the last one. A failure
    /// costs only time at the next start (it replays from an older one).
    fn maybe_snapshot(&mut self) {
        if self.log.snapshot_due() {
            if let Err(e) = self.log.write_snapshot(&self.producers.encode()) {
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "producer state snapshot failed");
            }
        }
    }

    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// A leader cut off from the cluster: neither the active controller (silent for
    /// `controller_silence_ms`) nor any follower has been heard from for `session_ms`
    /// (followers counted from when this replica became leader at the earliest). The
    /// controller has then fenced this broker and elected other leaders, so the broker
    /// refuses produce and stops naming itself leader, and clients go and find the new one.
    /// A leader its followers still fetch from keeps serving on its last metadata when only
    /// the controller quorum is unreachable, and one without followers is never cut off.
    pub fn cut_off(&self, now_ms: i64, controller_silence_ms: i64, session_ms: i64) -> bool {
        let last_fetch = self.followers.values().map(|f| f.last_fetch_ms).max();
        self.is_leader()
            && controller_silence_ms > session_ms
            && last_fetch.is_some_and(|t| now_ms - t.max(self.leader_since_ms) > session_ms)
    }

    /// Record whether this leader is cut off now; producers waiting for acks=all are answered
    /// NOT_LEADER_OR_FOLLOWER when it is. Returns true when that changed.
    pub fn mark_cut_off(&mut self, cut_off: bool) -> bool {
        let changed = std::mem::replace(&mut self.marked_cut_off, cut_off) != cut_off;
        // Every produce checks it: publish only a change.
        if changed {
            self.publish();
        }
        changed
    }

    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    fn publish(&self) {
        let p = Progress {
            high_watermark: self.high_watermark,
            leader_epoch: self.leader_epoch,
            leader: self.is_leader(),
            isr_len: self.isr.len(),
            cut_off: self.marked_cut_off && self.is_leader(),
        };
        self.progress.send_if_modified(|old| {
            let changed = *old != p;
            *old = p;
            changed
        });
    }

    /// Take the partition's state from metadata. Returns what this replica must do.
    pub fn apply_metadata(&mut self, meta: &PartitionMeta, now_ms: i64) -> Transition {
        let role = if meta.leader == self.node_id {
            Role::Leader
        } else if meta.leader >= 0 {
            Role::Follower { leader: meta.leader }
        } else {
            Role::Offline
        };
        let new_epoch = meta.leader_epoch != self.leader_epoch || role != self.role;
        self.replicas = meta.replicas.clone();
        self.isr = meta.isr.clone();
        self.partition_epoch = meta.partition_epoch;
        if self.pending_isr.as_ref().is_some_and(|(isr, _)| *isr == meta.isr) || new_epoch {
            self.pending_isr = None;
        }
        let out = if !new_epoch {
            Transition::None
        } else {
            self.leader_epoch = meta.leader_epoch;
            self.role = role;
            self.followers.clear();
            self.marked_cut_off = false;
            match role {
                Role::Leader => {
                    self.leader_since_ms = now_ms;
                    // Followers in the ISR get the benefit of the doubt for one lag period.
                    for r in meta.replicas.iter().filter(|r| **r != self.node_id) {
                        let caught_up = if meta.isr.contains(r) { now_ms } else { 0 };
                        self.followers.insert(
                            *r,
                            FollowerState {
                                log_end_offset: -1,
                                last_caught_up_ms: caught_up,
                                last_fetch_ms: 0,
                                leader_leo_at_last_fetch: -1,
                            },
                        );
                    }
                    Transition::Leader
                }
                Role::Follower { leader } => Transition::Follower { leader },
                Role::Offline => Transition::None,
            }
        };
        for r in meta.replicas.iter().filter(|r| **r != self.node_id && self.role == Role::Leader) {
            self.followers.entry(*r).or_insert(FollowerState {
                log_end_offset: -1,
                last_caught_up_ms: 0,
                last_fetch_ms: 0,
                leader_leo_at_last_fetch: -1,
            });
        }
        self.followers.retain(|r, _| meta.replicas.contains(r));
        self.maybe_advance_high_watermark();
        self.publish();
        out
    }

    /// Leader: the smallest log end offset in the ISR. Returns true when it moved.
    pub fn maybe_advance_high_watermark(&mut self) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        let mut hw = self.log.log_end_offset();
        for r in &self.isr {
            if *r == self.node_id {
                continue;
            }
            match self.followers.get(r) {
                Some(f) if f.log_end_offset >= 0 => hw = hw.min(f.log_end_offset),
                _ => return false,
            }
        }
        if hw > self.high_watermark {
            self.high_watermark = hw;
            self.publish();
            return true;
        }
        false
    }

    /// Leader: a follower fetched from `fetch_offset`. Returns the ISR to propose when the
    /// follower has caught up and is not in it yet.
    pub fn record_follower_fetch(&mut self, replica: i32, fetch_offset: i64, now_ms: i64) -> Option<Vec<i32>> {
        let leo = self.log.log_end_offset();
        let f = self.followers.get_mut(&replica)?;
        if fetch_offset >= leo {
            f.last_caught_up_ms = f.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= f.leader_leo_at_last_fetch && f.leader_leo_at_last_fetch >= 0 {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.leader_leo_at_last_fetch = leo;
        f.last_fetch_ms = now_ms;
        f.log_end_offset = fetch_offset;
        self.maybe_advance_high_watermark();
        // Kafka's rule: a follower rejoins once it has everything up to the high watermark
        // and something of the current leader epoch.
        let epoch_start =
            self.log.latest_epoch().filter(|e| e.epoch == self.leader_epoch).map_or(0, |e| e.start_offset);
        let joins = !self.isr.contains(&replica) && fetch_offset >= self.high_watermark && fetch_offset >= epoch_start;
        if joins && self.pending_isr.is_none() {
            let mut isr = self.isr.clone();
            isr.push(replica);
            return Some(isr);
        }
        None
    }

    /// Leader: the ISR without followers that have not caught up for `lag_ms`.
    pub fn isr_to_shrink(&self, now_ms: i64, lag_ms: i64) -> Option<Vec<i32>> {
        if self.role != Role::Leader || self.pending_isr.is_some() {
            return None;
        }
        let leo = self.log.log_end_offset();
        let lagging: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|r| *r != self.node_id)
            .filter(|r| {
                self.followers.get(r).is_some_and(|f| f.log_end_offset != leo && now_ms - f.last_caught_up_ms > lag_ms)
            })
            .collect();
        if lagging.is_empty() {
            return None;
        }
        Some(self.isr.iter().copied().filter(|r| !lagging.contains(r)).collect())
    }

    /// Follower: append batches fetched from the leader and take its high watermark.
    pub fn append_replica(&mut self, records: &[u8], leader_hw: i64, now_ms: i64) -> Result<usize> {
        let ranges = split_stored_batches(records).map_err(|e| anyhow::anyhow!("{e}"))?;
        if !ranges.is_empty() {
            self.log.append_replica(records, &ranges, now_ms)?;
            for span in &ranges {
                if let Some(ended) = self.producers.update(&span.header) {
                    let m = control::parse_marker(&records[span.range.clone()], &span.header)?;
                    if let Some(aborted) = self.producers.complete(ended, m.marker.is_commit(), m.coordinator_epoch) {
                        self.log.note_aborted(aborted);
                    }
                }
            }
            self.maybe_snapshot();
        }
        self.high_watermark =
            leader_hw.min(self.log.log_end_offset()).max(self.high_watermark.min(self.log.log_end_offset()));
        self.publish();
        Ok(ranges.len())
    }

    /// Follower: drop a divergent tail; producer state is rebuilt from the newest snapshot
    /// that remains and the batches after it.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        if offset >= self.log.log_end_offset() {
            return Ok(());
        }
        tracing::info!(topic = %self.topic, partition = self.index, from = self.log.log_end_offset(), to = offset, "truncating divergent log tail");
        self.log.truncate_to(offset)?;
        (self.producers, self.rebuilt) = rebuild_producers(&mut self.log)?;
        self.high_watermark = self.high_watermark.min(self.log.log_end_offset());
        self.publish();
        Ok(())
    }

    /// Follower behind the leader's log start: start over there.
    pub fn restart_at(&mut self, offset: i64) -> Result<()> {
        tracing::info!(topic = %self.topic, partition = self.index, offset, "replica restarts at the leader's log start offset");
        self.log.restart_at(offset)?;
        self.producers = ProducerStateManager::default();
        self.high_watermark = offset;
        self.publish();
        Ok(())
    }

    /// Validate and append a produce payload as leader. Nothing is written unless every
    /// batch in it is valid, so a corrupt batch never leaves a partial write behind.
    pub fn append(
        &mut self,
        records: &mut [u8],
        max_batch_bytes: usize,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        if self.role != Role::Leader {
            return Err(AppendError::Protocol(ResponseError::NotLeaderOrFollower));
        }
        let mut ranges = split_batches(records, max_batch_bytes).map_err(AppendError::Corrupt)?;
        // Kafka accepts exactly one v2 batch per partition in a produce request; it also
        // makes an append all-or-nothing.
        if ranges.len() != 1 {
            return Err(AppendError::Corrupt(BatchError::BatchCount(ranges.len())));
        }
        if self.log.config.compact {
            for span in &ranges {
                self.check_keys(&records[span.range.clone()], &span.header, max_batch_bytes)?;
            }
        }
        for span in &ranges {
            match self.producers.check(&span.header).map_err(AppendError::Protocol)? {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate(m) => {
                    return Ok(AppendInfo {
                        base_offset: m.base_offset,
                        last_offset: m.last_offset,
                        records: 0,
                        bytes: 0,
                        duplicate: true,
                        log_append_time: -1,
                    })
                }
            }
        }
        if self.log.config.log_append_time {
            for span in ranges.iter_mut() {
                span.header = crate::storage::batch::set_log_append_time(&mut records[span.range.clone()], now_ms);
            }
        }
        let written = self.log.append(records, &ranges, self.leader_epoch, now_ms).map_err(AppendError::Storage)?;
        let mut offset = written.first_offset;
        let mut count = 0;
        for span in &ranges {
            let mut h = span.header;
            h.base_offset = offset;
            h.partition_leader_epoch = self.leader_epoch;
            offset = h.next_offset();
            count += h.records_count as i64;
            self.producers.update(&h);
        }
        self.maybe_snapshot();
        self.maybe_advance_high_watermark();
        let log_append_time = if self.log.config.log_append_time { now_ms } else { -1 };
        Ok(AppendInfo {
            base_offset: written.first_offset,
            last_offset: written.last_offset,
            records: count,
            bytes: records.len(),
            duplicate: false,
            log_append_time,
        })
    }
}

impl Partition {
    /// Leader: append the marker that ends producer `producer_id`'s transaction here
    /// (WriteTxnMarkers). A marker of an epoch older than the producer's is refused.
    pub fn append_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        if self.role != Role::Leader {
            return Err(AppendError::Protocol(ResponseError::NotLeaderOrFollower));
        }
        self.producers.check_marker(producer_id, producer_epoch, coordinator_epoch).map_err(AppendError::Protocol)?;
        let mut batch = control::encode_marker(producer_id, producer_epoch, marker, coordinator_epoch, now_ms);
        let ranges = split_stored_batches(&batch).map_err(AppendError::Corrupt)?;
        let written = self.log.append(&mut batch, &ranges, self.leader_epoch, now_ms).map_err(AppendError::Storage)?;
        let mut h = ranges[0].header;
        h.base_offset = written.first_offset;
        if let Some(ended) = self.producers.update(&h) {
            if let Some(aborted) = self.producers.complete(ended, marker.is_commit(), coordinator_epoch) {
                self.log.note_aborted(aborted);
            }
        }
        self.maybe_snapshot();
        self.maybe_advance_high_watermark();
        Ok(AppendInfo {
            base_offset: written.first_offset,
            last_offset: written.last_offset,
            records: 1,
            bytes: batch.len(),
            duplicate: false,
            log_append_time: -1,
        })
    }

    /// A compacted topic keeps the latest record per key, so a record without one has
    /// nowhere to go: Kafka refuses the batch with INVALID_RECORD, and so do we.
    fn check_keys(
        &self,
        batch: &[u8],
        h: &crate::storage::batch::BatchHeader,
        max_batch: usize,
    ) -> Result<(), AppendError> {
        use crate::storage::records;
        let corrupt = |e: anyhow::Error| AppendError::Corrupt(BatchError::Records(format!("{e:#}")));
        let limit = max_batch.min(1 << 26).saturating_mul(64);
        let section = records::records_section(batch, h, limit).map_err(corrupt)?;
        let recs = records::parse(&section, h.records_count).map_err(corrupt)?;
        if recs.iter().any(|r| r.key.is_none()) {
            return Err(AppendError::Corrupt(BatchError::NoKey(format!("{}-{}", self.topic, self.index))));
        }
        Ok(())
    }
}

/// What a metadata change asks of this replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Leader,
    Follower { leader: i32 },
}

/// Wait until `offset` is below the high watermark (replicated to the whole ISR), the
/// acks=all rule. Fails when leadership moves or the ISR falls below `min_isr` meanwhile.
pub async fn wait_replicated(
    mut rx: watch::Receiver<Progress>,
    offset: i64,
    min_isr: usize,
    timeout: std::time::Duration,
) -> Result<(), ResponseError> {
    let epoch = rx.borrow().leader_epoch;
    let wait = rx.wait_for(|p| p.high_watermark > offset || !p.leader || p.leader_epoch != epoch || p.cut_off);
    match tokio::time::timeout(timeout, wait).await {
        Err(_) => Err(ResponseError::RequestTimedOut),
        Ok(Err(_)) => Err(ResponseError::NotLeaderOrFollower),
        Ok(Ok(p)) if p.high_watermark > offset && p.leader_epoch == epoch && p.leader => {
            if p.isr_len < min_isr {
                Err(ResponseError::NotEnoughReplicasAfterAppend)
            } else {
                Ok(())
            }
        }
        // Leadership moved, or this leader was cut off, before the records were replicated.
        Ok(Ok(_)) => Err(ResponseError::NotLeaderOrFollower),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: i64 = 9_000;

    fn leader_of(replicas: Vec<i32>, now_ms: i64) -> (tempfile::TempDir, Partition) {
        let dir = tempfile::tempdir().unwrap();
        let p = open_leader(dir.path(), LogConfig::default(), replicas, now_ms);
        (dir, p)
    }

    fn open_leader(dir: &Path, config: LogConfig, replicas: Vec<i32>, now_ms: i64) -> Partition {
        let mut p = Partition::open(dir, "t", 0, Uuid::nil(), config, 1, None).unwrap();
        let meta = PartitionMeta {
            isr: replicas.clone(),
            replicas,
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: vec![],
            removing: vec![],
        };
        p.apply_metadata(&meta, now_ms);
        p
    }

    #[test]
    fn a_leader_is_cut_off_only_when_controller_and_every_follower_are_silent() {
        let t0 = 1_000_000;
        let (_d, mut p) = leader_of(vec![1, 2, 3], t0);
        let later = t0 + SESSION + 1;
        // Nobody heard from since it became leader, but the controller answers.
        assert!(!p.cut_off(later, 0, SESSION));
        // Controller silent too: cut off.
        assert!(p.cut_off(later, SESSION + 1, SESSION));
        // One follower fetched within the session: it still reaches its replicas, and keeps
        // serving through a controller-quorum outage.
        p.record_follower_fetch(3, 0, later - 100);
        assert!(!p.cut_off(later, SESSION * 10, SESSION));
        assert!(p.cut_off(later - 100 + SESSION + 1, SESSION * 10, SESSION));
    }

    #[test]
    fn a_leader_without_followers_or_a_follower_is_never_cut_off() {
        let t0 = 1_000_000;
        let (_d, p) = leader_of(vec![1], t0);
        assert!(!p.cut_off(t0 + SESSION * 10, SESSION * 10, SESSION));
        let (_d, mut p) = leader_of(vec![2, 1], t0);
        let meta = PartitionMeta {
            replicas: vec![2, 1],
            isr: vec![2, 1],
            leader: 2,
            leader_epoch: 1,
            partition_epoch: 1,
            adding: vec![],
            removing: vec![],
        };
        p.apply_metadata(&meta, t0);
        assert!(!p.cut_off(t0 + SESSION * 10, SESSION * 10, SESSION), "a follower");
    }

    /// A batch of `n` records of producer `pid` at `epoch` from sequence `seq`.
    fn producer_batch(pid: i64, epoch: i16, seq: i32, n: usize, transactional: bool) -> Vec<u8> {
        use crate::storage::records::{encode_internal_batch, BatchWriter, KeyValue};
        let recs: Vec<KeyValue> = (0..n)
            .map(|i| KeyValue { key: format!("k{i}").into_bytes().into(), value: Some(vec![b'v'; 40].into()) })
            .collect();
        let writer = BatchWriter::Transaction { producer_id: pid, producer_epoch: epoch, control: false };
        let mut b = encode_internal_batch(&recs, writer, 1000);
        let attrs = i16::from_be_bytes([b[21], b[22]]);
        let attrs = if transactional { attrs | 0x10 } else { attrs & !0x10 };
        b[21..23].copy_from_slice(&attrs.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = crc32c::crc32c(&b[crate::storage::batch::CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    type Observed = (Vec<AbortedTxn>, Vec<crate::producer_state::ProducerView>, Option<i64>);

    fn observed(p: &Partition) -> Observed {
        let mut producers = p.producers();
        producers.sort_by_key(|v| v.producer_id);
        (p.log.aborted_in(0, i64::MAX), producers, p.producers.first_unstable_offset())
    }

    fn reopen_without_snapshots(dir: &Path, config: LogConfig) -> Partition {
        crate::storage::snapshot::delete_unless(dir, |_| false).unwrap();
        let p = open_leader(dir, config, vec![1], 0);
        assert_eq!(p.rebuilt.snapshot_offset, 0);
        p
    }

    #[test]
    fn producer_state_and_aborts_come_back_from_a_snapshot_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = || LogConfig { segment_bytes: 1500, ..Default::default() };
        let mut p = open_leader(dir.path(), cfg(), vec![1], 0);
        let mut next_seq = HashMap::new();
        for round in 0..40 {
            let pid = 1 + round % 3;
            let seq = next_seq.entry(pid).or_insert(0);
            p.append(&mut producer_batch(pid, 0, *seq, 3, true), 1 << 20, 1000).unwrap();
            *seq += 3;
            let marker = if round % 2 == 0 { Marker::Abort } else { Marker::Commit };
            p.append_marker(pid, 0, marker, 0, 1000).unwrap();
        }
        for i in 0..4 {
            p.append(&mut producer_batch(50, 0, i * 2, 2, false), 1 << 20, 1000).unwrap();
        }
        p.append(&mut producer_batch(77, 0, 0, 2, true), 1 << 20, 1000).unwrap();
        let before = observed(&p);
        assert_eq!(before.0.len(), 20);
        assert!(before.2.is_some(), "producer 77's transaction is open");
        let segments = p.log.segment_count();
        assert!(segments > 4, "{segments}");
        // No `close`: as after a kill -9.
        drop(p);

        let p = open_leader(dir.path(), cfg(), vec![1], 0);
        assert_eq!((p.log.opened.lazy_segments, p.log.opened.scanned_segments), (segments - 1, 1));
        assert!(p.rebuilt.snapshot_offset >= p.log.segments_active_base(), "{:?}", p.rebuilt);
        assert!(p.rebuilt.replayed_batches < 10, "{:?}", p.rebuilt);
        assert_eq!(observed(&p), before);
        let retry = crate::storage::batch::BatchHeader::parse(&producer_batch(50, 0, 6, 2, false)).unwrap();
        assert!(matches!(p.producers.check(&retry), Ok(SequenceCheck::Duplicate(_))), "a retry is still a duplicate");
        drop(p);
        let copy = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
        }

        // Replaying the whole log gives the same state.
        assert_eq!(observed(&reopen_without_snapshots(copy.path(), cfg())), before);

        // After a truncation, from the newest snapshot below the cut: as a full replay.
        let mut p = open_leader(dir.path(), cfg(), vec![1], 0);
        let cut = p.log.log_end_offset() / 2;
        p.truncate_to(cut).unwrap();
        assert!(p.rebuilt.snapshot_offset > 0 && p.rebuilt.snapshot_offset <= cut, "{:?}", p.rebuilt);
        let truncated = observed(&p);
        assert!(truncated.0.len() < 20 && truncated.0.iter().all(|a| a.last_offset < cut));
        drop(p);
        assert_eq!(observed(&reopen_without_snapshots(dir.path(), cfg())), truncated);
    }
}
