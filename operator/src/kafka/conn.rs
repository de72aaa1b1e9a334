//! One TCP connection to one broker: Kafka framing (size prefix, request header,
//! correlation id) and the API versions negotiated once when it opens.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes, VersionRange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::AdminError;

/// Largest response accepted; admin responses are small, and a bad size prefix
/// (a peer that is not Kafka) must not make us allocate gigabytes.
const MAX_RESPONSE: i32 = 64 << 20;
const CLIENT_ID: &str = "fjord-operator";

pub struct Conn {
    pub addr: String,
    stream: TcpStream,
    correlation: i32,
    /// API key → (min, max) the broker advertised.
    versions: HashMap<i16, (i16, i16)>,
}

/// The highest version both sides speak: ours is the codec's range capped at `cap` (the
/// newest version our request builder was written for), theirs is what ApiVersions said.
pub fn negotiate(ours: VersionRange, cap: i16, theirs: Option<(i16, i16)>) -> Option<i16> {
    let (min, max) = theirs?;
    let hi = ours.max.min(cap).min(max);
    let lo = ours.min.max(min);
    (hi >= lo).then_some(hi)
}

/// Frame `req` as version `version` with correlation id `correlation`: i32 size, header,
/// body.
pub fn encode_request<R: Request>(req: &R, version: i16, correlation: i32) -> Result<Bytes, AdminError> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, R::header_version(version)).map_err(AdminError::codec)?;
    req.encode(&mut buf, version).map_err(AdminError::codec)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Decode a response body (size prefix already stripped), checking the correlation id.
pub fn decode_response<R: Request>(mut body: Bytes, version: i16, correlation: i32) -> Result<R::Response, AdminError> {
    let h = ResponseHeader::decode(&mut body, R::Response::header_version(version)).map_err(AdminError::codec)?;
    if h.correlation_id != correlation {
        return Err(AdminError::Protocol(format!("correlation id {} answered {correlation}", h.correlation_id)));
    }
    let resp = R::Response::decode(&mut body, version).map_err(AdminError::codec)?;
    if body.has_remaining() {
        tracing::debug!(api = R::KEY, extra = body.remaining(), "trailing bytes in response");
    }
    Ok(resp)
}

impl Conn {
    /// Connect and negotiate versions. ApiVersions v0 is what every broker accepts.
    pub async fn open(addr: &str, timeout: Duration) -> Result<Conn, AdminError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| AdminError::Timeout(format!("connecting to {addr}")))?
            .map_err(|e| AdminError::Io(format!("{addr}: {e}")))?;
        stream.set_nodelay(true).ok();
        let mut conn = Conn { addr: addr.to_string(), stream, correlation: 0, versions: HashMap::new() };
        let resp = conn.exchange(&ApiVersionsRequest::default(), 0, timeout).await?;
        AdminError::check(resp.error_code, None)?;
        conn.versions = resp.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        Ok(conn)
    }

    /// The version to use for `R`, at most `cap`.
    pub fn version<R: Request>(&self, cap: i16) -> Result<i16, AdminError> {
        negotiate(R::VERSIONS, cap, self.versions.get(&R::KEY).copied()).ok_or_else(|| {
            AdminError::Protocol(format!("broker {} supports no usable version of API {}", self.addr, R::KEY))
        })
    }

    /// Send `req` and wait for its answer. The caller holds the connection exclusively, so
    /// responses arrive in order; any error leaves the stream unusable (drop it).
    pub async fn exchange<R: Request>(
        &mut self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, AdminError> {
        self.correlation = self.correlation.wrapping_add(1);
        let correlation = self.correlation;
        let frame = encode_request(req, version, correlation)?;
        let io = async {
            self.stream.write_all(&frame).await?;
            let n = self.stream.read_i32().await?;
            if !(0..=MAX_RESPONSE).contains(&n) {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad response size {n}")));
            }
            let mut body = vec![0u8; n as usize];
            self.stream.read_exact(&mut body).await?;
            Ok(Bytes::from(body))
        };
        let body = tokio::time::timeout(timeout, io)
            .await
            .map_err(|_| AdminError::Timeout(format!("API {} to {}", R::KEY, self.addr)))?
            .map_err(|e| AdminError::Io(format!("{}: {e}", self.addr)))?;
        decode_response::<R>(body, version, correlation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, MetadataRequest, MetadataResponse, ResponseHeader};

    #[test]
    fn negotiation_picks_highest_common_version() {
        let ours = VersionRange { min: 1, max: 9 };
        assert_eq!(negotiate(ours, 7, Some((0, 8))), Some(7));
        assert_eq!(negotiate(ours, 9, Some((0, 4))), Some(4));
        assert_eq!(negotiate(ours, 9, Some((10, 12))), None);
        assert_eq!(negotiate(ours, 9, None), None);
    }

    #[test]
    fn request_frame_has_size_prefix_and_header() {
        let frame = encode_request(&MetadataRequest::default().with_topics(Some(vec![])), 12, 42).unwrap();
        let mut b = frame.clone();
        assert_eq!(b.get_i32() as usize, frame.len() - 4);
        let header = RequestHeader::decode(&mut b, ApiKey::Metadata.request_header_version(12)).unwrap();
        assert_eq!((header.request_api_key, header.request_api_version, header.correlation_id), (3, 12, 42));
        let req = MetadataRequest::decode(&mut b, 12).unwrap();
        assert_eq!(req.topics, Some(vec![]));
    }

    fn response_bytes<M: Encodable>(m: &M, header_version: i16, version: i16, correlation: i32) -> Bytes {
        let mut buf = BytesMut::new();
        ResponseHeader::default().with_correlation_id(correlation).encode(&mut buf, header_version).unwrap();
        m.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn response_round_trip_and_correlation_check() {
        let resp = ApiVersionsResponse::default()
            .with_api_keys(vec![ApiVersion::default().with_api_key(3).with_min_version(0).with_max_version(12)]);
        let bytes = response_bytes(&resp, 0, 0, 7);
        let back = decode_response::<ApiVersionsRequest>(bytes.clone(), 0, 7).unwrap();
        assert_eq!(back.api_keys[0].max_version, 12);
        assert!(decode_response::<ApiVersionsRequest>(bytes, 0, 8).is_err());
        let md = MetadataResponse::default().with_controller_id(kafka_protocol::messages::BrokerId(2));
        let bytes = response_bytes(&md, MetadataResponse::header_version(12), 12, 1);
        assert_eq!(decode_response::<MetadataRequest>(bytes, 12, 1).unwrap().controller_id.0, 2);
    }
}
