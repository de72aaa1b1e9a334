//! `fjord`: a Kafka-compatible event streaming broker.
//!
//! - `fjord broker --config server.properties --override key=value ...`
//! - `fjord dev`: a ready-to-use local cluster with its data in `./.fjord-dev`.

mod alloc;
mod api;
mod broker;
mod client;
mod clock;
mod config;
mod connection;
mod controller;
mod dev;
mod error;
mod group;
mod http;
mod internal_log;
mod log_cleaner;
mod metadata;
mod metrics;
mod node_state;
mod partition;
mod producer_ids;
mod producer_state;
mod quorum;
mod replica_manager;
mod replication;
mod sasl;
mod server;
mod storage;
mod telemetry;
mod throttle;
mod tls;
mod topic_admin;
mod topic_config;
mod txn;

use std::path::PathBuf;

use anyhow::{Context, Result};

#[global_allocator]
static GLOBAL: alloc::Allocator = alloc::Allocator;
use clap::{Parser, Subcommand};
use config::Property;

#[derive(Parser)]
#[command(name = "fjord", version, about = "Fjord: a Kafka-compatible event streaming platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one broker from Kafka's server.properties keys.
    Broker {
        /// A server.properties file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// key=value, applied after the file; may be repeated.
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Start a local development cluster and print how to reach it.
    Dev {
        /// How many nodes (each a broker and a controller).
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Where the cluster keeps its data.
        #[arg(long, default_value = ".fjord-dev")]
        dir: PathBuf,
        /// Kafka listener port of node 1 (node i listens on port+i-1, its controller on
        /// port+100+i-1).
        #[arg(long, default_value_t = 9092)]
        port: u16,
        /// HTTP port of node 1 for /metrics, /health, /ready (node i: http_port+i-1).
        #[arg(long, default_value_t = 9644)]
        http_port: u16,
        /// Extra key=value broker settings.
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

fn parse_override(s: &str) -> Result<Property> {
    let (k, v) = s.split_once('=').with_context(|| format!("--override {s:?}: expected key=value"))?;
    Ok(Property::new(k.trim(), v.trim()))
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("fjord: error: {e:#}");
        std::process::exit(1);
    }
}

/// Every partition keeps its segment files open, so a broker with thousands of partitions
/// needs more descriptors than the usual soft limit of 1024: raise it to the hard limit.
fn raise_fd_limit() {
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("could not raise the open-file limit");
            }
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    raise_fd_limit();
    let (pairs, dev) = match cli.command {
        Command::Broker { config, overrides } => {
            let mut pairs = match config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    config::parse_properties(&text).with_context(|| format!("parsing {}", path.display()))?
                }
                None => Vec::new(),
            };
            for o in overrides {
                pairs.push(parse_override(&o)?);
            }
            (config::resolve_file_refs(pairs)?, false)
        }
        Command::Dev { nodes, dir, port, http_port, overrides } if nodes > 1 => {
            let _telemetry = telemetry::init(None, 0.0, 0)?;
            let extra: Vec<Property> = overrides.iter().map(|o| parse_override(o)).collect::<Result<_>>()?;
            let cluster = dev::DevCluster::start(&dir, nodes, port, http_port, &extra)?;
            let bootstrap: Vec<String> = (0..nodes).map(|i| format!("127.0.0.1:{}", port + i as u16)).collect();
            println!("Fjord dev cluster is ready ({nodes} nodes).");
            println!("  bootstrap servers: {}", bootstrap.join(","));
            let metrics: Vec<String> =
                (0..nodes).map(|i| format!("http://127.0.0.1:{}/metrics", http_port + i as u16)).collect();
            println!("  metrics:           {}", metrics.join(" "));
            println!("  data and logs:     {}", dir.display());
            println!("Try: kcat -b {} -L     (Ctrl-C stops the cluster)", bootstrap[0]);
            use std::io::Write;
            let _ = std::io::stdout().flush();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s = stop.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                rt.block_on(async {
                    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                });
                s.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            cluster.supervise(&stop);
            return Ok(());
        }
        Command::Dev { dir, port, http_port, overrides, .. } => {
            let data = dir.join("node-1");
            let mut pairs = vec![
                Property::new("node.id", "1"),
                Property::new("listeners", format!("PLAINTEXT://127.0.0.1:{port}")),
                Property::new("log.dirs", data.display().to_string()),
                Property::new("fjord.http.listen", format!("127.0.0.1:{http_port}")),
                Property::new("offsets.topic.replication.factor", "1"),
                Property::new("group.initial.rebalance.delay.ms", "0"),
            ];
            for o in overrides {
                pairs.push(parse_override(&o)?);
            }
            (pairs, true)
        }
    };
    let cfg = config::BrokerConfig::from_properties(&pairs)?;
    let _telemetry = telemetry::init(cfg.otlp_endpoint.as_deref(), cfg.trace_sample_ratio, cfg.node_id)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let running = server::start(cfg).await?;
        if dev {
            let addr = running.kafka_addrs[0];
            println!("Fjord dev cluster is ready (1 node).");
            println!("  bootstrap servers: {addr}");
            if let Some(h) = running.http_addr {
                println!("  metrics:           http://{h}/metrics");
            }
            println!("  data:              {}", running.broker.config.data_dir().display());
            println!("Try: kcat -b {addr} -L     (Ctrl-C stops the cluster)");
        }
        server::wait_for_shutdown(&running.broker).await;
        Ok(())
    })
}
