//! `job-trace`: everything the trace functions share. The model and its JSON rendering
//! ([`model`]), the transition rules ([`rules`]), push decoding ([`push`]), the MongoDB
//! store that enforces the rules inside its writes ([`store`]), the index set
//! ([`indexes`]), configuration ([`config`]), logging ([`telemetry`]) and the HTTP shell
//! ([`http`]).

pub mod completions;
pub mod config;
pub mod http;
pub mod ids;
pub mod indexes;
pub mod jwks;
pub mod model;
pub mod oidc;
pub mod push;
pub mod request;
pub mod rules;
pub mod store;
pub mod telemetry;

pub use ids::{LineUserId, MessageId};
pub use model::{JobStatus, JobType, TraceDocument, TraceKey};
pub use rules::Change;
pub use store::TraceStore;
