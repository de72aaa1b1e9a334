//! One request and its response over a broker-to-broker connection, in the Kafka wire
//! format: the replica fetcher and the transaction coordinator's marker writer use it.

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response a broker accepts from another.
const MAX_RESPONSE: i32 = 256 << 20;

/// Send `req` as `api` v`version` and read its response.
pub async fn round_trip<Req: Encodable, Resp: Decodable + HeaderVersion>(
    s: &mut TcpStream,
    api: ApiKey,
    version: i16,
    correlation: i32,
    client_id: &str,
    req: &Req,
) -> anyhow::Result<Resp> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, api.request_header_version(version))?;
    req.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    s.write_all(&buf).await?;
    let n = s.read_i32().await?;
    anyhow::ensure!((0..=MAX_RESPONSE).contains(&n), "bad response size {n}");
    let mut body = vec![0u8; n as usize];
    s.read_exact(&mut body).await?;
    let mut bytes = bytes::Bytes::from(body);
    let h = ResponseHeader::decode(&mut bytes, Resp::header_version(version))?;
    anyhow::ensure!(h.correlation_id == correlation, "correlation id mismatch");
    let resp = Resp::decode(&mut bytes, version)?;
    if bytes.has_remaining() {
        tracing::debug!(?api, extra = bytes.remaining(), "trailing bytes in a response");
    }
    Ok(resp)
}
