//! Master keys ("key versions"): how they are stored, and how they encrypt, decrypt and
//! compute HMACs, byte-compatible with every generation of Go KES.
//!
//! The formats are specified in `spec/formats.md`: the stored value in §2, the
//! ciphertexts in §3. In short, a ciphertext is `AEAD(plaintext) || iv || nonce`, where
//! the AEAD key is derived from the master key and the 16-byte `iv`
//! (HMAC-SHA256 for AES-256-GCM, HChaCha20 for ChaCha20-Poly1305); older servers wrapped
//! the same three parts in msgpack or JSON, which we still read, and write when
//! `compat.oldest_reader` asks for them.
//!
//! One home per form: stored keys in `stored` (protobuf messages in `proto`), the
//! current ciphertext form and the AEAD in `ciphertext`, the msgpack and JSON
//! ciphertexts in `legacy`, Go-exact JSON and base64 reading in `gojson`, and the
//! compatibility levels in `level`.

mod ciphertext;
mod gojson;
mod key;
mod legacy;
mod level;
mod proto;
mod random;
mod stored;

pub use key::{
    Cipher, DecryptError, KEY_LEN, KeyError, KeyVersion, OVERHEAD, RANDOM_LEN, random_dek,
};
pub use level::OldestReader;
pub use random::fill_random;
pub use stored::StoredForm;

// For the parts beside `key`: `use super::{...}` names these.
use key::{IV_LEN, NONCE_LEN, TAG_LEN, key_array};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod level_tests;

#[cfg(test)]
mod wipe_tests;

#[cfg(test)]
mod width_tests;

#[cfg(test)]
mod error_tests;

#[cfg(test)]
mod stored_tests;
