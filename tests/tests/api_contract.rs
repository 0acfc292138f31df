//! trace-api's seed contract against a real SecantusDB: whole bodies for a trace built
//! from the fixtures, both path styles, pagination edges, filters, URL-decoded ids and
//! both error styles.

mod api_common;

use api_common::*;
use job_trace::model::{JobStatus, JobType};
use job_trace_tests::fixture_json;
use serde_json::{json, Value};
use trace_api::ApiConfig;

const SEED_FIELDS: [&str; 12] = [
    "id",
    "message_id",
    "status",
    "url",
    "line_user_id",
    "check_only",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
    "error",
    "result",
];

/// The top-level keys of a JSON object text, in order.
fn key_order(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut depth = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            '"' => {
                let start = i + 1;
                let mut end = start;
                while let Some((j, c)) = chars.next() {
                    if c == '\\' {
                        chars.next();
                    } else if c == '"' {
                        end = j;
                        break;
                    }
                }
                let is_key = chars
                    .clone()
                    .find(|(_, c)| !c.is_whitespace())
                    .is_some_and(|(_, c)| c == ':');
                if depth == 1 && is_key {
                    keys.push(text[start..end].to_owned());
                }
            }
            _ => {}
        }
    }
    keys
}

fn is_object_id_hex(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|id| id.len() == 24 && id.chars().all(|c| c.is_ascii_hexdigit()))
}

#[tokio::test]
async fn the_fixture_trace_renders_exactly_as_the_seed_example_in_both_styles() {
    let api = Api::start("api_seed", ApiConfig::default()).await;
    apply_all(&api.store, &seed_example_changes()).await;
    let expected = fixture_json("seed-status-response.json");

    for path in [
        "/api/v1/jobs/status/1234567890",
        "/job/status?message_id=1234567890",
    ] {
        let response = api.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], "application/json", "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        assert!(headers.contains_key("etag"), "{path}");
        let text = response.text().await.unwrap();
        assert_eq!(key_order(&text), SEED_FIELDS, "{path}: field order");
        let mut body: Value = serde_json::from_str(&text).unwrap();
        assert!(is_object_id_hex(&body["id"]), "{path}: id {}", body["id"]);
        body["id"] = expected["id"].clone();
        assert_eq!(body, expected, "{path}");
    }
}

#[tokio::test]
async fn the_user_list_has_the_seed_shape_in_both_styles() {
    let api = Api::start("api_list_shape", ApiConfig::default()).await;
    apply_all(&api.store, &seed_example_changes()).await;
    let (_, single) = api.json("/api/v1/jobs/status/1234567890").await;

    for path in [
        "/api/v1/jobs/user/U1234567890abcdef",
        "/job/user?line_user_id=U1234567890abcdef",
    ] {
        let response = api.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        let text = response.text().await.unwrap();
        assert_eq!(
            key_order(&text),
            ["jobs", "total_count", "limit", "skip"],
            "{path}"
        );
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            body,
            json!({ "jobs": [single.clone()], "total_count": 1, "limit": 50, "skip": 0 }),
            "{path}"
        );
    }
    // An unknown user has no jobs: an empty page, not an error.
    let (status, body) = api.json("/api/v1/jobs/user/Unobody").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({ "jobs": [], "total_count": 0, "limit": 50, "skip": 0 })
    );
}

/// Five jobs of one user, created one second apart: j0 oldest … j4 newest.
async fn five_jobs(api: &Api, user: &str) {
    for n in 0..5 {
        let job_type = if n % 2 == 0 {
            JobType::PropertyScrape
        } else {
            JobType::BatchCheck
        };
        let id = format!("{user}-j{n}");
        let mut changes = vec![queued(&id, user, job_type, n)];
        match n {
            1 => changes.push(event(&id, JobStatus::Processing, n + 1)),
            2 => changes.push(event(&id, JobStatus::Success, n + 1)),
            3 => changes.push(event(&id, JobStatus::Failed, n + 1)),
            4 => changes.push(event(&id, JobStatus::NotFound, n + 1)),
            _ => {}
        }
        apply_all(&api.store, &changes).await;
    }
}

fn ids(body: &Value) -> Vec<String> {
    body["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|job| job["message_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn pages_are_newest_first_with_limit_and_skip_at_their_edges() {
    let api = Api::start("api_pages", ApiConfig::default()).await;
    five_jobs(&api, "Upager").await;
    for prefix in [
        "/api/v1/jobs/user/Upager?",
        "/job/user?line_user_id=Upager&",
    ] {
        let page = |query: &'static str| {
            let api = &api;
            async move {
                let (status, body) = api.json(&format!("{prefix}{query}")).await;
                assert_eq!(status, 200, "{prefix}{query}: {body}");
                body
            }
        };
        let all = page("").await;
        assert_eq!(
            ids(&all),
            [
                "Upager-j4",
                "Upager-j3",
                "Upager-j2",
                "Upager-j1",
                "Upager-j0"
            ]
        );
        assert_eq!(
            (all["limit"].clone(), all["skip"].clone()),
            (json!(50), json!(0))
        );

        let body = page("limit=2&skip=1").await;
        assert_eq!(ids(&body), ["Upager-j3", "Upager-j2"]);
        assert_eq!(body["total_count"], 5);
        assert_eq!(
            (body["limit"].clone(), body["skip"].clone()),
            (json!(2), json!(1))
        );

        let body = page("limit=1").await;
        assert_eq!(ids(&body), ["Upager-j4"]);
        assert_eq!(body["total_count"], 5);

        let body = page("limit=100").await;
        assert_eq!(ids(&body).len(), 5);
        assert_eq!(body["limit"], 100);

        let body = page("skip=4").await;
        assert_eq!(ids(&body), ["Upager-j0"]);

        for past in ["skip=5", "skip=1000", "skip=1000000"] {
            let body = page(past).await;
            assert_eq!(ids(&body), Vec::<String>::new(), "{past}");
            assert_eq!(body["total_count"], 5, "{past}");
        }
    }
}

#[tokio::test]
async fn bad_limits_and_skips_are_422_in_fastapi_style_and_400_standalone() {
    let api = Api::start("api_bad_pages", ApiConfig::default()).await;
    let cases = [
        ("limit=0", "limit", "greater_than_equal"),
        ("limit=101", "limit", "less_than_equal"),
        ("limit=abc", "limit", "int_parsing"),
        ("limit=1.5", "limit", "int_parsing"),
        ("limit=", "limit", "int_parsing"),
        ("limit=99999999999999999999999", "limit", "less_than_equal"),
        ("skip=-1", "skip", "greater_than_equal"),
        ("skip=abc", "skip", "int_parsing"),
        ("skip=1000001", "skip", "less_than_equal"),
    ];
    for (query, name, kind) in cases {
        let (status, body) = api.json(&format!("/api/v1/jobs/user/U1?{query}")).await;
        assert_eq!(status, 422, "{query}: {body}");
        let detail = body["detail"].as_array().expect("a detail list");
        assert_eq!(detail.len(), 1, "{query}: {body}");
        assert_eq!(detail[0]["loc"], json!(["query", name]), "{query}");
        assert_eq!(detail[0]["type"], kind, "{query}");
        assert!(detail[0]["msg"].as_str().is_some_and(|m| !m.is_empty()));

        let (status, body) = api
            .json(&format!("/job/user?line_user_id=U1&{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        let error = body["error"].as_str().expect("an error text");
        assert!(error.contains(name), "{query}: {error}");
    }
    // Every mistake at once.
    let (status, body) = api
        .json("/api/v1/jobs/user/U1?limit=0&skip=-1&status=done")
        .await;
    assert_eq!(status, 422);
    let locs: Vec<Value> = body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["loc"].clone())
        .collect();
    assert_eq!(
        locs,
        [
            json!(["query", "limit"]),
            json!(["query", "skip"]),
            json!(["query", "status"])
        ]
    );
}

#[tokio::test]
async fn status_and_job_type_filter_the_list() {
    let api = Api::start("api_filters", ApiConfig::default()).await;
    five_jobs(&api, "Ufilter").await;
    let cases: [(&str, &[&str]); 7] = [
        ("status=success", &["Ufilter-j2"]),
        ("status=failed,not_found", &["Ufilter-j4", "Ufilter-j3"]),
        ("status=failed&status=queued", &["Ufilter-j3", "Ufilter-j0"]),
        ("status=processing%2Csuccess", &["Ufilter-j2", "Ufilter-j1"]),
        ("job_type=batch_check", &["Ufilter-j3", "Ufilter-j1"]),
        (
            "job_type=property_scrape",
            &["Ufilter-j4", "Ufilter-j2", "Ufilter-j0"],
        ),
        (
            "job_type=property_scrape&status=not_found,queued&limit=1",
            &["Ufilter-j4"],
        ),
    ];
    for (query, expected) in cases {
        for prefix in [
            "/api/v1/jobs/user/Ufilter?",
            "/job/user?line_user_id=Ufilter&",
        ] {
            let (status, body) = api.json(&format!("{prefix}{query}")).await;
            assert_eq!(status, 200, "{prefix}{query}: {body}");
            assert_eq!(ids(&body), expected, "{prefix}{query}");
        }
    }
    let (_, body) = api
        .json("/api/v1/jobs/user/Ufilter?job_type=property_scrape&status=not_found,queued&limit=1")
        .await;
    assert_eq!(body["total_count"], 2, "the total counts the filtered jobs");

    for query in ["status=done", "status=success,", "job_type=scrape"] {
        let name = query.split('=').next().unwrap();
        let (status, body) = api
            .json(&format!("/api/v1/jobs/user/Ufilter?{query}"))
            .await;
        assert_eq!(status, 422, "{query}");
        assert_eq!(body["detail"][0]["loc"], json!(["query", name]));
        let (status, body) = api
            .json(&format!("/job/user?line_user_id=Ufilter&{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
    }
}

#[tokio::test]
async fn ids_are_url_decoded_in_both_styles() {
    let api = Api::start("api_encoded", ApiConfig::default()).await;
    let user = "U ユーザー/1";
    let ids = [
        "id with spaces",
        "a/b/c",
        "物件-1",
        "a+b&c=d",
        "100%",
        "events",
        "x/events",
    ];
    for (n, id) in ids.iter().enumerate() {
        apply_all(
            &api.store,
            &[queued(id, user, JobType::PropertyScrape, n as i64)],
        )
        .await;
    }
    for id in ids {
        for path in [
            format!("/api/v1/jobs/status/{}", encode(id)),
            format!("/job/status?message_id={}", encode(id)),
        ] {
            let (status, body) = api.json(&path).await;
            assert_eq!(status, 200, "{path}: {body}");
            assert_eq!(body["message_id"], id, "{path}");
        }
    }
    // `+` is a space in a query string.
    let (status, body) = api.json("/job/status?message_id=id+with+spaces").await;
    assert_eq!(
        (status, body["message_id"].clone()),
        (200, json!("id with spaces"))
    );

    for path in [
        format!("/api/v1/jobs/user/{}", encode(user)),
        format!("/job/user?line_user_id={}", encode(user)),
    ] {
        let (status, body) = api.json(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["total_count"], ids.len(), "{path}");
    }
}

#[tokio::test]
async fn errors_come_in_the_style_of_their_route() {
    let api = Api::start("api_errors", ApiConfig::default()).await;

    let (status, body) = api.json("/api/v1/jobs/status/nope").await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"detail": "Job trace not found for message ID: nope"})
        )
    );
    let (status, body) = api.json("/job/status?message_id=nope").await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "Job trace not found for message ID: nope"})
        )
    );

    let (status, body) = api.json("/job/status").await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Missing required parameter: message_id"})
        )
    );
    let (status, body) = api.json("/job/user?limit=5").await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Missing required parameter: line_user_id"})
        )
    );

    let long = "x".repeat(1025);
    let (status, body) = api.json(&format!("/api/v1/jobs/status/{long}")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"][0]["loc"], json!(["path", "message_id"]));
    assert_eq!(body["detail"][0]["type"], "string_too_long");
    assert!(
        body.to_string().len() < 1000,
        "the echoed input is cut: {body}"
    );
    let (status, body) = api.json(&format!("/job/status?message_id={long}")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("message_id"));
    let (status, _) = api
        .json(&format!("/api/v1/jobs/status/{}", "x".repeat(1024)))
        .await;
    assert_eq!(status, 404, "1024 bytes is allowed");

    for (path, style_status) in [
        ("/api/v1/jobs/status/a%00b", 422),
        ("/api/v1/jobs/status/%FF%FE", 422),
        ("/api/v1/jobs/status/%20%20", 422),
        ("/api/v1/jobs/user/%0A", 422),
        ("/job/status?message_id=", 400),
        ("/job/status?message_id=a%0Ab", 400),
        ("/job/user?line_user_id=%20", 400),
        ("/api/v1/jobs/status/x?wait=31", 422),
        ("/api/v1/jobs/status/x?wait=-1", 422),
        ("/api/v1/jobs/status/x?include=secrets", 422),
        ("/job/status?message_id=x&wait=abc", 400),
    ] {
        let (status, body) = api.json(path).await;
        assert_eq!(status, style_status, "{path}: {body}");
        if status == 422 {
            assert!(body["detail"].is_array(), "{path}: {body}");
        } else {
            assert!(body["error"].is_string(), "{path}: {body}");
        }
    }

    // Unknown paths: the standalone style exactly under /job, FastAPI's everywhere else.
    for (path, body) in [
        ("/api/v1/nothing/here", json!({"detail": "Not Found"})),
        ("/nothing", json!({"detail": "Not Found"})),
        ("/jobs/status", json!({"detail": "Not Found"})),
        ("/job/nothing", json!({"error": "Not Found"})),
        ("/job/", json!({"error": "Not Found"})),
        ("/job", json!({"error": "Not Found"})),
    ] {
        assert_eq!(api.json(path).await, (404, body), "{path}");
    }
}

#[tokio::test]
async fn include_history_adds_the_internal_fields_only_when_asked() {
    let api = Api::start("api_history", ApiConfig::default()).await;
    apply_all(&api.store, &seed_example_changes()).await;
    let (_, plain) = api.json("/api/v1/jobs/status/1234567890").await;
    assert_eq!(plain.as_object().unwrap().len(), SEED_FIELDS.len());
    for key in ["history", "expire_at", "attempt", "job_type", "rank", "_id"] {
        assert!(plain.get(key).is_none(), "{key} leaks: {plain}");
    }

    let (status, full) = api
        .json("/api/v1/jobs/status/1234567890?include=history")
        .await;
    assert_eq!(status, 200);
    assert_eq!(full["job_type"], "property_scrape");
    assert_eq!(full["attempt"], 1);
    // Completed 2023-06-01T12:35:42.123Z: deleted three days later.
    assert_eq!(full["expire_at"], "2023-06-04T12:35:42.123Z");
    let statuses: Vec<&str> = full["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["queued", "processing", "success"]);
    for key in SEED_FIELDS {
        assert_eq!(full[key], plain[key], "{key}");
    }
    let (_, list) = api
        .json("/job/user?line_user_id=U1234567890abcdef&include=history")
        .await;
    assert_eq!(list["jobs"][0], full);
}

/// A progress report of attempt 1 at `at(seconds)`.
fn progress(id: &str, seconds: i64, done: i64, note: Option<&str>) -> job_trace::rules::Change {
    job_trace::rules::Change::progress(mid(id), 1, at(seconds), done, 40, note.map(Into::into))
}

/// The job `id` as both status routes and both user-list routes render it.
async fn every_rendering(api: &Api, id: &str, user: &str) -> Vec<Value> {
    let mut bodies = Vec::new();
    for path in [
        format!("/api/v1/jobs/status/{}", encode(id)),
        format!("/job/status?message_id={}", encode(id)),
    ] {
        let (status, body) = api.json(&path).await;
        assert_eq!(status, 200, "{path}");
        bodies.push(body);
    }
    for path in [
        format!("/api/v1/jobs/user/{user}"),
        format!("/job/user?line_user_id={user}"),
    ] {
        let (status, body) = api.json(&path).await;
        assert_eq!(status, 200, "{path}");
        bodies.push(body["jobs"][0].clone());
    }
    bodies
}

#[tokio::test]
async fn progress_shows_while_its_attempt_runs_and_disappears_when_it_ends() {
    let api = Api::start("api_progress", ApiConfig::default()).await;
    let id = "batch 1";
    let user = "Uprogress";
    // Queued: a report of attempt 1 is kept but not shown, attempt 1 is not current yet.
    apply_all(
        &api.store,
        &[
            queued(id, user, JobType::BatchCheck, 0),
            progress(id, 3, 5, Some("物件 5")),
        ],
    )
    .await;
    for body in every_rendering(&api, id, user).await {
        assert_eq!(body["status"], "queued");
        assert!(body.get("progress").is_none(), "{body}");
    }

    // Running: the latest report by time shows, whatever the order it arrived in.
    apply_all(
        &api.store,
        &[
            event(id, JobStatus::Processing, 2),
            progress(id, 8, 20, None),
            progress(id, 6, 12, Some("older")),
        ],
    )
    .await;
    for body in every_rendering(&api, id, user).await {
        assert_eq!(body["status"], "processing");
        assert_eq!(
            body["progress"],
            json!({"done": 20, "total": 40, "note": null, "at": "2023-06-01T12:35:04.789Z"}),
            "{body}"
        );
        assert_eq!(body["updated_at"], "2023-06-01T12:35:04.789Z");
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), SEED_FIELDS.len() + 1, "only progress is added");
    }

    // Done: gone, and a late report of the finished attempt does not bring it back.
    apply_all(
        &api.store,
        &[
            event(id, JobStatus::Success, 20),
            progress(id, 15, 39, Some("late")),
        ],
    )
    .await;
    for body in every_rendering(&api, id, user).await {
        assert_eq!(body["status"], "success");
        assert!(body.get("progress").is_none(), "{body}");
        assert_eq!(body["completed_at"], "2023-06-01T12:35:16.789Z");
    }
    let stored = api.store.get(&mid(id)).await.unwrap().unwrap();
    assert_eq!(
        stored.progress, None,
        "a finished attempt keeps no progress"
    );
}
