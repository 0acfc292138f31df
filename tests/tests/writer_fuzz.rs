//! Bad input over HTTP, with the database up: every fixture mutated (truncated, values of
//! the wrong type, bad base64, data that is not JSON, huge, unicode, unknown status,
//! missing ids, random byte flips). Never a 5xx, never a panic, and the right answer: 400
//! when the request is not a push, 204 when it is (recorded, or acknowledged as a message
//! that can never be recorded).

mod writer_common;

use std::sync::atomic::Ordering;

use base64::Engine;
use futures::StreamExt;
use job_trace_tests::fixture_json;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use writer_common::*;

/// One request and the status it must get.
struct Case {
    what: String,
    headers: Headers,
    body: Vec<u8>,
    expected: u16,
}

type Headers = Vec<(String, String)>;

/// The fixtures as (name, headers, body).
fn fixtures() -> Vec<(String, Headers, Value)> {
    let mut all: Vec<_> = PUSH_FIXTURES
        .iter()
        .map(|name| {
            (
                name.to_string(),
                vec![("content-type".to_string(), "application/json".to_string())],
                fixture_json(name),
            )
        })
        .collect();
    let cloudevent = fixture_json("cloudevent-binary-job-message.json");
    let headers = cloudevent["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    all.push((
        "cloudevent-binary-job-message.json".into(),
        headers,
        cloudevent["body"].clone(),
    ));
    all
}

/// Values of every JSON type, odd ones included.
fn odd_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(1e308),
        json!(18446744073709551615_u64),
        json!(""),
        json!("ünïcödé 🚀 物件"),
        json!("\u{0000}\u{001b}[31m"),
        json!([]),
        json!([1, "two", null]),
        json!({}),
        json!({ "$set": { "status": "success" } }),
        json!("x".repeat(100_000)),
    ]
}

/// Every path to a value inside `value` (object keys only).
fn paths(value: &Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Value::Object(map) = value {
        for (key, child) in map {
            let mut path = prefix.clone();
            path.push(key.clone());
            out.push(path.clone());
            paths(child, path, out);
        }
    }
}

fn set_path(root: &mut Value, path: &[String], new: Value) {
    let mut at = root;
    for key in &path[..path.len() - 1] {
        at = &mut at[key.as_str()];
    }
    at[path.last().unwrap().as_str()] = new;
}

fn remove_path(root: &mut Value, path: &[String]) {
    let mut at = root;
    for key in &path[..path.len() - 1] {
        at = &mut at[key.as_str()];
    }
    at.as_object_mut().unwrap().remove(path.last().unwrap());
}

fn decode_data(body: &Value) -> Value {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body["message"]["data"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

fn with_data(body: &Value, data: &[u8]) -> Value {
    let mut body = body.clone();
    body["message"]["data"] = json!(b64(data));
    body
}

/// Whether the body is a JSON object with a `message` object: then it is a push (204),
/// otherwise it is not (400).
fn expected_for(body: &[u8]) -> u16 {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(root)) if root.get("message").is_some_and(Value::is_object) => 204,
        _ => 400,
    }
}

fn cases() -> Vec<Case> {
    let mut rng = StdRng::seed_from_u64(0x00f0_0d00);
    let mut cases = Vec::new();
    for (name, headers, body) in fixtures() {
        let mut add = |what: String, body: Vec<u8>, expected: u16| {
            cases.push(Case {
                what: format!("{name}: {what}"),
                headers: headers.clone(),
                body,
                expected,
            })
        };
        let bytes = serde_json::to_vec_pretty(&body).unwrap();

        // Truncated anywhere.
        let step = (bytes.len() / 40).max(1);
        for cut in (0..bytes.len()).step_by(step).chain([1, bytes.len() - 1]) {
            let cut_body = bytes[..cut].to_vec();
            let expected = expected_for(&cut_body);
            add(format!("truncated to {cut} bytes"), cut_body, expected);
        }

        // Every field of the envelope replaced by odd values, or removed.
        let mut all_paths = Vec::new();
        paths(&body, Vec::new(), &mut all_paths);
        for path in &all_paths {
            for value in odd_values() {
                let mut mutated = body.clone();
                set_path(&mut mutated, path, value.clone());
                let mutated = serde_json::to_vec(&mutated).unwrap();
                let expected = expected_for(&mutated);
                add(
                    format!("{} = {}", path.join("."), cut_json(&value)),
                    mutated,
                    expected,
                );
            }
            let mut removed = body.clone();
            remove_path(&mut removed, path);
            let removed = serde_json::to_vec(&removed).unwrap();
            let expected = expected_for(&removed);
            add(format!("without {}", path.join(".")), removed, expected);
        }

        // Every field of the payload (and the ones it might have) replaced or removed.
        let payload = decode_data(&body);
        let mut keys: Vec<String> = payload.as_object().unwrap().keys().cloned().collect();
        for extra in [
            "message_id",
            "status",
            "attempt",
            "occurred_at",
            "error",
            "result",
            "url",
            "line_user_id",
            "check_only",
            "timestamp",
        ] {
            if !keys.iter().any(|k| k == extra) {
                keys.push(extra.into());
            }
        }
        for key in &keys {
            for value in odd_values() {
                let mut mutated = payload.clone();
                mutated[key.as_str()] = value.clone();
                add(
                    format!("data.{key} = {}", cut_json(&value)),
                    serde_json::to_vec(&with_data(&body, mutated.to_string().as_bytes())).unwrap(),
                    204,
                );
            }
            let mut removed = payload.clone();
            removed.as_object_mut().unwrap().remove(key);
            add(
                format!("data without {key}"),
                serde_json::to_vec(&with_data(&body, removed.to_string().as_bytes())).unwrap(),
                204,
            );
        }
        for status in ["done", "QUEUED", "queued", "Success ", "成功", ""] {
            let mut mutated = payload.clone();
            mutated["status"] = json!(status);
            mutated["message_id"] = json!(new_id());
            add(
                format!("unknown status {status:?}"),
                serde_json::to_vec(&with_data(&body, mutated.to_string().as_bytes())).unwrap(),
                204,
            );
        }
        // Results nested deeper than the database's limit on nesting.
        for depth in [50, 99, 120, 126] {
            let mut result = json!("leaf");
            for _ in 0..depth {
                result = json!({ "a": result });
            }
            let mut mutated = payload.clone();
            mutated["status"] = json!("success");
            mutated["message_id"] = json!(new_id());
            mutated["result"] = result;
            add(
                format!("a result nested {depth} deep"),
                serde_json::to_vec(&with_data(&body, mutated.to_string().as_bytes())).unwrap(),
                204,
            );
        }

        // Data that is not base64, not JSON, not an object, or too large.
        let data_cases: Vec<(&str, Value)> = vec![
            ("data is not base64", json!("%%%")),
            (
                "data is url-safe base64",
                json!("eyJ1cmwiOiJodHRwczovL2V4YW1wbGUuY29tLz8_In0"),
            ),
            ("data has no padding", json!("eyJhIjoxfQ")),
            ("data has spaces inside", json!("eyJh IjoxfQ==")),
            ("data is non-ASCII", json!("データ")),
            ("data is empty", json!("")),
            (
                "data is invalid UTF-8",
                json!(b64(&[0xff, 0xfe, 0x7b, 0x7d])),
            ),
            ("data is a JSON array", json!(b64(b"[1,2,3]"))),
            ("data is a JSON string", json!(b64(b"\"hello\""))),
            ("data is a number", json!(b64(b"42"))),
            (
                "data is deeply nested",
                json!(b64("[".repeat(10_000).as_bytes())),
            ),
            (
                "data is over Pub/Sub's 10 MB",
                json!("A".repeat(13_400_000)),
            ),
        ];
        for (what, data) in data_cases {
            let mut mutated = body.clone();
            mutated["message"]["data"] = data;
            add(what.into(), serde_json::to_vec(&mutated).unwrap(), 204);
        }

        // Random byte flips.
        for n in 0..25 {
            let mut flipped = bytes.clone();
            let at = rng.random_range(0..flipped.len());
            flipped[at] = rng.random();
            let expected = expected_for(&flipped);
            add(format!("byte flip #{n} at {at}"), flipped, expected);
        }
    }

    // Headers that say something else than the body.
    let body = serde_json::to_vec(&fixture_json("push-job-message.json")).unwrap();
    for (what, name, value, expected) in [
        (
            "structured CloudEvent content type on a wrapped body",
            "content-type",
            "application/cloudevents+json".to_string(),
            400,
        ),
        (
            "a text content type",
            "content-type",
            "text/plain".to_string(),
            204,
        ),
        (
            "a garbage ce-id",
            "ce-id",
            "not/an id;with=odd chars".to_string(),
            204,
        ),
        ("a huge ce-id", "ce-id", "9".repeat(6000), 204),
    ] {
        cases.push(Case {
            what: what.into(),
            headers: vec![(name.into(), value)],
            body: body.clone(),
            expected,
        });
    }
    cases
}

fn cut(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn cut_json(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 40 {
        format!("{}… ({} bytes)", cut(&text, 40), text.len())
    } else {
        text
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutated_fixture_gets_the_right_4xx_or_2xx_and_never_a_5xx() {
    let writer = Writer::start("writer_fuzz").await;
    let cases = cases();
    let total = cases.len();
    let outcomes: Vec<(String, u16, u16, String)> = futures::stream::iter(cases)
        .map(|case| {
            let writer = &writer;
            async move {
                let headers: Vec<(&str, &str)> = case
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let (status, text) = writer.post_raw(&headers, case.body).await;
                (case.what, case.expected, status, text)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let wrong: Vec<String> = outcomes
        .iter()
        .filter(|(_, expected, status, _)| expected != status)
        .map(|(what, expected, status, text)| {
            format!("{what}: {status} (want {expected}) {}", cut(text, 200))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {total} cases answered wrongly:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    for (what, _, status, text) in &outcomes {
        if *status == 400 {
            let body: Value = serde_json::from_str(text)
                .unwrap_or_else(|_| panic!("{what}: a 400 has a JSON body: {text}"));
            assert!(body["error"].is_string(), "{what}: {text}");
        }
    }
    assert_eq!(writer.tally.unavailable.load(Ordering::Relaxed), 0);
    println!("bad input: {total} mutated requests, all answered as expected, no 5xx");
    let ready = writer.http.get(writer.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200, "the database is still fine");
}
