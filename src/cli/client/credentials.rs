//! The client certificate the command-line tool presents (from an API key, or a key and
//! certificate file), and the roots it trusts.

use std::path::Path;

use ureq::tls::{Certificate, ClientCert, PrivateKey};
use zeroize::Zeroizing;

use super::settings::{
    API_KEY_VARS, CA_PATH_VARS, CERT_FILE_VARS, ConnectOptions, KEY_FILE_VARS, first_set_var,
};
use crate::apikey::ApiKey;
use crate::cli::Exit;

/// Loads the client certificate and key (or derives them from an API key).
pub(super) fn load_credentials(options: &ConnectOptions) -> Result<(ClientCert, String), Exit> {
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
pub(super) fn load_roots() -> Result<Vec<Certificate<'static>>, Exit> {
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
