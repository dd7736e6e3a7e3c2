//! Where a request body ends: the framing headers of a head, and chunked bodies.
//!
//! Strict on purpose. A proxy in front of kes and kes must agree on where one request
//! ends and the next begins, or a client can hide a request inside another's body
//! (request smuggling). So every form that two parsers could read differently is
//! refused, and the connection closed: `Content-Length` is digits only, one value;
//! `Transfer-Encoding` is exactly `chunked` and never comes with `Content-Length`; chunk
//! sizes are hex digits only; chunk lines, extensions and trailers are bounded. The
//! route's body limit applies to the decoded body, as in the original, so that how a
//! client frames a body never changes whether it fits; extensions and trailers have a
//! bound of their own ([`MAX_CHUNK_EXTRA`]). docs/bad-input.md lists each form and its
//! answer.

use super::head::{HeadError, MAX_HEAD, Request};

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Length(u64),
    Chunked,
}

/// The longest chunk-size line (size, extensions, CRLF) accepted, as the original's.
pub const MAX_CHUNK_LINE: usize = 4096;

/// The most bytes of chunk extensions and trailer lines one body may carry, all chunks
/// together. kes ignores both, and clients send none or a few bytes; without a bound of
/// their own a client could keep a connection busy with them for the route's whole
/// deadline. (Each chunk line is also bounded by [`MAX_CHUNK_LINE`], the trailer section
/// by `MAX_HEAD`.)
pub const MAX_CHUNK_EXTRA: usize = 64 * 1024;

/// Optional white space around header values and before chunk extensions.
fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

impl Request {
    /// The body framing the head announces, or an error for framing that is malformed,
    /// ambiguous or unsupported (see [`framing`]).
    pub fn framing(&self) -> Result<BodyFraming, HeadError> {
        framing(&self.headers)
    }
}

/// The body framing that the framing headers among `headers` (names lowercased)
/// announce.
pub fn framing(headers: &[(String, String)]) -> Result<BodyFraming, HeadError> {
    let values = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| trim_ows(v))
            .collect()
    };
    let codings = values("transfer-encoding");
    let lengths = values("content-length");
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err(HeadError::Malformed(
                "request has both Transfer-Encoding and Content-Length".into(),
            ));
        }
        if codings.len() > 1 {
            return Err(HeadError::Malformed("too many transfer encodings".into()));
        }
        if codings[0].eq_ignore_ascii_case("chunked") {
            return Ok(BodyFraming::Chunked);
        }
        // As the original, without echoing the client's value.
        return Err(HeadError::NotImplemented(
            "unsupported transfer encoding".into(),
        ));
    }
    let Some(first) = lengths.first() else {
        return Ok(BodyFraming::Length(0));
    };
    if lengths.iter().any(|v| v != first) {
        return Err(HeadError::Malformed(
            "request has more than one Content-Length".into(),
        ));
    }
    parse_length(first)
        .map(BodyFraming::Length)
        .ok_or_else(|| HeadError::Malformed("invalid Content-Length".into()))
}

/// `1*DIGIT` that fits a u64: no sign, space, prefix, list or empty value.
fn parse_length(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    Malformed,
    /// The decoded body is longer than the route's limit.
    TooLarge,
    /// Extensions and trailers together exceed [`MAX_CHUNK_EXTRA`].
    TooMuchExtra,
}

/// Decodes a complete chunked body at the start of `buf`. `Ok(None)` means more bytes
/// are needed; `Ok(Some((body, used)))` the body and how many bytes it took. Decoded
/// bodies longer than `limit` are an error, checked before they are buffered.
pub fn decode_chunked(buf: &[u8], limit: usize) -> Result<Option<(Vec<u8>, usize)>, ChunkError> {
    let mut body = Vec::new();
    let mut extra = 0;
    match decode_chunks(buf, &mut body, &mut extra, limit)? {
        (used, true) => Ok(Some((body, used))),
        (_, false) => Ok(None),
    }
}

/// Decodes the complete chunks at the start of `buf` onto `body` (which holds what
/// earlier calls decoded), so that a body arriving in many reads is parsed once, not
/// again from its start after every read. The decoded body may hold at most `limit`
/// bytes; `extra` counts the extension and trailer bytes used so far, which may add up
/// to [`MAX_CHUNK_EXTRA`]. Returns how many bytes
/// of `buf` were used (only whole chunks, and the last chunk with its trailers once it
/// is complete) and whether the body is complete.
pub fn decode_chunks(
    buf: &[u8],
    body: &mut Vec<u8>,
    extra: &mut usize,
    limit: usize,
) -> Result<(usize, bool), ChunkError> {
    let mut pos = 0;
    loop {
        let Some(line) = chunk_line(&buf[pos..])? else {
            return Ok((pos, false));
        };
        let size = usize::try_from(line.size).map_err(|_| ChunkError::TooLarge)?;
        if body.len().saturating_add(size) > limit {
            return Err(ChunkError::TooLarge);
        }
        let spent = extra.saturating_add(line.ext);
        if spent > MAX_CHUNK_EXTRA {
            return Err(ChunkError::TooMuchExtra);
        }
        let data_start = pos + line.len;
        if size == 0 {
            let Some(section) = trailer_section(&buf[data_start..])? else {
                return Ok((pos, false));
            };
            // The trailer lines count, not the empty line that ends them.
            let trailers = section - 2;
            if spent.saturating_add(trailers) > MAX_CHUNK_EXTRA {
                return Err(ChunkError::TooMuchExtra);
            }
            *extra += line.ext + trailers;
            return Ok((data_start + section, true));
        }
        let data_end = data_start + size;
        if buf.len() < data_end + 2 {
            return Ok((pos, false));
        }
        if &buf[data_end..data_end + 2] != b"\r\n" {
            return Err(ChunkError::Malformed);
        }
        body.extend_from_slice(&buf[data_start..data_end]);
        *extra += line.ext;
        pos = data_end + 2;
    }
}

/// A parsed chunk-size line.
struct ChunkLine {
    /// Bytes of the line, CRLF included.
    len: usize,
    size: u64,
    /// Bytes of its extensions (what follows the size), which are ignored.
    ext: usize,
}

/// Parses the chunk-size line at the start of `buf`: `1*HEXDIG [BWS ";" extensions]
/// CRLF`, at most [`MAX_CHUNK_LINE`] bytes, the size at most 16 hex digits (as the
/// original: leading zeros count), no bare CR or LF, no control bytes.
fn chunk_line(buf: &[u8]) -> Result<Option<ChunkLine>, ChunkError> {
    let window = &buf[..buf.len().min(MAX_CHUNK_LINE)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_CHUNK_LINE {
            Err(ChunkError::Malformed)
        } else {
            Ok(None)
        };
    };
    let Some(line) = window[..lf].strip_suffix(b"\r") else {
        return Err(ChunkError::Malformed);
    };
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(ChunkError::Malformed);
    }
    // ASCII hex digits: valid UTF-8, and at most 16 of them fit a u64.
    let size = std::str::from_utf8(&line[..digits])
        .ok()
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or(ChunkError::Malformed)?;
    let rest = &line[digits..];
    let ws = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let misplaced = rest.get(ws).is_some_and(|&b| b != b';');
    if misplaced || rest.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
        return Err(ChunkError::Malformed);
    }
    Ok(Some(ChunkLine {
        len: lf + 1,
        size,
        ext: rest.len(),
    }))
}

/// The length of the trailer section at the start of `buf` (header lines, then an empty
/// line), or `None` while it is incomplete. Lines end in CRLF; a bare CR or LF, or a
/// section over [`MAX_HEAD`], is refused.
fn trailer_section(buf: &[u8]) -> Result<Option<usize>, ChunkError> {
    let mut at = 0;
    loop {
        let rest = &buf[at..buf.len().min(MAX_HEAD + 1)];
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            return if buf.len() > MAX_HEAD {
                Err(ChunkError::Malformed)
            } else {
                Ok(None)
            };
        };
        let line = rest[..lf]
            .strip_suffix(b"\r")
            .ok_or(ChunkError::Malformed)?;
        if line.contains(&b'\r') {
            return Err(ChunkError::Malformed);
        }
        at += lf + 1;
        if line.is_empty() {
            return Ok(Some(at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing_of(headers: &[(&str, &str)]) -> Result<BodyFraming, HeadError> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        framing(&headers)
    }

    fn malformed(r: Result<BodyFraming, HeadError>) -> bool {
        matches!(r, Err(HeadError::Malformed(_)))
    }

    #[test]
    fn content_length_is_digits_only() {
        for ok in ["0", "2", " 2 ", "\t17", "18446744073709551615", "007"] {
            let expected = ok.trim().parse::<u64>().unwrap();
            assert_eq!(
                framing_of(&[("content-length", ok)]),
                Ok(BodyFraming::Length(expected)),
                "{ok:?}"
            );
        }
        for bad in [
            "+2",
            "-2",
            "",
            " ",
            "2 3",
            "0x2",
            "2,2",
            "2, 3",
            "1e3",
            "2.0",
            "١",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            assert!(malformed(framing_of(&[("content-length", bad)])), "{bad:?}");
        }
        assert_eq!(framing_of(&[]), Ok(BodyFraming::Length(0)));
    }

    #[test]
    fn duplicate_content_lengths_must_agree() {
        let same = [("content-length", "2"), ("content-length", "2")];
        assert_eq!(framing_of(&same), Ok(BodyFraming::Length(2)));
        let differ = [("content-length", "2"), ("content-length", "3")];
        assert!(malformed(framing_of(&differ)));
        let spelled = [("content-length", "2"), ("content-length", "02")];
        assert!(malformed(framing_of(&spelled)));
    }

    #[test]
    fn transfer_encoding_is_exactly_chunked_and_alone() {
        for ok in ["chunked", "Chunked", " chunked "] {
            let te = [("transfer-encoding", ok)];
            assert_eq!(framing_of(&te), Ok(BodyFraming::Chunked), "{ok:?}");
        }
        for unsupported in [
            "gzip",
            "gzip, chunked",
            "chunked, gzip",
            "",
            "identity",
            "chunked;q=1",
        ] {
            assert!(
                matches!(
                    framing_of(&[("transfer-encoding", unsupported)]),
                    Err(HeadError::NotImplemented(_))
                ),
                "{unsupported:?}"
            );
        }
        let both = [("transfer-encoding", "chunked"), ("content-length", "2")];
        assert!(malformed(framing_of(&both)));
        let both = [("content-length", "0"), ("transfer-encoding", "gzip")];
        assert!(malformed(framing_of(&both)));
        let twice = [
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ];
        assert!(malformed(framing_of(&twice)));
    }

    #[test]
    fn chunked_bodies() {
        let raw = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nNEXT";
        let (body, used) = decode_chunked(raw, 100).unwrap().unwrap();
        assert_eq!(body, b"abcde");
        assert_eq!(&raw[used..], b"NEXT");
        assert!(decode_chunked(b"3\r\nab", 100).unwrap().is_none());
        // Piece by piece: whole chunks are used as they arrive, the rest waits.
        let (mut body, mut extra) = (Vec::new(), 0);
        let mut decode = |buf: &[u8], limit| decode_chunks(buf, &mut body, &mut extra, limit);
        assert_eq!(decode(b"3\r\nabc\r\n4\r\nde", 100), Ok((8, false)));
        assert_eq!(decode(b"4\r\ndefg\r\n0\r\n", 100), Ok((9, false)));
        assert_eq!(decode(b"0\r\nX-T: 1\r\n\r\n", 100), Ok((13, true)));
        assert_eq!(decode(b"5\r\nhijkl\r\n", 10), Err(ChunkError::TooLarge));
        assert_eq!(body, b"abcdefg");
        assert_eq!(decode_chunked(raw, 4).unwrap_err(), ChunkError::TooLarge);
        // Upper-case digits, extensions after optional white space.
        let (body, _) = decode_chunked(b"A;x=1\r\n0123456789\r\n0 ;y\r\n\r\n", 100)
            .unwrap()
            .unwrap();
        assert_eq!(body, b"0123456789");
    }

    #[test]
    fn chunk_sizes_are_hex_digits_only() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n\r\n",
            b" 3\r\nabc\r\n0\r\n\r\n",
            b"+3\r\nabc\r\n0\r\n\r\n",
            b"-3\r\nabc\r\n0\r\n\r\n",
            b"0x3\r\nabc\r\n0\r\n\r\n",
            b"3 4\r\nabc\r\n0\r\n\r\n",
            b"3\nabc\r\n0\r\n\r\n",
            b"3\r\nabc\n0\r\n\r\n",
            b"3\r\nabcd\r\n0\r\n\r\n",
            b"3;a\rb\r\nabc\r\n0\r\n\r\n",
            b"3;a\x00\r\nabc\r\n0\r\n\r\n",
            // 17 digits: too many, even when the value would fit.
            b"00000000000000003\r\nabc\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"0\r\nX: 1\nY: 2\r\n\r\n",
            b"0\r\nX: 1\r\n\n",
        ] {
            assert_eq!(
                decode_chunked(bad, 1 << 20),
                Err(ChunkError::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // 16 digits fit a u64 and are then over any body limit.
        assert_eq!(
            decode_chunked(b"ffffffffffffffff\r\n", 1 << 20),
            Err(ChunkError::TooLarge)
        );
        assert_eq!(
            decode_chunked(b"0000000000000003\r\nabc\r\n0\r\n\r\n", 100)
                .unwrap()
                .unwrap()
                .0,
            b"abc"
        );
    }

    #[test]
    fn extensions_and_trailers_are_bounded_on_their_own() {
        // A chunk line that does not end within the line limit is refused, not buffered.
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'e', MAX_CHUNK_LINE));
        assert_eq!(decode_chunked(&long, 1 << 20), Err(ChunkError::Malformed));
        assert_eq!(decode_chunked(&long[..100], 1 << 20), Ok(None));
        // The limit is the decoded body's: 10 data bytes behind a 94-byte extension fit
        // a limit of 10, and not one of 9.
        let mut raw = b"a;".to_vec();
        raw.extend(std::iter::repeat_n(b'e', 93));
        raw.extend_from_slice(b"\r\n0123456789\r\n0\r\n\r\n");
        assert_eq!(decode_chunked(&raw, 9), Err(ChunkError::TooLarge));
        assert_eq!(decode_chunked(&raw, 10).unwrap().unwrap().0, b"0123456789");
        // Trailers do not count toward it either.
        let raw = b"1\r\na\r\n0\r\nX-Trailer: 123456\r\n\r\n";
        assert_eq!(decode_chunked(raw, 1).unwrap().unwrap().0, b"a");
        assert_eq!(decode_chunked(raw, 0), Err(ChunkError::TooLarge));
        // Extensions and trailers together have a bound of their own: exactly
        // MAX_CHUNK_EXTRA bytes of them pass, one more does not.
        let with_extra = |extra: usize, trailer: usize| {
            let mut raw = Vec::new();
            let mut left = extra;
            while left > 0 {
                let ext = left.min(4000);
                raw.extend_from_slice(b"1;");
                raw.extend(std::iter::repeat_n(b'e', ext - 1));
                raw.extend_from_slice(b"\r\nx\r\n");
                left -= ext;
            }
            raw.extend_from_slice(b"0\r\n");
            if trailer > 0 {
                raw.extend_from_slice(b"X: ");
                raw.extend(std::iter::repeat_n(b't', trailer - 5));
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"\r\n");
            decode_chunked(&raw, 1 << 20)
        };
        assert!(with_extra(MAX_CHUNK_EXTRA, 0).unwrap().is_some());
        assert_eq!(
            with_extra(MAX_CHUNK_EXTRA + 1, 0),
            Err(ChunkError::TooMuchExtra)
        );
        assert!(with_extra(MAX_CHUNK_EXTRA - 100, 100).unwrap().is_some());
        assert_eq!(
            with_extra(MAX_CHUNK_EXTRA - 100, 101),
            Err(ChunkError::TooMuchExtra)
        );
        // A trailer section over the head limit is refused, not buffered.
        let mut raw = b"0\r\nX: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', MAX_HEAD + 1));
        assert_eq!(decode_chunked(&raw, usize::MAX), Err(ChunkError::Malformed));
    }
}
