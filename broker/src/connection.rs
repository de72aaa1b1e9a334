//! One client connection: size-prefixed frames in, responses out in request order.
//!
//! Requests on a connection are handled one at a time, like Kafka's muted channels: two
//! pipelined produce requests must be appended in the order they were sent, or an
//! idempotent producer's sequence check would fail. A separate writer task lets the next
//! request be read while a response is still being written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::api::{self, Reply};
use crate::broker::Broker;

/// A request read and not answered yet: counted in `fjord_requests_in_flight` until
/// dropped, however the request ends (answered, refused, or its connection gone).
struct InFlight(Arc<Broker>);

impl InFlight {
    fn new(b: &Arc<Broker>) -> Self {
        b.metrics.in_flight.inc();
        InFlight(b.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

/// How a listener's connections authenticate: SASL settings on a SASL listener.
pub type Sasl = Option<Arc<crate::sasl::config::SaslConfig>>;

/// Serve a connection that is not encrypted.
pub async fn serve(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr, listener: Arc<str>, sasl: Sasl) {
    let _ = stream.set_nodelay(true);
    // Owned halves: the reader and the writer task share no lock.
    let (rd, wr) = stream.into_split();
    serve_halves(broker, rd, wr, peer, listener, sasl).await
}

/// Serve a connection of an SSL listener once its handshake is done. A handshake that
/// fails or stalls closes the connection before any Kafka request is read.
pub async fn serve_tls(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    acceptor: tokio_rustls::TlsAcceptor,
    sasl: Sasl,
) {
    let _ = stream.set_nodelay(true);
    let handshake = broker.config.idle_timeout().min(TLS_HANDSHAKE_TIMEOUT);
    let stream = match timeout(handshake, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, %listener, error = %e, "TLS handshake failed");
            broker.metrics.connection_closed(&listener, "tls_handshake");
            return;
        }
        Err(_) => {
            broker.metrics.connection_closed(&listener, "tls_handshake");
            return;
        }
    };
    let (rd, wr) = tokio::io::split(stream);
    serve_halves(broker, rd, wr, peer, listener, sasl).await
}

/// How long a client has to finish its TLS handshake (Kafka has no separate bound; a
/// connection that never completes one would otherwise hold a slot until it idles out).
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn serve_halves<R, W>(broker: Arc<Broker>, mut rd: R, wr: W, peer: SocketAddr, listener: Arc<str>, sasl: Sasl)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<(Reply, InFlight)>(broker.config.max_inflight_requests);
    let idle = broker.config.idle_timeout();
    // A client that stops reading must not pin the connection forever: writes time out
    // like reads do, and the reader then gives up on the full queue.
    let metrics_of = broker.clone();
    let writer = tokio::spawn(async move {
        let mut wr = BufWriter::with_capacity(64 * 1024, wr);
        while let Some((reply, _in_flight)) = rx.recv().await {
            if !matches!(timeout(idle, wr.write_all(&reply.frame)).await, Ok(Ok(()))) {
                return;
            }
            if rx.is_empty() && !matches!(timeout(idle, wr.flush()).await, Ok(Ok(()))) {
                return;
            }
            reply.timing.finish(&metrics_of.metrics);
        }
        let _ = timeout(idle, wr.shutdown()).await;
    });

    // On a SASL listener, nothing but ApiVersions and the SASL requests until authenticated.
    let mut session = sasl.map(|c| crate::sasl::Session::new(c, Arc::new(QuorumCredentials(broker.clone()))));
    let max = broker.config.socket_request_max_bytes;
    let host = peer.ip().to_string();
    let reason = loop {
        let mut len = [0u8; 4];
        match timeout(idle, rd.read_exact(&mut len)).await {
            Err(_) => break "idle",
            Ok(Err(_)) => break "client",
            Ok(Ok(_)) => {}
        }
        let size = i32::from_be_bytes(len);
        if size < 8 || size as usize > max {
            tracing::warn!(%peer, size, max, "closing connection: invalid request size");
            break "invalid_size";
        }
        // Grow the buffer as bytes arrive rather than trusting the size prefix up front.
        let size = size as usize;
        let mut buf = BytesMut::with_capacity(size.min(1 << 20));
        let body = async {
            while buf.len() < size {
                let want = (size - buf.len()).min(1 << 20);
                buf.reserve(want);
                let n = (&mut rd).take(want as u64).read_buf(&mut buf).await?;
                if n == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                }
            }
            Ok::<_, std::io::Error>(())
        };
        match timeout(idle, body).await {
            Err(_) => break "idle",
            Ok(Err(_)) => break "client",
            Ok(Ok(())) => {}
        }
        let received = Instant::now();
        if let Some(s) = session.as_mut().filter(|s| s.principal().is_none()) {
            match api::sasl::gate(&buf, s, received) {
                Ok(api::sasl::Gate::Serve) => {}
                Ok(api::sasl::Gate::Answer { reply, close }) => {
                    if close {
                        broker.metrics.sasl_authentication(&listener, s.mechanism().unwrap_or("unknown"), false);
                    } else if s.principal().is_some() {
                        broker.metrics.sasl_authentication(&listener, s.mechanism().unwrap_or("unknown"), true);
                    }
                    if close {
                        // KIP-306: a failed login is answered late, which slows a guesser.
                        tokio::time::sleep(std::time::Duration::from_millis(s.failed_delay_ms())).await;
                    }
                    match timeout(idle, tx.send((reply, InFlight::new(&broker)))).await {
                        Ok(Ok(())) if close => break "authentication",
                        Ok(Ok(())) => continue,
                        Ok(Err(_)) => break "client",
                        Err(_) => break "idle",
                    }
                }
                Ok(api::sasl::Gate::Refuse(api)) => {
                    if s.handshake_done() {
                        // A refused bare token (SaslHandshake v0) is a failed login too.
                        broker.metrics.sasl_authentication(&listener, s.mechanism().unwrap_or("unknown"), false);
                    }
                    tracing::info!(%peer, %listener, ?api, "closing connection: a request before SASL authentication");
                    break "unauthenticated";
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "closing connection: bad request");
                    break "bad_request";
                }
            }
        }
        let in_flight = InFlight::new(&broker);
        match api::handle(&broker, buf.freeze(), &host, &listener, received).await {
            Ok(Some(reply)) => {
                let close = reply.close;
                match timeout(idle, tx.send((reply, in_flight))).await {
                    Ok(Ok(())) if close => break "cut_off",
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break "client",
                    Err(_) => break "idle",
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection: bad request");
                break "bad_request";
            }
        }
    };
    drop(tx);
    let _ = writer.await;
    broker.metrics.connection_closed(&listener, reason);
}

/// SCRAM credentials as the metadata quorum has them now (a user added or changed takes
/// effect at the next login).
struct QuorumCredentials(Arc<Broker>);

impl crate::sasl::Credentials for QuorumCredentials {
    fn scram(&self, user: &str, hash: crate::sasl::scram::ScramHash) -> Option<crate::sasl::scram::ScramCredential> {
        self.0.metadata.read(|img| {
            img.scram.get(user).and_then(|m| m.get(&hash.id())).map(|c| crate::sasl::scram::ScramCredential {
                salt: c.salt.clone(),
                iterations: c.iterations,
                stored_key: c.stored_key.clone(),
                server_key: c.server_key.clone(),
            })
        })
    }
}
