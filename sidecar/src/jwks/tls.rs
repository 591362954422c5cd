//! The HTTP client for the JWKS URL: `https://` on rustls, trusting either the
//! system's roots or a CA bundle file (`--jwks-ca-file`). The bundle is
//! re-read before every fetch and the client rebuilt when it changed, so a
//! rotated CA (a re-mounted Secret or ConfigMap) takes effect at the next
//! fetch without a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub type JwksClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why no client could be built; the fetch fails and the last good keys stay.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the CA bundle {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the CA bundle {0} holds no PEM certificate")]
    Empty(PathBuf),
    #[error("the CA bundle {path} holds an unusable certificate: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

pub struct Tls {
    ca_file: Option<PathBuf>,
    /// The bundle the current client trusts, to notice when it changes.
    ca: Option<Vec<u8>>,
    client: JwksClient,
}

impl Tls {
    pub fn new(ca_file: Option<PathBuf>) -> Result<Tls, TlsError> {
        let ca = ca_file.as_ref().map(read).transpose()?;
        let client = build(ca_file.as_ref().zip(ca.as_deref()))?;
        Ok(Tls { ca_file, ca, client })
    }

    /// The client to fetch with, rebuilt first if the CA bundle changed.
    pub fn client(&mut self) -> Result<&JwksClient, TlsError> {
        if let Some(path) = &self.ca_file {
            let now = read(path)?;
            if self.ca.as_deref() != Some(now.as_slice()) {
                self.client = build(Some((path, &now)))?;
                tracing::info!(path = %path.display(), "JWKS URL CA bundle reloaded");
                self.ca = Some(now);
            }
        }
        Ok(&self.client)
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.clone(), source })
}

fn build(ca: Option<(&PathBuf, &[u8])>) -> Result<JwksClient, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.enforce_http(false);
    let builder = match ca {
        Some((path, pem)) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| TlsError::Invalid { path: path.clone(), reason: e.to_string() })?;
                roots.add(cert).map_err(|e| TlsError::Invalid { path: path.clone(), reason: e.to_string() })?;
            }
            if roots.is_empty() {
                return Err(TlsError::Empty(path.clone()));
            }
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Setup(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            HttpsConnectorBuilder::new().with_tls_config(config)
        }
        None => HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|e| TlsError::Setup(e.to_string()))?,
    };
    // Plain http stays possible; config decides whether a URL may use it.
    let https = builder.https_or_http().enable_http1().wrap_connector(connector);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}
