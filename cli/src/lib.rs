//! `jobtrace`: the producer's and the operator's side of job trace from a terminal.
//! Enqueue scrape jobs as the API does, report statuses as a worker does, and follow a
//! trace through trace-api, against the local stack of `make run` or a real project.

pub mod check_backend;
pub mod completions;
pub mod demo;
pub mod messages;
pub mod migrate;
pub mod stored;
pub mod sweep;
pub mod topology;
pub mod transport;
pub mod watch;

/// Why a command could not do its job, in words for the person who ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(String);

impl Failure {
    pub fn new(message: String) -> Self {
        Failure(message)
    }

    pub fn of(error: impl std::fmt::Display) -> Self {
        Failure(error.to_string())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}
