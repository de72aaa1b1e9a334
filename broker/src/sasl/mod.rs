//! SASL authentication on SASL_PLAINTEXT and SASL_SSL listeners, as Kafka's
//! SaslServerAuthenticator does it: a connection is served ApiVersions, SaslHandshake and
//! SaslAuthenticate only, until a mechanism it asked for in the handshake accepts its
//! token; anything else closes it. A failed login is answered SASL_AUTHENTICATION_FAILED
//! and the connection closed. The state machine is here, pure; `api::sasl` speaks the
//! requests and `connection.rs` gates the rest.

pub mod config;
pub mod scram;

use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use config::{Mechanism, SaslConfig};
use scram::{ScramCredential, ScramHash, ScramServer};

/// Where SCRAM credentials are kept (the metadata quorum; `server.rs` gives it).
pub trait Credentials: Send + Sync {
    fn scram(&self, user: &str, hash: ScramHash) -> Option<ScramCredential>;
}

/// Who a connection authenticated as, in Kafka's form (`User:alice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub String);

#[derive(Debug)]
enum State {
    /// Waiting for SaslHandshake.
    Handshake,
    /// The handshake chose a mechanism; waiting for its token.
    Authenticate(Mechanism),
    /// SCRAM between its two client messages.
    Scram(ScramServer),
    Authenticated(Principal),
}

/// What a SaslAuthenticate answers: the mechanism's bytes for the client, and whether the
/// connection is now authenticated.
#[derive(Debug, PartialEq, Eq)]
pub struct Step {
    pub reply: Vec<u8>,
    pub done: bool,
}

/// A refusal: the error code, the message for the client, and whether the connection must
/// be closed after the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: ResponseError,
    pub message: String,
}

/// One connection's authentication.
#[derive(Debug)]
pub struct Session {
    config: Arc<SaslConfig>,
    credentials: Arc<dyn Credentials>,
    state: State,
    /// SaslHandshake v0 was used: the tokens come as bare size-prefixed frames, not
    /// SaslAuthenticate requests (librdkafka's fallback, Kafka before 1.0).
    raw_tokens: bool,
    /// The mechanism the handshake chose (kept once the exchange is over, for metrics).
    chosen: Option<&'static str>,
}

impl std::fmt::Debug for dyn Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials")
    }
}

impl Session {
    pub fn new(config: Arc<SaslConfig>, credentials: Arc<dyn Credentials>) -> Self {
        Session { config, credentials, state: State::Handshake, raw_tokens: false, chosen: None }
    }

    /// The mechanism the handshake chose, if any.
    pub fn mechanism(&self) -> Option<&'static str> {
        self.chosen
    }

    /// Whether a SaslHandshake has chosen a mechanism (a SaslAuthenticate before one is
    /// not answered: Kafka closes the connection).
    pub fn handshake_done(&self) -> bool {
        !matches!(self.state, State::Handshake)
    }

    /// Whether the next frame is a bare SASL token (after SaslHandshake v0).
    pub fn expects_raw_token(&self) -> bool {
        self.raw_tokens && self.principal().is_none()
    }

    pub fn principal(&self) -> Option<&Principal> {
        match &self.state {
            State::Authenticated(p) => Some(p),
            _ => None,
        }
    }

    /// The mechanisms to list in a SaslHandshake answer.
    pub fn enabled_mechanisms(&self) -> Vec<&'static str> {
        self.config.mechanisms.iter().map(|m| m.name()).collect()
    }

    pub fn failed_delay_ms(&self) -> u64 {
        self.config.failed_delay_ms
    }

    /// SaslHandshake of `version`: choose `mechanism`.
    pub fn handshake(&mut self, mechanism: &str, version: i16) -> Result<(), ResponseError> {
        if !matches!(self.state, State::Handshake) {
            return Err(ResponseError::IllegalSaslState);
        }
        let m = self.config.mechanism(mechanism).ok_or(ResponseError::UnsupportedSaslMechanism)?;
        self.state = State::Authenticate(m);
        self.chosen = Some(m.name());
        self.raw_tokens = version == 0;
        Ok(())
    }

    /// SaslAuthenticate with the client's token.
    pub fn authenticate(&mut self, token: &[u8]) -> Result<Step, Refusal> {
        let failed = |e: scram::ScramError| Refusal { error: ResponseError::SaslAuthenticationFailed, message: e.0 };
        let lookup = |hash| {
            let credentials = self.credentials.clone();
            move |user: &str| credentials.scram(user, hash)
        };
        match std::mem::replace(&mut self.state, State::Handshake) {
            State::Authenticate(Mechanism::Plain) => {
                let principal = plain(&self.config, token)?;
                self.state = State::Authenticated(principal);
                Ok(Step { reply: Vec::new(), done: true })
            }
            State::Authenticate(Mechanism::Scram(hash)) => {
                let mut server = ScramServer::new(hash);
                let (reply, _) = server.step(token, lookup(hash), &server_nonce()).map_err(failed)?;
                self.state = State::Scram(server);
                Ok(Step { reply, done: false })
            }
            State::Scram(mut server) => {
                let hash = match &server {
                    ScramServer::Challenged { hash, .. } => *hash,
                    _ => return Err(failed(scram::ScramError("SCRAM exchange out of order".into()))),
                };
                let (reply, user) = server.step(token, lookup(hash), "").map_err(failed)?;
                let user = user.ok_or_else(|| failed(scram::ScramError("SCRAM exchange incomplete".into())))?;
                self.state = State::Authenticated(Principal(format!("User:{user}")));
                Ok(Step { reply, done: true })
            }
            other => {
                self.state = other;
                Err(Refusal {
                    error: ResponseError::IllegalSaslState,
                    message: "SaslAuthenticate before a SaslHandshake chose a mechanism".into(),
                })
            }
        }
    }
}

/// A SCRAM server nonce: 32 random bytes, printable (RFC 5802 excludes the comma).
fn server_nonce() -> String {
    use base64::Engine;
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`. Kafka allows an authorization id only
/// when it is the authentication id.
fn plain(config: &SaslConfig, token: &[u8]) -> Result<Principal, Refusal> {
    let failed = |why: &str| Refusal { error: ResponseError::SaslAuthenticationFailed, message: why.to_string() };
    let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
    let [authzid, user, password] = parts[..] else {
        return Err(failed("Invalid SASL/PLAIN response: expected 3 tokens"));
    };
    let (Ok(user), Ok(authzid)) = (std::str::from_utf8(user), std::str::from_utf8(authzid)) else {
        return Err(failed("Invalid SASL/PLAIN response: not UTF-8"));
    };
    if !authzid.is_empty() && authzid != user {
        return Err(failed(
            "Authentication failed: Client requested an authorization id that is different from username",
        ));
    }
    let known = config.plain_users.get(user).map(String::as_bytes);
    // Compared in time that does not depend on where the password differs.
    let matches = known.is_some_and(|k| {
        k.len() == password.len() && k.iter().zip(password).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if !matches {
        return Err(failed("Authentication failed: Invalid username or password"));
    }
    Ok(Principal(format!("User:{user}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct NoCredentials;

    impl Credentials for NoCredentials {
        fn scram(&self, _: &str, _: ScramHash) -> Option<ScramCredential> {
            None
        }
    }

    fn session() -> Session {
        Session::new(
            Arc::new(SaslConfig {
                listener: "SASL".into(),
                mechanisms: vec![Mechanism::Plain],
                plain_users: BTreeMap::from([("alice".to_string(), "alice-secret".to_string())]),
                failed_delay_ms: 0,
            }),
            Arc::new(NoCredentials),
        )
    }

    #[test]
    fn plain_logs_in_a_known_user_only() {
        let mut s = session();
        assert_eq!(s.authenticate(b"\0alice\0alice-secret").unwrap_err().error, ResponseError::IllegalSaslState);
        assert_eq!(s.handshake("SCRAM-SHA-512", 1), Err(ResponseError::UnsupportedSaslMechanism));
        s.handshake("PLAIN", 1).unwrap();
        assert_eq!(s.authenticate(b"\0alice\0alice-secret").unwrap(), Step { reply: vec![], done: true });
        assert_eq!(s.principal(), Some(&Principal("User:alice".into())));
        assert_eq!(s.handshake("PLAIN", 1), Err(ResponseError::IllegalSaslState), "no second handshake");
        for bad in [
            &b"\0alice\0wrong"[..],
            b"\0bob\0alice-secret",
            b"alice\0alice-secret",
            b"x\0alice\0alice-secret",
            b"\0alice\0alice-secre",
        ] {
            let mut s = session();
            s.handshake("PLAIN", 1).unwrap();
            let r = s.authenticate(bad).unwrap_err();
            assert_eq!(r.error, ResponseError::SaslAuthenticationFailed, "{bad:?}");
            assert!(s.principal().is_none());
        }
        let mut s = session();
        s.handshake("PLAIN", 1).unwrap();
        assert!(s.authenticate(b"alice\0alice\0alice-secret").is_ok(), "the authorization id may be the user");
    }
}
