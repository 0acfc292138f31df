//! One cache of a published key set (JWKS), serving both token verifiers: Google's keys
//! for push tokens ([`crate::oidc`]) and LINE's for ID tokens (trace-api).
//!
//! Keys are fetched lazily (start-up never waits for the network), cached for the time
//! the key set's `Cache-Control: max-age` allows (bounded), and fetched again when a token
//! names an unknown `kid`, at most once per `min_refresh`, so that a flood of forged
//! `kid`s cannot turn into a flood of fetches. A failed fetch is "keys unavailable" (our
//! fault, never the token's) and the next attempt waits [`FAILED_FETCH_BACKOFF`]. The
//! download is bounded as it streams: a huge answer costs at most [`MAX_JWKS_BYTES`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::{Mutex, RwLock};

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds, by every verifier.
pub const LEEWAY_SECONDS: u64 = 60;
/// Longer tokens are refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// A key set larger than this is refused.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds on how long a fetched key set is used before it is fetched again.
const MIN_KEYS_TTL: Duration = Duration::from_secs(60);
const MAX_KEYS_TTL: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_KEYS_TTL: Duration = Duration::from_secs(3600);
/// After a failed fetch, the next attempt waits at least this long.
pub const FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(1);
/// Longer `kid`s are not looked up.
const MAX_KID_BYTES: usize = 256;

/// Which keys of the set a verifier can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// RSA (Google signs push tokens with RS256).
    Rsa,
    /// Elliptic curve (LINE signs ID tokens with ES256).
    Ec,
}

impl KeyType {
    fn accepts(self, parameters: &AlgorithmParameters) -> bool {
        matches!(
            (self, parameters),
            (KeyType::Rsa, AlgorithmParameters::RSA(_))
                | (KeyType::Ec, AlgorithmParameters::EllipticCurve(_))
        )
    }
}

/// Why no key was found for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The set (fetched, or fetched again recently) has no such key: the token's fault.
    #[error("token is signed with an unknown key")]
    Unknown,
    /// The set could not be fetched: ours.
    #[error("signing keys are unavailable")]
    Unavailable,
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

/// The keys of one JWKS URL; one per verifier, shared by all requests.
pub struct KeyCache {
    url: String,
    key_type: KeyType,
    min_refresh: Duration,
    http: reqwest::Client,
    keys: RwLock<Option<Keys>>,
    fetch: Mutex<FetchState>,
    fetches: AtomicU64,
}

impl KeyCache {
    pub fn new(url: impl Into<String>, key_type: KeyType, min_refresh: Duration) -> Self {
        KeyCache {
            url: url.into(),
            key_type,
            min_refresh,
            http: reqwest::Client::builder()
                .timeout(JWKS_TIMEOUT)
                .redirect(reqwest::redirect::Policy::limited(3))
                .build()
                .unwrap_or_default(),
            keys: RwLock::new(None),
            fetch: Mutex::new(FetchState::default()),
            fetches: AtomicU64::new(0),
        }
    }

    /// How many times the key set has been requested (for tests and metrics).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    async fn cached(&self, kid: &str) -> (Option<DecodingKey>, bool) {
        let keys = self.keys.read().await;
        match keys.as_ref() {
            Some(keys) => (keys.by_kid.get(kid).cloned(), keys.fresh()),
            None => (None, false),
        }
    }

    /// The key named `kid`.
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, KeyError> {
        if kid.is_empty() || kid.len() > MAX_KID_BYTES {
            return Err(KeyError::Unknown);
        }
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
                .is_some_and(|at| at.elapsed() < self.min_refresh)
            {
                return Err(KeyError::Unknown);
            }
            state.last_kid_refresh = Some(Instant::now());
        } else if state
            .last_failure
            .is_some_and(|at| at.elapsed() < FAILED_FETCH_BACKOFF)
        {
            // Missing or stale keys, and the last fetch just failed: not in a tight loop.
            return known.ok_or(KeyError::Unavailable);
        }
        match self.fetch_keys().await {
            Ok(keys) => {
                state.last_failure = None;
                let key = keys.by_kid.get(kid).cloned();
                *self.keys.write().await = Some(keys);
                key.ok_or(KeyError::Unknown)
            }
            Err(error) => {
                // Recorded only now: until a fetch has failed, nothing holds the next back.
                state.last_failure = Some(Instant::now());
                tracing::error!(%error, url = %self.url, "could not fetch the token key set");
                // Stale keys are better than none while the key set is unreachable.
                known.ok_or(KeyError::Unavailable)
            }
        }
    }

    async fn fetch_keys(&self) -> Result<Keys, String> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let mut response = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("key set answered {}", response.status()));
        }
        let ttl = max_age(response.headers()).unwrap_or(DEFAULT_KEYS_TTL);
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("key set is larger than {MAX_JWKS_BYTES} bytes"));
        }
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
            .filter(|jwk| self.key_type.accepts(&jwk.algorithm))
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

/// What both verifiers ask of a token's registered claims: the signature with `algorithm`,
/// `aud`, `iss`, the `required` claims, and `exp` and `nbf` with [`LEEWAY_SECONDS`].
pub fn validation(
    algorithm: Algorithm,
    audience: &str,
    issuers: &[&str],
    required: &[&str],
) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.set_audience(&[audience]);
    validation.set_issuer(issuers);
    validation.set_required_spec_claims(required);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECONDS;
    validation
}

/// Whether `iat` is not in the future (with [`LEEWAY_SECONDS`]).
pub fn issued_by_now(iat: u64) -> bool {
    iat <= jsonwebtoken::get_current_timestamp() + LEEWAY_SECONDS
}

/// A short reason for a refused token, without echoing the token.
pub fn describe(error: &jsonwebtoken::errors::Error) -> String {
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
    async fn a_failed_fetch_is_unavailable_and_held_back_only_after_it_failed() {
        let cache = KeyCache::new(
            "http://127.0.0.1:9/never",
            KeyType::Rsa,
            Duration::from_secs(30),
        );
        assert_eq!(cache.key("k").await.err(), Some(KeyError::Unavailable));
        assert_eq!(cache.fetches(), 1);
        // Within the backoff: still unavailable (never "unknown key"), and no new fetch.
        assert_eq!(cache.key("k").await.err(), Some(KeyError::Unavailable));
        assert_eq!(cache.fetches(), 1);
        tokio::time::sleep(FAILED_FETCH_BACKOFF).await;
        assert_eq!(cache.key("k").await.err(), Some(KeyError::Unavailable));
        assert_eq!(cache.fetches(), 2);
    }

    #[tokio::test]
    async fn absurd_kids_are_not_looked_up() {
        let cache = KeyCache::new("http://127.0.0.1:9/never", KeyType::Ec, Duration::ZERO);
        assert_eq!(cache.key("").await.err(), Some(KeyError::Unknown));
        let long = "k".repeat(MAX_KID_BYTES + 1);
        assert_eq!(cache.key(&long).await.err(), Some(KeyError::Unknown));
        assert_eq!(cache.fetches(), 0);
    }
}
