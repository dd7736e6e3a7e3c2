//! Test support: certificates made in the test, the real `kes` binary as a child
//! process, and a small mTLS HTTP/1.1 client that talks to it as any client would.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub const KES: &str = env!("CARGO_BIN_EXE_kes");

/// A certificate authority made for one test, and the files it issues.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca_key: KeyPair,
    ca_cert: rcgen::Certificate,
    pub ca_path: PathBuf,
}

/// A client credential: certificate and key files, and the identity they carry.
#[derive(Clone)]
pub struct Credential {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub identity: String,
    certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "kes test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let ca_path = dir.path().join("ca.cert");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        Pki {
            dir,
            ca_key,
            ca_cert,
            ca_path,
        }
    }

    /// The CA's key and certificate, to issue certificates a test shapes itself.
    pub fn ca(&self) -> (&KeyPair, &rcgen::Certificate) {
        (&self.ca_key, &self.ca_cert)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A server certificate for 127.0.0.1 and localhost, issued by the test CA.
    pub fn server(&self) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        let (cert_path, key_path) = (self.path("server.cert"), self.path("server.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// A self-signed client certificate (as `kes identity new` makes).
    pub fn client(&self, name: &str) -> Credential {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.self_signed(&key).unwrap();
        self.save(name, &cert.pem(), &key.serialize_pem())
    }

    /// A client certificate issued by the test CA.
    pub fn client_signed(&self, name: &str) -> Credential {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        self.save(name, &cert.pem(), &key.serialize_pem())
    }

    /// Writes a credential given as PEM texts.
    pub fn save(&self, name: &str, cert_pem: &str, key_pem: &str) -> Credential {
        let (cert_path, key_path) = (
            self.path(&format!("{name}.cert")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert_pem).unwrap();
        std::fs::write(&key_path, key_pem).unwrap();
        credential(&cert_path, &key_path)
    }

    /// `config.yml` with `admin` as the admin identity and an fs keystore in `keys/`,
    /// after `extra` (other top-level sections).
    pub fn fs_config(&self, admin: &str, extra: &str) -> PathBuf {
        self.config(
            "config.yml",
            &format!(
                "{extra}admin:\n  identity: {admin}\nkeystore:\n  fs:\n    path: {}\n",
                self.path("keys").display()
            ),
        )
    }

    /// A config file with this PKI's server certificate and the given body.
    pub fn config(&self, name: &str, body: &str) -> PathBuf {
        let (cert, key) = self.server();
        let tls = format!("  key: {}\n  cert: {}\n", key.display(), cert.display());
        // Into the body's own `tls:` section if it has one, else a new one.
        let text = match body
            .find("\ntls:\n")
            .map(|i| i + 1)
            .or(body.starts_with("tls:\n").then_some(0))
        {
            Some(at) => format!("{}tls:\n{tls}{}", &body[..at], &body[at + 5..]),
            None => format!("tls:\n{tls}{body}"),
        };
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Loads a credential from PEM files.
pub fn credential(cert_path: &Path, key_path: &Path) -> Credential {
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut std::fs::read(cert_path).unwrap().as_slice())
            .map(|c| c.unwrap())
            .collect();
    let key = rustls_pemfile::private_key(&mut std::fs::read(key_path).unwrap().as_slice())
        .unwrap()
        .unwrap();
    let identity = kes::identity::of_cert_der(&certs[0]).unwrap();
    Credential {
        cert_path: cert_path.into(),
        key_path: key_path.into(),
        identity,
        certs,
        key: Arc::new(key),
    }
}

/// A free loopback port.
/// The address in kes's banner: `… listening on https://ADDR` (`kes server`) or
/// `address:   https://ADDR` (`kes server --dev`).
fn listening_addr(stderr: &str) -> Option<SocketAddr> {
    ["listening on https://", "address:   https://"]
        .iter()
        .find_map(|prefix| {
            let rest = &stderr[stderr.find(prefix)? + prefix.len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
}

/// A port free now, for a server that must be told its address before it starts; it may
/// be taken before that server binds it (another socket can get it meanwhile), so prefer
/// `--addr 127.0.0.1:0`, which [`Kes::spawn`] reads back from the banner.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A running `kes server`, killed when dropped. Its stderr is collected.
pub struct Kes {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: Arc<Mutex<String>>,
    pub stdout: Arc<Mutex<String>>,
    ca: PathBuf,
}

impl Kes {
    /// Starts `kes server --config CONFIG --addr ADDR ARGS…` and waits until it serves.
    pub fn start(pki: &Pki, config: &Path, args: &[&str]) -> Kes {
        Kes::try_start(pki, config, args).unwrap_or_else(|e| panic!("kes did not start: {e}"))
    }

    pub fn try_start(pki: &Pki, config: &Path, args: &[&str]) -> Result<Kes, String> {
        // The kernel picks the port: no other socket can take it first.
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut cmd = Command::new(KES);
        cmd.arg("server")
            .arg("--config")
            .arg(config)
            .arg("--addr")
            .arg(addr.to_string())
            .args(args);
        Kes::spawn(cmd, addr, pki.ca_path.clone())
    }

    pub fn spawn(mut cmd: Command, addr: SocketAddr, ca: PathBuf) -> Result<Kes, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = collect(child.stderr.take().unwrap());
        let stdout = collect(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                return Err(format!("exited with {status}: {}", stderr.lock().unwrap()));
            }
            // Ready once it says where it listens (printed after binding); with port 0 in
            // `addr` the kernel chose the port and the banner tells it. A successful connect
            // proves less: on loopback, a connect to a port nobody listens on yet can pick
            // that same port as its source and connect to itself.
            let listening = listening_addr(&stderr.lock().unwrap());
            if let Some(listening) = listening.filter(|l| addr.port() == 0 || *l == addr) {
                let addr = listening;
                return Ok(Kes {
                    child,
                    addr,
                    stderr,
                    stdout,
                    ca,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!(
                    "not listening after 10 s: {}",
                    stderr.lock().unwrap()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self, who: &Credential) -> Client {
        Client::new(self.addr, &self.ca, Some(who))
    }

    pub fn client_without_cert(&self) -> Client {
        Client::new(self.addr, &self.ca, None)
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Kes {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(stream: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    let sink = out.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    out
}

/// Runs `kes ARGS…` to completion: (exit code, stdout, stderr).
pub fn run_kes(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(KES)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of the sample `name` (labels included, as written) in a Prometheus text
/// scrape such as `GET /v1/metrics` answers.
pub fn metric(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics:\n{scrape}"))
}

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `name` of each line of an NDJSON listing (`/v1/key/list/…`), in order.
    pub fn listed_names(&self) -> Vec<String> {
        self.text()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("not an NDJSON line ({e}): {l}"))["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no name: {l}"))
                    .to_string()
            })
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The `message` of an error body.
    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub type Stream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A keep-alive HTTPS client with an optional client certificate.
pub struct Client {
    addr: SocketAddr,
    ca: PathBuf,
    who: Option<Credential>,
    config: Arc<rustls::ClientConfig>,
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
    stream: Option<Stream>,
}

impl Client {
    pub fn new(addr: SocketAddr, ca: &Path, who: Option<&Credential>) -> Client {
        Client::with_tls(addr, ca, who, rustls::DEFAULT_VERSIONS, None)
    }

    /// The same client, speaking only the given TLS versions (on its next connection).
    pub fn with_versions(self, versions: &[&'static rustls::SupportedProtocolVersion]) -> Client {
        assert!(self.stream.is_none(), "set the versions before connecting");
        let who = self.who.clone();
        Client::with_tls(self.addr, &self.ca, who.as_ref(), versions, None)
    }

    /// The same client, offering only the given cipher suites (on its next connection).
    pub fn with_cipher_suites(self, suites: &[rustls::SupportedCipherSuite]) -> Client {
        assert!(self.stream.is_none(), "set the suites before connecting");
        let who = self.who.clone();
        Client::with_tls(
            self.addr,
            &self.ca,
            who.as_ref(),
            &self.versions,
            Some(suites),
        )
    }

    fn with_tls(
        addr: SocketAddr,
        ca: &Path,
        who: Option<&Credential>,
        versions: &[&'static rustls::SupportedProtocolVersion],
        suites: Option<&[rustls::SupportedCipherSuite]>,
    ) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut std::fs::read(ca).unwrap().as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(suites) = suites {
            provider.cipher_suites = suites.to_vec();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let config = match who {
            Some(who) => builder
                .with_client_auth_cert(who.certs.clone(), who.key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Client {
            addr,
            ca: ca.to_path_buf(),
            who: who.cloned(),
            config: Arc::new(config),
            versions: versions.to_vec(),
            stream: None,
        }
    }

    /// The same client, on a fresh connection next time.
    pub fn reconnected(mut self) -> Client {
        self.stream = None;
        self
    }

    /// A TLS client connection with this client's settings, not started yet: for tests
    /// that drive the handshake by hand.
    pub fn tls_connection(&self) -> rustls::ClientConnection {
        rustls::ClientConnection::new(
            self.config.clone(),
            ServerName::try_from("127.0.0.1").unwrap(),
        )
        .unwrap()
    }

    /// Opens the TLS connection (handshake included) if none is open.
    pub fn connect(&mut self) -> std::io::Result<()> {
        if self.stream.is_none() {
            let sock = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
            sock.set_read_timeout(Some(Duration::from_secs(20)))?;
            sock.set_nodelay(true)?;
            let conn = self.tls_connection();
            let mut stream = rustls::StreamOwned::new(conn, sock);
            while stream.conn.is_handshaking() {
                stream.conn.complete_io(&mut stream.sock)?;
            }
            self.stream = Some(stream);
        }
        Ok(())
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path, &[])
    }

    pub fn post(&mut self, path: &str, body: &[u8]) -> Resp {
        self.request("POST", path, body)
    }

    /// Sends a request and reads the response, retrying once on a connection the server
    /// closed while idle.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Resp {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn try_request(&mut self, method: &str, path: &str, body: &[u8]) -> std::io::Result<Resp> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        self.send_raw(&raw)
    }

    /// Sends raw bytes (a whole request) and reads one response.
    pub fn send_raw(&mut self, raw: &[u8]) -> std::io::Result<Resp> {
        self.connect()?;
        let stream = self.stream.as_mut().unwrap();
        stream.write_all(raw)?;
        stream.flush()?;
        let result = read_response(stream);
        if result
            .as_ref()
            .map_or(true, |r| r.header("connection") == Some("close"))
        {
            self.stream = None;
        }
        result
    }

    /// Writes bytes without reading a response.
    pub fn write(&mut self, raw: &[u8]) -> std::io::Result<()> {
        self.connect()?;
        let stream = self.stream.as_mut().unwrap();
        stream.write_all(raw)?;
        stream.flush()
    }

    /// Makes the open connection's receive buffer tiny (a client that reads slowly).
    pub fn shrink_receive_buffer(&mut self) {
        self.set_option(libc::SOL_SOCKET, libc::SO_RCVBUF, 2048);
    }

    /// Makes the open connection's send buffer small (so that a client's writes block
    /// soon after the server stops reading).
    pub fn shrink_send_buffer(&mut self) {
        self.set_option(libc::SOL_SOCKET, libc::SO_SNDBUF, 16 * 1024);
    }

    /// Holds back partly filled segments until the connection is shut down for writing,
    /// so that the last bytes and the FIN leave together.
    pub fn cork(&mut self) {
        self.set_option(libc::IPPROTO_TCP, libc::TCP_CORK, 1);
    }

    fn set_option(&mut self, level: libc::c_int, option: libc::c_int, value: libc::c_int) {
        use std::os::fd::AsRawFd;
        let fd = self.stream.as_ref().expect("connected").sock.as_raw_fd();
        // SAFETY: valid socket and option value for the duration of the call.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }

    /// The open TLS stream, to write TLS records by hand; the client stays usable.
    pub fn stream(&mut self) -> &mut Stream {
        self.stream.as_mut().expect("connected")
    }

    /// The open TLS stream, for reading a streamed response by hand.
    pub fn into_stream(mut self) -> Stream {
        self.stream.take().expect("connected")
    }

    /// Reads one response on the open connection.
    pub fn read_response(&mut self) -> std::io::Result<Resp> {
        read_response(
            self.stream
                .as_mut()
                .ok_or_else(|| std::io::Error::other("not connected"))?,
        )
    }
}

/// Writes `bytes` as TLS records straight to the socket (16 KiB of plaintext at a time,
/// what rustls takes at once), without reading anything.
pub fn send_records(stream: &mut Stream, bytes: &[u8]) {
    for piece in bytes.chunks(16 * 1024) {
        stream.conn.writer().write_all(piece).unwrap();
        while stream.conn.wants_write() {
            stream.conn.write_tls(&mut stream.sock).unwrap();
        }
    }
}

/// Reads one response. A connection closed before its first byte is `UnexpectedEof`
/// (or the read's own error); one cut after it is `InvalidData`.
pub fn read_response(stream: &mut Stream) -> std::io::Result<Resp> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head_len) =
            resp.parse(&buf).map_err(std::io::Error::other)?
        {
            let status = resp.code.unwrap_or(0);
            let headers: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            if status == 100 {
                buf.drain(..head_len);
                continue;
            }
            while buf.len() < head_len + len {
                let n = stream.read(&mut chunk).map_err(|e| cut(&buf, e))?;
                if n == 0 {
                    return Err(cut(&buf, closed()));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(Resp {
                status,
                headers,
                body: buf[head_len..head_len + len].to_vec(),
            });
        }
        let n = stream.read(&mut chunk).map_err(|e| cut(&buf, e))?;
        if n == 0 {
            return Err(cut(&buf, closed()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed")
}

/// A read error after part of a response arrived: `InvalidData`, a response cut short,
/// which no test may take for a connection the server closed between responses.
fn cut(received: &[u8], e: std::io::Error) -> std::io::Error {
    if received.is_empty() {
        return e;
    }
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("response cut after {} bytes: {e}", received.len()),
    )
}
