//! What the server holds while it runs: the parts a SIGHUP replaces ([`Live`]) and the
//! parts that live as long as the process ([`State`]).

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::config::Config;
use crate::keys::Keys;
use crate::policy::Authorizer;
use crate::routes::ROUTES;

/// Per-route settings from the `api:` config section, indexed like [`ROUTES`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteSettings {
    pub skip_auth: bool,
    pub timeout: Option<std::time::Duration>,
}

/// Everything derived from the config file; replaced as a whole on SIGHUP.
pub struct Live {
    pub config: Config,
    pub auth: Authorizer,
    pub route_settings: Vec<RouteSettings>,
    pub tls: Arc<rustls::ServerConfig>,
    /// When the server certificate and the `tls.ca` certificates expire.
    pub certs: Vec<crate::expiry::CertExpiry>,
}

impl Live {
    pub fn new(config: Config, tls: Arc<rustls::ServerConfig>) -> Live {
        let auth = Authorizer::new(config.admin.clone(), &config.policies);
        let route_settings = ROUTES
            .iter()
            .map(|route| {
                let o = config.api.get(route.path).copied().unwrap_or_default();
                RouteSettings {
                    skip_auth: o.skip_auth,
                    timeout: o.timeout.or(route.timeout),
                }
            })
            .collect();
        Live {
            certs: crate::expiry::of_config(&config),
            config,
            auth,
            route_settings,
            tls,
        }
    }
}

/// Counters of the server's connections and workers, which the metrics route reads.
#[derive(Debug, Default)]
pub struct Gauges {
    pub open_connections: AtomicUsize,
    pub busy_workers: AtomicUsize,
    pub refused_connections: AtomicUsize,
    pub workers: AtomicUsize,
    /// CipherTrust calls the event loops have in flight, queued, and refused (queue full
    /// or waited too long), and their connections (`server::upstream`).
    pub cm_in_flight: AtomicUsize,
    pub cm_queued: AtomicUsize,
    pub cm_refused: AtomicUsize,
    pub cm_connections: AtomicUsize,
}

/// The server's process-wide state.
pub struct State {
    live: RwLock<Arc<Live>>,
    pub keys: Keys,
    /// Connection and worker counters of the server, for the metrics.
    pub gauges: Arc<Gauges>,
    pub started: Instant,
    /// Start time as (Unix seconds, nanoseconds): the `created_at` of policies and identities.
    pub started_at: (i64, u32),
    /// Held while a new [`Live`] is made and swapped in (SIGHUP, renewed certificates),
    /// so that one reload never overwrites another with an older config.
    pub reloading: std::sync::Mutex<()>,
}

impl State {
    pub fn new(live: Live, keys: Keys) -> State {
        State {
            live: RwLock::new(Arc::new(live)),
            keys,
            gauges: Arc::default(),
            started: Instant::now(),
            started_at: crate::timefmt::now(),
            reloading: std::sync::Mutex::default(),
        }
    }

    /// The current config-derived state. Cheap: one read lock and an `Arc` clone.
    pub fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the config-derived state (SIGHUP).
    pub fn replace_live(&self, live: Live) {
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
    }

    /// Builds the TLS config anew from the running config's files and swaps it in with
    /// everything else unchanged. An error keeps the running one.
    pub fn reload_tls(
        &self,
        build: fn(&Config) -> Result<Arc<rustls::ServerConfig>, String>,
    ) -> Result<(), String> {
        let _reloading = crate::sync::lock(&self.reloading);
        let config = self.live().config.clone();
        let tls = build(&config)?;
        self.replace_live(Live::new(config, tls));
        Ok(())
    }

    pub fn started_rfc3339(&self) -> String {
        crate::timefmt::format_rfc3339(self.started_at.0, self.started_at.1)
    }
}
