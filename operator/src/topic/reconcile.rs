//! One reconcile of a Topic: find its cluster, compare Kafka with the spec, write only
//! what differs, and report in status (written only when it changed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use fjord_crds::topic::DeletionPolicy;
use fjord_crds::{Topic, TopicStatus};
use kafka_protocol::error::ResponseError;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::logic::{self, PartitionPlan};
use super::{Ctx, CONTROLLER, FINALIZER};
use crate::cluster::brokers::GroupTopic;
use crate::kafka::{AdminClient, AdminError, GroupOffset, NewTopic, PartitionLeader, ReplicaKey, TopicInfo};

/// A failed Topic reconcile, one variant per step that can fail, each wrapping its cause.
/// Connecting to the cluster and converging Kafka on the spec do not fail the reconcile:
/// they end in `Ready=False` (reasons `ClusterNotReady`, `KafkaError`, `InvalidSpec`,
/// `TopicExistsNotManaged`) and a requeue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the Topic's status.
    #[error("status: {0}")]
    Status(#[source] kube::Error),
    /// Deleting the Kafka topic of a deleted Topic: the cluster has no ready broker.
    #[error("cleanup: cluster not ready: {0}")]
    CleanupClusterNotReady(String),
    /// Deleting the Kafka topic of a deleted Topic: Kafka refused or did not answer.
    #[error("cleanup: delete the Kafka topic: {0}")]
    CleanupKafka(#[source] AdminError),
    /// Adding or removing the finalizer.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// The step that failed, as the `step` label of `fjord_operator_reconcile_errors_total`.
    pub fn step(&self) -> &'static str {
        match self {
            Error::Status(_) => "status",
            Error::CleanupClusterNotReady(_) | Error::CleanupKafka(_) => "cleanup",
            Error::Finalizer(_) => "finalizer",
        }
    }

    /// The reason of the failure's Event: the step, e.g. `CleanupFailed`.
    pub fn event_reason(&self) -> &'static str {
        match self {
            Error::Status(_) => "StatusFailed",
            Error::CleanupClusterNotReady(_) | Error::CleanupKafka(_) => "CleanupFailed",
            Error::Finalizer(_) => "FinalizerFailed",
        }
    }

    /// The cause's kind, as the `reason` label of `fjord_operator_reconcile_errors_total`
    /// (the values it had before the step was known).
    fn reason(&self) -> String {
        match self {
            Error::Status(_) => "KubeApi".into(),
            Error::CleanupKafka(e) => e.reason().to_string(),
            Error::CleanupClusterNotReady(_) => "ClusterNotReady".into(),
            Error::Finalizer(_) => "Finalizer".into(),
        }
    }
}

/// The step of a reconcile that ended in `Ready=False` with this reason and a requeue.
fn requeue_step(reason: &str) -> &'static str {
    if reason == "ClusterNotReady" {
        "connect"
    } else {
        "converge"
    }
}

/// How a reconcile ended, for the reconciles metric: "ok" or "requeue" (with a reason).
type Outcome = (&'static str, Option<String>);

/// Consumer-group offsets and partition sizes of one cluster, read at `at`.
pub struct ClusterStats {
    at: Instant,
    offsets: Vec<GroupOffset>,
    /// Bytes of each replica.
    sizes: HashMap<ReplicaKey, i64>,
    /// Seconds behind, the max over the brokers' `/metrics`.
    lag_seconds: HashMap<GroupTopic, f64>,
}

/// One cluster's latest stats; the async lock makes concurrent reconciles share a refresh.
pub type StatsSlot = Arc<tokio::sync::Mutex<Option<Arc<ClusterStats>>>>;

#[tracing::instrument(skip_all, fields(topic = %topic.name_any(), ns = topic.namespace().unwrap_or_default()))]
pub async fn reconcile(topic: Arc<Topic>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let start = ctx.enter();
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &topic.namespace().unwrap_or_default());
    let outcome: Mutex<Outcome> = Mutex::new(("ok", None));
    let (ctx_ref, outcome_ref) = (&ctx, &outcome);
    let r_topic = topic.clone();
    let r = finalizer(&api, FINALIZER, topic, |event| async move {
        match event {
            Finalizer::Apply(t) => {
                let (action, o) = apply(&t, ctx_ref).await?;
                *outcome_ref.lock().unwrap() = o;
                Ok(action)
            }
            Finalizer::Cleanup(t) => cleanup(&t, ctx_ref).await,
        }
    })
    .await;
    ctx.leave();
    let took = start.elapsed();
    match r {
        Ok(action) => {
            let (result, reason) = outcome.into_inner().unwrap();
            let error = reason.as_deref().map(|r| (requeue_step(r), r));
            ctx.metrics.reconciled(CONTROLLER, result, error, took);
            Ok(action)
        }
        Err(e) => {
            let e = match e {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => {
                    e
                }
                other => Error::Finalizer(other.to_string()),
            };
            ctx.metrics.reconciled(CONTROLLER, "error", Some((e.step(), &e.reason())), took);
            failure_event(&r_topic, &ctx, &e).await;
            Err(e)
        }
    }
}

pub fn error_policy(topic: Arc<Topic>, error: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!(topic = %topic.name_any(), namespace = ?topic.namespace(), error = %error, "topic reconcile failed");
    ctx.retry()
}

/// The admin client of the Topic's Cluster, pointed at its Ready broker pods.
fn connect(t: &Topic, ctx: &Ctx) -> Result<Arc<AdminClient>, String> {
    let ns = t.namespace().unwrap_or_default();
    let name = &t.spec.cluster;
    let Some(cluster) = ctx.clusters.get(&ObjectRef::new(name).within(&ns)) else {
        // Its connections are of no further use.
        ctx.pool.remove(&ns, name);
        return Err(format!("Cluster {name} not found in namespace {ns}"));
    };
    let pods = ctx.pods.state();
    let mine = pods.iter().map(|p| p.as_ref()).filter(|p| {
        p.metadata.namespace.as_deref() == Some(ns.as_str())
            && p.labels().get("app.kubernetes.io/instance") == Some(name)
    });
    let endpoints = logic::ready_endpoints(mine, cluster.spec.listeners.internal.port);
    if endpoints.bootstrap.is_empty() {
        return Err(format!("Cluster {name} has no ready broker"));
    }
    Ok(ctx.pool.get(&ns, name, endpoints))
}

/// Kafka errors that a spec change must fix (retrying the same request will not help).
fn spec_error(e: &AdminError) -> bool {
    [
        ResponseError::InvalidConfig,
        ResponseError::InvalidReplicationFactor,
        ResponseError::InvalidPartitions,
        ResponseError::InvalidTopicException,
        ResponseError::PolicyViolation,
        ResponseError::InvalidReplicaAssignment,
    ]
    .iter()
    .any(|k| e.is(*k))
}

async fn apply(t: &Topic, ctx: &Ctx) -> Result<(Action, Outcome), Error> {
    if logic::is_paused(t) {
        return Ok((ctx.requeue(), ("ok", None)));
    }
    let name = logic::topic_name(t);
    let old = t.status.as_ref();
    let mut st = old.cloned().unwrap_or_default();
    st.topic_name = Some(name.clone());
    let client = match connect(t, ctx) {
        Ok(c) => c,
        Err(msg) => return finish(t, ctx, st, Err(("ClusterNotReady", msg))).await,
    };
    match converge(t, ctx, &client, &name, &mut st).await {
        Ok(result) => finish(t, ctx, st, result).await,
        Err(e) => {
            let reason = if spec_error(&e) { "InvalidSpec" } else { "KafkaError" };
            finish(t, ctx, st, Err((reason, e.to_string()))).await
        }
    }
}

/// Ok((reason, message)) for Ready=True, Err((reason, message)) for Ready=False.
type Verdict = Result<(&'static str, String), (&'static str, String)>;

/// Make Kafka match the spec, filling `st` with what Kafka has.
async fn converge(
    t: &Topic,
    ctx: &Ctx,
    client: &Arc<AdminClient>,
    name: &str,
    st: &mut TopicStatus,
) -> Result<Verdict, AdminError> {
    let spec = &t.spec;
    let names = [name.to_string()];
    let md = client.metadata(Some(&names)).await?;
    // This generation was already reconciled to Ready: any difference found now was made
    // outside the operator.
    let was_ready = st.conditions.iter().any(|c| c.type_ == fjord_crds::condition::READY && c.status == "True");
    let settled = st.managed && was_ready && st.observed_generation == t.metadata.generation;
    // A create whose status write failed is still ours: remembered in memory.
    let key = (t.namespace().unwrap_or_default(), spec.cluster.clone(), name.to_string());
    let Some(info) = md.topics.into_iter().find(|x| x.name == name) else {
        if settled {
            drift(t, ctx, name, "the topic was deleted outside the operator: re-created").await;
        }
        let new = NewTopic {
            name: name.to_string(),
            partitions: spec.partitions,
            replication_factor: spec.replication_factor as i16,
            configs: spec.config.clone(),
        };
        let id = client.create_topic(new).await?;
        ctx.created.lock().unwrap().insert(key);
        tracing::info!(topic = name, namespace = ?t.namespace(), "created Kafka topic");
        st.managed = true;
        st.topic_id = (!id.is_empty()).then_some(id);
        st.partitions = Some(spec.partitions);
        st.replication_factor = Some(spec.replication_factor);
        st.under_replicated_partitions = Some(0);
        return Ok(Ok(("Created", format!("created with {} partitions", spec.partitions))));
    };
    let mut done: Vec<String> = Vec::new();
    if !st.managed && ctx.created.lock().unwrap().contains(&key) {
        st.managed = true;
    }
    if !st.managed {
        if !spec.adopt {
            let msg = format!("topic {name} already exists in Kafka and was not created by this resource; set spec.adopt to take it over");
            return Ok(Err(("TopicExistsNotManaged", msg)));
        }
        st.managed = true;
        done.push("adopted the existing topic".into());
    }
    if !info.id.is_empty() && st.topic_id.as_deref().is_some_and(|old| old != info.id) {
        tracing::warn!(topic = name, "topic id changed: the topic was re-created outside the operator");
    }
    st.topic_id = (!info.id.is_empty()).then(|| info.id.clone()).or(st.topic_id.take());

    let mut problems: Vec<String> = Vec::new();
    let mut partitions = info.partitions.len() as i32;
    match logic::partition_plan(spec.partitions, partitions) {
        PartitionPlan::Same => {}
        PartitionPlan::Grow(n) => {
            client.create_partitions(name, n).await?;
            done.push(format!("partitions {partitions} -> {n}"));
            partitions = n;
        }
        PartitionPlan::TooMany { actual } => {
            problems.push(format!("Kafka has {actual} partitions but spec.partitions is {}: partitions cannot be removed; raise spec.partitions", spec.partitions));
        }
    }
    let change = logic::config_diff(&spec.config, &client.describe_topic_configs(name).await?);
    if !change.is_empty() {
        // All of the topic's config changes in one request.
        client.incremental_alter_topic_configs(name, &change.set, &change.delete).await?;
        done.push(format!("configs {}", change.keys().join(", ")));
    }
    let rf = logic::replication_factor(&info);
    if rf != spec.replication_factor {
        problems.push(format!("replication factor is {rf} in Kafka, spec asks {}: changing it takes a partition reassignment, which the operator does not do", spec.replication_factor));
    }
    if settled && !done.is_empty() {
        drift(t, ctx, name, &format!("reverted changes made outside the operator: {}", done.join("; "))).await;
    }
    st.partitions = Some(partitions);
    st.replication_factor = Some(rf);
    st.under_replicated_partitions = Some(logic::under_replicated(&info));
    stats(t, ctx, client, &info, st).await;

    Ok(if !problems.is_empty() {
        Err(("InvalidSpec", problems.join("; ")))
    } else if !done.is_empty() {
        Ok(("Updated", done.join("; ")))
    } else {
        // Nothing to do: keep the last Ready=True reason (Created, Updated) so that an
        // idle reconcile writes nothing.
        let prev =
            t.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == fjord_crds::condition::READY));
        match prev {
            Some(c) if c.status == "True" && c.observed_generation == t.metadata.generation => {
                let reason = match c.reason.as_str() {
                    "Created" => "Created",
                    "Updated" => "Updated",
                    _ => "UpToDate",
                };
                Ok((reason, c.message.clone()))
            }
            _ => Ok(("UpToDate", "the topic matches the spec".into())),
        }
    })
}

/// Write the status when it changed, and pick the requeue.
async fn finish(t: &Topic, ctx: &Ctx, mut st: TopicStatus, verdict: Verdict) -> Result<(Action, Outcome), Error> {
    let (ready, reason, message) = match verdict {
        Ok((r, m)) => (true, r, m),
        Err((r, m)) => (false, r, m),
    };
    st.observed_generation = t.metadata.generation;
    let cond = logic::ready_condition(t.status.as_ref(), ready, reason, message, t.metadata.generation);
    st.conditions.retain(|c| c.type_ != cond.type_);
    st.conditions.push(cond);
    if let Some(patch) = logic::status_patch(t.status.as_ref(), &st) {
        let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &t.namespace().unwrap_or_default());
        ctx.metrics.api_write(CONTROLLER, "Topic");
        api.patch_status(&t.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(Error::Status)?;
    }
    Ok(match (ready, reason) {
        (true, _) | (false, "TopicExistsNotManaged" | "InvalidSpec") => {
            (ctx.requeue(), if ready { ("ok", None) } else { ("requeue", Some(reason.to_string())) })
        }
        (false, _) => (ctx.retry(), ("requeue", Some(reason.to_string()))),
    })
}

/// A failed reconcile: a Warning Event whose reason names the step (e.g. `CleanupFailed`).
/// A failure to converge is in the Ready condition instead (see [`Error`]).
async fn failure_event(t: &Topic, ctx: &Ctx, e: &Error) {
    let event = Event {
        type_: EventType::Warning,
        reason: e.event_reason().into(),
        note: Some(e.to_string()),
        action: "Reconcile".into(),
        secondary: None,
    };
    ctx.metrics.api_write(CONTROLLER, "Event");
    if let Err(w) = ctx.recorder.publish(&event, &t.object_ref(&())).await {
        tracing::warn!(error = %w, "publishing event failed");
    }
}

/// Tell the user (an Event) and the log that Kafka had drifted from the spec.
async fn drift(t: &Topic, ctx: &Ctx, topic: &str, note: &str) {
    tracing::info!(topic, namespace = ?t.namespace(), "{note}");
    let event = Event {
        type_: EventType::Normal,
        reason: "DriftReverted".into(),
        note: Some(note.to_string()),
        action: "Reconcile".into(),
        secondary: None,
    };
    ctx.metrics.api_write(CONTROLLER, "Event");
    if let Err(e) = ctx.recorder.publish(&event, &t.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing event failed");
    }
}

/// Bytes and consumer-group lag from the cluster's shared snapshot, refreshed at most
/// every two drift intervals. Failures keep the previous numbers: they are informational.
async fn stats(t: &Topic, ctx: &Ctx, client: &AdminClient, info: &TopicInfo, st: &mut TopicStatus) {
    let key = (t.namespace().unwrap_or_default(), t.spec.cluster.clone());
    let slot = ctx.stats.lock().unwrap().entry(key).or_default().clone();
    let snapshot = {
        let mut guard = slot.lock().await;
        let max_age = ctx.opts.drift_interval * 2;
        if guard.as_ref().is_none_or(|s| s.at.elapsed() > max_age) {
            match read_stats(client).await {
                Ok(s) => *guard = Some(Arc::new(s)),
                Err(e) => tracing::debug!(error = %e, "reading group offsets and sizes failed"),
            }
        }
        match guard.clone() {
            Some(s) => s,
            None => return,
        }
    };
    let leaders: Vec<PartitionLeader> =
        info.partitions.iter().map(|p| PartitionLeader { partition: p.index, leader: p.leader }).collect();
    let leader_replica =
        |p: &PartitionLeader| ReplicaKey { topic: info.name.clone(), partition: p.partition, broker: p.leader };
    st.bytes = Some(leaders.iter().filter_map(|p| snapshot.sizes.get(&leader_replica(p))).sum());
    if !snapshot.offsets.iter().any(|o| o.topic == info.name) {
        st.groups = Vec::new();
        return;
    }
    match client.list_offsets_latest(&info.name, &leaders).await {
        Ok(latest) => st.groups = logic::group_lags(&info.name, &snapshot.offsets, &latest, &snapshot.lag_seconds),
        Err(e) => tracing::debug!(topic = %info.name, error = %e, "reading latest offsets failed"),
    }
}

async fn read_stats(client: &AdminClient) -> Result<ClusterStats, AdminError> {
    let offsets = client.all_group_offsets().await?;
    let sizes = client.partition_sizes().await?;
    Ok(ClusterStats { at: Instant::now(), offsets, sizes, lag_seconds: lag_seconds(&client.pod_ips()).await })
}

/// Time lag from every ready broker's `/metrics` (only coordinators report a group, so all
/// are asked); a broker that does not answer is left out, as its groups then read 0.
async fn lag_seconds(ips: &[String]) -> HashMap<GroupTopic, f64> {
    let asks = ips.iter().map(|ip| crate::cluster::brokers::metrics(ip));
    let texts: Vec<String> = futures::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(|r| r.inspect_err(|e| tracing::debug!(error = %e, "reading broker metrics failed")).ok())
        .collect();
    crate::cluster::brokers::lag_seconds(texts.iter().map(String::as_str))
}

/// The resource is being deleted: delete the Kafka topic when the policy says so and the
/// operator manages it; otherwise just let the resource go.
async fn cleanup(t: &Topic, ctx: &Ctx) -> Result<Action, Error> {
    let name = logic::topic_name(t);
    let managed = t.status.as_ref().is_some_and(|s| s.managed);
    if t.spec.deletion_policy == DeletionPolicy::Retain || !managed || logic::is_paused(t) {
        tracing::info!(topic = name, namespace = ?t.namespace(), managed, "Topic deleted; Kafka topic left in place");
        return Ok(Action::await_change());
    }
    let client = match connect(t, ctx) {
        Ok(c) => c,
        Err(msg) => {
            // A Cluster that is gone (or going) takes its topics with it: do not block the
            // deletion (e.g. of a whole namespace) on brokers that will never come back.
            let ns = t.namespace().unwrap_or_default();
            let cluster = ctx.clusters.get(&ObjectRef::new(&t.spec.cluster).within(&ns));
            if cluster.is_none_or(|c| c.meta().deletion_timestamp.is_some()) {
                return Ok(Action::await_change());
            }
            return Err(Error::CleanupClusterNotReady(msg));
        }
    };
    match client.delete_topic(&name).await {
        Ok(()) => tracing::info!(topic = name, namespace = ?t.namespace(), "deleted Kafka topic"),
        Err(e) if e.is(ResponseError::UnknownTopicOrPartition) => {}
        Err(e) => return Err(Error::CleanupKafka(e)),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_their_step_and_keep_the_metric_reasons() {
        let cases = [
            (Error::Status(kube::Error::LinesCodecMaxLineLengthExceeded), "status", "StatusFailed", "KubeApi"),
            (Error::CleanupClusterNotReady("no ready broker".into()), "cleanup", "CleanupFailed", "ClusterNotReady"),
            (Error::Finalizer("x".into()), "finalizer", "FinalizerFailed", "Finalizer"),
        ];
        for (e, step, event, reason) in &cases {
            assert_eq!((e.step(), e.event_reason(), e.reason().as_str()), (*step, *event, *reason), "{e}");
            assert!(e.to_string().starts_with(step), "{e}");
        }
        assert_eq!(requeue_step("ClusterNotReady"), "connect");
        assert_eq!(requeue_step("KafkaError"), "converge");
        assert_eq!(requeue_step("InvalidSpec"), "converge");
    }
}
