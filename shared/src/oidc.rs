//! Verification of the OIDC tokens Google signs for Pub/Sub push subscriptions.
//!
//! A push carries `Authorization: Bearer <JWT>`: RS256, signed with one of Google's keys
//! (published as a JWKS), `iss` `https://accounts.google.com` or `accounts.google.com`,
//! `aud` the subscription's configured audience, and `email` / `email_verified` of the
//! service account the subscription pushes as. [`PushVerifier`] checks all of it.
//!
//! Keys are fetched lazily (start-up never waits for the network), cached for the time
//! the key set's `Cache-Control: max-age` allows (bounded), and fetched again when a token
//! names an unknown `kid`, at most once per [`OidcConfig::min_refresh`], so that a flood
//! of forged `kid`s cannot turn into a flood of fetches.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

/// Where Google publishes the keys that sign its OIDC tokens.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// The two spellings of Google's issuer.
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];
/// Longer `Authorization` values are refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp` and `iat`, in seconds.
pub const LEEWAY_SECONDS: u64 = 60;
/// A key set larger than this is refused.
const MAX_JWKS_BYTES: usize = 256 * 1024;
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds on how long a fetched key set is used before it is fetched again.
const MIN_KEYS_TTL: Duration = Duration::from_secs(60);
const MAX_KEYS_TTL: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_KEYS_TTL: Duration = Duration::from_secs(3600);
/// After a failed fetch, the next attempt waits at least this long.
const FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(1);

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
    pub fn status(&self) -> u16 {
        match self {
            PushAuthError::Forbidden(_) => 403,
            PushAuthError::KeysUnavailable => 503,
            _ => 401,
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

struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched: Instant,
    ttl: Duration,
}

impl Keys {
    fn fresh(&self) -> bool {
        self.fetched.elapsed() < self.ttl
    }
}

#[derive(Default)]
struct FetchState {
    /// The last fetch caused by an unknown `kid` (rate-limited by `min_refresh`).
    last_kid_refresh: Option<Instant>,
    /// The last failed fetch (the next waits [`FAILED_FETCH_BACKOFF`]).
    last_failure: Option<Instant>,
}

/// Verifies push tokens; one per process, shared by all requests.
pub struct PushVerifier {
    config: OidcConfig,
    allowed: Vec<String>,
    http: reqwest::Client,
    keys: RwLock<Option<Keys>>,
    fetch: Mutex<FetchState>,
    fetches: std::sync::atomic::AtomicU64,
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
            config,
            allowed,
            http: reqwest::Client::builder()
                .timeout(JWKS_TIMEOUT)
                .redirect(reqwest::redirect::Policy::limited(3))
                .build()
                .unwrap_or_default(),
            keys: RwLock::new(None),
            fetch: Mutex::new(FetchState::default()),
            fetches: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// How many times the key set has been requested (for tests and metrics).
    pub fn jwks_fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
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
        if kid.is_empty() || kid.len() > 256 {
            return Err(PushAuthError::UnknownKey);
        }
        let key = self.key(&kid).await?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&self.config.audience]);
        validation.set_issuer(&GOOGLE_ISSUERS);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
        validation.leeway = LEEWAY_SECONDS;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|error| PushAuthError::Invalid(describe(&error)))?;
        let claims = data.claims;

        let now = jsonwebtoken::get_current_timestamp();
        match claims.iat {
            Some(iat) if iat <= now + LEEWAY_SECONDS => {}
            _ => {
                return Err(PushAuthError::Invalid(
                    "token is issued in the future".into(),
                ))
            }
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

    async fn cached(&self, kid: &str) -> (Option<DecodingKey>, bool) {
        let keys = self.keys.read().await;
        match keys.as_ref() {
            Some(keys) => (keys.by_kid.get(kid).cloned(), keys.fresh()),
            None => (None, false),
        }
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, PushAuthError> {
        if let (Some(key), true) = self.cached(kid).await {
            return Ok(key);
        }
        // One fetch at a time: concurrent requests for the same new kid wait for it.
        let mut state = self.fetch.lock().await;
        let (known, fresh) = self.cached(kid).await;
        if let (Some(key), true) = (&known, fresh) {
            return Ok(key.clone());
        }
        if fresh {
            // Fresh keys without this kid: a rotation, or a forged kid. Look again, but
            // not more often than `min_refresh`.
            if state
                .last_kid_refresh
                .is_some_and(|at| at.elapsed() < self.config.min_refresh)
            {
                return Err(PushAuthError::UnknownKey);
            }
            state.last_kid_refresh = Some(Instant::now());
        } else if state
            .last_failure
            .is_some_and(|at| at.elapsed() < FAILED_FETCH_BACKOFF)
        {
            // Missing or stale keys, and the last fetch just failed: not in a tight loop.
            return known.ok_or(PushAuthError::KeysUnavailable);
        }
        match self.fetch_keys().await {
            Ok(keys) => {
                state.last_failure = None;
                let key = keys.by_kid.get(kid).cloned();
                *self.keys.write().await = Some(keys);
                key.ok_or(PushAuthError::UnknownKey)
            }
            Err(error) => {
                state.last_failure = Some(Instant::now());
                tracing::error!(%error, url = %self.config.jwks_url, "could not fetch the push token key set");
                // Stale keys are better than none while the key set is unreachable.
                known.ok_or(PushAuthError::KeysUnavailable)
            }
        }
    }

    async fn fetch_keys(&self) -> Result<Keys, String> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut response = self
            .http
            .get(&self.config.jwks_url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("key set answered {}", response.status()));
        }
        let ttl = max_age(response.headers()).unwrap_or(DEFAULT_KEYS_TTL);
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if bytes.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("key set is larger than {MAX_JWKS_BYTES} bytes"));
            }
            bytes.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        let by_kid = set
            .keys
            .iter()
            .filter(|jwk| matches!(jwk.algorithm, AlgorithmParameters::RSA(_)))
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(jwk).ok().map(|key| (kid, key))
            })
            .collect();
        Ok(Keys {
            by_kid,
            fetched: Instant::now(),
            ttl: ttl.clamp(MIN_KEYS_TTL, MAX_KEYS_TTL),
        })
    }
}

fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|directive| {
        let (name, seconds) = directive.trim().split_once('=')?;
        name.eq_ignore_ascii_case("max-age")
            .then(|| seconds.trim().parse::<u64>().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

/// A short reason for a refused token, without echoing the token.
fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::ExpiredSignature => "token has expired".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::ImmatureSignature => "token is not valid yet".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token has no {claim}"),
        ErrorKind::InvalidAlgorithm => "wrong algorithm".into(),
        _ => "token is not valid".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_separate_strangers_from_known_but_unwelcome_callers() {
        assert_eq!(PushAuthError::Missing.status(), 401);
        assert_eq!(PushAuthError::Invalid("x".into()).status(), 401);
        assert_eq!(PushAuthError::EmailNotVerified.status(), 401);
        assert_eq!(PushAuthError::Forbidden("a@b".into()).status(), 403);
        assert_eq!(PushAuthError::KeysUnavailable.status(), 503);
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CACHE_CONTROL,
            "public, max-age=21600, must-revalidate".parse().unwrap(),
        );
        assert_eq!(max_age(&headers), Some(Duration::from_secs(21600)));
        headers.insert(reqwest::header::CACHE_CONTROL, "no-cache".parse().unwrap());
        assert_eq!(max_age(&headers), None);
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
            assert_eq!(refused.status(), 401, "{bad:?}: {refused}");
        }
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(
            verifier.verify_header(Some(huge.as_bytes())).await,
            Err(PushAuthError::Malformed)
        );
        assert_eq!(verifier.jwks_fetches(), 0);
    }
}
