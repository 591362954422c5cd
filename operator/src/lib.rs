//! `sigil-operator`: reconciles SigningKeys into a private-key Secret and a
//! JWKS ConfigMap and rotates their keys. See `decide` for the lifecycle.
//!
//! A library so integration tests can run [`reconcile::reconcile`] in-process
//! against a real API server, with the seams [`reconcile::Context`] offers;
//! the binary (`main.rs`) only parses flags and calls [`controller::run`].

pub mod config;
pub mod controller;
pub mod copies;
mod decide;
pub mod distribute;
pub mod error;
pub mod fence;
#[cfg(test)]
mod fixtures;
pub mod inject;
pub mod leader;
pub mod metrics;
mod observe;
pub mod reconcile;
pub mod webhook;

pub use decide::Limits;
