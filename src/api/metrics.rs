//! `GET /v1/metrics`: Prometheus text exposition.

use std::sync::atomic::Ordering;

use super::ctx::{Ctx, Reply};
use crate::http::Response;
use crate::observe::{Gauges, UpstreamGauges, metrics as registry};

pub fn metrics(ctx: &Ctx) -> Reply {
    let server = &ctx.state.gauges;
    let cache = ctx.state.keys.cache_stats();
    let dropped = crate::observe::audit().dropped.load(Ordering::Relaxed)
        + crate::observe::errors().dropped.load(Ordering::Relaxed);
    let gauges = Gauges {
        log_events_dropped: dropped,
        open_connections: server.open_connections.load(Ordering::Relaxed) as u64,
        refused_connections: server.refused_connections.load(Ordering::Relaxed) as u64,
        busy_workers: server.busy_workers.load(Ordering::Relaxed) as u64,
        workers: server.workers.load(Ordering::Relaxed) as u64,
        cache_hits: cache.hits,
        cache_misses: cache.misses,
        keystore_latency: ctx.state.keys.status().ok(),
        keystore_calls: ctx.state.keys.store().call_stats(),
        upstream: ctx.state.keys.store().remote().map(|_| UpstreamGauges {
            in_flight: server.cm_in_flight.load(Ordering::Relaxed) as u64,
            queued: server.cm_queued.load(Ordering::Relaxed) as u64,
            refused: server.cm_refused.load(Ordering::Relaxed) as u64,
            connections: server.cm_connections.load(Ordering::Relaxed) as u64,
        }),
        cache_offline: ctx.state.keys.serving_offline(),
        intermediate_keys: ctx.state.keys.ik_stats(),
    };
    let mut text = registry().render(&gauges);
    crate::expiry::render_metrics(&mut text, &ctx.live.certs);
    let mut response =
        Response::new(200).with_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    response.body = text.into_bytes();
    Ok(response)
}
