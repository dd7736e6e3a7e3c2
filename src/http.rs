//! HTTP/1.1 messages: request heads parsed by `httparse`, responses serialized.
//!
//! This module knows nothing about sockets or TLS: the connection code feeds it bytes
//! and writes out what it returns, so it can be tested and fuzzed on plain buffers.

use std::fmt::Write as _;

mod framing;
pub use framing::{
    BodyFraming, ChunkError, MAX_CHUNK_EXTRA, MAX_CHUNK_LINE, decode_chunked, decode_chunks,
};

/// The most header bytes a request may have. Larger heads get 431.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most headers a request may have.
const MAX_HEADERS: usize = 64;

/// A parsed request head, with the body to be filled in by the connection.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// Percent-decoded path, without the query string.
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// HTTP/1.0 (keep-alive off unless asked for).
    pub http10: bool,
    pub body: Vec<u8>,
}

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed request: 400 with this message.
    Malformed(String),
    /// Head larger than [`MAX_HEAD`]: 431.
    TooLarge,
    /// A framing the server does not implement (a transfer coding other than
    /// `chunked`): 501 with this message.
    NotImplemented(String),
}

impl Drop for Request {
    /// Bodies carry plaintexts and keys.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.body);
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.body);
    }
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body framing the head announces, or an error for framing that is malformed,
    /// ambiguous or unsupported (see [`framing`]).
    pub fn framing(&self) -> Result<BodyFraming, HeadError> {
        framing::framing(&self.headers)
    }

    /// Whether the client wants the connection kept open after this request.
    pub fn keep_alive(&self) -> bool {
        let connection = self.header("connection").map(|c| c.to_ascii_lowercase());
        match connection.as_deref() {
            Some(c) if c.split(',').any(|t| t.trim() == "close") => false,
            Some(c) if c.split(',').any(|t| t.trim() == "keep-alive") => true,
            _ => !self.http10,
        }
    }
}

/// Parses a request head from the start of `buf`. `Ok(None)` means more bytes are
/// needed; `Ok(Some((request, head_len)))` a complete head of `head_len` bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = req.parse(buf).map_err(|e| match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        e => HeadError::Malformed(format!("malformed HTTP request: {e}")),
    })?;
    let head_len = match status {
        httparse::Status::Partial if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(n) if n > MAX_HEAD => return Err(HeadError::TooLarge),
        httparse::Status::Complete(n) => n,
    };
    let target = req.path.unwrap_or("/");
    let (raw_path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = percent_decode(raw_path)
        .ok_or_else(|| HeadError::Malformed("invalid escape in URL path".into()))?;
    if !path.starts_with('/') {
        return Err(HeadError::Malformed(
            "request target must be an absolute path".into(),
        ));
    }
    let mut parsed = Request {
        method: req.method.unwrap_or("GET").to_string(),
        path,
        query: query.to_string(),
        headers: Vec::with_capacity(req.headers.len()),
        http10: req.version == Some(0),
        body: Vec::new(),
    };
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HeadError::Malformed(format!("header '{}' is not valid text", h.name)))?;
        parsed
            .headers
            .push((h.name.to_ascii_lowercase(), value.to_string()));
    }
    Ok(Some((parsed, head_len)))
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A response to send.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// A stream body: each received item is one NDJSON line, sent as a chunk as soon as
    /// it arrives, until the client goes away (log streams).
    pub stream: Option<std::sync::mpsc::Receiver<std::sync::Arc<[u8]>>>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            stream: None,
        }
    }

    /// 200 with no body.
    pub fn ok() -> Response {
        Response::new(200)
    }

    /// A JSON body (Go's encoder ends it with a newline; so do we).
    pub fn json<T: serde::Serialize + ?Sized>(status: u16, value: &T) -> Response {
        let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        body.push(b'\n');
        Response {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body,
            stream: None,
        }
    }

    /// The original's error shape: `{"message": "..."}` with `application/json`.
    pub fn error(status: u16, message: &str) -> Response {
        let body =
            serde_json::to_vec(&serde_json::json!({ "message": message })).unwrap_or_default();
        Response {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body,
            stream: None,
        }
    }

    /// A 200 NDJSON stream fed by `events`.
    pub fn stream(events: std::sync::mpsc::Receiver<std::sync::Arc<[u8]>>) -> Response {
        let mut response = Response::new(200).with_header("Content-Type", "application/x-ndjson");
        response.stream = Some(events);
        response
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Serializes the status line, headers and body. `close` adds `Connection: close`.
    pub fn to_bytes(&self, close: bool) -> Vec<u8> {
        // Room for the body too, so that appending it does not reallocate and copy.
        let mut head = String::with_capacity(160 + self.body.len());
        let _ = write!(head, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

impl Response {
    /// The head of a chunked stream response.
    pub fn stream_head(&self) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        head.into_bytes()
    }
}

/// One line of a chunked NDJSON stream: the line plus `\n`, framed as a chunk.
pub fn ndjson_chunk(line: &[u8]) -> Vec<u8> {
    let mut chunk = format!("{:x}\r\n", line.len() + 1).into_bytes();
    chunk.extend_from_slice(line);
    chunk.extend_from_slice(b"\n\r\n");
    chunk
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_complete_head() {
        let raw =
            b"POST /v1/key/create/my%2Dkey?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        let (req, n) = parse_head(raw).unwrap().unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/v1/key/create/my-key");
        assert_eq!(req.query, "x=1");
        assert_eq!(req.framing().unwrap(), BodyFraming::Length(3));
        assert_eq!(&raw[n..], b"abc");
        assert!(req.keep_alive());
    }

    #[test]
    fn partial_and_oversized_heads() {
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost:").unwrap().is_none());
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 1));
        assert_eq!(parse_head(&big).unwrap_err(), HeadError::TooLarge);
        assert!(matches!(
            parse_head(b"\x16\x03\x01garbage\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn error_bodies_are_json() {
        let r = Response::error(404, "key does not exist");
        assert_eq!(r.body, br#"{"message":"key does not exist"}"#);
        let bytes = r.to_bytes(false);
        assert!(bytes.starts_with(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"));
    }
}
