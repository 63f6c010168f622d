//! Agents, their versions and their traffic.

use crate::auth::TenantAuth;
use crate::dto::{AgentDto, DeployedDto, ListBody, RollbackDto, TrafficDto, VersionDto};
use crate::error::ApiError;
use crate::extract::{JsonBody, query_rejection};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use berth_core::Role;
use berth_core::clock::rfc3339;
use berth_platform::agents::{self, Source};
use berth_store::{Pin, SplitEntry};
use serde::Deserialize;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeployParams {
    /// Send 100% of traffic to the new version (default true).
    pub promote: Option<bool>,
}

/// Deploy a version: a tar.gz bundle (`Content-Type: application/gzip`) or
/// `{"manifest": {...}}` as JSON. The same content again answers 200 with the existing
/// version.
#[utoipa::path(post, path = "/v1/agents/{name}/versions", tag = "agents", params(("name" = String, Path), DeployParams),
    request_body(content = Object, description = "tar.gz bundle or {\"manifest\": {...}}"),
    responses((status = 201, body = DeployedDto), (status = 200, body = DeployedDto), (status = 413), (status = 422)))]
pub async fn deploy(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Result<Query<DeployParams>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<DeployedDto>), ApiError> {
    let agent = agents::parse_name(&name)?;
    let scope = auth.require_for_agent(Role::Developer, agent.as_str())?;
    let Query(params) = params.map_err(query_rejection)?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let source = if ctype.starts_with("application/json") {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            manifest: serde_json::Value,
        }
        let b: Body = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("expected {{\"manifest\": {{...}}}}: {e}"),
            )
        })?;
        Source::Manifest(b.manifest)
    } else if ctype.starts_with("application/gzip")
        || ctype.starts_with("application/x-gzip")
        || ctype.starts_with("application/octet-stream")
    {
        Source::Bundle(body.clone())
    } else {
        return Err(ApiError::unsupported_media(
            "send a tar.gz as application/gzip, or {\"manifest\": ...} as application/json",
        ));
    };
    let d = agents::deploy(
        &state,
        scope,
        &agent,
        source,
        params.promote.unwrap_or(true),
    )
    .await?;
    let status = if d.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(DeployedDto {
            agent: d.version.agent,
            version: d.version.version,
            digest: d.version.digest,
            promoted: d.promoted,
            created_at: rfc3339(d.version.created_at_ms),
        }),
    ))
}

/// The tenant's agents with their traffic.
#[utoipa::path(get, path = "/v1/agents", tag = "agents", responses((status = 200, body = ListBody<AgentDto>)))]
pub async fn list(
    auth: TenantAuth,
    State(state): State<AppState>,
) -> Result<Json<ListBody<AgentDto>>, ApiError> {
    let scope = auth.require(Role::Viewer)?;
    let all = agents::list(&state, scope).await?;
    Ok(Json(ListBody {
        data: all.iter().map(AgentDto::from).collect(),
        next_cursor: None,
    }))
}

/// One agent.
#[utoipa::path(get, path = "/v1/agents/{name}", tag = "agents", params(("name" = String, Path)), responses((status = 200, body = AgentDto), (status = 404)))]
pub async fn get(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<AgentDto>, ApiError> {
    let scope = auth.require_for_agent(Role::Viewer, &name)?;
    Ok(Json(AgentDto::from(
        &agents::get(&state, scope, &name).await?,
    )))
}

/// Delete an agent with its versions and traffic (its runs stay, for billing).
#[utoipa::path(delete, path = "/v1/agents/{name}", tag = "agents", params(("name" = String, Path)), responses((status = 204), (status = 404)))]
pub async fn delete(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let scope = auth.require_for_agent(Role::Developer, &name)?;
    agents::delete(&state, scope, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The agent's versions.
#[utoipa::path(get, path = "/v1/agents/{name}/versions", tag = "agents", params(("name" = String, Path)), responses((status = 200, body = ListBody<VersionDto>)))]
pub async fn versions(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ListBody<VersionDto>>, ApiError> {
    let scope = auth.require_for_agent(Role::Viewer, &name)?;
    let all = agents::versions(&state, scope, &name).await?;
    Ok(Json(ListBody {
        data: all
            .iter()
            .map(|v| VersionDto::from_version(v, false))
            .collect(),
        next_cursor: None,
    }))
}

/// One version, with its manifest.
#[utoipa::path(get, path = "/v1/agents/{name}/versions/{v}", tag = "agents", params(("name" = String, Path), ("v" = i64, Path)), responses((status = 200, body = VersionDto), (status = 404)))]
pub async fn version(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path((name, v)): Path<(String, String)>,
) -> Result<Json<VersionDto>, ApiError> {
    let scope = auth.require_for_agent(Role::Viewer, &name)?;
    Ok(Json(VersionDto::from_version(
        &agents::version(&state, scope, &name, &v).await?,
        true,
    )))
}

/// The agent's traffic split and pins.
#[utoipa::path(get, path = "/v1/agents/{name}/traffic", tag = "agents", params(("name" = String, Path)), responses((status = 200, body = TrafficDto), (status = 404)))]
pub async fn get_traffic(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<TrafficDto>, ApiError> {
    let scope = auth.require_for_agent(Role::Viewer, &name)?;
    Ok(Json(TrafficDto::from(
        &agents::get(&state, scope, &name).await?.traffic,
    )))
}

/// Replace the split (integer weights summing to 100) and pins, in one transaction.
#[utoipa::path(put, path = "/v1/agents/{name}/traffic", tag = "agents", params(("name" = String, Path)), request_body = TrafficDto, responses((status = 200, body = TrafficDto), (status = 422)))]
pub async fn put_traffic(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<TrafficDto>,
) -> Result<Json<TrafficDto>, ApiError> {
    let scope = auth.require_for_agent(Role::Developer, &name)?;
    let split: Vec<SplitEntry> = body
        .split
        .iter()
        .map(|s| SplitEntry {
            version: s.version,
            weight: s.weight,
        })
        .collect();
    let pins: Vec<Pin> = body
        .pins
        .iter()
        .map(|p| Pin {
            key: p.key.clone(),
            version: p.version,
        })
        .collect();
    Ok(Json(TrafficDto::from(
        &agents::set_traffic(&state, scope, &name, &split, &pins).await?,
    )))
}

/// Send all traffic back to `to`, or to the version that held it all before.
#[utoipa::path(post, path = "/v1/agents/{name}/rollback", tag = "agents", params(("name" = String, Path)), request_body = RollbackDto, responses((status = 200, body = TrafficDto), (status = 409)))]
pub async fn rollback(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<TrafficDto>, ApiError> {
    let scope = auth.require_for_agent(Role::Developer, &name)?;
    // The body is optional: empty means "the version that held all traffic before".
    let to = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<RollbackDto>(&body)
            .map_err(|e| {
                ApiError::invalid("invalid_body", "to", format!("expected {{\"to\": N}}: {e}"))
            })?
            .to
    };
    Ok(Json(TrafficDto::from(
        &agents::rollback(&state, scope, &name, to).await?,
    )))
}
