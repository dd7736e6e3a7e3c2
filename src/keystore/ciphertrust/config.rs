//! What the CipherTrust store is configured with: where CipherTrust Manager is, how to
//! log in, whom to trust, and the key mode.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

/// Pause between failed token renewals when the configuration does not say (as the original).
pub const DEFAULT_RETRY: Duration = Duration::from_secs(5);

/// Where CipherTrust Manager is and how to log in (config.md §5.2).
#[derive(Clone)]
pub struct CipherTrustConfig {
    /// Base URL, e.g. `https://ctm.example.com`; a trailing `/` is ignored.
    pub endpoint: String,
    /// The CipherTrust refresh token that API tokens are minted from.
    pub refresh_token: Zeroizing<String>,
    /// The CipherTrust domain; empty means the root domain.
    pub domain: String,
    /// Pause after a failed token renewal; zero means [`DEFAULT_RETRY`].
    pub retry: Duration,
    /// A PEM file, or a directory of PEM files, holding the CA certificates that issued
    /// CipherTrust's certificate. When set, only these are trusted (not the system roots).
    pub ca: Option<PathBuf>,
    /// Accept any server certificate. Only for tests and emergencies: anyone on the network
    /// path can then read the tokens and every key.
    pub insecure_skip_verify: bool,
    /// `master_keys: resident`: new keys are non-exportable CipherTrust keys used through
    /// CipherTrust's crypto endpoints (see `keys2`); existing secrets keep working.
    pub resident: bool,
}

impl CipherTrustConfig {
    /// A configuration for the root domain with the default retry pause, verifying the
    /// server against the system roots.
    pub fn new(endpoint: impl Into<String>, refresh_token: Zeroizing<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            refresh_token,
            domain: String::new(),
            retry: DEFAULT_RETRY,
            ca: None,
            insecure_skip_verify: false,
            resident: false,
        }
    }
}

impl fmt::Debug for CipherTrustConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CipherTrustConfig")
            .field("endpoint", &self.endpoint)
            .field("refresh_token", &"<redacted>")
            .field("domain", &self.domain)
            .field("retry", &self.retry)
            .field("ca", &self.ca)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("resident", &self.resident)
            .finish()
    }
}
