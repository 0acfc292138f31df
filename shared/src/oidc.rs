//! Verification of the OIDC tokens Google signs for Pub/Sub push subscriptions.
//!
//! A push carries `Authorization: Bearer <JWT>`: RS256, signed with one of Google's keys
//! (published as a JWKS), `iss` `https://accounts.google.com` or `accounts.google.com`,
//! `aud` the subscription's configured audience, and `email` / `email_verified` of the
//! service account the subscription pushes as. [`PushVerifier`] checks all of it.
//!
//! The keys come from the one key cache of [`crate::jwks`].

use std::time::Duration;

use axum::http::StatusCode;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::Value;

use crate::jwks::{self, KeyCache, KeyError, KeyType};
pub use crate::jwks::{LEEWAY_SECONDS, MAX_TOKEN_BYTES};

/// Where Google publishes the keys that sign its OIDC tokens.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// The two spellings of Google's issuer.
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// What a push token must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The expected `aud`.
    pub audience: String,
    /// The allowed `email`s (service accounts), compared case-insensitively.
    pub service_accounts: Vec<String>,
    pub jwks_url: String,
    /// An unknown `kid` refreshes the key set at most this often.
    pub min_refresh: Duration,
}

impl OidcConfig {
    pub fn new(audience: impl Into<String>, service_accounts: Vec<String>) -> Self {
        OidcConfig {
            audience: audience.into(),
            service_accounts,
            jwks_url: GOOGLE_JWKS_URL.into(),
            min_refresh: Duration::from_secs(30),
        }
    }
}

/// Why a push was refused. [`PushAuthError::status`] maps each to its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushAuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed bearer token")]
    Malformed,
    #[error("token algorithm {0} is not accepted; Google signs with RS256")]
    Algorithm(String),
    #[error("token is signed with an unknown key")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token email is not verified")]
    EmailNotVerified,
    #[error("service account {0} may not push here")]
    Forbidden(String),
    /// Our side: the key set could not be fetched. Pub/Sub should try again.
    #[error("signing keys are unavailable")]
    KeysUnavailable,
}

impl PushAuthError {
    /// 401 when the caller is not authenticated, 403 when it is but may not push, 503
    /// when we cannot tell for want of keys.
    pub fn status(&self) -> StatusCode {
        match self {
            PushAuthError::Forbidden(_) => StatusCode::FORBIDDEN,
            PushAuthError::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

impl From<KeyError> for PushAuthError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Unknown => PushAuthError::UnknownKey,
            KeyError::Unavailable => PushAuthError::KeysUnavailable,
        }
    }
}

/// The claims of a verified push token that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushIdentity {
    pub email: String,
    pub subject: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    iat: Option<u64>,
    email: Option<String>,
    email_verified: Option<Value>,
    sub: Option<String>,
}

/// Verifies push tokens; one per process, shared by all requests.
pub struct PushVerifier {
    config: OidcConfig,
    allowed: Vec<String>,
    keys: KeyCache,
}

impl PushVerifier {
    pub fn new(config: OidcConfig) -> Self {
        let allowed = config
            .service_accounts
            .iter()
            .map(|email| email.trim().to_ascii_lowercase())
            .filter(|email| !email.is_empty())
            .collect();
        PushVerifier {
            keys: KeyCache::new(&config.jwks_url, KeyType::Rsa, config.min_refresh),
            config,
            allowed,
        }
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// How many times the key set has been requested (for tests and metrics).
    pub fn jwks_fetches(&self) -> u64 {
        self.keys.fetches()
    }

    /// Verifies the value of an `Authorization` header.
    pub async fn verify_header(
        &self,
        authorization: Option<&[u8]>,
    ) -> Result<PushIdentity, PushAuthError> {
        let raw = authorization.ok_or(PushAuthError::Missing)?;
        if raw.len() > MAX_TOKEN_BYTES + 16 {
            return Err(PushAuthError::Malformed);
        }
        let raw = std::str::from_utf8(raw).map_err(|_| PushAuthError::Malformed)?;
        let (scheme, token) = raw.trim().split_once(' ').ok_or(PushAuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(PushAuthError::Malformed);
        }
        self.verify(token.trim()).await
    }

    /// Verifies one token.
    pub async fn verify(&self, token: &str) -> Result<PushIdentity, PushAuthError> {
        if token.is_empty() {
            return Err(PushAuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(PushAuthError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| PushAuthError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(PushAuthError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(PushAuthError::UnknownKey)?;
        let key = self.keys.key(&kid).await?;

        let validation = jwks::validation(
            Algorithm::RS256,
            &self.config.audience,
            &GOOGLE_ISSUERS,
            &["exp", "iat", "iss", "aud"],
        );
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|error| PushAuthError::Invalid(jwks::describe(&error)))?;
        let claims = data.claims;
        if !claims.iat.is_some_and(jwks::issued_by_now) {
            return Err(PushAuthError::Invalid(
                "token is issued in the future".into(),
            ));
        }
        let email = claims
            .email
            .filter(|email| !email.is_empty())
            .ok_or_else(|| PushAuthError::Invalid("token has no email".into()))?;
        let verified = match claims.email_verified {
            Some(Value::Bool(flag)) => flag,
            Some(Value::String(flag)) => flag.eq_ignore_ascii_case("true"),
            _ => false,
        };
        if !verified {
            return Err(PushAuthError::EmailNotVerified);
        }
        if !self.allowed.contains(&email.to_ascii_lowercase()) {
            return Err(PushAuthError::Forbidden(email));
        }
        Ok(PushIdentity {
            email,
            subject: claims.sub,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_separate_strangers_from_known_but_unwelcome_callers() {
        for (error, status) in [
            (PushAuthError::Missing, StatusCode::UNAUTHORIZED),
            (PushAuthError::Invalid("x".into()), StatusCode::UNAUTHORIZED),
            (PushAuthError::EmailNotVerified, StatusCode::UNAUTHORIZED),
            (
                PushAuthError::Forbidden("a@b".into()),
                StatusCode::FORBIDDEN,
            ),
            (
                PushAuthError::KeysUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ] {
            assert_eq!(error.status(), status, "{error}");
        }
    }

    #[tokio::test]
    async fn malformed_headers_are_refused_before_any_fetch() {
        let verifier = PushVerifier::new(OidcConfig {
            jwks_url: "http://127.0.0.1:9/never".into(),
            ..OidcConfig::new("trace-writer", vec!["a@b.iam.gserviceaccount.com".into()])
        });
        assert_eq!(
            verifier.verify_header(None).await,
            Err(PushAuthError::Missing)
        );
        for bad in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer not.a.jwt",
            b"\xff\xfe",
        ] {
            let refused = verifier.verify_header(Some(bad)).await.unwrap_err();
            assert_eq!(
                refused.status(),
                StatusCode::UNAUTHORIZED,
                "{bad:?}: {refused}"
            );
        }
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(
            verifier.verify_header(Some(huge.as_bytes())).await,
            Err(PushAuthError::Malformed)
        );
        assert_eq!(verifier.jwks_fetches(), 0);
    }
}
