//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DeleteRecords.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{str, Ctx};
use crate::error::ApiError;
use crate::topic_admin::{TopicRequest, MAX_PARTITIONS_PER_TOPIC};

pub async fn create_topics(ctx: &Ctx<'_>, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let b = ctx.broker;
    // Requests that are malformed on their own are answered without touching metadata.
    let mut early: Vec<Option<CreatableTopicResult>> = Vec::new();
    let mut wanted = Vec::new();
    for t in &req.topics {
        let result = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        let configs: BTreeMap<String, String> =
            t.configs.iter().filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string()))).collect();
        let (mut partitions, mut rf) = (t.num_partitions, t.replication_factor);
        if !t.assignments.is_empty() {
            if partitions != -1 || rf != -1 {
                early.push(Some(
                    result
                        .with_error_code(ctx.err(ResponseError::InvalidRequest))
                        .with_error_message(Some(str("Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time."))),
                ));
                continue;
            }
            partitions = t.assignments.len() as i32;
            rf = t.assignments[0].broker_ids.len() as i16;
        }
        let mut assignment: Vec<(i32, Vec<i32>)> =
            t.assignments.iter().map(|a| (a.partition_index, a.broker_ids.iter().map(|b| b.0).collect())).collect();
        assignment.sort_by_key(|a| a.0);
        let assignment = (!assignment.is_empty()).then(|| assignment.into_iter().map(|a| a.1).collect());
        early.push(None);
        wanted.push(TopicRequest { name: t.name.to_string(), partitions, replication_factor: rf, configs, assignment });
    }
    let mut created = b.topics.create_topics(wanted, req.validate_only).await.into_iter();
    let topics = req
        .topics
        .iter()
        .zip(early)
        .map(|(t, early)| {
            if let Some(r) = early {
                return r;
            }
            let result = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_num_partitions(-1)
                .with_replication_factor(-1);
            match created.next().expect("a result per topic") {
                Ok(meta) => {
                    let cfgs = super::configs::topic_entries(b, &meta.configs)
                        .into_iter()
                        .map(|e| {
                            CreatableTopicConfigs::default()
                                .with_name(str(&e.name))
                                .with_value(Some(str(&e.value)))
                                .with_config_source(e.source)
                        })
                        .collect();
                    result
                        .with_topic_id(meta.id)
                        .with_num_partitions(meta.partitions)
                        .with_replication_factor(meta.replication_factor)
                        .with_configs(Some(cfgs))
                }
                Err(ApiError { code, message }) => {
                    result.with_error_code(ctx.err(code)).with_error_message(message.map(StrBytes::from_string))
                }
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

pub async fn delete_topics(ctx: &Ctx<'_>, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let b = ctx.broker;
    let mut wanted: Vec<(Option<TopicName>, uuid::Uuid)> =
        req.topic_names.into_iter().map(|n| (Some(n), uuid::Uuid::nil())).collect();
    wanted.extend(req.topics.into_iter().map(|t| (t.name, t.topic_id)));
    let mut responses = Vec::new();
    for (name, id) in wanted {
        responses.push({
            let meta = match &name {
                Some(n) => b.metadata.topic(n.as_str()),
                None => b.metadata.topic_by_id(id),
            };
            let r = DeletableTopicResult::default().with_name(name.clone()).with_topic_id(id);
            match meta {
                None => {
                    let e = if name.is_some() {
                        ResponseError::UnknownTopicOrPartition
                    } else {
                        ResponseError::UnknownTopicId
                    };
                    r.with_error_code(ctx.err(e))
                }
                Some(m) => match b.topics.delete_topic(&m.name).await {
                    Ok(m) => r.with_name(Some(TopicName(str(&m.name)))).with_topic_id(m.id),
                    Err(e) => r.with_error_code(ctx.err(e)),
                },
            }
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(ctx: &Ctx<'_>, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let b = ctx.broker;
    let mut results = Vec::new();
    for t in req.topics {
        let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let Some(meta) = b.metadata.topic(t.name.as_str()) else {
            results.push(r.with_error_code(ctx.err(ResponseError::UnknownTopicOrPartition)));
            continue;
        };
        if t.count > MAX_PARTITIONS_PER_TOPIC {
            let msg = format!("Number of partitions must be at most {}.", MAX_PARTITIONS_PER_TOPIC);
            results.push(
                r.with_error_code(ctx.err(ResponseError::InvalidPartitions))
                    .with_error_message(Some(StrBytes::from_string(msg))),
            );
            continue;
        }
        if t.count <= meta.partitions {
            let msg = format!(
                "Topic currently has {} partitions, which is higher than the requested {}.",
                meta.partitions, t.count
            );
            results.push(
                r.with_error_code(ctx.err(ResponseError::InvalidPartitions))
                    .with_error_message(Some(StrBytes::from_string(msg))),
            );
            continue;
        }
        if req.validate_only {
            results.push(r);
            continue;
        }
        let assignment =
            t.assignments.map(|a| a.into_iter().map(|a| a.broker_ids.into_iter().map(|b| b.0).collect()).collect());
        results.push(match b.topics.add_partitions(&meta, t.count, assignment).await {
            Ok(_) => r,
            Err(ApiError { code, message }) => {
                r.with_error_code(ctx.err(code)).with_error_message(message.map(StrBytes::from_string))
            }
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

pub async fn delete_records(ctx: &Ctx<'_>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|dp| {
                    let r = DeleteRecordsPartitionResult::default()
                        .with_partition_index(dp.partition_index)
                        .with_low_watermark(-1);
                    let part = match super::leader_partition(ctx, t.name.as_str(), dp.partition_index, -1) {
                        Ok(p) => p,
                        Err(code) => return r.with_error_code(code),
                    };
                    let mut p = part.lock();
                    let hw = p.high_watermark();
                    let target = if dp.offset == -1 { hw } else { dp.offset };
                    if target < 0 || target > hw {
                        return r.with_error_code(ctx.err(ResponseError::OffsetOutOfRange));
                    }
                    if !p.log.config.delete_enabled {
                        return r.with_error_code(ctx.err(ResponseError::PolicyViolation));
                    }
                    // Renames and deletes files: off the worker (docs/architecture.md).
                    match tokio::task::block_in_place(|| p.log.advance_start(target)) {
                        Ok(removed) => {
                            let low_watermark = p.log.log_start_offset();
                            drop(p);
                            if let Err(e) = tokio::task::block_in_place(|| removed.delete()) {
                                tracing::warn!(error = %e, "deleting segments below the new log start failed");
                            }
                            r.with_low_watermark(low_watermark)
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "delete records failed");
                            r.with_error_code(ctx.err(ResponseError::KafkaStorageError))
                        }
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(parts)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
