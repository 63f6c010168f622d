//! `AppState`: what a handler needs — the [`Platform`] it calls, plus what only the HTTP
//! layer uses (the metrics exporter, the connection limits). A cheap `Clone` of `Arc`s.

use crate::conn::ConnLimits;
use axum::extract::FromRef;
use berth_platform::{Authenticator, Platform};
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub platform: Platform,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Connection caps and the header deadline of the HTTP server.
    pub connections: ConnLimits,
}

/// Handlers call the platform's services with `&state`.
impl std::ops::Deref for AppState {
    type Target = Platform;

    fn deref(&self) -> &Platform {
        &self.platform
    }
}

/// What the authentication extractors need of the state, and nothing else.
impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.platform.auth.clone()
    }
}
