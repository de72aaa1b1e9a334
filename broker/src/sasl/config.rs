//! A SASL listener's settings as Kafka reads them: `sasl.enabled.mechanisms` (broker-wide,
//! or `listener.name.<l>.sasl.enabled.mechanisms`) and, per mechanism, the JAAS text in
//! `listener.name.<l>.<mechanism>.sasl.jaas.config`. Checked into a typed value at
//! startup: a mechanism Fjord does not build (GSSAPI, Kafka's default) is an error naming it.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};

use super::scram::ScramHash;

/// The broker-wide SASL keys, with Kafka's defaults.
pub const KEYS: &[(&str, &str)] = &[
    ("sasl.enabled.mechanisms", "GSSAPI"),
    ("sasl.mechanism.inter.broker.protocol", "GSSAPI"),
    ("connection.failed.authentication.delay.ms", "100"),
    ("connections.max.reauth.ms", "0"),
];

/// The `sasl.*` key a `listener.name.<l>.…` key sets, if it is one: the mechanism list, or
/// a mechanism's JAAS configuration (`<mechanism>.sasl.jaas.config`).
pub fn listener_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix("listener.name.") else { return false };
    let Some((_, k)) = rest.split_once('.') else { return false };
    k == "sasl.enabled.mechanisms" || k.strip_suffix(".sasl.jaas.config").is_some_and(|m| !m.is_empty())
}

/// The mechanisms Fjord builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(ScramHash),
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(h) => h.name(),
        }
    }

    fn parse(name: &str) -> Result<Self> {
        match name {
            "PLAIN" => Ok(Mechanism::Plain),
            "SCRAM-SHA-256" => Ok(Mechanism::Scram(ScramHash::Sha256)),
            "SCRAM-SHA-512" => Ok(Mechanism::Scram(ScramHash::Sha512)),
            "OAUTHBEARER" | "GSSAPI" => bail!("SASL mechanism {name} is not built yet (PLAIN and SCRAM are)"),
            other => bail!("unknown SASL mechanism {other:?}"),
        }
    }
}

/// One SASL listener's settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SaslConfig {
    pub listener: String,
    pub mechanisms: Vec<Mechanism>,
    /// PLAIN's users and passwords (the PlainLoginModule's `user_<name>="<password>"`).
    pub plain_users: BTreeMap<String, String>,
    /// `connection.failed.authentication.delay.ms`: a failed login is answered this late,
    /// which slows a password guesser down.
    pub failed_delay_ms: u64,
}

impl SaslConfig {
    /// The settings of `listener` from `get(key)` (the listener's override or else the
    /// broker-wide value; `""` when neither is set).
    pub fn from_settings(listener: &str, get: impl Fn(&str) -> String) -> Result<Self> {
        let lname = listener.to_ascii_lowercase();
        let mechanisms = get("sasl.enabled.mechanisms")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(Mechanism::parse)
            .collect::<Result<Vec<_>>>()
            .map_err(|e| anyhow!("sasl.enabled.mechanisms (listener {listener}): {e}"))?;
        if mechanisms.is_empty() {
            bail!("listener {listener} uses SASL but sasl.enabled.mechanisms is empty");
        }
        if get("connections.max.reauth.ms").trim() != "0" {
            bail!("connections.max.reauth.ms: re-authentication (KIP-368) is not built yet; leave it 0");
        }
        let failed_delay_ms = get("connection.failed.authentication.delay.ms")
            .trim()
            .parse()
            .map_err(|e| anyhow!("connection.failed.authentication.delay.ms: {e}"))?;
        let mut plain_users = BTreeMap::new();
        for m in &mechanisms {
            let key = format!("listener.name.{lname}.{}.sasl.jaas.config", m.name().to_ascii_lowercase());
            let text = get(&key);
            // SCRAM's users are in the metadata quorum: its login module, if given, has
            // nothing the broker reads.
            if text.trim().is_empty() && matches!(m, Mechanism::Scram(_)) {
                continue;
            }
            if text.trim().is_empty() {
                bail!("listener {listener} enables {}: set {key}", m.name());
            }
            let jaas = Jaas::parse(&text).map_err(|e| anyhow!("{key}: {e}"))?;
            match m {
                Mechanism::Scram(_) => {
                    if jaas.module != "org.apache.kafka.common.security.scram.ScramLoginModule" {
                        bail!(
                            "{key}: SCRAM takes org.apache.kafka.common.security.scram.ScramLoginModule, not {}",
                            jaas.module
                        );
                    }
                }
                Mechanism::Plain => {
                    if jaas.module != "org.apache.kafka.common.security.plain.PlainLoginModule" {
                        bail!(
                            "{key}: PLAIN takes org.apache.kafka.common.security.plain.PlainLoginModule, not {}",
                            jaas.module
                        );
                    }
                    plain_users = jaas
                        .options
                        .iter()
                        .filter_map(|(k, v)| Some((k.strip_prefix("user_")?.to_string(), v.clone())))
                        .collect();
                    if plain_users.is_empty() {
                        bail!("{key}: no user_<name>=\"<password>\" entry, so nobody could log in");
                    }
                }
            }
        }
        Ok(SaslConfig { listener: listener.to_string(), mechanisms, plain_users, failed_delay_ms })
    }

    pub fn mechanism(&self, name: &str) -> Option<Mechanism> {
        self.mechanisms.iter().copied().find(|m| m.name() == name)
    }
}

/// One JAAS login module entry: `<class> <flag> key="value" ... ;`.
#[derive(Debug, PartialEq)]
struct Jaas {
    module: String,
    options: Vec<(String, String)>,
}

impl Jaas {
    fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let body = text.strip_suffix(';').ok_or_else(|| anyhow!("a JAAS entry ends with ';'"))?;
        let mut rest = body.trim_start();
        let mut word = || {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let w = &rest[..end];
            rest = rest[end..].trim_start();
            w.to_string()
        };
        let module = word();
        let flag = word();
        if !matches!(flag.as_str(), "required" | "requisite" | "sufficient" | "optional") {
            bail!("expected a control flag (required) after {module}, found {flag:?}");
        }
        let mut options = Vec::new();
        let mut s = rest;
        while !s.is_empty() {
            let (key, after) = s.split_once('=').ok_or_else(|| anyhow!("expected key=\"value\" at {s:?}"))?;
            let after = after.trim_start();
            let (value, tail) = if let Some(q) = after.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = q.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                        Some((i, '"')) => break i,
                        Some((_, c)) => value.push(c),
                        None => bail!("unterminated quoted value for {}", key.trim()),
                    }
                };
                (value, &q[end + 1..])
            } else {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (after[..end].to_string(), &after[end..])
            };
            options.push((key.trim().to_string(), value));
            s = tail.trim_start();
        }
        Ok(Jaas { module, options })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required
        username="admin" password="admin-secret"
        user_admin="admin-secret" user_alice="alice \"quoted\" secret";"#;

    fn parse(pairs: &[(&str, &str)]) -> Result<SaslConfig> {
        let m: BTreeMap<&str, &str> = KEYS.iter().copied().chain(pairs.iter().copied()).collect();
        SaslConfig::from_settings("SASL_SSL", |k| m.get(k).copied().unwrap_or("").to_string())
    }

    #[test]
    fn plain_users_come_from_the_jaas_entry() {
        let c =
            parse(&[("sasl.enabled.mechanisms", "PLAIN"), ("listener.name.sasl_ssl.plain.sasl.jaas.config", PLAIN)])
                .unwrap();
        assert_eq!(c.mechanisms, vec![Mechanism::Plain]);
        assert_eq!(c.plain_users["admin"], "admin-secret");
        assert_eq!(c.plain_users["alice"], "alice \"quoted\" secret");
        assert_eq!(c.plain_users.len(), 2);
        assert_eq!(c.failed_delay_ms, 100);
    }

    #[test]
    fn what_is_not_built_or_incomplete_is_refused() {
        let e = parse(&[]).unwrap_err().to_string();
        assert!(e.contains("GSSAPI is not built"), "{e}");
        let e = parse(&[("sasl.enabled.mechanisms", "PLAIN")]).unwrap_err().to_string();
        assert!(e.contains("listener.name.sasl_ssl.plain.sasl.jaas.config"), "{e}");
        let e = parse(&[
            ("sasl.enabled.mechanisms", "PLAIN"),
            ("listener.name.sasl_ssl.plain.sasl.jaas.config", "x.Y required;"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("PlainLoginModule"), "{e}");
        let e = parse(&[
            ("sasl.enabled.mechanisms", "PLAIN"),
            ("listener.name.sasl_ssl.plain.sasl.jaas.config", PLAIN),
            ("connections.max.reauth.ms", "60000"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("KIP-368"), "{e}");
    }

    #[test]
    fn listener_keys() {
        assert!(listener_key("listener.name.sasl_ssl.plain.sasl.jaas.config"));
        assert!(listener_key("listener.name.external.sasl.enabled.mechanisms"));
        assert!(!listener_key("listener.name.external.sasl.nope"));
        assert!(!listener_key("sasl.jaas.config"));
    }
}
