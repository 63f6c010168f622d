//! Per-request context: request id, the tenant once known, the log span and HTTP metrics.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use berth_core::{Id, IdKind};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tracing::Instrument;

pub(crate) struct RequestContext {
    pub id: String,
    pub tenant: OnceLock<String>,
    /// The route template (`/v1/keys/{id}`), set once routing has matched.
    pub route: OnceLock<String>,
}

tokio::task_local! {
    static CURRENT: Arc<RequestContext>;
}

/// The id of the request being served by this task, if any.
pub(crate) fn current_request_id() -> Option<String> {
    CURRENT.try_with(|c| c.id.clone()).ok()
}

/// Records the authenticated tenant for the log span and metrics of this request.
pub(crate) fn set_tenant(tenant: &str) {
    let _ = CURRENT.try_with(|c| {
        let _ = c.tenant.set(tenant.to_owned());
    });
    tracing::Span::current().record("tenant", tenant);
}

/// Outermost middleware: assigns the request id, runs the request inside its span and
/// context, then adds `x-request-id`, logs one line and counts it.
pub(crate) async fn middleware(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let ctx = Arc::new(RequestContext {
        id: Id::new(IdKind::Request).into_string(),
        tenant: OnceLock::new(),
        route: OnceLock::new(),
    });
    let method = req.method().clone();
    let span = tracing::info_span!("request", request_id = %ctx.id, method = %method, route = tracing::field::Empty, tenant = tracing::field::Empty);
    let mut resp = CURRENT
        .scope(ctx.clone(), next.run(req).instrument(span.clone()))
        .await;
    if let Ok(v) = HeaderValue::from_str(&ctx.id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    let route = ctx
        .route
        .get()
        .map_or("unmatched", String::as_str)
        .to_owned();
    span.record("route", route.as_str());
    let tenant = ctx.tenant.get().map_or("", String::as_str).to_owned();
    span.in_scope(|| {
        tracing::info!(status, latency_us = elapsed.as_micros() as u64, "request");
    });
    let labels = [
        ("route", route),
        ("method", method.to_string()),
        ("status", status.to_string()),
        ("tenant", tenant),
    ];
    metrics::counter!("berth_http_requests_total", &labels).increment(1);
    metrics::histogram!("berth_http_request_duration_seconds", &labels[..2])
        .record(elapsed.as_secs_f64());
    resp
}

/// Inner (route-level) middleware: records which route template matched, for metrics.
pub(crate) async fn record_route(req: Request, next: Next) -> Response {
    if let Some(path) = req.extensions().get::<MatchedPath>() {
        let route = path.as_str().to_owned();
        let _ = CURRENT.try_with(|c| {
            let _ = c.route.set(route);
        });
    }
    next.run(req).await
}
