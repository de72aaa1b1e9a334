//! Metadata and DescribeCluster: which brokers exist and who leads each partition.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::*;

use super::{str, Ctx};
use crate::metadata::TopicMeta;

fn topic_response(ctx: &Ctx<'_>, t: &TopicMeta) -> MetadataResponseTopic {
    let node = BrokerId(ctx.broker.node_id());
    let partitions = (0..t.partitions)
        .map(|i| {
            MetadataResponsePartition::default()
                .with_partition_index(i)
                .with_leader_id(node)
                .with_leader_epoch(t.leader_epochs.get(i as usize).copied().unwrap_or(0))
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str(&t.name))))
        .with_topic_id(t.id)
        .with_is_internal(t.internal)
        .with_partitions(partitions)
        .with_topic_authorized_operations(i32::MIN)
}

pub async fn handle(ctx: &Ctx<'_>, req: MetadataRequest) -> MetadataResponse {
    let b = ctx.broker;
    // v0 used an empty list for "all topics"; v1+ uses null.
    let all = req.topics.is_none() || (ctx.version == 0 && req.topics.as_ref().is_some_and(|t| t.is_empty()));
    let allow_auto = ctx.version < 4 || req.allow_auto_topic_creation;
    let topics = if all {
        b.metadata.topics().iter().map(|t| topic_response(ctx, t)).collect()
    } else {
        req.topics
            .unwrap_or_default()
            .into_iter()
            .map(|rt| {
                let found = match (&rt.name, rt.topic_id.is_nil()) {
                    (Some(n), _) => b.metadata.topic(n.as_str()).or_else(|| {
                        if allow_auto && crate::metadata::valid_topic_name(n.as_str()) { b.auto_create(n.as_str()) } else { None }
                    }),
                    (None, false) => b.metadata.topic_by_id(rt.topic_id),
                    (None, true) => None,
                };
                match found {
                    Some(t) => topic_response(ctx, &t),
                    None => {
                        let invalid = rt.name.as_ref().is_some_and(|n| !crate::metadata::valid_topic_name(n.as_str()));
                        let e = if invalid { ResponseError::InvalidTopicException } else { ResponseError::UnknownTopicOrPartition };
                        MetadataResponseTopic::default()
                            .with_name(rt.name.clone())
                            .with_topic_id(rt.topic_id)
                            .with_error_code(ctx.err(e))
                    }
                }
            })
            .collect()
    };
    let (host, port) = b.advertised(&ctx.listener);
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default().with_node_id(BrokerId(b.node_id())).with_host(str(&host)).with_port(port)])
        .with_cluster_id(Some(str(&b.metadata.cluster_id())))
        .with_controller_id(BrokerId(b.node_id()))
        .with_topics(topics)
        .with_cluster_authorized_operations(i32::MIN)
}

pub async fn describe_cluster(ctx: &Ctx<'_>, _req: DescribeClusterRequest) -> DescribeClusterResponse {
    let b = ctx.broker;
    let (host, port) = b.advertised(&ctx.listener);
    DescribeClusterResponse::default()
        .with_cluster_id(str(&b.metadata.cluster_id()))
        .with_controller_id(BrokerId(b.node_id()))
        .with_brokers(vec![DescribeClusterBroker::default().with_broker_id(BrokerId(b.node_id())).with_host(str(&host)).with_port(port)])
        .with_cluster_authorized_operations(i32::MIN)
}
