//! Prometheus metrics. Names are an API: every name here is listed in `docs/metrics.md`,
//! and the dashboards and alert rules may use only those. Per-request counters are updated
//! inline (this file); partition, log, group and process gauges are computed at scrape
//! time by a collector (`collector.rs`), so groups with no running member still report lag.
//! `granularity.rs` decides which topics get per-partition series.

pub mod collector;
mod granularity;
mod process;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::config::Listener;
use crate::storage::batch::{BatchHeader, HEADER_LEN};

pub use granularity::MetricsConfig;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    pub api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiErrorLabel {
    pub api: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub api: &'static str,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SaslLabel {
    pub listener: String,
    pub mechanism: String,
    /// `success` or `failure`.
    pub result: &'static str,
}

/// The exemplar attached to a latency bucket: the trace of one request that landed there.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabel {
    pub trace_id: String,
}

/// Where the time of one request went (Kafka's RequestQueue/Local/Remote/ResponseSend).
#[derive(Debug, Clone, Copy, Default)]
pub struct Phases {
    pub queue: Duration,
    pub local: Duration,
    pub remote: Duration,
    pub send: Duration,
}

/// The log cleaner's counters (its gauges are read at scrape time).
pub struct CleanerMetrics {
    pub runs: Counter,
    pub read_bytes: Counter,
    pub written_bytes: Counter,
    pub records_removed: Counter,
    pub duration: Histogram,
}

pub struct Metrics {
    registry: parking_lot::Mutex<Registry>,
    bytes_in: Family<TopicLabel, Counter>,
    bytes_out: Family<TopicLabel, Counter>,
    records_in: Family<TopicLabel, Counter>,
    records_out: Family<TopicLabel, Counter>,
    requests: Family<ApiLabel, Counter>,
    request_errors: Family<ApiErrorLabel, Counter>,
    request_duration: Family<ApiLabel, HistogramWithExemplars<TraceLabel>>,
    request_phase: Family<PhaseLabel, Histogram>,
    pub in_flight: Gauge,
    connections: Family<ListenerLabel, Gauge>,
    /// All listeners together, for `max.connections`.
    open_connections: AtomicU64,
    connections_accepted: Family<ListenerLabel, Counter>,
    connections_closed: Family<ReasonLabel, Counter>,
    sasl_authentications: Family<SaslLabel, Counter>,
    pub isr_shrinks: Counter,
    pub isr_expands: Counter,
    pub replication_bytes_in: Counter,
    pub replication_bytes_out: Counter,
    pub series_dropped: Counter,
    pub cleaner: CleanerMetrics,
}

fn latency_histogram() -> HistogramWithExemplars<TraceLabel> {
    // 50 µs .. ~26 s
    HistogramWithExemplars::new(exponential_buckets(0.00005, 2.0, 20))
}

fn phase_histogram() -> Histogram {
    // Coarser than the total (100 µs .. ~100 s, x4): four phases per API would otherwise
    // cost four times the series.
    Histogram::new(exponential_buckets(0.0001, 4.0, 11))
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
            request_phase: Family::new_with_constructor(phase_histogram),
            in_flight: Gauge::default(),
            connections: Family::default(),
            open_connections: AtomicU64::new(0),
            connections_accepted: Family::default(),
            connections_closed: Family::default(),
            sasl_authentications: Family::default(),
            isr_shrinks: Counter::default(),
            isr_expands: Counter::default(),
            replication_bytes_in: Counter::default(),
            replication_bytes_out: Counter::default(),
            series_dropped: Counter::default(),
            cleaner: CleanerMetrics {
                runs: Counter::default(),
                read_bytes: Counter::default(),
                written_bytes: Counter::default(),
                records_removed: Counter::default(),
                // 10 ms .. ~3 h
                duration: Histogram::new(exponential_buckets(0.01, 4.0, 11)),
            },
        };
        r.register("fjord_topic_bytes_in", "Bytes of record batches appended, per topic", m.bytes_in.clone());
        r.register(
            "fjord_topic_bytes_out",
            "Bytes of record batches served to consumers, per topic",
            m.bytes_out.clone(),
        );
        r.register("fjord_topic_records_in", "Records appended, per topic", m.records_in.clone());
        r.register("fjord_topic_records_out", "Records served to consumers, per topic", m.records_out.clone());
        r.register("fjord_requests", "Requests handled, per API", m.requests.clone());
        r.register(
            "fjord_request_errors",
            "Error codes returned, per API and Kafka error name",
            m.request_errors.clone(),
        );
        r.register_with_unit(
            "fjord_request_duration",
            "Time from a request read to its response written, per API (exemplars: trace ids)",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        r.register_with_unit(
            "fjord_request_phase",
            "Request time per API and phase: queue, local, remote (waiting on followers or a long poll), send",
            Unit::Seconds,
            m.request_phase.clone(),
        );
        r.register("fjord_requests_in_flight", "Requests read and not yet answered", m.in_flight.clone());
        r.register("fjord_connections_active", "Open client connections, per listener", m.connections.clone());
        r.register(
            "fjord_connections_accepted",
            "Client connections accepted, per listener",
            m.connections_accepted.clone(),
        );
        r.register("fjord_connections_closed", "Client connections closed, per reason", m.connections_closed.clone());
        r.register(
            "fjord_sasl_authentications",
            "SASL logins on SASL listeners, per listener, mechanism and result",
            m.sasl_authentications.clone(),
        );
        r.register(
            "fjord_isr_shrinks",
            "ISR shrinks of partitions this broker leads (its own, or the controller fencing a follower)",
            m.isr_shrinks.clone(),
        );
        r.register("fjord_isr_expands", "ISR expansions of partitions this broker leads", m.isr_expands.clone());
        r.register_with_unit(
            "fjord_replication_in",
            "Bytes of record batches fetched from leaders as a follower",
            Unit::Bytes,
            m.replication_bytes_in.clone(),
        );
        r.register_with_unit(
            "fjord_replication_out",
            "Bytes of record batches served to followers as a leader",
            Unit::Bytes,
            m.replication_bytes_out.clone(),
        );
        r.register(
            "fjord_metrics_series_dropped",
            "Per-partition series left out by fjord.metrics.max.partition.series (their topics are exported per topic)",
            m.series_dropped.clone(),
        );
        r.register("fjord_log_cleaner_runs", "Cleanings of compacted logs swapped in", m.cleaner.runs.clone());
        r.register_with_unit(
            "fjord_log_cleaner_read",
            "Bytes the log cleaner read (the offset map pass and the rewrite)",
            Unit::Bytes,
            m.cleaner.read_bytes.clone(),
        );
        r.register_with_unit(
            "fjord_log_cleaner_written",
            "Bytes of cleaned segments the log cleaner wrote",
            Unit::Bytes,
            m.cleaner.written_bytes.clone(),
        );
        r.register(
            "fjord_log_cleaner_records_removed",
            "Records the log cleaner removed (superseded, expired tombstones, keyless)",
            m.cleaner.records_removed.clone(),
        );
        r.register_with_unit(
            "fjord_log_cleaner_run_duration",
            "Time of one cleaning of one log, from the offset map to the swap",
            Unit::Seconds,
            m.cleaner.duration.clone(),
        );
        *m.registry.lock() = r;
        m
    }

    /// Every listener's connection series, from zero: a listener nobody connected to yet
    /// still shows up.
    pub fn with_listeners(self, listeners: &[Listener]) -> Self {
        for l in listeners {
            let l = ListenerLabel { listener: l.name.clone() };
            let _ = self.connections.get_or_create(&l);
            let _ = self.connections_accepted.get_or_create(&l);
        }
        self
    }

    /// The scrape-time view of the node's components, built last in `server.rs` (it
    /// reads every other component; none of them reads it).
    pub fn register_collector(&self, collector: collector::BrokerCollector) {
        self.registry.lock().register_collector(Box::new(collector));
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

    /// One request answered: its total time (with the trace id as exemplar when traced)
    /// and its phases. API names are static, so recording allocates no label strings: this
    /// runs once per request.
    pub fn request_done(&self, api: &'static str, phases: Phases, trace_id: Option<String>) {
        let l = ApiLabel { api };
        self.requests.get_or_create(&l).inc();
        let total = phases.queue + phases.local + phases.remote + phases.send;
        self.request_duration.get_or_create(&l).observe(
            total.as_secs_f64(),
            trace_id.map(|trace_id| TraceLabel { trace_id }),
            None,
        );
        for (phase, d) in
            [("queue", phases.queue), ("local", phases.local), ("remote", phases.remote), ("send", phases.send)]
        {
            self.request_phase.get_or_create(&PhaseLabel { api, phase }).observe(d.as_secs_f64());
        }
    }

    pub fn request_error(&self, api: &str, code: i16) {
        let name = kafka_protocol::error::ResponseError::try_from_code(code)
            .map(|e| format!("{e:?}"))
            .unwrap_or_else(|| "None".into());
        self.request_errors.get_or_create(&ApiErrorLabel { api: api.to_string(), error: name }).inc();
    }

    /// Open client connections over all listeners.
    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed) as usize
    }

    pub fn connection_opened(&self, listener: &str) {
        let l = ListenerLabel { listener: listener.to_string() };
        self.connections_accepted.get_or_create(&l).inc();
        self.connections.get_or_create(&l).inc();
        self.open_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self, listener: &str, reason: &str) {
        self.connections.get_or_create(&ListenerLabel { listener: listener.to_string() }).dec();
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
        self.closed(reason);
    }

    /// A SASL login ended: `ok` it succeeded. The mechanism is the one the handshake asked
    /// for (`unknown` when it named none this listener offers).
    pub fn sasl_authentication(&self, listener: &str, mechanism: &str, ok: bool) {
        let label = SaslLabel {
            listener: listener.to_string(),
            mechanism: mechanism.to_string(),
            result: if ok { "success" } else { "failure" },
        };
        self.sasl_authentications.get_or_create(&label).inc();
    }

    pub fn closed(&self, reason: &str) {
        self.connections_closed.get_or_create(&ReasonLabel { reason: reason.to_string() }).inc();
    }

    /// OpenMetrics text, as the registry encodes it (exemplars included).
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock())
            .expect("writing to a String cannot fail");
        out
    }

    /// Prometheus text format 0.0.4, for scrapers and tools (promtool) that do not ask for
    /// OpenMetrics: counter families are named with their `_total` suffix, and the
    /// OpenMetrics-only `# UNIT` and `# EOF` lines and exemplars are dropped.
    pub fn render_prometheus(&self) -> String {
        to_prometheus_text(&self.render_openmetrics())
    }
}

pub fn to_prometheus_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        om.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
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
            // A sample line may carry an exemplar after ` # `; text 0.0.4 has none.
            None => out.push_str(line.split_once(" # {").map_or(line, |(sample, _)| sample)),
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

/// Time spent waiting on other parties inside a request handler (followers acknowledging
/// an acks=all write, a long-poll fetch), so it is reported as `remote`, not `local`.
#[derive(Debug, Default)]
pub struct RemoteTime(AtomicU64);

impl RemoteTime {
    pub async fn wait<F: std::future::Future>(&self, f: F) -> F::Output {
        let start = Instant::now();
        let out = f.await;
        self.0.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }

    pub fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_with_total() {
        let m = Metrics::new();
        m.produced("t", 3, 100);
        let phases = Phases { local: Duration::from_millis(2), ..Default::default() };
        m.request_done("produce", phases, Some("0af7651916cd43dd8448eb211c80319c".into()));
        let om = m.render_openmetrics();
        assert!(om.ends_with("# EOF\n"));
        assert!(om.contains("# {trace_id=\"0af7651916cd43dd8448eb211c80319c\"} 0.002"), "{om}");
        let text = m.render_prometheus();
        assert!(text.contains("# TYPE fjord_topic_records_in_total counter"), "{text}");
        assert!(text.contains("# HELP fjord_topic_records_in_total "), "{text}");
        assert!(text.contains("fjord_topic_records_in_total{topic=\"t\"} 3"), "{text}");
        assert!(text.contains("# TYPE fjord_request_duration_seconds histogram"), "{text}");
        assert!(text.contains("fjord_request_phase_seconds_count{api=\"produce\",phase=\"remote\"} 1"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT") && !text.contains("trace_id"));
    }
}
