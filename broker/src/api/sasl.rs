//! SaslHandshake and SaslAuthenticate. On a SASL listener they run before anything else,
//! against the connection's `sasl::Session` (`gate`); once a connection is authenticated,
//! or on a listener without SASL, they are answered ILLEGAL_SASL_STATE, as Kafka does.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, RequestHeader, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::{encode_response, versions, Ctx, ProtocolError, Reply, Timing};
use crate::sasl::Session;

/// What to do with a request on a connection that has not authenticated yet.
pub enum Gate {
    /// ApiVersions: served as on any connection.
    Serve,
    /// A SASL request, answered here; `close` after a refusal.
    Answer { reply: Reply, close: bool },
    /// Any other request: the connection is closed unanswered (Kafka's "Unexpected Kafka
    /// request of type ... during SASL handshake").
    Refuse(ApiKey),
}

/// Handle `frame` (without its size prefix) on a connection of a SASL listener that has
/// not authenticated.
pub fn gate(frame: &[u8], session: &mut Session, received: Instant) -> Result<Gate, ProtocolError> {
    if session.expects_raw_token() {
        return Ok(raw_token(frame, session, received));
    }
    if frame.len() < 8 {
        return Err(ProtocolError::Short);
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).map_err(|_| ProtocolError::UnknownApi(key))?;
    if !matches!(api, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
        return Ok(if api == ApiKey::ApiVersions { Gate::Serve } else { Gate::Refuse(api) });
    }
    if api == ApiKey::SaslAuthenticate && !session.handshake_done() {
        return Ok(Gate::Refuse(api));
    }
    if !versions::supported(api).is_some_and(|r| r.contains(version)) {
        return Err(ProtocolError::UnsupportedVersion(api, version));
    }
    let mut buf = Bytes::copy_from_slice(frame);
    let header = RequestHeader::decode(&mut buf, api.request_header_version(version))
        .map_err(|e| ProtocolError::Malformed(api, version, e.to_string()))?;
    let started = Instant::now();
    let (frame, close) = match api {
        ApiKey::SaslHandshake => {
            let req = SaslHandshakeRequest::decode(&mut buf, version)
                .map_err(|e| ProtocolError::Malformed(api, version, e.to_string()))?;
            let result = session.handshake(req.mechanism.as_str(), version);
            let resp = SaslHandshakeResponse::default()
                .with_error_code(result.err().map_or(0, |e| e.code()))
                .with_mechanisms(session.enabled_mechanisms().into_iter().map(StrBytes::from_static_str).collect());
            (encode_response(header.correlation_id, version, &resp)?, result.is_err())
        }
        _ => {
            let req = SaslAuthenticateRequest::decode(&mut buf, version)
                .map_err(|e| ProtocolError::Malformed(api, version, e.to_string()))?;
            let resp = match session.authenticate(&req.auth_bytes) {
                Ok(step) => {
                    if let Some(p) = session.principal() {
                        tracing::debug!(principal = %p.0, "SASL authentication succeeded");
                    }
                    SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(step.reply))
                }
                Err(refusal) => SaslAuthenticateResponse::default()
                    .with_error_code(refusal.error.code())
                    .with_error_message(Some(StrBytes::from_string(refusal.message))),
            };
            let failed = resp.error_code != 0;
            (encode_response(header.correlation_id, version, &resp)?, failed)
        }
    };
    let timing = Timing {
        api: versions::name(api),
        queue: started.saturating_duration_since(received),
        local: started.elapsed(),
        remote: Duration::ZERO,
        answered: Instant::now(),
        trace_id: None,
    };
    Ok(Gate::Answer { reply: Reply { frame, timing, close }, close })
}

/// A bare token after SaslHandshake v0: answered with the mechanism's bytes as a bare
/// frame; a refused one closes the connection unanswered, as Kafka does.
fn raw_token(token: &[u8], session: &mut Session, received: Instant) -> Gate {
    let started = Instant::now();
    let Ok(step) = session.authenticate(token) else {
        return Gate::Refuse(ApiKey::SaslAuthenticate);
    };
    let mut frame = Vec::with_capacity(4 + step.reply.len());
    frame.extend_from_slice(&(step.reply.len() as i32).to_be_bytes());
    frame.extend_from_slice(&step.reply);
    let timing = Timing {
        api: versions::name(ApiKey::SaslAuthenticate),
        queue: started.saturating_duration_since(received),
        local: started.elapsed(),
        remote: Duration::ZERO,
        answered: Instant::now(),
        trace_id: None,
    };
    Gate::Answer { reply: Reply { frame: Bytes::from(frame), timing, close: false }, close: false }
}

/// SaslHandshake on a connection that needs none (authenticated, or not SASL).
pub async fn handshake_refused(ctx: &Ctx<'_>, _req: SaslHandshakeRequest) -> SaslHandshakeResponse {
    SaslHandshakeResponse::default().with_error_code(ctx.err(ResponseError::IllegalSaslState))
}

/// SaslAuthenticate on a connection that needs none.
pub async fn authenticate_refused(ctx: &Ctx<'_>, _req: SaslAuthenticateRequest) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default().with_error_code(ctx.err(ResponseError::IllegalSaslState)).with_error_message(
        Some(StrBytes::from_static_str("Unexpected SASL request: the connection needs no authentication")),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use kafka_protocol::messages::RequestHeader;
    use kafka_protocol::protocol::Encodable;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::sasl::config::{Mechanism, SaslConfig};
    use crate::sasl::scram::{ScramCredential, ScramHash};
    use crate::sasl::Credentials;

    struct OneUser;

    impl Credentials for OneUser {
        fn scram(&self, user: &str, hash: ScramHash) -> Option<ScramCredential> {
            (user == "alice").then(|| ScramCredential::from_salted_password(hash, b"salt".to_vec(), 4096, b"salted"))
        }
    }

    fn frame<R: Encodable>(api: ApiKey, v: i16, r: &R) -> Vec<u8> {
        let mut b = bytes::BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(v)
            .with_correlation_id(1)
            .encode(&mut b, api.request_header_version(v))
            .unwrap();
        r.encode(&mut b, v).unwrap();
        b.to_vec()
    }

    /// Random and mutated SASL conversations with wrong credentials: the gate never panics
    /// and never lets a connection in.
    #[test]
    fn mutated_sasl_conversations_never_panic_or_authenticate() {
        let config = Arc::new(SaslConfig {
            listener: "SASL".into(),
            mechanisms: vec![
                Mechanism::Plain,
                Mechanism::Scram(ScramHash::Sha256),
                Mechanism::Scram(ScramHash::Sha512),
            ],
            plain_users: BTreeMap::from([("alice".to_string(), "alice-secret".to_string())]),
            failed_delay_ms: 0,
        });
        let mut seeds: Vec<Vec<u8>> = Vec::new();
        for m in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", ""] {
            for v in 0..=1 {
                seeds.push(frame(
                    ApiKey::SaslHandshake,
                    v,
                    &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(m)),
                ));
            }
        }
        let tokens: [&[u8]; 6] = [
            b"\0alice\0wrong",
            b"n,,n=alice,r=abc",
            b"c=biws,r=abcxyz,p=AAAA",
            b"n,,n=alice,r=",
            b"\0\0\0",
            b"p=x,,n=alice,r=abc",
        ];
        for t in tokens {
            for v in 0..=2 {
                seeds.push(frame(
                    ApiKey::SaslAuthenticate,
                    v,
                    &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(t)),
                ));
            }
            seeds.push(t.to_vec());
        }
        let mut rng = StdRng::seed_from_u64(0x5a51);
        let mut answered = 0;
        for _ in 0..2000 {
            let mut s = Session::new(config.clone(), Arc::new(OneUser));
            for _ in 0..rng.random_range(1..6) {
                let mut f = seeds[rng.random_range(0..seeds.len())].clone();
                match rng.random_range(0..3) {
                    0 if !f.is_empty() => f.truncate(rng.random_range(0..f.len())),
                    1 => f.extend((0..rng.random_range(1..32)).map(|_| rng.random::<u8>())),
                    _ => {
                        for _ in 0..rng.random_range(0..4) {
                            if f.len() > 4 {
                                let at = rng.random_range(4..f.len());
                                f[at] = rng.random();
                            }
                        }
                    }
                }
                match gate(&f, &mut s, Instant::now()) {
                    Ok(Gate::Answer { close, .. }) => {
                        answered += 1;
                        if close {
                            break;
                        }
                    }
                    Ok(Gate::Serve) => {}
                    Ok(Gate::Refuse(_)) | Err(_) => break,
                }
                assert!(s.principal().is_none(), "logged in with wrong credentials: {f:?}");
            }
        }
        assert!(answered > 100, "{answered}");
    }
}
