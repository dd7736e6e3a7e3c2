//! The protobuf messages of the stored key (formats.md §2.2, package `miniohq.kms`).
//! Their `Debug` is written by hand so that it never shows key bytes, and the byte
//! fields are wiped on drop.

use std::fmt;

use zeroize::Zeroize;

#[derive(prost::Message)]
#[prost(skip_debug)]
pub struct SecretKey {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub r#type: u32,
}

#[derive(prost::Message)]
#[prost(skip_debug)]
pub struct HmacKey {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub hash: u32,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

#[derive(prost::Message)]
#[prost(skip_debug)]
pub struct KeyVersion {
    #[prost(message, optional, tag = "1")]
    pub key: Option<SecretKey>,
    #[prost(message, optional, tag = "2")]
    pub hmac_key: Option<HmacKey>,
    #[prost(message, optional, tag = "3")]
    pub created_at: Option<Timestamp>,
    #[prost(string, tag = "4")]
    pub created_by: String,
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl Drop for HmacKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("type", &self.r#type)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacKey")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVersion")
            .field("key", &self.key)
            .field("hmac_key", &self.hmac_key)
            .field("created_at", &self.created_at)
            .field("created_by", &self.created_by)
            .finish()
    }
}
