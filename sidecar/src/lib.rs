//! `sigil-sidecar`: a reverse proxy that verifies Bearer tokens with public
//! keys only and forwards verified requests to the application beside it.

pub mod keys;
pub mod verify;
