//! `ApiError`: the one error type of the HTTP boundary, rendered in the OpenAI error shape.

use crate::context;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_store::StoreError;
use berth_vault::VaultError;
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub retry_after_secs: Option<u64>,
    /// Extra headers of the answer (the `x-ratelimit-*` of a refused request); boxed,
    /// because almost no error has any and the type travels in every `Result`.
    pub headers: Option<Box<Vec<(&'static str, String)>>>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
    message: &'a str,
    param: Option<&'a str>,
    request_id: Option<String>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            retry_after_secs: None,
            headers: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// 400: the request cannot be understood (bad JSON, bad query).
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", code, message)
    }

    /// 422: well-formed, but a field's value is not acceptable.
    pub fn invalid(code: &'static str, param: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            code,
            message,
        )
        .with_param(param)
    }

    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication", code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission", code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", code, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "payload_too_large",
            message,
        )
    }

    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "unsupported_media_type",
            message,
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "method_not_allowed",
            "this method is not allowed on this path",
        )
    }

    /// 429 with `Retry-After` (set `retry_after_secs`).
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "rate_limited",
            message,
        )
    }

    /// 502: an upstream the tenant named (an MCP server) could not be used.
    pub fn bad_gateway(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream", code, message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            code,
            message,
        )
    }

    /// 500. The cause is logged with the request id; the answer carries no internals.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal_error",
            "internal error; quote the request id when reporting it",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.kind, self.code, self.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("not_found", "no such resource"),
            StoreError::Conflict(what) => ApiError::conflict("conflict", what),
            other if other.is_unavailable() => {
                tracing::warn!(error = %other, "the store is unavailable");
                ApiError::unavailable(
                    "store_unavailable",
                    "the database is unavailable; retry shortly",
                )
            }
            other => ApiError::internal(&other),
        }
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Store(s) => s.into(),
            VaultError::TooLarge => ApiError::too_large(e.to_string()),
            VaultError::Unseal => ApiError::internal(&e),
            VaultError::NotPermitted { .. } => {
                ApiError::forbidden("secret_not_bound", e.to_string())
            }
        }
    }
}

impl From<berth_gateway::GatewayError> for ApiError {
    fn from(e: berth_gateway::GatewayError) -> Self {
        use berth_gateway::{GatewayError as G, RouteError as R};
        let code = e.code();
        match &e {
            G::Route(R::UnknownModel(_)) | G::ProviderNotFound(_) => {
                ApiError::not_found("model_not_found", e.to_string()).with_param("model")
            }
            G::Route(R::NotAllowed(_)) => ApiError::forbidden("model_not_allowed", e.to_string()),
            G::BadRequest(m) => ApiError::bad_request("invalid_request", m.clone()),
            G::BudgetExceeded { .. } => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "budget_exceeded",
                "budget_exceeded",
                e.to_string(),
            ),
            G::BudgetUnavailable { .. } => {
                ApiError::unavailable("store_unavailable", e.to_string())
            }
            G::ProviderKeyMissing { .. } => {
                ApiError::invalid("provider_key_missing", "model", e.to_string())
            }
            G::ProviderKeyNotBound { .. } => ApiError::forbidden("secret_not_bound", e.to_string()),
            G::Upstream { status: 429, .. } => {
                let mut err = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    code,
                    e.to_string(),
                );
                err.retry_after_secs = Some(1);
                err
            }
            // The caller's Berth credential is fine; the provider refused the provider's key.
            G::Upstream {
                status: 401 | 403, ..
            } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream",
                "upstream_auth_failed",
                e.to_string(),
            ),
            G::Upstream { status, .. } if *status < 500 => {
                ApiError::bad_request("upstream_rejected", e.to_string())
            }
            G::Unpriced { .. } => ApiError::invalid(code, "model", e.to_string()),
            G::Upstream { .. }
            | G::Connect { .. }
            | G::InvalidAnswer { .. }
            | G::TooLarge { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "upstream", code, e.to_string())
            }
            G::Timeout { .. } => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "upstream", code, e.to_string())
            }
            G::Internal(_) => ApiError::internal(&e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Envelope {
            error: Body {
                kind: self.kind,
                code: self.code,
                message: &self.message,
                param: self.param.as_deref(),
                request_id: context::current_request_id(),
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        for (name, value) in self.headers.iter().flat_map(|h| h.iter()) {
            if let Ok(v) = HeaderValue::from_str(value) {
                resp.headers_mut().insert(*name, v);
            }
        }
        resp
    }
}
