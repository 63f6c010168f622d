//! Request extractors whose failures are `ApiError`s: JSON bodies and list pagination.

use crate::error::ApiError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use berth_store::PageRequest;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// A JSON body. Malformed JSON, a wrong content type, unknown fields and oversize bodies
/// are answered in the error shape with the problem named.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::unsupported_media("expected 'Content-Type: application/json'")
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(
            "invalid_json",
            format!("the body is not valid JSON: {}", e.body_text()),
        ),
        JsonRejection::JsonDataError(e) => ApiError::invalid(
            "invalid_body",
            "body",
            format!(
                "the body does not match the expected shape: {}",
                e.body_text()
            ),
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::too_large("the body is larger than this endpoint accepts")
        }
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageParams {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `?limit=` (1 to 500, default 50) and `?cursor=`.
pub struct Pagination(pub PageRequest);

impl<S: Send + Sync> FromRequestParts<S> for Pagination {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(p) =
            axum::extract::Query::<PageParams>::from_request_parts(parts, state)
                .await
                .map_err(query_rejection)?;
        let limit = p.limit.unwrap_or(PageRequest::DEFAULT_LIMIT);
        if !(1..=PageRequest::MAX_LIMIT).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be between 1 and {}", PageRequest::MAX_LIMIT),
            )
            .with_param("limit"));
        }
        Ok(Pagination(PageRequest {
            limit,
            cursor: p.cursor,
        }))
    }
}

pub(crate) fn query_rejection(r: QueryRejection) -> ApiError {
    ApiError::bad_request("invalid_query", r.body_text())
}
