//! Configuration from the environment, read once at start-up with envy.
//!
//! Each function reads the sections it needs; a missing or malformed variable becomes
//! one [`ConfigError`] line that names the variable.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// Reads one section from the process environment.
pub fn from_env<T: DeserializeOwned>() -> Result<T, ConfigError> {
    from_iter(std::env::vars())
}

/// Reads one section from the given variables (tests pass their own).
pub fn from_iter<T: DeserializeOwned>(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    envy::from_iter(vars).map_err(|error| ConfigError(describe(error)))
}

fn describe(error: envy::Error) -> String {
    match error {
        envy::Error::MissingValue(name) => {
            format!("{} is required but not set", name.to_uppercase())
        }
        envy::Error::Custom(message) => message,
    }
}

fn default_port() -> u16 {
    8080
}

fn default_header_read_timeout() -> f64 {
    10.0
}

fn default_body_read_timeout() -> f64 {
    30.0
}

fn default_idle_timeout() -> f64 {
    60.0
}

/// What an instance with Terraform's defaults (concurrency 80, 256 MiB) is given; see
/// [`ConnectionLimits`] for how Terraform derives it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 176;

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

/// The HTTP side of a function.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerConfig {
    /// Listen port; Cloud Run sets `PORT`.
    #[serde(default = "default_port")]
    pub port: u16,
    /// From a new connection, or the first byte of a request on a kept-alive one, to the
    /// end of the request head.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_seconds: f64,
    /// From the first read of a request body to its end; past it the answer is 408.
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout_seconds: f64,
    /// How long a kept-alive connection may wait for its next request, and a response
    /// may wait for the client to take more of it.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: f64,
    /// Open connections per instance; past it a new one is answered 503 at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

/// The deadlines and the bound every connection of a function is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs_f64(default_header_read_timeout()),
            body_read_timeout: Duration::from_secs_f64(default_body_read_timeout()),
            idle_timeout: Duration::from_secs_f64(default_idle_timeout()),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// An hour is longer than any request Cloud Run lets through (its longest timeout).
const MAX_DEADLINE_SECONDS: f64 = 3600.0;

fn deadline(name: &str, seconds: f64) -> Result<Duration, ConfigError> {
    if seconds > 0.0 && seconds <= MAX_DEADLINE_SECONDS {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(ConfigError(format!(
            "{name} must be more than 0 and at most {MAX_DEADLINE_SECONDS}, got {seconds}"
        )))
    }
}

impl ServerConfig {
    /// Reads the section and checks what envy cannot.
    pub fn from_env() -> Result<Self, ConfigError> {
        let config: Self = from_env()?;
        config.limits()?;
        Ok(config)
    }

    pub fn limits(&self) -> Result<ConnectionLimits, ConfigError> {
        let limits = ConnectionLimits {
            header_read_timeout: deadline(
                "HEADER_READ_TIMEOUT_SECONDS",
                self.header_read_timeout_seconds,
            )?,
            body_read_timeout: deadline(
                "BODY_READ_TIMEOUT_SECONDS",
                self.body_read_timeout_seconds,
            )?,
            idle_timeout: deadline("IDLE_TIMEOUT_SECONDS", self.idle_timeout_seconds)?,
            max_connections: self.max_connections,
        };
        if limits.max_connections == 0 {
            return Err(ConfigError("MAX_CONNECTIONS must be at least 1".into()));
        }
        // A kept-alive connection waits for its next request's first byte for the idle
        // timeout; hyper's own timer, which bounds that wait, also runs while the head
        // arrives, so a shorter idle timeout would cut heads the header timeout allows.
        if limits.idle_timeout < limits.header_read_timeout {
            return Err(ConfigError(format!(
                "IDLE_TIMEOUT_SECONDS ({}) must not be shorter than HEADER_READ_TIMEOUT_SECONDS ({})",
                self.idle_timeout_seconds, self.header_read_timeout_seconds
            )));
        }
        Ok(limits)
    }
}

fn default_mongo_uri() -> String {
    "mongodb://127.0.0.1:27017".into()
}

fn default_database() -> String {
    "mansion_watch".into()
}

fn default_collection() -> String {
    "job_traces".into()
}

fn default_timeout_seconds() -> f64 {
    5.0
}

/// How the store writes a change (`STORE_WRITE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum StoreWrite {
    /// One update pipeline with upsert: the rules run inside the database, one command
    /// per push. MongoDB and SecantusDB run it; no service promises it.
    #[default]
    Pipeline,
    /// Read, apply the rules in Rust, write back conditioned on the revision read: only
    /// `find`, `insert` and `update` with `$set`, which every MongoDB-compatible service
    /// (Firestore, DocumentDB, Cosmos DB) supports. Two commands per uncontended push.
    Cas,
}

impl StoreWrite {
    pub const ALL: [StoreWrite; 2] = [StoreWrite::Pipeline, StoreWrite::Cas];

    pub fn as_str(self) -> &'static str {
        match self {
            StoreWrite::Pipeline => "pipeline",
            StoreWrite::Cas => "cas",
        }
    }
}

/// envy's own message for an unknown variant would not name the variable.
impl TryFrom<String> for StoreWrite {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        StoreWrite::ALL
            .into_iter()
            .find(|write| write.as_str() == value)
            .ok_or_else(|| {
                let value: String = value.chars().take(32).collect();
                format!("STORE_WRITE must be pipeline or cas, got {value:?}")
            })
    }
}

/// Where the traces live.
#[derive(Clone, Deserialize)]
pub struct DatabaseConfig {
    #[serde(default = "default_mongo_uri")]
    pub mongo_uri: String,
    #[serde(default = "default_database")]
    pub mongo_database: String,
    #[serde(default = "default_collection")]
    pub collection_job_traces: String,
    /// Create the seed's index set at start-up (MongoDB; Terraform owns Firestore's).
    #[serde(default)]
    pub ensure_indexes: bool,
    /// Bound on every database call; well under the subscriptions' ack deadline.
    #[serde(default = "default_timeout_seconds")]
    pub db_timeout_seconds: f64,
    #[serde(default)]
    pub store_write: StoreWrite,
}

impl DatabaseConfig {
    pub fn timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.db_timeout_seconds)
            .ok()
            .filter(|timeout| !timeout.is_zero())
            .unwrap_or(Duration::from_secs(5))
    }

    /// Reads the section and checks what envy cannot.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::checked(from_env()?)
    }

    pub fn checked(config: Self) -> Result<Self, ConfigError> {
        if !(config.db_timeout_seconds > 0.0 && config.db_timeout_seconds <= 60.0) {
            return Err(ConfigError(format!(
                "DB_TIMEOUT_SECONDS must be between 0 and 60, got {}",
                config.db_timeout_seconds
            )));
        }
        if config.mongo_database.is_empty() || config.collection_job_traces.is_empty() {
            return Err(ConfigError(
                "MONGO_DATABASE and COLLECTION_JOB_TRACES must not be empty".into(),
            ));
        }
        Ok(config)
    }
}

/// The connection string can carry a password: never print it.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("mongo_uri", &"<redacted>")
            .field("mongo_database", &self.mongo_database)
            .field("collection_job_traces", &self.collection_job_traces)
            .field("ensure_indexes", &self.ensure_indexes)
            .field("db_timeout_seconds", &self.db_timeout_seconds)
            .field("store_write", &self.store_write)
            .finish()
    }
}

/// Variables as `from_iter` and the functions' `from_vars` take them, from borrowed pairs:
/// what a test or a tool that checks a configuration builds.
pub fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let db: DatabaseConfig = from_iter(vars(&[])).unwrap();
        assert_eq!(db.mongo_uri, "mongodb://127.0.0.1:27017");
        assert_eq!(db.mongo_database, "mansion_watch");
        assert_eq!(db.collection_job_traces, "job_traces");
        assert!(!db.ensure_indexes);
        assert_eq!(db.timeout(), Duration::from_secs(5));
        assert_eq!(db.store_write, StoreWrite::Pipeline);
        let server: ServerConfig = from_iter(vars(&[])).unwrap();
        assert_eq!(server.port, 8080);
        assert_eq!(server.limits().unwrap(), ConnectionLimits::default());
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let error = from_iter::<ServerConfig>(vars(&[("PORT", "eighty")])).unwrap_err();
        assert!(error.to_string().contains("PORT"), "{error}");
        let error = from_iter::<DatabaseConfig>(vars(&[("ENSURE_INDEXES", "maybe")])).unwrap_err();
        assert!(error.to_string().contains("ENSURE_INDEXES"), "{error}");
        let config = from_iter::<DatabaseConfig>(vars(&[("DB_TIMEOUT_SECONDS", "-1")])).unwrap();
        let error = DatabaseConfig::checked(config).unwrap_err();
        assert!(error.to_string().contains("DB_TIMEOUT_SECONDS"), "{error}");
    }

    #[test]
    fn connection_limits_are_read_and_checked() {
        let server: ServerConfig = from_iter(vars(&[
            ("HEADER_READ_TIMEOUT_SECONDS", "0.5"),
            ("BODY_READ_TIMEOUT_SECONDS", "2"),
            ("IDLE_TIMEOUT_SECONDS", "3"),
            ("MAX_CONNECTIONS", "40"),
        ]))
        .unwrap();
        assert_eq!(
            server.limits().unwrap(),
            ConnectionLimits {
                header_read_timeout: Duration::from_millis(500),
                body_read_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(3),
                max_connections: 40,
            }
        );
        for (name, value) in [
            ("HEADER_READ_TIMEOUT_SECONDS", "0"),
            ("BODY_READ_TIMEOUT_SECONDS", "-1"),
            ("IDLE_TIMEOUT_SECONDS", "7200"),
            ("MAX_CONNECTIONS", "0"),
            ("IDLE_TIMEOUT_SECONDS", "5"),
        ] {
            let mut given = vec![(name, value)];
            if value == "5" {
                given.push(("HEADER_READ_TIMEOUT_SECONDS", "6"));
            }
            let server: ServerConfig = from_iter(vars(&given)).unwrap();
            let error = server.limits().unwrap_err();
            assert!(error.to_string().contains(name), "{name}={value}: {error}");
        }
        let error = from_iter::<ServerConfig>(vars(&[("MAX_CONNECTIONS", "-3")])).unwrap_err();
        assert!(error.to_string().contains("MAX_CONNECTIONS"), "{error}");
    }

    #[test]
    fn the_write_strategy_is_pipeline_or_cas() {
        let cas: DatabaseConfig = from_iter(vars(&[("STORE_WRITE", "cas")])).unwrap();
        assert_eq!(cas.store_write, StoreWrite::Cas);
        let pipeline: DatabaseConfig = from_iter(vars(&[("STORE_WRITE", "pipeline")])).unwrap();
        assert_eq!(pipeline.store_write, StoreWrite::Pipeline);
        let error = from_iter::<DatabaseConfig>(vars(&[("STORE_WRITE", "upsert")])).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("STORE_WRITE")
                && text.contains("upsert")
                && text.contains("pipeline")
                && text.contains("cas"),
            "{text}"
        );
    }

    #[test]
    fn debug_output_hides_the_connection_string() {
        let db: DatabaseConfig =
            from_iter(vars(&[("MONGO_URI", "mongodb://user:secret@host")])).unwrap();
        assert!(!format!("{db:?}").contains("secret"));
    }
}
