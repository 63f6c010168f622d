//! Agent bundles as the API answers them: the platform's unpacking (`berth_platform::bundle`)
//! with its refusals already mapped to the HTTP errors a deploy would answer, so the
//! bundle properties (`tests/bundle_props.rs`) check the statuses clients see.

use crate::error::ApiError;
pub use berth_platform::bundle::{Bundle, MAX_BUNDLE_BYTES, digest_files};

/// Unpacks a gzipped tar bundle (see `berth_platform::bundle::unpack`); a refusal is the
/// 4xx a deploy of these bytes answers.
pub fn unpack(name: &str, gz: &[u8]) -> Result<Bundle, ApiError> {
    berth_platform::bundle::unpack(name, gz).map_err(ApiError::from)
}
