//! Offline verification of LINE ID tokens (what LIFF's `liff.getIDToken()` returns):
//! HS256 signed with the channel secret, or ES256 with a key from LINE's JWKS; `iss`
//! `https://access.line.me`, `aud` the channel id, `exp` in the future.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use crate::config::LineConfig;

pub const LINE_ISSUER: &str = "https://access.line.me";
/// Longer tokens are refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Keys are fetched again after this long.
const JWKS_TTL: Duration = Duration::from_secs(3600);
/// An unknown `kid` refreshes the keys at most this often.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// A key set larger than this is refused.
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LineAuthError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token's key is unknown")]
    UnknownKey,
    #[error("the token is invalid: {0}")]
    Invalid(String),
    #[error("the key set could not be fetched")]
    KeysUnavailable,
}

/// What the API needs from a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LineClaims {
    /// The LINE user id.
    pub sub: String,
}

struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched: Instant,
}

pub struct LineVerifier {
    channel_id: String,
    secret: Option<DecodingKey>,
    jwks_url: Option<String>,
    http: reqwest::Client,
    keys: RwLock<Option<Keys>>,
    refresh: Mutex<Option<Instant>>,
}

impl LineVerifier {
    pub fn new(config: &LineConfig) -> Self {
        LineVerifier {
            channel_id: config.channel_id.clone(),
            secret: config
                .channel_secret
                .as_ref()
                .and_then(|secret| DecodingKey::from_secret(secret.as_bytes()).ok()),
            jwks_url: config.jwks_url.clone(),
            http: reqwest::Client::builder()
                .timeout(JWKS_TIMEOUT)
                .build()
                .unwrap_or_default(),
            keys: RwLock::new(None),
            refresh: Mutex::new(None),
        }
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_audience(&[&self.channel_id]);
        validation.set_issuer(&[LINE_ISSUER]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = 30;
        validation
    }

    pub async fn verify(&self, token: &str) -> Result<LineClaims, LineAuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(LineAuthError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| LineAuthError::Malformed)?;
        let key = match header.alg {
            Algorithm::HS256 => self.secret.clone().ok_or(LineAuthError::Algorithm)?,
            Algorithm::ES256 if self.jwks_url.is_some() => {
                let kid = header.kid.ok_or(LineAuthError::UnknownKey)?;
                self.key(&kid).await?
            }
            _ => return Err(LineAuthError::Algorithm),
        };
        let data = jsonwebtoken::decode::<LineClaims>(token, &key, &self.validation(header.alg))
            .map_err(|error| LineAuthError::Invalid(error.to_string()))?;
        if data.claims.sub.is_empty() {
            return Err(LineAuthError::Invalid("empty sub".into()));
        }
        Ok(data.claims)
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, LineAuthError> {
        {
            let keys = self.keys.read().await;
            if let Some(keys) = keys.as_ref() {
                if keys.fetched.elapsed() < JWKS_TTL {
                    if let Some(key) = keys.by_kid.get(kid) {
                        return Ok(key.clone());
                    }
                }
            }
        }
        // Unknown kid or stale keys: refresh, at most once per JWKS_MIN_REFRESH.
        let mut last = self.refresh.lock().await;
        let fresh_enough = {
            let keys = self.keys.read().await;
            keys.as_ref().and_then(|keys| {
                (keys.fetched.elapsed() < JWKS_TTL)
                    .then(|| keys.by_kid.get(kid).cloned())
                    .flatten()
            })
        };
        if let Some(key) = fresh_enough {
            return Ok(key);
        }
        if last.is_some_and(|at| at.elapsed() < JWKS_MIN_REFRESH) {
            let keys = self.keys.read().await;
            return keys
                .as_ref()
                .and_then(|keys| keys.by_kid.get(kid).cloned())
                .ok_or(LineAuthError::UnknownKey);
        }
        *last = Some(Instant::now());
        let fetched = self.fetch().await?;
        let key = fetched.by_kid.get(kid).cloned();
        *self.keys.write().await = Some(fetched);
        key.ok_or(LineAuthError::UnknownKey)
    }

    async fn fetch(&self) -> Result<Keys, LineAuthError> {
        let url = self
            .jwks_url
            .as_deref()
            .ok_or(LineAuthError::KeysUnavailable)?;
        let unavailable = |error: &dyn std::fmt::Display| {
            tracing::warn!(%error, "could not fetch the LINE key set");
            LineAuthError::KeysUnavailable
        };
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        if !response.status().is_success() {
            return Err(unavailable(&format!("status {}", response.status())));
        }
        let bytes = response.bytes().await.map_err(|e| unavailable(&e))?;
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(unavailable(&"key set too large"));
        }
        let set: JwkSet = serde_json::from_slice(&bytes).map_err(|e| unavailable(&e))?;
        let by_kid = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(jwk).ok().map(|key| (kid, key))
            })
            .collect();
        Ok(Keys {
            by_kid,
            fetched: Instant::now(),
        })
    }
}
