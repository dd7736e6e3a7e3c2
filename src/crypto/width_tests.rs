//! Legacy msgpack ciphertexts with every header width a msgpack writer may choose (Go's
//! tinylib/msgp writes `bin16` for the sealed bytes of plaintexts over ~240 bytes
//! through `/v1/key/encrypt`), malformed lengths, and base64 exactly as Go reads it.

use super::gojson::go_base64_decode;
use super::legacy;
use super::{Cipher, DecryptError, KeyVersion, OldestReader};

/// A msgpack str or bin header of the given width for `len` bytes; width 0 is the
/// smallest str header (fixstr up to 31 bytes, else str8), as tinylib/msgp picks it.
fn header(marker8: u8, width: usize, len: usize) -> Vec<u8> {
    match width {
        0 if len <= 31 => vec![0xa0 | u8::try_from(len).unwrap()],
        0 => header(marker8, 1, len),
        1 => vec![marker8, u8::try_from(len).unwrap()],
        2 => [
            &[marker8 + 1][..],
            &u16::try_from(len).unwrap().to_be_bytes(),
        ]
        .concat(),
        4 => [
            &[marker8 + 2][..],
            &u32::try_from(len).unwrap().to_be_bytes(),
        ]
        .concat(),
        _ => unreachable!(),
    }
}

const STR8: u8 = 0xd9;
const BIN8: u8 = 0xc4;

/// `[algorithm, key id, iv, nonce, sealed]` with the chosen widths for the two strings
/// and the three byte fields.
fn msgpack(
    parts: &legacy::Ciphertext,
    key_id: &str,
    str_width: usize,
    bin_width: usize,
) -> Vec<u8> {
    let algorithm = parts.algorithm.legacy_name().as_bytes();
    let mut out = vec![0x95];
    for text in [algorithm, key_id.as_bytes()] {
        out.extend(header(STR8, str_width, text.len()));
        out.extend_from_slice(text);
    }
    for bytes in [&parts.iv[..], &parts.nonce[..], &parts.sealed[..]] {
        out.extend(header(BIN8, bin_width, bytes.len()));
        out.extend_from_slice(bytes);
    }
    out
}

#[test]
fn msgpack_ciphertexts_with_wide_headers_decrypt() {
    for cipher in [Cipher::Aes256, Cipher::ChaCha20] {
        let key = KeyVersion::generate(cipher, "");
        for len in [0usize, 1, 200, 255, 256, 4000, 70_000] {
            let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let written = key.encrypt_for(OldestReader::Y2023, &plaintext, b"ctx");
            // What kes writes is what tinylib/msgp writes: the smallest header.
            let sealed_len = len + 16;
            let expected_marker = match sealed_len {
                0..=255 => 0xc4,
                256..=65535 => 0xc5,
                _ => 0xc6,
            };
            let parts = legacy::parse(&written).expect("kes's own msgpack");
            let start = written.len() - sealed_len;
            let marker_at = start - [2, 3, 5][usize::from(expected_marker - 0xc4)];
            assert_eq!(written[marker_at], expected_marker, "{cipher:?} len {len}");
            if sealed_len <= 255 {
                assert_eq!(
                    msgpack(&parts, &key.key_id(), 0, 1),
                    written,
                    "{cipher:?} {len}"
                );
            }
            for str_width in [0, 1, 2, 4] {
                for bin_width in [1, 2, 4] {
                    if bin_width == 1 && sealed_len > 255 || bin_width == 2 && sealed_len > 65535 {
                        continue;
                    }
                    let wide = msgpack(&parts, &key.key_id(), str_width, bin_width);
                    let out = key.decrypt(&wide, b"ctx").unwrap_or_else(|e| {
                        panic!("{cipher:?} len {len} str {str_width} bin {bin_width}: {e:?}")
                    });
                    assert_eq!(&out[..], &plaintext[..]);
                    assert_eq!(key.decrypt(&wide, b"other"), Err(DecryptError));
                }
            }
        }
    }
}

#[test]
fn msgpack_lengths_that_do_not_fit_are_refused() {
    let key = KeyVersion::generate(Cipher::Aes256, "");
    let plaintext = vec![7u8; 300];
    let parts = legacy::parse(&key.encrypt_for(OldestReader::Y2023, &plaintext, b"")).unwrap();
    let good = msgpack(&parts, &key.key_id(), 2, 4);
    assert!(key.decrypt(&good, b"").is_ok());
    let sealed_len_at = good.len() - parts.sealed.len() - 4;
    assert_eq!(good[sealed_len_at - 1], 0xc6);
    // The sealed length one more, one less, huge, or the length itself cut short.
    for declared in [
        parts.sealed.len() + 1,
        parts.sealed.len() - 1,
        u32::MAX as usize,
    ] {
        let mut bad = good.clone();
        bad[sealed_len_at..sealed_len_at + 4]
            .copy_from_slice(&u32::try_from(declared).unwrap().to_be_bytes());
        assert_eq!(
            key.decrypt(&bad, b""),
            Err(DecryptError),
            "declared {declared}"
        );
    }
    assert_eq!(
        key.decrypt(&good[..sealed_len_at + 2], b""),
        Err(DecryptError)
    );
    // A str16 algorithm whose length runs past the end.
    let mut bad = vec![0x95, 0xda, 0xff, 0xff];
    bad.extend_from_slice(b"AES256");
    assert_eq!(key.decrypt(&bad, b""), Err(DecryptError));
    // An IV or nonce of the wrong size, in a bin16.
    let mut bad = vec![0x95, 0xa6];
    bad.extend_from_slice(b"AES256");
    bad.extend_from_slice(&[0xa0, 0xc5, 0, 15]);
    bad.extend_from_slice(&[0; 15]);
    assert_eq!(key.decrypt(&bad, b""), Err(DecryptError));
}

/// Go's `base64.StdEncoding.DecodeString`, pinned: padding required, trailing bits not
/// checked, line breaks skipped, nothing else tolerated.
#[test]
fn base64_is_read_as_go_reads_it() {
    let cases: [(&[u8], Option<&[u8]>); 16] = [
        (b"", Some(b"")),
        (b"QUJD", Some(b"ABC")),
        (b"QUI=", Some(b"AB")),
        (b"QQ==", Some(b"A")),
        // Non-zero trailing bits: Go does not check them.
        (b"QR==", Some(b"A")),
        (b"QUJ=", Some(b"AB")),
        // Line breaks anywhere are skipped.
        (b"QU\nJD", Some(b"ABC")),
        (b"QU\r\nJD\n", Some(b"ABC")),
        (b"\nQQ==", Some(b"A")),
        // Missing or extra padding, other alphabets and spaces are errors.
        (b"QQ", None),
        (b"QQ=", None),
        (b"QUJD=", None),
        (b"QQ===", None),
        (b"-_8=", None),
        (b"QU JD", None),
        (b"====", None),
    ];
    for (text, expected) in cases {
        let decoded = go_base64_decode(text);
        assert_eq!(
            decoded.as_deref().map(|d| &d[..]),
            expected,
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }
    // The URL-safe characters of the standard alphabet's last two: '+' and '/'.
    assert_eq!(
        go_base64_decode(b"+/8=").as_deref().map(|d| &d[..]),
        Some(&[0xfb, 0xff][..])
    );
}
