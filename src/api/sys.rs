//! Server routes: version, readiness, status, and the API listing.

use serde_json::json;

use super::ctx::{Ctx, Reply};
use crate::http::Response;
use crate::keystore::KeyStoreError;
use crate::routes::ROUTES;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit the binary was built from, when the build knew it.
pub const COMMIT: &str = match option_env!("KES_COMMIT") {
    Some(c) => c,
    None => "",
};

pub fn version(_: &Ctx) -> Reply {
    Ok(Response::json(
        200,
        &json!({ "version": VERSION, "commit": COMMIT }),
    ))
}

pub fn ready(ctx: &Ctx) -> Reply {
    match ctx.state.keys.status() {
        Ok(_) => Ok(Response::ok()),
        Err(KeyStoreError::Unreachable(_)) => {
            Err(Response::error(504, "key store is not reachable"))
        }
        // Not an outage but a problem that waiting will not fix (e.g. CipherTrust refuses
        // the refresh token): say which, so that the operator does not have to dig through
        // logs. Keystore messages never contain credentials or key material.
        Err(e) => Err(Response::error(
            502,
            &format!("key store is unavailable: {e}"),
        )),
    }
}

pub fn status(ctx: &Ctx) -> Reply {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut body = json!({
        "version": VERSION,
        "os": std::env::consts::OS,
        "arch": go_arch(),
        // Whole seconds, as the last release sends and its SDK reads.
        "uptime": ctx.state.started.elapsed().as_secs(),
        "num_cpu": cpus,
        "num_cpu_used": cpus,
        "mem_heap_used": crate::observe::process_stats().1,
        "mem_stack_used": 0,
        // compat.oldest_reader: the Go generation whose forms this node writes.
        "oldest_reader": ctx.live.config.oldest_reader.name(),
    });
    match ctx.state.keys.status() {
        // Nanoseconds: both SDK generations decode it as a Go duration (the Go servers
        // send milliseconds, which their own SDKs then misread).
        Ok(latency) => body["keystore_latency"] = json!(latency.as_nanos().max(1) as u64),
        Err(_) => {
            // The last SDK refuses `unreachable` without `unavailable`; send both.
            body["keystore_unreachable"] = json!(true);
            body["keystore_unavailable"] = json!(true);
        }
    }
    Ok(Response::json(200, &body))
}

pub fn api(ctx: &Ctx) -> Reply {
    let list: Vec<_> = ROUTES
        .iter()
        .zip(&ctx.live.route_settings)
        .map(|(route, settings)| {
            json!({
                "method": route.method.as_str(),
                "path": route.path,
                "max_body": route.max_body,
                "timeout": settings.timeout.map_or(0, |t| t.as_secs()),
            })
        })
        .collect();
    Ok(Response::json(200, &list))
}

/// Go's names for the CPU architectures we build for.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}
