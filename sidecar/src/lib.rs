//! `sigil-sidecar`: a reverse proxy that verifies Bearer tokens with public
//! keys only and forwards verified requests to the application beside it.
//!
//! The request path, in its security order ([`proxy::Proxy::handle`]):
//! [`headers`] removes what clients may not send, [`path`] gives the one
//! spelling every decision uses, [`routes`] decides public or protected,
//! [`bearer`] finds the token, [`auth`] consults the [`cache`] and the pure
//! [`verify`] function against the current [`keys`] (kept fresh by [`jwks`]),
//! [`routes`] names the scopes to authorise, and [`proxy`] forwards the
//! normalised request with the identity [`headers`].

pub mod auth;
pub mod bearer;
pub mod cache;
pub mod config;
pub mod headers;
pub mod jwks;
pub mod keys;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod rejection;
pub mod routes;
pub mod run;
pub mod server;
pub mod tunnel;
pub mod upstream;
pub mod verify;

/// Errors that stop the sidecar from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("JWKS file: {0}")]
    JwksFile(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}

/// An error and all its causes on one line, for logs.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
