//! Console logging: error events to stderr, one human line each.

use crate::config::LogConfig;

/// Sets up the error log. Safe to call more than once (later calls are ignored).
pub fn init(config: &LogConfig) {
    let level = config.error.unwrap_or(log::LevelFilter::Info);
    let log_config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(log::LevelFilter::Off)
        .set_target_level(log::LevelFilter::Off)
        .set_location_level(log::LevelFilter::Off)
        .add_filter_allow_str("kes")
        .build();
    let _ = simplelog::WriteLogger::init(level, log_config, std::io::stderr());
}
