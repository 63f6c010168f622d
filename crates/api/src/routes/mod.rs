//! The router: every endpoint, registered with its OpenAPI description so that
//! `/openapi.json` and the isolation test both see exactly what is served.

mod agents;
mod approvals;
mod audit;
mod identity;
mod llm;
mod ops;
mod policy;
mod providers;
mod runs;
mod secrets;
mod tenants;
mod tools;
mod usage;

use crate::context;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// JSON bodies above this are answered with 413 (API.md: 10 MiB).
pub const JSON_BODY_LIMIT: usize = 10 * 1024 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(title = "Berth", description = "Multi-tenant AI agent hosting platform"),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(tenants::create, tenants::list))
        .routes(routes!(tenants::get, tenants::patch, tenants::delete))
        .routes(routes!(tenants::create_key))
        .routes(routes!(identity::me))
        .routes(routes!(identity::create_key, identity::list_keys))
        .routes(routes!(identity::revoke_key))
        .routes(routes!(secrets::list))
        .routes(routes!(secrets::put, secrets::delete))
        .routes(routes!(audit::list))
        .routes(routes!(audit::verify))
        .routes(routes!(policy::get, policy::put))
        .routes(routes!(providers::list))
        .routes(routes!(providers::get, providers::put, providers::delete))
        .routes(routes!(usage::get))
        .routes(routes!(usage::summary))
        .routes(routes!(usage::invoice))
        .routes(routes!(usage::admin))
        .routes(routes!(llm::chat_completions))
        .routes(routes!(llm::messages))
        .routes(routes!(llm::embeddings))
        .routes(routes!(llm::models))
        .routes(routes!(agents::list))
        .routes(routes!(agents::get, agents::delete))
        .routes(routes!(agents::versions))
        .routes(routes!(agents::version))
        .routes(routes!(agents::get_traffic, agents::put_traffic))
        .routes(routes!(agents::rollback))
        .routes(routes!(runs::start))
        .routes(routes!(runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::trace))
        .routes(routes!(runs::events))
        .routes(routes!(runs::cancel))
        .routes(routes!(tools::register, tools::list))
        .routes(routes!(tools::delete))
        .routes(routes!(tools::refresh))
        .routes(routes!(tools::usable))
        .routes(routes!(tools::endpoint))
        .routes(routes!(approvals::list))
        .routes(routes!(approvals::decide))
        .routes(routes!(runs::get_thread, runs::delete_thread))
        .merge(
            // Bundles may be larger than JSON bodies; the innermost limit wins.
            OpenApiRouter::new()
                .routes(routes!(agents::deploy))
                .layer(DefaultBodyLimit::max(crate::bundle::MAX_BUNDLE_BYTES)),
        )
}

/// The OpenAPI document of every route the router serves.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api_router().split_for_parts();
    doc.paths.paths.insert(
        "/openapi.json".to_owned(),
        utoipa::openapi::path::PathItem::new(
            utoipa::openapi::HttpMethod::Get,
            utoipa::openapi::path::OperationBuilder::new()
                .summary(Some("This document"))
                .tag("operations")
                .build(),
        ),
    );
    doc
}

pub fn router(state: AppState) -> Router {
    let (routes, _) = api_router().split_for_parts();
    let doc = Arc::new(openapi_document().to_json().unwrap_or_default());
    routes
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        (*doc).clone(),
                    )
                }
            }),
        )
        .route_layer(axum::middleware::from_fn(context::record_route))
        .fallback(|| async {
            ApiError::not_found("route_not_found", "no such endpoint").into_response()
        })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed().into_response() })
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                ApiError::internal(&"a handler panicked").into_response()
            },
        ))
        .layer(axum::middleware::from_fn(context::middleware))
        .with_state(state)
}
