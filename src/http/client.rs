//! The client side of HTTP/1.1, without I/O: a request written into bytes, and an answer
//! read from the bytes received so far. For the calls an event loop makes to CipherTrust
//! Manager (`server::upstream`), which owns the sockets and the TLS.
//!
//! Strict where it matters for keeping a connection: an answer's end must be certain
//! (`Content-Length`, `chunked`, or the connection's end), and anything else ends the
//! connection after the answer.

use std::io::Write as _;

use zeroize::Zeroizing;

use super::framing::{ChunkError, decode_chunked};

/// The most header bytes an answer may have.
const MAX_ANSWER_HEAD: usize = 16 * 1024;
const MAX_ANSWER_HEADERS: usize = 64;

/// A complete answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The `Content-Type` header, or empty.
    pub content_type: String,
    /// It may hold key material (a decrypt's plaintext): wiped when dropped.
    pub body: Zeroizing<Vec<u8>>,
    /// The connection cannot carry another request (the server said so, or the answer
    /// ended with the connection).
    pub close: bool,
}

/// Why bytes are not an answer kes can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerError(pub String);

/// Writes a request: `method target`, `Host`, the given headers, `Content-Length` and the
/// body. Header values must not contain line breaks (they are kes's own).
pub fn write_request(
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Zeroizing<Vec<u8>> {
    let head_len = method.len()
        + target.len()
        + host.len()
        + headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>()
        + 64;
    // Sized up front: the request carries a token and, for encrypt, a data key.
    let mut out = Zeroizing::new(Vec::with_capacity(head_len + body.len()));
    for part in [method, " ", target, " HTTP/1.1\r\nHost: ", host, "\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    for (name, value) in headers {
        debug_assert!(
            !value.contains(['\r', '\n']),
            "header {name} has a line break"
        );
        for part in [name, ": ", value, "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    // Into the buffer itself: no allocation for the number.
    let _ = write!(&mut *out, "Content-Length: {}\r\n\r\n", body.len());
    out.extend_from_slice(body);
    out
}

/// Reads the answer at the start of `buf`, the bytes received so far; `eof` when the
/// connection has ended after them. `Ok(None)`: more bytes are needed. `Ok(Some((answer,
/// used)))`: the answer and how many bytes of `buf` it took. Bodies over `limit` bytes
/// are an error. Interim answers (1xx) are skipped.
pub fn read_answer(
    buf: &[u8],
    eof: bool,
    limit: usize,
) -> Result<Option<(Answer, usize)>, AnswerError> {
    let mut start = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_ANSWER_HEADERS];
        let mut head = httparse::Response::new(&mut headers);
        let head_len = match head.parse(&buf[start..]) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() - start > MAX_ANSWER_HEAD => {
                return Err(AnswerError("the answer's head is too large".into()));
            }
            Ok(httparse::Status::Partial) if eof => {
                return Err(AnswerError("the connection ended inside an answer".into()));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(err) => return Err(AnswerError(format!("not an HTTP answer: {err}"))),
        };
        let status = head.code.unwrap_or(0);
        if (100..200).contains(&status) {
            start += head_len;
            continue;
        }
        // Borrowed where the bytes are text (no allocation per header on the hot path).
        let values = |name: &'static str| {
            head.headers
                .iter()
                .filter(move |h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value))
        };
        let content_type = values("content-type")
            .next()
            .map(|v| v.trim().to_string())
            .unwrap_or_default();
        let close = head.version == Some(0)
            || values("connection")
                .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        let body_start = start + head_len;
        let rest = &buf[body_start..];
        let chunked =
            values("transfer-encoding").any(|v| v.to_ascii_lowercase().contains("chunked"));
        let mut lengths = values("content-length");
        let length = lengths.next();
        let answer = |body: Zeroizing<Vec<u8>>, close: bool| Answer {
            status,
            content_type: content_type.clone(),
            body,
            close,
        };
        if status == 204 || status == 304 {
            return Ok(Some((
                answer(Zeroizing::new(Vec::new()), close),
                body_start,
            )));
        }
        if chunked {
            return match decode_chunked(rest, limit) {
                Ok(Some((body, used))) => Ok(Some((
                    answer(Zeroizing::new(body), close),
                    body_start + used,
                ))),
                Ok(None) if eof => Err(AnswerError(
                    "the connection ended inside a chunked answer".into(),
                )),
                Ok(None) => Ok(None),
                Err(ChunkError::Malformed) => {
                    Err(AnswerError("the answer's chunked body is malformed".into()))
                }
                Err(_) => Err(AnswerError(format!(
                    "the answer's body is larger than {limit} bytes"
                ))),
            };
        }
        if let Some(first) = length {
            let first = first.trim();
            if lengths.any(|l| l.trim() != first) {
                return Err(AnswerError("the answer has two Content-Lengths".into()));
            }
            let length: usize = first
                .parse()
                .map_err(|_| AnswerError(format!("invalid Content-Length '{first}'")))?;
            if length > limit {
                return Err(AnswerError(format!(
                    "the answer's body is larger than {limit} bytes"
                )));
            }
            if rest.len() < length {
                return if eof {
                    Err(AnswerError("the connection ended inside an answer".into()))
                } else {
                    Ok(None)
                };
            }
            let body = Zeroizing::new(rest[..length].to_vec());
            return Ok(Some((answer(body, close), body_start + length)));
        }
        // No length: the body ends with the connection.
        if rest.len() > limit {
            return Err(AnswerError(format!(
                "the answer's body is larger than {limit} bytes"
            )));
        }
        if !eof {
            return Ok(None);
        }
        let body = Zeroizing::new(rest.to_vec());
        return Ok(Some((answer(body, true), buf.len())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(raw: &str, eof: bool) -> Result<Option<(Answer, usize)>, AnswerError> {
        read_answer(raw.as_bytes(), eof, 1 << 20)
    }

    #[test]
    fn writes_a_request_with_its_length() {
        let raw = write_request(
            "POST",
            "ctm.example:443",
            "/api/v1/crypto/encrypt",
            &[
                ("Authorization", "Bearer t"),
                ("Accept", "application/json"),
            ],
            b"{}",
        );
        assert_eq!(
            std::str::from_utf8(&raw).unwrap(),
            "POST /api/v1/crypto/encrypt HTTP/1.1\r\nHost: ctm.example:443\r\nAuthorization: Bearer t\r\nAccept: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn reads_answers_by_length_chunks_or_end_of_connection() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1";
        let (answer, used) = read(raw, false).unwrap().unwrap();
        assert_eq!(
            (answer.status, answer.content_type.as_str()),
            (200, "application/json")
        );
        assert_eq!(
            (&answer.body[..], answer.close, used),
            (&b"{}"[..], false, raw.len() - 8)
        );
        assert!(read(&raw[..raw.len() - 10], false).unwrap().is_none());

        let raw = "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        let (answer, used) = read(raw, false).unwrap().unwrap();
        assert_eq!(
            (answer.status, &answer.body[..], used),
            (201, &b"{}"[..], raw.len())
        );

        let raw = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc";
        assert!(read(raw, false).unwrap().is_none());
        let (answer, _) = read(raw, true).unwrap().unwrap();
        assert_eq!((&answer.body[..], answer.close), (&b"abc"[..], true));

        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let (answer, used) = read(raw, false).unwrap().unwrap();
        assert_eq!(
            (answer.status, answer.body.len(), used),
            (204, 0, raw.len())
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(read("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", true).is_err());
        assert!(read("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        assert!(
            read(
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(read("garbage\r\n\r\n", false).is_err());
        let big = read_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", false, 10);
        assert!(big.unwrap_err().0.contains("larger than 10"));
        assert!(read("HTTP/1.1 200 OK\r\nContent-Le", true).is_err());
    }
}
