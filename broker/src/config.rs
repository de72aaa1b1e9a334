//! Broker configuration, read from Kafka's own `server.properties` keys so that a
//! Kafka operator's knowledge (and files) carry over. Fjord-only keys live under `fjord.`.
//!
//! Unknown keys are an error rather than a warning: a typo in a retention setting that is
//! silently ignored is how data gets deleted (or kept) against the operator's intent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// One listener from `listeners=NAME://host:port`.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Listener {
    pub fn bind_addr(&self) -> String {
        let host = if self.host.is_empty() { "0.0.0.0" } else { &self.host };
        format!("{}:{}", host, self.port)
    }
}

/// Settings that only the replication and quorum work will read are parsed and validated
/// now, so a Kafka `server.properties` is checked in full.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub process_roles: Vec<String>,
    pub controller_quorum_voters: Option<String>,
    pub controller_listener_names: Vec<String>,
    pub listeners: Vec<Listener>,
    pub advertised_listeners: Vec<Listener>,
    /// The TLS settings of each client listener whose security protocol is SSL or SASL_SSL.
    pub listener_ssl: BTreeMap<String, crate::tls::config::SslConfig>,
    /// The SASL settings of each client listener whose protocol is SASL_PLAINTEXT or SASL_SSL.
    pub listener_sasl: BTreeMap<String, crate::sasl::config::SaslConfig>,
    pub log_dirs: Vec<PathBuf>,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub min_insync_replicas: i32,
    pub auto_create_topics_enable: bool,
    pub offsets_topic_replication_factor: i16,
    pub offsets_topic_num_partitions: i32,
    pub offsets_topic_segment_bytes: i32,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: u64,
    pub log_cleaner: LogCleanerConfig,
    pub txn: TransactionConfig,
    pub log_retention_ms: i64,
    pub log_retention_bytes: i64,
    pub log_segment_bytes: i64,
    pub log_roll_ms: i64,
    pub log_retention_check_interval_ms: u64,
    pub log_flush_interval_messages: i64,
    pub log_flush_interval_ms: Option<i64>,
    pub log_index_interval_bytes: u32,
    pub message_max_bytes: i32,
    pub fetch_max_bytes: i32,
    pub socket_request_max_bytes: usize,
    pub connections_max_idle_ms: u64,
    pub max_connections: usize,
    pub group_initial_rebalance_delay_ms: u64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    pub delete_topic_enable: bool,
    pub http_listen: Option<SocketAddr>,
    pub max_inflight_requests: usize,
    pub metrics: crate::metrics::MetricsConfig,
    /// OTLP/HTTP collector base URL; tracing is off when unset.
    pub otlp_endpoint: Option<String>,
    pub trace_sample_ratio: f64,
    pub cluster_id: Option<String>,
    /// (id, host:port) of every voter; a single-node quorum of this node when unset.
    pub voters: Vec<(i32, String)>,
    /// The listener the quorum binds, if `listeners` has one named in
    /// `controller.listener.names`.
    pub controller_listener: Option<Listener>,
    pub inter_broker_listener: String,
    pub broker_rack: Option<String>,
    pub heartbeat_interval_ms: u64,
    pub session_timeout_ms: u64,
    pub replica_lag_time_max_ms: i64,
    pub replica_fetch_max_bytes: i32,
    pub replica_fetch_response_max_bytes: i32,
    pub replica_fetch_wait_max_ms: i32,
    pub election_timeout_ms: u64,
    pub snapshot_interval_entries: u64,
    pub controlled_shutdown: bool,
    /// Every known key with its effective value, and the keys the operator set.
    pub props: BTreeMap<String, String>,
    pub explicit: std::collections::BTreeSet<String>,
}

/// `log.cleaner.*`: the cleaner threads of compacted topics.
#[derive(Debug, Clone)]
pub struct LogCleanerConfig {
    pub enable: bool,
    pub threads: usize,
    pub backoff_ms: u64,
    pub dedupe_buffer_size: usize,
    pub io_max_bytes_per_second: f64,
}

/// `transaction.*`: the transaction coordinator and its `__transaction_state` topic.
#[derive(Debug, Clone)]
pub struct TransactionConfig {
    pub state_log_num_partitions: i32,
    pub state_log_replication_factor: i16,
    pub state_log_min_isr: i16,
    pub state_log_segment_bytes: i32,
    pub max_timeout_ms: i32,
    pub id_expiration_ms: i64,
    pub abort_timed_out_interval_ms: u64,
    pub remove_expired_interval_ms: u64,
}

/// Every key Fjord understands, with its default. Defaults are Kafka's unless noted.
const DEFAULTS: &[(&str, &str)] = &[
    ("node.id", ""),
    ("broker.id", ""),
    ("process.roles", "broker,controller"),
    ("controller.quorum.voters", ""),
    ("controller.quorum.bootstrap.servers", ""),
    ("controller.listener.names", "CONTROLLER"),
    ("listeners", "PLAINTEXT://:9092"),
    ("advertised.listeners", ""),
    ("listener.security.protocol.map", ""),
    ("inter.broker.listener.name", ""),
    ("log.dirs", ""),
    ("log.dir", "/tmp/kafka-logs"),
    ("num.partitions", "1"),
    ("default.replication.factor", "1"),
    ("min.insync.replicas", "1"),
    ("auto.create.topics.enable", "true"),
    ("offsets.topic.replication.factor", "3"),
    ("offsets.topic.num.partitions", "50"),
    ("offsets.topic.segment.bytes", "104857600"),
    ("offsets.retention.minutes", "10080"),
    ("offsets.retention.check.interval.ms", "600000"),
    ("log.cleanup.policy", "delete"),
    ("log.cleaner.enable", "true"),
    ("log.cleaner.threads", "1"),
    ("log.cleaner.backoff.ms", "15000"),
    ("log.cleaner.dedupe.buffer.size", "134217728"),
    ("log.cleaner.io.max.bytes.per.second", "1.7976931348623157E308"),
    ("log.cleaner.min.cleanable.ratio", "0.5"),
    ("log.cleaner.delete.retention.ms", "86400000"),
    ("log.cleaner.min.compaction.lag.ms", "0"),
    ("log.cleaner.max.compaction.lag.ms", "9223372036854775807"),
    ("transaction.state.log.replication.factor", "3"),
    ("transaction.state.log.min.isr", "2"),
    ("transaction.state.log.num.partitions", "50"),
    ("transaction.state.log.segment.bytes", "104857600"),
    ("transaction.max.timeout.ms", "900000"),
    ("transactional.id.expiration.ms", "604800000"),
    ("transaction.abort.timed.out.transaction.cleanup.interval.ms", "10000"),
    ("transaction.remove.expired.transaction.cleanup.interval.ms", "3600000"),
    ("log.retention.ms", ""),
    ("log.retention.minutes", ""),
    ("log.retention.hours", "168"),
    ("log.retention.bytes", "-1"),
    ("log.segment.bytes", "1073741824"),
    ("log.roll.ms", ""),
    ("log.roll.hours", "168"),
    ("log.retention.check.interval.ms", "300000"),
    ("log.flush.interval.messages", "9223372036854775807"),
    ("log.flush.interval.ms", ""),
    ("log.index.interval.bytes", "4096"),
    ("message.max.bytes", "1048588"),
    ("fetch.max.bytes", "57671680"),
    ("socket.request.max.bytes", "104857600"),
    ("socket.send.buffer.bytes", "102400"),
    ("socket.receive.buffer.bytes", "102400"),
    ("num.network.threads", "3"),
    ("num.io.threads", "8"),
    ("num.recovery.threads.per.data.dir", "1"),
    ("connections.max.idle.ms", "600000"),
    ("max.connections", "2147483647"),
    ("group.initial.rebalance.delay.ms", "3000"),
    ("group.min.session.timeout.ms", "6000"),
    ("group.max.session.timeout.ms", "1800000"),
    ("delete.topic.enable", "true"),
    ("cluster.id", ""),
    ("broker.rack", ""),
    // Fjord's defaults are lower than Kafka's 2000/9000 so a dead broker is fenced (and
    // its partitions led elsewhere) in about 2.5 s; Kafka's values work too.
    ("broker.heartbeat.interval.ms", "500"),
    ("broker.session.timeout.ms", "2500"),
    ("replica.lag.time.max.ms", "30000"),
    ("replica.fetch.max.bytes", "1048576"),
    ("replica.fetch.response.max.bytes", "10485760"),
    ("replica.fetch.wait.max.ms", "500"),
    ("controller.quorum.election.timeout.ms", "1000"),
    ("controller.quorum.fetch.timeout.ms", "2000"),
    ("metadata.log.max.snapshot.interval.entries", "10000"),
    ("controlled.shutdown.enable", "true"),
    ("unclean.leader.election.enable", "false"),
    ("fjord.http.listen", ""),
    ("fjord.max.inflight.requests", "100"),
    ("fjord.metrics.granularity", "topic"),
    ("fjord.metrics.partition.allow", ".*"),
    ("fjord.metrics.partition.deny", ""),
    ("fjord.metrics.groups.allow", ".*"),
    ("fjord.metrics.groups.deny", ""),
    ("fjord.metrics.max.partition.series", "10000"),
    ("fjord.tracing.otlp.endpoint", ""),
    ("fjord.tracing.sample.ratio", "0.01"),
];

/// `id@host:port,...`
fn parse_voters(s: &str) -> Result<Vec<(i32, String)>> {
    let mut out = Vec::new();
    for v in s.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        let (id, addr) =
            v.split_once('@').ok_or_else(|| anyhow!("controller.quorum.voters: {v:?} is not id@host:port"))?;
        let id: i32 = id.parse().map_err(|_| anyhow!("controller.quorum.voters: bad node id in {v:?}"))?;
        if addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
            bail!("controller.quorum.voters: {v:?} has no host:port");
        }
        if out.iter().any(|(i, _)| *i == id) {
            bail!("controller.quorum.voters: node {id} appears twice");
        }
        out.push((id, addr.to_string()));
    }
    Ok(out)
}

/// One `key=value` setting, from a properties file or an `--override`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub key: String,
    pub value: String,
}

impl Property {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Property { key: key.into(), value: value.into() }
    }
}

/// Parse a Java-style properties text: `key=value` or `key: value`, `#`/`!` comments.
pub fn parse_properties(text: &str) -> Result<Vec<Property>> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let idx = line.find(['=', ':']).ok_or_else(|| anyhow!("line {}: expected key=value, got {:?}", n + 1, raw))?;
        out.push(Property::new(line[..idx].trim(), line[idx + 1..].trim()));
    }
    Ok(out)
}

/// Resolve Kafka's FileConfigProvider references, `${file:PATH:KEY}`, in values: each is
/// replaced by KEY's value in the properties file PATH. The Kubernetes operator uses this
/// for what differs per broker but is only known after the pods' template is written
/// (the node port of a broker's external Service), kept in a ConfigMap file by ordinal.
pub fn resolve_file_refs(props: Vec<Property>) -> Result<Vec<Property>> {
    let mut files: BTreeMap<String, Vec<Property>> = BTreeMap::new();
    let mut out = Vec::with_capacity(props.len());
    for Property { key: k, value: mut v } in props {
        let mut from = 0; // past the last replacement: a value is not resolved again
        while let Some(start) = v[from..].find("${file:").map(|i| from + i) {
            let end = start
                + v[start..].find('}').ok_or_else(|| anyhow!("{k}: unterminated ${{file:...}} reference in {v:?}"))?;
            let (path, key) = v[start + 7..end]
                .rsplit_once(':')
                .ok_or_else(|| anyhow!("{k}: expected ${{file:PATH:KEY}}, got {:?}", &v[start..=end]))?;
            if !files.contains_key(path) {
                let text = std::fs::read_to_string(path).with_context(|| format!("{k}: reading {path}"))?;
                files.insert(path.to_string(), parse_properties(&text).with_context(|| format!("parsing {path}"))?);
            }
            let value = files[path]
                .iter()
                .rev()
                .find(|p| p.key == key)
                .map(|p| p.value.clone())
                .ok_or_else(|| anyhow!("{k}: {path} has no key {key:?}"))?;
            v.replace_range(start..=end, &value);
            from = start + value.len();
        }
        out.push(Property { key: k, value: v });
    }
    Ok(out)
}

fn parse_listeners(s: &str) -> Result<Vec<Listener>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, rest) =
            part.split_once("://").ok_or_else(|| anyhow!("listener {:?} must look like NAME://host:port", part))?;
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| anyhow!("listener {:?} has no port", part))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let port: u16 = port.parse().with_context(|| format!("listener {:?}: bad port", part))?;
        out.push(Listener { name: name.to_string(), host, port });
    }
    Ok(out)
}

/// Kafka's security protocols.
const SECURITY_PROTOCOLS: [&str; 4] = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];

/// `listener.security.protocol.map` (`NAME:PROTOCOL,...`) as Kafka reads it. Unset, a
/// listener named after a security protocol uses that protocol, and a controller listener
/// PLAINTEXT; set, it must name every listener.
fn security_protocol_map(value: &str, controller_names: &[String]) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    if value.trim().is_empty() {
        for p in SECURITY_PROTOCOLS {
            map.insert(p.to_string(), p.to_string());
        }
        for name in controller_names {
            map.entry(name.clone()).or_insert_with(|| "PLAINTEXT".to_string());
        }
        return Ok(map);
    }
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, protocol) = entry
            .split_once(':')
            .ok_or_else(|| anyhow!("listener.security.protocol.map entry {entry:?} must look like NAME:PROTOCOL"))?;
        let protocol = protocol.trim().to_ascii_uppercase();
        if !SECURITY_PROTOCOLS.contains(&protocol.as_str()) {
            bail!(
                "listener.security.protocol.map: unknown security protocol {protocol:?} for listener {name} \
                 (Kafka's are {})",
                SECURITY_PROTOCOLS.join(", ")
            );
        }
        map.insert(name.trim().to_string(), protocol);
    }
    Ok(map)
}

/// The security protocol of listener `name`, if Fjord serves it: PLAINTEXT, or SSL,
/// SASL_PLAINTEXT or SASL_SSL on a client listener. A secured controller listener is
/// refused at startup rather than served unsecured (the quorum's transport has no TLS or
/// SASL yet).
fn check_listener_security<'a>(
    name: &str,
    protocols: &'a BTreeMap<String, String>,
    controller: bool,
) -> Result<&'a str> {
    let protocol = protocols.get(name).ok_or_else(|| {
        anyhow!("no security protocol defined for listener {name}: name it in listener.security.protocol.map")
    })?;
    match (protocol.as_str(), controller) {
        ("PLAINTEXT", _) | (_, false) => Ok(protocol),
        (_, true) => bail!(
            "controller listener {name} uses {protocol}: security on the metadata quorum's listener is not built \
             yet (client listeners can use it)"
        ),
    }
}

fn num<T: std::str::FromStr>(props: &BTreeMap<String, String>, key: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let v = &props[key];
    v.parse::<T>().map_err(|e| anyhow!("invalid value {:?} for {}: {}", v, key, e))
}

fn boolean(props: &BTreeMap<String, String>, key: &str) -> Result<bool> {
    match props[key].to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        v => bail!("invalid value {:?} for {}: expected true or false", v, key),
    }
}

fn opt_num(props: &BTreeMap<String, String>, key: &str) -> Result<Option<i64>> {
    if props[key].is_empty() {
        Ok(None)
    } else {
        num::<i64>(props, key).map(Some)
    }
}

/// Where clients of one listener connect: its advertised host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub host: String,
    pub port: i32,
}

impl BrokerConfig {
    /// Where clients of `listener` should connect: the advertised listener of the same name
    /// (so an internal and an external listener each hand out their own address), else the
    /// first one. A wildcard bind address advertises `localhost`.
    pub fn advertised(&self, listener: &str) -> Advertised {
        let ls = &self.advertised_listeners;
        let l = ls.iter().find(|l| l.name == listener).unwrap_or(&ls[0]);
        let host = if l.host.is_empty() || l.host == "0.0.0.0" || l.host == "::" { "localhost" } else { &l.host };
        Advertised { host: host.to_string(), port: l.port as i32 }
    }

    /// Build a config from properties, later ones overriding earlier ones.
    pub fn from_properties(props: &[Property]) -> Result<Self> {
        let mut settings: BTreeMap<String, String> =
            DEFAULTS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut unknown = Vec::new();
        for (k, v) in crate::tls::config::KEYS.iter().chain(crate::sasl::config::KEYS) {
            settings.insert(k.to_string(), v.to_string());
        }
        for p in props {
            if settings.contains_key(p.key.as_str())
                || crate::tls::config::ssl_key(&p.key).is_some()
                || crate::sasl::config::listener_key(&p.key)
            {
                settings.insert(p.key.clone(), p.value.clone());
            } else {
                unknown.push(p.key.clone());
            }
        }
        if !unknown.is_empty() {
            bail!("unknown configuration key(s): {}", unknown.join(", "));
        }

        let node_id = match (settings["node.id"].as_str(), settings["broker.id"].as_str()) {
            ("", "") => bail!("node.id is required"),
            ("", _) => num::<i32>(&settings, "broker.id")?,
            _ => num::<i32>(&settings, "node.id")?,
        };
        if node_id < 0 {
            bail!("node.id must be >= 0, got {}", node_id);
        }
        let process_roles: Vec<String> =
            settings["process.roles"].split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        for r in &process_roles {
            if r != "broker" && r != "controller" {
                bail!("invalid value {:?} in process.roles: expected broker and/or controller", r);
            }
        }
        let controller_listener_names: Vec<String> = settings["controller.listener.names"]
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let all_listeners = parse_listeners(&settings["listeners"])?;
        let protocols = security_protocol_map(&settings["listener.security.protocol.map"], &controller_listener_names)?;
        let (mut listener_ssl, mut listener_sasl) = (BTreeMap::new(), BTreeMap::new());
        for l in &all_listeners {
            let controller = controller_listener_names.contains(&l.name);
            let protocol = check_listener_security(&l.name, &protocols, controller)?;
            let prefix = format!("listener.name.{}.", l.name.to_ascii_lowercase());
            // The listener's own key, else the broker-wide one, else "" (a per-mechanism key).
            let get = |k: &str| {
                settings.get(&format!("{prefix}{k}")).or_else(|| settings.get(k)).cloned().unwrap_or_default()
            };
            if protocol.ends_with("SSL") {
                listener_ssl.insert(l.name.clone(), crate::tls::config::SslConfig::from_settings(&l.name, get)?);
            }
            if protocol.starts_with("SASL_") {
                listener_sasl.insert(l.name.clone(), crate::sasl::config::SaslConfig::from_settings(&l.name, get)?);
            }
        }
        // Client-facing listeners: the controller listener is served by the metadata quorum.
        let listeners: Vec<Listener> =
            all_listeners.iter().filter(|l| !controller_listener_names.contains(&l.name)).cloned().collect();
        if listeners.is_empty() {
            bail!("listeners must name at least one client listener");
        }
        let advertised_listeners = if settings["advertised.listeners"].is_empty() {
            listeners.clone()
        } else {
            parse_listeners(&settings["advertised.listeners"])?
        };
        let dirs = if settings["log.dirs"].is_empty() { &settings["log.dir"] } else { &settings["log.dirs"] };
        let log_dirs: Vec<PathBuf> =
            dirs.split(',').map(str::trim).filter(|s| !s.is_empty()).map(PathBuf::from).collect();
        if log_dirs.is_empty() {
            bail!("log.dirs must name a directory");
        }
        let log_retention_ms = if let Some(ms) = opt_num(&settings, "log.retention.ms")? {
            ms
        } else if let Some(m) = opt_num(&settings, "log.retention.minutes")? {
            m * 60_000
        } else {
            num::<i64>(&settings, "log.retention.hours")? * 3_600_000
        };
        let log_roll_ms = match opt_num(&settings, "log.roll.ms")? {
            Some(ms) => ms,
            None => num::<i64>(&settings, "log.roll.hours")? * 3_600_000,
        };
        let http_listen = if settings["fjord.http.listen"].is_empty() {
            None
        } else {
            Some(
                settings["fjord.http.listen"]
                    .parse()
                    .map_err(|e| anyhow!("invalid value for fjord.http.listen: {}", e))?,
            )
        };
        let controller_listener = all_listeners.iter().find(|l| controller_listener_names.contains(&l.name)).cloned();
        let voters = parse_voters(&settings["controller.quorum.voters"])?;
        // Unset roles follow from the voter list, so every pod of a StatefulSet can share one
        // configuration: the ones named in controller.quorum.voters are also controllers.
        let process_roles = if props.iter().any(|p| p.key == "process.roles") || voters.is_empty() {
            process_roles
        } else if voters.iter().any(|(id, _)| *id == node_id) {
            vec!["broker".to_string(), "controller".to_string()]
        } else {
            vec!["broker".to_string()]
        };
        let inter_broker_listener = match settings["inter.broker.listener.name"].as_str() {
            "" => listeners[0].name.clone(),
            name => {
                if !listeners.iter().any(|l| l.name == name) {
                    bail!("inter.broker.listener.name={name} is not one of the listeners");
                }
                name.to_string()
            }
        };
        if listener_ssl.contains_key(&inter_broker_listener) || listener_sasl.contains_key(&inter_broker_listener) {
            bail!(
                "inter.broker.listener.name={inter_broker_listener} is secured: TLS and SASL between brokers are not \
                 built yet; name a PLAINTEXT listener for inter-broker traffic"
            );
        }
        let cfg = BrokerConfig {
            voters,
            controller_listener,
            inter_broker_listener,
            broker_rack: Some(settings["broker.rack"].clone()).filter(|s| !s.is_empty()),
            heartbeat_interval_ms: num(&settings, "broker.heartbeat.interval.ms")?,
            session_timeout_ms: num(&settings, "broker.session.timeout.ms")?,
            replica_lag_time_max_ms: num(&settings, "replica.lag.time.max.ms")?,
            replica_fetch_max_bytes: num(&settings, "replica.fetch.max.bytes")?,
            replica_fetch_response_max_bytes: num(&settings, "replica.fetch.response.max.bytes")?,
            replica_fetch_wait_max_ms: num(&settings, "replica.fetch.wait.max.ms")?,
            election_timeout_ms: num(&settings, "controller.quorum.election.timeout.ms")?,
            snapshot_interval_entries: num(&settings, "metadata.log.max.snapshot.interval.entries")?,
            controlled_shutdown: boolean(&settings, "controlled.shutdown.enable")?,
            node_id,
            process_roles,
            controller_quorum_voters: Some(settings["controller.quorum.voters"].clone()).filter(|s| !s.is_empty()),
            controller_listener_names,
            listeners,
            advertised_listeners,
            listener_ssl,
            listener_sasl,
            log_dirs,
            num_partitions: num(&settings, "num.partitions")?,
            default_replication_factor: num(&settings, "default.replication.factor")?,
            min_insync_replicas: num(&settings, "min.insync.replicas")?,
            auto_create_topics_enable: boolean(&settings, "auto.create.topics.enable")?,
            offsets_topic_replication_factor: num(&settings, "offsets.topic.replication.factor")?,
            offsets_topic_num_partitions: num(&settings, "offsets.topic.num.partitions")?,
            offsets_topic_segment_bytes: num(&settings, "offsets.topic.segment.bytes")?,
            offsets_retention_ms: num::<i64>(&settings, "offsets.retention.minutes")?.saturating_mul(60_000),
            offsets_retention_check_interval_ms: num(&settings, "offsets.retention.check.interval.ms")?,
            log_cleaner: LogCleanerConfig {
                enable: boolean(&settings, "log.cleaner.enable")?,
                threads: num(&settings, "log.cleaner.threads")?,
                backoff_ms: num(&settings, "log.cleaner.backoff.ms")?,
                dedupe_buffer_size: num(&settings, "log.cleaner.dedupe.buffer.size")?,
                io_max_bytes_per_second: num(&settings, "log.cleaner.io.max.bytes.per.second")?,
            },
            txn: TransactionConfig {
                state_log_num_partitions: num(&settings, "transaction.state.log.num.partitions")?,
                state_log_replication_factor: num(&settings, "transaction.state.log.replication.factor")?,
                state_log_min_isr: num(&settings, "transaction.state.log.min.isr")?,
                state_log_segment_bytes: num(&settings, "transaction.state.log.segment.bytes")?,
                max_timeout_ms: num(&settings, "transaction.max.timeout.ms")?,
                id_expiration_ms: num(&settings, "transactional.id.expiration.ms")?,
                abort_timed_out_interval_ms: num(
                    &settings,
                    "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                )?,
                remove_expired_interval_ms: num(
                    &settings,
                    "transaction.remove.expired.transaction.cleanup.interval.ms",
                )?,
            },
            log_retention_ms,
            log_retention_bytes: num(&settings, "log.retention.bytes")?,
            log_segment_bytes: num(&settings, "log.segment.bytes")?,
            log_roll_ms,
            log_retention_check_interval_ms: num(&settings, "log.retention.check.interval.ms")?,
            log_flush_interval_messages: num(&settings, "log.flush.interval.messages")?,
            log_flush_interval_ms: opt_num(&settings, "log.flush.interval.ms")?,
            log_index_interval_bytes: num(&settings, "log.index.interval.bytes")?,
            message_max_bytes: num(&settings, "message.max.bytes")?,
            fetch_max_bytes: num(&settings, "fetch.max.bytes")?,
            socket_request_max_bytes: num(&settings, "socket.request.max.bytes")?,
            connections_max_idle_ms: num(&settings, "connections.max.idle.ms")?,
            max_connections: num(&settings, "max.connections")?,
            group_initial_rebalance_delay_ms: num(&settings, "group.initial.rebalance.delay.ms")?,
            group_min_session_timeout_ms: num(&settings, "group.min.session.timeout.ms")?,
            group_max_session_timeout_ms: num(&settings, "group.max.session.timeout.ms")?,
            delete_topic_enable: boolean(&settings, "delete.topic.enable")?,
            http_listen,
            max_inflight_requests: num(&settings, "fjord.max.inflight.requests")?,
            metrics: crate::metrics::MetricsConfig::from_props(&settings)?,
            otlp_endpoint: Some(settings["fjord.tracing.otlp.endpoint"].clone())
                .filter(|s| !s.is_empty())
                .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|s| !s.is_empty())),
            trace_sample_ratio: num(&settings, "fjord.tracing.sample.ratio")?,
            cluster_id: Some(settings["cluster.id"].clone()).filter(|s| !s.is_empty()),
            explicit: props.iter().map(|p| p.key.clone()).collect(),
            props: settings,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        if self.num_partitions < 1 {
            bail!("num.partitions must be >= 1");
        }
        if self.min_insync_replicas < 1 {
            bail!("min.insync.replicas must be >= 1");
        }
        if self.log_segment_bytes < 14 || self.log_segment_bytes > i32::MAX as i64 {
            bail!("log.segment.bytes must be between 14 and {} (an int, as in Kafka)", i32::MAX);
        }
        if self.fetch_max_bytes < 1024 {
            bail!("fetch.max.bytes must be >= 1024");
        }
        if self.socket_request_max_bytes < 64 {
            bail!("socket.request.max.bytes must be >= 64");
        }
        if self.offsets_topic_num_partitions < 1 {
            bail!("offsets.topic.num.partitions must be >= 1");
        }
        if !self.voters.is_empty() {
            let voter = self.voters.iter().any(|(id, _)| *id == self.node_id);
            if voter != self.process_roles.iter().any(|r| r == "controller") {
                bail!(
                    "process.roles must include controller exactly when node.id {} is one of controller.quorum.voters",
                    self.node_id
                );
            }
            if self.controller_listener.is_none() {
                bail!(
                    "listeners must include a listener named in controller.listener.names ({}) for the metadata quorum",
                    self.controller_listener_names.join(",")
                );
            }
        }
        if self.heartbeat_interval_ms == 0 || self.session_timeout_ms <= self.heartbeat_interval_ms {
            bail!("broker.session.timeout.ms must be larger than broker.heartbeat.interval.ms (> 0)");
        }
        if self.max_inflight_requests < 1 {
            bail!("fjord.max.inflight.requests must be >= 1");
        }
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            bail!("fjord.tracing.sample.ratio must be between 0 and 1");
        }
        if self.log_index_interval_bytes == 0 {
            bail!("log.index.interval.bytes must be > 0");
        }
        if self.offsets_topic_segment_bytes < 14 {
            bail!("offsets.topic.segment.bytes must be >= 14");
        }
        if self.offsets_retention_ms < 1 || self.offsets_retention_check_interval_ms < 1 {
            bail!("offsets.retention.minutes and offsets.retention.check.interval.ms must be >= 1");
        }
        let t = &self.txn;
        if t.state_log_num_partitions < 1
            || t.state_log_replication_factor < 1
            || t.state_log_min_isr < 1
            || t.state_log_segment_bytes < 14
            || t.max_timeout_ms < 1
            || t.id_expiration_ms < 1
            || t.abort_timed_out_interval_ms < 1
            || t.remove_expired_interval_ms < 1
        {
            bail!("transaction.state.log.num.partitions, .replication.factor and .min.isr must be >= 1, .segment.bytes >= 14, and transaction.max.timeout.ms, transactional.id.expiration.ms and the transaction cleanup intervals >= 1");
        }
        let c = &self.log_cleaner;
        if c.threads < 1 || c.dedupe_buffer_size < 1024 * 1024 || c.io_max_bytes_per_second <= 0.0 {
            bail!("log.cleaner.threads must be >= 1, log.cleaner.dedupe.buffer.size >= 1 MiB and log.cleaner.io.max.bytes.per.second > 0");
        }
        for (key, valid) in [
            (
                "log.cleanup.policy",
                crate::topic_config::validate("cleanup.policy", &self.props["log.cleanup.policy"]).is_ok(),
            ),
            (
                "log.cleaner.min.cleanable.ratio",
                self.props["log.cleaner.min.cleanable.ratio"].parse::<f64>().is_ok_and(|r| (0.0..=1.0).contains(&r)),
            ),
            (
                "log.cleaner.delete.retention.ms",
                self.props["log.cleaner.delete.retention.ms"].parse::<i64>().is_ok_and(|v| v >= 0),
            ),
            (
                "log.cleaner.min.compaction.lag.ms",
                self.props["log.cleaner.min.compaction.lag.ms"].parse::<i64>().is_ok_and(|v| v >= 0),
            ),
            (
                "log.cleaner.max.compaction.lag.ms",
                self.props["log.cleaner.max.compaction.lag.ms"].parse::<i64>().is_ok_and(|v| v >= 1),
            ),
        ] {
            if !valid {
                bail!("invalid value {:?} for {key}", self.props[key]);
            }
        }
        Ok(())
    }

    pub fn is_voter(&self) -> bool {
        self.voters.is_empty() || self.voters.iter().any(|(id, _)| *id == self.node_id)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.connections_max_idle_ms)
    }

    /// The data directory. Fjord stores every partition in the first directory of
    /// `log.dirs`; spreading across several directories is JBOD work still to come.
    pub fn data_dir(&self) -> &PathBuf {
        &self.log_dirs[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<Property> {
        v.iter().map(|(k, v)| Property::new(*k, *v)).collect()
    }

    #[test]
    fn file_references_resolve_from_a_properties_file() {
        let dir = std::env::temp_dir().join(format!("fjord-file-ref-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("external.properties");
        std::fs::write(&f, "broker-0.port=31000\nbroker-1.port=31001\n").unwrap();
        let r = format!("${{file:{}:broker-1.port}}", f.display());
        let value = format!("A://h:1,EXTERNAL://10.0.0.1:{r}");
        let got = resolve_file_refs(pairs(&[("advertised.listeners", value.as_str()), ("x", "y")])).unwrap();
        assert_eq!(got, pairs(&[("advertised.listeners", "A://h:1,EXTERNAL://10.0.0.1:31001"), ("x", "y")]));
        let missing = format!("${{file:{}:broker-2.port}}", f.display());
        assert!(resolve_file_refs(pairs(&[("a", missing.as_str())]))
            .unwrap_err()
            .to_string()
            .contains("broker-2.port"));
        assert!(resolve_file_refs(pairs(&[("a", "${file:nope")])).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn minimal_config_is_a_single_node_cluster() {
        let c = BrokerConfig::from_properties(&pairs(&[
            ("node.id", "1"),
            ("listeners", "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"),
            ("log.dirs", "/data"),
        ]))
        .unwrap();
        assert_eq!(c.node_id, 1);
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].port, 9092);
        assert_eq!(c.advertised_listeners, c.listeners);
        assert_eq!(c.log_retention_ms, 168 * 3_600_000);
    }

    #[test]
    fn unknown_and_invalid_keys_are_errors() {
        let e = BrokerConfig::from_properties(&pairs(&[("node.id", "1"), ("log.retention.mss", "5")])).unwrap_err();
        assert!(e.to_string().contains("log.retention.mss"), "{e}");
        let e = BrokerConfig::from_properties(&pairs(&[("node.id", "x")])).unwrap_err();
        assert!(e.to_string().contains("node.id"), "{e}");
        let e = BrokerConfig::from_properties(&pairs(&[("node.id", "1"), ("auto.create.topics.enable", "yes")]))
            .unwrap_err();
        assert!(e.to_string().contains("auto.create.topics.enable"), "{e}");
    }

    /// A listener whose security protocol is not built fails the start, naming it: it is
    /// never served in plaintext. SSL client listeners are served.
    #[test]
    fn listeners_must_be_built() {
        let start = |extra: &[(&str, &str)]| {
            let mut v = vec![("node.id", "1")];
            v.extend_from_slice(extra);
            BrokerConfig::from_properties(&pairs(&v))
        };
        let refused = [
            (
                vec![("listeners", "PLAINTEXT://:9092,SASL_SSL://127.0.0.1:9093")],
                "ssl.keystore.type (listener SASL_SSL)",
            ),
            (
                vec![
                    ("listeners", "PLAINTEXT://:9092,EXTERNAL://:9094"),
                    (
                        "listener.security.protocol.map",
                        "PLAINTEXT:PLAINTEXT,EXTERNAL:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
                    ),
                ],
                "GSSAPI is not built",
            ),
            (
                vec![
                    ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
                    ("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,CONTROLLER:SSL"),
                ],
                "controller listener CONTROLLER uses SSL",
            ),
            (vec![("listeners", "PLAINTEXT://:9092,SSL://:9093")], "ssl.keystore.type (listener SSL)=JKS"),
            (
                vec![("listeners", "SSL://:9093"), ("ssl.keystore.type", "PEM"), ("ssl.keystore.location", "/k.pem")],
                "TLS and SASL between brokers are not built",
            ),
        ];
        for (extra, named) in refused {
            let e = start(&extra).unwrap_err().to_string();
            assert!(e.contains(named), "{extra:?}: {e}");
        }
        let e = start(&[("listeners", "INTERNAL://:9092")]).unwrap_err().to_string();
        assert!(e.contains("no security protocol defined for listener INTERNAL"), "{e}");
        let e = start(&[("listeners", "A://:9092"), ("listener.security.protocol.map", "A:TLS")]).unwrap_err();
        assert!(e.to_string().contains("unknown security protocol"), "{e}");
        let ok = start(&[
            ("listeners", "INTERNAL://:9092,CONTROLLER://:9093,EXTERNAL://:9094"),
            ("listener.security.protocol.map", "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:SSL"),
            ("inter.broker.listener.name", "INTERNAL"),
            ("listener.name.external.ssl.keystore.type", "PEM"),
            ("listener.name.external.ssl.keystore.location", "/k.pem"),
            ("ssl.client.auth", "requested"),
            ("ssl.truststore.type", "PEM"),
            ("ssl.truststore.location", "/ca.pem"),
        ])
        .unwrap();
        let ssl = &ok.listener_ssl["EXTERNAL"];
        assert_eq!(ssl.certificate_chain, crate::tls::config::Pem::File("/k.pem".into()), "the listener's override");
        assert_eq!(ssl.client_auth, crate::tls::config::ClientAuth::Requested, "the broker-wide key");
        assert_eq!(ok.listener_ssl.len(), 1);
        let sasl = start(&[
            ("listeners", "PLAINTEXT://:9092,SASL_PLAINTEXT://:9094"),
            ("sasl.enabled.mechanisms", "PLAIN"),
            (
                "listener.name.sasl_plaintext.plain.sasl.jaas.config",
                "org.apache.kafka.common.security.plain.PlainLoginModule required user_alice=\"a\";",
            ),
        ])
        .unwrap();
        assert_eq!(sasl.listener_sasl["SASL_PLAINTEXT"].plain_users["alice"], "a");
        assert!(sasl.listener_ssl.is_empty());
        assert!(start(&[("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093")]).is_ok());
    }

    #[test]
    fn quorum_voters() {
        let base = [("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"), ("controller.listener.names", "CONTROLLER")];
        let mk = |extra: &[(&str, &str)]| {
            let mut v: Vec<(&str, &str)> = base.to_vec();
            v.extend_from_slice(extra);
            BrokerConfig::from_properties(&pairs(&v))
        };
        let c = mk(&[("node.id", "2"), ("controller.quorum.voters", "1@a:9093,2@b:9093,3@c:9093")]).unwrap();
        assert_eq!(c.voters.len(), 3);
        assert_eq!(c.controller_listener.as_ref().unwrap().port, 9093);
        assert!(c.is_voter());
        let e = mk(&[
            ("node.id", "4"),
            ("process.roles", "broker,controller"),
            ("controller.quorum.voters", "1@a:9093,2@b:9093"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("process.roles"), "{e}");
        let c = mk(&[("node.id", "4"), ("controller.quorum.voters", "1@a:9093,2@b:9093")]).unwrap();
        assert_eq!(c.process_roles, vec!["broker"], "unset roles follow from the voter list");
        let c = mk(&[("node.id", "4"), ("process.roles", "broker"), ("controller.quorum.voters", "1@a:9093")]).unwrap();
        assert!(!c.is_voter());
        assert!(mk(&[("node.id", "1"), ("controller.quorum.voters", "1@a")]).is_err());
    }

    #[test]
    fn properties_file_syntax() {
        let p = parse_properties("# c\n! c\nnode.id=3\nlog.dirs : /x\n\n").unwrap();
        assert_eq!(p, pairs(&[("node.id", "3"), ("log.dirs", "/x")]));
    }
}
