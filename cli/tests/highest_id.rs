//! `jobtrace highest-id`, which `make run` asks before moving a restarted Pub/Sub
//! emulator's ids past the jobs already stored: the built binary against a real
//! SecantusDB database.

use job_trace::push::encode::PushMessage;
use job_trace::push::{decode_push, Outcome};
use job_trace::TraceStore;
use job_trace_tests::{unique_name, Database};
use serde_json::json;
use tokio::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_jobtrace");

async fn record_job(store: &TraceStore, message_id: &str) {
    let data = json!({ "url": "https://suumo.jp/ms/chuko/nc_1/", "line_user_id": "U1" });
    let body = PushMessage::new(message_id, data.to_string(), chrono::Utc::now())
        .wrapped("projects/demo/subscriptions/cli-tests");
    let push = decode_push(
        &Default::default(),
        body.to_string().as_bytes(),
        bson::DateTime::now(),
    )
    .expect("a push");
    let Outcome::Record(change) = push.outcome else {
        panic!("not recorded: {push:?}");
    };
    store.apply(&change).await.expect("recorded");
}

async fn highest_id(database: &str) -> String {
    let output = Command::new(BINARY)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MONGO_URI", Database::shared().uri())
        .env("MONGO_DATABASE", database)
        .arg("highest-id")
        .output()
        .await
        .expect("run jobtrace");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn highest_id_is_the_largest_numeric_message_id_stored() {
    let database = unique_name("cli_highest_id");
    assert_eq!(highest_id(&database).await, "0\n", "nothing stored yet");
    let store = TraceStore::connect(&Database::shared().config(&database))
        .await
        .expect("store");
    // Numbers compare as numbers ("120" > "99"); ids Pub/Sub never gives do not count.
    for id in ["99", "120", "7", "not-a-number", "1234567890123456789"] {
        record_job(&store, id).await;
    }
    assert_eq!(highest_id(&database).await, "120\n");
}
