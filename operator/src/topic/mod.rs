//! The Topic controller: keeps a Kafka topic in line with its `Topic` resource.
//!
//! Triggers are spec changes (the generation), the pause annotation, finalizers and
//! deletion, never status writes; every reconcile requeues after `drift_interval`, which is
//! how changes made in Kafka behind the operator's back are found and reverted.

mod logic;
mod reconcile;

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fjord_crds::{Cluster, Topic};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};

use crate::kafka::AdminPool;
use crate::metrics::Metrics;

/// Finalizer that makes deleting a Topic delete (or release) its Kafka topic first.
pub const FINALIZER: &str = "fjord.dev/topic";
const CONTROLLER: &str = "topic";
/// Bounds every Kafka admin request.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Options {
    /// Watch this namespace only; all namespaces when None.
    pub namespace: Option<String>,
    /// How often each Topic is compared with Kafka even when nothing changed.
    pub drift_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { namespace: None, drift_interval: Duration::from_secs(30) }
    }
}

pub(crate) struct Ctx {
    client: Client,
    metrics: Arc<Metrics>,
    opts: Options,
    pool: AdminPool,
    clusters: Store<Cluster>,
    pods: Store<Pod>,
    recorder: Recorder,
    /// Per cluster, the last consumer-group offsets and partition sizes read: shared by
    /// all its topics so that status numbers cost a few requests per interval, not per topic.
    stats: Mutex<HashMap<(String, String), reconcile::StatsSlot>>,
    in_flight: AtomicI64,
    /// (namespace, cluster, topic) created by this process, in case recording `managed` in
    /// status failed after the create.
    created: Mutex<HashSet<(String, String, String)>>,
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// What may trigger a reconcile: spec (generation), pause, finalizers and deletion. Status
/// and other metadata writes do not.
fn trigger_hash(t: &Topic) -> Option<u64> {
    let mut h = DefaultHasher::new();
    t.metadata.generation.hash(&mut h);
    logic::is_paused(t).hash(&mut h);
    t.finalizers().hash(&mut h);
    t.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// A reflector store kept up to date by a background task.
fn store<K>(api: Api<K>, cfg: watcher::Config) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, cfg).default_backoff().modify(crate::cache::slim).reflect(writer).applied_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(r) = stream.next().await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "watch error");
            }
        }
    });
    reader
}

/// Run the Topic controller until the process stops.
pub async fn run(client: Client, metrics: Arc<Metrics>, opts: Options) {
    let clusters = store(api::<Cluster>(&client, &opts.namespace), watcher::Config::default());
    let pods =
        store(api::<Pod>(&client, &opts.namespace), watcher::Config::default().labels("app.kubernetes.io/name=fjord"));
    let _ = clusters.wait_until_ready().await;
    let _ = pods.wait_until_ready().await;

    let hook_metrics = metrics.clone();
    let pool = AdminPool::new(ADMIN_TIMEOUT, Arc::new(move |api| hook_metrics.admin_write(CONTROLLER, api)));
    let reporter = Reporter { controller: "fjord-operator".into(), instance: std::env::var("POD_NAME").ok() };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        metrics: metrics.clone(),
        opts: opts.clone(),
        pool,
        clusters,
        pods,
        recorder,
        stats: Mutex::new(HashMap::new()),
        in_flight: AtomicI64::new(0),
        created: Mutex::new(HashSet::new()),
    });

    let (reader, writer) = reflector::store();
    let topics = watcher(api::<Topic>(&client, &opts.namespace), watcher::Config::default())
        .default_backoff()
        .modify(crate::cache::slim)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(trigger_hash, Default::default());
    tokio::spawn(count_resources(reader.clone(), metrics.clone(), opts.drift_interval));

    Controller::for_stream(topics, reader)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "topic reconcile failed");
            }
        })
        .await;
}

/// Publish Ready counts of all Topics, by the Cluster they are on, every interval.
async fn count_resources(store: Store<Topic>, metrics: Arc<Metrics>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    loop {
        tick.tick().await;
        let topics = store.state();
        metrics.set_resources(
            "Topic",
            topics.iter().map(|t| {
                (t.spec.cluster.as_str(), crate::metrics::readiness(t.status.as_ref().map_or(&[], |s| &s.conditions)))
            }),
        );
    }
}

impl Ctx {
    /// Reconciles under way; the closest thing to a queue depth the controller exposes.
    fn enter(&self) -> Instant {
        let n = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.set_queue_depth(CONTROLLER, n);
        Instant::now()
    }

    fn leave(&self) {
        let n = self.in_flight.fetch_sub(1, Ordering::Relaxed) - 1;
        self.metrics.set_queue_depth(CONTROLLER, n);
    }

    fn requeue(&self) -> Action {
        Action::requeue(self.opts.drift_interval)
    }

    /// Retry soon after a transient problem (cluster not ready, broker error).
    fn retry(&self) -> Action {
        Action::requeue(self.opts.drift_interval.min(Duration::from_secs(5)))
    }
}
