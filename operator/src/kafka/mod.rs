//! A small async Kafka admin client on the `kafka-protocol` codec.
//!
//! One [`AdminClient`] per cluster, kept in an [`AdminPool`] keyed by (namespace, Cluster
//! name): a connection to any broker for metadata and admin writes (Fjord forwards
//! metadata writes to the controller itself), plus per-broker connections for the
//! requests only a leader or a group coordinator answers (ListOffsets, OffsetFetch,
//! DescribeLogDirs). Each connection serves one request at a time and negotiates versions
//! once; every request has a timeout.

pub mod client;
mod conn;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;

pub use client::{AdminClient, ConfigEntry, GroupOffset, NewTopic, PartitionLeader, ReplicaKey, TopicInfo, WriteHook};

/// `config_source` of a topic override set with AlterConfigs/IncrementalAlterConfigs or at
/// creation (DYNAMIC_TOPIC_CONFIG): the only entries the operator owns.
pub const SOURCE_DYNAMIC_TOPIC: i8 = 1;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdminError {
    /// The broker answered with a Kafka error code; `name` is Kafka's (e.g.
    /// `TopicAlreadyExists`), `message` the broker's text when it sent one.
    #[error("{name}: {message}")]
    Kafka { code: i16, name: String, message: String },
    #[error("i/o error: {0}")]
    Io(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("no broker address known")]
    NoBrokers,
}

impl AdminError {
    fn codec(e: anyhow::Error) -> Self {
        AdminError::Protocol(e.to_string())
    }

    /// Ok for error code 0, else the typed error.
    pub fn check(code: i16, message: Option<&StrBytes>) -> Result<(), AdminError> {
        match ResponseError::try_from_code(code) {
            None => Ok(()),
            Some(e) => Err(AdminError::Kafka {
                code,
                name: e.to_string(),
                message: message.map(|m| m.to_string()).unwrap_or_else(|| "(no message)".into()),
            }),
        }
    }

    /// The broker answered with exactly this Kafka error.
    pub fn is(&self, e: ResponseError) -> bool {
        matches!(self, AdminError::Kafka { code, .. } if *code == e.code())
    }

    /// A short reason for metrics and conditions: the Kafka error name or the error class.
    pub fn reason(&self) -> &str {
        match self {
            AdminError::Kafka { name, .. } => name,
            AdminError::Io(_) => "Io",
            AdminError::Timeout(_) => "Timeout",
            AdminError::Protocol(_) => "Protocol",
            AdminError::NoBrokers => "NoBrokers",
        }
    }

    /// The connection is suspect after this error and should be replaced.
    fn breaks_connection(&self) -> bool {
        !matches!(self, AdminError::Kafka { .. })
    }
}

/// Where to reach a cluster: bootstrap `ip:port` addresses, and pod name → pod IP so that
/// broker addresses advertised as pod DNS names resolve without cluster DNS.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Endpoints {
    pub bootstrap: Vec<String>,
    pub pod_ips: HashMap<String, String>,
}

/// One admin client per cluster, created on first use and re-pointed when the brokers'
/// addresses change (pods rescheduled get new IPs).
pub struct AdminPool {
    clients: Mutex<HashMap<(String, String), Arc<AdminClient>>>,
    timeout: Duration,
    on_write: WriteHook,
}

impl AdminPool {
    /// `timeout` bounds each request; `on_write` is told the API name of every admin write
    /// sent (for metrics: one batched CreateTopics counts once).
    pub fn new(timeout: Duration, on_write: WriteHook) -> Self {
        AdminPool { clients: Mutex::new(HashMap::new()), timeout, on_write }
    }

    /// The client of cluster `namespace/name`, with its endpoints updated.
    pub fn get(&self, namespace: &str, name: &str, endpoints: Endpoints) -> Arc<AdminClient> {
        let mut clients = self.clients.lock().unwrap();
        let client = clients
            .entry((namespace.to_string(), name.to_string()))
            .or_insert_with(|| Arc::new(AdminClient::new(self.timeout, self.on_write.clone())));
        client.set_endpoints(endpoints);
        client.clone()
    }

    /// Forget a cluster (it was deleted); its connections close when the last user drops it.
    pub fn remove(&self, namespace: &str, name: &str) {
        self.clients.lock().unwrap().remove(&(namespace.to_string(), name.to_string()));
    }
}

/// Kafka's printed form of a topic id: URL-safe base64 without padding, as kafka-topics.sh
/// shows it.
pub fn topic_id_string(bytes: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_id_matches_kafka_base64() {
        // Uuid 00000000-0000-0000-0000-000000000001 prints as AAAAAAAAAAAAAAAAAAAAAQ in Kafka.
        let mut b = [0u8; 16];
        b[15] = 1;
        assert_eq!(topic_id_string(&b), "AAAAAAAAAAAAAAAAAAAAAQ");
        assert_eq!(topic_id_string(&[0xff; 16]), "_____________________w");
    }

    #[test]
    fn kafka_errors_are_typed() {
        assert_eq!(AdminError::check(0, None), Ok(()));
        let e = AdminError::check(36, Some(&StrBytes::from_static_str("exists"))).unwrap_err();
        assert!(e.is(ResponseError::TopicAlreadyExists));
        assert_eq!(e.reason(), "TopicAlreadyExists");
        assert_eq!(e.to_string(), "TopicAlreadyExists: exists");
        assert!(!e.breaks_connection());
        assert!(AdminError::Io("x".into()).breaks_connection());
    }
}
