//! `Error`: the one error type of the application core. It says what went wrong in the
//! platform's terms (a class, a stable `code`, a message, the offending field); the HTTP
//! crate alone decides which status and body each class becomes.

use berth_meter::Decision;
use berth_store::StoreError;
use berth_vault::VaultError;

/// What kind of failure an [`Error`] is; each class is one HTTP status at the boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request cannot be understood (bad JSON, a bad query, a bad wire request).
    BadRequest,
    /// Well-formed, but a field's value is not acceptable (`param` names the field).
    Invalid,
    /// No credential, or one that is not valid.
    Unauthenticated,
    /// The credential is valid but may not do this.
    Forbidden,
    NotFound,
    Conflict,
    /// A body, bundle or secret larger than allowed.
    TooLarge,
    /// A budget refused the call before it was made.
    BudgetExceeded,
    /// A rate or concurrency limit refused the request; `retry_after_secs` says when to retry.
    RateLimited,
    /// An upstream (a provider, a tenant's MCP server) failed or could not be used.
    Upstream,
    /// An upstream did not answer in time.
    UpstreamTimeout,
    /// A dependency (the database) is unavailable; retry shortly.
    Unavailable,
    /// A bug or an unexpected failure; the cause is logged, never shown.
    Internal,
}

impl ErrorKind {
    /// The class's name in the OpenAI error shape's `type` (and in logs).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest | ErrorKind::Invalid => "invalid_request",
            ErrorKind::Unauthenticated => "authentication",
            ErrorKind::Forbidden => "permission",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::TooLarge => "payload_too_large",
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Upstream | ErrorKind::UpstreamTimeout => "upstream",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

/// The rate-limit decisions a request was measured against: the tightest request bucket
/// and the tenant's tokens, for the `x-ratelimit-*` answer headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateReport {
    pub requests: Option<Decision>,
    pub tokens: Option<Decision>,
}

/// A failure of a platform operation.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    /// Stable, machine-readable (`agent_not_found`, `insufficient_role`…).
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    pub retry_after_secs: Option<u64>,
    /// The limits a refused request was measured against; boxed, because almost no error
    /// has any and the type travels in every `Result`.
    pub rate: Option<Box<RateReport>>,
}

impl Error {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Error {
            kind,
            code,
            message: message.into(),
            param: None,
            retry_after_secs: None,
            rate: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// The request cannot be understood (bad JSON, bad query).
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, message)
    }

    /// Well-formed, but a field's value is not acceptable.
    pub fn invalid(code: &'static str, param: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, message).with_param(param)
    }

    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, "payload_too_large", message)
    }

    /// Set `retry_after_secs` (and the code of the limit) on the result.
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::RateLimited, "rate_limited", message)
    }

    /// An upstream the tenant named (an MCP server) could not be used.
    pub fn bad_gateway(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Upstream, code, message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, code, message)
    }

    /// The cause is logged (with the request's span); the error carries no internals.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            ErrorKind::Internal,
            "internal_error",
            "internal error; quote the request id when reporting it",
        )
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.kind.as_str(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for Error {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Error::not_found("not_found", "no such resource"),
            StoreError::Conflict(what) => Error::conflict("conflict", what),
            other if other.is_unavailable() => {
                tracing::warn!(error = %other, "the store is unavailable");
                Error::unavailable(
                    "store_unavailable",
                    "the database is unavailable; retry shortly",
                )
            }
            other => Error::internal(&other),
        }
    }
}

impl From<VaultError> for Error {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Store(s) => s.into(),
            VaultError::TooLarge => Error::too_large(e.to_string()),
            VaultError::Unseal => Error::internal(&e),
            VaultError::NotPermitted { .. } => Error::forbidden("secret_not_bound", e.to_string()),
        }
    }
}

impl From<berth_gateway::GatewayError> for Error {
    fn from(e: berth_gateway::GatewayError) -> Self {
        use berth_gateway::{GatewayError as G, RouteError as R};
        let code = e.code();
        match &e {
            G::Route(R::UnknownModel(_)) | G::ProviderNotFound(_) => {
                Error::not_found("model_not_found", e.to_string()).with_param("model")
            }
            G::Route(R::NotAllowed(_)) => Error::forbidden("model_not_allowed", e.to_string()),
            G::BadRequest(m) => Error::bad_request("invalid_request", m.clone()),
            G::BudgetExceeded { .. } => {
                Error::new(ErrorKind::BudgetExceeded, "budget_exceeded", e.to_string())
            }
            G::BudgetUnavailable { .. } => Error::unavailable("store_unavailable", e.to_string()),
            G::ProviderKeyMissing { .. } => {
                Error::invalid("provider_key_missing", "model", e.to_string())
            }
            G::ProviderKeyNotBound { .. } => Error::forbidden("secret_not_bound", e.to_string()),
            G::Upstream { status: 429, .. } => {
                let mut err = Error::new(ErrorKind::RateLimited, code, e.to_string());
                err.retry_after_secs = Some(1);
                err
            }
            // The caller's Berth credential is fine; the provider refused the provider's key.
            G::Upstream {
                status: 401 | 403, ..
            } => Error::new(ErrorKind::Upstream, "upstream_auth_failed", e.to_string()),
            G::Upstream { status, .. } if *status < 500 => {
                Error::bad_request("upstream_rejected", e.to_string())
            }
            G::Unpriced { .. } => Error::invalid(code, "model", e.to_string()),
            G::Upstream { .. }
            | G::Connect { .. }
            | G::InvalidAnswer { .. }
            | G::TooLarge { .. } => Error::new(ErrorKind::Upstream, code, e.to_string()),
            G::Timeout { .. } => Error::new(ErrorKind::UpstreamTimeout, code, e.to_string()),
            G::Internal(_) => Error::internal(&e),
        }
    }
}

impl From<berth_tools::RegistryError> for Error {
    fn from(e: berth_tools::RegistryError) -> Error {
        use berth_tools::RegistryError as R;
        match e {
            R::Invalid(field, message) => Error::invalid("invalid_mcp_server", field, message),
            R::Egress(e) => Error::invalid(
                "egress_denied",
                "url",
                format!("the URL is not allowed: {e}"),
            ),
            R::MissingSecret(name) => Error::invalid(
                "secret_not_found",
                "headers",
                format!("the secret '{name}' does not exist; store it with PUT /v1/secrets/{name}"),
            ),
            R::NotFound(name) => Error::not_found(
                "mcp_server_not_found",
                format!("no MCP server named '{name}'"),
            ),
            e @ R::Unreachable { .. } => {
                Error::bad_gateway("mcp_server_unreachable", e.to_string())
            }
            R::Store(e) => e.into(),
            R::Vault(e) => e.into(),
        }
    }
}
