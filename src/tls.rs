//! TLS material: certificate chains and their keys read from PEM files, checked to belong
//! together, and served to new handshakes from a store a reload can refresh.
//!
//! Each TLS listener's handshakes ask a `CertResolver` for the pair to present; a reload reads
//! every listener's files again and swaps the new pairs in, all of them or none. A connection
//! keeps the certificate it was opened with: rustls asks the resolver once per handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio_rustls::rustls;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::metrics::METRICS;

/// A certificate chain with the private key that belongs to its leaf.
#[derive(Debug, Clone)]
pub struct Pair {
    pub key: Arc<CertifiedKey>,
    /// The leaf's notAfter, in Unix seconds.
    pub not_after: i64,
}

impl Pair {
    /// A pair from PEM contents: the chain (leaf first) and the leaf's private key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Pair, String> {
        let certs = rustls_pemfile::certs(&mut &cert_pem[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("bad certificate PEM: {e}"))?;
        let leaf = certs
            .first()
            .ok_or("no certificate in the certificate PEM")?;
        let not_after = not_after(leaf)?;
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|e| format!("bad key PEM: {e}"))?
            .ok_or("no private key in the key PEM")?;
        let signing = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("unusable private key: {e}"))?;
        let certified = CertifiedKey::new(certs, signing);
        // A pair that does not fit would pass here and fail every handshake after it.
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err("the private key does not belong to the certificate".into())
            }
            // Unknown (a key type that cannot tell its public key) is refused too: serving a
            // pair nobody could check is the failure this check exists to prevent.
            Err(e) => {
                return Err(format!(
                    "cannot check that the private key belongs to the certificate: {e}"
                ))
            }
        }
        Ok(Pair {
            key: Arc::new(certified),
            not_after,
        })
    }

    /// A pair from its files; errors name the file they are about.
    pub fn read(cert: &Path, key: &Path) -> Result<Pair, String> {
        let read = |what: &str, p: &Path| {
            std::fs::read(p).map_err(|e| format!("cannot read {what} `{}`: {e}", p.display()))
        };
        let (cert_pem, key_pem) = (read("certificate", cert)?, read("key", key)?);
        Pair::from_pem(&cert_pem, &key_pem).map_err(|why| {
            format!(
                "certificate `{}`, key `{}`: {why}",
                cert.display(),
                key.display()
            )
        })
    }
}

/// A leaf's notAfter, in Unix seconds.
fn not_after(der: &[u8]) -> Result<i64, String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("unreadable certificate: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// What new handshakes on one listener present; swapped whole by a rotation.
#[derive(Debug)]
pub struct CertResolver(ArcSwap<CertifiedKey>);

impl CertResolver {
    pub fn new(pair: &Pair) -> CertResolver {
        CertResolver(ArcSwap::new(pair.key.clone()))
    }

    /// The pair the next handshake gets.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.0.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// A rustls server configuration (no client certificates) for PEM chain and key contents,
/// checked as a listener's are.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, String> {
    let pair = Pair::from_pem(cert_pem, key_pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(CertResolver::new(&pair)));
    Ok(Arc::new(config))
}

/// One TLS listener's files and what its handshakes ask.
struct Served {
    name: String,
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<CertResolver>,
}

/// Every TLS listener's pair, by listener; built at start, refreshed by reloads. The files are
/// the ones each listener was started with: a rotation replaces their contents (as
/// cert-manager or a mounted Secret does), a new path needs a graceful upgrade like any
/// listener change.
#[derive(Default)]
pub struct CertStore {
    served: Vec<Served>,
}

/// Pairs read by `CertStore::read_all`, one per listener, not served yet.
pub struct Rotation(Vec<Pair>);

impl CertStore {
    /// Reads a listener's pair; the resolver to give its TLS settings. `name` (its address)
    /// names it in errors, logs and the expiry gauge.
    pub fn add(
        &mut self,
        name: &str,
        cert: &Path,
        key: &Path,
    ) -> Result<Arc<CertResolver>, String> {
        let pair = Pair::read(cert, key).map_err(|why| format!("listener {name}: {why}"))?;
        let resolver = Arc::new(CertResolver::new(&pair));
        expiry_gauge(name, &pair);
        self.served.push(Served {
            name: name.to_string(),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            resolver: resolver.clone(),
        });
        Ok(resolver)
    }

    /// Reads every listener's files again. One bad pair fails the whole rotation, so a reload
    /// either applies everything or nothing.
    pub fn read_all(&self) -> Result<Rotation, String> {
        self.served
            .iter()
            .map(|s| {
                Pair::read(&s.cert, &s.key).map_err(|why| format!("listener {}: {why}", s.name))
            })
            .collect::<Result<_, _>>()
            .map(Rotation)
    }

    /// Serves the pairs of `rotation` to new handshakes; open connections keep theirs.
    pub fn install(&self, rotation: Rotation) {
        for (s, pair) in self.served.iter().zip(rotation.0) {
            if s.resolver.current().cert != pair.key.cert {
                log::info!(
                    "listener {}: new certificate from `{}` (valid until {})",
                    s.name,
                    s.cert.display(),
                    rfc3339(pair.not_after)
                );
            }
            s.resolver.0.store(pair.key.clone());
            expiry_gauge(&s.name, &pair);
        }
    }
}

fn expiry_gauge(listener: &str, pair: &Pair) {
    METRICS
        .tls_certificate_expiry
        .with_label_values(&[listener])
        .set(pair.not_after);
}

fn rfc3339(unix: i64) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
#[path = "tls/tests.rs"]
mod tests;
