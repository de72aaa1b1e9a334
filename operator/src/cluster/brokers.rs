//! The brokers' HTTP endpoint (`fjord.http.listen`, port 9644): `/status`,
//! `/restart-safe` and `/metrics`. A plain HTTP/1.1 GET over a TCP socket is all these
//! need, so no HTTP client crate; every call has a short timeout, since a hung broker must
//! not stall the reconcile.

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
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked"));
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
    let value = |name: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.strip_prefix(name))
            .filter(|rest| rest.starts_with([' ', '{']))
            // `name{labels} value [timestamp]`: the value is the first token after the labels.
            .filter_map(|rest| rest.rsplit_once('}').map_or(rest, |(_, v)| v).split_whitespace().next()?.parse::<f64>().ok())
            .sum::<f64>() as i64
    };
    Health { under_replicated: value("fjord_under_replicated_partitions"), offline: value("fjord_offline_partitions") }
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
    fn status_ignores_unknown_fields() {
        let s: Status = serde_json::from_str(r#"{"node_id":2,"ready":true,"controller_active":false,"partitions_hosted":3,"quorum":null}"#).unwrap();
        assert_eq!((s.node_id, s.partitions_hosted), (2, 3));
    }
}
