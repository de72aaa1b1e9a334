//! Metadata and DescribeCluster: which brokers exist and who leads each partition.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;

use super::{str, Ctx};
use crate::metadata::TopicMeta;

/// The leader to name for partition `index` of `t`: the metadata's, except that a leader
/// cut off from the cluster does not name itself (see `Replication::cut_off`).
fn named_leader(ctx: &Ctx<'_>, t: &TopicMeta, index: i32, leader: i32, now_ms: i64) -> i32 {
    let b = ctx.broker;
    let cut_off = leader == b.node_id()
        && b.replication.controller_unreachable(now_ms)
        && b.replicas.get(&t.name, index).is_some_and(|p| b.replication.cut_off(&p.lock(), now_ms));
    if cut_off {
        ctx.close_after_reply();
        -1
    } else {
        leader
    }
}

fn topic_response(ctx: &Ctx<'_>, t: &TopicMeta, fenced: &[i32]) -> MetadataResponseTopic {
    let ids = |v: &[i32]| v.iter().map(|i| BrokerId(*i)).collect::<Vec<_>>();
    let now = crate::clock::now_ms();
    let partitions = t
        .assignment
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let offline: Vec<i32> = p.replicas.iter().copied().filter(|r| fenced.contains(r)).collect();
            let leader = named_leader(ctx, t, i as i32, p.leader, now);
            let r = MetadataResponsePartition::default()
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(ids(&offline));
            if leader < 0 {
                r.with_error_code(ctx.err(ResponseError::LeaderNotAvailable))
            } else {
                r
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str(&t.name))))
        .with_topic_id(t.id)
        .with_is_internal(t.internal)
        .with_partitions(partitions)
        .with_topic_authorized_operations(i32::MIN)
}

/// A live broker as this listener's clients reach it.
struct LiveBroker {
    id: i32,
    host: String,
    port: i32,
    rack: Option<String>,
}

/// Live brokers as this listener's clients reach them, and the fenced ones' ids.
fn brokers(ctx: &Ctx<'_>) -> (Vec<LiveBroker>, Vec<i32>) {
    ctx.broker.metadata.read(|img| {
        let mut live = Vec::new();
        let mut fenced = Vec::new();
        for b in img.brokers.values() {
            if b.fenced {
                fenced.push(b.id);
            } else if let Some(e) = b.endpoint(&ctx.listener) {
                live.push(LiveBroker { id: b.id, host: e.host.clone(), port: e.port, rack: b.rack.clone() });
            }
        }
        (live, fenced)
    })
}

/// The active controller's id, or -1 while there is none.
pub fn controller_id(ctx: &Ctx<'_>) -> i32 {
    ctx.broker.metadata.quorum().and_then(|q| q.leader()).map(|l| l as i32).unwrap_or(-1)
}

pub async fn handle(ctx: &Ctx<'_>, req: MetadataRequest) -> MetadataResponse {
    let b = ctx.broker;
    // v0 used an empty list for "all topics"; v1+ uses null.
    let all = req.topics.is_none() || (ctx.version == 0 && req.topics.as_ref().is_some_and(|t| t.is_empty()));
    let allow_auto = ctx.version < 4 || req.allow_auto_topic_creation;
    let (live, fenced) = brokers(ctx);
    let topics = if all {
        b.metadata.topics().iter().map(|t| topic_response(ctx, t, &fenced)).collect()
    } else {
        let mut out = Vec::new();
        for rt in req.topics.unwrap_or_default() {
            let found = match (&rt.name, rt.topic_id.is_nil()) {
                (Some(n), _) => match b.metadata.topic(n.as_str()) {
                    Some(t) => Some(t),
                    None if allow_auto && crate::metadata::valid_topic_name(n.as_str()) => {
                        b.topics.auto_create(n.as_str()).await
                    }
                    None => None,
                },
                (None, false) => b.metadata.topic_by_id(rt.topic_id),
                (None, true) => None,
            };
            out.push(match found {
                Some(t) => topic_response(ctx, &t, &fenced),
                None => {
                    let invalid = rt.name.as_ref().is_some_and(|n| !crate::metadata::valid_topic_name(n.as_str()));
                    let e = if invalid {
                        ResponseError::InvalidTopicException
                    } else {
                        ResponseError::UnknownTopicOrPartition
                    };
                    MetadataResponseTopic::default()
                        .with_name(rt.name.clone())
                        .with_topic_id(rt.topic_id)
                        .with_error_code(ctx.err(e))
                }
            });
        }
        out
    };
    let brokers = live
        .into_iter()
        .map(|LiveBroker { id, host, port, rack }| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(str(&host))
                .with_port(port)
                .with_rack(rack.as_deref().map(str))
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str(&b.metadata.cluster_id())))
        .with_controller_id(BrokerId(controller_id(ctx)))
        .with_topics(topics)
        .with_cluster_authorized_operations(i32::MIN)
}

pub async fn describe_cluster(ctx: &Ctx<'_>, _req: DescribeClusterRequest) -> DescribeClusterResponse {
    let b = ctx.broker;
    let (live, _) = brokers(ctx);
    let brokers = live
        .into_iter()
        .map(|LiveBroker { id, host, port, rack }| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(str(&host))
                .with_port(port)
                .with_rack(rack.as_deref().map(str))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(str(&b.metadata.cluster_id()))
        .with_controller_id(BrokerId(controller_id(ctx)))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(i32::MIN)
}

/// DescribeQuorum through a broker (admin tools' `--bootstrap-server`): the metadata
/// quorum's leader, epoch and each voter's and observer's progress.
pub async fn describe_quorum(ctx: &Ctx<'_>, _req: DescribeQuorumRequest) -> DescribeQuorumResponse {
    use kafka_protocol::messages::describe_quorum_response::{Listener, Node, PartitionData, ReplicaState, TopicData};
    let Some(q) = ctx.broker.metadata.quorum() else {
        return DescribeQuorumResponse::default().with_error_code(ctx.err(ResponseError::NotController));
    };
    let st = q.status();
    let state = |id: u64| {
        let leo =
            if Some(id) == st.leader { Some(st.last_log_index) } else { st.replication.get(&id).copied().flatten() };
        ReplicaState::default()
            .with_replica_id(BrokerId(id as i32))
            .with_log_end_offset(leo.map(|i| i as i64).unwrap_or(-1))
            .with_last_fetch_timestamp(-1)
            .with_last_caught_up_timestamp(-1)
    };
    let part = PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(st.leader.map(|l| l as i32).unwrap_or(-1)))
        .with_leader_epoch(st.term as i32)
        .with_high_watermark(st.committed as i64)
        .with_current_voters(st.voters.iter().map(|v| state(*v)).collect())
        .with_observers(st.learners.iter().map(|v| state(*v)).collect());
    let nodes = ctx.broker.metadata.read(|img| {
        st.voters
            .iter()
            .filter_map(|v| img.brokers.get(&(*v as i32)))
            .map(|b| {
                let listeners = b
                    .endpoints
                    .iter()
                    .map(|e| {
                        Listener::default().with_name(str(&e.name)).with_host(str(&e.host)).with_port(e.port as u16)
                    })
                    .collect();
                Node::default().with_node_id(BrokerId(b.id)).with_listeners(listeners)
            })
            .collect()
    });
    let resp = DescribeQuorumResponse::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(str("__cluster_metadata")))
        .with_partitions(vec![part])]);
    if ctx.version >= 2 {
        resp.with_nodes(nodes)
    } else {
        resp
    }
}
