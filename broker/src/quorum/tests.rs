//! End-to-end tests over real TCP on 127.0.0.1.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;

use super::{Handler, Machine, Quorum, QuorumConfig, QuorumError, StaleDecision};

/// Appends each command; apply returns the new length. Counts applies and restores so tests
/// can tell a snapshot restore plus tail replay from a full replay.
#[derive(Default)]
struct Toy {
    log: Mutex<Vec<Vec<u8>>>,
    applies: Mutex<u64>,
    restored_len: Mutex<Option<usize>>,
    rejected: Mutex<Vec<StaleDecision>>,
}

/// What `Toy::reject_stale` hands the writer.
const STALE: &[u8] = b"stale";

impl Machine for Toy {
    fn apply(&self, _index: u64, command: &[u8]) -> Vec<u8> {
        *self.applies.lock() += 1;
        let mut log = self.log.lock();
        log.push(command.to_vec());
        (log.len() as u64).to_be_bytes().to_vec()
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&*self.log.lock()).unwrap()
    }

    fn restore(&self, snapshot: &[u8]) -> anyhow::Result<()> {
        let log: Vec<Vec<u8>> = serde_json::from_slice(snapshot)?;
        *self.restored_len.lock() = Some(log.len());
        *self.log.lock() = log;
        Ok(())
    }

    fn reject_stale(&self, _index: u64, stale: StaleDecision) -> Vec<u8> {
        self.rejected.lock().push(stale);
        STALE.to_vec()
    }
}

impl Toy {
    fn state(&self) -> Vec<Vec<u8>> {
        self.log.lock().clone()
    }
}

struct Echo(u64);

impl Handler for Echo {
    fn handle(&self, from: u64, request: Vec<u8>) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send>> {
        let me = self.0;
        Box::pin(async move { format!("{me} got {} from {from}", String::from_utf8_lossy(&request)).into_bytes() })
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Node {
    id: u64,
    port: u16,
    dir: PathBuf,
    q: Arc<Quorum>,
    m: Arc<Toy>,
}

struct Cluster {
    voters: BTreeMap<u64, String>,
    ports: BTreeMap<u64, u16>,
    snapshot_every: u64,
    _tmp: tempfile::TempDir,
    root: PathBuf,
    nodes: BTreeMap<u64, Node>,
}

impl Cluster {
    async fn new(n: u64, snapshot_every: u64) -> Cluster {
        Self::with_started(n, snapshot_every, &(1..=n).collect::<Vec<_>>()).await
    }

    /// A cluster of `n` configured voters of which only `started` are running.
    async fn with_started(n: u64, snapshot_every: u64, started: &[u64]) -> Cluster {
        init_tracing();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let ports: BTreeMap<u64, u16> = (1..=n).map(|id| (id, free_port())).collect();
        let voters = ports.iter().map(|(id, p)| (*id, format!("127.0.0.1:{p}"))).collect();
        let mut c = Cluster { voters, ports, snapshot_every, _tmp: tmp, root, nodes: BTreeMap::new() };
        for id in started {
            c.start(*id).await;
        }
        c
    }

    async fn start(&mut self, id: u64) {
        let port = *self.ports.entry(id).or_insert_with(free_port);
        let dir = self.root.join(format!("node{id}"));
        let m = Arc::new(Toy::default());
        let q = start_node(id, &self.voters, port, &dir, self.snapshot_every, m.clone()).await;
        self.nodes.insert(id, Node { id, port, dir, q, m });
    }

    async fn stop(&mut self, id: u64) {
        let node = self.nodes.remove(&id).unwrap();
        node.q.shutdown().await;
        assert_eq!(node.q.leader(), None, "a stopped node reports no leader");
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", node.port)).await.is_err(),
            "listener of node {id} still open after shutdown"
        );
    }

    /// Wait until every running node agrees on one leader; returns it.
    async fn leader(&self, within: Duration) -> u64 {
        wait_for(within, "a common leader", || {
            let leaders: Vec<_> = self.nodes.values().map(|n| n.q.leader()).collect();
            let l = leaders[0]?;
            let ok = leaders.iter().all(|x| *x == Some(l)) && self.nodes.get(&l)?.q.is_leader();
            ok.then_some(l)
        })
        .await
    }

    /// Wait until every running node has applied the leader's state.
    async fn converged(&self, within: Duration) -> Vec<Vec<u8>> {
        wait_for(within, "identical state on all nodes", || {
            let states: Vec<_> = self.nodes.values().map(|n| n.m.state()).collect();
            states.iter().all(|s| *s == states[0]).then(|| states[0].clone())
        })
        .await
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[&id]
    }

    /// Drop every packet between `id` and the other nodes (`false`: heal).
    fn isolate(&self, id: u64, cut: bool) {
        for n in self.nodes.values().filter(|n| n.id != id) {
            let (theirs, mine) = (&self.voters[&n.id], &self.voters[&id]);
            for (pool, addr) in [(&self.node(id).q.pool, theirs), (&n.q.pool, mine)] {
                if cut {
                    pool.cut.lock().insert(addr.clone());
                } else {
                    pool.cut.lock().remove(addr);
                }
            }
        }
    }

    /// The nodes that hold a leader's lease now.
    fn leading(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.q.is_leader()).map(|n| n.id).collect()
    }

    async fn shutdown(mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.stop(id).await;
        }
    }
}

async fn start_node(
    id: u64,
    voters: &BTreeMap<u64, String>,
    port: u16,
    dir: &Path,
    snapshot_every: u64,
    m: Arc<Toy>,
) -> Arc<Quorum> {
    let cfg = QuorumConfig {
        node_id: id,
        voters: voters.clone(),
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        advertised: format!("127.0.0.1:{port}"),
        dir: dir.to_path_buf(),
        election_timeout_min_ms: 500,
        election_timeout_max_ms: 1000,
        heartbeat_interval_ms: 100,
        snapshot_every,
    };
    Quorum::start(cfg, m, Arc::new(Echo(id))).await.unwrap()
}

async fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const T: Duration = Duration::from_secs(5);

fn cmd(tag: &str, i: usize) -> Vec<u8> {
    format!("{tag}-{i}").into_bytes()
}

/// Writes `count` commands spread over `via` nodes, `par` at a time; returns Machine results.
async fn write_many(c: &Cluster, via: &[u64], tag: &str, count: usize, par: usize) -> Vec<u64> {
    let mut tasks = Vec::new();
    for w in 0..par {
        let qs: Vec<_> = via.iter().map(|id| c.node(*id).q.clone()).collect();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in (w..count).step_by(par) {
                let q = &qs[i % qs.len()];
                let r = q.write(cmd(&tag, i), T).await.unwrap();
                out.push(u64::from_be_bytes(r.try_into().unwrap()));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_replicate_writes_from_every_node() {
    let t0 = Instant::now();
    let c = Cluster::new(3, 10_000).await;
    let leader = c.leader(T).await;
    eprintln!("first leader {leader} after {:?}", t0.elapsed());

    let started = Instant::now();
    let mut results = write_many(&c, &[1, 2, 3], "w", 500, 10).await;
    eprintln!("500 writes via all nodes took {:?}", started.elapsed());
    results.sort_unstable();
    assert_eq!(results, (1..=500).collect::<Vec<_>>(), "every write applied exactly once");

    let state = c.converged(T).await;
    assert_eq!(state.len(), 500);
    let mut sorted = state.clone();
    sorted.sort();
    let mut expected: Vec<_> = (0..500).map(|i| cmd("w", i)).collect();
    expected.sort();
    assert_eq!(sorted, expected);

    let st = c.node(leader).q.status();
    assert_eq!(st.leader, Some(leader));
    assert_eq!(st.voters, vec![1, 2, 3]);
    assert!(st.learners.is_empty());
    assert_eq!(st.replication.len(), 2, "{st:?}");
    assert!(st.applied >= 500 && st.committed >= 500 && st.last_log_index >= st.committed, "{st:?}");
    for n in c.nodes.values() {
        let applied = *n.q.applied().borrow();
        assert_eq!(applied, st.applied.max(applied), "node {} applied index", n.id);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_and_old_leader_catches_up() {
    let mut c = Cluster::new(3, 10_000).await;
    let old = c.leader(T).await;
    write_many(&c, &[1, 2, 3], "before", 20, 4).await;

    let mut watches: Vec<_> = c.nodes.values().filter(|n| n.id != old).map(|n| n.q.leader_watch()).collect();
    let killed = Instant::now();
    c.stop(old).await;
    let mut new = None;
    for w in &mut watches {
        let l = tokio::time::timeout(Duration::from_secs(3), w.wait_for(|l| l.is_some_and(|l| l != old)))
            .await
            .expect("new leader visible within 3s")
            .unwrap();
        new = *l;
    }
    let new = new.unwrap();
    eprintln!("failover: node {new} leads {:?} after leader {old} stopped", killed.elapsed());
    // It holds the lease once a majority has acknowledged it, a heartbeat later at most.
    wait_for(Duration::from_millis(500), "the new leader's lease", || c.node(new).q.is_leader().then_some(())).await;

    let survivors: Vec<u64> = c.nodes.keys().copied().collect();
    write_many(&c, &survivors, "after", 30, 4).await;

    c.start(old).await;
    let state = c.converged(T).await;
    assert_eq!(state.len(), 50);
    // The restarted node serves writes again (forwarding to the new leader).
    c.node(old).q.write(b"last".to_vec(), T).await.unwrap();
    assert_eq!(c.converged(T).await.len(), 51);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_restores_state_from_snapshot_and_log_tail() {
    let mut c = Cluster::new(3, 50).await;
    c.leader(T).await;
    write_many(&c, &[1, 2, 3], "x", 130, 5).await;
    let before = c.converged(T).await;
    assert_eq!(before.len(), 130);
    // Let snapshots land (they are built asynchronously) before stopping.
    wait_for(T, "snapshots on all nodes", || c.nodes.values().all(|n| n.dir.join("snapshot").exists()).then_some(()))
        .await;

    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    for id in &ids {
        c.stop(*id).await;
    }
    for id in &ids {
        c.start(*id).await;
    }
    let after = c.converged(T).await;
    assert_eq!(after, before, "state after restart equals state before");
    for n in c.nodes.values() {
        let restored = n.m.restored_len.lock().expect("restored from a snapshot");
        let applies = *n.m.applies.lock();
        assert!(restored >= 50, "node {} snapshot covers {restored} commands", n.id);
        assert_eq!(restored as u64 + applies, 130, "node {} replayed only the tail", n.id);
        let log_bytes = std::fs::metadata(n.dir.join("raft.log")).unwrap().len();
        assert!(log_bytes < 64 << 10, "node {} log was compacted: {log_bytes} bytes", n.id);
    }
    // And the cluster keeps going.
    c.node(ids[0]).q.write(b"post".to_vec(), T).await.unwrap();
    assert_eq!(c.converged(T).await.len(), 131);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_joins_gets_state_via_snapshot_and_answers_calls() {
    let mut c = Cluster::new(3, 20).await;
    let leader = c.leader(T).await;
    write_many(&c, &[1, 2, 3], "pre", 60, 4).await;
    c.converged(T).await;

    // Id 10 is not a voter: it starts as a learner and asks to be added.
    c.start(10).await;
    let state = c.converged(T).await;
    assert_eq!(state.len(), 60);
    assert!(c.node(10).m.restored_len.lock().is_some(), "learner caught up through a snapshot");
    let st = c.node(leader).q.status();
    assert_eq!(st.learners, vec![10]);
    assert_eq!(st.voters, vec![1, 2, 3]);
    assert!(st.replication.contains_key(&10), "{st:?}");

    let r = c.node(leader).q.call(10, b"ping".to_vec(), T).await.unwrap();
    assert_eq!(r, format!("10 got ping from {leader}").into_bytes());
    let reply = c.node(10).q.call_leader(b"hb".to_vec(), T).await.unwrap();
    assert_eq!(reply.leader, leader);
    assert_eq!(reply.body, format!("{leader} got hb from 10").into_bytes());

    // A learner's writes are forwarded and it receives later entries too.
    c.node(10).q.write(b"from-learner".to_vec(), T).await.unwrap();
    assert_eq!(c.converged(T).await.len(), 61);
    assert!(matches!(c.node(1).q.call(99, vec![], T).await, Err(QuorumError::UnknownNode(99))));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_without_quorum_times_out() {
    let mut c = Cluster::new(3, 10_000).await;
    let leader = c.leader(T).await;
    c.node(leader).q.write(b"ok".to_vec(), T).await.unwrap();

    // Case 1: the leader survives alone and cannot commit.
    let followers: Vec<u64> = c.nodes.keys().copied().filter(|id| *id != leader).collect();
    for f in &followers {
        c.stop(*f).await;
    }
    let t0 = Instant::now();
    let r = c.node(leader).q.write(b"lost".to_vec(), Duration::from_secs(2)).await;
    assert!(r.is_err(), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());

    // Case 2: a follower survives alone, its leader gone.
    for f in &followers {
        c.start(*f).await;
    }
    let leader = c.leader(Duration::from_secs(8)).await;
    let survivor = *c.nodes.keys().find(|id| **id != leader).unwrap();
    for id in c.nodes.keys().copied().filter(|id| *id != survivor).collect::<Vec<_>>() {
        c.stop(id).await;
    }
    let t0 = Instant::now();
    let r = c.node(survivor).q.write(b"lost".to_vec(), Duration::from_secs(2)).await;
    assert!(r.is_err(), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
    let r = c.node(survivor).q.call_leader(b"hb".to_vec(), Duration::from_secs(1)).await;
    assert!(r.is_err(), "{r:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_of_a_deposed_leader_is_rejected() {
    let mut c = Cluster::new(3, 10_000).await;
    let old = c.leader(T).await;
    let old_term = c.node(old).q.leader_term().expect("the leader has a term");
    let other = *c.nodes.keys().find(|id| **id != old).unwrap();
    // Decided by the leader of the term that appends it: applied, even when forwarded.
    let r = c.node(other).q.write_decided(b"fresh".to_vec(), old_term, T).await.unwrap();
    assert_eq!(r, 1u64.to_be_bytes().to_vec());

    c.stop(old).await;
    let new = c.leader(T).await;
    let new_term = c.node(new).q.leader_term().unwrap();
    assert!(new_term > old_term, "{new_term} > {old_term}");
    // The deposed leader's decision, replayed through a node that is not the leader now.
    let via = *c.nodes.keys().find(|id| **id != new).unwrap();
    let r = c.node(via).q.write_decided(b"fence".to_vec(), old_term, T).await.unwrap();
    assert_eq!(r, STALE, "a decision of term {old_term} appended in term {new_term}");
    let r = c.node(via).q.write_decided(b"fence".to_vec(), new_term, T).await.unwrap();
    assert_eq!(r, 2u64.to_be_bytes().to_vec(), "the same decision of the current term is applied");

    c.start(old).await;
    let state = c.converged(T).await;
    assert_eq!(state, vec![b"fresh".to_vec(), b"fence".to_vec()]);
    let want = StaleDecision { decided_term: old_term, entry_term: new_term };
    for n in c.nodes.values() {
        let rejected =
            wait_for(T, "the rejection applied", || Some(n.m.rejected.lock().clone()).filter(|r| !r.is_empty())).await;
        assert_eq!(rejected, vec![want], "node {}", n.id);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_voters_stops_leading_and_its_decision_is_rejected() {
    let c = Cluster::new(3, 10_000).await;
    let old = c.leader(T).await;
    let old_term = c.node(old).q.leader_term().unwrap();
    c.node(old).q.write(b"before".to_vec(), T).await.unwrap();

    let cut = Instant::now();
    c.isolate(old, true);
    // It decides in its term just as the cut begins (a fence, say); the write waits
    // for a majority it cannot reach.
    let q = c.node(old).q.clone();
    let decided =
        tokio::spawn(async move { q.write_decided(b"fence".to_vec(), old_term, Duration::from_secs(20)).await });

    let stepped = wait_for(T, "the cut-off leader to stop leading", || {
        let q = &c.node(old).q;
        (!q.is_leader() && q.leader() != Some(old) && q.leader_term().is_none()).then(|| cut.elapsed())
    })
    .await;
    let new = wait_for(T, "a new leader on the majority side", || {
        let l = c.leading();
        (l.len() == 1 && l[0] != old).then(|| l[0])
    })
    .await;
    eprintln!("old leader {old} stopped leading {stepped:?} after the cut; {new} leads after {:?}", cut.elapsed());
    assert!(stepped <= Duration::from_millis(2000), "within two election timeouts: {stepped:?}");
    // Two election timeouts after the cut, exactly one node leads, for as long as it lasts.
    tokio::time::sleep(Duration::from_millis(2000).saturating_sub(cut.elapsed())).await;
    for _ in 0..40 {
        assert_eq!(c.leading(), vec![new], "exactly one leader during the cut");
        assert_eq!(c.node(old).q.leader(), None, "the cut-off node names no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The cut-off node asked for votes in vain (pre-vote) and did not raise its term, so
    // rejoining does not depose the new leader.
    let term = c.node(new).q.leader_term().unwrap();
    assert!(c.node(old).q.status().term <= term, "{:?} vs term {term}", c.node(old).q.status());
    c.isolate(old, false);
    for _ in 0..40 {
        assert_eq!(c.leading(), vec![new], "the leader keeps its lease across the heal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.node(new).q.leader_term(), Some(term), "no election after the heal");
    let r = decided.await.unwrap().unwrap();
    assert_eq!(r, STALE, "the decision of term {old_term} reached the log only under a later leader");
    let state = c.converged(T).await;
    assert_eq!(state, vec![b"before".to_vec()], "the stale decision changed no state");
    assert_eq!(c.leader(T).await, new, "the healed node follows the new leader");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_wire_and_a_torn_log_tail_are_survived() {
    let mut c = Cluster::new(1, 10_000).await;
    c.leader(T).await;
    c.node(1).q.write(b"a".to_vec(), T).await.unwrap();
    let addr = format!("127.0.0.1:{}", c.node(1).port);

    let mut bad: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xff; 64],                                 // 4 GiB length prefix
        [&5u32.to_be_bytes()[..], b"{oops"].concat(),   // not JSON
        [&2u32.to_be_bytes()[..], b"{}"].concat(),      // JSON, not a request
        [&100u32.to_be_bytes()[..], b"short"].concat(), // truncated, then closed
    ];
    let mut seed = 0x9e3779b97f4a7c15u64;
    bad.push(
        (0..4096)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect(),
    );
    for b in bad {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let _ = s.write_all(&b).await;
        let _ = s.shutdown().await;
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.node(1).q.write(b"b".to_vec(), T).await.unwrap();

    // A torn record at the end of the log (as left by a crash mid-append) is cut off at open.
    c.stop(1).await;
    let log = c.root.join("node1").join("raft.log");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, &[0, 0, 0, 40, 1, 2, 3, 4, b'{']).unwrap();
    drop(f);
    c.start(1).await;
    c.leader(T).await;
    c.node(1).q.write(b"c".to_vec(), T).await.unwrap();
    let state = c.converged(T).await;
    assert_eq!(state, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_voter_joins_without_disturbing_the_leader() {
    let mut c = Cluster::with_started(3, 20, &[1, 2]).await;
    let leader = c.leader(T).await;
    write_many(&c, &[1, 2], "early", 50, 4).await;
    let term = c.node(leader).q.status().term;

    // Node 3 starts with empty storage after the cluster has moved on (and purged its log).
    c.start(3).await;
    let state = c.converged(T).await;
    assert_eq!(state.len(), 50);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = c.node(3).q.status();
    assert_eq!((st.leader, st.term), (Some(leader), term), "{st:?}");
    assert_eq!(c.node(leader).q.status().term, term, "leader was not deposed");
    c.node(3).q.write(b"late".to_vec(), T).await.unwrap();
    assert_eq!(c.converged(T).await.len(), 51);
    c.shutdown().await;
}

const CRASH_ENV: &str = "QUORUM_SIGKILL_CHILD";

/// Child side of `sigkill_at_random_moments_loses_no_acknowledged_write`: a single-voter
/// quorum that writes as fast as it can and reports each acknowledged write on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the SIGKILL test as a child process"]
async fn sigkill_child() {
    let Ok(spec) = std::env::var(CRASH_ENV) else {
        return;
    };
    let (dir, rest) = spec.split_once('|').unwrap();
    let (port, run) = rest.split_once('|').unwrap();
    let voters = BTreeMap::from([(1, format!("127.0.0.1:{port}"))]);
    let q = start_node(1, &voters, port.parse().unwrap(), Path::new(dir), 25, Arc::new(Toy::default())).await;
    let mut tasks = Vec::new();
    for w in 0..4 {
        let q = q.clone();
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                q.write(format!("{run}-{w}-{i}").into_bytes(), T).await.unwrap();
                println!("ACKED {run}-{w}-{i}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_acknowledged_write() {
    use std::io::BufRead;
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut acked: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut seed = std::process::id() as u64 | 1;
    for run in 0..4u64 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "quorum::tests::sigkill_child", "--ignored", "--nocapture"])
            .env(CRASH_ENV, format!("{}|{port}|{run}", tmp.path().display()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
            lines
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(400 + seed % 800)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            let Some(id) = line.strip_prefix("ACKED ") else {
                continue;
            };
            let v: Vec<u64> = id.split('-').map(|x| x.parse().unwrap()).collect();
            let e = acked.entry((v[0], v[1])).or_default();
            *e = (*e).max(v[2] + 1);
        }
        assert!(acked.keys().any(|(r, _)| *r == run), "run {run} acknowledged nothing");
    }

    let m = Arc::new(Toy::default());
    let voters = BTreeMap::from([(1, format!("127.0.0.1:{port}"))]);
    let q = start_node(1, &voters, port, tmp.path(), 25, m.clone()).await;
    wait_for(T, "leader", || q.is_leader().then_some(())).await;
    let last = q.status().last_log_index;
    wait_for(T, "log applied", || (*q.applied().borrow() >= last).then_some(())).await;

    // Per writer: a gap-free, duplicate-free sequence covering at least what was acknowledged.
    let mut seen: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for c in m.state() {
        let v: Vec<u64> = String::from_utf8(c).unwrap().split('-').map(|x| x.parse().unwrap()).collect();
        let next = seen.entry((v[0], v[1])).or_default();
        assert_eq!(v[2], *next, "writer {:?} out of order or duplicated", (v[0], v[1]));
        *next += 1;
    }
    for (w, n) in &acked {
        assert!(seen.get(w).copied().unwrap_or(0) >= *n, "writer {w:?}: acked {n}, found {:?}", seen.get(w));
    }
    eprintln!("after 4 SIGKILLs: {} commands recovered, {} acknowledged", m.state().len(), acked.values().sum::<u64>());
    q.shutdown().await;
}
