//! Offline verification of LINE ID tokens (what LIFF's `liff.getIDToken()` returns):
//! HS256 signed with the channel secret, or ES256 with a key from LINE's JWKS (through
//! the one key cache of `job_trace::jwks`); `iss` `https://access.line.me`, `aud` the
//! channel id, `exp`, `nbf` and `iat` within the shared clock skew.

use std::time::Duration;

use job_trace::jwks::{self, KeyCache, KeyError, KeyType, MAX_TOKEN_BYTES};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::config::LineConfig;
use crate::error::ApiError;

pub const LINE_ISSUER: &str = "https://access.line.me";
/// An unknown `kid` refreshes the keys at most this often.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);

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

impl From<KeyError> for LineAuthError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Unknown => LineAuthError::UnknownKey,
            KeyError::Unavailable => LineAuthError::KeysUnavailable,
        }
    }
}

/// A refused token is the caller's 401; keys we cannot fetch are our 503.
impl From<LineAuthError> for ApiError {
    fn from(error: LineAuthError) -> Self {
        match error {
            LineAuthError::KeysUnavailable => ApiError::KeysUnavailable,
            error => {
                tracing::info!(%error, "LINE ID token refused");
                ApiError::Unauthenticated("Invalid token")
            }
        }
    }
}

/// What the API needs from a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LineClaims {
    /// The LINE user id.
    pub sub: String,
    #[serde(default)]
    iat: Option<u64>,
}

pub struct LineVerifier {
    channel_id: String,
    secret: Option<DecodingKey>,
    keys: Option<KeyCache>,
}

impl LineVerifier {
    pub fn new(config: &LineConfig) -> Self {
        LineVerifier {
            channel_id: config.channel_id.clone(),
            secret: config
                .channel_secret
                .as_ref()
                .and_then(|secret| DecodingKey::from_secret(secret.as_bytes()).ok()),
            keys: config
                .jwks_url
                .as_ref()
                .map(|url| KeyCache::new(url, KeyType::Ec, JWKS_MIN_REFRESH)),
        }
    }

    pub async fn verify(&self, token: &str) -> Result<LineClaims, LineAuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(LineAuthError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| LineAuthError::Malformed)?;
        let key = match (header.alg, &self.keys) {
            (Algorithm::HS256, _) => self.secret.clone().ok_or(LineAuthError::Algorithm)?,
            (Algorithm::ES256, Some(keys)) => {
                let kid = header.kid.ok_or(LineAuthError::UnknownKey)?;
                keys.key(&kid).await?
            }
            _ => return Err(LineAuthError::Algorithm),
        };
        let validation = jwks::validation(
            header.alg,
            &self.channel_id,
            &[LINE_ISSUER],
            &["exp", "aud", "iss", "sub"],
        );
        let claims = jsonwebtoken::decode::<LineClaims>(token, &key, &validation)
            .map_err(|error| LineAuthError::Invalid(jwks::describe(&error)))?
            .claims;
        if claims.sub.is_empty() {
            return Err(LineAuthError::Invalid("empty sub".into()));
        }
        if claims.iat.is_some_and(|iat| !jwks::issued_by_now(iat)) {
            return Err(LineAuthError::Invalid(
                "token is issued in the future".into(),
            ));
        }
        Ok(claims)
    }
}
