//! kes: a Key Encryption Service compatible with MinIO's KES.
//!
//! The way of one request is described in `docs/ARCHITECTURE.md`.

pub mod crypto;
pub mod identity;
pub mod keystore;
pub mod timefmt;
