//! kes: a Key Encryption Service compatible with MinIO's KES.
//!
//! The way of one request is described in `docs/ARCHITECTURE.md`.

pub mod apikey;
pub mod cli;
pub mod identity;
pub mod keystore;
