//! The Cluster controller. Each reconcile is a pipeline, one module per step:
//!
//! 1. [`fetch`]: the StatefulSet, its pods, whether the monitoring CRDs exist;
//! 2. [`model`]: validate the spec into a typed model (errors become conditions);
//! 3. [`build`] / [`external`] / [`monitoring`]: every child object, by pure functions;
//! 4. [`apply`]: server-side apply in a fixed order, skipped when the spec hash matches;
//! 5. [`apply::prune`]: delete children the spec no longer wants;
//! 6. [`scale`] and [`roll`]: the replica count and the one-pod-at-a-time restart;
//! 7. [`status`]: conditions and counts, written only when they changed.
//!
//! Scaling is decided before building, since a blocked scale-down keeps the StatefulSet
//! at its old replica count.

pub mod apply;
pub mod brokers;
pub mod build;
pub mod external;
pub mod fetch;
pub mod model;
pub mod monitoring;
pub mod roll;
pub mod scale;
pub mod status;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_crds::{Cluster, ClusterStatus};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};

use crate::metrics::Metrics;
use apply::Child;
use model::{Model, MANAGER};
use roll::{Decision, Safety};

const CONTROLLER: &str = "cluster";
/// Requeue while something is moving (a roll waits on a pod to come back).
const FAST: Duration = Duration::from_secs(2);
/// Requeue of a settled cluster, to refresh partition health in the status.
const SLOW: Duration = Duration::from_secs(30);
/// How often `fjord_operator_resources` is refreshed besides after each reconcile: a deleted
/// Cluster is not reconciled, and its series must go.
const RESOURCES_EVERY: Duration = Duration::from_secs(5);

/// A failed reconcile, one variant per pipeline step that can fail, each wrapping its
/// cause. `validate` and `build` never fail a reconcile: an invalid spec is reported as
/// `ConfigInvalid` and waits for an edit, and the builders are pure. Broker calls
/// (`/status`, `/restart-safe`, `/metrics`) do not either: a broker that does not answer
/// blocks a scale-down or a roll step, and is said so in the conditions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 1. Reading the StatefulSet, the pods, the monitoring API group or the external
    ///    Services' addresses.
    #[error("fetch: {0}")]
    Fetch(#[source] kube::Error),
    /// 4. Server-side apply of one child (`Kind/name`).
    #[error("apply {child}: {source}")]
    Apply { child: String, source: kube::Error },
    /// 5. Listing or deleting leftover children.
    #[error("prune: {0}")]
    Prune(#[source] kube::Error),
    /// 6a. Deleting the next broker pod of a rolling restart.
    #[error("roll: {0}")]
    Roll(#[source] kube::Error),
    /// 7. Writing the Cluster's status.
    #[error("status: {0}")]
    Status(#[source] kube::Error),
}

impl Error {
    /// The step that failed, as the `step` label of `fjord_operator_reconcile_errors_total`.
    pub fn step(&self) -> &'static str {
        match self {
            Error::Fetch(_) => "fetch",
            Error::Apply { .. } => "apply",
            Error::Prune(_) => "prune",
            Error::Roll(_) => "roll",
            Error::Status(_) => "status",
        }
    }

    /// The reason of the failure's condition and Event: the step, e.g. `ApplyFailed`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Fetch(_) => "FetchFailed",
            Error::Apply { .. } => "ApplyFailed",
            Error::Prune(_) => "PruneFailed",
            Error::Roll(_) => "RollFailed",
            Error::Status(_) => "StatusFailed",
        }
    }

    fn kube(&self) -> &kube::Error {
        match self {
            Error::Fetch(e) | Error::Apply { source: e, .. } | Error::Prune(e) | Error::Roll(e) | Error::Status(e) => e,
        }
    }

    /// The cause's kind, as the `reason` label of `fjord_operator_reconcile_errors_total`
    /// (unchanged from before the step was known): the API server's status reason (e.g.
    /// `Conflict`, `Forbidden`), or `KubeClient` when no answer came.
    pub fn cause(&self) -> String {
        match self.kube() {
            kube::Error::Api(s) => s.reason.clone(),
            _ => "KubeClient".into(),
        }
    }
}

pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    recorder: Recorder,
    monitoring: fetch::MonitoringCache,
    store: Store<Cluster>,
    /// Reconciles running or scheduled soon: the "queue depth" metric.
    in_flight: AtomicI64,
}

/// The external listener's Services, applied before [`children`]: the brokers' ConfigMap
/// names the node ports and load balancer addresses Kubernetes gives them.
pub fn external_children(m: &Model, replicas: i32) -> Vec<Child> {
    external::services(m, replicas).iter().map(Child::typed).collect()
}

/// The children of `m`, in apply order (after [`external_children`]): identity and config
/// before the pods that use them, the StatefulSet last among the core objects, then the
/// monitoring objects. `addresses` are what the external Services got.
pub fn children(m: &Model, replicas: i32, monitoring: bool, addresses: &external::Addresses) -> Vec<Child> {
    let mut out = vec![
        Child::typed(&build::service_account(m)),
        Child::typed(&build::config_map(m, addresses)),
        Child::typed(&build::headless_service(m)),
        Child::typed(&build::bootstrap_service(m)),
        Child::typed(&build::pod_disruption_budget(m)),
        Child::typed(&build::stateful_set(m, replicas)),
    ];
    if monitoring && m.spec.metrics.enabled {
        out.push(Child::dynamic(monitoring::service_monitor_resource(), monitoring::service_monitor(m)));
        out.push(Child::dynamic(monitoring::prometheus_rule_resource(), monitoring::prometheus_rule(m)));
    }
    if m.spec.metrics.enabled && m.spec.metrics.dashboards {
        out.push(Child::typed(&monitoring::dashboards_config_map(m)));
    }
    out
}

/// The kinds whose leftovers are looked for.
fn managed_kinds(monitoring: bool) -> Vec<ApiResource> {
    let mut kinds = vec![
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<PodDisruptionBudget>(&()),
        ApiResource::erase::<StatefulSet>(&()),
    ];
    if monitoring {
        kinds.push(monitoring::service_monitor_resource());
        kinds.push(monitoring::prometheus_rule_resource());
    }
    kinds
}

/// Cluster watch filter: the generation (spec edits) and the pause annotation. Status
/// writes change neither, so they do not trigger another reconcile.
fn trigger_key(c: &Cluster) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (c.metadata.generation, model::paused(c), c.uid()).hash(&mut h);
    Some(h.finish())
}

pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let clusters: Api<Cluster> = scoped(&client, &namespace);
    let (reader, writer) = reflector::store();
    let trigger = watcher(clusters, watcher::Config::default())
        .default_backoff()
        .modify(crate::cache::slim)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(trigger_key, Default::default());
    let reporter = Reporter { controller: MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
    tokio::spawn({
        let (store, metrics) = (reader.clone(), metrics.clone());
        async move {
            let mut tick = tokio::time::interval(RESOURCES_EVERY);
            loop {
                tick.tick().await;
                report_resources(&store, &metrics);
            }
        }
    });
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        metrics,
        monitoring: Default::default(),
        store: reader.clone(),
        in_flight: AtomicI64::new(0),
    });
    let owned = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    Controller::for_stream(trigger, reader)
        .owns(scoped::<StatefulSet>(&client, &namespace), owned.clone())
        .owns(scoped::<Service>(&client, &namespace), owned.clone())
        .owns(scoped::<ConfigMap>(&client, &namespace), owned.clone())
        .owns(scoped::<PodDisruptionBudget>(&client, &namespace), owned.clone())
        .owns(scoped::<ServiceAccount>(&client, &namespace), owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "cluster controller");
            }
        })
        .await;
}

fn scoped<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn error_policy(c: Arc<Cluster>, e: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %c.name_any(), error = %e, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

#[tracing::instrument(skip_all, fields(cluster = %c.name_any(), ns = c.namespace().unwrap_or_default()))]
async fn reconcile(c: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.set_queue_depth(CONTROLLER, ctx.in_flight.fetch_add(1, Ordering::SeqCst) + 1);
    let result = reconcile_inner(&c, &ctx).await;
    let (outcome, error) = match &result {
        Ok(a) if *a == Action::requeue(FAST) => ("requeue", None),
        Ok(_) => ("ok", None),
        Err(e) => ("error", Some((e.step(), e.cause()))),
    };
    if let Err(e) = &result {
        report_failure(&c, &ctx, e).await;
    }
    ctx.metrics.reconciled(CONTROLLER, outcome, error.as_ref().map(|(s, r)| (*s, r.as_str())), started.elapsed());
    ctx.metrics.set_queue_depth(CONTROLLER, ctx.in_flight.fetch_sub(1, Ordering::SeqCst) - 1);
    report_resources(&ctx.store, &ctx.metrics);
    result
}

/// A failed reconcile: a Warning Event and `Degraded=True`, both with the step's reason
/// (e.g. `ApplyFailed`) and the error as message. The next successful reconcile computes
/// Degraded anew. Best effort: a status write that fails too (the API being down) is only
/// logged, and the error policy retries.
async fn report_failure(c: &Cluster, ctx: &Context, e: &Error) {
    let message = e.to_string();
    event(ctx, c, EventType::Warning, e.reason(), message.clone()).await;
    let new = status::failed(c.status.as_ref(), c.metadata.generation, e.reason(), &message, &now());
    if let Err(w) = write_status(ctx, c, new).await {
        tracing::debug!(error = %w, "failure not recorded in status");
    }
}

/// Clusters by their Ready condition, from the controller's cache.
fn report_resources(store: &Store<Cluster>, metrics: &Metrics) {
    let clusters = store.state();
    let names: Vec<String> = clusters.iter().map(|c| c.name_any()).collect();
    let ready = clusters.iter().map(|c| crate::metrics::readiness(c.status.as_ref().map_or(&[], |s| &s.conditions)));
    metrics.set_resources("Cluster", names.iter().map(String::as_str).zip(ready));
}

async fn event(ctx: &Context, c: &Cluster, type_: EventType, reason: &str, note: String) {
    let ev = Event { type_, reason: reason.into(), note: Some(note), action: reason.into(), secondary: None };
    if let Err(e) = ctx.recorder.publish(&ev, &c.object_ref(&())).await {
        tracing::debug!(error = %e, "event not recorded");
    }
}

/// Write the status with server-side apply (fields no longer set are removed), only when
/// it changed.
async fn write_status(ctx: &Context, c: &Cluster, new: ClusterStatus) -> Result<(), Error> {
    if c.status.as_ref() == Some(&new) {
        return Ok(());
    }
    let api: Api<Cluster> = Api::namespaced(ctx.client.clone(), &c.namespace().unwrap_or_default());
    let body = serde_json::json!({"apiVersion": "fjord.dev/v1alpha1", "kind": "Cluster", "status": new});
    api.patch_status(&c.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(Error::Status)?;
    ctx.metrics.api_write(CONTROLLER, "Cluster/status");
    Ok(())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

async fn reconcile_inner(c: &Cluster, ctx: &Context) -> Result<Action, Error> {
    let old = c.status.as_ref();
    if model::paused(c) {
        write_status(ctx, c, status::paused(old, c.metadata.generation, &now())).await?;
        return Ok(Action::await_change());
    }
    // 2. validate (before fetching: an invalid spec needs nothing from the API).
    let m = match model::validate(c) {
        Ok(m) => m,
        Err(e) => {
            event(ctx, c, EventType::Warning, "ConfigInvalid", e.0.clone()).await;
            write_status(ctx, c, status::invalid(old, c.metadata.generation, &e.0, &now())).await?;
            return Ok(Action::await_change());
        }
    };
    // 1. fetch
    let f = fetch::fetch(&ctx.client, &ctx.monitoring, &m).await.map_err(Error::Fetch)?;
    let sts_replicas = f.sts.as_ref().and_then(|s| s.spec.as_ref()?.replicas);

    // 6b. scale (decided first: a blocked scale-down keeps the old replica count)
    let to_remove = m.replicas..sts_replicas.unwrap_or(0);
    let partitions =
        if to_remove.is_empty() { Default::default() } else { fetch::partitions(&f.pods, to_remove).await };
    let (replicas, scale_blocked) = match scale::decide(m.replicas, sts_replicas, m.voters(), &partitions) {
        scale::Scale::To(n) => (n, None),
        scale::Scale::Blocked { keep, message } => {
            // Once per new reason: the status keeps saying it while the block lasts.
            let said = old.and_then(|o| o.conditions.iter().find(|x| x.type_ == fjord_crds::condition::DEGRADED));
            if said.is_none_or(|d| d.reason != "ScaleDownBlocked" || d.message != message) {
                event(ctx, c, EventType::Warning, "ScaleDownBlocked", message.clone()).await;
            }
            (keep, Some(message))
        }
    };

    // 3. build, 4. apply, 5. prune; the external Services first, for their addresses, and
    // no broker starts before its load balancer address is known.
    let external = external_children(&m, replicas);
    for child in &external {
        apply::apply(&ctx.client, &ctx.metrics, &m.namespace, child).await.map_err(|e| apply_error(child, e))?;
    }
    let addresses = if external.is_empty() {
        Default::default()
    } else {
        fetch::external_addresses(&ctx.client, &m, replicas).await.map_err(Error::Fetch)?
    };
    let external::Startable { replicas, waiting } = external::startable(&m, replicas, sts_replicas, &addresses);
    let mut wanted = children(&m, replicas, f.monitoring, &addresses);
    let mut sts_written = false;
    for child in &wanted {
        let wrote =
            apply::apply(&ctx.client, &ctx.metrics, &m.namespace, child).await.map_err(|e| apply_error(child, e))?;
        sts_written |= wrote && child.ar.kind == "StatefulSet";
    }
    wanted.extend(external);
    let pruned = apply::prune(&ctx.client, &ctx.metrics, &m, &managed_kinds(f.monitoring), &wanted)
        .await
        .map_err(Error::Prune)?;
    for gone in pruned {
        event(ctx, c, EventType::Normal, "Deleted", format!("deleted {gone}: the spec no longer asks for it")).await;
    }

    // 6a. roll: only against a StatefulSet whose status reflects its current template.
    let sts_status = f.sts.as_ref().and_then(|s| s.status.clone());
    let sts_current = !sts_written
        && f.sts
            .as_ref()
            .is_some_and(|s| sts_status.as_ref().and_then(|st| st.observed_generation) >= s.metadata.generation);
    let update_revision = sts_status.as_ref().and_then(|s| s.update_revision.clone());
    let pods: Vec<_> = f.pods.iter().filter(|p| p.ordinal < replicas).cloned().collect();
    // Not while brokers wait for load balancer addresses: a broker restarted onto a template
    // that advertises its address would not start without it (e.g. NodePort -> LoadBalancer).
    let (roll, pending) = match update_revision.as_deref().filter(|_| sts_current && waiting.is_none()) {
        Some(rev) => roll_step(ctx, c, &pods, replicas, rev, &m).await?,
        None => (None, old.map(|o| o.pending_restarts.clone()).unwrap_or_default()),
    };

    // 7. status
    let health = fetch::health(&pods).await;
    let ready_ips: Vec<String> = pods
        .iter()
        .filter(|p| p.ready && !p.terminating)
        .filter_map(|p| Some(format!("{}:{}", p.ip.as_ref()?, m.internal_port)))
        .collect();
    let facts = status::Facts {
        generation: c.metadata.generation,
        replicas: m.replicas,
        sts_replicas: replicas,
        pods: pods.clone(),
        update_revision,
        roll: roll.clone(),
        scale_blocked,
        waiting,
        health,
        bootstrap: Some(m.bootstrap()),
        pod_ip_bootstrap: (!ready_ips.is_empty()).then(|| ready_ips.join(",")),
        external_bootstrap: external::bootstrap(&m, &pods, &addresses),
        cluster_id: (!ready_ips.is_empty()).then(|| m.cluster_id.clone()),
        voters: m.voter_ids.clone(),
        config_hash: Some(m.config_hash.clone()),
        pending_restarts: pending,
    };
    let new = status::compute(old, &facts, &now());
    // Poll fast while pods move; a cluster that is merely degraded (a partition short of
    // replicas) is re-read at the slow pace.
    let moving = new
        .conditions
        .iter()
        .any(|x| (x.type_ == "Ready" && x.status != "True") || (x.type_ == "Progressing" && x.status == "True"));
    write_status(ctx, c, new).await?;
    Ok(Action::requeue(if moving || roll.is_some() || sts_written { FAST } else { SLOW }))
}

fn apply_error(child: &Child, source: kube::Error) -> Error {
    Error::Apply { child: format!("{}/{}", child.ar.kind, child.name()), source }
}

/// One step of the rolling restart. Returns the decision (None when nothing is to roll)
/// and the node ids still to restart.
async fn roll_step(
    ctx: &Context,
    c: &Cluster,
    pods: &[roll::PodInfo],
    replicas: i32,
    rev: &str,
    m: &Model,
) -> Result<(Option<Decision>, Vec<i32>), Error> {
    let order = roll::restart_order(pods, rev, m.voters());
    let pending: Vec<i32> = order.iter().map(|p| p.ordinal).collect();
    if order.is_empty() {
        return Ok((None, pending));
    }
    if c.status.as_ref().is_none_or(|s| s.pending_restarts.is_empty()) {
        event(
            ctx,
            c,
            EventType::Normal,
            "RollStarted",
            format!("restarting {} brokers onto the new configuration", order.len()),
        )
        .await;
    }
    // Ask the broker that would go next, and only when every pod is ready (else the
    // decision is to wait anyway).
    let all_ready = pods.len() as i32 >= replicas && pods.iter().all(|p| p.ready && !p.terminating);
    let safety = match order[0].ip.as_deref() {
        Some(ip) if all_ready => match brokers::get(ip, "/restart-safe").await {
            Ok(reply) => roll::classify(reply.code, &reply.body),
            Err(e) => Safety::Unsafe(e.to_string()),
        },
        _ => Safety::Unsafe("no answer".into()),
    };
    let decision = roll::next_pod_to_restart(pods, replicas, rev, m.voters(), |_| safety.clone());
    if let Decision::Restart { pod, note } = &decision {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &m.namespace);
        api.delete(&pod.name, &DeleteParams::default()).await.map_err(Error::Roll)?;
        ctx.metrics.api_write(CONTROLLER, "Pod");
        let mut msg = format!("restarted {} (broker {}) onto revision {rev}", pod.name, pod.ordinal);
        if let Some(n) = note {
            msg.push_str(&format!("; {n}"));
        }
        tracing::info!("{msg}");
        event(ctx, c, EventType::Normal, "PodRestarted", msg).await;
    }
    Ok((Some(decision), pending))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn children_in_apply_order_with_monitoring_only_when_present() {
        let mut spec =
            json!({"image": "i", "replicas": 3, "storage": {"size": "1Gi"}, "metrics": {"dashboards": true}});
        let m = model::validate(&model::test_cluster(spec.clone())).unwrap();
        let kinds = |v: Vec<Child>| v.iter().map(|c| format!("{}/{}", c.ar.kind, c.name())).collect::<Vec<_>>();
        assert_eq!(
            kinds(children(&m, 3, true, &Default::default())),
            [
                "ServiceAccount/events",
                "ConfigMap/events-config",
                "Service/events-brokers",
                "Service/events-bootstrap",
                "PodDisruptionBudget/events",
                "StatefulSet/events",
                "ServiceMonitor/events",
                "PrometheusRule/events",
                "ConfigMap/events-dashboards",
            ]
        );
        assert_eq!(children(&m, 3, false, &Default::default()).len(), 7);
        assert!(external_children(&m, 3).is_empty());
        spec["metrics"] = json!({"enabled": false, "dashboards": true});
        let m = model::validate(&model::test_cluster(spec)).unwrap();
        assert_eq!(
            children(&m, 3, true, &Default::default()).len(),
            6,
            "metrics off: no monitoring objects (pruned if they exist)"
        );
    }

    fn api_error(reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(serde_json::from_value(json!({"code": 409, "reason": reason})).unwrap()))
    }

    #[test]
    fn every_step_has_its_own_reason_and_label_and_keeps_its_cause() {
        let child = Child::typed(&build::service_account(
            &model::validate(&model::test_cluster(json!({"image": "i", "replicas": 1, "storage": {"size": "1Gi"}})))
                .unwrap(),
        ));
        let cases = [
            (Error::Fetch(api_error("Forbidden")), "fetch", "FetchFailed"),
            (apply_error(&child, api_error("Conflict")), "apply", "ApplyFailed"),
            (Error::Prune(api_error("NotFound")), "prune", "PruneFailed"),
            (Error::Roll(api_error("NotFound")), "roll", "RollFailed"),
            (Error::Status(api_error("Invalid")), "status", "StatusFailed"),
        ];
        for (e, step, reason) in &cases {
            assert_eq!((e.step(), e.reason()), (*step, *reason), "{e}");
            assert!(e.to_string().starts_with(step), "the message names the step: {e}");
            assert!(std::error::Error::source(e).is_some(), "the cause is kept: {e}");
        }
        let reasons: std::collections::BTreeSet<_> = cases.iter().map(|c| c.0.reason()).collect();
        assert_eq!(reasons.len(), cases.len());
        assert!(cases[1].0.to_string().starts_with("apply ServiceAccount/events: "), "{}", cases[1].0);
        // The metric's reason label is the cause's kind, as before the step was known.
        assert_eq!(cases[1].0.cause(), "Conflict");
        assert_eq!(Error::Fetch(kube::Error::LinesCodecMaxLineLengthExceeded).cause(), "KubeClient");
    }

    #[test]
    fn status_writes_do_not_trigger() {
        let c = model::test_cluster(json!({"image": "i", "replicas": 1, "storage": {"size": "1Gi"}}));
        let mut d = c.clone();
        d.status = Some(ClusterStatus { ready_brokers: 1, ..Default::default() });
        assert_eq!(trigger_key(&c), trigger_key(&d));
        d.annotations_mut().insert(model::PAUSED_ANNOTATION.into(), "true".into());
        assert_ne!(trigger_key(&c), trigger_key(&d));
        let mut e = c.clone();
        e.metadata.generation = Some(2);
        assert_ne!(trigger_key(&c), trigger_key(&e));
    }
}
