//! The brokers' HTTP endpoint (`fjord.http.listen`, port 9644): `/status`,
//! `/restart-safe` and `/metrics`, asked with one shared `reqwest` client (HTTP/1.1, no
//! TLS, no proxy). The JSON bodies are the types of `fjord-contract`, the crate the broker
//! writes them with. Every call has a short timeout, since a hung broker must not stall
//! the reconcile.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use fjord_crds::ports;

pub use fjord_contract::Status;

/// Bounds a whole call: connect, request and body.
const TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BODY: usize = 4 << 20;

/// Why a call to a broker failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("GET {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("GET {url}: body larger than {MAX_BODY} bytes")]
    TooLarge { url: String },
    #[error("GET {url} answered {code}")]
    Status { url: String, code: u16 },
    #[error("GET {url}: {source}")]
    Json { url: String, source: serde_json::Error },
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            // Pod IPs: no proxy, whatever the environment says.
            .no_proxy()
            .build()
            .expect("a client without TLS builds")
    })
}

/// `http://<ip>:9644<path>` (IPv6 addresses bracketed).
pub fn url(ip: &str, path: &str) -> String {
    let host = if ip.contains(':') && !ip.starts_with('[') { format!("[{ip}]") } else { ip.to_string() };
    format!("http://{host}:{}{path}", ports::HTTP)
}

/// A broker's HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub code: u16,
    pub body: String,
}

/// `GET http://<ip>:9644<path>`, the body cut off at 4 MiB.
pub async fn get(ip: &str, path: &str) -> Result<HttpReply, CallError> {
    get_url(url(ip, path)).await
}

async fn get_url(url: String) -> Result<HttpReply, CallError> {
    let http = |source| CallError::Http { url: url.clone(), source };
    let mut resp = client().get(&url).send().await.map_err(http)?;
    let code = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(http)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(CallError::TooLarge { url });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(HttpReply { code, body: String::from_utf8_lossy(&body).into_owned() })
}

/// A 200 answer's body, or the error saying which code came instead.
async fn get_ok(ip: &str, path: &str) -> Result<String, CallError> {
    match get(ip, path).await? {
        HttpReply { code: 200, body } => Ok(body),
        HttpReply { code, .. } => Err(CallError::Status { url: url(ip, path), code }),
    }
}

pub async fn status(ip: &str) -> Result<Status, CallError> {
    let body = get_ok(ip, "/status").await?;
    serde_json::from_str(&body).map_err(|source| CallError::Json { url: url(ip, "/status"), source })
}

/// Partition health from one broker's Prometheus text.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Health {
    pub under_replicated: i64,
    pub offline: i64,
}

pub fn parse_health(text: &str) -> Health {
    let value = |name: &str| samples(text, name).map(|s| s.value).sum::<f64>() as i64;
    Health { under_replicated: value("fjord_under_replicated_partitions"), offline: value("fjord_offline_partitions") }
}

/// One sample of a metric in Prometheus text.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<Label>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|l| l.name == name).map(|l| l.value.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub name: String,
    pub value: String,
}

/// A consumer group's lag on one topic is keyed by both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupTopic {
    pub group: String,
    pub topic: String,
}

/// The samples of metric `name` in Prometheus text. Comments, other metrics (also those
/// whose name merely starts with `name`) and unparsable lines are skipped; a trailing
/// timestamp is ignored.
pub fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = Sample> + 'a {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(move |l| {
        let rest = l.strip_prefix(name)?;
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(r) => parse_labels(r)?,
            None if rest.starts_with(' ') => (Vec::new(), rest),
            None => return None,
        };
        Some(Sample { labels, value: rest.split_whitespace().next()?.parse::<f64>().ok()? })
    })
}

/// `k="v",k2="v2"}` (after the opening brace): the labels, with `\"`, `\\` and `\n`
/// unescaped, and the text after the closing brace.
fn parse_labels(mut s: &str) -> Option<(Vec<Label>, &str)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((out, rest));
        }
        let (key, rest) = s.split_once('=')?;
        let mut chars = rest.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => value.push(match chars.next()?.1 {
                    'n' => '\n',
                    c => c,
                }),
                (_, c) => value.push(c),
            }
        };
        out.push(Label { name: key.trim().to_string(), value });
        s = &rest[end + 2..];
    }
}

/// `fjord_consumer_group_lag_seconds` of several brokers' `/metrics` texts, as the
/// maximum per (group, topic): each coordinator reports its own groups, and at partition
/// granularity a group has one series per partition.
pub fn lag_seconds<'a>(texts: impl IntoIterator<Item = &'a str>) -> HashMap<GroupTopic, f64> {
    let mut out: HashMap<GroupTopic, f64> = HashMap::new();
    for text in texts {
        for s in samples(text, "fjord_consumer_group_lag_seconds") {
            let (Some(group), Some(topic)) = (s.label("group"), s.label("topic")) else { continue };
            if !s.value.is_finite() {
                continue;
            }
            let key = GroupTopic { group: group.to_string(), topic: topic.to_string() };
            let slot = out.entry(key).or_insert(s.value);
            *slot = slot.max(s.value);
        }
    }
    out
}

pub async fn health(ip: &str) -> Result<Health, CallError> {
    Ok(parse_health(&get_ok(ip, "/metrics").await?))
}

/// `/metrics` text of one broker, for the consumer-group time lag.
pub async fn metrics(ip: &str) -> Result<String, CallError> {
    get_ok(ip, "/metrics").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_http_port_and_bracket_ipv6() {
        assert_eq!(url("10.0.0.4", "/status"), "http://10.0.0.4:9644/status");
        assert_eq!(url("fd00::4", "/metrics"), "http://[fd00::4]:9644/metrics");
    }

    #[test]
    fn reads_partition_gauges() {
        let text = "# HELP fjord_under_replicated_partitions x\n# TYPE fjord_under_replicated_partitions gauge\n\
                    fjord_under_replicated_partitions 2\nfjord_under_replicated_partitions_total 9\n\
                    fjord_offline_partitions{node=\"1\"} 1 1700000000\n";
        assert_eq!(parse_health(text), Health { under_replicated: 2, offline: 1 });
    }

    #[test]
    fn lag_seconds_is_the_max_per_group_and_topic_over_brokers_and_partitions() {
        let b0 = "# TYPE fjord_consumer_group_lag_seconds gauge\n\
                  fjord_consumer_group_lag_seconds{group=\"g1\",topic=\"orders\"} 4.5\n\
                  fjord_consumer_group_lag_seconds{group=\"g2\",topic=\"orders\",partition=\"0\"} 1\n\
                  fjord_consumer_group_lag_seconds{group=\"g2\",topic=\"orders\",partition=\"1\"} 7.25 1700000000\n\
                  fjord_consumer_group_lag_seconds_extra{group=\"g1\",topic=\"orders\"} 99\n\
                  fjord_consumer_group_lag_records{group=\"g1\",topic=\"orders\"} 12\n";
        let b1 = "fjord_consumer_group_lag_seconds{topic=\"orders\",group=\"g1\"} 6\n\
                  fjord_consumer_group_lag_seconds{group=\"we\\\"ird,}\",topic=\"t\"} 2\n\
                  fjord_consumer_group_lag_seconds{group=\"g3\"} 5\n\
                  fjord_consumer_group_lag_seconds{group=\"g4\",topic=\"t\"} NaN\n";
        let lag = lag_seconds([b0, b1]);
        let get = |g: &str, t: &str| lag.get(&GroupTopic { group: g.to_string(), topic: t.to_string() }).copied();
        assert_eq!(get("g1", "orders"), Some(6.0), "max over brokers");
        assert_eq!(get("g2", "orders"), Some(7.25), "max over partitions, timestamp ignored");
        assert_eq!(get("we\"ird,}", "t"), Some(2.0), "escaped label values");
        assert_eq!(lag.len(), 3, "{lag:?}: no topic label or NaN: skipped");
        assert!(lag_seconds(["", "garbage{\n"]).is_empty());
    }

    #[test]
    fn status_ignores_unknown_fields() {
        let s: Status = serde_json::from_str(
            r#"{"node_id":2,"ready":true,"controller_active":false,"partitions_hosted":3,"quorum":null,"x":1}"#,
        )
        .unwrap();
        assert_eq!((s.node_id, s.partitions_hosted), (2, 3));
    }

    /// A real HTTP exchange on loopback: the answer's code and body (chunked included),
    /// and a server that never answers is cut off by the timeout.
    #[tokio::test]
    async fn get_reads_code_and_body_and_times_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let answer = |resp: &'static str| async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                s.write_all(resp.as_bytes()).await.unwrap();
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
            port
        };
        let fetch = |port: u16| get_url(format!("http://127.0.0.1:{port}/x"));
        let port = answer("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}").await;
        assert_eq!(fetch(port).await.unwrap(), HttpReply { code: 503, body: "{}".to_string() });
        let port =
            answer("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").await;
        assert_eq!(fetch(port).await.unwrap(), HttpReply { code: 200, body: "abcde".to_string() });
        let port = answer("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc").await;
        let started = std::time::Instant::now();
        assert!(fetch(port).await.is_err(), "a body that never completes");
        assert!(started.elapsed() < Duration::from_secs(4), "cut off by the 2 s timeout");
    }
}
