//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (and a read-only
//! view of the broker's own settings).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{str, Ctx};
use crate::broker::Broker;
use crate::topic_config;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

// ConfigSource values from Kafka's DescribeConfigsResponse.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

pub struct Entry {
    pub name: String,
    pub value: String,
    pub source: i8,
}

/// Every topic config with its effective value and where it comes from.
pub fn topic_entries(b: &Broker, overrides: &BTreeMap<String, String>) -> Vec<Entry> {
    let defaults = topic_config::defaults(&b.config);
    topic_config::all_keys()
        .map(|k| match overrides.get(k) {
            Some(v) => Entry { name: k.into(), value: v.clone(), source: SOURCE_TOPIC },
            None => {
                let from_broker = topic_config::broker_key(k).is_some_and(|bk| b.config.explicit.contains(bk));
                Entry { name: k.into(), value: defaults[k].clone(), source: if from_broker { SOURCE_STATIC_BROKER } else { SOURCE_DEFAULT } }
            }
        })
        .collect()
}

fn broker_entries(b: &Broker) -> Vec<Entry> {
    b.config
        .props
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| Entry {
            name: k.clone(),
            value: v.clone(),
            source: if b.config.explicit.contains(k) { SOURCE_STATIC_BROKER } else { SOURCE_DEFAULT },
        })
        .collect()
}

pub async fn describe(ctx: &Ctx<'_>, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let b = ctx.broker;
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let res = DescribeConfigsResult::default().with_resource_type(r.resource_type).with_resource_name(r.resource_name.clone());
            let entries = match r.resource_type {
                TOPIC => match b.metadata.topic(r.resource_name.as_str()) {
                    Some(t) => topic_entries(b, &t.configs),
                    None => return res.with_error_code(ctx.err(ResponseError::UnknownTopicOrPartition)),
                },
                BROKER => {
                    if !r.resource_name.is_empty() && r.resource_name.as_str() != b.node_id().to_string() {
                        return res.with_error_code(ctx.err(ResponseError::InvalidRequest)).with_error_message(Some(str("Unknown broker id")));
                    }
                    broker_entries(b)
                }
                _ => {
                    return res
                        .with_error_code(ctx.err(ResponseError::InvalidRequest))
                        .with_error_message(Some(StrBytes::from_string(format!("Unsupported resource type {}", r.resource_type))))
                }
            };
            let configs = entries
                .into_iter()
                .filter(|e| r.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == e.name)))
                .map(|e| {
                    DescribeConfigsResourceResult::default()
                        .with_name(str(&e.name))
                        .with_value(Some(str(&e.value)))
                        .with_config_source(e.source)
                        .with_read_only(r.resource_type == BROKER)
                })
                .collect();
            res.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Validate and store a topic's new override set.
async fn apply_topic(b: &Arc<Broker>, name: &str, configs: BTreeMap<String, String>, validate_only: bool) -> Result<(), (ResponseError, Option<String>)> {
    if b.metadata.topic(name).is_none() {
        return Err((ResponseError::UnknownTopicOrPartition, None));
    }
    for (k, v) in &configs {
        topic_config::validate(k, v).map_err(|(e, m)| (e, Some(m)))?;
    }
    if validate_only {
        return Ok(());
    }
    topic_config::warn_unimplemented(name, &configs);
    b.metadata.set_topic_configs(name, configs).await.map_err(|e| (e, None))?;
    b.sync_replicas().await;
    Ok(())
}

fn respond(ctx: &Ctx<'_>, resource_type: i8, name: StrBytes, r: Result<(), (ResponseError, Option<String>)>) -> AlterConfigsResourceResponse {
    let resp = AlterConfigsResourceResponse::default().with_resource_type(resource_type).with_resource_name(name);
    match r {
        Ok(()) => resp,
        Err((e, m)) => resp.with_error_code(ctx.err(e)).with_error_message(m.map(StrBytes::from_string)),
    }
}

fn not_topic() -> Result<(), (ResponseError, Option<String>)> {
    Err((ResponseError::InvalidRequest, Some("Fjord supports altering topic configs only; broker settings are static".into())))
}

pub async fn alter(ctx: &Ctx<'_>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::new();
    for r in req.resources {
        let result = if r.resource_type == TOPIC {
            let configs = r.configs.iter().filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string()))).collect();
            apply_topic(ctx.broker, r.resource_name.as_str(), configs, req.validate_only).await
        } else {
            not_topic()
        };
        responses.push(respond(ctx, r.resource_type, r.resource_name, result));
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub async fn incremental_alter(ctx: &Ctx<'_>, req: IncrementalAlterConfigsRequest) -> IncrementalAlterConfigsResponse {
    let b = ctx.broker;
    let mut responses = Vec::new();
    for r in req.resources {
        {
            let result = if r.resource_type != TOPIC {
                not_topic()
            } else if let Some(t) = b.metadata.topic(r.resource_name.as_str()) {
                let mut configs = t.configs.clone();
                let mut bad = None;
                for c in &r.configs {
                    let key = c.name.to_string();
                    let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                    let current = || topic_config::effective(&b.config, &configs, &key);
                    match c.config_operation {
                        0 => {
                            configs.insert(key, value);
                        }
                        1 => {
                            configs.remove(&key);
                        }
                        2 | 3 => {
                            let mut items: Vec<String> = current().split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
                            for v in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                                if c.config_operation == 2 && !items.iter().any(|i| i == v) {
                                    items.push(v.to_string());
                                } else if c.config_operation == 3 {
                                    items.retain(|i| i != v);
                                }
                            }
                            configs.insert(key, items.join(","));
                        }
                        op => bad = Some((ResponseError::InvalidRequest, Some(format!("Unknown config operation {op}")))),
                    }
                }
                match bad {
                    Some(e) => Err(e),
                    None => apply_topic(b, r.resource_name.as_str(), configs, req.validate_only).await,
                }
            } else {
                Err((ResponseError::UnknownTopicOrPartition, None))
            };
            let plain = respond(ctx, r.resource_type, r.resource_name, result);
            responses.push(
                kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_error_code(plain.error_code)
                    .with_error_message(plain.error_message)
                    .with_resource_type(plain.resource_type)
                    .with_resource_name(plain.resource_name),
            );
        }
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
