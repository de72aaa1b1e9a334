//! The scrape-time collector: everything that is a view of state rather than a count of
//! events (partitions, ISR health, log sizes and disks, consumer groups, the process).
//! Computing at scrape time costs nothing between scrapes and never goes stale: a group
//! whose consumers all died still reports its growing lag.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::process::process_stats;
use super::TopicLabel;
use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::controller::Controller;
use crate::group::coordinator::GroupCoordinator;
use crate::group::status::Status;
use crate::metadata::MetadataStore;
use crate::node_state::NodeState;
use crate::replica_manager::ReplicaManager;
use crate::storage::batch::find_record;
use crate::storage::disk::disk_space;
use crate::throttle::Quota;

/// The components the scrape reads (never writes, except its own dropped-series count).
pub struct Sources {
    pub config: Arc<BrokerConfig>,
    pub state: Arc<NodeState>,
    pub metadata: Arc<MetadataStore>,
    pub replicas: Arc<ReplicaManager>,
    pub groups: Arc<GroupCoordinator>,
    pub controller: Arc<Controller>,
    pub leader_quota: Arc<Quota>,
    pub follower_quota: Arc<Quota>,
    pub series_dropped: prometheus_client::metrics::counter::Counter,
    pub cleaner: Arc<crate::log_cleaner::LogCleaner>,
    pub txns: Arc<crate::txn::coordinator::TransactionCoordinator>,
}

pub struct BrokerCollector {
    b: Sources,
    timestamps: parking_lot::Mutex<TimestampCache>,
}

impl BrokerCollector {
    pub fn new(sources: Sources) -> Self {
        BrokerCollector { b: sources, timestamps: Default::default() }
    }
}

impl std::fmt::Debug for BrokerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerCollector").field("node_id", &self.b.config.node_id).finish()
    }
}

/// Timestamps of the records at the offsets groups have committed, by topic, then
/// (partition, offset). Finding one costs a read from the segment (and decoding a batch when
/// the offset is inside one), and the answer does not change while the record exists: so it
/// is read once, not once per group per scrape. Entries no scrape asked for are dropped.
#[derive(Debug, Default)]
pub(super) struct TimestampCache {
    map: HashMap<String, HashMap<(i32, i64), CachedTimestamp>>,
    scrape: u64,
}

/// A committed offset's record timestamp (none when the record is gone), and the scrape
/// that last asked for it.
#[derive(Debug, Clone, Copy)]
struct CachedTimestamp(Option<i64>, u64);

impl TimestampCache {
    fn timestamp(&mut self, b: &Sources, topic: &str, partition: i32, from: i64) -> Option<i64> {
        let scrape = self.scrape;
        if let Some(e) = self.map.get_mut(topic).and_then(|m| m.get_mut(&(partition, from))) {
            e.1 = scrape;
            return e.0;
        }
        let p = b.replicas.get(topic, partition)?;
        let p = p.lock();
        let ts = match p.log.batch_at(from) {
            Ok(Some(b)) if b.header.base_offset == from => Some(b.header.base_timestamp),
            // A compressed batch's first timestamp stands in (overstating lag by at most a batch).
            Ok(Some(b)) => Some(
                find_record(&b.header, b.bytes, |_, offset| offset >= from)
                    .map_or(b.header.base_timestamp, |r| r.timestamp),
            ),
            _ => None,
        };
        if ts.is_some() {
            self.map.entry(topic.to_string()).or_default().insert((partition, from), CachedTimestamp(ts, scrape));
        }
        ts
    }

    fn next_scrape(&mut self) {
        let last = self.scrape;
        for m in self.map.values_mut() {
            m.retain(|_, e| e.1 == last);
        }
        self.map.retain(|_, m| !m.is_empty());
        self.scrape += 1;
    }
}

/// Consumer lag of one committed offset on a partition hosted here: records behind the
/// high watermark, and seconds since the first unconsumed record was written. Never
/// negative; an offset below the log start offset counts from the log start (those records
/// are gone, not pending).
fn lag(b: &Sources, p: &Hosted, committed: i64, now_ms: i64, cache: &mut TimestampCache) -> (i64, f64) {
    let from = committed.max(p.log_start);
    let records = (p.high_watermark - from).max(0);
    if records == 0 {
        return (0, 0.0);
    }
    let seconds =
        cache.timestamp(b, &p.topic, p.index, from).map(|t| ((now_ms - t).max(0) as f64) / 1000.0).unwrap_or(0.0);
    (records, seconds)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideLabel {
    side: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirLabel {
    dir: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabel {
    node_id: String,
    cluster_id: String,
    version: &'static str,
    rack: String,
    roles: String,
}

/// Label pairs where `partition` is left out entirely at topic granularity (a derived label
/// set would print `partition=""`).
type Labels = Vec<(&'static str, String)>;

fn labels(pairs: &[(&'static str, &str)], partition: Option<String>) -> Labels {
    let mut l: Labels = pairs.iter().map(|(k, v)| (*k, v.to_string())).collect();
    l.extend(partition.map(|p| ("partition", p)));
    l
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupStateLabel {
    group: String,
    state: &'static str,
}

#[derive(Default)]
struct ReplicationHealth {
    under_replicated: i64,
    under_min_isr: i64,
    at_min_isr: i64,
    offline: i64,
    leaders: i64,
    max_lag: i64,
    controller_active: i64,
    controller_silence_ms: i64,
    cut_off: i64,
    active_brokers: i64,
    fenced_brokers: i64,
    applied: u64,
    metadata_lag: i64,
    elections: crate::metadata::image::Elections,
}

fn replication_health(b: &Sources) -> ReplicationHealth {
    let mut h = ReplicationHealth::default();
    let now = crate::clock::now_ms();
    h.controller_silence_ms = b.state.controller_silence_ms(now);
    let session = b.config.session_timeout_ms as i64;
    for p in b.replicas.all() {
        let p = p.lock();
        if !p.is_leader() {
            continue;
        }
        h.leaders += 1;
        if p.cut_off(now, h.controller_silence_ms, session) {
            h.cut_off += 1;
        }
        let min_isr = p.log.config.min_insync_replicas.max(1) as usize;
        if p.isr.len() < p.replicas.len() {
            h.under_replicated += 1;
        }
        if p.isr.len() < min_isr {
            h.under_min_isr += 1;
        } else if p.isr.len() == min_isr && p.replicas.len() > 1 {
            h.at_min_isr += 1;
        }
        let leo = p.log.log_end_offset();
        for f in p.followers.values() {
            if f.log_end_offset >= 0 {
                h.max_lag = h.max_lag.max(leo - f.log_end_offset);
            }
        }
    }
    let active = b.controller.is_active();
    h.controller_active = active as i64;
    b.metadata.read(|img| {
        // The controller's view, as Kafka reports these: other nodes say 0.
        if active {
            h.offline = img.topics.values().flat_map(|t| t.assignment.iter()).filter(|p| p.leader < 0).count() as i64;
            h.fenced_brokers = img.brokers.values().filter(|b| b.fenced).count() as i64;
            h.active_brokers = img.brokers.len() as i64 - h.fenced_brokers;
        }
        h.elections = img.elections;
    });
    h.applied = b.metadata.applied_index();
    if let Some(q) = b.metadata.quorum() {
        h.metadata_lag = q.status().committed.saturating_sub(h.applied) as i64;
    }
    h
}

/// One family, one sample per label set.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut fam = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, m) in samples {
        m.encode(fam.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, v: impl Into<f64>) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v.into());
    g.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A partition hosted here, as the size and offset series need it.
struct Hosted {
    topic: String,
    index: i32,
    size: u64,
    high_watermark: i64,
    log_start: i64,
    /// Led partitions: high watermark − last stable offset; None on followers.
    lso_lag: Option<i64>,
}

/// Consumer lag of one group on one partition hosted here (names borrowed from the
/// groups' snapshot: there can be a hundred thousand of these per scrape).
struct GroupLag<'a> {
    group: &'a str,
    topic: &'a str,
    partition: i32,
    records: i64,
    seconds: f64,
}

/// Transactions: those this node coordinates, and those open in the partitions it leads
/// (a hanging transaction holds a partition's last stable offset back).
fn transaction_gauges(
    enc: &mut DescriptorEncoder,
    b: &Sources,
    partitions: &[crate::replica_manager::PartitionRef],
    now: i64,
) -> Result<(), std::fmt::Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &b.txns.counts;
    for (name, help, v) in [
        (
            "fjord_transactions_started",
            "Transactions this node coordinated that started (first AddPartitionsToTxn)",
            &c.started,
        ),
        (
            "fjord_transactions_timed_out",
            "Transactions this node aborted because they were open longer than their transaction.timeout.ms",
            &c.timed_out,
        ),
    ] {
        ConstCounter::new(v.load(Relaxed)).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)?;
    }
    family(
        enc,
        "fjord_transactions_completed",
        "Transactions this node coordinated that completed, by result (commit or abort; aborts include timeouts)",
        MetricType::Counter,
        [("commit", &c.committed), ("abort", &c.aborted)]
            .map(|(result, n)| (ResultLabel { result }, ConstCounter::new(n.load(Relaxed)))),
    )?;
    let open = b.txns.open(now);
    gauge(
        enc,
        "fjord_transactions_open",
        "Transactions this node coordinates that are open or completing",
        open.open as f64,
    )?;
    gauge(
        enc,
        "fjord_transaction_max_open_seconds",
        "Age of the oldest open transaction this node coordinates",
        open.oldest_ms as f64 / 1000.0,
    )?;
    let (mut in_logs, mut oldest_ms) = (0usize, 0i64);
    for p in partitions {
        let p = p.lock();
        if !p.is_leader() {
            continue;
        }
        in_logs += p.open_transactions();
        if let Some(ts) = p.oldest_open_transaction_ms() {
            oldest_ms = oldest_ms.max(now - ts);
        }
    }
    gauge(
        enc,
        "fjord_log_open_transactions",
        "Transactions open in the logs of the partitions this broker leads",
        in_logs as f64,
    )?;
    gauge(
        enc,
        "fjord_log_max_open_transaction_seconds",
        "Age of the oldest transaction open in a partition this broker leads, from its first batch's timestamp; a hanging transaction grows it without bound",
        oldest_ms.max(0) as f64 / 1000.0,
    )
}

/// The log cleaner's state: how dirty and how late the compacted logs hosted here are.
fn cleaner_gauges(
    enc: &mut DescriptorEncoder,
    b: &Sources,
    partitions: &[crate::replica_manager::PartitionRef],
    now: i64,
) -> Result<(), std::fmt::Error> {
    let (mut since_clean_ms, mut delay_ms) = (0i64, 0i64);
    for p in partitions {
        let p = p.lock();
        if !p.log.config.compact {
            continue;
        }
        // Only a log with something to clean is late; a clean idle log is not.
        if let Some(c) = p.log.cleanable(p.last_stable_offset(), now) {
            since_clean_ms = since_clean_ms.max(now - p.log.last_cleaned_ms);
            delay_ms = delay_ms.max(c.compaction_delay_ms);
        }
    }
    gauge(
        enc,
        "fjord_log_cleaner_max_dirty_ratio",
        "Largest dirty ratio (bytes not yet cleaned / cleanable bytes) among compacted logs, at the cleaner's last pass",
        b.cleaner.max_dirty_ratio(),
    )?;
    gauge(
        enc,
        "fjord_log_cleaner_uncleanable_partitions",
        "Compacted logs the cleaner gave up on after an error (until a restart)",
        b.cleaner.uncleanable_count() as f64,
    )?;
    gauge(
        enc,
        "fjord_log_cleaner_max_seconds_since_last_clean",
        "Longest time since a compacted log hosted here that is due for cleaning was last cleaned (or opened)",
        since_clean_ms as f64 / 1000.0,
    )?;
    gauge(
        enc,
        "fjord_log_cleaner_max_compaction_delay_seconds",
        "How far the oldest dirty record of a compacted log is past its max.compaction.lag.ms",
        delay_ms as f64 / 1000.0,
    )
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let b = &self.b;
        let now = now_ms();
        let cfg = &b.config.metrics;
        let enc = &mut encoder;

        let info = InfoLabel {
            node_id: b.config.node_id.to_string(),
            cluster_id: b.metadata.cluster_id(),
            version: env!("CARGO_PKG_VERSION"),
            rack: b.config.broker_rack.clone().unwrap_or_default(),
            roles: b.config.process_roles.join(","),
        };
        family(
            enc,
            "fjord_broker_info",
            "Always 1; the labels describe this node",
            MetricType::Gauge,
            [(info, ConstGauge::new(1))],
        )?;
        gauge(
            enc,
            "fjord_uptime_seconds",
            "Seconds since the broker started",
            b.state.started.elapsed().as_secs_f64(),
        )?;
        let ps = process_stats();
        if let Some(cpu) = ps.cpu_seconds {
            ConstCounter::new(cpu).encode(enc.encode_descriptor(
                "process_cpu_seconds",
                "CPU time used by the process, user and system",
                None,
                MetricType::Counter,
            )?)?;
        }
        for (name, help, v) in [
            ("process_resident_memory_bytes", "Resident memory of the process", ps.resident_bytes),
            ("process_open_fds", "Open file descriptors", ps.open_fds),
            ("process_max_fds", "The process's open-file limit", ps.max_fds),
        ] {
            if let Some(v) = v {
                gauge(enc, name, help, v as f64)?;
            }
        }

        let h = replication_health(b);
        let partitions = b.replicas.all();
        gauge(enc, "fjord_partitions", "Partitions hosted by this broker", partitions.len() as f64)?;
        gauge(
            enc,
            "fjord_broker_controller_silence_seconds",
            "Time since the active controller last answered this broker's heartbeat",
            h.controller_silence_ms as f64 / 1000.0,
        )?;
        cleaner_gauges(enc, b, &partitions, now)?;
        transaction_gauges(enc, b, &partitions, now)?;
        let gauges: [(&str, &str, i64); 12] = [
            (
                "fjord_cut_off_leader_partitions",
                "Led partitions refusing produce: neither the controller nor any follower heard from for broker.session.timeout.ms",
                h.cut_off,
            ),
            (
                "fjord_under_replicated_partitions",
                "Led partitions whose ISR is smaller than their replica set",
                h.under_replicated,
            ),
            (
                "fjord_under_min_isr_partitions",
                "Led partitions whose ISR is smaller than min.insync.replicas (acks=all fails)",
                h.under_min_isr,
            ),
            (
                "fjord_at_min_isr_partitions",
                "Led partitions whose ISR is exactly min.insync.replicas (one more loss blocks acks=all)",
                h.at_min_isr,
            ),
            (
                "fjord_offline_partitions",
                "Partitions without a live leader (reported by the active controller)",
                h.offline,
            ),
            ("fjord_leader_partitions", "Partitions this broker leads", h.leaders),
            ("fjord_replica_max_lag_records", "Largest follower lag behind this leader, in records", h.max_lag),
            ("fjord_controller_active", "1 on the active controller (the metadata quorum leader)", h.controller_active),
            (
                "fjord_active_brokers",
                "Registered, unfenced brokers (reported by the active controller)",
                h.active_brokers,
            ),
            (
                "fjord_fenced_brokers",
                "Registered brokers fenced for missing heartbeats (reported by the active controller)",
                h.fenced_brokers,
            ),
            (
                "fjord_metadata_applied_index",
                "Index of the last metadata log entry applied on this node",
                h.applied as i64,
            ),
            (
                "fjord_metadata_lag_entries",
                "Metadata log entries committed but not applied yet on this node",
                h.metadata_lag,
            ),
        ];
        for (name, help, v) in gauges {
            gauge(enc, name, help, v as f64)?;
        }
        family(
            enc,
            "fjord_leader_elections",
            "Leader elections decided by the metadata this node applied (counts on every node; use the controller's)",
            MetricType::Counter,
            [("clean", h.elections.clean), ("unclean", h.elections.unclean)]
                .map(|(kind, n)| (KindLabel { kind }, ConstCounter::new(n))),
        )?;
        ConstCounter::new(b.metadata.stale_decisions()).encode(enc.encode_descriptor(
            "fjord_controller_stale_decisions_rejected",
            "Controller decisions not applied because a deposed controller took them (counts on every node)",
            None,
            MetricType::Counter,
        )?)?;
        family(
            enc,
            "fjord_replication_throttled_seconds",
            "Time throttled replicas were held back by the reassignment throttle",
            MetricType::Counter,
            [("leader", &*b.leader_quota), ("follower", &*b.follower_quota)]
                .map(|(side, q)| (SideLabel { side }, ConstCounter::new(q.throttled_seconds()))),
        )?;
        let topic_partitions: Vec<(String, i32)> =
            b.metadata.read(|img| img.topics.values().map(|t| (t.name.clone(), t.partitions)).collect());
        family(
            enc,
            "fjord_topic_partitions",
            "Partitions of the topic in the cluster metadata",
            MetricType::Gauge,
            topic_partitions.into_iter().map(|(topic, n)| (TopicLabel { topic }, ConstGauge::new(n as i64))),
        )?;

        // What is hosted, and the lag of every exported group on it.
        let mut hosted = Vec::with_capacity(partitions.len());
        for p in &partitions {
            let p = p.lock();
            hosted.push(Hosted {
                topic: p.topic.clone(),
                index: p.index,
                size: p.log.size_bytes(),
                high_watermark: p.high_watermark(),
                log_start: p.log.log_start_offset(),
                lso_lag: p.is_leader().then(|| p.high_watermark() - p.last_stable_offset()),
            });
        }
        let by_partition: HashMap<(&str, i32), &Hosted> =
            hosted.iter().map(|p| ((p.topic.as_str(), p.index), p)).collect();
        let groups: Vec<_> = b.groups.snapshot().into_iter().filter(|g| cfg.group_exported(&g.id)).collect();
        let mut lags = Vec::new();
        let mut status = Vec::with_capacity(groups.len());
        let mut timestamps = self.timestamps.lock();
        timestamps.next_scrape();
        for g in &groups {
            let mut worst = Status::Ok;
            for pc in &g.partitions {
                let Some(p) = by_partition.get(&(pc.tp.topic.as_str(), pc.tp.partition)) else { continue };
                let (records, seconds) = lag(b, p, pc.offset, now, &mut timestamps);
                worst = worst.max(pc.window.evaluate(records, now, g.last_commit_ms.unwrap_or(0)));
                lags.push(GroupLag { group: &g.id, topic: &pc.tp.topic, partition: pc.tp.partition, records, seconds });
            }
            status.push((GroupLabel { group: g.id.clone() }, ConstGauge::new(worst as i64)));
        }
        drop(timestamps);

        // Granularity: what each topic would cost per partition, and which get it.
        let mut costs: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &hosted {
            *costs.entry(p.topic.as_str()).or_default() += 3;
        }
        for l in &lags {
            *costs.entry(l.topic).or_default() += 2;
        }
        let per_partition = cfg.per_partition(&costs);
        if per_partition.dropped > 0 {
            b.series_dropped.inc_by(per_partition.dropped);
        }
        let fine = |topic: &str| per_partition.topics.contains(topic);

        let mut sizes: BTreeMap<Labels, i64> = BTreeMap::new();
        for p in &hosted {
            let partition = fine(&p.topic).then(|| p.index.to_string());
            *sizes.entry(labels(&[("topic", &p.topic)], partition)).or_default() += p.size as i64;
        }
        family(
            enc,
            "fjord_log_size_bytes",
            "Bytes on disk of the segments this node holds",
            MetricType::Gauge,
            sizes.into_iter().map(|(l, v)| (l, ConstGauge::new(v))),
        )?;
        let mut lso_lags: BTreeMap<Labels, i64> = BTreeMap::new();
        for p in &hosted {
            let Some(lag) = p.lso_lag else { continue };
            let partition = fine(&p.topic).then(|| p.index.to_string());
            *lso_lags.entry(labels(&[("topic", &p.topic)], partition)).or_default() += lag;
        }
        family(
            enc,
            "fjord_last_stable_offset_lag_records",
            "Records between the high watermark and the last stable offset (held back by open transactions) in partitions this broker leads",
            MetricType::Gauge,
            lso_lags.into_iter().map(|(l, v)| (l, ConstGauge::new(v))),
        )?;
        let detailed: Vec<&Hosted> = hosted.iter().filter(|p| fine(&p.topic)).collect();
        let label = |p: &Hosted| labels(&[("topic", &p.topic)], Some(p.index.to_string()));
        family(
            enc,
            "fjord_partition_high_watermark",
            "High watermark per partition",
            MetricType::Gauge,
            detailed.iter().map(|p| (label(p), ConstGauge::new(p.high_watermark))),
        )?;
        family(
            enc,
            "fjord_partition_log_start_offset",
            "Log start offset per partition",
            MetricType::Gauge,
            detailed.iter().map(|p| (label(p), ConstGauge::new(p.log_start))),
        )?;

        let mut dirs = Vec::new();
        for dir in &b.config.log_dirs {
            if let Some(space) = disk_space(dir) {
                dirs.push((DirLabel { dir: dir.display().to_string() }, space));
            }
        }
        family(
            enc,
            "fjord_log_dir_free_bytes",
            "Free bytes on the file system of a log directory",
            MetricType::Gauge,
            dirs.iter().map(|(l, s)| (l.clone(), ConstGauge::new(s.free as f64))),
        )?;
        family(
            enc,
            "fjord_log_dir_capacity_bytes",
            "Size of the file system of a log directory",
            MetricType::Gauge,
            dirs.iter().map(|(l, s)| (l.clone(), ConstGauge::new(s.total as f64))),
        )?;

        // Lag: summed records and the oldest record per (group, topic), unless per partition.
        // `lags` runs group by group, each in (topic, partition) order: runs of one key are
        // adjacent, so no map is needed (a scrape may see a hundred thousand offsets).
        // (group, topic, partition when per partition) -> (records, oldest seconds)
        type LagKey<'a> = (&'a str, &'a str, Option<i32>);
        let mut by_key: Vec<(LagKey, (i64, f64))> = Vec::new();
        for l in &lags {
            let key = (l.group, l.topic, fine(l.topic).then_some(l.partition));
            match by_key.last_mut() {
                Some((k, v)) if *k == key => {
                    v.0 += l.records;
                    v.1 = v.1.max(l.seconds);
                }
                _ => by_key.push((key, (l.records, l.seconds))),
            }
        }
        let by_key: Vec<(Labels, (i64, f64))> = by_key
            .into_iter()
            .map(|((group, topic, partition), v)| {
                (labels(&[("group", group), ("topic", topic)], partition.map(|p| p.to_string())), v)
            })
            .collect();
        family(
            enc,
            "fjord_consumer_group_lag_records",
            "Records between a group's committed offsets and the high watermark",
            MetricType::Gauge,
            by_key.iter().map(|(l, v)| (l.clone(), ConstGauge::new(v.0))),
        )?;
        family(
            enc,
            "fjord_consumer_group_lag_seconds",
            "Age of the oldest record a group has not consumed (0 when caught up)",
            MetricType::Gauge,
            by_key.iter().map(|(l, v)| (l.clone(), ConstGauge::new(v.1))),
        )?;
        family(
            enc,
            "fjord_consumer_group_members",
            "Members of a group, labelled with the group's state",
            MetricType::Gauge,
            groups
                .iter()
                .map(|g| (GroupStateLabel { group: g.id.clone(), state: g.state }, ConstGauge::new(g.members as i64))),
        )?;
        family(
            enc,
            "fjord_consumer_group_status",
            "Burrow-style status: 0 ok, 1 warn, 2 stall, 3 stop, 4 rewind",
            MetricType::Gauge,
            status,
        )?;
        family(
            enc,
            "fjord_consumer_group_commits",
            "Offset commits accepted since this coordinator loaded the group",
            MetricType::Counter,
            groups.iter().map(|g| (GroupLabel { group: g.id.clone() }, ConstCounter::new(g.commits))),
        )?;
        family(
            enc,
            "fjord_consumer_group_last_commit_timestamp_seconds",
            "Unix time of the group's last offset commit",
            MetricType::Gauge,
            groups.iter().filter_map(|g| {
                Some((GroupLabel { group: g.id.clone() }, ConstGauge::new(g.last_commit_ms? as f64 / 1000.0)))
            }),
        )?;
        Ok(())
    }
}
