//! Replication throttles, as Kafka's reassignment tool sets them: a byte rate per broker
//! (`leader.replication.throttled.rate`, `follower.replication.throttled.rate`, dynamic
//! broker configs) applied to the replicas a topic lists in
//! `leader.replication.throttled.replicas` / `follower.replication.throttled.replicas`
//! (`partition:broker` pairs, or `*`). Only replicas outside the ISR are held back, so a
//! partition being copied to a new broker cannot starve the ones serving clients, and an
//! in-sync follower is never slowed into leaving the ISR.

use std::time::Instant;

use parking_lot::Mutex;

pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
pub const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
pub const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";

/// Whether a `*.replication.throttled.replicas` value names replica `broker` of `partition`.
pub fn listed(value: &str, partition: i32, broker: i32) -> bool {
    let value = value.trim();
    value == "*"
        || value.split(',').any(|e| {
            e.trim()
                .split_once(':')
                .is_some_and(|(p, b)| p.trim().parse() == Ok(partition) && b.trim().parse() == Ok(broker))
        })
}

/// Whether a value is a valid `*.replication.throttled.replicas` list.
pub fn valid_replicas(value: &str) -> bool {
    let value = value.trim();
    value.is_empty()
        || value == "*"
        || value.split(',').all(|e| {
            e.trim().split_once(':').is_some_and(|(p, b)| {
                p.trim().parse::<i32>().is_ok_and(|p| p >= 0) && b.trim().parse::<i32>().is_ok_and(|b| b >= 0)
            })
        })
}

/// A token bucket holding at most one second of the rate: bursts stay bounded and the
/// long-run average is the rate.
pub struct Quota {
    inner: Mutex<Bucket>,
}

struct Bucket {
    /// Bytes per second; None: unthrottled.
    rate: Option<u64>,
    tokens: f64,
    at: Instant,
    /// Seconds the bucket spent in debt: how long throttled replicas were held back.
    held: f64,
}

impl Default for Quota {
    fn default() -> Self {
        Quota { inner: Mutex::new(Bucket { rate: None, tokens: 0.0, at: Instant::now(), held: 0.0 }) }
    }
}

impl Quota {
    pub fn set_rate(&self, rate: Option<u64>) {
        let mut b = self.inner.lock();
        if b.rate != rate {
            b.rate = rate;
            b.tokens = rate.unwrap_or(0) as f64;
            b.at = Instant::now();
        }
    }

    /// No bytes may go now (the throttled replicas wait for the bucket to refill).
    pub fn exceeded(&self) -> bool {
        let mut b = self.inner.lock();
        let Some(rate) = b.rate else { return false };
        let now = Instant::now();
        let elapsed = now.duration_since(b.at).as_secs_f64();
        if b.tokens < 0.0 && rate > 0 {
            b.held += elapsed.min(-b.tokens / rate as f64);
        }
        let refill = elapsed * rate as f64;
        b.tokens = (b.tokens + refill).min(rate as f64);
        b.at = now;
        b.tokens <= 0.0
    }

    /// Count bytes sent (or received) for throttled replicas. A read larger than what is
    /// left drives the bucket negative, and the debt is paid before the next one.
    pub fn record(&self, bytes: usize) {
        let mut b = self.inner.lock();
        if b.rate.is_some() {
            b.tokens -= bytes as f64;
        }
    }
}

impl Quota {
    /// Total seconds throttled replicas waited (Kafka's replication `throttle-time`).
    pub fn throttled_seconds(&self) -> f64 {
        self.inner.lock().held
    }
}

/// Parse a rate config value (bytes per second); absent or unparsable: unthrottled.
pub fn parse_rate(v: Option<&String>) -> Option<u64> {
    v.and_then(|v| v.trim().parse::<i64>().ok()).filter(|r| *r >= 0 && *r < i64::MAX).map(|r| r as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_lists() {
        assert!(listed("*", 3, 7));
        assert!(listed("0:1, 3:7", 3, 7));
        assert!(!listed("0:1,3:6", 3, 7));
        assert!(!listed("", 0, 0));
        assert!(valid_replicas("0:1,1:2") && valid_replicas("*") && valid_replicas(""));
        assert!(!valid_replicas("0-1") && !valid_replicas("a:1") && !valid_replicas("0:1,"));
    }

    #[test]
    fn quota_bounds_the_average_rate() {
        let q = Quota::default();
        assert!(!q.exceeded());
        q.record(1 << 30);
        assert!(!q.exceeded(), "unthrottled until a rate is set");
        q.set_rate(Some(1000));
        assert!(!q.exceeded());
        q.record(3000);
        assert!(q.exceeded(), "2000 bytes of debt");
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(q.exceeded(), "50 ms refills only 50 bytes");
        let held = q.throttled_seconds();
        assert!((0.04..1.0).contains(&held), "in debt since the read: {held}");
        q.set_rate(None);
        assert!(!q.exceeded());
        assert_eq!(parse_rate(Some(&"1048576".to_string())), Some(1 << 20));
        assert_eq!(parse_rate(Some(&i64::MAX.to_string())), None);
    }
}
