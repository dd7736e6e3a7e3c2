//! The HTTPS client of the command-line tool: ureq over rustls with a client certificate.
//!
//! Connection settings come from the environment (cli.md §2). For each setting the first
//! variable of its list that is *set* wins, even when it is empty:
//!
//! | setting | variables |
//! |---|---|
//! | server(s) | `MINIO_KES_SERVER`, `KES_SERVER`, `MINIO_KMS_KES_ENDPOINT` (default `127.0.0.1:7373`) |
//! | API key | `MINIO_KES_API_KEY`, `KES_API_KEY`, `MINIO_KMS_KES_API_KEY` |
//! | client private key | `MINIO_KES_KEY_FILE`, `KES_CLIENT_KEY`, `MINIO_KES_CLIENT_KEY` |
//! | client certificate | `MINIO_KES_CERT_FILE`, `KES_CLIENT_CERT`, `MINIO_KES_CLIENT_CERT` |
//! | trusted CA (file or directory of PEM certificates) | `MINIO_KES_CAPATH`, `KES_CAPATH`, `MINIO_KMS_KES_CAPATH` (default: system roots) |
//!
//! The server value is a comma-separated list; each entry is trimmed, a leading `http://`
//! is dropped and `https://` added when missing. On a connection failure the next entry is
//! tried. The CA variables are an addition of this implementation (Go KES only uses the
//! system roots); `SSL_CERT_FILE` / `SSL_CERT_DIR` choose the system roots as with OpenSSL.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
use zeroize::Zeroizing;

use super::Exit;
use crate::apikey::ApiKey;

pub const SERVER_VARS: [&str; 3] = ["MINIO_KES_SERVER", "KES_SERVER", "MINIO_KMS_KES_ENDPOINT"];
pub const API_KEY_VARS: [&str; 3] = ["MINIO_KES_API_KEY", "KES_API_KEY", "MINIO_KMS_KES_API_KEY"];
pub const KEY_FILE_VARS: [&str; 3] = [
    "MINIO_KES_KEY_FILE",
    "KES_CLIENT_KEY",
    "MINIO_KES_CLIENT_KEY",
];
pub const CERT_FILE_VARS: [&str; 3] = [
    "MINIO_KES_CERT_FILE",
    "KES_CLIENT_CERT",
    "MINIO_KES_CLIENT_CERT",
];
pub const CA_PATH_VARS: [&str; 3] = ["MINIO_KES_CAPATH", "KES_CAPATH", "MINIO_KMS_KES_CAPATH"];

pub const DEFAULT_SERVER: &str = "127.0.0.1:7373";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read into memory (a list of a million names fits).
const MAX_BODY: u64 = 64 << 20;

/// Where the first set variable of `names` came from, and its value.
pub fn first_set_var(names: &[&'static str]) -> Option<(&'static str, String)> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok().map(|value| (*name, value)))
}

/// Command-line overrides of the environment.
#[derive(Debug, Default, Clone)]
pub struct ConnectOptions {
    /// `-k/--insecure`: do not verify the server certificate.
    pub insecure: bool,
    /// `-s/--server` of `kes ls`.
    pub server: Option<String>,
    /// `-a/--api-key` of `kes ls`.
    pub api_key: Option<String>,
}

/// Turns the server setting into `https://host:port` base URLs.
pub fn parse_endpoints(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let entry = entry.strip_prefix("http://").unwrap_or(entry);
            let entry = entry.trim_end_matches('/');
            if entry.starts_with("https://") {
                entry.to_owned()
            } else {
                format!("https://{entry}")
            }
        })
        .collect()
}

/// A failed call: the server answered with an error status, or no server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// An HTTP error response, with the server's message.
    Api { status: u16, message: String },
    /// No endpoint could be reached; the text says which and why, and what to do.
    Transport(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Api { message, .. } => f.write_str(message),
            CallError::Transport(text) => f.write_str(text),
        }
    }
}

impl CallError {
    /// HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Api { status, .. } => Some(*status),
            CallError::Transport(_) => None,
        }
    }
}

/// A successful response.
#[derive(Debug)]
pub struct Reply {
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    /// Decodes the body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, CallError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CallError::Transport(format!(
                "the server sent a response that is not the expected JSON: {e}"
            ))
        })
    }

    /// Whether the body is newline-delimited JSON (the 2023 servers' listings).
    pub fn is_ndjson(&self) -> bool {
        self.content_type.starts_with("application/x-ndjson")
    }
}

/// HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

/// A connected-on-demand client for one or more KES endpoints.
pub struct Client {
    agent: ureq::Agent,
    stream_agent: ureq::Agent,
    endpoints: Vec<String>,
    /// The identity of our client certificate, for error hints.
    identity: String,
    /// The client certificate and trusted roots (`None`: --insecure), for connections
    /// made without ureq (`super::server_cert`).
    client_cert: ClientCert,
    roots: Option<Vec<Certificate<'static>>>,
}

impl Client {
    /// The client of a command that takes only `-k/--insecure` besides the environment.
    pub fn for_command(parsed: &super::args::Parsed) -> Result<Client, super::Exit> {
        Client::from_env(&ConnectOptions {
            insecure: parsed.has("insecure"),
            ..Default::default()
        })
    }

    /// Builds a client from the environment and the command-line overrides.
    pub fn from_env(options: &ConnectOptions) -> Result<Client, Exit> {
        let endpoints = match &options.server {
            Some(server) => parse_endpoints(server),
            None => match first_set_var(&SERVER_VARS) {
                Some((_, value)) => parse_endpoints(&value),
                None => parse_endpoints(DEFAULT_SERVER),
            },
        };
        if endpoints.is_empty() {
            return Err(Exit::Error(format!(
                "no KES server address: set {} (e.g. 127.0.0.1:7373)",
                SERVER_VARS[1]
            )));
        }

        let (client_cert, identity) = load_credentials(options)?;
        let roots = if options.insecure {
            None
        } else {
            Some(load_roots()?)
        };
        let tls = |roots: &Option<Vec<Certificate<'static>>>| {
            let builder = TlsConfig::builder()
                .provider(TlsProvider::Rustls)
                .client_cert(Some(client_cert.clone()))
                .unversioned_rustls_crypto_provider(std::sync::Arc::new(
                    rustls::crypto::ring::default_provider(),
                ));
            match roots {
                Some(roots) => builder.root_certs(RootCerts::new_with_certs(roots)),
                None => builder.disable_verification(true),
            }
            .build()
        };
        let agent_with = |timeout: Option<Duration>| {
            ureq::Agent::config_builder()
                .tls_config(tls(&roots))
                .https_only(true)
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_connect(Some(CONNECT_TIMEOUT))
                .timeout_global(timeout)
                .user_agent(format!("kes-cli/{}", env!("CARGO_PKG_VERSION")))
                .build()
                .new_agent()
        };
        Ok(Client {
            agent: agent_with(Some(REQUEST_TIMEOUT)),
            stream_agent: agent_with(None),
            endpoints,
            identity,
            client_cert,
            roots,
        })
    }

    /// The first endpoint, as `host:port`.
    pub fn endpoint(&self) -> &str {
        self.endpoints[0].trim_start_matches("https://")
    }

    /// Every endpoint, as `https://host:port`, in the order they are tried.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The client certificate, and the trusted roots (`None` with --insecure).
    pub fn tls_material(&self) -> (&ClientCert, Option<&[Certificate<'static>]>) {
        (&self.client_cert, self.roots.as_deref())
    }

    /// The identity of the client certificate in use.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Sends one request and reads the whole response.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Reply, CallError> {
        let response = self.send(&self.agent, method, path, body)?;
        let content_type = header(&response, "content-type");
        let mut body = response.into_body();
        let bytes = body
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| {
                CallError::Transport(format!("failed to read the server's response: {e}"))
            })?;
        Ok(Reply {
            content_type,
            body: bytes,
        })
    }

    /// Sends a GET for a stream (log events) and returns the open body, read as it comes.
    pub fn stream(&self, path: &str) -> Result<impl Read, CallError> {
        let response = self.send(&self.stream_agent, Method::Get, path, None)?;
        Ok(response.into_body().into_reader())
    }

    /// Tries each endpoint in turn until one answers; non-2xx answers become
    /// `CallError::Api`.
    fn send(
        &self,
        agent: &ureq::Agent,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<ureq::http::Response<ureq::Body>, CallError> {
        let mut failures = Vec::new();
        for endpoint in &self.endpoints {
            let url = format!("{endpoint}{path}");
            let result = match (method, body) {
                (Method::Get, _) => agent.get(&url).call(),
                (Method::Delete, _) => agent.delete(&url).call(),
                (Method::Post, Some(b)) => {
                    agent.post(&url).content_type("application/json").send(b)
                }
                (Method::Post, None) => agent.post(&url).send_empty(),
                (Method::Put, Some(b)) => agent.put(&url).content_type("application/json").send(b),
                (Method::Put, None) => agent.put(&url).send_empty(),
            };
            match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if (200..300).contains(&status) {
                        return Ok(response);
                    }
                    return Err(api_error(status, response, &self.identity, path));
                }
                Err(e) => failures.push(describe_transport_error(endpoint, &e)),
            }
        }
        Err(CallError::Transport(failures.join("; ")))
    }
}

fn header(response: &ureq::http::Response<ureq::Body>, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Reads an error response: JSON `{"message"}` (or `{"error"}`) when the content type
/// says JSON, else the body text.
fn api_error(
    status: u16,
    response: ureq::http::Response<ureq::Body>,
    identity: &str,
    path: &str,
) -> CallError {
    let content_type = header(&response, "content-type");
    let location = header(&response, "location");
    let mut body = response.into_body();
    let text = body
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .unwrap_or_default();
    let mut message = if content_type.starts_with("application/json") {
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(value) => value
                .get("error")
                .or_else(|| value.get("message"))
                .and_then(|m| m.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| text.trim().to_owned()),
            Err(_) => text.trim().to_owned(),
        }
    } else {
        text.trim().to_owned()
    };
    if message.is_empty() {
        message = format!("the server answered {status} without a message");
    }
    if (300..400).contains(&status) {
        message = format!("the server redirected {path} to '{location}'; is this a KES server?");
    }
    if status == 403 {
        message = format!(
            "{message} (the server refused identity {identity} for {path}: make it the admin \
             identity or assign it a policy that allows this path)"
        );
    }
    CallError::Api { status, message }
}

/// A transport failure explained, with what to try.
fn describe_transport_error(endpoint: &str, error: &ureq::Error) -> String {
    let address = endpoint.trim_start_matches("https://");
    if let Some(tls) = rustls_error(error) {
        return describe_tls_error(address, tls);
    }
    match error {
        ureq::Error::HostNotFound => {
            format!("cannot resolve the host of {address}: check the server address (KES_SERVER)")
        }
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => format!(
            "cannot connect to {address}: connection refused. Is the KES server running there? \
             Set KES_SERVER to its address"
        ),
        ureq::Error::Io(e) => format!("cannot talk to {address}: {e}"),
        ureq::Error::ConnectionFailed => format!(
            "cannot connect to {address}. Is the KES server running there? Set KES_SERVER to its address"
        ),
        ureq::Error::Timeout(_) => format!(
            "no answer from {address} in time: check that the address (KES_SERVER) is a running KES server"
        ),
        ureq::Error::Protocol(_) => format!(
            "{address} does not speak HTTPS as expected ({error}): check the port in KES_SERVER"
        ),
        other => format!("request to {address} failed: {other}"),
    }
}

fn rustls_error(error: &ureq::Error) -> Option<&rustls::Error> {
    match error {
        ureq::Error::Rustls(e) => Some(e),
        ureq::Error::Io(e) => e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    }
}

fn describe_tls_error(address: &str, error: &rustls::Error) -> String {
    use rustls::{AlertDescription, CertificateError, Error};
    match error {
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
        | Error::InvalidCertificate(CertificateError::BadSignature) => format!(
            "TLS handshake with {address} failed: the server's certificate is not signed by a \
             trusted CA. For a self-signed server certificate use --insecure (-k), or set \
             KES_CAPATH to the CA certificate"
        ),
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => format!(
            "TLS handshake with {address} failed: the server's certificate is not valid for this \
             host name or IP. Use the name the certificate was made for (see its --dns/--ip) or \
             --insecure (-k)"
        ),
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            format!("TLS handshake with {address} failed: the server's certificate has expired")
        }
        Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::CertificateRequired
            | AlertDescription::UnknownCA
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::DecryptError,
        ) => format!(
            "TLS handshake with {address} failed: the server refused our client certificate \
             ({error}). Check KES_CLIENT_CERT/KES_CLIENT_KEY or KES_API_KEY, and that the server \
             accepts this certificate"
        ),
        other => format!("TLS handshake with {address} failed: {other}"),
    }
}

/// Loads the client certificate and key (or derives them from an API key).
fn load_credentials(options: &ConnectOptions) -> Result<(ClientCert, String), Exit> {
    let api_key = match &options.api_key {
        Some(key) => Some(("--api-key", key.clone())),
        None => first_set_var(&API_KEY_VARS),
    }
    .filter(|(_, v)| !v.is_empty());
    let key_file = first_set_var(&KEY_FILE_VARS).filter(|(_, v)| !v.is_empty());
    let cert_file = first_set_var(&CERT_FILE_VARS).filter(|(_, v)| !v.is_empty());
    let api_key = api_key.map(|(name, value)| (name, Zeroizing::new(value)));

    match (api_key, key_file, cert_file) {
        (None, None, None) => Err(Exit::Error(
            "no API key specified. Consider setting KES_API_KEY (make one with 'kes identity new'), \
             or KES_CLIENT_CERT and KES_CLIENT_KEY to a certificate and private key file"
                .into(),
        )),
        (Some(_), Some(_), _) => Err(Exit::Error(
            "API key and private key file cannot be used at the same time: unset KES_API_KEY or KES_CLIENT_KEY".into(),
        )),
        (Some(_), None, Some(_)) => Err(Exit::Error(
            "API key and certificate file cannot be used at the same time: unset KES_API_KEY or KES_CLIENT_CERT".into(),
        )),
        (Some((name, text)), None, None) => {
            let key = ApiKey::parse(&text).map_err(|e| Exit::Error(format!("{name}: {e}")))?;
            let cert = key
                .client_certificate()
                .map_err(|e| Exit::Error(format!("generating the client certificate: {e}")))?;
            let pem = key.pkcs8_pem();
            let private = PrivateKey::from_pem(pem.as_bytes())
                .map_err(|e| Exit::Error(format!("loading the API key's private key: {e}")))?;
            let chain = [Certificate::from_der(&cert.der).to_owned()];
            Ok((ClientCert::new_with_certs(&chain, private), key.identity()))
        }
        (None, Some((_, key_path)), Some((_, cert_path))) => load_key_pair(&key_path, &cert_path),
        (None, Some(_), None) => Err(Exit::Error(
            "no certificate file specified. Consider setting KES_CLIENT_CERT".into(),
        )),
        (None, None, Some(_)) => Err(Exit::Error(
            "no private key file specified. Consider setting KES_CLIENT_KEY".into(),
        )),
    }
}

fn load_key_pair(key_path: &str, cert_path: &str) -> Result<(ClientCert, String), Exit> {
    let cert_pem = std::fs::read(cert_path)
        .map_err(|e| Exit::Error(format!("reading certificate file '{cert_path}': {e}")))?;
    let chain: Vec<Certificate<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(Result::ok)
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    let Some(leaf) = chain.first() else {
        return Err(Exit::Error(format!(
            "reading certificate file '{cert_path}': it contains no PEM CERTIFICATE block"
        )));
    };
    let identity = crate::identity::of_cert_der(leaf.der())
        .map_err(|e| Exit::Error(format!("reading certificate file '{cert_path}': {e}")))?;

    let key_pem = Zeroizing::new(
        std::fs::read(key_path)
            .map_err(|e| Exit::Error(format!("reading private key file '{key_path}': {e}")))?,
    );
    if key_pem
        .windows(b"ENCRYPTED".len())
        .any(|w| w == b"ENCRYPTED")
    {
        return Err(Exit::Error(format!(
            "the private key in '{key_path}' is encrypted, which is not supported yet: decrypt it, \
             e.g. 'openssl pkey -in {key_path} -out plain.key', and point KES_CLIENT_KEY at that"
        )));
    }
    let no_key = || {
        Exit::Error(format!(
            "reading private key file '{key_path}': it contains no PEM PRIVATE KEY block"
        ))
    };
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(no_key)?;
    check_key_matches_certificate(&key_der, leaf.der(), key_path, cert_path)?;
    let private = PrivateKey::from_pem(&key_pem).map_err(|_| no_key())?;
    Ok((ClientCert::new_with_certs(&chain, private), identity))
}

/// Fails with a clear message when the private key cannot sign for TLS or does not belong
/// to the certificate (the TLS library would otherwise stop at the first connection).
fn check_key_matches_certificate(
    key_der: &rustls_pki_types::PrivateKeyDer<'_>,
    cert_der: &[u8],
    key_path: &str,
    cert_path: &str,
) -> Result<(), Exit> {
    let signing_key = rustls::crypto::ring::sign::any_supported_type(key_der).map_err(|e| {
        Exit::Error(format!(
            "the private key in '{key_path}' cannot be used for TLS ({e}): use an Ed25519, \
             ECDSA P-256/P-384 or RSA key"
        ))
    })?;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| Exit::Error(format!("reading certificate file '{cert_path}': {e}")))?;
    if let Some(key_spki) = signing_key.public_key() {
        if key_spki.as_ref() != cert.public_key().raw {
            return Err(Exit::Error(format!(
                "the private key in '{key_path}' does not belong to the certificate in \
                 '{cert_path}': check KES_CLIENT_KEY and KES_CLIENT_CERT"
            )));
        }
    }
    Ok(())
}

/// Trusted roots: the CA variables, else the system's bundle.
fn load_roots() -> Result<Vec<Certificate<'static>>, Exit> {
    if let Some((name, path)) = first_set_var(&CA_PATH_VARS).filter(|(_, v)| !v.is_empty()) {
        let roots = read_pem_certs(Path::new(&path)).map_err(|e| {
            Exit::Error(format!(
                "{name}: cannot read CA certificates from '{path}': {e}"
            ))
        })?;
        if roots.is_empty() {
            return Err(Exit::Error(format!(
                "{name}: '{path}' contains no PEM CERTIFICATE"
            )));
        }
        return Ok(roots);
    }
    let mut candidates: Vec<String> = Vec::new();
    for var in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
        if let Ok(value) = std::env::var(var) {
            candidates.extend(
                value
                    .split(':')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    candidates.extend(
        [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/ca-bundle.pem",
            "/etc/ssl/cert.pem",
            "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        ]
        .map(str::to_owned),
    );
    for candidate in candidates {
        if let Ok(roots) = read_pem_certs(Path::new(&candidate)) {
            if !roots.is_empty() {
                return Ok(roots);
            }
        }
    }
    Err(Exit::Error(
        "found no trusted CA certificates on this system: set KES_CAPATH to the CA certificate \
         of the server, or use --insecure (-k)"
            .into(),
    ))
}

/// PEM certificates of a file, or of every file in a directory.
fn read_pem_certs(path: &Path) -> std::io::Result<Vec<Certificate<'static>>> {
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?.path();
            if entry.is_file() {
                files.push(entry);
            }
        }
        files.sort();
    } else {
        files.push(path.to_owned());
    }
    let mut certs = Vec::new();
    for file in files {
        let Ok(pem) = std::fs::read(&file) else {
            continue;
        };
        certs.extend(
            rustls_pemfile::certs(&mut pem.as_slice())
                .filter_map(Result::ok)
                .map(|der| Certificate::from_der(der.as_ref()).to_owned()),
        );
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalised() {
        assert_eq!(
            parse_endpoints("127.0.0.1:7373"),
            ["https://127.0.0.1:7373"]
        );
        assert_eq!(
            parse_endpoints(" http://a:1 , https://b:2/ ,c:3"),
            ["https://a:1", "https://b:2", "https://c:3"]
        );
        assert!(parse_endpoints(" , ").is_empty());
    }
}
