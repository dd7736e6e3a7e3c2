//! kes-bench: a load generator for any KES-compatible server.
//!
//! Plain std threads, one keep-alive mTLS connection per thread (rustls + httparse),
//! only the public KES key API (create, generate, decrypt, delete), so the numbers
//! compare the Rust and the Go server alike. See docs/BENCHMARKS.md.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

const USAGE: &str = "\
Usage:
    kes-bench --server URL (--cert FILE --key FILE | --api-key KEY) [options]
    kes-bench certs DIR
    kes-bench ready-time --server URL (credentials as above) -- COMMAND [ARGS...]

Load generator for any KES-compatible server (KES API over mTLS).

Options:
    --server URL          https://HOST:PORT of the server (default https://127.0.0.1:7373)
    --cert FILE --key FILE
                          Client certificate and private key (PEM)
    --api-key KEY         A kes:v1:... API key instead of --cert/--key
    --cacert FILE         CA certificate(s) to verify the server with (PEM)
    -k, --insecure        Do not verify the server's certificate
    --key-name NAME       Master key to use (default kes-bench); created if missing
    --op OP               generate | decrypt | create-delete (default generate)
    --connections N       Concurrent connections, one thread each (default 8)
    --duration D          Run for D (e.g. 10s, 500ms, 1m; default 10s)
    --requests N          Stop after N requests in total instead
    --warmup D            Unmeasured run before the measured one (default 0s)
    --new-connection      A fresh TCP connection and full TLS handshake per request
                          (no session resumption): measures handshakes per second
    --context TEXT        Context (associated data) for generate and decrypt
    --json                Print the result as JSON
    -h, --help            Show this help

`kes-bench certs DIR` writes a throw-away CA-less test PKI for benchmarks:
server.cert/server.key (localhost, 127.0.0.1) and client.cert/client.key, and
prints the client's identity.

`kes-bench ready-time ... -- COMMAND` starts COMMAND (a server), polls
GET /v1/status on a fresh TLS connection every millisecond until it answers 200,
prints the milliseconds from start to ready, then stops the server (SIGTERM).
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Generate,
    Decrypt,
    CreateDelete,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Generate => "generate",
            Op::Decrypt => "decrypt",
            Op::CreateDelete => "create-delete",
        }
    }
}

#[derive(Debug)]
struct Args {
    server: String,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    api_key: Option<String>,
    cacert: Option<PathBuf>,
    insecure: bool,
    key_name: String,
    op: Op,
    connections: usize,
    duration: Duration,
    requests: Option<u64>,
    warmup: Duration,
    new_connection: bool,
    context: Option<String>,
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration '{s}' (e.g. 10s, 500ms, 1m)");
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn parse_args(args: Vec<OsString>) -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut a = Args {
        server: "https://127.0.0.1:7373".into(),
        cert: None,
        key: None,
        api_key: None,
        cacert: None,
        insecure: false,
        key_name: "kes-bench".into(),
        op: Op::Generate,
        connections: 8,
        duration: Duration::from_secs(10),
        requests: None,
        warmup: Duration::ZERO,
        new_connection: false,
        context: None,
        json: false,
    };
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        let text = |p: &mut lexopt::Parser| -> Result<String, String> {
            p.value()
                .map_err(|e| e.to_string())?
                .into_string()
                .map_err(|_| "argument is not valid text".to_string())
        };
        match arg {
            Long("server") => a.server = text(&mut p)?,
            Long("cert") => a.cert = Some(text(&mut p)?.into()),
            Long("key") => a.key = Some(text(&mut p)?.into()),
            Long("api-key") => a.api_key = Some(text(&mut p)?),
            Long("cacert") => a.cacert = Some(text(&mut p)?.into()),
            Short('k') | Long("insecure") => a.insecure = true,
            Long("key-name") => a.key_name = text(&mut p)?,
            Long("op") => {
                a.op = match text(&mut p)?.as_str() {
                    "generate" => Op::Generate,
                    "decrypt" => Op::Decrypt,
                    "create-delete" => Op::CreateDelete,
                    other => return Err(format!("--op: unknown operation '{other}'")),
                }
            }
            Long("connections") | Short('c') => {
                a.connections = text(&mut p)?
                    .parse()
                    .map_err(|_| "--connections: not a number")?;
                if a.connections == 0 {
                    return Err("--connections must be at least 1".into());
                }
            }
            Long("duration") | Short('z') => a.duration = parse_duration(&text(&mut p)?)?,
            Long("requests") | Short('n') => {
                a.requests = Some(
                    text(&mut p)?
                        .parse()
                        .map_err(|_| "--requests: not a number")?,
                )
            }
            Long("warmup") => a.warmup = parse_duration(&text(&mut p)?)?,
            Long("new-connection") => a.new_connection = true,
            Long("context") => a.context = Some(text(&mut p)?),
            Long("json") => a.json = true,
            Short('h') | Long("help") => return Ok(None),
            other => return Err(other.unexpected().to_string()),
        }
    }
    if a.api_key.is_none() && (a.cert.is_none() || a.key.is_none()) {
        return Err("a client credential is needed: --cert FILE --key FILE, or --api-key".into());
    }
    if a.cacert.is_none() && !a.insecure {
        return Err("use --cacert FILE to verify the server, or -k/--insecure".into());
    }
    Ok(Some(a))
}

/// Host, port and the name to verify, from `https://host:port`.
fn parse_server(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("--server '{url}': must start with https://"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse()
                .map_err(|_| format!("--server '{url}': bad port"))?,
        ),
        _ => (rest, 7373),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), port))
}

// ---------------------------------------------------------------------------------
// TLS setup

/// Accepts any server certificate (`--insecure`), but still checks handshake
/// signatures so the handshake costs the same as a verified one on the server.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &data[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// A `kes:v1:` API key → (self-signed client certificate, its PKCS#8 key), as the KES
/// SDK does it (formats.md §5): Ed25519 from the seed, CN = identity, 90 days.
fn api_key_credential(
    api_key: &str,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>, String), String> {
    let text = api_key.trim();
    let b64 = text.strip_prefix("kes:v1:").unwrap_or(text);
    let raw = B64
        .decode(b64)
        .map_err(|_| "--api-key: not a kes:v1: API key (bad base64)".to_string())?;
    if raw.len() != 33 || raw[0] != 0 {
        return Err("--api-key: not a kes:v1: Ed25519 API key".into());
    }
    // PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410).
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend_from_slice(&raw[1..]);
    let der = PrivatePkcs8KeyDer::from(pkcs8.clone());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
        .map_err(|e| format!("--api-key: {e}"))?;
    let identity =
        hex(ring::digest::digest(&ring::digest::SHA256, &key_pair.public_key_der()).as_ref());
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, identity.clone());
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| "random number generator failed".to_string())?;
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + Duration::from_secs(90 * 24 * 3600)).into();
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let cert = params.self_signed(&key_pair).map_err(|e| e.to_string())?;
    Ok((
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)),
        identity,
    ))
}

fn tls_config(a: &Args, resumption: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if a.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_pem_certs(a.cacert.as_deref().expect("checked in parse_args"))? {
            roots.add(cert).map_err(|e| format!("--cacert: {e}"))?;
        }
        builder.with_root_certificates(roots)
    };
    let (chain, key) = match &a.api_key {
        Some(api_key) => {
            let (cert, key, _) = api_key_credential(api_key)?;
            (vec![cert], key)
        }
        None => {
            let cert_path = a.cert.as_deref().expect("checked in parse_args");
            let key_path = a.key.as_deref().expect("checked in parse_args");
            let data = fs::read(key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
            let key = rustls_pemfile::private_key(&mut &data[..])
                .map_err(|e| format!("{}: {e}", key_path.display()))?
                .ok_or_else(|| format!("{}: no private key found", key_path.display()))?;
            (read_pem_certs(cert_path)?, key)
        }
    };
    let mut config = builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("client credential: {e}"))?;
    if !resumption {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

// ---------------------------------------------------------------------------------
// A minimal HTTP/1.1 client over one TLS connection

struct Target {
    addr: std::net::SocketAddr,
    host_header: String,
    server_name: ServerName<'static>,
    tls: Arc<ClientConfig>,
}

struct Conn {
    stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
    /// Bytes of `buf` that are filled.
    len: usize,
}

struct Response {
    status: u16,
    body: Vec<u8>,
    close: bool,
}

impl Conn {
    fn open(t: &Target) -> io::Result<Conn> {
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

    fn request(&mut self, request: &[u8]) -> io::Result<Response> {
        self.stream.write_all(request)?;
        self.stream.flush()?;
        loop {
            if let Some((head_len, status, content_length, chunked, close)) = self.parse_head()? {
                let body = if chunked {
                    self.read_chunked(head_len)?
                } else {
                    let n = content_length.unwrap_or(0);
                    self.fill_to(head_len + n)?;
                    let body = self.buf[head_len..head_len + n].to_vec();
                    self.consume(head_len + n);
                    body
                };
                return Ok(Response {
                    status,
                    body,
                    close,
                });
            }
            self.read_more()?;
        }
    }

    /// (head length, status, Content-Length, chunked, Connection: close)
    #[allow(clippy::type_complexity)]
    fn parse_head(&self) -> io::Result<Option<(usize, u16, Option<usize>, bool, bool)>> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&self.buf[..self.len]) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap_or(0);
                let mut content_length = None;
                let mut chunked = false;
                let mut close = false;
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        content_length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok());
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = h.value.eq_ignore_ascii_case(b"chunked");
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close = h.value.eq_ignore_ascii_case(b"close");
                    }
                }
                Ok(Some((n, status, content_length, chunked, close)))
            }
            Ok(httparse::Status::Partial) => Ok(None),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
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

fn build_request(t: &Target, method: &str, path: &str, body: &[u8], close: bool) -> Vec<u8> {
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
fn one_shot(t: &Target, method: &str, path: &str, body: &[u8]) -> Result<Response, String> {
    let mut conn = Conn::open(t).map_err(|e| format!("cannot connect to {}: {e}", t.addr))?;
    conn.request(&build_request(t, method, path, body, true))
        .map_err(|e| format!("{method} {path}: {e}"))
}

fn error_message(resp: &Response) -> String {
    serde_json::from_slice::<serde_json::Value>(&resp.body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&resp.body).into_owned())
}

// ---------------------------------------------------------------------------------
// The load

/// What each request of an operation sends; the same for all connections.
struct Work {
    op: Op,
    key_name: String,
    generate_body: Vec<u8>,
    /// Pre-built decrypt bodies, used round-robin.
    decrypt_bodies: Vec<Vec<u8>>,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: BTreeMap<String, u64>,
    /// Latency of every request in nanoseconds (successful or not).
    samples: Vec<u64>,
    /// Requests that ended in an I/O or TLS failure: their connection was reopened.
    reconnects: u64,
}

impl Tally {
    fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_insert(0) += 1;
    }
}

fn io_kind(e: &io::Error) -> String {
    let text = e.to_string();
    let short: String = text.chars().take(60).collect();
    format!("io: {short}")
}

struct Stop {
    deadline: Option<Instant>,
    budget: Option<AtomicU64>,
    stop: AtomicBool,
}

impl Stop {
    /// Takes one request from the budget; false when the run is over.
    fn next(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if let Some(deadline) = self.deadline
            && Instant::now() >= deadline
        {
            return false;
        }
        if let Some(budget) = &self.budget {
            return budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
        }
        true
    }
}

fn worker(t: &Target, work: &Work, stop: &Stop, id: usize, new_connection: bool) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<Conn> = None;
    let mut seq: u64 = 0;
    let gen_path = format!("/v1/key/generate/{}", work.key_name);
    let dec_path = format!("/v1/key/decrypt/{}", work.key_name);
    let gen_req = build_request(t, "POST", &gen_path, &work.generate_body, new_connection);
    let dec_reqs: Vec<Vec<u8>> = work
        .decrypt_bodies
        .iter()
        .map(|b| build_request(t, "POST", &dec_path, b, new_connection))
        .collect();
    while stop.next() {
        let owned;
        let request: &[u8] = match work.op {
            Op::Generate => &gen_req,
            Op::Decrypt => &dec_reqs[(seq as usize + id) % dec_reqs.len()],
            Op::CreateDelete => {
                let name = format!("{}-{id}-{}", work.key_name, seq / 2);
                owned = if seq % 2 == 0 {
                    build_request(
                        t,
                        "POST",
                        &format!("/v1/key/create/{name}"),
                        b"",
                        new_connection,
                    )
                } else {
                    build_request(
                        t,
                        "DELETE",
                        &format!("/v1/key/delete/{name}"),
                        b"",
                        new_connection,
                    )
                };
                &owned
            }
        };
        seq += 1;
        let start = Instant::now();
        let c = match conn.take() {
            Some(c) => c,
            None => match Conn::open(t) {
                Ok(c) => c,
                Err(e) => {
                    tally.samples.push(start.elapsed().as_nanos() as u64);
                    tally.error(io_kind(&e));
                    tally.reconnects += 1;
                    // Do not spin on a server that refuses connections.
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let mut c = c;
        match c.request(request) {
            Ok(resp) => {
                tally.samples.push(start.elapsed().as_nanos() as u64);
                if resp.status == 200 {
                    tally.ok += 1;
                } else {
                    tally.error(format!("HTTP {}", resp.status));
                }
                if !resp.close && !new_connection {
                    conn = Some(c);
                }
            }
            Err(e) => {
                tally.samples.push(start.elapsed().as_nanos() as u64);
                tally.error(io_kind(&e));
                tally.reconnects += 1;
            }
        }
    }
    tally
}

struct Report {
    elapsed: Duration,
    ok: u64,
    total: u64,
    errors: BTreeMap<String, u64>,
    /// Sorted.
    samples: Vec<u64>,
}

impl Report {
    fn percentile(&self, p: f64) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        // Nearest-rank percentile.
        let rank = ((p / 100.0) * self.samples.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.samples.len()) - 1;
        self.samples[i] as f64 / 1e6
    }
    fn mean_ms(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        self.samples.iter().map(|&n| n as f64).sum::<f64>() / self.samples.len() as f64 / 1e6
    }
    fn throughput(&self) -> f64 {
        self.total as f64 / self.elapsed.as_secs_f64()
    }
}

fn run_load(
    t: &Arc<Target>,
    work: &Arc<Work>,
    connections: usize,
    duration: Duration,
    requests: Option<u64>,
    new_connection: bool,
) -> Report {
    let stop = Arc::new(Stop {
        deadline: if requests.is_some() {
            None
        } else {
            Some(Instant::now() + duration)
        },
        budget: requests.map(AtomicU64::new),
        stop: AtomicBool::new(false),
    });
    let start = Instant::now();
    let handles: Vec<_> = (0..connections)
        .map(|id| {
            let (t, work, stop) = (t.clone(), work.clone(), stop.clone());
            thread::Builder::new()
                .name(format!("conn-{id}"))
                .spawn(move || worker(&t, &work, &stop, id, new_connection))
                .expect("cannot start a thread")
        })
        .collect();
    let mut ok = 0;
    let mut errors = BTreeMap::new();
    let mut samples = Vec::new();
    for h in handles {
        let tally = h.join().expect("a connection thread panicked");
        ok += tally.ok;
        for (k, v) in tally.errors {
            *errors.entry(k).or_insert(0) += v;
        }
        samples.extend(tally.samples);
    }
    let elapsed = start.elapsed();
    samples.sort_unstable();
    Report {
        elapsed,
        ok,
        total: samples.len() as u64,
        errors,
        samples,
    }
}

fn prepare(t: &Target, a: &Args) -> Result<Work, String> {
    let context = a.context.as_ref().map(|c| B64.encode(c.as_bytes()));
    let generate_body = match &context {
        Some(c) => serde_json::json!({ "context": c }).to_string().into_bytes(),
        None => b"{}".to_vec(),
    };
    let mut work = Work {
        op: a.op,
        key_name: a.key_name.clone(),
        generate_body,
        decrypt_bodies: Vec::new(),
    };
    if a.op == Op::CreateDelete {
        return Ok(work);
    }
    // Create the key unless it exists. Servers answer an existing key with 400 (Go
    // KES: "key already exists") or 409; either is fine.
    let path = format!("/v1/key/create/{}", a.key_name);
    let resp = one_shot(t, "POST", &path, b"")?;
    let exists = matches!(resp.status, 400 | 409) && error_message(&resp).contains("exist");
    if resp.status != 200 && !exists {
        return Err(format!(
            "cannot create key '{}': HTTP {}: {}",
            a.key_name,
            resp.status,
            error_message(&resp)
        ));
    }
    // Check that generate works, and for decrypt collect ciphertexts to replay.
    let wanted = if a.op == Op::Decrypt { 64 } else { 1 };
    let mut conn = Conn::open(t).map_err(|e| format!("cannot connect to {}: {e}", t.addr))?;
    let gen_path = format!("/v1/key/generate/{}", a.key_name);
    for _ in 0..wanted {
        let resp = conn
            .request(&build_request(
                t,
                "POST",
                &gen_path,
                &work.generate_body,
                false,
            ))
            .map_err(|e| format!("POST {gen_path}: {e}"))?;
        if resp.status != 200 {
            return Err(format!(
                "generate with key '{}' failed: HTTP {}: {}",
                a.key_name,
                resp.status,
                error_message(&resp)
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&resp.body)
            .map_err(|e| format!("generate: response is not JSON: {e}"))?;
        let ciphertext = v
            .get("ciphertext")
            .and_then(|c| c.as_str())
            .ok_or("generate: response has no ciphertext")?;
        if a.op == Op::Decrypt {
            let mut body = serde_json::json!({ "ciphertext": ciphertext });
            if let Some(c) = &context {
                body["context"] = serde_json::Value::String(c.clone());
            }
            work.decrypt_bodies.push(body.to_string().into_bytes());
        }
    }
    if a.op == Op::Decrypt {
        let resp = conn
            .request(&build_request(
                t,
                "POST",
                &format!("/v1/key/decrypt/{}", a.key_name),
                &work.decrypt_bodies[0],
                true,
            ))
            .map_err(|e| format!("decrypt: {e}"))?;
        if resp.status != 200 {
            return Err(format!(
                "decrypt with key '{}' failed: HTTP {}: {}",
                a.key_name,
                resp.status,
                error_message(&resp)
            ));
        }
    }
    Ok(work)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn print_report(a: &Args, r: &Report) {
    let errors: u64 = r.errors.values().sum();
    if a.json {
        let errors_json: serde_json::Map<String, serde_json::Value> = r
            .errors
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
            .collect();
        let out = serde_json::json!({
            "server": a.server,
            "op": a.op.name(),
            "key_name": a.key_name,
            "connections": a.connections,
            "new_connection": a.new_connection,
            "elapsed_s": r.elapsed.as_secs_f64(),
            "requests": r.total,
            "ok": r.ok,
            "errors": errors,
            "errors_by_kind": errors_json,
            "throughput_rps": r.throughput(),
            "latency_ms": {
                "mean": r.mean_ms(),
                "p50": r.percentile(50.0),
                "p90": r.percentile(90.0),
                "p99": r.percentile(99.0),
                "p99.9": r.percentile(99.9),
                "max": r.percentile(100.0),
            },
        });
        println!("{out}");
        return;
    }
    let what = if a.new_connection {
        " (new TLS connection per request)"
    } else {
        ""
    };
    println!(
        "kes-bench: {} on {} with key '{}', {} connection(s){what}",
        a.op.name(),
        a.server,
        a.key_name,
        a.connections
    );
    println!(
        "  requests:    {} in {:.2} s: {} ok, {} errors",
        r.total,
        r.elapsed.as_secs_f64(),
        r.ok,
        errors
    );
    println!("  throughput:  {:.0} req/s", r.throughput());
    println!(
        "  latency ms:  mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        r.mean_ms(),
        r.percentile(50.0),
        r.percentile(90.0),
        r.percentile(99.0),
        r.percentile(99.9),
        r.percentile(100.0)
    );
    for (kind, n) in &r.errors {
        println!("  error:       {n} × {kind}");
    }
}

/// `kes-bench certs DIR`: a throw-away PKI for benchmarking a server.
fn write_certs(dir: &Path) -> Result<(), String> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let server_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(vec!["localhost".into()]).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().expect("literal")));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.self_signed(&server_key).map_err(|e| e.to_string())?;
    let client_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kes-bench");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = params.self_signed(&client_key).map_err(|e| e.to_string())?;
    for (name, text) in [
        ("server.key", server_key.serialize_pem()),
        ("server.cert", server_cert.pem()),
        ("client.key", client_key.serialize_pem()),
        ("client.cert", client_cert.pem()),
    ] {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let identity =
        hex(ring::digest::digest(&ring::digest::SHA256, &client_key.public_key_der()).as_ref());
    println!("{identity}");
    Ok(())
}

fn run(a: Args) -> Result<u64, String> {
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
    let setup = Target {
        addr,
        host_header: host_header.clone(),
        server_name: server_name.clone(),
        tls: tls_config(&a, true)?,
    };
    let work = Arc::new(prepare(&setup, &a)?);
    let target = Arc::new(Target {
        addr,
        host_header,
        server_name,
        tls: if a.new_connection {
            tls_config(&a, false)?
        } else {
            setup.tls.clone()
        },
    });
    if !a.warmup.is_zero() {
        run_load(
            &target,
            &work,
            a.connections,
            a.warmup,
            None,
            a.new_connection,
        );
    }
    let report = run_load(
        &target,
        &work,
        a.connections,
        a.duration,
        a.requests,
        a.new_connection,
    );
    print_report(&a, &report);
    Ok(report.errors.values().sum())
}

/// `kes-bench ready-time`: milliseconds from spawning a server to its first 200
/// answer to `GET /v1/status`.
fn ready_time(mut args: Vec<OsString>) -> Result<(), String> {
    let sep = args
        .iter()
        .position(|a| a == "--")
        .ok_or("ready-time: put the server command after --")?;
    let command = args.split_off(sep + 1);
    args.pop();
    let a = parse_args(args)?.ok_or("ready-time: see --help")?;
    let (program, rest) = command
        .split_first()
        .ok_or("ready-time: no command after --")?;
    let (host, port) = parse_server(&a.server)?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let t = Target {
        addr,
        host_header: format!("{host}:{port}"),
        server_name: ServerName::try_from(host.clone()).map_err(|e| e.to_string())?,
        tls: tls_config(&a, false)?,
    };
    let request = build_request(&t, "GET", "/v1/status", b"", true);
    let start = Instant::now();
    let mut child = std::process::Command::new(program)
        .args(rest)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.to_string_lossy()))?;
    let result = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!(
                "the server exited with {status} before it was ready"
            ));
        }
        if start.elapsed() > Duration::from_secs(10) {
            break Err("the server was not ready within 10 s".into());
        }
        if let Ok(mut c) = Conn::open(&t)
            && let Ok(resp) = c.request(&request)
            && resp.status == 200
        {
            break Ok(start.elapsed());
        }
        thread::sleep(Duration::from_millis(1));
    };
    // The child has not been reaped yet, so its pid is still ours.
    kill_term(child.id());
    let _ = child.wait();
    let elapsed = result?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "ready_ms": elapsed.as_secs_f64() * 1e3 })
        );
    } else {
        println!("ready after {:.1} ms", elapsed.as_secs_f64() * 1e3);
    }
    Ok(())
}

/// Asks our child to stop gracefully; `kill` on failure.
fn kill_term(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("warning: could not send SIGTERM to {pid}");
    }
}

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().and_then(|a| a.to_str()) == Some("ready-time") {
        return match ready_time(args.split_off(1)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.first().and_then(|a| a.to_str()) == Some("certs") {
        let Some(dir) = args.get(1) else {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        };
        return match write_certs(Path::new(dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let a = match parse_args(std::mem::take(&mut args)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("Error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(a) {
        Ok(0) => ExitCode::SUCCESS,
        // Errors during the load are reported above; exit 1 so scripts notice.
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
