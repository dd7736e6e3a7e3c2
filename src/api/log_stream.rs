//! `GET /v1/log/error` and `/v1/log/audit`: events as they happen, one JSON object per
//! line, flushed per event, until the client disconnects.

use super::ctx::{Ctx, Reply};
use crate::http::Response;
use crate::observe::{self, Broadcast};

fn subscribe(stream: &Broadcast) -> Reply {
    let events = stream
        .subscribe()
        .ok_or_else(|| Response::error(503, "too many log subscribers; try again later"))?;
    Ok(Response::stream(events))
}

pub fn error(_: &Ctx) -> Reply {
    subscribe(observe::errors())
}

pub fn audit(_: &Ctx) -> Reply {
    subscribe(observe::audit())
}
