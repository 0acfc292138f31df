//! CORS and access control (`API_AUTH=none | token | line`) against a real SecantusDB,
//! with LINE ID tokens signed here: HS256 with a channel secret, ES256 with a key set
//! served on a loopback port.

mod api_common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use api_common::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use job_trace::jwks::{FAILED_FETCH_BACKOFF, MAX_JWKS_BYTES};
use job_trace::model::JobType;
use job_trace_tests::jwks::{serve_endless_jwks, serve_jwks};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};
use trace_api::ApiConfig;

const CHANNEL_ID: &str = "1657000000";
const CHANNEL_SECRET: &str = "test-channel-secret-not-a-real-one";
const API_TOKEN: &str = "test-token-0123456789abcdef";

fn config(vars: &[(&str, &str)]) -> ApiConfig {
    ApiConfig::from_vars(vars.iter().copied()).expect("valid configuration")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(sub: &str) -> Value {
    json!({
        "iss": "https://access.line.me",
        "sub": sub,
        "aud": CHANNEL_ID,
        "exp": now() + 600,
        "iat": now(),
        "name": "Test User",
    })
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A JWS signed by hand (not by the library under test): header, claims, P-256 r||s.
fn es256(claims: &Value, key: &SigningKey, kid: &str) -> String {
    let header = json!({ "alg": "ES256", "typ": "JWT", "kid": kid });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature: Signature = key.sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

fn jwk(key: &SigningKey, kid: &str) -> Value {
    let point = key.verifying_key().to_sec1_bytes();
    assert_eq!(point.len(), 65, "uncompressed P-256 point");
    json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    })
}

fn signing_key(seed: u8) -> SigningKey {
    let mut bytes = [seed; 32];
    bytes[0] = 1;
    SigningKey::from_slice(&bytes).unwrap()
}

async fn get_as(api: &Api, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = api.http.get(api.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn two_users(api: &Api) {
    apply_all(
        &api.store,
        &[
            queued("mine", "Ualice", JobType::PropertyScrape, 0),
            queued("theirs", "Ubob", JobType::PropertyScrape, 1),
        ],
    )
    .await;
}

#[tokio::test]
async fn cors_allows_any_origin_by_default_answers_preflight_and_exposes_the_etag() {
    let api = Api::start("api_cors_any", ApiConfig::default()).await;
    two_users(&api).await;
    let preflight = api
        .http
        .request(
            reqwest::Method::OPTIONS,
            api.url("/api/v1/jobs/status/mine"),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "if-none-match, authorization",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], "*");
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("GET"), "{methods}");
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in ["if-none-match", "authorization", "last-event-id"] {
        assert!(allowed.contains(header), "{allowed}");
    }

    let response = api
        .http
        .get(api.url("/api/v1/jobs/status/mine"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("etag"), "{exposed}");
}

#[tokio::test]
async fn cors_with_a_list_admits_only_listed_origins() {
    let api = Api::start(
        "api_cors_list",
        config(&[(
            "CORS_ALLOWED_ORIGINS",
            "https://app.example,http://localhost:3000",
        )]),
    )
    .await;
    two_users(&api).await;
    for origin in ["https://app.example", "http://localhost:3000"] {
        let response = api
            .http
            .request(
                reqwest::Method::OPTIONS,
                api.url("/job/status?message_id=mine"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        assert_eq!(response.headers()["access-control-allow-origin"], origin);
        let vary = response.headers()["vary"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(vary.contains("origin"), "{vary}");
    }
    let response = api
        .http
        .get(api.url("/api/v1/jobs/status/mine"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "CORS is the browser's check, not ours"
    );
    assert!(!response
        .headers()
        .contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn token_mode_needs_the_shared_token() {
    let api = Api::start(
        "api_token",
        config(&[("API_AUTH", "token"), ("API_TOKEN", API_TOKEN)]),
    )
    .await;
    two_users(&api).await;
    for (path, key) in [
        ("/api/v1/jobs/status/mine", "detail"),
        ("/api/v1/jobs/user/Ualice", "detail"),
        ("/api/v1/jobs/status/mine/events", "detail"),
        ("/job/status?message_id=mine", "error"),
        ("/job/user?line_user_id=Ualice", "error"),
    ] {
        let response = api.get(path).await;
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body[key], "Not authenticated", "{path}");

        for wrong in [
            "test-token-0123456789abcdeX",
            "test-token-0123456789abcdef0",
            "",
            "x",
        ] {
            let (status, body) = get_as(&api, path, Some(wrong)).await;
            assert_eq!(status, 401, "{path} {wrong:?}: {body}");
        }
        let response = api
            .http
            .get(api.url(path))
            .header("authorization", format!("Basic {API_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}: only Bearer");
    }
    let (status, body) = get_as(&api, "/api/v1/jobs/status/theirs", Some(API_TOKEN)).await;
    assert_eq!((status, body["message_id"].clone()), (200, json!("theirs")));
    let (status, body) = get_as(&api, "/job/user?line_user_id=Ualice", Some(API_TOKEN)).await;
    assert_eq!((status, body["total_count"].clone()), (200, json!(1)));
    // Health, readiness and the API description stay open.
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(api.get(path).await.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn line_mode_shows_a_user_only_their_own_traces() {
    let api = Api::start(
        "api_line_hs256",
        config(&[
            ("API_AUTH", "line"),
            ("LINE_CHANNEL_ID", CHANNEL_ID),
            ("LINE_CHANNEL_SECRET", CHANNEL_SECRET),
        ]),
    )
    .await;
    two_users(&api).await;
    let alice = hs256(&claims("Ualice"), CHANNEL_SECRET);

    let (status, body) = get_as(&api, "/api/v1/jobs/status/mine", Some(&alice)).await;
    assert_eq!(
        (status, body["line_user_id"].clone()),
        (200, json!("Ualice"))
    );
    let (status, body) = get_as(&api, "/job/status?message_id=mine", Some(&alice)).await;
    assert_eq!(status, 200, "{body}");
    // Another user's job is indistinguishable from a missing one.
    let (status, body) = get_as(&api, "/api/v1/jobs/status/theirs", Some(&alice)).await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"detail": "Job trace not found for message ID: theirs"})
        )
    );
    let (status, _) = get_as(&api, "/job/status?message_id=theirs", Some(&alice)).await;
    assert_eq!(status, 404);
    let (status, _) = get_as(&api, "/api/v1/jobs/status/theirs/events", Some(&alice)).await;
    assert_eq!(status, 404);

    let (status, body) = get_as(&api, "/api/v1/jobs/user/Ualice", Some(&alice)).await;
    assert_eq!((status, body["total_count"].clone()), (200, json!(1)));
    let (status, body) = get_as(&api, "/api/v1/jobs/user/Ubob", Some(&alice)).await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"detail": "Not allowed to list another user's jobs"})
        )
    );
    let (status, body) = get_as(&api, "/job/user?line_user_id=Ubob", Some(&alice)).await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"error": "Not allowed to list another user's jobs"})
        )
    );

    // Refusals: each a 401 that does not say which check failed.
    let mut expired = claims("Ualice");
    expired["exp"] = json!(now() - 3600);
    let mut other_channel = claims("Ualice");
    other_channel["aud"] = json!("1999999999");
    let mut other_issuer = claims("Ualice");
    other_issuer["iss"] = json!("https://evil.example");
    let mut no_exp = claims("Ualice");
    no_exp.as_object_mut().unwrap().remove("exp");
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims("Ualice").to_string())
    );
    let tampered = {
        let mut parts: Vec<String> = alice.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(claims("Ubob").to_string());
        parts.join(".")
    };
    let refusals = [
        ("expired", hs256(&expired, CHANNEL_SECRET)),
        ("another channel", hs256(&other_channel, CHANNEL_SECRET)),
        ("another issuer", hs256(&other_issuer, CHANNEL_SECRET)),
        ("no exp", hs256(&no_exp, CHANNEL_SECRET)),
        ("wrong secret", hs256(&claims("Ualice"), "another-secret")),
        ("alg none", unsigned),
        ("tampered claims", tampered),
        (
            "ES256 without a key set",
            es256(&claims("Ualice"), &signing_key(7), "k1"),
        ),
        ("garbage", "not.a.token".into()),
        ("huge", "a".repeat(20_000)),
    ];
    for (what, token) in refusals {
        let (status, body) = get_as(&api, "/api/v1/jobs/status/mine", Some(&token)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body, json!({"detail": "Invalid token"}), "{what}");
    }
    let (status, _) = get_as(&api, "/api/v1/jobs/status/mine", None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn line_mode_verifies_es256_tokens_with_keys_from_the_jwks_url() {
    let key = signing_key(3);
    let jwks = serve_jwks(json!({ "keys": [jwk(&key, "line-key-1")] })).await;
    let api = Api::start(
        "api_line_es256",
        config(&[
            ("API_AUTH", "line"),
            ("LINE_CHANNEL_ID", CHANNEL_ID),
            ("LINE_JWKS_URL", &jwks.url),
        ]),
    )
    .await;
    two_users(&api).await;
    let alice = es256(&claims("Ualice"), &key, "line-key-1");
    for _ in 0..3 {
        let (status, body) = get_as(&api, "/api/v1/jobs/status/mine", Some(&alice)).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(jwks.hits(), 1, "the key set is cached");
    let (status, _) = get_as(&api, "/api/v1/jobs/user/Ubob", Some(&alice)).await;
    assert_eq!(status, 403);

    let impostor = es256(&claims("Ualice"), &signing_key(9), "line-key-1");
    let unknown_kid = es256(&claims("Ualice"), &key, "line-key-2");
    let hs = hs256(&claims("Ualice"), CHANNEL_SECRET);
    for (what, token) in [
        ("another key", impostor),
        ("unknown kid", unknown_kid),
        ("HS256 without a channel secret", hs),
    ] {
        let (status, body) = get_as(&api, "/api/v1/jobs/status/mine", Some(&token)).await;
        assert_eq!(status, 401, "{what}: {body}");
    }
}

#[tokio::test]
async fn an_unreachable_key_set_is_our_fault_not_the_users() {
    let dead = format!("http://127.0.0.1:{}/certs", job_trace_tests::free_port());
    let api = Api::start(
        "api_line_no_jwks",
        config(&[
            ("API_AUTH", "line"),
            ("LINE_CHANNEL_ID", CHANNEL_ID),
            ("LINE_JWKS_URL", &dead),
        ]),
    )
    .await;
    let token = es256(&claims("Ualice"), &signing_key(3), "k");
    let (status, body) = get_as(&api, "/api/v1/jobs/status/mine", Some(&token)).await;
    assert_eq!(status, 503, "{body}");
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");
}

fn line_es256_config(jwks_url: &str) -> ApiConfig {
    config(&[
        ("API_AUTH", "line"),
        ("LINE_CHANNEL_ID", CHANNEL_ID),
        ("LINE_JWKS_URL", jwks_url),
    ])
}

/// Issue 16: after one failed fetch, valid tokens were answered 401 for 30 s (and the
/// JavaScript client gives up on a 401). Keys we cannot fetch are our 503 until they
/// come back, and they are fetched again as soon as the backoff allows.
#[tokio::test]
async fn a_failed_key_fetch_is_a_503_until_the_keys_are_back_never_a_401() {
    let key = signing_key(3);
    let jwks = serve_jwks(json!({ "keys": [jwk(&key, "line-key-1")] })).await;
    jwks.fail(true);
    let api = Api::start("api_line_jwks_down", line_es256_config(&jwks.url)).await;
    two_users(&api).await;
    let alice = es256(&claims("Ualice"), &key, "line-key-1");
    for attempt in 0..3 {
        let (status, body) = get_as(&api, "/api/v1/jobs/status/mine", Some(&alice)).await;
        assert_eq!(status, 503, "attempt {attempt}: {body}");
    }
    assert_eq!(jwks.hits(), 1, "no fetch again within the backoff");
    jwks.fail(false);
    tokio::time::sleep(FAILED_FETCH_BACKOFF + Duration::from_millis(100)).await;
    let (status, body) = get_as(&api, "/api/v1/jobs/status/mine", Some(&alice)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(jwks.hits(), 2);
}

/// Issue 16: the key set was read whole before its size was checked (a 400 MB answer
/// took trace-api to 425 MB). The download stops as soon as it is too large.
#[tokio::test]
async fn an_endless_key_set_is_cut_off_as_it_streams() {
    let (url, sent) = serve_endless_jwks().await;
    let api = Api::start("api_line_jwks_endless", line_es256_config(&url)).await;
    let token = es256(&claims("Ualice"), &signing_key(3), "line-key-1");
    let started = Instant::now();
    let (status, body) = get_as(&api, "/api/v1/jobs/status/mine", Some(&token)).await;
    assert_eq!(status, 503, "{body}");
    // Well inside the 5 s fetch timeout: refused for its size, not timed out.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // What the server pushed into the connection: the bound plus what loopback socket
    // buffers hold, far from the gigabytes a whole read would take in that time.
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent >= MAX_JWKS_BYTES as u64, "sent only {sent} bytes");
    assert!(sent < 64 * 1024 * 1024, "sent {sent} bytes");
}

/// Issue 16: `nbf` and `iat` were not checked. Both are held to the same clock skew
/// as `exp`.
#[tokio::test]
async fn a_token_not_valid_yet_is_refused() {
    let api = Api::start(
        "api_line_nbf",
        config(&[
            ("API_AUTH", "line"),
            ("LINE_CHANNEL_ID", CHANNEL_ID),
            ("LINE_CHANNEL_SECRET", CHANNEL_SECRET),
        ]),
    )
    .await;
    two_users(&api).await;
    let with = |field: &str, value: i64| {
        let mut claims = claims("Ualice");
        claims[field] = json!(value);
        hs256(&claims, CHANNEL_SECRET)
    };
    for (what, token, expected) in [
        ("nbf within the skew", with("nbf", now() + 20), 200),
        ("iat within the skew", with("iat", now() + 20), 200),
        ("nbf an hour ahead", with("nbf", now() + 3600), 401),
        ("iat an hour ahead", with("iat", now() + 3600), 401),
    ] {
        let (status, body) = get_as(&api, "/api/v1/jobs/status/mine", Some(&token)).await;
        assert_eq!(status, expected, "{what}: {body}");
    }
}

/// The operators' views cross every user's jobs: the token's holder may read them, no
/// LINE user may, and without the token nobody may.
#[tokio::test]
async fn operator_views_need_the_token_and_are_refused_to_every_line_user() {
    let token_api = Api::start(
        "api_ops_token",
        config(&[("API_AUTH", "token"), ("API_TOKEN", API_TOKEN)]),
    )
    .await;
    two_users(&token_api).await;
    let line_api = Api::start(
        "api_ops_line",
        config(&[
            ("API_AUTH", "line"),
            ("LINE_CHANNEL_ID", CHANNEL_ID),
            ("LINE_CHANNEL_SECRET", CHANNEL_SECRET),
        ]),
    )
    .await;
    let alice = hs256(&claims("Ualice"), CHANNEL_SECRET);
    for path in [
        "/api/v1/jobs?stalled_for=1",
        "/api/v1/jobs",
        "/api/v1/jobs/stats",
    ] {
        let (status, _) = get_as(&token_api, path, None).await;
        assert_eq!(status, 401, "{path} without the token");
        let (status, _) = get_as(&token_api, path, Some("not-the-token-0123456789")).await;
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, body) = get_as(&token_api, path, Some(API_TOKEN)).await;
        assert_eq!(status, 200, "{path}: {body}");
        let (status, body) = get_as(&line_api, path, Some(&alice)).await;
        assert_eq!(
            (status, body),
            (
                403,
                json!({"detail": "Operator views need the API token: a LINE user sees only their own jobs"})
            ),
            "{path}"
        );
    }
    let (_, body) = get_as(&token_api, "/api/v1/jobs", Some(API_TOKEN)).await;
    assert_eq!(body["total_count"], 2, "both users' jobs");
}
