//! Ciphertexts of servers before 2024 (formats.md §3.3, §3.4): read always, written
//! when `compat.oldest_reader` names a generation that reads nothing newer.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::gojson::{JsonText, go_base64_decode, go_json_string_fields};
use super::{Cipher, IV_LEN, NONCE_LEN};

/// The `aead` names of the JSON form.
const JSON_AES256: &str = "AES-256-GCM-HMAC-SHA-256";
const JSON_CHACHA20: &str = "ChaCha20Poly1305";

/// msgpack markers (tinylib/msgp, as the 2022-2023 releases write them).
const FIXARRAY_5: u8 = 0x95;
const FIXSTR: u8 = 0xa0;
const STR8: u8 = 0xd9;
const STR16: u8 = 0xda;
const STR32: u8 = 0xdb;
const BIN8: u8 = 0xc4;
const BIN16: u8 = 0xc5;
const BIN32: u8 = 0xc6;

/// The parts of a ciphertext to wrap in a legacy form.
pub struct Parts<'a> {
    pub cipher: Cipher,
    /// formats.md §3.6; the 2022-2023 releases and v0.17 refuse a ciphertext whose
    /// non-empty key ID is not their key's.
    pub key_id: &'a str,
    pub iv: &'a [u8],
    pub nonce: &'a [u8],
    pub sealed: &'a [u8],
}

impl Parts<'_> {
    /// `{"aead":…,"id":…,"iv":…,"nonce":…,"bytes":…}`, as Go's `json.Marshal` writes
    /// v0.17's struct: that field order, no spaces, padded standard base64 (which
    /// contains nothing Go would escape).
    pub fn to_json(&self) -> Vec<u8> {
        let aead = match self.cipher {
            Cipher::Aes256 => JSON_AES256,
            Cipher::ChaCha20 => JSON_CHACHA20,
        };
        format!(
            r#"{{"aead":"{aead}","id":"{}","iv":"{}","nonce":"{}","bytes":"{}"}}"#,
            self.key_id,
            STANDARD.encode(self.iv),
            STANDARD.encode(self.nonce),
            STANDARD.encode(self.sealed),
        )
        .into_bytes()
    }

    /// `[algorithm, key id, iv, nonce, sealed]` as tinylib/msgp appends them: the
    /// smallest str and bin headers that fit. The algorithm is the 2022 name, which the
    /// 2022 releases compare as a string and both SDK generations of 2023 parse.
    pub fn to_msgpack(&self) -> Vec<u8> {
        let algorithm = self.cipher.legacy_name();
        let mut out = Vec::with_capacity(
            1 + 5 + algorithm.len() + 5 + self.key_id.len() + 15 * 3 + self.sealed.len(),
        );
        out.push(FIXARRAY_5);
        push_str(&mut out, algorithm.as_bytes());
        push_str(&mut out, self.key_id.as_bytes());
        push_bin(&mut out, self.iv);
        push_bin(&mut out, self.nonce);
        push_bin(&mut out, self.sealed);
        out
    }
}

fn push_str(out: &mut Vec<u8>, text: &[u8]) {
    let len = text.len();
    if len <= 31 {
        out.push(FIXSTR | len as u8);
    } else {
        push_length(out, len, [STR8, STR16, STR32]);
    }
    out.extend_from_slice(text);
}

fn push_bin(out: &mut Vec<u8>, bytes: &[u8]) {
    push_length(out, bytes.len(), [BIN8, BIN16, BIN32]);
    out.extend_from_slice(bytes);
}

/// An 8-, 16- or 32-bit big-endian length after its marker, the smallest that fits.
fn push_length(out: &mut Vec<u8>, len: usize, [m8, m16, m32]: [u8; 3]) {
    if let Ok(len) = u8::try_from(len) {
        out.extend_from_slice(&[m8, len]);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(m16);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        // Plaintexts are bounded by the request body limit, far below 4 GiB.
        let len = u32::try_from(len).expect("a ciphertext below 4 GiB");
        out.push(m32);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// The parts of a legacy ciphertext. The current layout is `sealed || iv || nonce`.
pub struct Ciphertext {
    /// The algorithm the writer recorded; Go KES ignores it.
    pub algorithm: Cipher,
    pub iv: [u8; IV_LEN],
    pub nonce: [u8; NONCE_LEN],
    /// AEAD output: encrypted plaintext followed by the tag.
    pub sealed: Vec<u8>,
}

/// Unwraps a msgpack (first byte 0x95) or JSON (first byte `{`) ciphertext. `None`
/// for anything else, including broken wrappings, which the original then tries as
/// a current-layout ciphertext (where they fail to authenticate).
pub fn parse(ciphertext: &[u8]) -> Option<Ciphertext> {
    match *ciphertext.first()? {
        FIXARRAY_5 => parse_msgpack(ciphertext),
        b'{' => parse_json(ciphertext),
        _ => None,
    }
}

/// `[algorithm: str, key id: str, iv: bin(16), nonce: bin(12), sealed: bin]`.
fn parse_msgpack(ciphertext: &[u8]) -> Option<Ciphertext> {
    let mut reader = Msgpack { rest: ciphertext };
    if reader.byte()? != FIXARRAY_5 {
        return None;
    }
    let algorithm = match reader.str()? {
        b"AES256" | b"AES256-GCM_SHA256" => Cipher::Aes256,
        b"ChaCha20" | b"XCHACHA20-POLY1305" => Cipher::ChaCha20,
        _ => return None,
    };
    let _key_id = reader.str()?;
    let iv = reader.bin()?.try_into().ok()?;
    let nonce = reader.bin()?.try_into().ok()?;
    let sealed = reader.bin()?.to_vec();
    if !reader.rest.is_empty() {
        return None;
    }
    Some(Ciphertext {
        algorithm,
        iv,
        nonce,
        sealed,
    })
}

/// `{"aead": …, "id": …, "iv": b64, "nonce": b64, "bytes": b64}`.
fn parse_json(ciphertext: &[u8]) -> Option<Ciphertext> {
    // The key ID is ignored, but Go refuses the wrapping if it is not a string.
    let [aead, _key_id, iv, nonce, bytes] =
        go_json_string_fields(ciphertext, ["aead", "id", "iv", "nonce", "bytes"])?;
    let algorithm = match aead.as_ref().map(JsonText::as_str) {
        Some(JSON_AES256) => Cipher::Aes256,
        Some(JSON_CHACHA20) => Cipher::ChaCha20,
        _ => return None,
    };
    let decode = |field: &Option<JsonText<'_>>| match field {
        Some(text) => go_base64_decode(text.as_bytes()),
        None => Some(Default::default()),
    };
    let iv = decode(&iv)?.as_slice().try_into().ok()?;
    let nonce = decode(&nonce)?.as_slice().try_into().ok()?;
    let sealed = decode(&bytes)?.to_vec();
    Some(Ciphertext {
        algorithm,
        iv,
        nonce,
        sealed,
    })
}

/// Just enough of a msgpack reader for the five elements above.
struct Msgpack<'a> {
    rest: &'a [u8],
}

impl<'a> Msgpack<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.rest.len() < len {
            return None;
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(taken)
    }

    /// A big-endian length of `width` bytes.
    fn length(&mut self, width: usize) -> Option<usize> {
        let bytes = self.take(width)?;
        let value = bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
        usize::try_from(value).ok()
    }

    /// fixstr, str8, str16 or str32.
    fn str(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            marker @ 0xa0..=0xbf => usize::from(marker & 0x1f),
            STR8 => self.length(1)?,
            STR16 => self.length(2)?,
            STR32 => self.length(4)?,
            _ => return None,
        };
        self.take(len)
    }

    /// bin8, bin16 or bin32.
    fn bin(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            BIN8 => self.length(1)?,
            BIN16 => self.length(2)?,
            BIN32 => self.length(4)?,
            _ => return None,
        };
        self.take(len)
    }
}
