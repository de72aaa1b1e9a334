//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics, and for brokers:
//! their static settings read-only, plus the few Kafka allows to change at run time (the
//! replication throttles), which live in the metadata image like topic configs.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{str, Ctx};
use crate::broker::Broker;
use crate::error::ApiError;
use crate::throttle;
use crate::topic_config;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

// ConfigSource values from Kafka's DescribeConfigsResponse.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;

/// Broker settings that can change without a restart.
const DYNAMIC_BROKER_KEYS: &[&str] = &[throttle::LEADER_RATE, throttle::FOLLOWER_RATE];
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
                Entry {
                    name: k.into(),
                    value: defaults[k].clone(),
                    source: if from_broker { SOURCE_STATIC_BROKER } else { SOURCE_DEFAULT },
                }
            }
        })
        .collect()
}

/// A broker's settings: the dynamic ones from the image over the static ones. Resource
/// "" is the cluster-wide dynamic default, as in Kafka.
fn broker_entries(b: &Broker, resource: &str) -> Vec<Entry> {
    let (own, default) = b.metadata.read(|img| {
        (
            img.broker_configs.get(resource).cloned().unwrap_or_default(),
            img.broker_configs.get("").cloned().unwrap_or_default(),
        )
    });
    if resource.is_empty() {
        return default
            .into_iter()
            .map(|(name, value)| Entry { name, value, source: SOURCE_DYNAMIC_DEFAULT_BROKER })
            .collect();
    }
    let mut entries: Vec<Entry> = b
        .config
        .props
        .iter()
        .filter(|(k, v)| !v.is_empty() && !own.contains_key(*k) && !default.contains_key(*k))
        .map(|(k, v)| Entry {
            name: k.clone(),
            value: v.clone(),
            source: if b.config.explicit.contains(k) { SOURCE_STATIC_BROKER } else { SOURCE_DEFAULT },
        })
        .collect();
    for (name, value) in default.into_iter().filter(|(k, _)| !own.contains_key(k)) {
        entries.push(Entry { name, value, source: SOURCE_DYNAMIC_DEFAULT_BROKER });
    }
    entries.extend(own.into_iter().map(|(name, value)| Entry { name, value, source: SOURCE_DYNAMIC_BROKER }));
    entries
}

/// Validate and store a broker's (or, for "", every broker's) new dynamic config set.
async fn apply_broker(
    b: &Arc<Broker>,
    resource: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), ApiError> {
    if !resource.is_empty() && resource.parse::<i32>().is_err() {
        return Err(ApiError::new(ResponseError::InvalidRequest, format!("Invalid broker id {resource}")));
    }
    for (k, v) in &configs {
        if !DYNAMIC_BROKER_KEYS.contains(&k.as_str()) {
            return Err(ApiError::new(
                ResponseError::InvalidConfig,
                format!(
                    "Cannot update these configs dynamically: {k} (dynamic broker configs: {})",
                    DYNAMIC_BROKER_KEYS.join(", ")
                ),
            ));
        }
        if v.parse::<i64>().map_or(true, |r| r < 0) {
            return Err(ApiError::new(
                ResponseError::InvalidConfig,
                format!("Invalid value {v} for configuration {k}: a byte rate, at least 0"),
            ));
        }
    }
    if validate_only {
        return Ok(());
    }
    b.metadata.set_broker_configs(resource, configs).await?;
    b.topics.sync_replicas().await;
    Ok(())
}

pub async fn describe(ctx: &Ctx<'_>, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let b = ctx.broker;
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let res = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entries = match r.resource_type {
                TOPIC => match b.metadata.topic(r.resource_name.as_str()) {
                    Some(t) => topic_entries(b, &t.configs),
                    None => return res.with_error_code(ctx.err(ResponseError::UnknownTopicOrPartition)),
                },
                BROKER => {
                    let known = r.resource_name.is_empty()
                        || r.resource_name
                            .as_str()
                            .parse::<i32>()
                            .is_ok_and(|id| id == b.node_id() || b.metadata.broker(id).is_some());
                    if !known {
                        return res
                            .with_error_code(ctx.err(ResponseError::InvalidRequest))
                            .with_error_message(Some(str("Unknown broker id")));
                    }
                    broker_entries(b, r.resource_name.as_str())
                }
                _ => {
                    return res.with_error_code(ctx.err(ResponseError::InvalidRequest)).with_error_message(Some(
                        StrBytes::from_string(format!("Unsupported resource type {}", r.resource_type)),
                    ))
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
                        .with_read_only(r.resource_type == BROKER && !DYNAMIC_BROKER_KEYS.contains(&e.name.as_str()))
                })
                .collect();
            res.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Validate and store a topic's new override set.
async fn apply_topic(
    b: &Arc<Broker>,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), ApiError> {
    if b.metadata.topic(name).is_none() {
        return Err(ResponseError::UnknownTopicOrPartition.into());
    }
    for (k, v) in &configs {
        topic_config::validate(k, v)?;
    }
    if validate_only {
        return Ok(());
    }
    topic_config::warn_unimplemented(name, &configs);
    b.metadata.set_topic_configs(name, configs).await?;
    b.topics.sync_replicas().await;
    Ok(())
}

fn respond(ctx: &Ctx<'_>, resource_type: i8, name: StrBytes, r: Result<(), ApiError>) -> AlterConfigsResourceResponse {
    let resp = AlterConfigsResourceResponse::default().with_resource_type(resource_type).with_resource_name(name);
    match r {
        Ok(()) => resp,
        Err(e) => resp.with_error_code(ctx.err(e.code)).with_error_message(e.message.map(StrBytes::from_string)),
    }
}

fn unsupported(resource_type: i8) -> Result<(), ApiError> {
    Err(ApiError::new(
        ResponseError::InvalidRequest,
        format!("Fjord alters topic and broker configs only, not resource type {resource_type}"),
    ))
}

pub async fn alter(ctx: &Ctx<'_>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::new();
    for r in req.resources {
        let configs =
            r.configs.iter().filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string()))).collect();
        let result = match r.resource_type {
            TOPIC => apply_topic(ctx.broker, r.resource_name.as_str(), configs, req.validate_only).await,
            BROKER => apply_broker(ctx.broker, r.resource_name.as_str(), configs, req.validate_only).await,
            t => unsupported(t),
        };
        responses.push(respond(ctx, r.resource_type, r.resource_name, result));
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// Apply IncrementalAlterConfigs operations (SET, DELETE, APPEND, SUBTRACT) to a set of
/// overrides; `current` gives a key's effective value, which APPEND and SUBTRACT start from.
fn apply_ops(
    mut configs: BTreeMap<String, String>,
    ops: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
    current: impl Fn(&BTreeMap<String, String>, &str) -> String,
) -> Result<BTreeMap<String, String>, ApiError> {
    for c in ops {
        let key = c.name.to_string();
        let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
        match c.config_operation {
            0 => {
                configs.insert(key, value);
            }
            1 => {
                configs.remove(&key);
            }
            op @ (2 | 3) => {
                let mut items: Vec<String> = current(&configs, &key)
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                for v in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if op == 2 && !items.iter().any(|i| i == v) {
                        items.push(v.to_string());
                    } else if op == 3 {
                        items.retain(|i| i != v);
                    }
                }
                configs.insert(key, items.join(","));
            }
            op => return Err(ApiError::new(ResponseError::InvalidRequest, format!("Unknown config operation {op}"))),
        }
    }
    Ok(configs)
}

pub async fn incremental_alter(ctx: &Ctx<'_>, req: IncrementalAlterConfigsRequest) -> IncrementalAlterConfigsResponse {
    let b = ctx.broker;
    let mut responses = Vec::new();
    for r in req.resources {
        let name = r.resource_name.as_str();
        let result = match r.resource_type {
            TOPIC => match b.metadata.topic(name) {
                Some(t) => match apply_ops(t.configs, &r.configs, |c, k| topic_config::effective(&b.config, c, k)) {
                    Ok(configs) => apply_topic(b, name, configs, req.validate_only).await,
                    Err(e) => Err(e),
                },
                None => Err(ResponseError::UnknownTopicOrPartition.into()),
            },
            BROKER => {
                let now = b.metadata.read(|img| img.broker_configs.get(name).cloned().unwrap_or_default());
                match apply_ops(now, &r.configs, |c, k| c.get(k).cloned().unwrap_or_default()) {
                    Ok(configs) => apply_broker(b, name, configs, req.validate_only).await,
                    Err(e) => Err(e),
                }
            }
            t => unsupported(t),
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
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
