//! `GET /v1/metrics`: Prometheus text exposition.

use std::sync::atomic::Ordering;

use super::Ctx;
use super::routes::Reply;
use crate::http::Response;
use crate::observe::{Gauges, metrics as registry};

pub fn metrics(ctx: &Ctx) -> Reply {
    let server = &ctx.state.gauges;
    let cache = ctx.state.keys.cache_stats();
    let gauges = Gauges {
        open_connections: server.open_connections.load(Ordering::Relaxed) as u64,
        refused_connections: server.refused_connections.load(Ordering::Relaxed) as u64,
        busy_workers: server.busy_workers.load(Ordering::Relaxed) as u64,
        workers: server.workers.load(Ordering::Relaxed) as u64,
        cache_hits: cache.hits,
        cache_misses: cache.misses,
        keystore_latency: ctx.state.keys.status().ok(),
        cache_offline: ctx.state.keys.serving_offline(),
    };
    let mut text = registry().render(&gauges);
    crate::server::expiry::render_metrics(&mut text, &ctx.live.certs);
    let mut response =
        Response::new(200).with_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    response.body = text.into_bytes();
    Ok(response)
}
