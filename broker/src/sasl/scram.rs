//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka's ScramSaslServer runs
//! them: client-first (`n,,n=<user>,r=<nonce>`), server-first with the user's salt and
//! iterations, client-final with the proof, checked against the stored key, and
//! server-final with the server's signature. Credentials are Kafka's: salt, iterations,
//! StoredKey and ServerKey, never the password.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac};

/// The hash a SCRAM mechanism uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha256 => hmac::HMAC_SHA256,
            ScramHash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha256 => &digest::SHA256,
            ScramHash::Sha512 => &digest::SHA512,
        }
    }

    /// Kafka's ScramMechanism ids (AlterUserScramCredentials, DescribeUserScramCredentials).
    pub fn id(self) -> i8 {
        match self {
            ScramHash::Sha256 => 1,
            ScramHash::Sha512 => 2,
        }
    }

    pub fn from_id(id: i8) -> Option<Self> {
        match id {
            1 => Some(ScramHash::Sha256),
            2 => Some(ScramHash::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ScramHash::Sha256 => "SCRAM-SHA-256",
            ScramHash::Sha512 => "SCRAM-SHA-512",
        }
    }
}

fn hmac(h: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(h.hmac(), key), data).as_ref().to_vec()
}

/// What the broker keeps for a user and mechanism (Kafka's ScramCredential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: i32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// From the salted password a client sent in AlterUserScramCredentials (it ran the
    /// PBKDF2 itself): StoredKey = H(HMAC(salted, "Client Key")), ServerKey =
    /// HMAC(salted, "Server Key").
    pub fn from_salted_password(h: ScramHash, salt: Vec<u8>, iterations: i32, salted: &[u8]) -> Self {
        let client_key = hmac(h, salted, b"Client Key");
        ScramCredential {
            salt,
            iterations,
            stored_key: digest::digest(h.digest(), &client_key).as_ref().to_vec(),
            server_key: hmac(h, salted, b"Server Key"),
        }
    }
}

/// Why an exchange failed; the text is the client's error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramError(pub String);

/// Kafka's one answer to a wrong password, an unknown user or a deleted credential alike, so
/// that a failed login does not tell whether the user exists.
fn invalid_credentials(h: ScramHash) -> ScramError {
    ScramError(format!(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
        h.name()
    ))
}

fn fail<T>(why: &str) -> Result<T, ScramError> {
    Err(ScramError(why.to_string()))
}

/// The server side of one exchange.
#[derive(Debug)]
pub enum ScramServer {
    /// Waiting for client-first.
    Start(ScramHash),
    /// Sent server-first; waiting for client-final.
    Challenged {
        hash: ScramHash,
        user: String,
        credential: ScramCredential,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

/// The attributes of a SCRAM message (`k=v,...`); `None` if malformed.
fn attributes(msg: &str) -> Option<Vec<(char, &str)>> {
    msg.split(',')
        .map(|part| {
            let mut c = part.chars();
            let k = c.next()?;
            (c.next()? == '=').then(|| (k, &part[2..]))
        })
        .collect()
}

/// RFC 5802's saslname: `=2C` is a comma and `=3D` an equals sign.
fn unescape(name: &str) -> Result<String, ScramError> {
    let out = name.replace("=2C", ",").replace("=3D", "=");
    if out.contains('=') && !name.contains("=3D") {
        return fail("Invalid username: bad escape");
    }
    Ok(out)
}

impl ScramServer {
    pub fn new(h: ScramHash) -> Self {
        ScramServer::Start(h)
    }

    /// Take the client's message: the reply to send, and the user once authenticated.
    /// `lookup` finds a user's credential; `server_nonce` is random (given, for tests).
    pub fn step(
        &mut self,
        msg: &[u8],
        lookup: impl Fn(&str) -> Option<ScramCredential>,
        server_nonce: &str,
    ) -> Result<(Vec<u8>, Option<String>), ScramError> {
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError("Invalid SCRAM message: not UTF-8".into()))?;
        match std::mem::replace(self, ScramServer::Done) {
            ScramServer::Start(hash) => {
                // gs2-header: no channel binding ("n" or "y"), an optional authzid.
                let mut parts = msg.splitn(3, ',');
                let (cb, authzid, bare) = (parts.next(), parts.next(), parts.next());
                let (Some(cb), Some(authzid), Some(bare)) = (cb, authzid, bare) else {
                    return fail("Invalid SCRAM client first message");
                };
                if cb != "n" && cb != "y" {
                    return fail("Invalid SCRAM client first message: channel binding is not supported");
                }
                let attrs = attributes(bare).ok_or_else(|| ScramError("Invalid SCRAM client first message".into()))?;
                let (Some(('n', user)), Some(('r', client_nonce))) = (attrs.first().copied(), attrs.get(1).copied())
                else {
                    return fail("Invalid SCRAM client first message: expected n= and r=");
                };
                // Extensions (Kafka's tokenauth for delegation tokens) are not built.
                if attrs.len() > 2 {
                    return fail("Invalid SCRAM client first message: extensions are not supported");
                }
                let user = unescape(user)?;
                if let Some(a) = authzid.strip_prefix("a=") {
                    if unescape(a)? != user {
                        return fail("Authentication failed: Client requested an authorization id that is different from username");
                    }
                } else if !authzid.is_empty() {
                    return fail("Invalid SCRAM client first message");
                }
                if client_nonce.is_empty() {
                    return fail("Invalid SCRAM client first message: empty nonce");
                }
                let Some(credential) = lookup(&user) else {
                    return Err(invalid_credentials(hash));
                };
                let nonce = format!("{client_nonce}{server_nonce}");
                let server_first = format!("r={nonce},s={},i={}", B64.encode(&credential.salt), credential.iterations);
                *self = ScramServer::Challenged {
                    hash,
                    user,
                    credential,
                    client_first_bare: bare.to_string(),
                    server_first: server_first.clone(),
                    nonce,
                };
                Ok((server_first.into_bytes(), None))
            }
            ScramServer::Challenged { hash, user, credential, client_first_bare, server_first, nonce } => {
                let Some((without_proof, proof)) = msg.rsplit_once(",p=") else {
                    return fail("Invalid SCRAM client final message: no proof");
                };
                let attrs =
                    attributes(without_proof).ok_or_else(|| ScramError("Invalid SCRAM client final message".into()))?;
                let (Some(('c', _)), Some(('r', got_nonce))) = (attrs.first().copied(), attrs.get(1).copied()) else {
                    return fail("Invalid SCRAM client final message: expected c= and r=");
                };
                // Exactly, as Kafka 4 checks it (librdkafka before 2.6.1 repeats its own nonce
                // in front of the server's, and is refused by both).
                if got_nonce != nonce {
                    return Err(invalid_credentials(hash));
                }
                let proof =
                    B64.decode(proof).map_err(|_| ScramError("Invalid SCRAM client final message: proof".into()))?;
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let client_signature = hmac(hash, &credential.stored_key, auth_message.as_bytes());
                if proof.len() != client_signature.len() {
                    return Err(invalid_credentials(hash));
                }
                let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(a, b)| a ^ b).collect();
                let computed = digest::digest(hash.digest(), &client_key);
                // Compared in time that does not depend on where they differ.
                let diff = computed.as_ref().iter().zip(&credential.stored_key).fold(0u8, |acc, (a, b)| acc | (a ^ b));
                if diff != 0 || computed.as_ref().len() != credential.stored_key.len() {
                    return Err(invalid_credentials(hash));
                }
                let server_signature = hmac(hash, &credential.server_key, auth_message.as_bytes());
                Ok((format!("v={}", B64.encode(server_signature)).into_bytes(), Some(user)))
            }
            ScramServer::Done => fail("SCRAM exchange already complete"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example: user "user", password "pencil".
    fn rfc_credential() -> ScramCredential {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let mut salted = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(4096).unwrap(),
            &salt,
            b"pencil",
            &mut salted,
        );
        ScramCredential::from_salted_password(ScramHash::Sha256, salt, 4096, &salted)
    }

    #[test]
    fn rfc_7677_exchange() {
        let mut s = ScramServer::new(ScramHash::Sha256);
        let lookup = |u: &str| (u == "user").then(rfc_credential);
        let (first, user) =
            s.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", lookup, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0").unwrap();
        assert_eq!(
            String::from_utf8(first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        assert_eq!(user, None);
        let final_msg = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let (last, user) = s.step(final_msg.as_bytes(), lookup, "").unwrap();
        assert_eq!(String::from_utf8(last).unwrap(), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        assert_eq!(user.as_deref(), Some("user"));
    }

    #[test]
    fn a_wrong_proof_an_unknown_user_or_a_changed_nonce_fails() {
        let lookup = |u: &str| (u == "user").then(rfc_credential);
        let mut s = ScramServer::new(ScramHash::Sha256);
        let unknown = s.step(b"n,,n=nobody,r=abc", lookup, "xyz").unwrap_err();
        let mut s = ScramServer::new(ScramHash::Sha256);
        s.step(b"n,,n=user,r=abc", lookup, "xyz").unwrap();
        let e = s.step(b"c=biws,r=abcxyz,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", lookup, "").unwrap_err();
        assert_eq!(e, unknown, "a wrong password and an unknown user get the same answer");
        assert!(e.0.contains("invalid credentials with SASL mechanism SCRAM-SHA-256"), "{e:?}");
        let mut s = ScramServer::new(ScramHash::Sha256);
        s.step(b"n,,n=user,r=abc", lookup, "xyz").unwrap();
        assert_eq!(s.step(b"c=biws,r=abcXXX,p=AAAA", lookup, "").unwrap_err(), unknown, "a changed nonce");
        let mut s = ScramServer::new(ScramHash::Sha256);
        s.step(b"n,,n=user,r=abc", lookup, "xyz").unwrap();
        assert_eq!(s.step(b"c=biws,r=abcabcxyz,p=AAAA", lookup, "").unwrap_err(), unknown, "a repeated nonce");
        let mut s = ScramServer::new(ScramHash::Sha256);
        assert!(s.step(b"p=tls-unique,,n=user,r=abc", lookup, "xyz").is_err(), "channel binding");
        let mut s = ScramServer::new(ScramHash::Sha256);
        assert!(s.step(b"n,,n=user,r=abc,tokenauth=true", lookup, "xyz").is_err(), "delegation tokens");
        let mut s = ScramServer::new(ScramHash::Sha256);
        assert!(s.step(b"garbage", lookup, "xyz").is_err());
        assert!(s.step(b"n,,n=user,r=abc", lookup, "xyz").is_err(), "no second exchange");
    }
}
