//! `fjord dev`: a local cluster for development. Three nodes by default, each a child
//! `fjord broker` process (so one can be killed to watch a failover), every node both
//! broker and controller, replication factor 3 and min ISR 2 as a production cluster
//! would have. `--nodes 1` runs a single node in this process instead.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config::Property;

pub struct DevCluster {
    children: Vec<(u32, Child)>,
}

/// The `--override` pairs of node `i` (1-based) of an `n`-node dev cluster.
pub fn node_overrides(dir: &Path, n: u32, i: u32, port: u16, http_port: u16) -> Vec<Property> {
    let kafka = port + (i - 1) as u16;
    let controller = |j: u32| port + 100 + (j - 1) as u16;
    let voters: Vec<String> = (1..=n).map(|j| format!("{j}@127.0.0.1:{}", controller(j))).collect();
    let rf = n.min(3).to_string();
    let min_isr = if n >= 3 { "2" } else { "1" };
    vec![
        Property::new("node.id", i.to_string()),
        Property::new("process.roles", "broker,controller"),
        Property::new("controller.quorum.voters", voters.join(",")),
        Property::new("controller.listener.names", "CONTROLLER"),
        Property::new("listeners", format!("PLAINTEXT://127.0.0.1:{kafka},CONTROLLER://127.0.0.1:{}", controller(i))),
        Property::new("log.dirs", dir.join(format!("node-{i}")).display().to_string()),
        Property::new("fjord.http.listen", format!("127.0.0.1:{}", http_port + (i - 1) as u16)),
        Property::new("default.replication.factor", rf.clone()),
        Property::new("offsets.topic.replication.factor", rf),
        Property::new("min.insync.replicas", min_isr),
        Property::new("group.initial.rebalance.delay.ms", "0"),
    ]
}

/// GET `path` on `addr`; the status code, or None when nothing answers.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.split_whitespace().nth(1)?.parse().ok()
}

impl DevCluster {
    /// Start the nodes and wait until every one is ready.
    pub fn start(dir: &Path, n: u32, port: u16, http_port: u16, extra: &[Property]) -> Result<DevCluster> {
        let exe = std::env::current_exe().context("locating the fjord binary")?;
        std::fs::create_dir_all(dir)?;
        let mut cluster = DevCluster { children: Vec::new() };
        for i in 1..=n {
            let mut cmd = Command::new(&exe);
            cmd.arg("broker");
            for p in node_overrides(dir, n, i, port, http_port).into_iter().chain(extra.iter().cloned()) {
                cmd.arg("--override").arg(format!("{}={}", p.key, p.value));
            }
            let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("node-{i}.log")))?;
            cmd.stdout(Stdio::from(log.try_clone()?)).stderr(Stdio::from(log)).stdin(Stdio::null());
            let child = cmd.spawn().with_context(|| format!("starting node {i}"))?;
            cluster.children.push((i, child));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 1..=n {
            let addr = format!("127.0.0.1:{}", http_port + (i - 1) as u16);
            while http_status(&addr, "/ready") != Some(200) {
                if let Some((_, c)) = cluster.children.iter_mut().find(|(j, _)| *j == i) {
                    if let Some(st) = c.try_wait()? {
                        bail!("node {i} exited ({st}); see {}", dir.join(format!("node-{i}.log")).display());
                    }
                }
                if Instant::now() > deadline {
                    bail!("node {i} not ready within 60 s; see {}", dir.join(format!("node-{i}.log")).display());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(cluster)
    }

    /// Report nodes that exit, until asked to stop; then stop every node (SIGTERM, so each
    /// hands its leaderships over) and wait for them.
    pub fn supervise(mut self, stop: &std::sync::atomic::AtomicBool) {
        let mut reported = std::collections::HashSet::new();
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            for (i, c) in self.children.iter_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    if reported.insert(*i) {
                        eprintln!("fjord dev: node {i} exited ({st}); the others carry on");
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for (_, c) in self.children.iter() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        for (_, c) in self.children.iter_mut() {
            let _ = c.wait();
        }
    }
}
