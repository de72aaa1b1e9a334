//! Writing a transaction's COMMIT or ABORT markers (Kafka's TransactionMarkerChannelManager):
//! a WriteTxnMarkers request to the leader of every partition the transaction touched,
//! this node included, retried until each leader has written its marker. A leader that
//! moves is followed through metadata; a partition whose topic was deleted needs none.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::peers::Peers;
use crate::replica_manager::TopicPartition;

const WRITE_TXN_MARKERS_VERSION: i16 = 1;
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// The markers ending one transaction.
#[derive(Debug, Clone)]
pub struct Markers {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
    pub partitions: BTreeSet<TopicPartition>,
}

pub struct MarkerWriter {
    peers: Arc<Peers>,
}

impl MarkerWriter {
    pub fn new(peers: Arc<Peers>) -> Self {
        MarkerWriter { peers }
    }

    /// Write every marker, retrying until each leader has it. Gives up (false) only when
    /// `still_coordinator` says this node no longer coordinates the transaction: the new
    /// coordinator finishes it from the state it loads.
    pub async fn write(&self, m: &Markers, still_coordinator: &(dyn Fn() -> bool + Send + Sync)) -> bool {
        let mut left = m.partitions.clone();
        loop {
            if left.is_empty() {
                return true;
            }
            if !still_coordinator() {
                return false;
            }
            let mut by_leader: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
            left.retain(|tp| match self.peers.metadata.topic(&tp.topic) {
                // Deleted since: nothing to mark.
                None => false,
                Some(t) => match t.partition(tp.partition) {
                    None => false,
                    Some(p) => {
                        if p.leader >= 0 {
                            by_leader.entry(p.leader).or_default().push(tp.clone());
                        }
                        true
                    }
                },
            });
            for (leader, tps) in by_leader {
                match self.send(leader, m, &tps).await {
                    Ok(done) => {
                        for tp in done {
                            left.remove(&tp);
                        }
                    }
                    Err(e) => tracing::debug!(leader, error = %e, "writing transaction markers failed; retrying"),
                }
            }
            if !left.is_empty() {
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
        }
    }

    /// One WriteTxnMarkers round trip; returns the partitions whose marker is written.
    async fn send(&self, leader: i32, m: &Markers, tps: &[TopicPartition]) -> anyhow::Result<Vec<TopicPartition>> {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in tps {
            topics.entry(&tp.topic).or_default().push(tp.partition);
        }
        let marker = WritableTxnMarker::default()
            .with_producer_id(ProducerId(m.producer_id))
            .with_producer_epoch(m.producer_epoch)
            .with_transaction_result(m.commit)
            .with_coordinator_epoch(m.coordinator_epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            );
        let req = WriteTxnMarkersRequest::default().with_markers(vec![marker]);
        let resp: WriteTxnMarkersResponse =
            self.peers.request(leader, ApiKey::WriteTxnMarkers, WRITE_TXN_MARKERS_VERSION, &req).await?;
        let mut done = Vec::new();
        for r in resp.markers {
            for t in r.topics {
                for p in t.partitions {
                    let tp = TopicPartition::new(t.name.as_str(), p.partition_index);
                    match ResponseError::try_from_code(p.error_code) {
                        None => done.push(tp),
                        // A newer epoch of the producer is there already: this transaction
                        // was fenced and a later marker ends it.
                        Some(ResponseError::InvalidProducerEpoch) => {
                            tracing::warn!(leader, topic = %tp.topic, partition = tp.partition, producer_id = m.producer_id, "marker of a fenced epoch not written");
                            done.push(tp);
                        }
                        Some(e) => {
                            tracing::debug!(leader, topic = %tp.topic, partition = tp.partition, error = ?e, "marker not written yet")
                        }
                    }
                }
            }
        }
        Ok(done)
    }
}
