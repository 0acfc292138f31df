//! A store on a scratch collection of its own, for `jobtrace check-backend`: it tries
//! every database feature the functions rely on where no trace lives, and removes the
//! collection afterwards.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{StoreError, StoreWrite, TraceStore};
use crate::config::DatabaseConfig;

pub struct Scratch {
    store: TraceStore,
    name: String,
}

impl Scratch {
    /// A store on `jobtrace_check_<random>` in `config`'s database (never `config`'s
    /// collection). Creates nothing yet: the first write does.
    pub async fn create(config: &DatabaseConfig) -> Result<Scratch, StoreError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let name = format!("jobtrace_check_{}_{nanos:x}", std::process::id());
        assert_ne!(name, config.collection_job_traces);
        let config = DatabaseConfig {
            collection_job_traces: name.clone(),
            ..config.clone()
        };
        Ok(Scratch {
            store: TraceStore::connect(&config).await?,
            name,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The scratch store, writing with `write`.
    pub fn store(&self, write: StoreWrite) -> TraceStore {
        self.store.with_strategy(write)
    }

    /// Drops the scratch collection.
    pub async fn remove(self) -> Result<(), StoreError> {
        self.store
            .bounded(async {
                self.store.traces.drop().await?;
                Ok(())
            })
            .await
    }
}

impl Scratch {
    /// How many documents trace `message_id` has in the scratch collection (more than
    /// one would mean the unique index did not hold).
    pub async fn count(&self, message_id: &crate::ids::MessageId) -> Result<u64, StoreError> {
        self.store
            .bounded(async {
                Ok(self
                    .store
                    .traces
                    .count_documents(TraceStore::filter_of(message_id))
                    .await?)
            })
            .await
    }
}
