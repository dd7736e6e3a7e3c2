//! Responses: a status, headers and a body (or a stream of NDJSON chunks), serialized.

use std::fmt::Write as _;

/// A response to send.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// A stream body: each received item is one NDJSON line, sent as a chunk as soon as
    /// it arrives, until the client goes away (log streams).
    pub stream: Option<std::sync::mpsc::Receiver<std::sync::Arc<[u8]>>>,
    /// A kes-only field of the request's audit event (name, value), never sent: e.g. how
    /// a resident key's intermediate key was had (docs/metrics.md).
    pub audit_extra: Option<(&'static str, &'static str)>,
}

impl Drop for Response {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.body);
    }
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            stream: None,
            audit_extra: None,
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
            audit_extra: None,
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
            audit_extra: None,
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
