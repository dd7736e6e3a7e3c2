//! `GET /v1/log/error` and `/v1/log/audit`. (Being written.)

use super::Ctx;
use crate::http::Response;

pub fn error(_: &Ctx) -> Response {
    Response::error(501, "not implemented")
}

pub fn audit(_: &Ctx) -> Response {
    Response::error(501, "not implemented")
}
