//! PEM files: certificates and private keys as the config names them (`tls.cert`,
//! `tls.key`, `tls.ca`), read with rustls-pemfile. Used by the server's TLS setup and by
//! the certificate expiry checks.

use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Reads every `CERTIFICATE` block of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path)
        .map_err(|e| format!("cannot read certificate '{}': {e}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: invalid PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM 'CERTIFICATE' block found",
            path.display()
        ));
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file (PKCS#8, SEC1 EC or PKCS#1 RSA).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let data = std::fs::read(path)
        .map_err(|e| format!("cannot read private key '{}': {e}", path.display()))?;
    if String::from_utf8_lossy(&data).contains("ENCRYPTED") {
        return Err(format!(
            "{}: encrypted private keys are not supported; decrypt it with 'openssl pkey -in KEY -out KEY.plain'",
            path.display()
        ));
    }
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| format!("{}: invalid PEM private key: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no PEM private key found", path.display()))
}

/// The files of `tls.ca`: the file itself, or every file of the directory in name order.
pub fn ca_files(ca: &Path) -> Result<Vec<PathBuf>, String> {
    if !ca.is_dir() {
        return Ok(vec![ca.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(ca)
        .map_err(|e| format!("cannot read CA directory '{}': {e}", ca.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}
