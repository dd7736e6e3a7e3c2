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

/// First bytes of every envelope: a tag byte, "KR" (kes resident), format version 1.
pub const MAGIC: [u8; 4] = [0xC7, b'K', b'R', 0x01];

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
}
