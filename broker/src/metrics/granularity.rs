//! How many series a scrape may cost. Per-topic series are the default; per-partition
//! series (offsets, sizes, per-partition consumer lag) are opt-in with
//! `fjord.metrics.granularity=partition`, narrowed by allow/deny patterns on topic names,
//! and bounded by a hard cap: a topic whose partition series would pass the cap is exported
//! per topic instead, and the series it would have added are counted as dropped.
//!
//! Both granularities use the same metric names, the partition level adding a `partition`
//! label, so `sum by (group, topic)` / `max by (group, topic)` give the same answer either
//! way and dashboards do not depend on the setting.

use std::collections::{BTreeMap, HashSet};

use anyhow::{anyhow, bail, Result};
use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Topic,
    Partition,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub granularity: Granularity,
    partition_allow: Regex,
    partition_deny: Option<Regex>,
    groups_allow: Regex,
    groups_deny: Option<Regex>,
    pub max_partition_series: usize,
}

/// A whole-name match: `orders` must not select `orders-dlq`.
fn pattern(props: &BTreeMap<String, String>, key: &str) -> Result<Option<Regex>> {
    let p = props.get(key).map(|s| s.trim()).unwrap_or("");
    if p.is_empty() {
        return Ok(None);
    }
    Regex::new(&format!("^(?:{p})$")).map(Some).map_err(|e| anyhow!("invalid regular expression for {key}: {e}"))
}

impl MetricsConfig {
    pub fn from_props(props: &BTreeMap<String, String>) -> Result<Self> {
        let granularity = match props.get("fjord.metrics.granularity").map(|s| s.trim()) {
            Some("topic") | None => Granularity::Topic,
            Some("partition") => Granularity::Partition,
            Some(other) => bail!("fjord.metrics.granularity must be topic or partition, not {other:?}"),
        };
        let all = || Regex::new(".*").expect("a valid pattern");
        let max = props.get("fjord.metrics.max.partition.series").map(|s| s.trim()).unwrap_or("10000");
        Ok(MetricsConfig {
            granularity,
            partition_allow: pattern(props, "fjord.metrics.partition.allow")?.unwrap_or_else(all),
            partition_deny: pattern(props, "fjord.metrics.partition.deny")?,
            groups_allow: pattern(props, "fjord.metrics.groups.allow")?.unwrap_or_else(all),
            groups_deny: pattern(props, "fjord.metrics.groups.deny")?,
            max_partition_series: max
                .parse()
                .map_err(|_| anyhow!("fjord.metrics.max.partition.series must be a number, not {max:?}"))?,
        })
    }

    /// Whether a consumer group is exported at all.
    pub fn group_exported(&self, group: &str) -> bool {
        self.groups_allow.is_match(group) && !self.groups_deny.as_ref().is_some_and(|d| d.is_match(group))
    }

    fn partition_wanted(&self, topic: &str) -> bool {
        self.granularity == Granularity::Partition
            && self.partition_allow.is_match(topic)
            && !self.partition_deny.as_ref().is_some_and(|d| d.is_match(topic))
    }

    /// The topics exported per partition, given what each would cost in per-partition
    /// series. Topics are taken in name order, so which ones fit does not change from
    /// scrape to scrape.
    pub fn per_partition<'a>(&self, costs: &BTreeMap<&'a str, usize>) -> PartitionSeries<'a> {
        let mut chosen = HashSet::new();
        let (mut used, mut dropped) = (0usize, 0u64);
        for (topic, cost) in costs {
            if !self.partition_wanted(topic) {
                continue;
            }
            if used + cost <= self.max_partition_series {
                used += cost;
                chosen.insert(*topic);
            } else {
                dropped += *cost as u64;
            }
        }
        PartitionSeries { topics: chosen, dropped }
    }
}

/// Which topics a scrape exports per partition, and how many series the cap dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct PartitionSeries<'a> {
    pub topics: HashSet<&'a str>,
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<MetricsConfig> {
        MetricsConfig::from_props(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn costs<'a>(pairs: &[(&'a str, usize)]) -> BTreeMap<&'a str, usize> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn topic_granularity_by_default() {
        let c = config(&[]).unwrap();
        let costs = costs(&[("a", 3)]);
        assert_eq!(c.per_partition(&costs), PartitionSeries { topics: HashSet::new(), dropped: 0 });
        assert!(c.group_exported("anything"));
    }

    #[test]
    fn allow_and_deny_match_whole_names() {
        let c = config(&[
            ("fjord.metrics.granularity", "partition"),
            ("fjord.metrics.partition.allow", "orders|payments.*"),
            ("fjord.metrics.partition.deny", "payments-dlq"),
        ])
        .unwrap();
        let costs = costs(&[("orders", 3), ("orders-dlq", 3), ("payments", 3), ("payments-dlq", 3)]);
        let chosen = c.per_partition(&costs);
        assert_eq!(chosen.topics, HashSet::from(["orders", "payments"]));
        assert_eq!(chosen.dropped, 0, "unwanted topics are not dropped, just not asked for");
    }

    #[test]
    fn the_cap_drops_whole_topics_and_counts_their_series() {
        let c = config(&[("fjord.metrics.granularity", "partition"), ("fjord.metrics.max.partition.series", "10")])
            .unwrap();
        let costs = costs(&[("a", 6), ("b", 6), ("c", 4)]);
        let chosen = c.per_partition(&costs);
        assert_eq!(chosen.topics, HashSet::from(["a", "c"]));
        assert_eq!(chosen.dropped, 6);
    }

    #[test]
    fn groups_filter() {
        let c = config(&[("fjord.metrics.groups.deny", "console-consumer-.*")]).unwrap();
        assert!(!c.group_exported("console-consumer-42"));
        assert!(c.group_exported("billing"));
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(config(&[("fjord.metrics.granularity", "broker")]).is_err());
        assert!(config(&[("fjord.metrics.partition.allow", "(")]).is_err());
        assert!(config(&[("fjord.metrics.max.partition.series", "lots")]).is_err());
    }
}
