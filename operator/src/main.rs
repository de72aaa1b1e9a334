//! `fjord-operator`: runs the Cluster and Topic controllers, and serves `/health`, `/ready`
//! and `/metrics`. `--print cluster.yaml` renders the objects a Cluster becomes, without a
//! Kubernetes API (for reviews and for checking the pod contract).

mod cache;
mod cluster;
mod http;
mod kafka;
mod metrics;
mod telemetry;
mod topic;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use fjord_crds::Cluster;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Fjord Kubernetes operator: Cluster and Topic resources become brokers, Services and topics"
)]
struct Args {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "FJORD_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /health, /ready and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// OTLP/HTTP collector base URL (e.g. http://otel-collector:4318); traces are exported
    /// when set.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    log_format: telemetry::LogFormat,
    /// Apply the CRDs at start (the Helm chart installs them; this is for running without it).
    #[arg(long)]
    install_crds: bool,
    /// How often each Topic is compared with Kafka when nothing changed (`500ms`, `30s`,
    /// `5m`, `1h`; a bare number is seconds).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drift_check_interval: Duration,
    /// Print the objects the Cluster in this YAML file becomes, as YAML, and exit.
    #[arg(long, value_name = "CLUSTER_YAML")]
    print: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.print {
        print!("{}", render(&std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?)?);
        return Ok(());
    }
    let telemetry = telemetry::init(args.log_format, args.otlp_endpoint.as_deref())?;
    let client =
        Client::try_default().await.context("no Kubernetes client configuration (in-cluster or kubeconfig)")?;
    if args.install_crds {
        install_crds(&client).await?;
    }

    let metrics = metrics::Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let listener =
        tokio::net::TcpListener::bind(args.http_addr).await.with_context(|| format!("binding {}", args.http_addr))?;
    let app = http::router(http::AppState { metrics: metrics.clone(), ready: ready.clone() });
    let server =
        tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx.clone())).into_future());

    let clusters =
        tokio::spawn(cluster::run(client.clone(), metrics.clone(), args.namespace.clone(), stopped(stop_rx.clone())));
    let topic_opts = topic::Options { namespace: args.namespace.clone(), drift_interval: args.drift_check_interval };
    let topics = tokio::spawn(topic::run(client.clone(), metrics.clone(), topic_opts));
    tokio::spawn(mark_ready(client.clone(), args.namespace.clone(), ready.clone()));
    tracing::info!(namespace = args.namespace.as_deref().unwrap_or("(all)"), http = %args.http_addr, "fjord-operator started");

    shutdown_signal().await;
    tracing::info!("shutting down");
    ready.store(false, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    // The Cluster controller finishes the reconciles under way; the Topic controller has
    // no graceful hook and its writes are idempotent, so it is stopped.
    topics.abort();
    let _ = tokio::time::timeout(Duration::from_secs(20), clusters).await;
    let _ = server.await;
    telemetry.shutdown().await;
    Ok(())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 30s"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Ready once the Cluster CRD answers (the controllers retry their watches until then).
async fn mark_ready(client: Client, namespace: Option<String>, ready: Arc<AtomicBool>) {
    let api: Api<Cluster> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => {
                ready.store(true, Ordering::SeqCst);
                tracing::info!("Cluster CRD found: ready");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "Cluster CRD not available yet"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Server-side apply the CRDs exactly as `crdgen` writes them, then wait until established.
async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for fjord_crds::CrdFile { crd, .. } in fjord_crds::crds() {
        let name = crd.name_any();
        api.patch(&name, &PatchParams::apply(cluster::model::MANAGER).force(), &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} not established after 30 s"))??;
        tracing::info!(crd = %name, "CRD installed");
    }
    Ok(())
}

/// The objects a Cluster manifest becomes, as multi-document YAML. Fields only the API
/// server sets (namespace, uid) get placeholders when the file lacks them.
fn render(yaml: &str) -> anyhow::Result<String> {
    let mut c: Cluster = serde_saphyr::from_str(yaml).context("parsing the Cluster")?;
    c.metadata.namespace.get_or_insert_with(|| "default".into());
    c.metadata.uid.get_or_insert_with(|| "00000000-0000-4000-8000-000000000000".into());
    let m = cluster::model::validate(&c).map_err(|e| anyhow::anyhow!("invalid Cluster: {e}"))?;
    let mut out = String::new();
    // Node ports and load balancer addresses Kubernetes would assign are unknown here: only
    // `nodePortBase` ones show, read back from the Services as the reconcile does.
    let services = cluster::external::services(&m, m.replicas);
    let addresses = cluster::external::addresses(&m, m.replicas, &services);
    let external = cluster::external_children(&m, m.replicas);
    for child in external.into_iter().chain(cluster::children(&m, m.replicas, true, &addresses)) {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&child.obj)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn args_parse() {
        use clap::Parser;
        let a = super::Args::try_parse_from(["fjord-operator", "--namespace", "x", "--log-format", "json"]).unwrap();
        assert_eq!(a.namespace.as_deref(), Some("x"));
        assert_eq!(a.http_addr.port(), 8080);
        assert_eq!(a.drift_check_interval, std::time::Duration::from_secs(30));
        let a = super::Args::try_parse_from(["fjord-operator", "--drift-check-interval=2s"]).unwrap();
        assert_eq!(a.drift_check_interval, std::time::Duration::from_secs(2));
        assert_eq!(super::parse_duration("1m"), Ok(std::time::Duration::from_secs(60)));
        assert_eq!(super::parse_duration("250ms"), Ok(std::time::Duration::from_millis(250)));
        assert!(super::parse_duration("soon").is_err());
    }

    #[test]
    fn renders_the_example_cluster() {
        let yaml = include_str!("../../crds/examples/cluster.yaml");
        let out = super::render(yaml).unwrap();
        assert!(out.contains("kind: StatefulSet"), "{out}");
        assert!(out.contains("fjord.dev/spec-hash"));
    }
}
