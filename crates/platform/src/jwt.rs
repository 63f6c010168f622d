//! JWT verification for tenant callers: HS256 with a shared secret, or asymmetric keys
//! from a JWKS URL (fetched lazily, cached, refreshed when an unknown `kid` appears).

use crate::error::Error;
use berth_core::{Role, TenantId};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub jwks_url: Option<String>,
    /// The HS256 shared secret (read from the environment variable the config names).
    pub hs256_secret: Option<String>,
    pub tenant_claim: String,
    pub role_claim: String,
}

/// What a verified token says about its caller.
#[derive(Debug, Clone)]
pub struct JwtClaims {
    pub tenant: TenantId,
    pub role: Role,
    pub subject: String,
}

struct JwksCache {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Option<Instant>,
}

pub struct JwtVerifier {
    settings: JwtSettings,
    http: reqwest::Client,
    jwks: Mutex<JwksCache>,
}

/// A JWKS is re-fetched for an unknown `kid` at most this often.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);

fn rejected(why: impl std::fmt::Display) -> Error {
    Error::unauthenticated("invalid_token", format!("the token is not valid: {why}"))
}

impl JwtVerifier {
    pub fn new(settings: JwtSettings) -> Self {
        JwtVerifier {
            settings,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            jwks: Mutex::new(JwksCache {
                keys: HashMap::new(),
                fetched: None,
            }),
        }
    }

    pub async fn verify(&self, token: &str) -> Result<JwtClaims, Error> {
        let header = jsonwebtoken::decode_header(token).map_err(rejected)?;
        let (key, alg) = match header.alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let secret = self
                    .settings
                    .hs256_secret
                    .as_deref()
                    .ok_or_else(|| rejected("HMAC tokens are not accepted by this server"))?;
                (
                    DecodingKey::from_secret(secret.as_bytes()),
                    Algorithm::HS256,
                )
            }
            _ => {
                let kid = header.kid.clone().unwrap_or_default();
                self.jwks_key(&kid).await?
            }
        };
        if alg != header.alg {
            return Err(rejected("unexpected algorithm"));
        }
        let mut validation = Validation::new(alg);
        // A configured issuer or audience is required, not only checked when present: a
        // token without the claim was not issued for this server. `nbf` is honoured.
        let mut required = vec!["exp", "sub"];
        match &self.settings.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.settings.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .map_err(rejected)?;
        let claims = data.claims;
        let tenant = claims
            .get(&self.settings.tenant_claim)
            .and_then(|v| v.as_str())
            .and_then(TenantId::parse)
            .ok_or_else(|| {
                rejected(format!(
                    "claim '{}' must be a tenant id",
                    self.settings.tenant_claim
                ))
            })?;
        let role = claims
            .get(&self.settings.role_claim)
            .and_then(|v| v.as_str())
            .ok_or_else(|| rejected(format!("claim '{}' is missing", self.settings.role_claim)))?
            .parse::<Role>()
            .map_err(rejected)?;
        // The subject tells JWT callers apart (an invoker cancels and decides only what it
        // started), so it is required, and checked like any name that reaches the store.
        let subject = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .filter(|s| (1..=256).contains(&s.len()) && !s.chars().any(char::is_control))
            .ok_or_else(|| rejected("claim 'sub' must be a string of 1 to 256 characters"))?
            .to_owned();
        Ok(JwtClaims {
            tenant,
            role,
            subject,
        })
    }

    async fn jwks_key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), Error> {
        let url = self
            .settings
            .jwks_url
            .as_deref()
            .ok_or_else(|| rejected("asymmetric tokens need [auth.jwt] jwks_url"))?;
        let mut cache = self.jwks.lock().await;
        if let Some(k) = cache.keys.get(kid) {
            return Ok(k.clone());
        }
        if cache
            .fetched
            .is_some_and(|t| t.elapsed() < JWKS_MIN_REFRESH)
        {
            return Err(rejected("unknown key id"));
        }
        cache.fetched = Some(Instant::now());
        let set: JwkSet = self
            .http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| {
                Error::unavailable("jwks_unavailable", format!("cannot fetch the JWKS: {e}"))
            })?
            .json()
            .await
            .map_err(|e| {
                Error::unavailable("jwks_unavailable", format!("the JWKS is not valid: {e}"))
            })?;
        cache.keys.clear();
        for jwk in &set.keys {
            let Some(id) = jwk.common.key_id.clone() else {
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok())
                .unwrap_or(match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    _ => Algorithm::RS256,
                });
            cache.keys.insert(id, (key, alg));
        }
        cache
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| rejected("unknown key id"))
    }
}
