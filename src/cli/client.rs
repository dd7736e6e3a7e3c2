//! The HTTPS client of the command-line tool: ureq over rustls with a client certificate.
//!
//! Connection settings come from the environment (`settings`: which variables, in which
//! order), the client certificate and the trusted roots from the files or API key they
//! name (`credentials`).

mod credentials;
mod settings;

use std::io::Read;
use std::time::Duration;

use ureq::tls::{Certificate, ClientCert, RootCerts, TlsConfig, TlsProvider};

use super::Exit;
use credentials::{load_credentials, load_roots};
pub use settings::{
    API_KEY_VARS, CA_PATH_VARS, CERT_FILE_VARS, ConnectOptions, DEFAULT_SERVER, KEY_FILE_VARS,
    SERVER_VARS, first_set_var, parse_endpoints,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read into memory (a list of a million names fits).
const MAX_BODY: u64 = 64 << 20;

/// Percent-encodes a path segment (names are plain, but a user may type anything).
pub(crate) fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'*') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
