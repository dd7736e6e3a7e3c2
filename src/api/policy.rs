//! Policy routes: policies come from the config file and are read-only here.

use serde_json::{Value, json};

use super::ctx::{Ctx, Reply, errors, fail, invalid_pattern};
use crate::http::Response;
use crate::names::{list_prefix, valid_name};
use crate::policy::Policy;

fn lookup<'a>(ctx: &'a Ctx) -> Result<&'a Policy, Response> {
    if !valid_name(ctx.resource) {
        return Err(Response::error(
            400,
            &format!(
                "policy name '{}' is empty, too long or contains invalid characters",
                ctx.resource
            ),
        ));
    }
    ctx.live
        .auth
        .policies
        .get(ctx.resource)
        .map(|p| p.as_ref())
        .ok_or_else(|| fail(errors::POLICY_NOT_FOUND))
}

/// Who created the config's policies: the admin, as the last release reports.
fn created_by(ctx: &Ctx) -> String {
    ctx.live.auth.admin.clone().unwrap_or_default()
}

pub fn describe(ctx: &Ctx) -> Reply {
    let policy = lookup(ctx)?;
    let created_at = ctx.state.started_rfc3339();
    Ok(Response::json(
        200,
        &json!({ "name": policy.name, "created_at": created_at, "created_by": created_by(ctx) }),
    ))
}

/// Rules as the 2023 servers wrote them: a list of the rules as written.
pub fn rules_list(rules: &[crate::policy::Rule]) -> Value {
    Value::Array(rules.iter().map(|r| json!(r.text)).collect())
}

/// Answers the 2023 shape: `allow`/`deny` as lists of the rules as written. 2023 MinIO
/// reads this route through the 2023 SDK (`mc admin kms policy info`); 2025 MinIO never
/// calls it. The last SDK decodes maps there, but the two send identical requests and
/// no document decodes in both, so the shape MinIO reads wins (docs/compatibility.md).
pub fn read(ctx: &Ctx) -> Reply {
    let policy = lookup(ctx)?;
    let body = json!({
        "name": policy.name,
        "allow": rules_list(&policy.allow),
        "deny": rules_list(&policy.deny),
        "created_at": ctx.state.started_rfc3339(),
        "created_by": created_by(ctx),
    });
    Ok(Response::json(200, &body))
}

pub fn list(ctx: &Ctx) -> Reply {
    let Some(prefix) = list_prefix(ctx.resource) else {
        return Err(invalid_pattern(ctx.resource));
    };
    let created_at = ctx.state.started_rfc3339();
    let created_by = created_by(ctx);
    Ok(super::ctx::ndjson(
        ctx.live
            .auth
            .policies
            .keys()
            .filter(|n| n.starts_with(prefix))
            .map(
                |name| json!({ "name": name, "created_at": created_at, "created_by": created_by }),
            ),
    ))
}
