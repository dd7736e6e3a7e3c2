//! `GET /v1/log/error` and `/v1/log/audit`: events as they happen, one JSON object per
//! line, flushed per event, until the client disconnects.

use super::Ctx;
use crate::http::Response;
use crate::observe::{self, Broadcast};

fn subscribe(stream: &Broadcast) -> Response {
    match stream.subscribe() {
        Some(events) => Response::stream(events),
        None => Response::error(503, "too many log subscribers; try again later"),
    }
}

pub fn error(_: &Ctx) -> Response {
    subscribe(observe::errors())
}

pub fn audit(_: &Ctx) -> Response {
    subscribe(observe::audit())
}
