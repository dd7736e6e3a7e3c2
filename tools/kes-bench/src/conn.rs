//! A minimal HTTP/1.1 client over one TLS connection.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;

use crate::args::{Args, parse_server};
use crate::tls::tls_config;

pub(crate) struct Target {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) host_header: String,
    pub(crate) server_name: ServerName<'static>,
    pub(crate) tls: Arc<ClientConfig>,
}

impl Target {
    /// The server of `--server`, with a client TLS configuration from `a`; `resumption`
    /// false makes every connection a full handshake.
    pub(crate) fn new(a: &Args, resumption: bool) -> Result<Target, String> {
        let (host, port) = parse_server(&a.server)?;
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("--server: cannot resolve '{host}': {e}"))?
            .next()
            .ok_or_else(|| format!("--server: '{host}' has no address"))?;
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| format!("--server: '{host}' is not a valid server name"))?;
        let host_header = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Target {
            addr,
            host_header,
            server_name,
            tls: tls_config(a, resumption)?,
        })
    }
}

pub(crate) struct Conn {
    stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
    /// Bytes of `buf` that are filled.
    len: usize,
}

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    pub(crate) close: bool,
}

impl Conn {
    pub(crate) fn open(t: &Target) -> io::Result<Conn> {
        let tcp = TcpStream::connect_timeout(&t.addr, Duration::from_secs(10))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(30)))?;
        let tls = ClientConnection::new(t.tls.clone(), t.server_name.clone())
            .map_err(io::Error::other)?;
        let mut stream = StreamOwned::new(tls, tcp);
        // Complete the handshake now, so a failing handshake is reported as such.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Conn {
            stream,
            buf: vec![0; 16 * 1024],
            len: 0,
        })
    }

    /// The TCP socket, for a caller that goes on without TLS (a flood's idle connection).
    pub(crate) fn into_socket(self) -> TcpStream {
        self.stream.sock
    }

    /// The TLS connection and its socket, for a caller that drives them itself
    /// (`--event-loop`).
    pub(crate) fn into_parts(self) -> (ClientConnection, TcpStream) {
        let StreamOwned { conn, sock } = self.stream;
        (conn, sock)
    }

    pub(crate) fn request(&mut self, request: &[u8]) -> io::Result<Response> {
        self.stream.write_all(request)?;
        self.stream.flush()?;
        loop {
            if let Some(head) = parse_head(&self.buf[..self.len])? {
                let body = if head.chunked {
                    self.read_chunked(head.len)?
                } else {
                    let n = head.content_length.unwrap_or(0);
                    self.fill_to(head.len + n)?;
                    let body = self.buf[head.len..head.len + n].to_vec();
                    self.consume(head.len + n);
                    body
                };
                return Ok(Response {
                    status: head.status,
                    body,
                    close: head.close,
                });
            }
            self.read_more()?;
        }
    }

    fn read_more(&mut self) -> io::Result<()> {
        if self.len == self.buf.len() {
            if self.buf.len() >= 16 * 1024 * 1024 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "response too large",
                ));
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.stream.read(&mut self.buf[self.len..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        self.len += n;
        Ok(())
    }

    fn fill_to(&mut self, n: usize) -> io::Result<()> {
        if self.buf.len() < n {
            self.buf.resize(n, 0);
        }
        while self.len < n {
            self.read_more()?;
        }
        Ok(())
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }

    fn read_chunked(&mut self, head_len: usize) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        let mut pos = head_len;
        loop {
            let line_end = loop {
                if let Some(i) = self.buf[pos..self.len]
                    .windows(2)
                    .position(|w| w == b"\r\n")
                {
                    break pos + i;
                }
                self.read_more()?;
            };
            let size_text = std::str::from_utf8(&self.buf[pos..line_end]).unwrap_or("");
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            pos = line_end + 2;
            self.fill_to(pos + size + 2)?;
            body.extend_from_slice(&self.buf[pos..pos + size]);
            pos += size + 2;
            if size == 0 {
                // No trailers expected from KES servers.
                self.consume(pos);
                return Ok(body);
            }
        }
    }
}

/// An answer's head at the start of `bytes`: `None` until it is complete.
pub(crate) struct Head {
    pub(crate) len: usize,
    pub(crate) status: u16,
    pub(crate) content_length: Option<usize>,
    pub(crate) chunked: bool,
    /// `Connection: close`.
    pub(crate) close: bool,
}

pub(crate) fn parse_head(bytes: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    let mut head = Head {
        len,
        status: resp.code.unwrap_or(0),
        content_length: None,
        chunked: false,
        close: false,
    };
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
            head.content_length = Some(length);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = h.value.eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            head.close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    Ok(Some(head))
}

pub(crate) fn build_request(
    t: &Target,
    method: &str,
    path: &str,
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let mut r = Vec::with_capacity(256 + body.len());
    let _ = write!(
        r,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kes-bench\r\nAccept: application/json\r\n",
        t.host_header
    );
    if !body.is_empty() || method == "POST" {
        let _ = write!(
            r,
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    if close {
        r.extend_from_slice(b"Connection: close\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

/// One request on a short-lived connection, for setting up.
pub(crate) fn one_shot(
    t: &Target,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Response, String> {
    let mut conn = Conn::open(t).map_err(|e| format!("cannot connect to {}: {e}", t.addr))?;
    conn.request(&build_request(t, method, path, body, true))
        .map_err(|e| format!("{method} {path}: {e}"))
}

pub(crate) fn error_message(resp: &Response) -> String {
    serde_json::from_slice::<serde_json::Value>(&resp.body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&resp.body).into_owned())
}
