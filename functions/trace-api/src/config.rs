//! trace-api's own configuration: CORS, access control and how long-polls learn of
//! changes. Read with envy like the shared sections; a bad combination stops start-up
//! with one clear line.

use std::time::Duration;

use axum::http::HeaderValue;
use job_trace::config::{from_iter, ConfigError};
use serde::Deserialize;

/// `API_AUTH`: who may read traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Anyone (the original's behaviour): the default.
    #[default]
    None,
    /// Server-to-server callers with the shared bearer token `API_TOKEN`.
    Token,
    /// Browser users with a LINE ID token; each sees only their own traces.
    Line,
}

/// `API_CHANGE_STREAMS`: how waiting requests learn of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChangeStreams {
    /// A change stream where the database offers one, else bounded polling.
    #[default]
    Auto,
    /// Bounded polling only.
    Off,
}

fn default_origins() -> String {
    "*".into()
}

fn default_poll_millis() -> u64 {
    500
}

/// Three quarters of the shared default `MAX_CONNECTIONS`: streams leave room for the
/// reads that are not streams.
pub const DEFAULT_MAX_EVENT_STREAMS: usize = 128;

fn default_max_event_streams() -> usize {
    DEFAULT_MAX_EVENT_STREAMS
}

#[derive(Deserialize)]
struct RawApiConfig {
    #[serde(default = "default_origins")]
    cors_allowed_origins: String,
    #[serde(default)]
    api_auth: Option<String>,
    #[serde(default)]
    api_token: Option<String>,
    #[serde(default)]
    line_channel_id: Option<String>,
    #[serde(default)]
    line_channel_secret: Option<String>,
    #[serde(default)]
    line_jwks_url: Option<String>,
    #[serde(default)]
    api_change_streams: Option<String>,
    #[serde(default = "default_poll_millis")]
    api_poll_interval_ms: u64,
    #[serde(default = "default_max_event_streams")]
    max_event_streams: usize,
}

/// Allowed CORS origins.
#[derive(Debug, Clone, PartialEq)]
pub enum Origins {
    Any,
    List(Vec<HeaderValue>),
}

/// How callers authenticate.
#[derive(Clone, PartialEq)]
pub enum Auth {
    None,
    Token(String),
    Line(LineConfig),
}

/// What a LINE ID token is checked against.
#[derive(Clone, PartialEq)]
pub struct LineConfig {
    pub channel_id: String,
    /// HS256 key: the channel secret.
    pub channel_secret: Option<String>,
    /// ES256 keys: a JWKS URL (LINE publishes `https://api.line.me/oauth2/v2.1/certs`).
    pub jwks_url: Option<String>,
}

/// Shortest accepted `API_TOKEN`: a shared secret must not be guessable.
pub const MIN_TOKEN_BYTES: usize = 16;

#[derive(Clone)]
pub struct ApiConfig {
    pub origins: Origins,
    pub auth: Auth,
    pub change_streams: ChangeStreams,
    /// Period of the polling fallback (one query per period for all waiting requests).
    pub poll_interval: Duration,
    /// `MAX_EVENT_STREAMS`: event streams open at once; past it 503 with `Retry-After`.
    pub max_event_streams: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            origins: Origins::Any,
            auth: Auth::None,
            change_streams: ChangeStreams::Auto,
            poll_interval: Duration::from_millis(default_poll_millis()),
            max_event_streams: DEFAULT_MAX_EVENT_STREAMS,
        }
    }
}

/// Secrets never reach a log line.
impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            Auth::None => "none".to_string(),
            Auth::Token(_) => "token (<redacted>)".to_string(),
            Auth::Line(line) => format!(
                "line (channel {}, secret {}, jwks {:?})",
                line.channel_id,
                if line.channel_secret.is_some() {
                    "<redacted>"
                } else {
                    "none"
                },
                line.jwks_url
            ),
        };
        f.debug_struct("ApiConfig")
            .field("origins", &self.origins)
            .field("auth", &auth)
            .field("change_streams", &self.change_streams)
            .field("poll_interval", &self.poll_interval)
            .field("max_event_streams", &self.max_event_streams)
            .finish()
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn parse_origins(raw: &str) -> Result<Origins, ConfigError> {
    let raw = raw.trim();
    if raw == "*" {
        return Ok(Origins::Any);
    }
    let mut list = Vec::new();
    for origin in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let looks_like_origin = (origin.starts_with("http://") || origin.starts_with("https://"))
            && !origin.trim_end_matches('/').contains(['?', '#', ' '])
            && origin.splitn(4, '/').nth(3).is_none_or(str::is_empty);
        let value = HeaderValue::from_str(origin.trim_end_matches('/'))
            .ok()
            .filter(|_| looks_like_origin)
            .ok_or_else(|| {
                ConfigError(format!(
                    "CORS_ALLOWED_ORIGINS: {origin:?} is not an origin like https://example.com (or use *)"
                ))
            })?;
        list.push(value);
    }
    if list.is_empty() {
        return Err(ConfigError(
            "CORS_ALLOWED_ORIGINS is empty: give * or a comma-separated list of origins".into(),
        ));
    }
    Ok(Origins::List(list))
}

impl ApiConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads and checks the section from the given variables (tests pass their own).
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError> {
        let raw: RawApiConfig = from_iter(vars.into_iter().map(|(k, v)| (k.into(), v.into())))?;
        let origins = parse_origins(&raw.cors_allowed_origins)?;
        let mode = match raw.api_auth.as_deref().map(str::trim).unwrap_or("none") {
            "" | "none" => AuthMode::None,
            "token" => AuthMode::Token,
            "line" => AuthMode::Line,
            other => {
                return Err(ConfigError(format!(
                    "API_AUTH must be none, token or line, got {other:?}"
                )))
            }
        };
        let change_streams = match raw
            .api_change_streams
            .as_deref()
            .map(str::trim)
            .unwrap_or("auto")
        {
            "" | "auto" => ChangeStreams::Auto,
            "off" => ChangeStreams::Off,
            other => {
                return Err(ConfigError(format!(
                    "API_CHANGE_STREAMS must be auto or off, got {other:?}"
                )))
            }
        };
        let auth = match mode {
            AuthMode::None => Auth::None,
            AuthMode::Token => {
                let token = non_empty(raw.api_token)
                    .ok_or_else(|| ConfigError("API_AUTH=token needs API_TOKEN".into()))?;
                if token.len() < MIN_TOKEN_BYTES {
                    return Err(ConfigError(format!(
                        "API_TOKEN must be at least {MIN_TOKEN_BYTES} bytes long"
                    )));
                }
                Auth::Token(token)
            }
            AuthMode::Line => {
                let channel_id = non_empty(raw.line_channel_id)
                    .ok_or_else(|| ConfigError("API_AUTH=line needs LINE_CHANNEL_ID".into()))?;
                let channel_secret = non_empty(raw.line_channel_secret);
                let jwks_url = non_empty(raw.line_jwks_url);
                if channel_secret.is_none() && jwks_url.is_none() {
                    return Err(ConfigError(
                        "API_AUTH=line needs LINE_CHANNEL_SECRET (HS256) or LINE_JWKS_URL (ES256)"
                            .into(),
                    ));
                }
                if let Some(url) = &jwks_url {
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        return Err(ConfigError(format!(
                            "LINE_JWKS_URL must be an http(s) URL, got {url:?}"
                        )));
                    }
                }
                Auth::Line(LineConfig {
                    channel_id,
                    channel_secret,
                    jwks_url,
                })
            }
        };
        if !(50..=10_000).contains(&raw.api_poll_interval_ms) {
            return Err(ConfigError(format!(
                "API_POLL_INTERVAL_MS must be between 50 and 10000, got {}",
                raw.api_poll_interval_ms
            )));
        }
        if raw.max_event_streams == 0 {
            return Err(ConfigError("MAX_EVENT_STREAMS must be at least 1".into()));
        }
        Ok(ApiConfig {
            origins,
            auth,
            change_streams,
            poll_interval: Duration::from_millis(raw.api_poll_interval_ms),
            max_event_streams: raw.max_event_streams,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a str, &'a str)> {
        pairs.iter().copied()
    }

    #[test]
    fn defaults_are_open_like_the_original() {
        let config = ApiConfig::from_vars(vars(&[])).unwrap();
        assert_eq!(config.origins, Origins::Any);
        assert!(config.auth == Auth::None);
        assert_eq!(config.change_streams, ChangeStreams::Auto);
    }

    #[test]
    fn event_streams_are_bounded() {
        assert_eq!(
            ApiConfig::from_vars(vars(&[])).unwrap().max_event_streams,
            DEFAULT_MAX_EVENT_STREAMS
        );
        let config = ApiConfig::from_vars(vars(&[("MAX_EVENT_STREAMS", "7")])).unwrap();
        assert_eq!(config.max_event_streams, 7);
        for bad in ["0", "-1", "many"] {
            let error = ApiConfig::from_vars(vars(&[("MAX_EVENT_STREAMS", bad)]))
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(error.to_string().contains("MAX_EVENT_STREAMS"), "{error}");
        }
    }

    #[test]
    fn origins_are_a_list_or_star() {
        let config = ApiConfig::from_vars(vars(&[(
            "CORS_ALLOWED_ORIGINS",
            "https://a.example, http://localhost:3000/",
        )]))
        .unwrap();
        assert_eq!(
            config.origins,
            Origins::List(vec![
                HeaderValue::from_static("https://a.example"),
                HeaderValue::from_static("http://localhost:3000"),
            ])
        );
        for bad in ["", "a.example", "https://a.example/path", "ftp://x"] {
            let error = ApiConfig::from_vars(vars(&[("CORS_ALLOWED_ORIGINS", bad)]))
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(
                error.to_string().contains("CORS_ALLOWED_ORIGINS"),
                "{error}"
            );
        }
    }

    #[test]
    fn each_auth_mode_needs_its_settings() {
        for (given, named) in [
            (&[("API_AUTH", "token")][..], "API_TOKEN"),
            (
                &[("API_AUTH", "token"), ("API_TOKEN", "short")],
                "at least 16",
            ),
            (&[("API_AUTH", "line")], "LINE_CHANNEL_ID"),
            (
                &[("API_AUTH", "line"), ("LINE_CHANNEL_ID", "1")],
                "LINE_CHANNEL_SECRET",
            ),
            (&[("API_AUTH", "sometimes")], "API_AUTH"),
        ] {
            let error = ApiConfig::from_vars(vars(given)).err().unwrap();
            assert!(error.to_string().contains(named), "{given:?}: {error}");
        }
        let ok = ApiConfig::from_vars(vars(&[
            ("API_AUTH", "line"),
            ("LINE_CHANNEL_ID", "1657000000"),
            ("LINE_CHANNEL_SECRET", "s3cret-s3cret"),
        ]))
        .unwrap();
        assert!(!format!("{ok:?}").contains("s3cret"));
        let ok = ApiConfig::from_vars(vars(&[
            ("API_AUTH", "token"),
            ("API_TOKEN", "0123456789abcdef-token"),
        ]))
        .unwrap();
        assert!(!format!("{ok:?}").contains("0123456789abcdef"));
    }
}
