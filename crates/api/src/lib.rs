//! The HTTP surface of Berth: router, authentication extractors, DTOs, error mapping, SSE
//! and `/mcp` framing, OpenAPI, request context. The only crate that knows HTTP.
//!
//! Handlers are thin: they authenticate, parse the request, call a function of the
//! application core ([`berth_platform`]) and render its answer. Every error leaves through
//! [`ApiError`], the one place where failures become HTTP statuses in the OpenAI error
//! shape.

pub mod auth;
pub mod bundle;
pub mod conn;
mod context;
pub mod dto;
pub mod error;
mod extract;
mod mcp;
mod routes;
mod sse;
pub mod state;
mod wire;

pub use error::ApiError;
pub use routes::{openapi_document, router};
pub use state::AppState;

use std::future::Future;
use tokio::net::TcpListener;

/// Serves `state` on `listener` until `shutdown` completes: starts the platform's
/// background tasks, then lets in-flight requests finish and stops the platform (runs in
/// flight end, background writers drain).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let platform = state.platform.clone();
    platform.start();
    let closing = platform.closing();
    let limits = state.connections;
    let app = router(state);
    conn::serve_connections(listener, app, limits, async move {
        shutdown.await;
        // Event streams end and workers take no new runs, so connections can drain.
        closing.cancel();
    })
    .await;
    platform.stop().await;
    Ok(())
}
