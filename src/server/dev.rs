//! `kes server --dev`: a throw-away server that needs nothing set up.
//!
//! Keys live in memory; a fresh self-signed server certificate (127.0.0.1, ::1,
//! localhost) and an admin client credential are written to a private temporary
//! directory, removed again when the server stops.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};

use crate::config::{CacheExpiry, Config, KeyStoreConfig, LogConfig};

pub struct Dev {
    pub dir: PathBuf,
    pub admin: String,
}

impl Dev {
    /// Makes the certificates and the admin credential.
    pub fn create() -> Result<Dev, String> {
        let dir = private_temp_dir()?;
        let server_key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_string()]).map_err(|e| e.to_string())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("literal IP")));
        params
            .subject_alt_names
            .push(SanType::IpAddress("::1".parse().expect("literal IP")));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = params.self_signed(&server_key).map_err(|e| e.to_string())?;

        let admin_key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kes-dev-admin");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = params.self_signed(&admin_key).map_err(|e| e.to_string())?;
        let admin = crate::identity::of_cert_der(admin_cert.der()).map_err(|e| e.to_string())?;

        write_private(&dir.join("server.key"), &server_key.serialize_pem())?;
        write_private(&dir.join("server.cert"), &server_cert.pem())?;
        write_private(&dir.join("admin.key"), &admin_key.serialize_pem())?;
        write_private(&dir.join("admin.cert"), &admin_cert.pem())?;
        Ok(Dev { dir, admin })
    }

    /// The config a dev server runs with.
    pub fn config(&self) -> Config {
        Config {
            path: None,
            address: None,
            admin: Some(self.admin.clone()),
            tls_key: self.dir.join("server.key"),
            tls_cert: self.dir.join("server.cert"),
            tls_password: None,
            tls_auth: Some(false),
            tls_ca: None,
            policies: BTreeMap::new(),
            cache: CacheExpiry::default(),
            log: LogConfig::default(),
            api: BTreeMap::new(),
            keys: Vec::new(),
            keystore: KeyStoreConfig::Memory,
            oldest_reader: Default::default(),
        }
    }

    /// Tells the developer how to connect.
    pub fn print_banner(&self, local: SocketAddr) {
        let d = self.dir.display();
        let url = format!("https://{local}");
        eprintln!(
            "\
kes {version} development server (keys in memory, nothing persists)
  address:   {url}
  admin:     {admin}
  files:     {d}/server.cert  (CA to trust)
             {d}/admin.cert {d}/admin.key  (admin client credential)

Try it:
  curl --cacert {d}/server.cert --cert {d}/admin.cert --key {d}/admin.key {url}/v1/status
  curl --cacert {d}/server.cert --cert {d}/admin.cert --key {d}/admin.key -X POST {url}/v1/key/create/my-key

Or with the kes CLI:
  export KES_SERVER={url} KES_CLIENT_CERT={d}/admin.cert KES_CLIENT_KEY={d}/admin.key
  kes key create -k my-key

Stop with Ctrl-C.",
            version = crate::api::sys::VERSION,
            admin = self.admin,
        );
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn private_temp_dir() -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    for attempt in 0..16u32 {
        let mut random = [0u8; 6];
        getrandom::getrandom(&mut random).map_err(|e| e.to_string())?;
        let dir = base.join(format!("kes-dev-{}", crate::identity::hex(&random)));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 15 => continue,
            Err(e) => {
                return Err(format!(
                    "cannot create a private directory in {}: {e}",
                    base.display()
                ));
            }
        }
    }
    Err("cannot create a private temporary directory".into())
}

fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
