//! HTTPS on the token endpoint, so client secrets and passwords never cross
//! the network in clear. The certificate and key come from files (typically
//! a `kubernetes.io/tls` Secret, e.g. one cert-manager renews) and are re-read
//! when they change: new handshakes get the new pair, open connections keep
//! theirs, and a bad or half-written pair keeps the previous one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use sigil_runtime::tls::PairError;

use crate::error::{Error, Result};

/// The served certificate and key, swapped whole on reload.
pub struct CertStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The certificate file's bytes, so an unchanged re-read does nothing.
    cert_pem: ArcSwap<Vec<u8>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").field("cert_file", &self.cert_file).finish_non_exhaustive()
    }
}

impl CertStore {
    /// First load: any problem is a start-up error naming the file.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<CertStore> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (pem, key) = read_pair(cert_file, key_file, &provider)?;
        Ok(CertStore {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider,
            current: ArcSwap::from_pointee(key),
            cert_pem: ArcSwap::from_pointee(pem),
        })
    }

    /// Re-reads both files; on error the current pair stays. `Ok(true)` when
    /// a new pair is now served.
    pub fn reload(&self) -> Result<bool> {
        let (pem, key) = read_pair(&self.cert_file, &self.key_file, &self.provider)?;
        if **self.cert_pem.load() == pem {
            return Ok(false);
        }
        self.current.store(Arc::new(key));
        self.cert_pem.store(Arc::new(pem));
        Ok(true)
    }

    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// A rustls configuration that asks this store for the pair on every handshake.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load_full())
    }
}

/// Reads a certificate chain and its key. Errors name the file and the
/// problem, never key bytes. A pair whose key does not match its certificate
/// (e.g. read half-way through a rotation) is refused, so it is never served.
fn read_pair(cert_file: &Path, key_file: &Path, provider: &CryptoProvider) -> Result<(Vec<u8>, CertifiedKey)> {
    let pem = std::fs::read(cert_file).map_err(Error::read(cert_file))?;
    let key_pem = zeroize::Zeroizing::new(std::fs::read(key_file).map_err(Error::read(key_file))?);
    let certified = sigil_runtime::tls::certified_key(&pem, &key_pem, provider).map_err(|e| {
        let (path, reason) = match e {
            PairError::Mismatch(why) => {
                (key_file, format!("does not match the certificate in {}: {why}", cert_file.display()))
            }
            e if e.in_key() => (key_file, e.to_string()),
            e => (cert_file, e.to_string()),
        };
        Error::File { path: path.to_path_buf(), reason }
    })?;
    Ok((pem, certified))
}
