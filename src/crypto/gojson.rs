//! Reading JSON and base64 exactly as Go's `encoding/json` and `encoding/base64` do, so
//! that every stored key and legacy ciphertext Go KES accepts, we accept.

use std::borrow::Cow;
use std::fmt;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use zeroize::{Zeroize, Zeroizing};

/// Go's `base64.StdEncoding` as a decoder: padding required, but non-zero trailing
/// bits accepted (Go does not check them), so every value Go reads, we read.
const GO_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Decodes base64 as Go's `base64.StdEncoding` does, which also skips line breaks.
/// The result may be key material, so it is wiped when dropped.
pub(super) fn go_base64_decode(text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let without_breaks;
    let text = if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        without_breaks = Zeroizing::new(
            text.iter()
                .copied()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect::<Vec<_>>(),
        );
        without_breaks.as_slice()
    } else {
        text
    };
    let mut decoded = Zeroizing::new(Vec::with_capacity(text.len() / 4 * 3 + 3));
    GO_BASE64.decode_vec(text, &mut decoded).ok()?;
    Some(decoded)
}

/// A JSON string value, borrowed from the input when it has no escapes. An unescaped
/// copy is wiped when dropped, because it may be (the base64 of) key material.
pub(super) struct JsonText<'a>(Cow<'a, str>);

impl JsonText<'_> {
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

#[cfg(test)]
impl JsonText<'_> {
    /// The heap buffer of an unescaped copy, for the test that it is wiped when freed.
    pub(super) fn owned_buffer(&self) -> Option<*const u8> {
        match &self.0 {
            Cow::Owned(text) => Some(text.as_ptr()),
            Cow::Borrowed(_) => None,
        }
    }
}

impl Drop for JsonText<'_> {
    fn drop(&mut self) {
        if let Cow::Owned(text) = &mut self.0 {
            text.zeroize();
        }
    }
}

impl<'de> de::Deserialize<'de> for JsonText<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = JsonText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Owned(text.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// Reads the string fields `names` of a JSON object the way Go's `encoding/json` fills
/// a struct of string fields: names match ASCII-case-insensitively, the last duplicate
/// wins, `null` leaves a field unset, other fields are ignored, and a JSON `null`
/// instead of an object sets nothing. `None` if `json` is not an object (or `null`)
/// or one of the fields holds something other than a string or `null`.
pub(super) fn go_json_string_fields<'a, const N: usize>(
    json: &'a [u8],
    names: [&str; N],
) -> Option<[Option<JsonText<'a>>; N]> {
    struct FieldsVisitor<'n, const N: usize> {
        names: [&'n str; N],
    }

    impl<'de, const N: usize> Visitor<'de> for FieldsVisitor<'_, N> {
        type Value = [Option<JsonText<'de>>; N];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(std::array::from_fn(|_| None))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found: [Option<JsonText<'de>>; N] = std::array::from_fn(|_| None);
            while let Some(key) = map.next_key::<JsonText<'de>>()? {
                match self
                    .names
                    .iter()
                    .position(|name| name.eq_ignore_ascii_case(key.as_str()))
                {
                    Some(index) => {
                        if let Some(value) = map.next_value::<Option<JsonText<'de>>>()? {
                            found[index] = Some(value);
                        }
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(found)
        }
    }

    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let fields = deserializer.deserialize_any(FieldsVisitor { names }).ok()?;
    deserializer.end().ok()?;
    Some(fields)
}
