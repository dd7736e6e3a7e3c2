//! What operators see of a running server: the audit trail, error events for log
//! streams, and the Prometheus metrics.
//!
//! Every request is audited, successful or not, denied and unauthenticated ones
//! included. Events go to subscribers of `/v1/log/audit` and `/v1/log/error` through
//! bounded buffers: a slow subscriber loses events (counted), it never slows a request.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::sync::lock;

mod metrics;

pub use metrics::{
    CALL_BUCKETS, CallStatsSnapshot, Gauges, IkStats, Metrics, RouteCalls, UpstreamGauges,
    ciphertrust_token_failed, labelled, metrics, process_stats,
};

/// Events one subscriber may have waiting before it starts losing them.
const SUBSCRIBER_BUFFER: usize = 1024;
/// Subscribers per stream at most; each holds a thread.
pub const MAX_SUBSCRIBERS: usize = 64;

/// One event stream with any number of subscribers.
#[derive(Default)]
pub struct Broadcast {
    subscribers: Mutex<Vec<SyncSender<Arc<[u8]>>>>,
    /// Whether anybody listens; read on the hot path without the lock.
    active: AtomicBool,
    pub dropped: AtomicU64,
}

impl Broadcast {
    /// A new subscription, or `None` when there are too many.
    pub fn subscribe(&self) -> Option<Receiver<Arc<[u8]>>> {
        let mut subs = lock(&self.subscribers);
        if subs.len() >= MAX_SUBSCRIBERS {
            return None;
        }
        let (tx, rx) = sync_channel(SUBSCRIBER_BUFFER);
        subs.push(tx);
        self.active.store(true, Ordering::Release);
        Some(rx)
    }

    pub fn has_subscribers(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Sends one event (a JSON line without newline) to every subscriber.
    pub fn publish(&self, line: Arc<[u8]>) {
        let mut subs = lock(&self.subscribers);
        subs.retain(|tx| match tx.try_send(line.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
        self.active.store(!subs.is_empty(), Ordering::Release);
    }
}

/// The audit stream.
pub fn audit() -> &'static Broadcast {
    static AUDIT: OnceLock<Broadcast> = OnceLock::new();
    AUDIT.get_or_init(Broadcast::default)
}

/// The error-log stream.
pub fn errors() -> &'static Broadcast {
    static ERRORS: OnceLock<Broadcast> = OnceLock::new();
    ERRORS.get_or_init(Broadcast::default)
}

/// One answered request, as the audit trail and the metrics see it.
pub struct RequestRecord<'a> {
    pub identity: &'a str,
    pub ip: IpAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub elapsed: Duration,
    /// A kes-only field of the audit event (name, value), if the handler set one.
    pub extra: Option<(&'a str, &'a str)>,
}

/// Where console audit lines go (`log.audit` on): a writer thread, so requests never
/// wait for stdout.
static CONSOLE_AUDIT: OnceLock<SyncSender<Arc<[u8]>>> = OnceLock::new();

/// Turns console audit output (one JSON object per line on stdout) on.
pub fn enable_console_audit() {
    CONSOLE_AUDIT.get_or_init(|| {
        let (tx, rx) = sync_channel::<Arc<[u8]>>(SUBSCRIBER_BUFFER);
        let _ = std::thread::Builder::new()
            .name("kes-audit-stdout".into())
            .spawn(move || {
                use std::io::Write;
                let stdout = std::io::stdout();
                while let Ok(line) = rx.recv() {
                    let mut out = stdout.lock();
                    let _ = out.write_all(&line).and_then(|_| out.write_all(b"\n"));
                    while let Ok(line) = rx.try_recv() {
                        let _ = out.write_all(&line).and_then(|_| out.write_all(b"\n"));
                    }
                    let _ = out.flush();
                }
            });
        tx
    });
}

/// Audits and counts one answered request.
pub fn record(r: &RequestRecord) {
    metrics().record(r.status, r.elapsed);
    let console = CONSOLE_AUDIT.get();
    if console.is_none() && !audit().has_subscribers() {
        return;
    }
    let line: Arc<[u8]> = Arc::from(audit_line(r).into_bytes());
    metrics().audit_events.fetch_add(1, Ordering::Relaxed);
    if let Some(console) = console {
        if console.try_send(line.clone()).is_err() {
            audit().dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    if audit().has_subscribers() {
        audit().publish(line);
    }
}

/// The audit event in the 2023 servers' shape, which both SDKs decode: `response.time`
/// is in nanoseconds (a Go duration).
fn audit_line(r: &RequestRecord) -> String {
    let (secs, nanos) = crate::timefmt::now();
    let mut request =
        serde_json::json!({ "ip": r.ip.to_string(), "method": r.method, "path": r.path });
    if !r.identity.is_empty() {
        request["identity"] = r.identity.into();
    }
    let mut event = serde_json::json!({
        "time": crate::timefmt::format_rfc3339(secs, nanos),
        "request": request,
        "response": { "code": r.status, "time": r.elapsed.as_nanos() as u64 },
    });
    if let Some((name, value)) = r.extra {
        // After the original's fields, which stay as they are; the SDKs skip unknown ones.
        event[name] = value.into();
    }
    event.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_subscriber_loses_events_and_they_are_counted() {
        let b = Broadcast::default();
        let rx = b.subscribe().unwrap();
        for _ in 0..SUBSCRIBER_BUFFER + 10 {
            b.publish(Arc::from(&b"{}"[..]));
        }
        assert!(b.dropped.load(Ordering::Relaxed) >= 10);
        drop(rx);
        b.publish(Arc::from(&b"{}"[..]));
        assert!(!b.has_subscribers());
    }
}
