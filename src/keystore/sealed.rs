//! Data keys sealed by a resident master key, and their ciphertext envelope
//! (docs/resident-keys.md).
//!
//! The keystore (CipherTrust) encrypts with AES-256-GCM, picks the IV, and names the key
//! version it used. The envelope carries those facts so that a decrypt can pin the
//! version, which is what keeps every older ciphertext readable after a rotation:
//!
//! ```text
//! 0xC7 'K' 'R' 0x01 | version: u32 BE | iv_len: u8 | iv | tag_len: u8 | tag | ciphertext
//! ```
//!
//! The first byte tells it from the legacy forms (msgpack `0x95`, JSON `{`); the current
//! binary form has no header, so a server tells them apart by the key: a resident key
//! accepts only envelopes, a key kes holds reads only the other forms.
//!
//! Format version 2 ([`IkEnvelope`]) seals the data key in kes under an *intermediate
//! key* (IK), and carries the IK as the keystore wrapped it, in the form of version 1:
//!
//! ```text
//! 0xC7 'K' 'R' 0x02 | version | iv_len | iv | tag_len | tag | wrapped IK (32)   <- header
//!                   | nonce (12) | AES-256-GCM(IK, nonce, data key, header || context)
//! ```
//!
//! The keystore wraps each IK with associated data that names the IK's purpose and the
//! key ([`wrap_aad`]); a request context can never be that ([`is_reserved_context`]), so
//! no data key sealed by the keystore passes for an IK, nor an IK for a data key.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use zeroize::Zeroizing;

/// First bytes of every envelope: a tag byte, "KR" (kes resident), format version 1.
pub const MAGIC: [u8; 4] = [0xC7, b'K', b'R', 0x01];

/// First bytes of an envelope whose data key is sealed under an intermediate key.
pub const MAGIC_IK: [u8; 4] = [0xC7, b'K', b'R', 0x02];

/// Bytes of an intermediate key, and of its wrapped form (GCM keeps the length).
pub const IK_LEN: usize = 32;
/// Bytes of the nonce and the tag of a data key sealed under an intermediate key.
pub const IK_NONCE_LEN: usize = 12;
pub const IK_TAG_LEN: usize = 16;

/// The associated data of every IK wrap starts with these bytes ("KR", "IK", purpose
/// version 1); the key name follows. No UTF-8 text starts with them (0xC7 must be
/// followed by a continuation byte, and 'K' is none).
pub const WRAP_AAD_PREFIX: &[u8] = b"\xC7KRIK\x01";

/// A data key encrypted inside the keystore, as the keystore answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The version of the resident key that encrypted it.
    pub version: u32,
    pub iv: Vec<u8>,
    pub tag: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Why bytes are not an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnEnvelope(pub &'static str);

impl Sealed {
    /// The envelope bytes. IVs and tags longer than 255 bytes do not exist in GCM; a
    /// keystore answer with one is refused before it gets here (see [`Sealed::check`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(10 + self.iv.len() + self.tag.len() + self.ciphertext.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.push(self.iv.len() as u8);
        out.extend_from_slice(&self.iv);
        out.push(self.tag.len() as u8);
        out.extend_from_slice(&self.tag);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Reads an envelope; anything else (another ciphertext form, a cut-off envelope) is
    /// refused.
    pub fn parse(bytes: &[u8]) -> Result<Sealed, NotAnEnvelope> {
        let rest = bytes
            .strip_prefix(&MAGIC[..])
            .ok_or(NotAnEnvelope("not a resident-key ciphertext"))?;
        let (version, rest) = rest
            .split_first_chunk::<4>()
            .ok_or(NotAnEnvelope("cut off before the key version"))?;
        let (iv, rest) = length_prefixed(rest).ok_or(NotAnEnvelope("cut off in the IV"))?;
        let (tag, ciphertext) = length_prefixed(rest).ok_or(NotAnEnvelope("cut off in the tag"))?;
        let sealed = Sealed {
            version: u32::from_be_bytes(*version),
            iv: iv.to_vec(),
            tag: tag.to_vec(),
            ciphertext: ciphertext.to_vec(),
        };
        sealed.check().map_err(NotAnEnvelope)?;
        Ok(sealed)
    }

    /// The sizes AES-GCM allows: an IV of 1 to 128 bytes (CM uses 12), a tag of 4 to 16.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.iv.is_empty() || self.iv.len() > 128 {
            return Err("IV size out of range");
        }
        if !(4..=16).contains(&self.tag.len()) {
            return Err("tag size out of range");
        }
        Ok(())
    }
}

/// The associated data with which the keystore wraps an intermediate key of key `name`.
pub fn wrap_aad(name: &str) -> Vec<u8> {
    [WRAP_AAD_PREFIX, name.as_bytes()].concat()
}

/// Whether a request context is reserved for IK wraps (and so is refused as the context
/// of a data key the keystore seals or unseals itself).
pub fn is_reserved_context(context: &[u8]) -> bool {
    context.starts_with(WRAP_AAD_PREFIX)
}

/// Either envelope form, told apart by the format byte.
#[derive(Debug)]
pub enum Envelope<'a> {
    /// Format 1: the data key sealed by the keystore.
    Direct(Sealed),
    /// Format 2: the data key sealed under an intermediate key.
    Intermediate(IkEnvelope<'a>),
}

impl Envelope<'_> {
    /// Reads an envelope of either form; anything else is refused.
    pub fn parse(bytes: &[u8]) -> Result<Envelope<'_>, NotAnEnvelope> {
        if bytes.starts_with(&MAGIC_IK) {
            IkEnvelope::parse(bytes).map(Envelope::Intermediate)
        } else {
            Sealed::parse(bytes).map(Envelope::Direct)
        }
    }
}

/// A format-2 envelope, borrowed from the ciphertext.
#[derive(Debug)]
pub struct IkEnvelope<'a> {
    /// From the magic to the end of the wrapped IK: the same for every data key under one
    /// IK, so it names the IK; and the first part of the associated data.
    pub header: &'a [u8],
    /// The IK as the keystore wrapped it.
    pub wrapped: Sealed,
    pub nonce: &'a [u8; IK_NONCE_LEN],
    /// The data key's ciphertext and its 16-byte tag.
    pub sealed: &'a [u8],
}

impl IkEnvelope<'_> {
    pub fn parse(bytes: &[u8]) -> Result<IkEnvelope<'_>, NotAnEnvelope> {
        let rest = bytes
            .strip_prefix(&MAGIC_IK[..])
            .ok_or(NotAnEnvelope("not an intermediate-key ciphertext"))?;
        let (version, rest) = rest
            .split_first_chunk::<4>()
            .ok_or(NotAnEnvelope("cut off before the key version"))?;
        let (iv, rest) = length_prefixed(rest).ok_or(NotAnEnvelope("cut off in the IV"))?;
        let (tag, rest) = length_prefixed(rest).ok_or(NotAnEnvelope("cut off in the tag"))?;
        let (wrapped, rest) = rest
            .split_first_chunk::<IK_LEN>()
            .ok_or(NotAnEnvelope("cut off in the wrapped key"))?;
        let (nonce, sealed) = rest
            .split_first_chunk::<IK_NONCE_LEN>()
            .ok_or(NotAnEnvelope("cut off in the nonce"))?;
        if sealed.len() < IK_TAG_LEN {
            return Err(NotAnEnvelope("cut off in the data key"));
        }
        let wrapped = Sealed {
            version: u32::from_be_bytes(*version),
            iv: iv.to_vec(),
            tag: tag.to_vec(),
            ciphertext: wrapped.to_vec(),
        };
        wrapped.check().map_err(NotAnEnvelope)?;
        Ok(IkEnvelope {
            header: &bytes[..bytes.len() - sealed.len() - IK_NONCE_LEN],
            wrapped,
            nonce,
            sealed,
        })
    }

    /// The data key, or `None` if the bytes or the context are not what `ik` sealed.
    pub fn open(&self, ik: &[u8; IK_LEN], context: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let cipher = aes_gcm::Aes256Gcm::new(ik.into());
        let (body, tag) = self.sealed.split_at(self.sealed.len() - IK_TAG_LEN);
        let aad = Zeroizing::new([self.header, context].concat());
        let mut plaintext = Zeroizing::new(body.to_vec());
        cipher
            .decrypt_in_place_detached(self.nonce.into(), &aad, &mut plaintext, tag.into())
            .ok()?;
        Some(plaintext)
    }
}

/// The header of every envelope under the IK the keystore wrapped as `wrapped`: the
/// format-1 envelope of the wrap with the format byte 2. Refused unless the wrap is
/// exactly as long as an IK.
pub fn ik_header(wrapped: &Sealed) -> Result<Vec<u8>, &'static str> {
    wrapped.check()?;
    if wrapped.ciphertext.len() != IK_LEN {
        return Err("the wrapped intermediate key is not 32 bytes long");
    }
    let mut header = wrapped.encode();
    header[..4].copy_from_slice(&MAGIC_IK);
    Ok(header)
}

/// Seals `plaintext` under intermediate key `ik` whose envelopes start with `header`:
/// `header || nonce || ciphertext || tag`, with `header || context` as associated data.
/// `nonce` must be fresh random bytes for every call.
pub fn seal_under(
    ik: &[u8; IK_LEN],
    header: &[u8],
    nonce: &[u8; IK_NONCE_LEN],
    plaintext: &[u8],
    context: &[u8],
) -> Vec<u8> {
    let cipher = aes_gcm::Aes256Gcm::new(ik.into());
    let mut out = Vec::with_capacity(header.len() + IK_NONCE_LEN + plaintext.len() + IK_TAG_LEN);
    out.extend_from_slice(header);
    out.extend_from_slice(nonce);
    let start = out.len();
    out.extend_from_slice(plaintext);
    let aad = Zeroizing::new([header, context].concat());
    let tag = cipher
        .encrypt_in_place_detached(nonce.into(), &aad, &mut out[start..])
        .expect("data keys are far below the GCM length limit");
    out.extend_from_slice(&tag);
    out
}

fn length_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = bytes.split_first()?;
    (rest.len() >= usize::from(len)).then(|| rest.split_at(usize::from(len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sealed {
        Sealed {
            version: 3,
            iv: (0..12).collect(),
            tag: (100..116).collect(),
            ciphertext: (200..232).collect(),
        }
    }

    #[test]
    fn round_trips_and_has_the_documented_layout() {
        let bytes = sample().encode();
        assert_eq!(bytes.len(), 4 + 4 + 1 + 12 + 1 + 16 + 32);
        assert_eq!(&bytes[..9], &[0xC7, b'K', b'R', 1, 0, 0, 0, 3, 12]);
        assert_eq!(Sealed::parse(&bytes).unwrap(), sample());
    }

    #[test]
    fn other_forms_and_damaged_envelopes_are_refused() {
        let bytes = sample().encode();
        for cut in [0, 3, 7, 8, 9 + 11, 9 + 12 + 1 + 15] {
            assert!(Sealed::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // Legacy JSON and msgpack, and a current-format ciphertext of 44 bytes.
        assert!(Sealed::parse(br#"{"aead":"AES-256-GCM-HMAC-SHA-256"}"#).is_err());
        assert!(Sealed::parse(&[0x95, 0xd9, 0x20]).is_err());
        assert!(Sealed::parse(&[0u8; 44]).is_err());
        let mut short_tag = sample();
        short_tag.tag.truncate(3);
        assert!(Sealed::parse(&short_tag.encode()).is_err());
        // An empty ciphertext is a valid envelope (an empty plaintext).
        let mut empty = sample();
        empty.ciphertext.clear();
        assert_eq!(Sealed::parse(&empty.encode()).unwrap(), empty);
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// tests/vectors/resident-envelope.json: each envelope is what `encode` makes of the
    /// fields, parses back to them, and holds genuine AES-256-GCM output (checked with the
    /// stand-in key material a CipherTrust would keep); each negative case is refused.
    #[test]
    fn vectors() {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/resident-envelope.json"))
                .unwrap();
        let text = |case: &serde_json::Value, field: &str| hex(case[field].as_str().unwrap());
        for case in doc["positive"].as_array().unwrap() {
            let sealed = Sealed {
                version: case["cm_key_version"].as_u64().unwrap() as u32,
                iv: text(case, "iv"),
                tag: text(case, "tag"),
                ciphertext: text(case, "ciphertext"),
            };
            let envelope = text(case, "envelope");
            assert_eq!(sealed.encode(), envelope, "{}", case["description"]);
            assert_eq!(Sealed::parse(&envelope).unwrap(), sealed);
            let cipher =
                aes_gcm::Aes256Gcm::new_from_slice(&text(case, "cm_key_material")).unwrap();
            let mut msg = sealed.ciphertext.clone();
            msg.extend_from_slice(&sealed.tag);
            let aad = text(case, "aad");
            let plain = cipher
                .decrypt(
                    aes_gcm::Nonce::from_slice(&sealed.iv),
                    Payload {
                        msg: &msg,
                        aad: &aad,
                    },
                )
                .unwrap();
            assert_eq!(plain, text(case, "plaintext"));
        }
        for case in doc["negative"].as_array().unwrap() {
            assert!(
                Sealed::parse(&text(case, "envelope")).is_err(),
                "{}",
                case["description"]
            );
        }
    }

    /// tests/vectors/resident-envelope-ik.json: each format-2 envelope parses into its
    /// documented fields, its wrapped IK opens with the stand-in CipherTrust key and the
    /// wrap's associated data ([`wrap_aad`]), and `seal_under` with that IK and nonce
    /// makes exactly the envelope, which opens again; each tampered envelope parses but
    /// does not open, and each negative case is refused by `Envelope::parse`.
    #[test]
    fn intermediate_key_vectors() {
        use aes_gcm::aead::{Aead, Payload};
        let doc: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/vectors/resident-envelope-ik.json"
        ))
        .unwrap();
        let text = |case: &serde_json::Value, field: &str| hex(case[field].as_str().unwrap());
        let mut first_ik = None;
        for case in doc["positive"].as_array().unwrap() {
            let what = &case["description"];
            let envelope = text(case, "envelope");
            let Ok(Envelope::Intermediate(parsed)) = Envelope::parse(&envelope) else {
                panic!("{what}: not a format-2 envelope");
            };
            assert_eq!(parsed.header, &text(case, "header")[..], "{what}");
            assert_eq!(parsed.wrapped.version as u64, case["cm_key_version"]);
            assert_eq!(parsed.wrapped.iv, text(case, "wrap_iv"));
            assert_eq!(parsed.wrapped.tag, text(case, "wrap_tag"));
            assert_eq!(parsed.wrapped.ciphertext, text(case, "wrapped_key"));
            assert_eq!(&parsed.nonce[..], &text(case, "nonce")[..]);
            assert_eq!(ik_header(&parsed.wrapped).unwrap(), parsed.header);
            let name = case["key_name"].as_str().unwrap();
            assert_eq!(wrap_aad(name), text(case, "wrap_aad"));

            let cm = aes_gcm::Aes256Gcm::new_from_slice(&text(case, "cm_key_material")).unwrap();
            let mut msg = parsed.wrapped.ciphertext.clone();
            msg.extend_from_slice(&parsed.wrapped.tag);
            let aad = wrap_aad(name);
            let ik = cm
                .decrypt(
                    aes_gcm::Nonce::from_slice(&parsed.wrapped.iv),
                    Payload {
                        msg: &msg,
                        aad: &aad,
                    },
                )
                .unwrap();
            assert_eq!(ik, text(case, "intermediate_key"), "{what}");
            let ik: [u8; IK_LEN] = ik.try_into().unwrap();
            let context = text(case, "context");
            let sealed = seal_under(
                &ik,
                parsed.header,
                parsed.nonce,
                &text(case, "plaintext"),
                &context,
            );
            assert_eq!(sealed, envelope, "{what}");
            assert_eq!(
                parsed.open(&ik, &context).as_deref(),
                Some(&text(case, "plaintext")),
                "{what}"
            );
            assert!(parsed.open(&ik, b"another context").is_none(), "{what}");
            first_ik.get_or_insert(ik);
        }
        let ik = first_ik.unwrap();
        for case in doc["tampered"].as_array().unwrap() {
            let what = &case["description"];
            let envelope = text(case, "envelope");
            let Ok(Envelope::Intermediate(parsed)) = Envelope::parse(&envelope) else {
                panic!("{what}: does not parse");
            };
            assert!(parsed.open(&ik, b"bucket/object").is_none(), "{what}");
        }
        for case in doc["negative"].as_array().unwrap() {
            let what = &case["description"];
            let bytes = text(case, "envelope");
            let parsed = Envelope::parse(&bytes);
            assert!(
                !matches!(parsed, Ok(Envelope::Intermediate(_))),
                "{what}: {parsed:?}"
            );
        }
    }

    #[test]
    fn the_wrap_associated_data_is_never_a_text_context() {
        assert!(is_reserved_context(&wrap_aad("k")));
        assert!(!is_reserved_context(b"bucket/object"));
        assert!(!is_reserved_context(b""));
        // No UTF-8 text starts with the prefix.
        assert!(String::from_utf8(WRAP_AAD_PREFIX[..2].to_vec()).is_err());
        // A wrap must be exactly as long as an IK.
        let mut wrapped = Sealed {
            version: 1,
            iv: vec![0; 12],
            tag: vec![0; 16],
            ciphertext: vec![0; 31],
        };
        assert!(ik_header(&wrapped).is_err());
        wrapped.ciphertext.push(0);
        assert_eq!(ik_header(&wrapped).unwrap()[..4], MAGIC_IK);
    }
}
