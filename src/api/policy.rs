//! Policy routes: policies come from the config file and are read-only here.

use serde_json::{Map, Value, json};

use super::routes::Reply;
use super::{Ctx, errors, fail, invalid_pattern, list_prefix, valid_name};
use crate::http::Response;
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

/// Rules as the last release writes them: object keys with empty-object values.
pub fn rules_object(rules: &[crate::policy::Rule]) -> Value {
    Value::Object(
        rules
            .iter()
            .map(|r| (r.text.clone(), json!({})))
            .collect::<Map<_, _>>(),
    )
}

/// Rules as the 2023 servers wrote them: a list of the rules as written.
pub fn rules_list(rules: &[crate::policy::Rule]) -> Value {
    Value::Array(rules.iter().map(|r| json!(r.text)).collect())
}

/// Answers the last release's shape: `allow`/`deny` as objects of rules. The 2023 SDK
/// decodes lists there and fails on it; the two SDKs send byte-identical requests and
/// no document decodes in both, and both Go generations served their own SDK here, so
/// the last release wins (docs/compatibility.md).
pub fn read(ctx: &Ctx) -> Reply {
    let policy = lookup(ctx)?;
    let mut body = json!({ "name": policy.name });
    if !policy.allow.is_empty() {
        body["allow"] = rules_object(&policy.allow);
    }
    if !policy.deny.is_empty() {
        body["deny"] = rules_object(&policy.deny);
    }
    body["created_at"] = json!(ctx.state.started_rfc3339());
    body["created_by"] = json!(created_by(ctx));
    Ok(Response::json(200, &body))
}

pub fn list(ctx: &Ctx) -> Reply {
    let Some(prefix) = list_prefix(ctx.resource) else {
        return Err(invalid_pattern(ctx.resource));
    };
    let created_at = ctx.state.started_rfc3339();
    let created_by = created_by(ctx);
    Ok(super::ndjson(
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
