//! Console logging: error events to stderr, one human line each (time, level, message),
//! also sent to subscribers of `/v1/log/error` and counted for the metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use log::{LevelFilter, Log, Metadata, Record};
use simplelog::{Config, ConfigBuilder, SharedLogger, WriteLogger};

use crate::config::LogConfig;

/// Sets up the error log and, if `log.audit` asks for it, console audit output.
/// Safe to call more than once (later calls are ignored).
pub fn init(config: &LogConfig) {
    let level = config.error.unwrap_or(LevelFilter::Info);
    let log_config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .add_filter_allow_str("kes")
        .build();
    let loggers: Vec<Box<dyn SharedLogger>> = vec![
        WriteLogger::new(level, log_config.clone(), std::io::stderr()),
        Box::new(StreamLogger {
            level,
            config: log_config,
        }),
    ];
    let _ = simplelog::CombinedLogger::init(loggers);
    // Audit events are INFO records: `off`, WARN or ERROR turn console audit off. The
    // default is off: auditing every MinIO request to stdout would fill disks.
    if config.audit.is_some_and(|level| level >= LevelFilter::Info) {
        crate::observe::enable_console_audit();
    }
}

/// Forwards error-log records to `/v1/log/error` subscribers as `{"message": …}`.
struct StreamLogger {
    level: LevelFilter,
    config: Config,
}

impl Log for StreamLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level && metadata.target().starts_with("kes")
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        crate::observe::metrics()
            .error_events
            .fetch_add(1, Ordering::Relaxed);
        let stream = crate::observe::errors();
        if stream.has_subscribers() {
            let (secs, nanos) = crate::timefmt::now();
            let message = format!(
                "{} [{}] {}",
                crate::timefmt::format_rfc3339(secs, nanos),
                record.level(),
                record.args()
            );
            let line = serde_json::json!({ "message": message }).to_string();
            stream.publish(Arc::from(line.into_bytes()));
        }
    }

    fn flush(&self) {}
}

impl SharedLogger for StreamLogger {
    fn level(&self) -> LevelFilter {
        self.level
    }

    fn config(&self) -> Option<&Config> {
        Some(&self.config)
    }

    fn as_log(self: Box<Self>) -> Box<dyn Log> {
        Box::new(*self)
    }
}
