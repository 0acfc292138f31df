//! What every handler shares.

use std::sync::Arc;

use job_trace::TraceStore;

use crate::auth::Authenticator;
use crate::config::ApiConfig;
use crate::watch::Watcher;

#[derive(Clone)]
pub struct AppState {
    pub store: TraceStore,
    pub watcher: Watcher,
    pub auth: Arc<Authenticator>,
}

impl AppState {
    pub fn new(store: TraceStore, config: &ApiConfig) -> Self {
        AppState {
            watcher: Watcher::new(
                store.clone(),
                config.change_streams,
                config.poll_interval,
                config.max_event_streams,
            ),
            auth: Arc::new(Authenticator::new(&config.auth)),
            store,
        }
    }
}
