//! A listener's `ssl.*` settings as Kafka reads them: the broker-wide keys, overridden per
//! listener by `listener.name.<listener in lower case>.ssl.*`, validated into a typed value
//! at startup. Only what Fjord builds is accepted: a JKS or PKCS12 store, an encrypted key,
//! TLS 1.1 or principal mapping rules are a startup error that names the key.

use std::path::PathBuf;

use anyhow::{bail, Result};

/// Every `ssl.*` key a listener may set, with Kafka's defaults.
pub const KEYS: &[(&str, &str)] = &[
    ("ssl.keystore.type", "JKS"),
    ("ssl.keystore.location", ""),
    ("ssl.keystore.password", ""),
    ("ssl.key.password", ""),
    ("ssl.keystore.certificate.chain", ""),
    ("ssl.keystore.key", ""),
    ("ssl.truststore.type", "JKS"),
    ("ssl.truststore.location", ""),
    ("ssl.truststore.password", ""),
    ("ssl.truststore.certificates", ""),
    ("ssl.client.auth", "none"),
    ("ssl.enabled.protocols", "TLSv1.2,TLSv1.3"),
    ("ssl.protocol", "TLSv1.3"),
    ("ssl.cipher.suites", ""),
    ("ssl.principal.mapping.rules", "DEFAULT"),
    ("ssl.endpoint.identification.algorithm", "https"),
];

/// Whether `key` (as given, `listener.name.<l>.ssl.*` or `ssl.*`) is one of `KEYS`, and
/// the `ssl.*` key it sets.
pub fn ssl_key(key: &str) -> Option<&'static str> {
    let bare = match key.strip_prefix("listener.name.") {
        Some(rest) => &rest[rest.find(".ssl.")? + 1..],
        None => key,
    };
    KEYS.iter().map(|(k, _)| *k).find(|k| *k == bare)
}

/// PEM text: in a file (read again when it changes) or inline in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

impl Pem {
    pub fn file(&self) -> Option<&PathBuf> {
        match self {
            Pem::File(p) => Some(p),
            Pem::Inline(_) => None,
        }
    }
}

/// `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// A certificate is asked for; a client without one is served, one with a bad one is not.
    Requested,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// One TLS listener's settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SslConfig {
    pub listener: String,
    /// The certificate chain, leaf first.
    pub certificate_chain: Pem,
    /// The private key (unencrypted PKCS#8, PKCS#1 or SEC1).
    pub private_key: Pem,
    /// The CAs a client certificate must chain to.
    pub truststore: Option<Pem>,
    pub client_auth: ClientAuth,
    pub protocols: Vec<TlsVersion>,
    /// Kafka's (IANA) names; empty for every suite rustls offers.
    pub cipher_suites: Vec<String>,
}

impl SslConfig {
    /// The settings of `listener` from `get(key)`, which answers the listener's override
    /// or else the broker-wide value.
    pub fn from_settings(listener: &str, get: impl Fn(&str) -> String) -> Result<Self> {
        let key = |k: &str| format!("{k} (listener {listener})");
        let store_type = |k: &str| -> Result<()> {
            match get(k).to_ascii_uppercase().as_str() {
                "PEM" => Ok(()),
                other => bail!(
                    "{}={other}: Fjord reads PEM stores only; set {k}=PEM with PEM files (PKCS12 and JKS are not built)",
                    key(k)
                ),
            }
        };
        store_type("ssl.keystore.type")?;
        if !get("ssl.keystore.password").is_empty() {
            bail!("{} cannot be set with a PEM key store (Kafka refuses it too)", key("ssl.keystore.password"));
        }
        if !get("ssl.key.password").is_empty() {
            bail!(
                "{}: encrypted private keys are not built; give the key unencrypted (PKCS#8) and protect the file",
                key("ssl.key.password")
            );
        }
        let (location, chain, pkey) =
            (get("ssl.keystore.location"), get("ssl.keystore.certificate.chain"), get("ssl.keystore.key"));
        let (certificate_chain, private_key) = match (location.is_empty(), chain.is_empty(), pkey.is_empty()) {
            (false, true, true) => (Pem::File(location.clone().into()), Pem::File(location.into())),
            (true, false, false) => (Pem::Inline(chain), Pem::Inline(pkey)),
            _ => bail!(
                "listener {listener} uses SSL: set ssl.keystore.location (a PEM file with the key and the certificate \
                 chain), or both ssl.keystore.certificate.chain and ssl.keystore.key, not both ways"
            ),
        };
        let (trust_location, trust_inline) = (get("ssl.truststore.location"), get("ssl.truststore.certificates"));
        let truststore = match (trust_location.is_empty(), trust_inline.is_empty()) {
            (true, true) => None,
            (false, true) => Some(Pem::File(trust_location.into())),
            (true, false) => Some(Pem::Inline(trust_inline)),
            (false, false) => bail!(
                "{}: set ssl.truststore.location or ssl.truststore.certificates, not both",
                key("ssl.truststore.*")
            ),
        };
        if truststore.is_some() {
            store_type("ssl.truststore.type")?;
        }
        if !get("ssl.truststore.password").is_empty() {
            bail!("{} cannot be set with a PEM trust store", key("ssl.truststore.password"));
        }
        let client_auth = match get("ssl.client.auth").to_ascii_lowercase().as_str() {
            "none" => ClientAuth::None,
            "requested" => ClientAuth::Requested,
            "required" => ClientAuth::Required,
            other => bail!("{}={other}: expected none, requested or required", key("ssl.client.auth")),
        };
        if client_auth != ClientAuth::None && truststore.is_none() {
            bail!(
                "{} asks for client certificates but no trust store says which CAs to accept",
                key("ssl.client.auth")
            );
        }
        let protocols = list(&get("ssl.enabled.protocols"))
            .map(|p| match p {
                "TLSv1.2" => Ok(TlsVersion::Tls12),
                "TLSv1.3" => Ok(TlsVersion::Tls13),
                other => bail!("{}: {other} is not offered (TLSv1.2 and TLSv1.3 are)", key("ssl.enabled.protocols")),
            })
            .collect::<Result<Vec<_>>>()?;
        if protocols.is_empty() {
            bail!("{} is empty", key("ssl.enabled.protocols"));
        }
        // The JSSE context protocol: every TLS version a context of it offers is limited by
        // ssl.enabled.protocols anyway, so only its range is checked.
        if !matches!(get("ssl.protocol").as_str(), "TLSv1.2" | "TLSv1.3" | "TLS") {
            bail!("{}={}: expected TLSv1.2, TLSv1.3 or TLS", key("ssl.protocol"), get("ssl.protocol"));
        }
        // The principal of a certificate is used by authorization, which is not built:
        // rules would change nothing, so they are refused rather than ignored.
        if get("ssl.principal.mapping.rules").trim() != "DEFAULT" {
            bail!(
                "{}: principal mapping rules are not built (there is no authorizer yet)",
                key("ssl.principal.mapping.rules")
            );
        }
        Ok(SslConfig {
            listener: listener.to_string(),
            certificate_chain,
            private_key,
            truststore,
            client_auth,
            protocols,
            cipher_suites: list(&get("ssl.cipher.suites")).map(str::to_string).collect(),
        })
    }

    /// The files to watch for a certificate rotation.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = [&self.certificate_chain, &self.private_key]
            .into_iter()
            .chain(&self.truststore)
            .filter_map(Pem::file)
            .cloned()
            .collect();
        out.dedup();
        out
    }
}

fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<SslConfig> {
        let m: BTreeMap<&str, &str> = KEYS.iter().copied().chain(pairs.iter().copied()).collect();
        SslConfig::from_settings("SSL", |k| m[k].to_string())
    }

    #[test]
    fn a_pem_key_store_file_or_inline_text() {
        let c = parse(&[("ssl.keystore.type", "PEM"), ("ssl.keystore.location", "/k.pem")]).unwrap();
        assert_eq!(c.certificate_chain, Pem::File("/k.pem".into()));
        assert_eq!(c.protocols, vec![TlsVersion::Tls12, TlsVersion::Tls13]);
        assert_eq!(c.files(), vec![PathBuf::from("/k.pem")]);
        let c = parse(&[
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.certificate.chain", "-----BEGIN"),
            ("ssl.keystore.key", "-----BEGIN"),
            ("ssl.truststore.type", "PEM"),
            ("ssl.truststore.location", "/ca.pem"),
            ("ssl.client.auth", "required"),
            ("ssl.enabled.protocols", "TLSv1.3"),
        ])
        .unwrap();
        assert_eq!((c.client_auth, c.protocols), (ClientAuth::Required, vec![TlsVersion::Tls13]));
    }

    #[test]
    fn what_is_not_built_is_refused_by_name() {
        let pem = [("ssl.keystore.type", "PEM"), ("ssl.keystore.location", "/k.pem")];
        let err = |extra: &[(&str, &str)]| {
            let all: Vec<(&str, &str)> = pem.iter().chain(extra).copied().collect();
            parse(&all).unwrap_err().to_string()
        };
        assert!(parse(&[("ssl.keystore.location", "/k.jks")]).unwrap_err().to_string().contains("ssl.keystore.type"));
        assert!(err(&[("ssl.key.password", "x")]).contains("ssl.key.password"));
        assert!(err(&[("ssl.enabled.protocols", "TLSv1.1")]).contains("TLSv1.1"));
        assert!(err(&[("ssl.client.auth", "required")]).contains("trust store"));
        assert!(err(&[("ssl.principal.mapping.rules", "RULE:^CN=(.*)$/$1/")]).contains("mapping"));
        assert!(parse(&[("ssl.keystore.type", "PEM")]).unwrap_err().to_string().contains("ssl.keystore.location"));
    }

    #[test]
    fn listener_overrides_are_known_keys() {
        assert_eq!(ssl_key("listener.name.external.ssl.client.auth"), Some("ssl.client.auth"));
        assert_eq!(ssl_key("ssl.keystore.location"), Some("ssl.keystore.location"));
        assert_eq!(ssl_key("listener.name.external.ssl.nope"), None);
        assert_eq!(ssl_key("listener.name.external.sasl.enabled.mechanisms"), None);
    }
}
