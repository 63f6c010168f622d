//! The gateway's error type: what failed, and whether another attempt may succeed.

use crate::route::RouteError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("{0}")]
    BadRequest(String),
    #[error("no provider named '{0}' (neither the platform's nor yours)")]
    ProviderNotFound(String),
    #[error("provider '{provider}' names secret '{secret}', which does not exist")]
    ProviderKeyMissing { provider: String, secret: String },
    /// The secret's binding does not name this provider (the vault audited the refusal).
    #[error(
        "provider '{provider}' names secret '{secret}', whose binding does not name this provider"
    )]
    ProviderKeyNotBound { provider: String, secret: String },
    /// The upstream answered with an error status. `message` is already scrubbed.
    #[error("provider '{provider}' answered {status}: {message}")]
    Upstream {
        provider: String,
        status: u16,
        message: String,
    },
    #[error("provider '{provider}' did not answer in time")]
    Timeout { provider: String },
    #[error("cannot reach provider '{provider}': {message}")]
    Connect { provider: String, message: String },
    #[error("provider '{provider}' sent an invalid answer: {message}")]
    InvalidAnswer { provider: String, message: String },
    /// An answer (or one streamed event, or a whole stream) past the gateway's limit.
    #[error("provider '{provider}' sent an answer larger than the limit of {limit_bytes} bytes")]
    TooLarge {
        provider: String,
        limit_bytes: usize,
    },
    #[error("the {scope} budget of {limit_usd} USD has no room for this call")]
    BudgetExceeded { scope: String, limit_usd: f64 },
    /// The budget ledger could not be read or written: the call is refused (no call runs
    /// unaccounted), and may be retried.
    #[error(
        "the {scope} budget cannot be checked right now (the store is unavailable); retry shortly"
    )]
    BudgetUnavailable { scope: String },
    /// A hard budget applies and `model` has no price, so the call's worst case cannot be
    /// held: refused rather than run for free.
    #[error(
        "model '{model}' has no price, and a hard {scope} budget applies: calls under a hard budget must be priced (the operator sets [prices.\"{model}\"], or a default [prices.\"*\"])"
    )]
    Unpriced { model: String, scope: String },
    #[error("internal gateway error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// Failures worth another attempt or a fallback: rate limits, server errors, timeouts
    /// and connection errors. Anything else would fail the same way again.
    pub fn retryable(&self) -> bool {
        match self {
            GatewayError::Upstream { status, .. } => *status == 429 || *status >= 500,
            GatewayError::Timeout { .. } | GatewayError::Connect { .. } => true,
            _ => false,
        }
    }

    /// A short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Route(RouteError::UnknownModel(_)) => "model_not_found",
            GatewayError::Route(RouteError::NotAllowed(_)) => "model_not_allowed",
            GatewayError::BadRequest(_) => "invalid_request",
            GatewayError::ProviderNotFound(_) => "model_not_found",
            GatewayError::ProviderKeyMissing { .. } => "provider_key_missing",
            GatewayError::ProviderKeyNotBound { .. } => "secret_not_bound",
            GatewayError::Upstream { status: 429, .. } => "upstream_rate_limited",
            GatewayError::Upstream { .. } => "upstream_error",
            GatewayError::Timeout { .. } => "upstream_timeout",
            GatewayError::Connect { .. } => "upstream_unreachable",
            GatewayError::InvalidAnswer { .. } => "upstream_invalid_answer",
            GatewayError::TooLarge { .. } => "upstream_too_large",
            GatewayError::BudgetExceeded { .. } => "budget_exceeded",
            GatewayError::BudgetUnavailable { .. } => "store_unavailable",
            GatewayError::Unpriced { .. } => "model_unpriced",
            GatewayError::Internal(_) => "internal_error",
        }
    }
}
