//! TLS on the Kafka listeners (Kafka's `SSL` security protocol), with rustls: each SSL
//! listener has a server configuration built from its checked settings (`config.rs`),
//! rebuilt when its certificate, key or trust store files change, so an operator rotates
//! certificates without a restart. A failed rebuild keeps the last good one and says so.

pub mod config;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};

use config::{ClientAuth, Pem, SslConfig, TlsVersion};

fn pem_bytes(p: &Pem) -> Result<Vec<u8>> {
    match p {
        Pem::File(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display())),
        Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
    }
}

fn certificates(p: &Pem, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(&pem_bytes(p)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{what}: {e:?}"))?;
    if certs.is_empty() {
        bail!("{what} holds no PEM certificate");
    }
    Ok(certs)
}

/// Kafka's suite names are IANA's; rustls names its TLS 1.3 suites `TLS13_*`.
fn iana_name(suite: rustls::CipherSuite) -> String {
    let name = format!("{suite:?}");
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

fn provider(suites: &[String]) -> Result<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !suites.is_empty() {
        for s in suites {
            if !provider.cipher_suites.iter().any(|c| iana_name(c.suite()) == *s) {
                let offered: Vec<String> = provider.cipher_suites.iter().map(|c| iana_name(c.suite())).collect();
                bail!("ssl.cipher.suites: {s} is not offered (these are: {})", offered.join(", "));
            }
        }
        provider.cipher_suites.retain(|c| suites.contains(&iana_name(c.suite())));
    }
    Ok(provider)
}

/// A rustls server configuration for `c`, reading its files now.
pub fn server_config(c: &SslConfig) -> Result<ServerConfig> {
    let what = |k: &str| format!("listener {}: {k}", c.listener);
    let chain = certificates(&c.certificate_chain, &what("the key store's certificate chain"))?;
    let key = PrivateKeyDer::from_pem_slice(&pem_bytes(&c.private_key)?)
        .map_err(|e| anyhow!("{}: {e:?}", what("the key store's private key")))?;
    let provider = Arc::new(provider(&c.cipher_suites)?);
    let versions: Vec<&'static SupportedProtocolVersion> = c
        .protocols
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| anyhow!("{}: {e}", what("ssl.enabled.protocols with ssl.cipher.suites")))?;
    let verifier = match (&c.truststore, c.client_auth) {
        (_, ClientAuth::None) | (None, _) => WebPkiClientVerifier::no_client_auth(),
        (Some(trust), auth) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(trust, &what("the trust store"))? {
                roots.add(ca).map_err(|e| anyhow!("{}: {e}", what("a trust store certificate")))?;
            }
            let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let b = if auth == ClientAuth::Requested { b.allow_unauthenticated() } else { b };
            b.build().map_err(|e| anyhow!("{}: {e}", what("the client certificate verifier")))?
        }
    };
    builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| anyhow!("{}: {e}", what("the key store's key and certificate")))
}

/// An SSL listener's current server configuration, and what it was built from.
pub struct TlsListener {
    settings: SslConfig,
    current: RwLock<Arc<ServerConfig>>,
    /// Modification times of `settings.files()` when `current` was built.
    built_from: Mutex<Vec<Option<SystemTime>>>,
}

fn modified(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files.iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
}

impl TlsListener {
    /// Build it now: a listener whose key store cannot be read stops the broker at startup.
    pub fn new(settings: SslConfig) -> Result<Self> {
        let stamps = modified(&settings.files());
        let config = server_config(&settings)?;
        Ok(TlsListener { settings, current: RwLock::new(Arc::new(config)), built_from: Mutex::new(stamps) })
    }

    pub fn listener(&self) -> &str {
        &self.settings.listener
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().clone())
    }

    /// Rebuild if a file changed since the last build; true if it did. Blocking (reads
    /// files): run it off the runtime workers.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let stamps = modified(&self.settings.files());
        if *self.built_from.lock() == stamps {
            return Ok(false);
        }
        // Remembered even if the build fails, so a broken file is reported once, not every
        // pass; the next change is tried again.
        *self.built_from.lock() = stamps;
        let config = server_config(&self.settings)?;
        *self.current.write() = Arc::new(config);
        Ok(true)
    }
}
