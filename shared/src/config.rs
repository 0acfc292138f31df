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

/// The HTTP side of a function.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerConfig {
    /// Listen port; Cloud Run sets `PORT`.
    #[serde(default = "default_port")]
    pub port: u16,
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
