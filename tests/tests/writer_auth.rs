//! Push authentication as Google does it: an RSA key made by the test, its public half
//! served as a JWKS on a loopback port, tokens signed like Google's push tokens. A valid
//! token is accepted; every kind of bad token is refused (401, or 403 for a valid token
//! of another account) with nothing written; an unknown `kid` costs exactly one refetch.

mod writer_common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use job_trace::oidc::{OidcConfig, PushVerifier};
use job_trace_tests::jwks::serve_jwks;
use job_trace_tests::{free_port, fresh_store};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::PrivateKey;
use serde_json::{json, Value};
use writer_common::*;

const AUDIENCE: &str = "trace-writer";
const PUSHER: &str = "pubsub-push@demo.iam.gserviceaccount.com";

/// A test RSA key (made once per process: key generation is slow in debug builds).
struct TestKey {
    private: PrivateKey,
    kid: String,
}

fn make_key(kid: &str) -> TestKey {
    TestKey {
        private: PrivateKey::new(&mut getrandom::SysRng, 2048).expect("an RSA key"),
        kid: kid.into(),
    }
}

fn google_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| make_key("google-key-1"))
}

fn attacker_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| make_key("google-key-1"))
}

fn rotated_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| make_key("google-key-2"))
}

impl TestKey {
    fn jwk(&self) -> Value {
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let public = self.private.to_public_key();
        json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": url.encode(public.n_bytes()),
            "e": url.encode(public.e_bytes()),
        })
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with_kid(claims, Some(&self.kid))
    }

    fn sign_with_kid(&self, claims: &Value, kid: Option<&str>) -> String {
        let der = self.private.to_pkcs1_der().expect("DER");
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(der.as_bytes()))
            .expect("sign")
    }

    fn public_pem(&self) -> String {
        self.private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("PEM")
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims of a Google push token.
fn claims() -> Value {
    json!({
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "azp": "107382468212712835555",
        "sub": "107382468212712835555",
        "email": PUSHER,
        "email_verified": true,
        "iat": now() - 5,
        "exp": now() + 3600,
    })
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    if value.is_null() {
        claims.as_object_mut().unwrap().remove(field);
    } else {
        claims[field] = value;
    }
    claims
}

fn verifier(jwks_url: &str) -> Arc<PushVerifier> {
    Arc::new(PushVerifier::new(OidcConfig {
        audience: AUDIENCE.into(),
        service_accounts: vec![
            PUSHER.into(),
            "other-pusher@demo.iam.gserviceaccount.com".into(),
        ],
        jwks_url: jwks_url.into(),
        min_refresh: Duration::from_secs(30),
    }))
}

/// POSTs a new job message with `authorization`; returns the status, the body and
/// whether a trace was written.
async fn push_as(writer: &Writer, authorization: Option<&str>) -> (u16, String, bool) {
    let (job, body) = job_push(Some("https://suumo.jp/ms/chuko/nc_auth/"));
    let mut headers = vec![("content-type", "application/json")];
    let bearer;
    if let Some(value) = authorization {
        bearer = value.to_owned();
        headers.push(("authorization", &bearer));
    }
    let (status, text) = writer
        .post_raw(&headers, serde_json::to_vec(&body).unwrap())
        .await;
    let written = writer.trace(&job).await.is_some();
    (status, text, written)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn unsigned(header: Value, claims: &Value) -> String {
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        url.encode(header.to_string()),
        url.encode(claims.to_string())
    )
}

#[tokio::test]
async fn a_valid_token_is_accepted_and_every_bad_one_refused_with_nothing_written() {
    let key = google_key();
    let jwks = serve_jwks(json!({ "keys": [key.jwk()] })).await;
    let writer =
        Writer::start_verified(fresh_store("writer_auth").await, verifier(&jwks.url)).await;

    let (status, text, written) = push_as(&writer, Some(&bearer(&key.sign(&claims())))).await;
    assert_eq!((status, written), (204, true), "a valid token: {text}");
    let (status, _, written) = push_as(
        &writer,
        Some(&bearer(&key.sign(&with(
            claims(),
            "iss",
            json!("accounts.google.com"),
        )))),
    )
    .await;
    assert_eq!((status, written), (204, true), "the short issuer spelling");
    let (status, _, written) = push_as(
        &writer,
        Some(&bearer(&key.sign(&with(
            claims(),
            "exp",
            json!(now() - 20),
        )))),
    )
    .await;
    assert_eq!((status, written), (204, true), "expired within the leeway");
    let (status, _, written) = push_as(
        &writer,
        Some(&bearer(&key.sign(&with(
            claims(),
            "nbf",
            json!(now() + 20),
        )))),
    )
    .await;
    assert_eq!(
        (status, written),
        (204, true),
        "not yet valid within the leeway"
    );

    let hs256_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(key.public_pem().as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let refused: Vec<(&str, Option<String>, u16)> = vec![
        ("no Authorization header", None, 401),
        ("not a bearer token", Some("Basic dXNlcjpwYXNz".into()), 401),
        ("an empty bearer token", Some("Bearer ".into()), 401),
        ("not a JWT", Some(bearer("hello.world")), 401),
        (
            "signed by another key under the same kid",
            Some(bearer(&attacker_key().sign(&claims()))),
            401,
        ),
        (
            "a tampered payload",
            Some(bearer(&{
                let token = key.sign(&claims());
                let parts: Vec<&str> = token.split('.').collect();
                let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(with(claims(), "email", json!("intruder@evil.example")).to_string());
                format!("{}.{}.{}", parts[0], forged, parts[2])
            })),
            401,
        ),
        (
            "expired",
            Some(bearer(&key.sign(&with(
                with(claims(), "exp", json!(now() - 3600)),
                "iat",
                json!(now() - 7200),
            )))),
            401,
        ),
        (
            "issued in the future",
            Some(bearer(&key.sign(&with(
                claims(),
                "iat",
                json!(now() + 600),
            )))),
            401,
        ),
        (
            "not valid for another hour",
            Some(bearer(&key.sign(&with(
                claims(),
                "nbf",
                json!(now() + 3600),
            )))),
            401,
        ),
        (
            "without exp",
            Some(bearer(&key.sign(&with(claims(), "exp", Value::Null)))),
            401,
        ),
        (
            "a wrong audience",
            Some(bearer(&key.sign(&with(
                claims(),
                "aud",
                json!("https://other.example/"),
            )))),
            401,
        ),
        (
            "a wrong issuer",
            Some(bearer(&key.sign(&with(
                claims(),
                "iss",
                json!("https://accounts.evil.example"),
            )))),
            401,
        ),
        (
            "no email",
            Some(bearer(&key.sign(&with(claims(), "email", Value::Null)))),
            401,
        ),
        (
            "email_verified false",
            Some(bearer(&key.sign(&with(
                claims(),
                "email_verified",
                json!(false),
            )))),
            401,
        ),
        (
            "email_verified missing",
            Some(bearer(&key.sign(&with(
                claims(),
                "email_verified",
                Value::Null,
            )))),
            401,
        ),
        (
            "alg none",
            Some(bearer(&unsigned(
                json!({ "alg": "none", "typ": "JWT", "kid": key.kid }),
                &claims(),
            ))),
            401,
        ),
        (
            "HS256 with the public key as the secret",
            Some(bearer(&hs256_with_public_key)),
            401,
        ),
        (
            "no kid",
            Some(bearer(&key.sign_with_kid(&claims(), None))),
            401,
        ),
        (
            "a valid token of another service account",
            Some(bearer(&key.sign(&with(
                claims(),
                "email",
                json!("someone-else@demo.iam.gserviceaccount.com"),
            )))),
            403,
        ),
    ];
    for (what, authorization, expected) in refused {
        let (status, text, written) = push_as(&writer, authorization.as_deref()).await;
        assert_eq!(status, expected, "{what}: {text}");
        assert!(!written, "{what}: nothing is written");
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {text}"));
        assert!(body["error"].is_string(), "{what}: {text}");
        assert!(
            !text.contains("eyJ"),
            "{what}: the token is not echoed: {text}"
        );
    }
    assert_eq!(
        jwks.hits.load(Ordering::SeqCst),
        1,
        "one fetch of the key set for all of these"
    );
}

#[tokio::test]
async fn an_unknown_kid_costs_exactly_one_refetch() {
    let key = google_key();
    let jwks = serve_jwks(json!({ "keys": [key.jwk()] })).await;
    let verifier = verifier(&jwks.url);
    let writer = Writer::start_verified(fresh_store("writer_kid").await, verifier.clone()).await;
    let (status, _, _) = push_as(&writer, Some(&bearer(&key.sign(&claims())))).await;
    assert_eq!(status, 204);
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 1);

    // A burst of tokens naming a kid nobody published, some at once, some in a row.
    let ghost = make_key("ghost-kid");
    let token = bearer(&ghost.sign(&claims()));
    let at_once = futures::future::join_all((0..5).map(|_| push_as(&writer, Some(&token)))).await;
    for (status, text, written) in at_once {
        assert_eq!((status, written), (401, false), "{text}");
    }
    for _ in 0..5 {
        let (status, _, written) = push_as(&writer, Some(&token)).await;
        assert_eq!((status, written), (401, false));
    }
    assert_eq!(
        jwks.hits.load(Ordering::SeqCst),
        2,
        "the unknown kid triggered exactly one refetch"
    );
    assert_eq!(verifier.jwks_fetches(), 2);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_by_one_refetch() {
    let key = google_key();
    let jwks = serve_jwks(json!({ "keys": [key.jwk()] })).await;
    let writer =
        Writer::start_verified(fresh_store("writer_rotate").await, verifier(&jwks.url)).await;
    assert_eq!(
        push_as(&writer, Some(&bearer(&key.sign(&claims()))))
            .await
            .0,
        204
    );
    // Google publishes a new key and starts signing with it.
    let rotated = rotated_key();
    *jwks.keys.lock().unwrap() = json!({ "keys": [key.jwk(), rotated.jwk()] });
    for _ in 0..3 {
        let (status, text, written) =
            push_as(&writer, Some(&bearer(&rotated.sign(&claims())))).await;
        assert_eq!((status, written), (204, true), "{text}");
    }
    assert_eq!(
        jwks.hits.load(Ordering::SeqCst),
        2,
        "one refetch, then cached"
    );
}

#[tokio::test]
async fn an_unavailable_key_set_is_our_503_and_nothing_is_written() {
    let key = google_key();
    let jwks = serve_jwks(json!({ "keys": [key.jwk()] })).await;
    jwks.failing.store(true, Ordering::SeqCst);
    let writer =
        Writer::start_verified(fresh_store("writer_nokeys").await, verifier(&jwks.url)).await;
    let token = bearer(&key.sign(&claims()));
    let (status, text, written) = push_as(&writer, Some(&token)).await;
    assert_eq!((status, written), (503, false), "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({ "error": "authentication temporarily unavailable" })
    );
    // Pub/Sub retries; once the key set answers again, the push goes through.
    jwks.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, text, written) = push_as(&writer, Some(&token)).await;
    assert_eq!((status, written), (204, true), "{text}");

    // A key set on a port nobody listens on.
    let nowhere = format!("http://127.0.0.1:{}/certs", free_port());
    let writer =
        Writer::start_verified(fresh_store("writer_nokeys").await, verifier(&nowhere)).await;
    let (status, _, written) = push_as(&writer, Some(&token)).await;
    assert_eq!((status, written), (503, false));
}
