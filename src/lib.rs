//! kes: a Key Encryption Service compatible with MinIO's KES.
//!
//! The way of one request is described in `docs/ARCHITECTURE.md`.

pub mod api;
pub mod apikey;
pub mod cache;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod expiry;
pub mod http;
pub mod identity;
pub mod keys;
pub mod keystore;
pub mod logging;
pub mod memory;
pub mod names;
pub mod observe;
pub mod pem;
pub mod policy;
pub mod routes;
pub mod server;
pub mod state;
pub mod sync;
pub mod timefmt;
pub mod tls;
