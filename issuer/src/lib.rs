//! `sigil-issuer`: the one service that holds the private key and signs JWT
//! access tokens (RFC 9068) for OAuth clients (RFC 6749 client credentials and
//! password grants). Verifiers use the JWKS it serves.
//!
//! Modules, outside in: [`config`] (flags), [`server`] (wiring) with [`tls`], [`routes`]
//! (HTTP) with [`token_request`] (parsing), [`auth`] with [`auth_cache`] and [`rate_limit`] (who is asking),
//! [`scope`] (what they get), [`token`] and [`keys`] (signing), [`clients`] and
//! [`password`] (the clients file), [`workload`] (ServiceAccount tokens and
//! SigilClients) with [`workload_watch`] (their inputs from the API server), [`state`] (reloads), [`metrics`].

pub mod auth;
pub mod auth_cache;
pub mod clients;
pub mod config;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod oauth;
pub mod password;
pub mod rate_limit;
pub mod routes;
pub mod scope;
pub mod server;
pub mod state;
pub mod tls;
pub mod token;
pub mod token_request;
pub mod workload;
pub mod workload_watch;

pub use error::{Error, Result};
