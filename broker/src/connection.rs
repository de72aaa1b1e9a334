//! One client connection: size-prefixed frames in, responses out in request order.
//!
//! Requests on a connection are handled one at a time, like Kafka's muted channels: two
//! pipelined produce requests must be appended in the order they were sent, or an
//! idempotent producer's sequence check would fail. A separate writer task lets the next
//! request be read while a response is still being written.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::api;
use crate::broker::Broker;

pub async fn serve(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr, listener: Arc<str>) {
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(broker.config.max_inflight_requests);
    let idle = broker.config.idle_timeout();
    // A client that stops reading must not pin the connection forever: writes time out
    // like reads do, and the reader then gives up on the full queue.
    let writer = tokio::spawn(async move {
        let mut wr = BufWriter::with_capacity(64 * 1024, wr);
        while let Some(frame) = rx.recv().await {
            if !matches!(timeout(idle, wr.write_all(&frame)).await, Ok(Ok(()))) {
                return;
            }
            if rx.is_empty() && !matches!(timeout(idle, wr.flush()).await, Ok(Ok(()))) {
                return;
            }
        }
        let _ = timeout(idle, wr.shutdown()).await;
    });

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
        match api::handle(&broker, buf.freeze(), &host, &listener).await {
            Ok(Some(resp)) => match timeout(idle, tx.send(resp)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break "client",
                Err(_) => break "idle",
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection: bad request");
                break "bad_request";
            }
        }
    };
    drop(tx);
    let _ = writer.await;
    broker.metrics.closed(reason);
}
