//! The brokers' HTTP endpoint (`fjord.http.listen`, port 9644): `/status`,
//! `/restart-safe` and `/metrics`. A plain HTTP/1.1 GET over a TCP socket is all these
//! need, so no HTTP client crate; every call has a short timeout, since a hung broker must
//! not stall the reconcile.

use std::collections::HashMap;
use std::time::Duration;

use fjord_crds::ports;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BODY: usize = 4 << 20;

/// `GET http://<ip>:9644<path>`: (status code, body).
pub async fn get(ip: &str, path: &str) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(TIMEOUT, get_inner(ip, path))
        .await
        .map_err(|_| anyhow::anyhow!("GET http://{ip}:{}{path}: timed out", ports::HTTP))?
}

async fn get_inner(ip: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect((ip, ports::HTTP as u16)).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    s.take(MAX_BODY as u64).read_to_end(&mut buf).await?;
    parse_response(&buf)
}

/// Status code and body of a `Connection: close` response (chunked bodies decoded).
pub fn parse_response(buf: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow::anyhow!("truncated HTTP response"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad HTTP status line"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked")
    });
    Ok((code, if chunked { dechunk(body) } else { body.to_string() }))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// What the operator reads from `/status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct Status {
    pub node_id: i32,
    pub ready: bool,
    #[serde(default)]
    pub controller_active: bool,
    #[serde(default)]
    pub partitions_hosted: u64,
    #[serde(default)]
    pub partitions_assigned: u64,
}

pub async fn status(ip: &str) -> anyhow::Result<Status> {
    let (code, body) = get(ip, "/status").await?;
    anyhow::ensure!(code == 200, "/status answered {code}");
    Ok(serde_json::from_str(&body)?)
}

/// Partition health from one broker's Prometheus text.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Health {
    pub under_replicated: i64,
    pub offline: i64,
}

pub fn parse_health(text: &str) -> Health {
    let value = |name: &str| samples(text, name).map(|(_, v)| v).sum::<f64>() as i64;
    Health { under_replicated: value("fjord_under_replicated_partitions"), offline: value("fjord_offline_partitions") }
}

/// The samples of metric `name` in Prometheus text: (labels, value). Comments, other
/// metrics (also those whose name merely starts with `name`) and unparsable lines are
/// skipped; a trailing timestamp is ignored.
pub fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (Vec<(String, String)>, f64)> + 'a {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(move |l| {
        let rest = l.strip_prefix(name)?;
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(r) => parse_labels(r)?,
            None if rest.starts_with(' ') => (Vec::new(), rest),
            None => return None,
        };
        Some((labels, rest.split_whitespace().next()?.parse::<f64>().ok()?))
    })
}

/// `k="v",k2="v2"}` (after the opening brace): the pairs, with `\"`, `\\` and `\n`
/// unescaped, and the text after the closing brace.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
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
        out.push((key.trim().to_string(), value));
        s = &rest[end + 2..];
    }
}

/// `fjord_consumer_group_lag_seconds` of several brokers' `/metrics` texts, as the
/// maximum per (group, topic): each coordinator reports its own groups, and at partition
/// granularity a group has one series per partition.
pub fn lag_seconds<'a>(texts: impl IntoIterator<Item = &'a str>) -> HashMap<(String, String), f64> {
    let mut out: HashMap<(String, String), f64> = HashMap::new();
    for text in texts {
        for (labels, value) in samples(text, "fjord_consumer_group_lag_seconds") {
            let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let (Some(group), Some(topic)) = (get("group"), get("topic")) else { continue };
            if !value.is_finite() {
                continue;
            }
            let slot = out.entry((group, topic)).or_insert(value);
            *slot = slot.max(value);
        }
    }
    out
}

pub async fn health(ip: &str) -> anyhow::Result<Health> {
    let (code, body) = get(ip, "/metrics").await?;
    anyhow::ensure!(code == 200, "/metrics answered {code}");
    Ok(parse_health(&body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let r = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(r).unwrap(), (503, "{}".to_string()));
        let r = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(r).unwrap(), (200, "abcde".to_string()));
        assert!(parse_response(b"HTTP/1.1 200").is_err());
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
        let get = |g: &str, t: &str| lag.get(&(g.to_string(), t.to_string())).copied();
        assert_eq!(get("g1", "orders"), Some(6.0), "max over brokers");
        assert_eq!(get("g2", "orders"), Some(7.25), "max over partitions, timestamp ignored");
        assert_eq!(get("we\"ird,}", "t"), Some(2.0), "escaped label values");
        assert_eq!(lag.len(), 3, "{lag:?}: no topic label or NaN: skipped");
        assert!(lag_seconds(["", "garbage{\n"]).is_empty());
    }

    #[test]
    fn status_ignores_unknown_fields() {
        let s: Status = serde_json::from_str(
            r#"{"node_id":2,"ready":true,"controller_active":false,"partitions_hosted":3,"quorum":null}"#,
        )
        .unwrap();
        assert_eq!((s.node_id, s.partitions_hosted), (2, 3));
    }
}
