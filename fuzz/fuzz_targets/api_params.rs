//! trace-api's parameter parsing: arbitrary query strings and path ids, checked the way
//! the status and user routes check them, then rendered as both error styles.
//!
//! Checked: nothing panics; every accepted value is within its documented bounds; an id
//! is accepted exactly when DESIGN.md's rule says so; a query built from known pairs
//! reads back its last value of each; every refusal renders as 422 (FastAPI) or 400
//! (standalone) with a JSON body that names each refused parameter and echoes at most a
//! short cut of its value.

#![no_main]

use arbitrary::Arbitrary;
use job_trace::ids::MAX_ID_BYTES;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use trace_api::error::{ApiError, FieldError, Location, Style};
use trace_api::params::{
    self, Checks, Query, MAX_LIMIT, MAX_QUERY_BYTES, MAX_SKIP, MAX_WAIT_SECONDS,
};

#[derive(Arbitrary, Debug)]
struct Input {
    path_id: Option<String>,
    query: QueryInput,
    user_route: bool,
}

#[derive(Arbitrary, Debug)]
enum QueryInput {
    Raw(String),
    /// Pairs encoded here, with names mostly the API's own.
    Pairs(Vec<(Name, String)>),
}

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Any(String),
}

const NAMES: [&str; 9] = [
    "limit",
    "skip",
    "wait",
    "status",
    "job_type",
    "include",
    "message_id",
    "line_user_id",
    "",
];

impl Name {
    fn render(&self) -> String {
        match self {
            Name::Known(n) => NAMES[usize::from(*n) % NAMES.len()].to_owned(),
            Name::Any(text) => text.clone(),
        }
    }
}

fn valid_id(raw: &str) -> bool {
    !raw.trim().is_empty() && raw.len() <= MAX_ID_BYTES && !raw.chars().any(char::is_control)
}

fn body_of(error: ApiError, style: Style) -> (u16, Value) {
    let response = error.render(style);
    let status = response.status().as_u16();
    let bytes = futures::executor::block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
        .expect("an error body");
    (
        status,
        serde_json::from_slice(&bytes).expect("an error body is JSON"),
    )
}

fn check_rendering(errors: &[FieldError]) {
    let (status, value) = body_of(ApiError::Invalid(errors.to_vec()), Style::FastApi);
    assert_eq!(status, 422);
    let detail = value["detail"].as_array().expect("detail is a list");
    assert_eq!(detail.len(), errors.len());
    for (item, error) in detail.iter().zip(errors) {
        assert_eq!(item["loc"][1], error.name);
        assert_eq!(item["type"], error.kind);
        if let Some(input) = item["input"].as_str() {
            assert!(
                input.chars().count() <= 65,
                "echoed {} chars",
                input.chars().count()
            );
        }
    }
    let (status, value) = body_of(ApiError::Invalid(errors.to_vec()), Style::Standalone);
    assert_eq!(status, 400);
    let text = value["error"].as_str().expect("error is a string");
    for error in errors {
        assert!(text.contains(error.name));
    }
}

fuzz_target!(|input: Input| {
    let (raw, pairs) = match &input.query {
        QueryInput::Raw(raw) => (raw.clone(), None),
        QueryInput::Pairs(pairs) => {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(name, value)| (name.render(), value.clone()))
                .collect();
            (
                serde_urlencoded::to_string(&pairs).expect("pairs encode"),
                Some(pairs),
            )
        }
    };

    let mut checks = Checks::default();
    let query = match Query::parse(Some(&raw)) {
        Ok(query) => {
            assert!(raw.len() <= MAX_QUERY_BYTES);
            query
        }
        Err(error) => {
            assert!(
                raw.len() > MAX_QUERY_BYTES && error.bytes == raw.len(),
                "refused a short query: {error:?}"
            );
            Query::default()
        }
    };
    if let (Some(pairs), true) = (&pairs, raw.len() <= MAX_QUERY_BYTES) {
        for (name, _) in pairs {
            let last = pairs
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str());
            assert_eq!(query.last(name), last, "{name:?} in {raw:?}");
            assert_eq!(
                query.all(name).count(),
                pairs.iter().filter(|(n, _)| n == name).count()
            );
        }
    }

    let (location, id_name, id) = if input.user_route {
        (Location::Path, "line_user_id", input.path_id.clone())
    } else if input.path_id.is_some() {
        (Location::Path, "message_id", input.path_id.clone())
    } else {
        (
            Location::Query,
            "message_id",
            query.last("message_id").map(str::to_owned),
        )
    };
    let accepted = if id_name == "line_user_id" {
        params::line_user_id(location, id.as_deref()).map(|id| id.as_str().to_owned())
    } else {
        params::message_id(location, id.as_deref()).map(|id| id.as_str().to_owned())
    };
    match (&accepted, &id) {
        (Ok(kept), Some(raw)) => {
            assert!(valid_id(raw), "accepted {raw:?}");
            assert_eq!(kept, raw, "an id is kept as sent");
        }
        (Ok(_), None) => panic!("a missing id was accepted"),
        (Err(error), raw) => {
            assert!(
                raw.as_deref().is_none_or(|raw| !valid_id(raw)),
                "refused {raw:?}"
            );
            assert_eq!(error.name, id_name);
        }
    }
    checks.take(accepted);

    if let Some(limit) = checks.take(params::limit(&query)) {
        assert!((1..=MAX_LIMIT).contains(&limit));
    }
    if let Some(skip) = checks.take(params::skip(&query)) {
        assert!(skip <= MAX_SKIP);
    }
    if let Some(wait) = checks.take(params::wait(&query)) {
        assert!(wait.as_secs() <= MAX_WAIT_SECONDS && wait.subsec_nanos() == 0);
    }
    if let Some(statuses) = checks.take(params::statuses(&query)) {
        for (n, status) in statuses.iter().enumerate() {
            assert!(!statuses[..n].contains(status), "a status listed twice");
        }
    }
    checks.take(params::job_type(&query));
    checks.take(params::include_history(&query));

    if let Err(errors) = checks.finish() {
        check_rendering(&errors);
    }
});
