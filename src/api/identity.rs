//! Identity routes: who is assigned to which policy.

use serde_json::json;

use super::ctx::{Ctx, Reply, errors, fail, invalid_pattern};
use super::policy::rules_list;
use crate::http::Response;
use crate::names::{list_prefix, valid_name};

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
    Ok(super::ctx::ndjson(entries))
}

/// Describes the caller, in the shape of the 2023 servers: `policy_name`, and `policy`
/// as an object with the rules as lists. 2023 MinIO reads `policy.allow` at startup to
/// decide whether to use bulk decryption. The last SDK reads `policy` as the name and
/// cannot decode this answer; the two SDKs send byte-identical requests, so no answer
/// serves both. The 2023 shape wins because the last release never served this route
/// to a non-admin (it looks up the empty resource and answers 404) and its own answer
/// would carry `policy` as an object too. The admin answer, without `policy`, is read
/// by both SDKs. docs/compatibility.md records the choice.
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
    let created_by = ctx.live.auth.admin.clone().unwrap_or_default();
    let mut inline = json!({});
    if !policy.allow.is_empty() {
        inline["allow"] = rules_list(&policy.allow);
    }
    if !policy.deny.is_empty() {
        inline["deny"] = rules_list(&policy.deny);
    }
    inline["created_at"] = json!(created_at);
    inline["created_by"] = json!(created_by);
    Ok(Response::json(
        200,
        &json!({
            "identity": id,
            "policy_name": policy.name,
            "created_at": created_at,
            "created_by": created_by,
            "policy": inline,
        }),
    ))
}
