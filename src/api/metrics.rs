//! `GET /v1/metrics`. (Being written.)

use super::Ctx;
use crate::http::Response;

pub fn metrics(_: &Ctx) -> Response {
    Response::error(501, "not implemented")
}
