//! Identity routes: who is assigned to which policy.

use serde_json::json;

use super::policy::rules_object;
use super::routes::Reply;
use super::{Ctx, errors, fail, invalid_pattern, list_prefix, valid_name};
use crate::http::Response;

pub fn describe(ctx: &Ctx) -> Reply {
    let id = ctx.resource;
    if !valid_name(id) {
        return Err(Response::error(
            400,
            &format!("identity '{id}' is empty, too long or contains invalid characters"),
        ));
    }
    let created_at = ctx.state.started_rfc3339();
    if ctx.live.auth.is_admin(id) {
        return Ok(Response::json(
            200,
            &json!({ "admin": true, "created_at": created_at }),
        ));
    }
    let policy = ctx
        .live
        .auth
        .policy_of(id)
        .ok_or_else(|| fail(errors::IDENTITY_NOT_FOUND))?;
    Ok(Response::json(
        200,
        &json!({
            "policy": policy.name,
            "created_at": created_at,
            "created_by": ctx.live.auth.admin.clone().unwrap_or_default(),
        }),
    ))
}

pub fn list(ctx: &Ctx) -> Reply {
    let Some(prefix) = list_prefix(ctx.resource) else {
        return Err(invalid_pattern(ctx.resource));
    };
    let created_at = ctx.state.started_rfc3339();
    let admin = ctx.live.auth.admin.clone().unwrap_or_default();
    let mut entries: Vec<serde_json::Value> = ctx
        .live
        .auth
        .assignments()
        .into_iter()
        .map(|(id, policy)| {
            json!({ "identity": id, "policy": policy, "created_at": created_at, "created_by": admin })
        })
        .collect();
    if !admin.is_empty() {
        entries.push(json!({ "identity": admin, "admin": true, "created_at": created_at }));
    }
    entries.retain(|e| {
        e["identity"]
            .as_str()
            .is_some_and(|id| id.starts_with(prefix))
    });
    entries.sort_by(|a, b| a["identity"].as_str().cmp(&b["identity"].as_str()));
    Ok(super::ndjson(entries))
}

/// Describes the caller. For non-admins the last release answers 404 by mistake (it
/// looks up the empty resource). The answer here is the one shape both SDK generations
/// decode: the 2023 SDK reads `policy_name`, the last one the `allow`/`deny` maps; a
/// `policy` field would break one of them whichever type it had.
pub fn self_describe(ctx: &Ctx) -> Reply {
    let id = ctx.identity;
    let created_at = ctx.state.started_rfc3339();
    if ctx.live.auth.is_admin(id) {
        return Ok(Response::json(
            200,
            &json!({ "identity": id, "admin": true, "created_at": created_at }),
        ));
    }
    let Some(policy) = ctx.live.auth.policy_of(id) else {
        return Err(fail(errors::IDENTITY_NOT_FOUND));
    };
    let mut body = json!({ "identity": id, "policy_name": policy.name });
    if !policy.allow.is_empty() {
        body["allow"] = rules_object(&policy.allow);
    }
    if !policy.deny.is_empty() {
        body["deny"] = rules_object(&policy.deny);
    }
    body["created_at"] = json!(created_at);
    body["created_by"] = json!(ctx.live.auth.admin.clone().unwrap_or_default());
    Ok(Response::json(200, &body))
}
