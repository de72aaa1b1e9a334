//! TCP transport: frames of u32 big-endian length + serde_json payload, one request then one
//! response per connection at a time; outbound connections are pooled per address.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, SnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, Snapshot};
use parking_lot::Mutex;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::types::{hex, Cmd, LogId, Raft, Resp, SnapshotMeta, TypeConfig, Vote};
use super::Handler;

pub const MAX_FRAME: usize = 64 << 20;
/// Idle connections kept per peer; more concurrent calls simply dial more.
const MAX_IDLE: usize = 4;

#[derive(Serialize, Deserialize)]
pub enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        #[serde(with = "hex")]
        data: Vec<u8>,
    },
    Join {
        id: u64,
        addr: String,
    },
    /// Does this node already have any Raft state (log or vote)?
    Probe,
    /// Would this voter vote for `candidate`, whose last log id is `last_log` (election.rs)?
    PreVote {
        candidate: u64,
        last_log: Option<LogId>,
    },
    /// The server gives up after `timeout_ms` so an abandoned request does not linger.
    Write {
        cmd: Cmd,
        timeout_ms: u64,
    },
    App {
        from: u64,
        #[serde(with = "hex")]
        body: Vec<u8>,
        timeout_ms: u64,
    },
}

/// Where a node that is not the leader says the leader is. On the wire a JSON pair
/// `[id, "host:port"]`, as before it had a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(u64, String)", into = "(u64, String)")]
pub struct LeaderHint {
    pub id: u64,
    pub addr: String,
}

impl From<(u64, String)> for LeaderHint {
    fn from((id, addr): (u64, String)) -> Self {
        LeaderHint { id, addr }
    }
}

impl From<LeaderHint> for (u64, String) {
    fn from(h: LeaderHint) -> Self {
        (h.id, h.addr)
    }
}

#[derive(Serialize, Deserialize)]
pub enum Response {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<SnapshotResponse<u64>, Fatal<u64>>),
    /// Ok, or not the leader (with the leader when known).
    Join(Result<(), Option<LeaderHint>>),
    Probe(bool),
    PreVote(bool),
    Write(WriteReply),
    App(#[serde(with = "hex")] Vec<u8>),
    Error(String),
}

#[derive(Serialize, Deserialize)]
pub enum WriteReply {
    Ok(Resp),
    /// Not appended here; safe to resend to the hinted leader.
    NotLeader(Option<u64>),
    Timeout,
    Err(String),
}

#[derive(Debug)]
pub enum CallError {
    /// Could not connect: the request was certainly not delivered.
    Connect(String),
    /// Failed after the request may have been delivered.
    Io(String),
    Timeout,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connect(e) => write!(f, "connect: {e}"),
            CallError::Io(e) => write!(f, "io: {e}"),
            CallError::Timeout => write!(f, "timed out"),
        }
    }
}

impl std::error::Error for CallError {}

async fn read_frame<T: DeserializeOwned>(s: &mut TcpStream) -> io::Result<T> {
    let len = s.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {len} bytes exceeds limit")));
    }
    // Grow with the data actually received, so a forged length alone reserves nothing.
    let mut buf = Vec::with_capacity(len.min(64 << 10));
    (&mut *s).take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("connection closed {} bytes into a {len}-byte frame", buf.len()),
        ));
    }
    serde_json::from_slice(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_frame(s: &mut TcpStream, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "frame exceeds limit"));
    }
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    s.write_all(&buf).await
}

#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<TcpStream>>>,
    /// Tests cut links: calls to these addresses are dropped as a network partition drops
    /// packets (no answer until the timeout).
    #[cfg(test)]
    pub cut: Mutex<std::collections::HashSet<String>>,
}

impl Pool {
    pub async fn call(&self, addr: &str, req: &Request, timeout: Duration) -> Result<Response, CallError> {
        #[cfg(test)]
        if self.cut.lock().contains(addr) {
            tokio::time::sleep(timeout).await;
            return Err(CallError::Timeout);
        }
        let payload = serde_json::to_vec(req).map_err(|e| CallError::Io(e.to_string()))?;
        tokio::time::timeout(timeout, self.call_inner(addr, &payload)).await.map_err(|_| CallError::Timeout)?
    }

    async fn call_inner(&self, addr: &str, payload: &[u8]) -> Result<Response, CallError> {
        let pooled = self.idle.lock().get_mut(addr).and_then(Vec::pop);
        if let Some(mut s) = pooled {
            // A pooled connection may have been closed by a peer restart, so one failure on it
            // earns a resend on a fresh connection. Rarely the first copy was processed: raft
            // RPCs are idempotent, writes carry a dedup id, app RPCs must be idempotent.
            if let Ok(resp) = Self::exchange(&mut s, payload).await {
                self.put_back(addr, s);
                return Ok(resp);
            }
        }
        let mut s = TcpStream::connect(addr).await.map_err(|e| CallError::Connect(e.to_string()))?;
        let _ = s.set_nodelay(true);
        let resp = Self::exchange(&mut s, payload).await.map_err(|e| CallError::Io(e.to_string()))?;
        self.put_back(addr, s);
        Ok(resp)
    }

    async fn exchange(s: &mut TcpStream, payload: &[u8]) -> io::Result<Response> {
        write_frame(s, payload).await?;
        read_frame(s).await
    }

    fn put_back(&self, addr: &str, s: TcpStream) {
        let mut idle = self.idle.lock();
        let v = idle.entry(addr.to_string()).or_default();
        if v.len() < MAX_IDLE {
            v.push(s);
        }
    }

    pub fn clear(&self) {
        self.idle.lock().clear();
    }
}

pub struct NetFactory {
    pub id: u64,
    pub pool: Arc<Pool>,
}

pub struct NetConn {
    id: u64,
    target: u64,
    addr: String,
    pool: Arc<Pool>,
}

impl RaftNetworkFactory<TypeConfig> for NetFactory {
    type Network = NetConn;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> NetConn {
        NetConn { id: self.id, target, addr: node.addr.clone(), pool: self.pool.clone() }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<u64, BasicNode, RaftError<u64, E>>;

impl NetConn {
    async fn rpc<E: std::error::Error>(
        &self,
        action: RPCTypes,
        req: Request,
        ttl: Duration,
    ) -> Result<Response, RPCError<u64, BasicNode, E>> {
        self.pool.call(&self.addr, &req, ttl).await.map_err(|e| match e {
            // Unreachable makes openraft back off instead of spinning on a dead peer.
            CallError::Connect(_) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Io(_) => RPCError::Network(NetworkError::new(&e)),
            CallError::Timeout => RPCError::Timeout(Timeout { action, id: self.id, target: self.target, timeout: ttl }),
        })
    }

    fn unexpected<E: std::error::Error>(resp: Response) -> RPCError<u64, BasicNode, E> {
        let msg = match resp {
            Response::Error(e) => e,
            _ => "unexpected response kind".to_string(),
        };
        RPCError::Network(NetworkError::new(&io::Error::other(msg)))
    }
}

impl RaftNetwork<TypeConfig> for NetConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr> {
        match self.rpc(RPCTypes::AppendEntries, Request::Append(rpc), option.hard_ttl()).await? {
            Response::Append(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(Self::unexpected(other)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> Result<VoteResponse<u64>, RpcErr> {
        match self.rpc(RPCTypes::Vote, Request::Vote(rpc), option.hard_ttl()).await? {
            Response::Vote(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Never called: `full_snapshot` is overridden to send the whole snapshot in one frame.
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<InstallSnapshotError>> {
        Err(RPCError::Network(NetworkError::new(&io::Error::other("chunked snapshot transfer is not supported"))))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        let req = Request::Snapshot { vote, meta: snapshot.meta, data: snapshot.snapshot.into_inner() };
        let resp = tokio::select! {
            r = self.rpc::<Fatal<u64>>(RPCTypes::InstallSnapshot, req, option.hard_ttl()) => r,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let to_streaming = |e: RPCError<u64, BasicNode, Fatal<u64>>| match e {
            RPCError::Timeout(t) => StreamingError::Timeout(t),
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::Network(n) => StreamingError::Network(n),
            RPCError::PayloadTooLarge(p) => StreamingError::Network(NetworkError::new(&p)),
            RPCError::RemoteError(r) => StreamingError::RemoteError(r),
        };
        match resp.map_err(to_streaming)? {
            Response::Snapshot(r) => r.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(to_streaming(Self::unexpected(other))),
        }
    }
}

/// What the server needs from the node: raft for protocol RPCs, the rest for the others.
pub trait Service: Send + Sync + 'static {
    fn raft(&self) -> &Raft;
    /// A leader's AppendEntries or snapshot was accepted, or this node granted a vote.
    fn leader_heard(&self) {}
    fn handler(&self) -> &Arc<dyn Handler>;
    fn join(&self, id: u64, addr: String) -> impl std::future::Future<Output = Result<(), Option<LeaderHint>>> + Send;
    fn local_write(&self, cmd: Cmd, timeout: Duration) -> impl std::future::Future<Output = WriteReply> + Send;
    fn pre_vote(&self, candidate: u64, last_log: Option<LogId>) -> bool;
}

pub async fn serve<S: Service>(listener: TcpListener, svc: Arc<S>, shutdown: watch::Receiver<bool>) {
    loop {
        let mut stop = shutdown.clone();
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let svc = svc.clone();
                let mut stop = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve_conn(stream, peer, svc) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                });
            }
            Err(e) => {
                // Typically fd exhaustion; back off rather than spin.
                tracing::warn!(error = %e, "quorum accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_conn<S: Service>(mut stream: TcpStream, peer: std::net::SocketAddr, svc: Arc<S>) {
    loop {
        let req: Request = match read_frame(&mut stream).await {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                tracing::warn!(%peer, error = %e, "closing quorum connection after a bad frame");
                return;
            }
            // Closed or reset by the peer, e.g. a client that gave up on a timed-out call.
            Err(e) => {
                tracing::debug!(%peer, error = %e, "quorum connection closed");
                return;
            }
        };
        let resp = handle(&*svc, req).await;
        let payload = match serde_json::to_vec(&resp) {
            Ok(p) => p,
            Err(e) => serde_json::to_vec(&Response::Error(e.to_string())).unwrap_or_default(),
        };
        if let Err(e) = write_frame(&mut stream, &payload).await {
            tracing::debug!(%peer, error = %e, "quorum connection closed while responding");
            return;
        }
    }
}

async fn handle<S: Service>(svc: &S, req: Request) -> Response {
    let raft = svc.raft();
    match req {
        Request::Append(r) => {
            let resp = raft.append_entries(r).await;
            // Any answer but a higher vote means this node took the sender as its leader (a
            // conflict too: openraft refreshes its vote lease then, and would refuse votes).
            if resp.as_ref().is_ok_and(|r| !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                svc.leader_heard();
            }
            Response::Append(resp)
        }
        Request::Vote(r) => {
            let resp = raft.vote(r).await;
            // Raft resets its election timer on granting a vote: no rival campaign right after.
            if resp.as_ref().is_ok_and(|r| r.vote_granted) {
                svc.leader_heard();
            }
            Response::Vote(resp)
        }
        Request::Snapshot { vote, meta, data } => {
            let snapshot = Snapshot { meta, snapshot: Box::new(std::io::Cursor::new(data)) };
            let resp = raft.install_full_snapshot(vote, snapshot).await;
            if resp.is_ok() {
                svc.leader_heard();
            }
            Response::Snapshot(resp)
        }
        Request::PreVote { candidate, last_log } => Response::PreVote(svc.pre_vote(candidate, last_log)),
        Request::Join { id, addr } => Response::Join(svc.join(id, addr).await),
        Request::Probe => match raft.is_initialized().await {
            Ok(init) => Response::Probe(init),
            Err(e) => Response::Error(e.to_string()),
        },
        Request::Write { cmd, timeout_ms } => {
            Response::Write(svc.local_write(cmd, Duration::from_millis(timeout_ms)).await)
        }
        Request::App { from, body, timeout_ms } => {
            let fut = svc.handler().handle(from, body);
            match tokio::time::timeout(Duration::from_millis(timeout_ms), fut).await {
                Ok(r) => Response::App(r),
                Err(_) => Response::Error("handler timed out".into()),
            }
        }
    }
}
