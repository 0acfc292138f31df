//! trace-writer's own configuration: how pushes are authenticated, and how much memory
//! the pushes in flight may hold together.

use std::time::Duration;

use job_trace::config::{from_iter, ConfigError};
use job_trace::oidc::{OidcConfig, GOOGLE_JWKS_URL};
use job_trace::push::PUSH_MEMORY_BUDGET_BYTES;
use job_trace::request::checked_project;
use serde::Deserialize;

/// How `POST /` authenticates its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushAuth {
    /// Google-signed OIDC tokens (production).
    Oidc(OidcConfig),
    /// No authentication: local runs and the Pub/Sub emulator only.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterConfig {
    pub auth: PushAuth,
    /// `GOOGLE_CLOUD_PROJECT`: names the Cloud Trace of correlated log lines.
    pub trace_project: Option<String>,
    /// `PUSH_MEMORY_MIB`: what the pushes in flight may hold together; a push that
    /// would go over it waits (see [`crate::app`]).
    pub push_memory_bytes: usize,
    /// `COMPLETIONS_TOPIC`: where completion notifications go; none without it.
    pub completions: Option<CompletionsTarget>,
}

/// Where completion notifications are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionsTarget {
    /// `projects/P/topics/T`.
    pub topic: String,
    /// `PUBSUB_EMULATOR_HOST` (`host:port`): the emulator, without credentials.
    pub emulator_host: Option<String>,
}

impl CompletionsTarget {
    /// Checks `topic` is a full topic path, so that a typo is refused at start-up rather
    /// than answered 503 on every terminal push.
    pub fn new(topic: &str, emulator_host: Option<String>) -> Result<Self, ConfigError> {
        let topic = topic.trim();
        let valid = matches!(
            topic.split('/').collect::<Vec<_>>().as_slice(),
            ["projects", project, "topics", name] if !project.is_empty() && !name.is_empty()
        );
        if !valid {
            return Err(ConfigError(format!(
                "COMPLETIONS_TOPIC must be a topic path projects/PROJECT/topics/TOPIC, got {:?}",
                topic.chars().take(200).collect::<String>()
            )));
        }
        Ok(CompletionsTarget {
            topic: topic.to_owned(),
            emulator_host: emulator_host
                .map(|host| host.trim().to_owned())
                .filter(|host| !host.is_empty()),
        })
    }
}

const MIB: usize = 1024 * 1024;
/// What the process holds besides its pushes: code, runtime, the database pool, idle
/// connections. Measured idle it is under 20 MiB; the rest is headroom.
pub const WRITER_RESERVED_BYTES: usize = 64 * MIB;
/// The container memory assumed when the process cannot read its own limit: Terraform's
/// default `memory` (256Mi).
pub const ASSUMED_CONTAINER_BYTES: usize = 256 * MIB;

/// The memory limit of the container this process runs in (cgroup v2, then v1), when it
/// has one.
fn container_memory_bytes() -> Option<usize> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| {
        std::fs::read_to_string(path)
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    })
    // cgroup v1 writes "no limit" as a number near i64::MAX.
    .filter(|&bytes| bytes < 1 << 50)
    .and_then(|bytes| usize::try_from(bytes).ok())
}

/// Pushes get what the container leaves after [`WRITER_RESERVED_BYTES`], and never less
/// than one push of the largest size, which must always be able to pass.
pub fn default_push_memory(container_bytes: Option<usize>) -> usize {
    container_bytes
        .unwrap_or(ASSUMED_CONTAINER_BYTES)
        .saturating_sub(WRITER_RESERVED_BYTES)
        .max(PUSH_MEMORY_BUDGET_BYTES)
}

fn default_auth() -> String {
    "oidc".into()
}

fn default_jwks_url() -> String {
    GOOGLE_JWKS_URL.into()
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default = "default_auth")]
    push_auth: String,
    push_audience: Option<String>,
    push_service_accounts: Option<String>,
    #[serde(default = "default_jwks_url")]
    google_jwks_url: String,
    google_cloud_project: Option<String>,
    gcp_project: Option<String>,
    push_memory_mib: Option<String>,
    completions_topic: Option<String>,
    pubsub_emulator_host: Option<String>,
}

impl WriterConfig {
    /// No authentication (tests and local runs).
    pub fn unauthenticated() -> Self {
        WriterConfig {
            auth: PushAuth::None,
            trace_project: None,
            push_memory_bytes: default_push_memory(container_memory_bytes()),
            completions: None,
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads and checks the section; every refusal names its variable.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let raw: Raw = from_iter(vars)?;
        let auth = match raw.push_auth.trim().to_ascii_lowercase().as_str() {
            "none" => PushAuth::None,
            "oidc" => {
                let audience = raw
                    .push_audience
                    .map(|audience| audience.trim().to_owned())
                    .filter(|audience| !audience.is_empty())
                    .ok_or_else(|| {
                        ConfigError(
                            "PUSH_AUDIENCE is required with PUSH_AUTH=oidc (the audience of the \
                             push subscription's OIDC token)"
                                .into(),
                        )
                    })?;
                let accounts: Vec<String> = raw
                    .push_service_accounts
                    .unwrap_or_default()
                    .split(',')
                    .map(|email| email.trim().to_owned())
                    .filter(|email| !email.is_empty())
                    .collect();
                if accounts.is_empty() {
                    return Err(ConfigError(
                        "PUSH_SERVICE_ACCOUNTS is required with PUSH_AUTH=oidc (comma-separated \
                         service account emails allowed to push)"
                            .into(),
                    ));
                }
                if let Some(bad) = accounts.iter().find(|email| !email.contains('@')) {
                    return Err(ConfigError(format!(
                        "PUSH_SERVICE_ACCOUNTS must list emails; {bad:?} is not one"
                    )));
                }
                let jwks_url = raw.google_jwks_url.trim().to_owned();
                if !(jwks_url.starts_with("https://") || jwks_url.starts_with("http://")) {
                    return Err(ConfigError(format!(
                        "GOOGLE_JWKS_URL must be an http(s) URL, got {jwks_url:?}"
                    )));
                }
                PushAuth::Oidc(OidcConfig {
                    audience,
                    service_accounts: accounts,
                    jwks_url,
                    min_refresh: Duration::from_secs(30),
                })
            }
            other => {
                return Err(ConfigError(format!(
                    "PUSH_AUTH must be oidc or none, got {other:?}"
                )))
            }
        };
        let trace_project = raw
            .google_cloud_project
            .or(raw.gcp_project)
            .and_then(|project| checked_project(&project));
        let push_memory_bytes = match raw.push_memory_mib.as_deref().map(str::trim) {
            None | Some("") => default_push_memory(container_memory_bytes()),
            Some(mib) => mib
                .parse::<usize>()
                .ok()
                .and_then(|mib| mib.checked_mul(MIB))
                .filter(|&bytes| bytes >= PUSH_MEMORY_BUDGET_BYTES)
                .ok_or_else(|| {
                    ConfigError(format!(
                        "PUSH_MEMORY_MIB must be a whole number of MiB, at least {} (one push \
                         of the largest size), got {mib:?}",
                        PUSH_MEMORY_BUDGET_BYTES.div_ceil(MIB)
                    ))
                })?,
        };
        let completions = match raw.completions_topic.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(topic) => Some(CompletionsTarget::new(topic, raw.pubsub_emulator_host)?),
        };
        Ok(WriterConfig {
            auth,
            trace_project,
            push_memory_bytes,
            completions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use job_trace::config::vars;

    #[test]
    fn oidc_is_the_default_and_needs_audience_and_accounts() {
        let error = WriterConfig::from_vars(vars(&[])).unwrap_err();
        assert!(error.to_string().contains("PUSH_AUDIENCE"), "{error}");
        let error =
            WriterConfig::from_vars(vars(&[("PUSH_AUDIENCE", "trace-writer")])).unwrap_err();
        assert!(
            error.to_string().contains("PUSH_SERVICE_ACCOUNTS"),
            "{error}"
        );
        let error = WriterConfig::from_vars(vars(&[
            ("PUSH_AUDIENCE", "trace-writer"),
            ("PUSH_SERVICE_ACCOUNTS", " , "),
        ]))
        .unwrap_err();
        assert!(
            error.to_string().contains("PUSH_SERVICE_ACCOUNTS"),
            "{error}"
        );

        let config = WriterConfig::from_vars(vars(&[
            ("PUSH_AUDIENCE", "trace-writer"),
            (
                "PUSH_SERVICE_ACCOUNTS",
                "push@p.iam.gserviceaccount.com, other@p.iam.gserviceaccount.com",
            ),
        ]))
        .unwrap();
        let PushAuth::Oidc(oidc) = config.auth else {
            panic!("oidc expected");
        };
        assert_eq!(oidc.audience, "trace-writer");
        assert_eq!(
            oidc.service_accounts,
            [
                "push@p.iam.gserviceaccount.com",
                "other@p.iam.gserviceaccount.com"
            ]
        );
        assert_eq!(oidc.jwks_url, GOOGLE_JWKS_URL);
    }

    #[test]
    fn none_needs_nothing_and_junk_is_named() {
        assert_eq!(
            WriterConfig::from_vars(vars(&[("PUSH_AUTH", "none")])).unwrap(),
            WriterConfig::unauthenticated()
        );
        let error = WriterConfig::from_vars(vars(&[("PUSH_AUTH", "maybe")])).unwrap_err();
        assert!(error.to_string().contains("PUSH_AUTH"), "{error}");
        let error = WriterConfig::from_vars(vars(&[
            ("PUSH_AUDIENCE", "a"),
            ("PUSH_SERVICE_ACCOUNTS", "x@y"),
            ("GOOGLE_JWKS_URL", "file:///etc/passwd"),
        ]))
        .unwrap_err();
        assert!(error.to_string().contains("GOOGLE_JWKS_URL"), "{error}");
    }

    #[test]
    fn completions_need_a_topic_path_and_may_go_to_the_emulator() {
        let none = vars(&[("PUSH_AUTH", "none")]);
        assert_eq!(WriterConfig::from_vars(none).unwrap().completions, None);
        let config = WriterConfig::from_vars(vars(&[
            ("PUSH_AUTH", "none"),
            ("COMPLETIONS_TOPIC", " projects/p/topics/completions "),
            ("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"),
        ]))
        .unwrap();
        assert_eq!(
            config.completions,
            Some(CompletionsTarget {
                topic: "projects/p/topics/completions".into(),
                emulator_host: Some("127.0.0.1:8085".into()),
            })
        );
        for bad in [
            "completions",
            "projects/p/topics/",
            "projects//topics/t",
            "p/t/x/y",
        ] {
            let error =
                WriterConfig::from_vars(vars(&[("PUSH_AUTH", "none"), ("COMPLETIONS_TOPIC", bad)]))
                    .unwrap_err();
            assert!(error.to_string().contains("COMPLETIONS_TOPIC"), "{error}");
        }
    }

    #[test]
    fn push_memory_is_what_the_container_leaves_or_what_is_set() {
        assert_eq!(
            default_push_memory(Some(256 * MIB)),
            256 * MIB - WRITER_RESERVED_BYTES
        );
        assert_eq!(
            default_push_memory(None),
            ASSUMED_CONTAINER_BYTES - WRITER_RESERVED_BYTES
        );
        // A container too small for one push still lets the largest push through.
        assert_eq!(
            default_push_memory(Some(64 * MIB)),
            PUSH_MEMORY_BUDGET_BYTES
        );

        let config =
            WriterConfig::from_vars(vars(&[("PUSH_AUTH", "none"), ("PUSH_MEMORY_MIB", "512")]))
                .unwrap();
        assert_eq!(config.push_memory_bytes, 512 * MIB);
        for bad in ["lots", "-1", "1"] {
            let error =
                WriterConfig::from_vars(vars(&[("PUSH_AUTH", "none"), ("PUSH_MEMORY_MIB", bad)]))
                    .unwrap_err();
            assert!(error.to_string().contains("PUSH_MEMORY_MIB"), "{error}");
        }
    }
}
