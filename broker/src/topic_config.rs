//! Kafka's topic-level configs: which keys exist, their broker-derived defaults, and how
//! they validate. DescribeConfigs reports every key with its source, like Kafka does.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;

use crate::config::BrokerConfig;
use crate::error::ApiError;
use crate::storage::log::LogConfig;

/// (topic key, broker key it defaults from, value kind)
const KEYS: &[(&str, Option<&str>, Kind)] = &[
    ("cleanup.policy", Some("log.cleanup.policy"), Kind::Policy),
    ("compression.type", None, Kind::Compression),
    ("delete.retention.ms", Some("log.cleaner.delete.retention.ms"), Kind::Long),
    ("file.delete.delay.ms", None, Kind::Long),
    ("flush.messages", Some("log.flush.interval.messages"), Kind::Long),
    ("flush.ms", Some("log.flush.interval.ms"), Kind::Long),
    ("index.interval.bytes", Some("log.index.interval.bytes"), Kind::Int),
    ("max.compaction.lag.ms", Some("log.cleaner.max.compaction.lag.ms"), Kind::Long),
    ("max.message.bytes", Some("message.max.bytes"), Kind::Int),
    ("message.timestamp.type", None, Kind::TimestampType),
    ("min.cleanable.dirty.ratio", Some("log.cleaner.min.cleanable.ratio"), Kind::Double),
    ("min.compaction.lag.ms", Some("log.cleaner.min.compaction.lag.ms"), Kind::Long),
    ("min.insync.replicas", Some("min.insync.replicas"), Kind::Int),
    ("preallocate", None, Kind::Bool),
    ("retention.bytes", Some("log.retention.bytes"), Kind::Long),
    ("retention.ms", Some("log.retention.ms"), Kind::Long),
    ("segment.bytes", Some("log.segment.bytes"), Kind::Int),
    ("segment.index.bytes", None, Kind::Int),
    ("segment.jitter.ms", None, Kind::Long),
    ("segment.ms", Some("log.roll.ms"), Kind::Long),
    ("unclean.leader.election.enable", None, Kind::Bool),
    ("message.timestamp.before.max.ms", None, Kind::Long),
    ("message.timestamp.after.max.ms", None, Kind::Long),
    ("leader.replication.throttled.replicas", None, Kind::Replicas),
    ("follower.replication.throttled.replicas", None, Kind::Replicas),
];

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Long,
    Double,
    Bool,
    Policy,
    Compression,
    TimestampType,
    /// `partition:broker` pairs, or `*` (replication throttles).
    Replicas,
}

/// Default value of every topic key on this broker.
pub fn defaults(b: &BrokerConfig) -> BTreeMap<&'static str, String> {
    let flush_ms = b.log_flush_interval_ms.unwrap_or(i64::MAX);
    KEYS.iter()
        .map(|(k, _, _)| {
            let v = match *k {
                "cleanup.policy" => b.props["log.cleanup.policy"].clone(),
                "compression.type" => "producer".to_string(),
                "delete.retention.ms" => b.props["log.cleaner.delete.retention.ms"].clone(),
                "file.delete.delay.ms" => "60000".to_string(),
                "flush.messages" => b.log_flush_interval_messages.to_string(),
                "flush.ms" => flush_ms.to_string(),
                "index.interval.bytes" => b.log_index_interval_bytes.to_string(),
                "max.compaction.lag.ms" => b.props["log.cleaner.max.compaction.lag.ms"].clone(),
                "max.message.bytes" => b.message_max_bytes.to_string(),
                "message.timestamp.type" => "CreateTime".to_string(),
                "min.cleanable.dirty.ratio" => b.props["log.cleaner.min.cleanable.ratio"].clone(),
                "min.compaction.lag.ms" => b.props["log.cleaner.min.compaction.lag.ms"].clone(),
                "min.insync.replicas" => b.min_insync_replicas.to_string(),
                "preallocate" => "false".to_string(),
                "retention.bytes" => b.log_retention_bytes.to_string(),
                "retention.ms" => b.log_retention_ms.to_string(),
                "segment.bytes" => b.log_segment_bytes.to_string(),
                "segment.index.bytes" => "10485760".to_string(),
                "segment.jitter.ms" => "0".to_string(),
                "segment.ms" => b.log_roll_ms.to_string(),
                "unclean.leader.election.enable" => "false".to_string(),
                "message.timestamp.before.max.ms" => i64::MAX.to_string(),
                "message.timestamp.after.max.ms" => i64::MAX.to_string(),
                "leader.replication.throttled.replicas" | "follower.replication.throttled.replicas" => String::new(),
                _ => unreachable!(),
            };
            (*k, v)
        })
        .collect()
}

/// Whether the key's default comes from a broker setting (so it reports as such).
pub fn broker_key(key: &str) -> Option<&'static str> {
    KEYS.iter().find(|(k, _, _)| *k == key).and_then(|(_, b, _)| *b)
}

/// Say so when a topic asks for something this broker stores but does not act on yet.
pub fn warn_unimplemented(topic: &str, overrides: &BTreeMap<String, String>) {
    if overrides.get("compression.type").is_some_and(|c| c != "producer") {
        tracing::warn!(
            topic,
            "compression.type other than 'producer' is recorded but batches are stored as the producer compressed them"
        );
    }
}

pub fn all_keys() -> impl Iterator<Item = &'static str> {
    KEYS.iter().map(|(k, _, _)| *k)
}

/// Validate one topic config override.
pub fn validate(key: &str, value: &str) -> Result<(), ApiError> {
    let Some((_, _, kind)) = KEYS.iter().find(|(k, _, _)| *k == key) else {
        return Err(ApiError::new(ResponseError::InvalidConfig, format!("Unknown topic config name: {key}")));
    };
    let ok = match kind {
        Kind::Int => value.parse::<i32>().is_ok(),
        Kind::Long => value.parse::<i64>().is_ok(),
        Kind::Double => value.parse::<f64>().is_ok(),
        Kind::Bool => matches!(value, "true" | "false"),
        Kind::Policy => !value.is_empty() && value.split(',').map(str::trim).all(|p| p == "delete" || p == "compact"),
        Kind::Compression => matches!(value, "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd"),
        Kind::TimestampType => matches!(value, "CreateTime" | "LogAppendTime"),
        Kind::Replicas => crate::throttle::valid_replicas(value),
    };
    let ok = ok
        && match key {
            "segment.bytes" => value.parse::<i64>().is_ok_and(|v| v >= 14),
            "min.insync.replicas" | "max.message.bytes" => value.parse::<i64>().is_ok_and(|v| v >= 1),
            "retention.ms" | "retention.bytes" => value.parse::<i64>().is_ok_and(|v| v >= -1),
            "min.cleanable.dirty.ratio" => value.parse::<f64>().is_ok_and(|v| (0.0..=1.0).contains(&v)),
            "delete.retention.ms" | "min.compaction.lag.ms" => value.parse::<i64>().is_ok_and(|v| v >= 0),
            "max.compaction.lag.ms" => value.parse::<i64>().is_ok_and(|v| v >= 1),
            _ => true,
        };
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(ResponseError::InvalidConfig, format!("Invalid value {value} for configuration {key}")))
    }
}

/// The effective value of `key` for a topic with `overrides`.
pub fn effective(b: &BrokerConfig, overrides: &BTreeMap<String, String>, key: &str) -> String {
    overrides.get(key).cloned().unwrap_or_else(|| defaults(b).get(key).cloned().unwrap_or_default())
}

/// The storage settings for a topic.
pub fn log_config(b: &BrokerConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    let get = |k: &str| effective(b, overrides, k);
    let long = |k: &str, d: i64| get(k).parse::<i64>().unwrap_or(d);
    let flush_messages = long("flush.messages", i64::MAX);
    let flush_ms = long("flush.ms", i64::MAX);
    LogConfig {
        segment_bytes: long("segment.bytes", 1 << 30).max(14) as u64,
        segment_ms: long("segment.ms", 7 * 24 * 3_600_000),
        retention_ms: long("retention.ms", -1),
        retention_bytes: long("retention.bytes", -1),
        index_interval: long("index.interval.bytes", 4096).clamp(1, u32::MAX as i64) as u32,
        flush_messages: (flush_messages != i64::MAX).then_some(flush_messages.max(1)),
        flush_ms: (flush_ms != i64::MAX).then_some(flush_ms),
        delete_enabled: get("cleanup.policy").split(',').any(|p| p.trim() == "delete"),
        max_message_bytes: long("max.message.bytes", 1048588).max(1) as usize,
        log_append_time: get("message.timestamp.type") == "LogAppendTime",
        min_insync_replicas: long("min.insync.replicas", 1).clamp(1, i32::MAX as i64) as i32,
        compact: get("cleanup.policy").split(',').any(|p| p.trim() == "compact"),
        min_cleanable_ratio: get("min.cleanable.dirty.ratio").parse::<f64>().unwrap_or(0.5),
        min_compaction_lag_ms: long("min.compaction.lag.ms", 0),
        max_compaction_lag_ms: long("max.compaction.lag.ms", i64::MAX),
        delete_retention_ms: long("delete.retention.ms", 86_400_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Property;

    #[test]
    fn validation() {
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "shred").is_err());
        assert!(validate("no.such.key", "1").is_err());
        assert!(validate("segment.bytes", "10").is_err());
    }

    #[test]
    fn overrides_win() {
        let b = BrokerConfig::from_properties(&[Property::new("node.id", "1")]).unwrap();
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "5".to_string());
        o.insert("cleanup.policy".to_string(), "compact".to_string());
        let c = log_config(&b, &o);
        assert_eq!(c.retention_ms, 5);
        assert!(!c.delete_enabled && c.compact);
        assert_eq!((c.min_cleanable_ratio, c.delete_retention_ms), (0.5, 86_400_000));
        assert_eq!(c.segment_bytes, 1 << 30);
    }
}
