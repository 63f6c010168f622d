//! Authentication extractors: the credential of a request (`Authorization: Bearer …` or
//! `x-api-key`) is verified by the platform's [`Authenticator`] into the operator or a
//! [`TenantCaller`], whose scope every service function takes.
//!
//! The extractors need only the authenticator (`FromRef`), not the whole state, so this
//! module and the state that holds the authenticator do not depend on each other.

use crate::context;
use crate::error::ApiError;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use berth_platform::{Authenticator, Credential, TenantCaller};
use std::sync::Arc;

/// The bearer token of a request: `Authorization: Bearer …` or `x-api-key: …`.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    if let Some(v) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| malformed())?;
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .ok_or_else(malformed)?
            .trim();
        if token.is_empty() {
            return Err(malformed());
        }
        return Ok(token);
    }
    if let Some(v) = parts.headers.get("x-api-key") {
        let token = v.to_str().map_err(|_| malformed())?.trim();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    Err(ApiError::unauthenticated(
        "missing_credentials",
        "send a token as 'Authorization: Bearer <token>' or 'x-api-key: <token>'",
    ))
}

fn malformed() -> ApiError {
    ApiError::unauthenticated(
        "malformed_credentials",
        "the Authorization header must be 'Bearer <token>'",
    )
}

/// Extractor: the request carries the operator token.
pub struct OperatorAuth;

impl<S> FromRequestParts<S> for OperatorAuth
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let auth = Arc::<Authenticator>::from_ref(state);
        match auth.authenticate(bearer(parts)?).await? {
            Credential::Operator => Ok(OperatorAuth),
            Credential::Tenant(_) => Err(ApiError::forbidden(
                "operator_only",
                "this endpoint needs the operator token",
            )),
        }
    }
}

/// Extractor: a caller authenticated for one tenant. Dereferences to the
/// [`TenantCaller`], whose role checks (`require`, `require_for_agent`…) handlers use.
pub struct TenantAuth(pub TenantCaller);

impl std::ops::Deref for TenantAuth {
    type Target = TenantCaller;

    fn deref(&self) -> &TenantCaller {
        &self.0
    }
}

impl<S> FromRequestParts<S> for TenantAuth
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let auth = Arc::<Authenticator>::from_ref(state);
        match auth.authenticate(bearer(parts)?).await? {
            Credential::Tenant(caller) => {
                context::set_tenant(caller.scope.tenant_str());
                Ok(TenantAuth(*caller))
            }
            Credential::Operator => Err(ApiError::forbidden(
                "tenant_credential_required",
                "the operator token may only call /v1/tenants and /v1/admin; use a tenant key",
            )),
        }
    }
}
