//! Request heads: parsed by `httparse`, refused when too large or malformed.

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

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
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

impl Drop for Request {
    /// Bodies carry plaintexts and keys.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.body);
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
