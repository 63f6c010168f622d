//! The HTTP surface of Berth: router, authentication, error mapping, request context.
//!
//! Handlers are thin: they authenticate, check the role, parse the body and call a
//! function in [`service`]. Every error leaves through [`ApiError`], the one place where
//! failures become HTTP statuses in the OpenAI error shape.

pub mod auth;
pub mod conn;
mod context;
pub mod dto;
pub mod error;
mod extract;
pub mod jwt;
mod mcp;
mod routes;
pub mod service;
mod sse;
pub mod state;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;

pub use auth::Authenticator;
pub use error::ApiError;
pub use routes::{openapi_document, router};
pub use state::{ApiSettings, AppState};

use std::future::Future;
use tokio::net::TcpListener;

/// Serves `state` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish and drains the background tasks tracked by the state.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tasks = state.tasks.clone();
    let stop_background = state.shutdown.clone();
    service::runner::start(&state);
    let mcp = state.mcp.clone();
    let stop = state.shutdown.clone();
    state.tasks.spawn(mcp.run_health_checks(stop));
    let runner = state.runner.clone();
    let closing = runner.closing.clone();
    let limits = state.settings.connections;
    let app = router(state);
    conn::serve_connections(listener, app, limits, async move {
        shutdown.await;
        // Event streams end and workers take no new runs, so connections can drain.
        closing.cancel();
    })
    .await;
    // Runs still executing finish (and are metered) before the background writers stop.
    runner.drain().await;
    stop_background.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}
