//! `jobtrace check-backend` as a user runs it, against the real SecantusDB: it finds
//! every feature working, recommends the default configuration, leaves no scratch
//! collection behind and never touches the traces.

use std::process::Output;
use std::time::Duration;

use bson::doc;
use job_trace::ids::MessageId;
use job_trace::model::JobStatus;
use job_trace::rules::Change;
use job_trace::TraceStore;
use job_trace_tests::{free_port, fresh_store, Database};
use tokio::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_jobtrace");

async fn check_backend(uri: &str, database: &str, extra: &[&str]) -> Output {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DB_TIMEOUT_SECONDS", "2")
        .args(["check-backend", "--mongo-uri", uri, "--database", database])
        .args(extra)
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("check-backend finishes within 120 s")
        .expect("run jobtrace")
}

/// A database with one real trace in its traces collection.
async fn database_with_a_trace() -> (TraceStore, String) {
    let store = fresh_store("checked").await;
    let change = Change::event(
        MessageId::parse("kept").unwrap(),
        JobStatus::Processing,
        1,
        bson::DateTime::now(),
        None,
        None,
    );
    store.apply(&change).await.unwrap();
    let name = store.collection().namespace().db;
    (store, name)
}

async fn collections(store: &TraceStore, database: &str) -> Vec<String> {
    let mut names = store
        .client()
        .database(database)
        .list_collection_names()
        .await
        .unwrap();
    names.sort();
    names
}

async fn raw_traces(store: &TraceStore) -> Vec<bson::Document> {
    use futures::TryStreamExt;
    store
        .collection()
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_feature_works_on_secantusdb_and_nothing_is_left_behind() {
    let (store, database) = database_with_a_trace().await;
    let before = raw_traces(&store).await;
    let uri = Database::shared().uri();

    let output = check_backend(&uri, &database, &[]).await;
    let table = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{table}{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{table}");
    for feature in [
        "readiness query",
        "unique and TTL index creation",
        "STORE_WRITE=pipeline",
        "STORE_WRITE=cas",
        "duplicate key answer (8 racing first writes, pipeline)",
        "duplicate key answer (8 racing first writes, cas)",
        "completion notifications: findAndModify and $pull (pipeline)",
        "completion notifications: findAndModify and $pull (cas)",
        "operators' listing, stats aggregate and sweep (pipeline)",
        "operators' listing, stats aggregate and sweep (cas)",
        "$facet list query",
        "change stream",
        "removing the scratch collection",
    ] {
        let row = table
            .lines()
            .find(|line| line.starts_with(feature))
            .unwrap_or_else(|| panic!("no row for {feature}:\n{table}"));
        assert!(row.contains("| works"), "{row}");
    }
    assert!(
        table.contains("recommended: STORE_WRITE=pipeline API_CHANGE_STREAMS=auto"),
        "{table}"
    );

    let output = check_backend(&uri, &database, &["--json"]).await;
    assert_eq!(output.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["ok"], true);
    assert_eq!(report["recommended"]["STORE_WRITE"], "pipeline");
    assert_eq!(report["recommended"]["API_CHANGE_STREAMS"], "auto");
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 13, "{report:#}");
    for check in checks {
        assert!(check["feature"].is_string(), "{check}");
        assert_eq!(check["works"], true, "{check}");
        assert!(check["error"].is_null(), "{check}");
        assert!(check["without"].is_string(), "{check}");
    }
    let scratch = report["scratch_collection"].as_str().unwrap();
    assert!(scratch.starts_with("jobtrace_check_"), "{scratch}");

    assert_eq!(
        collections(&store, &database).await,
        ["job_traces"],
        "the scratch collections are gone"
    );
    assert_eq!(raw_traces(&store).await, before, "the traces are untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_fails_every_check_and_exits_1() {
    let uri = format!("mongodb://127.0.0.1:{}/?directConnection=true", free_port());
    let output = check_backend(&uri, "nowhere", &["--json"]).await;
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["ok"], false);
    assert!(report["recommended"]["STORE_WRITE"].is_null());
    assert_eq!(report["recommended"]["API_CHANGE_STREAMS"], "off");
    for check in report["checks"].as_array().unwrap() {
        assert_eq!(check["works"], false, "{check}");
        assert!(check["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
}
