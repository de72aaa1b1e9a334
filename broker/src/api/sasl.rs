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
