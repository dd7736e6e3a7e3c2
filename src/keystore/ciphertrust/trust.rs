//! Whom the CipherTrust client trusts: the endpoint URL, `tls.ca` or the system roots.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::{CertificateDer, ServerName};
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use super::config::CipherTrustConfig;
use super::transport::CONNECT_TIMEOUT;
use crate::keystore::KeyStoreError;

/// Checks the endpoint and removes one trailing `/` (the original appends `/api/v1/…`
/// verbatim and breaks on `https://host/`).
pub(super) fn normalize_endpoint(endpoint: &str) -> Result<String, KeyStoreError> {
    let trimmed = endpoint.trim();
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let lower = trimmed.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => {
            if lower.starts_with("http://") {
                log::warn!(
                    "CipherTrust Manager endpoint {trimmed} is plain HTTP: tokens and keys cross the network unencrypted"
                );
            }
            Ok(trimmed.to_owned())
        }
        _ => Err(KeyStoreError::Other(format!(
            "invalid CipherTrust Manager endpoint '{endpoint}': expected a URL such as https://ctm.example.com"
        ))),
    }
}

/// How kes reaches CipherTrust: the blocking HTTP client, the address it last resolved,
/// and what an event loop needs to make calls itself (`crate::keystore::remote`).
pub(super) struct Reach {
    pub(super) agent: ureq::Agent,
    pub(super) resolver: Arc<CachedResolver>,
    /// For calls made on event loops: `None` where those go the blocking way (plain
    /// HTTP, a proxy, verification off).
    pub(super) direct: Option<Direct>,
}

/// What an event loop needs to talk to CipherTrust itself.
pub(super) struct Direct {
    /// `Host` header: the endpoint's authority.
    pub(super) host: String,
    /// The endpoint's path, put in front of `/api/v1/…` (usually empty).
    pub(super) base: String,
    pub(super) server_name: ServerName<'static>,
    pub(super) tls: Arc<rustls::ClientConfig>,
}

/// The HTTP client: TLS with the configured trust, no redirects (an unexpected redirect
/// must not carry the token elsewhere), statuses handled by us.
pub(super) fn build_agent(cfg: &CipherTrustConfig) -> Result<Reach, KeyStoreError> {
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()));
    let mut verified_roots = None;
    if cfg.insecure_skip_verify {
        tls = tls.disable_verification(true);
    } else {
        let roots = match &cfg.ca {
            Some(path) => load_ca(path)?,
            None => load_system_roots()?,
        };
        verified_roots = Some(roots.clone());
        let roots: Vec<Certificate<'static>> = roots
            .iter()
            .map(|der| Certificate::from_der(der).to_owned())
            .collect();
        tls = tls.root_certs(RootCerts::Specific(Arc::new(roots)));
    }
    let config = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        // Every pool worker (at most 64) may call CipherTrust at once; each keeps its
        // connection for the next call instead of a new TLS handshake.
        .max_idle_connections(128)
        .max_idle_connections_per_host(64)
        .max_idle_age(Duration::from_secs(30))
        .user_agent(format!("kes/{}", env!("CARGO_PKG_VERSION")))
        .build();
    let resolver = Arc::new(CachedResolver::default());
    let agent = ureq::Agent::with_parts(
        config,
        DefaultConnector::default(),
        SharedResolver(Arc::clone(&resolver)),
    );
    let endpoint = normalize_endpoint(&cfg.endpoint)?;
    let direct = verified_roots.and_then(|roots| direct(&endpoint, roots));
    Ok(Reach {
        agent,
        resolver,
        direct,
    })
}

/// What an event loop needs for calls of its own, when it may make them: HTTPS, no
/// proxy in the environment (ureq's blocking calls use it), verification on.
fn direct(endpoint: &str, roots: Vec<CertificateDer<'static>>) -> Option<Direct> {
    const PROXY_VARIABLES: [&str; 6] = [
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ];
    if PROXY_VARIABLES
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        return None;
    }
    let rest = endpoint
        .get(..8)?
        .eq_ignore_ascii_case("https://")
        .then(|| &endpoint[8..])?;
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    let server_name = ServerName::try_from(host.to_string()).ok()?;
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root).ok()?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(store)
    .with_no_client_auth();
    Some(Direct {
        host: authority.to_string(),
        base: base.to_string(),
        server_name,
        tls: Arc::new(tls),
    })
}

/// The certificates of `tls.ca`: one PEM file, or every regular file of a directory, each
/// of which must hold at least one valid certificate.
pub(super) fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, KeyStoreError> {
    let meta = fs::metadata(path).map_err(|err| {
        KeyStoreError::Other(format!("cannot read tls.ca '{}': {err}", path.display()))
    })?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        let entries = fs::read_dir(path).map_err(|err| {
            KeyStoreError::Other(format!(
                "cannot read tls.ca directory '{}': {err}",
                path.display()
            ))
        })?;
        for entry in entries {
            let entry = entry.map_err(|err| {
                KeyStoreError::Other(format!(
                    "cannot read tls.ca directory '{}': {err}",
                    path.display()
                ))
            })?;
            if fs::metadata(entry.path())
                .map(|m| m.is_file())
                .unwrap_or(false)
            {
                files.push(entry.path());
            }
        }
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut roots = rustls::RootCertStore::empty();
    let mut all = Vec::new();
    for file in &files {
        let certs = read_pem_certs(file)?;
        if certs.is_empty() {
            return Err(KeyStoreError::Other(format!(
                "tls.ca: '{}' holds no PEM certificate; remove it or give the CA certificate file",
                file.display()
            )));
        }
        for cert in certs {
            roots.add(cert.clone()).map_err(|err| {
                KeyStoreError::Other(format!(
                    "tls.ca: '{}' holds an unusable certificate: {err}",
                    file.display()
                ))
            })?;
            all.push(cert);
        }
    }
    if all.is_empty() {
        return Err(KeyStoreError::Other(format!(
            "tls.ca: no certificate found in '{}'",
            path.display()
        )));
    }
    Ok(all)
}

/// Well-known CA bundle locations of Linux distributions and BSDs.
pub(super) const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/share/certs/ca-root-nss.crt",
];

/// The system's trusted roots: `SSL_CERT_FILE` / `SSL_CERT_DIR` if set (as OpenSSL does),
/// else the first well-known bundle that exists. Read directly rather than through a
/// crate: it is a PEM file, and rustls-pemfile is already a dependency.
pub(super) fn load_system_roots() -> Result<Vec<CertificateDer<'static>>, KeyStoreError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        candidates.push(file.into());
    }
    if let Some(dir) = std::env::var_os("SSL_CERT_DIR") {
        candidates.push(dir.into());
    }
    candidates.extend(SYSTEM_BUNDLES.iter().map(PathBuf::from));
    for candidate in &candidates {
        let files: Vec<PathBuf> = match fs::metadata(candidate) {
            Ok(meta) if meta.is_dir() => fs::read_dir(candidate)
                .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default(),
            Ok(_) => vec![candidate.clone()],
            Err(_) => continue,
        };
        let mut roots = rustls::RootCertStore::empty();
        let mut all = Vec::new();
        for file in files {
            for cert in read_pem_certs(&file).unwrap_or_default() {
                // Bundles carry the odd certificate rustls cannot use; skip those.
                if roots.add(cert.clone()).is_ok() {
                    all.push(cert);
                }
            }
        }
        if !all.is_empty() {
            return Ok(all);
        }
    }
    Err(KeyStoreError::Other(format!(
        "no system CA certificates found (looked at SSL_CERT_FILE, SSL_CERT_DIR, {}); set tls.ca to the CA \
         that issued CipherTrust Manager's certificate",
        SYSTEM_BUNDLES.join(", ")
    )))
}

pub(super) fn read_pem_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, KeyStoreError> {
    let data = fs::read(file)
        .map_err(|err| KeyStoreError::Other(format!("cannot read '{}': {err}", file.display())))?;
    rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| {
            KeyStoreError::Other(format!("'{}' is not valid PEM: {err}", file.display()))
        })
}

/// How long a resolved CipherTrust address is used before it is looked up again.
const RESOLVE_TTL: Duration = Duration::from_secs(30);

/// Looks CipherTrust's host up at most every [`RESOLVE_TTL`]. ureq resolves the host
/// at every call, before it takes a kept-alive connection from its pool, and with a time
/// limit it does so on a thread of its own: without this, every resident-key operation
/// would start a thread and ask the system resolver.
#[derive(Debug, Default)]
pub(super) struct CachedResolver {
    inner: DefaultResolver,
    /// `host:port` as in the URI, when it was resolved, and the addresses.
    cache: Mutex<Option<(String, Instant, ResolvedSocketAddrs)>>,
}

impl CachedResolver {
    /// The address last resolved, for calls made on event loops (which never wait for a
    /// lookup). The blocking calls, the status probe among them, keep it fresh.
    pub(super) fn last(&self) -> Option<std::net::SocketAddr> {
        crate::sync::lock(&self.cache)
            .as_ref()
            .and_then(|(_, _, addrs)| addrs.first().copied())
    }
}

/// The agent's handle on the shared [`CachedResolver`].
#[derive(Debug)]
struct SharedResolver(Arc<CachedResolver>);

impl Resolver for SharedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        self.0.resolve(uri, config, timeout)
    }
}

impl Resolver for CachedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        if let Some((host, at, addrs)) = &*crate::sync::lock(&self.cache) {
            if host == authority && at.elapsed() < RESOLVE_TTL {
                return Ok(addrs.clone());
            }
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        *crate::sync::lock(&self.cache) =
            Some((authority.to_owned(), Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_loses_one_trailing_slash() {
        assert_eq!(
            normalize_endpoint("https://ctm.example.com/").unwrap(),
            "https://ctm.example.com"
        );
        assert_eq!(
            normalize_endpoint(" https://ctm:8443 ").unwrap(),
            "https://ctm:8443"
        );
        assert_eq!(
            normalize_endpoint("https://ctm/base/").unwrap(),
            "https://ctm/base"
        );
        for bad in ["", "ctm.example.com", "https://", "https:///x", "ftp://ctm"] {
            assert!(normalize_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ca_directory_must_hold_only_certificates() {
        let dir = std::env::temp_dir().join(format!("kes-ctm-ca-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ctm".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        assert_eq!(load_ca(&dir).unwrap().len(), 1);
        assert_eq!(load_ca(&dir.join("ca.pem")).unwrap().len(), 1);
        fs::write(dir.join("notes.txt"), "not a certificate").unwrap();
        let err = load_ca(&dir).unwrap_err().to_string();
        assert!(err.contains("notes.txt"), "{err}");
        assert!(load_ca(&dir.join("missing.pem")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn system_roots_are_found() {
        // The build machines and appliances have a CA bundle; a clear error otherwise.
        match load_system_roots() {
            Ok(roots) => assert!(!roots.is_empty()),
            Err(err) => assert!(err.to_string().contains("tls.ca")),
        }
    }
}
