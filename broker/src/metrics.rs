//! Prometheus metrics. Names are an API: every name here is listed in `docs/metrics.md`,
//! and the dashboards and alert rules may use only those. Per-request counters are updated
//! inline; partition, log and consumer-lag gauges are computed at scrape time by a
//! collector, so groups with no running member still report lag.

use std::sync::{Arc, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::broker::{now_ms, Broker};
use crate::storage::batch::{find_record, BatchHeader, HEADER_LEN};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    pub api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiErrorLabel {
    pub api: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabel {
    group: String,
    topic: String,
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    topic: String,
    partition: String,
}

pub struct Metrics {
    registry: parking_lot::Mutex<Registry>,
    bytes_in: Family<TopicLabel, Counter>,
    bytes_out: Family<TopicLabel, Counter>,
    records_in: Family<TopicLabel, Counter>,
    records_out: Family<TopicLabel, Counter>,
    requests: Family<ApiLabel, Counter>,
    request_errors: Family<ApiErrorLabel, Counter>,
    request_duration: Family<ApiLabel, Histogram>,
    pub connections: Gauge,
    pub connections_accepted: Counter,
    pub connections_closed: Family<ReasonLabel, Counter>,
    pub isr_shrinks: Counter,
    pub isr_expands: Counter,
    pub replication_bytes_in: Counter,
    pub replication_bytes_out: Counter,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let m = Metrics {
            registry: parking_lot::Mutex::new(Registry::default()),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            records_in: Family::default(),
            records_out: Family::default(),
            requests: Family::default(),
            request_errors: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
            connections_closed: Family::default(),
            isr_shrinks: Counter::default(),
            isr_expands: Counter::default(),
            replication_bytes_in: Counter::default(),
            replication_bytes_out: Counter::default(),
        };
        r.register("fjord_topic_bytes_in", "Bytes of record batches appended, per topic", m.bytes_in.clone());
        r.register("fjord_topic_bytes_out", "Bytes of record batches served to consumers, per topic", m.bytes_out.clone());
        r.register("fjord_topic_records_in", "Records appended, per topic", m.records_in.clone());
        r.register("fjord_topic_records_out", "Records served to consumers, per topic", m.records_out.clone());
        r.register("fjord_requests", "Requests handled, per API", m.requests.clone());
        r.register("fjord_request_errors", "Error codes returned, per API and Kafka error name", m.request_errors.clone());
        r.register_with_unit("fjord_request_duration", "Time to handle a request, per API", Unit::Seconds, m.request_duration.clone());
        r.register("fjord_connections_active", "Open client connections", m.connections.clone());
        r.register("fjord_connections_accepted", "Client connections accepted", m.connections_accepted.clone());
        r.register("fjord_connections_closed", "Client connections closed, per reason", m.connections_closed.clone());
        r.register("fjord_isr_shrinks", "ISR shrinks of partitions this broker leads (its own, or the controller fencing a follower)", m.isr_shrinks.clone());
        r.register("fjord_isr_expands", "ISR expansions of partitions this broker leads", m.isr_expands.clone());
        r.register_with_unit("fjord_replication_in", "Bytes of record batches fetched from leaders as a follower", Unit::Bytes, m.replication_bytes_in.clone());
        r.register_with_unit("fjord_replication_out", "Bytes of record batches served to followers as a leader", Unit::Bytes, m.replication_bytes_out.clone());
        *m.registry.lock() = r;
        m
    }

    /// Register the scrape-time collector once the broker exists.
    pub fn attach(&self, broker: &Arc<Broker>) {
        self.registry.lock().register_collector(Box::new(BrokerCollector { broker: Arc::downgrade(broker) }));
    }

    pub fn produced(&self, topic: &str, records: i64, bytes: usize) {
        let l = TopicLabel { topic: topic.to_string() };
        self.bytes_in.get_or_create(&l).inc_by(bytes as u64);
        self.records_in.get_or_create(&l).inc_by(records.max(0) as u64);
    }

    /// Count served bytes and records (from batch headers; no record is decoded).
    pub fn consumed(&self, topic: &str, batches: &[u8]) {
        let l = TopicLabel { topic: topic.to_string() };
        self.bytes_out.get_or_create(&l).inc_by(batches.len() as u64);
        let mut pos = 0;
        let mut records = 0u64;
        while pos + HEADER_LEN <= batches.len() {
            let Ok(h) = BatchHeader::parse(&batches[pos..]) else { break };
            records += h.records_count.max(0) as u64;
            pos += h.total_len();
        }
        self.records_out.get_or_create(&l).inc_by(records);
    }

    pub fn request_done(&self, api: &str, elapsed: Duration) {
        let l = ApiLabel { api: api.to_string() };
        self.requests.get_or_create(&l).inc();
        self.request_duration.get_or_create(&l).observe(elapsed.as_secs_f64());
    }

    pub fn request_error(&self, api: &str, code: i16) {
        let name = kafka_protocol::error::ResponseError::try_from_code(code).map(|e| format!("{e:?}")).unwrap_or_else(|| "None".into());
        self.request_errors.get_or_create(&ApiErrorLabel { api: api.to_string(), error: name }).inc();
    }

    pub fn closed(&self, reason: &str) {
        self.connections_closed.get_or_create(&ReasonLabel { reason: reason.to_string() }).inc();
    }

    /// OpenMetrics text, as the registry encodes it.
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock()).expect("writing to a String cannot fail");
        out
    }

    /// Prometheus text format 0.0.4, for scrapers and tools (promtool) that do not ask for
    /// OpenMetrics: counter families are named with their `_total` suffix, and the
    /// OpenMetrics-only `# UNIT` and `# EOF` lines are dropped.
    pub fn render_prometheus(&self) -> String {
        to_prometheus_text(&self.render_openmetrics())
    }
}

pub fn to_prometheus_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct BrokerCollector {
    broker: Weak<Broker>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("node_id", &self.config.node_id).finish()
    }
}

/// Consumer lag of one committed offset: records behind the high watermark, and seconds
/// since the first unconsumed record was written. Never negative; an offset below the log
/// start offset counts from the log start (those records are gone, not pending).
pub fn lag(p: &crate::partition::Partition, committed: i64, now_ms: i64) -> (i64, f64) {
    let hw = p.high_watermark();
    let from = committed.max(p.log.log_start_offset());
    let records = (hw - from).max(0);
    if records == 0 {
        return (0, 0.0);
    }
    let ts = match p.log.batch_at(from) {
        Ok(Some((h, _))) if h.base_offset == from => Some(h.base_timestamp),
        // A compressed batch's first timestamp stands in (overstating lag by at most a batch).
        Ok(Some((h, raw))) => Some(find_record(&h, raw, |_, offset| offset >= from).map_or(h.base_timestamp, |r| r.0)),
        _ => None,
    };
    let seconds = ts.map(|t| ((now_ms - t).max(0) as f64) / 1000.0).unwrap_or(0.0);
    (records, seconds)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
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
    applied: u64,
    metadata_lag: i64,
    elections: crate::metadata::image::Elections,
}

fn replication_health(b: &Broker) -> ReplicationHealth {
    let mut h = ReplicationHealth::default();
    for p in b.replicas.all() {
        let p = p.lock();
        if !p.is_leader() {
            continue;
        }
        h.leaders += 1;
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
    let active = b.controller.is_active(b);
    h.controller_active = active as i64;
    if active {
        h.offline = b.metadata.read(|img| img.topics.values().flat_map(|t| t.assignment.iter()).filter(|p| p.leader < 0).count() as i64);
    }
    h.elections = b.metadata.read(|img| img.elections);
    h.applied = b.metadata.applied_index();
    if let Some(q) = b.metadata.quorum() {
        h.metadata_lag = q.status().committed.saturating_sub(h.applied) as i64;
    }
    h
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(b) = self.broker.upgrade() else { return Ok(()) };
        let now = now_ms();

        let partitions = b.replicas.all();
        let mut by_topic: std::collections::BTreeMap<String, (u64, i64)> = Default::default();
        let mut hw_series = Vec::new();
        for p in &partitions {
            let p = p.lock();
            let e = by_topic.entry(p.topic.clone()).or_default();
            e.0 += p.log.size_bytes();
            e.1 += 1;
            hw_series.push((p.topic.clone(), p.index, p.high_watermark(), p.log.log_start_offset()));
        }
        let g = ConstGauge::new(partitions.len() as i64);
        g.encode(encoder.encode_descriptor("fjord_partitions", "Partitions hosted by this broker", None, g.metric_type())?)?;
        let h = replication_health(&b);
        let gauges: [(&str, &str, i64); 9] = [
            ("fjord_under_replicated_partitions", "Led partitions whose ISR is smaller than their replica set", h.under_replicated),
            ("fjord_under_min_isr_partitions", "Led partitions whose ISR is smaller than min.insync.replicas (acks=all fails)", h.under_min_isr),
            ("fjord_at_min_isr_partitions", "Led partitions whose ISR is exactly min.insync.replicas (one more loss blocks acks=all)", h.at_min_isr),
            ("fjord_offline_partitions", "Partitions without a live leader (reported by the active controller)", h.offline),
            ("fjord_leader_partitions", "Partitions this broker leads", h.leaders),
            ("fjord_replica_max_lag_records", "Largest follower lag behind this leader, in records", h.max_lag),
            ("fjord_controller_active", "1 on the active controller (the metadata quorum leader)", h.controller_active),
            ("fjord_metadata_applied_index", "Index of the last metadata log entry applied on this node", h.applied as i64),
            ("fjord_metadata_lag_entries", "Metadata log entries committed but not applied yet on this node", h.metadata_lag),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let mut fam = encoder.encode_descriptor(
            "fjord_leader_elections",
            "Leader elections decided by the metadata this node applied (counts on every node; use the controller's)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (kind, n) in [("clean", h.elections.clean), ("unclean", h.elections.unclean)] {
            prometheus_client::metrics::counter::ConstCounter::new(n).encode(fam.encode_family(&KindLabel { kind: kind.to_string() })?)?;
        }

        let mut fam = encoder.encode_descriptor("fjord_log_size_bytes", "Bytes on disk of all segments, per topic", None, prometheus_client::metrics::MetricType::Gauge)?;
        for (topic, (size, _)) in &by_topic {
            ConstGauge::new(*size as i64).encode(fam.encode_family(&TopicLabel { topic: topic.clone() })?)?;
        }
        let mut fam = encoder.encode_descriptor("fjord_partition_high_watermark", "High watermark per partition", None, prometheus_client::metrics::MetricType::Gauge)?;
        for (topic, index, hw, _) in &hw_series {
            ConstGauge::new(*hw).encode(fam.encode_family(&PartitionLabel { topic: topic.clone(), partition: index.to_string() })?)?;
        }
        let mut fam = encoder.encode_descriptor("fjord_partition_log_start_offset", "Log start offset per partition", None, prometheus_client::metrics::MetricType::Gauge)?;
        for (topic, index, _, start) in &hw_series {
            ConstGauge::new(*start).encode(fam.encode_family(&PartitionLabel { topic: topic.clone(), partition: index.to_string() })?)?;
        }

        let mut lags = Vec::new();
        for (group, topic, partition, offset) in b.groups.all_committed() {
            let Some(p) = b.replicas.get(&topic, partition) else { continue };
            let p = p.lock();
            let (records, seconds) = lag(&p, offset, now);
            lags.push((LagLabel { group, topic, partition: partition.to_string() }, records, seconds));
        }
        let mut fam = encoder.encode_descriptor(
            "fjord_consumer_group_lag_records",
            "Records between a group's committed offset and the high watermark",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (l, records, _) in &lags {
            ConstGauge::new(*records).encode(fam.encode_family(l)?)?;
        }
        let mut fam = encoder.encode_descriptor(
            "fjord_consumer_group_lag_seconds",
            "Age of the first record a group has not consumed (0 when caught up)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (l, _, seconds) in &lags {
            ConstGauge::new(*seconds).encode(fam.encode_family(l)?)?;
        }
        let up = ConstGauge::new(b.started.elapsed().as_secs_f64());
        up.encode(encoder.encode_descriptor("fjord_uptime_seconds", "Seconds since the broker started", None, up.metric_type())?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_with_total() {
        let m = Metrics::new();
        m.produced("t", 3, 100);
        m.request_done("produce", Duration::from_millis(2));
        let text = m.render_prometheus();
        assert!(text.contains("# TYPE fjord_topic_records_in_total counter"), "{text}");
        assert!(text.contains("# HELP fjord_topic_records_in_total "), "{text}");
        assert!(text.contains("fjord_topic_records_in_total{topic=\"t\"} 3"), "{text}");
        assert!(text.contains("# TYPE fjord_request_duration_seconds histogram"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        assert!(m.render_openmetrics().ends_with("# EOF\n"));
    }
}
