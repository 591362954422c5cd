//! The issuer's one error type: everything that can stop it from starting or
//! make a reload fail. Request-level failures are OAuth errors (`oauth.rs`),
//! which are answers to a client, not failures of the issuer.

use std::net::SocketAddr;
use std::path::PathBuf;

use sigil_api::contract::ContractError;
use sigil_api::jwk::JwkError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("key directory {}: {source}", dir.display())]
    Keys { dir: PathBuf, source: ContractError },
    #[error("{}: {source}", path.display())]
    Jwks { path: PathBuf, source: JwkError },
    #[error("{}: {reason}", path.display())]
    Clients { path: PathBuf, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// Bad input to a subcommand.
    #[error("{0}")]
    Input(String),
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
}

impl Error {
    /// Reads a file, naming it in the error.
    pub(crate) fn read(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |e| Error::File { path: path.to_path_buf(), reason: e.to_string() }
    }

    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Config(_) | Error::Input(_) => "config",
            Error::File { .. } | Error::Io { .. } => "io",
            Error::Keys { .. } => "key_material",
            Error::Jwks { .. } => "jwks",
            Error::Clients { .. } => "clients",
            Error::Bind { .. } => "bind",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
