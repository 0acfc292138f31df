//! trace-api's status page (`GET /`): served with a strict Content-Security-Policy and
//! revalidating cache headers, the JavaScript client served from the very file frontends
//! copy, and, in Debian's headless Chromium driven by Playwright, a user's jobs updated
//! live when trace-writer records their status events, without a reload.
//!
//! The browser test needs `scripts/ensure-browser.sh` (`make browser`): without Chromium
//! or Node it says NOT RUN, and fails under `CI=true`. Its screenshot is kept in
//! `target/artifacts/status-page.png`.

mod api_common;
mod writer_common;

use std::time::{Duration, Instant};

use api_common::{mid, Api};
use job_trace::ids::LineUserId;
use job_trace::model::{render_time, JobStatus, JobType};
use job_trace::rules::{Change, JobDetails};
use job_trace::TraceStore;
use job_trace_tests::node::{browser, NodeScript};
use job_trace_tests::{fresh_store, project_root};
use serde_json::{json, Value};
use trace_api::ApiConfig;
use writer_common::{event_push_at, Writer};

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn the_page_and_its_scripts_are_served_with_a_strict_policy_and_revalidation() {
    let api = Api::start("page_assets", ApiConfig::default()).await;
    let client_file =
        std::fs::read_to_string(project_root().join("clients/js/job-status.js")).unwrap();
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/status-page.css", "text/css; charset=utf-8"),
        ("/status-page.js", "text/javascript; charset=utf-8"),
        ("/job-status.js", "text/javascript; charset=utf-8"),
    ] {
        let response = api.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(&response, "content-type"), content_type, "{path}");
        assert_eq!(header(&response, "cache-control"), "no-cache", "{path}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        let csp = header(&response, "content-security-policy").to_owned();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        let etag = header(&response, "etag").to_owned();
        let body = response.text().await.unwrap();
        if path == "/job-status.js" {
            assert_eq!(body, client_file, "the page serves the file frontends copy");
        }

        let again = api
            .http
            .get(api.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(header(&again, "etag"), etag);
        assert!(again.text().await.unwrap().is_empty());
        let other = api
            .http
            .get(api.url(path))
            .header("if-none-match", "\"0000\"")
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 200, "{path}");
    }

    // The policy forbids inline code, so the page must have none.
    let html = api.get("/").await.text().await.unwrap();
    for script in html.split("<script").skip(1) {
        let tag = &script[..script.find('>').unwrap()];
        assert!(tag.contains("src=\"/"), "an inline script: <script{tag}>");
        assert!(script[script.find('>').unwrap() + 1..].starts_with("</script>"));
    }
    assert!(!html.contains("<style"), "an inline style sheet");
    assert!(!html.contains(" style="), "an inline style attribute");
    let handler = html.match_indices(" on").any(|(at, _)| {
        let rest = &html[at + 3..];
        let name_end = rest
            .find(|c: char| !c.is_ascii_lowercase())
            .unwrap_or(rest.len());
        name_end > 0 && rest[name_end..].starts_with('=')
    });
    assert!(!handler, "an inline event handler");
    assert!(!html.contains("//"), "an external address: {html}");

    // Not API: the document keeps to the API, and the API's 404 style is unchanged.
    let document: Value = api.get("/openapi.json").await.json().await.unwrap();
    assert!(document["paths"].get("/").is_none());
    assert!(document["paths"].get("/job-status.js").is_none());
    let (status, body) = api.json("/status-page.html").await;
    assert_eq!((status, body), (404, json!({"detail": "Not Found"})));
}

fn now_minus(seconds: i64) -> bson::DateTime {
    bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - seconds * 1000)
}

fn job(id: &str, user: &str, url: Option<&str>, created: i64) -> Change {
    Change::queued(
        mid(id),
        now_minus(created),
        JobDetails {
            job_type: if url.is_some() {
                JobType::PropertyScrape
            } else {
                JobType::BatchCheck
            },
            url: url.map(str::to_owned),
            line_user_id: Some(LineUserId::parse(user).unwrap()),
            check_only: url.is_none(),
        },
    )
}

fn step(id: &str, status: JobStatus, at: i64, error: Option<&str>) -> Change {
    let result = (status == JobStatus::Success).then(|| bson::bson!({"status": "success"}));
    Change::event(
        mid(id),
        status,
        1,
        now_minus(at),
        error.map(str::to_owned),
        result,
    )
}

async fn apply(store: &TraceStore, changes: &[Change]) {
    for change in changes {
        store.apply(change).await.expect("apply");
    }
}

#[tokio::test]
async fn the_page_shows_a_users_jobs_change_live_when_trace_writer_records_them() {
    let test = "status_page_browser";
    let Some(tools) = browser(test) else {
        return;
    };
    let store = fresh_store("page_browser").await;
    let api = Api::start_on(store.clone(), ApiConfig::default()).await;
    let writer = Writer::start_on(store.clone()).await;
    let user = "U4af4980629a1b2c3d4e5f60718293a4b";
    let (to_succeed, to_fail) = ("17311482230001", "17311482230002");

    // Two older jobs that finished, and two that are processing now.
    apply(
        &store,
        &[
            job(
                "17311481110001",
                user,
                Some("https://suumo.jp/ms/chuko/tokyo/sc_shinjuku/nc_98142765/"),
                3600,
            ),
            step("17311481110001", JobStatus::Processing, 3598, None),
            step("17311481110001", JobStatus::Success, 3570, None),
            job(
                "17311481110002",
                user,
                Some("https://suumo.jp/ms/chuko/tokyo/sc_setagaya/nc_97000001/"),
                1800,
            ),
            step("17311481110002", JobStatus::Processing, 1797, None),
            step(
                "17311481110002",
                JobStatus::NotFound,
                1790,
                Some("The listing was removed (HTTP 404 from suumo.jp)"),
            ),
            job(to_succeed, user, None, 40),
            step(to_succeed, JobStatus::Processing, 38, None),
            job(
                to_fail,
                user,
                Some("https://suumo.jp/ms/chuko/kanagawa/sc_yokohama/nc_96543210/"),
                20,
            ),
            step(to_fail, JobStatus::Processing, 17, None),
        ],
    )
    .await;

    let now = chrono::Utc::now();
    let occurred = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let pushes = json!({
        to_succeed: event_push_at(to_succeed, json!({
            "status": "success", "attempt": 1, "occurred_at": occurred,
            "result": {"status": "success", "checked": 12},
        }), now),
        to_fail: event_push_at(to_fail, json!({
            "status": "failed", "attempt": 1, "occurred_at": occurred,
            "error": "Timed out after 30 s waiting for suumo.jp (attempt 1 of 1)",
        }), now),
    });
    let expect = json!({ to_succeed: "success", to_fail: "failed" });
    let reported = render_time(now_minus(5));
    let note = "物件 5 of 12: https://suumo.jp/ms/chuko/tokyo/sc_nerima/nc_95551234/";
    let progress = json!({
        to_succeed: {
            "push": event_push_at(to_succeed, json!({
                "status": "progress", "attempt": 1, "done": 5, "total": 12,
                "note": note, "occurred_at": reported,
            }), now),
            "count": "5 / 12 (41 %)",
            "note": note,
        },
    });
    let screenshot = project_root().join("target/artifacts/status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let started = Instant::now();
    let page_url = api.url("/");
    let jobs = [to_succeed, to_fail].join(",");
    let pushes = pushes.to_string();
    let expect = expect.to_string();
    let progress = progress.to_string();
    let screenshot_path = screenshot.to_string_lossy().into_owned();
    let writer_url = writer.url("/");
    let chromium = tools.chromium.to_string_lossy().into_owned();
    let run = NodeScript::spawn(
        &tools.node,
        &tools.dir.join("status-page.mjs"),
        &[
            ("PAGE_URL", page_url.as_str()),
            ("WRITER_URL", writer_url.as_str()),
            ("LINE_USER", user),
            ("JOBS", jobs.as_str()),
            ("PUSHES", pushes.as_str()),
            ("EXPECT", expect.as_str()),
            ("PROGRESS", progress.as_str()),
            ("SCREENSHOT", screenshot_path.as_str()),
            ("CHROMIUM", chromium.as_str()),
        ],
    );
    let (status, transcript, stderr) = run.finish(Duration::from_secs(120)).await;
    eprintln!("{test}: {:?}\n{}", started.elapsed(), transcript.join("\n"));
    assert!(
        status.success(),
        "the browser run failed ({status}):\n{}\n{stderr}",
        transcript.join("\n")
    );
    for expected in [
        "ok loaded",
        "ok processing 2 jobs followed live",
        "ok progress shown live for 1 jobs",
        "ok published",
        "ok updated live in ",
        "ok final states, errors and history",
        "ok no navigation",
        "ok no errors",
        "ok screenshot ",
    ] {
        assert!(
            transcript.iter().any(|line| line.starts_with(expected)),
            "missing {expected:?} in {transcript:?}"
        );
    }

    // What the page showed is what trace-writer recorded.
    for (id, status) in [
        (to_succeed, JobStatus::Success),
        (to_fail, JobStatus::Failed),
    ] {
        let trace = writer.trace(id).await.expect("recorded");
        assert_eq!(trace.status, status);
    }
    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
}

/// The Operations view in Chromium: a job stalled for two hours with its user, another
/// user's failure with its error and history, the day's counts; then the stalled job's
/// late success pushed to trace-writer takes it off the list and into the counts, without
/// a reload. The screenshots are kept in `target/artifacts/operations*.png`.
#[tokio::test]
async fn the_operations_view_shows_stalled_jobs_failures_and_counts_live() {
    let test = "status_page_operations";
    let Some(tools) = browser(test) else {
        return;
    };
    let store = fresh_store("page_ops").await;
    let api = Api::start_on(store.clone(), ApiConfig::default()).await;
    let writer = Writer::start_on(store.clone()).await;
    let (stalled, failed) = ("17311490000001", "17311490000002");
    let error = "HTTP 503 from suumo.jp (attempt 1 of 1)";
    apply(
        &store,
        &[
            job(
                stalled,
                "U4af4980629a1b2c3d4e5f60718293a4b",
                Some("https://suumo.jp/ms/chuko/tokyo/sc_shinjuku/nc_98142765/"),
                3 * 3600,
            ),
            step(stalled, JobStatus::Processing, 2 * 3600 + 120, None),
            job(failed, "U9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e", None, 3000),
            step(failed, JobStatus::Processing, 2950, None),
            step(failed, JobStatus::Failed, 2900, Some(error)),
            job(
                "17311490000003",
                "U9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e",
                Some("https://suumo.jp/ms/chuko/tokyo/sc_setagaya/nc_97000001/"),
                1200,
            ),
            step("17311490000003", JobStatus::Success, 1150, None),
            job(
                "17311490000004",
                "U1111222233334444555566667777aaaa",
                None,
                30,
            ),
        ],
    )
    .await;
    let now = chrono::Utc::now();
    let occurred = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let push = event_push_at(
        stalled,
        json!({
            "status": "success", "attempt": 1, "occurred_at": occurred,
            "result": {"status": "success", "checked": 3},
        }),
        now,
    )
    .to_string();
    let counts = json!({"queued": 1, "processing": 1, "success": 1, "failed": 1, "not_found": 0})
        .to_string();
    let screenshot = project_root().join("target/artifacts/operations.png");
    let stalled_screenshot = project_root().join("target/artifacts/operations-stalled.png");
    let _ = std::fs::remove_file(&screenshot);
    let _ = std::fs::remove_file(&stalled_screenshot);
    let stalled_screenshot_path = stalled_screenshot.to_string_lossy().into_owned();
    let page_url = api.url("/");
    let writer_url = writer.url("/");
    let screenshot_path = screenshot.to_string_lossy().into_owned();
    let chromium = tools.chromium.to_string_lossy().into_owned();
    let run = NodeScript::spawn(
        &tools.node,
        &tools.dir.join("status-page.mjs"),
        &[
            ("VIEW", "operations"),
            ("PAGE_URL", page_url.as_str()),
            ("WRITER_URL", writer_url.as_str()),
            ("STALLED", stalled),
            ("STALLED_USER", "U4af4980629a1b2c3d4e5f60718293a4b"),
            ("FAILED", failed),
            ("FAILED_ERROR", error),
            ("COUNTS", counts.as_str()),
            ("PUSH", push.as_str()),
            ("SCREENSHOT", screenshot_path.as_str()),
            ("SCREENSHOT_STALLED", stalled_screenshot_path.as_str()),
            ("CHROMIUM", chromium.as_str()),
        ],
    );
    let (status, transcript, stderr) = run.finish(Duration::from_secs(120)).await;
    eprintln!("{test}:\n{}", transcript.join("\n"));
    assert!(
        status.success(),
        "the browser run failed ({status}):\n{}\n{stderr}",
        transcript.join("\n")
    );
    for expected in [
        "ok loaded",
        "ok stalled job shown with its user",
        "ok failure shown with its error and history",
        "ok statistics",
        "ok screenshot of the stalled job ",
        "ok live: the late success left the stalled list in ",
        "ok no navigation",
        "ok no errors",
        "ok screenshot ",
    ] {
        assert!(
            transcript.iter().any(|line| line.starts_with(expected)),
            "missing {expected:?} in {transcript:?}"
        );
    }
    let trace = writer.trace(stalled).await.expect("recorded");
    assert_eq!(trace.status, JobStatus::Success);
    for path in [&screenshot, &stalled_screenshot] {
        let png = std::fs::read(path).expect("the screenshot was saved");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    }
}
