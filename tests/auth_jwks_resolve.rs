//! JWKS auto-resolve against a real HTTP issuer on 127.0.0.1: OIDC discovery, the jwks.json
//! fallback, caching, key rotation, and issuers that misbehave.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::{Value, json};
use slim_bindings::auth::{AuthError, JwtVerifier, JwtVerifierConfig, TokenVerifier};
use tokio::net::TcpListener;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jwt").join(name)
}

fn ec_key(name: &str) -> EncodingKey {
    EncodingKey::from_ec_pem(&std::fs::read(data(name)).unwrap()).unwrap()
}

fn jwk(name: &str, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(&ec_key(name), jsonwebtoken::Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.into());
    serde_json::to_value(jwk).unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(key: &str, kid: Option<&str>, iss: &str, sub: &str) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = kid.map(str::to_string);
    let claims = json!({"iss": iss, "sub": sub, "aud": ["slim"], "exp": now() + 600, "iat": now()});
    jsonwebtoken::encode(&header, &claims, &ec_key(key)).unwrap()
}

/// A tiny issuer: path → (status, body), with a request counter per path.
#[derive(Clone, Default)]
struct Issuer {
    routes: Arc<Mutex<HashMap<String, (StatusCode, String)>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    total: Arc<AtomicUsize>,
}

impl Issuer {
    fn set(&self, path: &str, status: StatusCode, body: impl Into<String>) {
        self.routes.lock().insert(path.to_string(), (status, body.into()));
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().get(path).copied().unwrap_or(0)
    }

    async fn start(&self) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let issuer = self.clone();
        let task = tokio::spawn(async move {
            // Bounded: the test aborts this task when done; each connection is one short request.
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let issuer = issuer.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let issuer = issuer.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            *issuer.hits.lock().entry(path.clone()).or_default() += 1;
                            issuer.total.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = issuer
                                .routes
                                .lock()
                                .get(&path)
                                .cloned()
                                .unwrap_or((StatusCode::NOT_FOUND, String::new()));
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = status;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (format!("http://{addr}"), task)
    }
}

fn autoresolve(issuer: Option<&str>) -> JwtVerifier {
    JwtVerifier::new(JwtVerifierConfig {
        autoresolve: true,
        issuer: issuer.map(str::to_string),
        audience: Some(vec!["slim".into()]),
        ..JwtVerifierConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn discovery_then_cached_keys() {
    let issuer = Issuer::default();
    let (base, server) = issuer.start().await;
    issuer.set(
        "/.well-known/openid-configuration",
        StatusCode::OK,
        json!({"jwks_uri": format!("{base}/keys")}).to_string(),
    );
    issuer.set("/keys", StatusCode::OK, json!({"keys": [jwk("ec256_a.key", "k1")]}).to_string());
    let v = autoresolve(Some(&base));

    let t1 = token("ec256_a.key", Some("k1"), &base, "alice");
    // The sync path never fetches.
    assert!(matches!(v.try_verify(&t1), Err(AuthError::Verification(_))));
    assert_eq!(issuer.total.load(Ordering::SeqCst), 0);
    assert_eq!(v.verify(&t1).await, Ok(()));
    assert_eq!(issuer.hits("/.well-known/openid-configuration"), 1);
    assert_eq!(issuer.hits("/keys"), 1);
    // Another token of the same issuer: keys are cached, the sync path suffices.
    let t2 = token("ec256_a.key", Some("k1"), &base, "bob");
    assert_eq!(v.try_verify(&t2), Ok(()));
    assert_eq!(v.verify(&t2).await, Ok(()));
    assert_eq!(issuer.total.load(Ordering::SeqCst), 2);
    // Signed by a key the issuer does not publish, under the published kid.
    let forged = token("ec256_b.key", Some("k1"), &base, "mallory");
    assert!(matches!(v.verify(&forged).await, Err(AuthError::Verification(_))));
    // Another issuer than the configured one: refused without any request.
    let elsewhere = token("ec256_a.key", Some("k1"), "http://127.0.0.1:9", "alice");
    assert!(matches!(v.verify(&elsewhere).await, Err(AuthError::Verification(_))));
    assert_eq!(issuer.total.load(Ordering::SeqCst), 2);
    server.abort();
}

#[tokio::test]
async fn falls_back_to_well_known_jwks_json() {
    let issuer = Issuer::default();
    let (base, server) = issuer.start().await;
    issuer.set("/.well-known/jwks.json", StatusCode::OK, json!({"keys": [jwk("ec256_a.key", "k1")]}).to_string());
    // No configured issuer: the token's own iss is used.
    let v = autoresolve(None);
    assert_eq!(v.verify(&token("ec256_a.key", Some("k1"), &base, "alice")).await, Ok(()));
    assert_eq!(issuer.hits("/.well-known/openid-configuration"), 1);
    assert_eq!(issuer.hits("/.well-known/jwks.json"), 1);
    // Without a kid, every compatible key is tried.
    assert_eq!(v.verify(&token("ec256_a.key", None, &base, "carol")).await, Ok(()));
    // A token without iss cannot be resolved.
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".into());
    let no_iss =
        jsonwebtoken::encode(&header, &json!({"aud": "slim", "exp": now() + 60}), &ec_key("ec256_a.key")).unwrap();
    assert!(matches!(v.verify(&no_iss).await, Err(AuthError::Verification(_))));
    server.abort();
}

#[tokio::test]
async fn key_rotation_fetches_again() {
    let issuer = Issuer::default();
    let (base, server) = issuer.start().await;
    issuer.set("/.well-known/jwks.json", StatusCode::OK, json!({"keys": [jwk("ec256_a.key", "k1")]}).to_string());
    let v = autoresolve(Some(&base)).with_refetch_interval(Duration::ZERO);
    assert_eq!(v.verify(&token("ec256_a.key", Some("k1"), &base, "a")).await, Ok(()));
    assert_eq!(issuer.hits("/.well-known/jwks.json"), 1);

    // The issuer rotates: k2 appears.
    issuer.set(
        "/.well-known/jwks.json",
        StatusCode::OK,
        json!({"keys": [jwk("ec256_a.key", "k1"), jwk("ec256_b.key", "k2")]}).to_string(),
    );
    let rotated = token("ec256_b.key", Some("k2"), &base, "a");
    assert!(v.try_verify(&rotated).is_err(), "sync path must not fetch");
    assert_eq!(v.verify(&rotated).await, Ok(()));
    assert_eq!(issuer.hits("/.well-known/jwks.json"), 2);
    assert_eq!(v.try_verify(&token("ec256_b.key", Some("k2"), &base, "b")), Ok(()));
    // A kid the issuer never published: one more fetch, then a typed refusal.
    assert!(matches!(v.verify(&token("ec256_b.key", Some("k9"), &base, "a")).await, Err(AuthError::Verification(_))));
    assert_eq!(issuer.hits("/.well-known/jwks.json"), 3);
    server.abort();
}

#[tokio::test]
async fn unknown_kids_do_not_hammer_the_issuer() {
    let issuer = Issuer::default();
    let (base, server) = issuer.start().await;
    issuer.set("/.well-known/jwks.json", StatusCode::OK, json!({"keys": [jwk("ec256_a.key", "k1")]}).to_string());
    let v = Arc::new(autoresolve(Some(&base)));
    assert_eq!(v.verify(&token("ec256_a.key", Some("k1"), &base, "a")).await, Ok(()));
    // Within the default refetch interval, unknown kids are refused from the cache.
    for i in 0..20 {
        let t = token("ec256_a.key", Some(&format!("bogus-{i}")), &base, "a");
        assert!(v.verify(&t).await.is_err());
    }
    assert_eq!(issuer.total.load(Ordering::SeqCst), 2, "discovery + one JWKS fetch only");

    // A burst of first-time verifications from a cold verifier makes one resolution.
    let cold = Arc::new(autoresolve(Some(&base)));
    let tokens: Vec<String> = (0..16).map(|i| token("ec256_a.key", Some("k1"), &base, &format!("u{i}"))).collect();
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let cold = cold.clone();
            tokio::spawn(async move { cold.verify(&t).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Ok(()));
    }
    assert_eq!(issuer.total.load(Ordering::SeqCst), 4);
    server.abort();
}

#[tokio::test]
async fn broken_issuers_give_typed_errors() {
    let issuer = Issuer::default();
    let (base, server) = issuer.start().await;
    let v = autoresolve(None).with_refetch_interval(Duration::ZERO);
    let t = token("ec256_a.key", Some("k1"), &base, "a");

    // Nothing published at all.
    assert!(matches!(v.verify(&t).await, Err(AuthError::KeyFetch(_))));
    // A JWKS that is not JSON.
    issuer.set("/.well-known/jwks.json", StatusCode::OK, "<html>not json</html>");
    assert!(matches!(v.verify(&t).await, Err(AuthError::KeyFetch(_))));
    // Discovery that points nowhere useful.
    issuer.set(
        "/.well-known/openid-configuration",
        StatusCode::OK,
        json!({"jwks_uri": format!("{base}/gone")}).to_string(),
    );
    assert!(matches!(v.verify(&t).await, Err(AuthError::KeyFetch(_))));
    // A JWKS bigger than the body cap.
    issuer.set("/gone", StatusCode::OK, format!("{{\"keys\": [], \"pad\": \"{}\"}}", "x".repeat(2 << 20)));
    assert!(matches!(v.verify(&t).await, Err(AuthError::KeyFetch(_))));
    // A JWKS that publishes only a shared secret (anyone could forge with it).
    issuer.set("/gone", StatusCode::OK, json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k1"}]}).to_string());
    assert!(matches!(v.verify(&t).await, Err(AuthError::KeyFetch(_))));
    // An issuer URL that is not http(s).
    let weird = token("ec256_a.key", Some("k1"), "file:///etc/passwd", "a");
    assert!(matches!(v.verify(&weird).await, Err(AuthError::KeyFetch(_))));
    // Recovery once the issuer is fixed.
    issuer.set("/gone", StatusCode::OK, json!({"keys": [jwk("ec256_a.key", "k1")]}).to_string());
    assert_eq!(v.verify(&t).await, Ok(()));
    server.abort();
}

#[tokio::test]
async fn silent_issuer_times_out() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let held_in = held.clone();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            held_in.lock().push(stream);
        }
    });
    // Timers never fire early, so the lower bounds below hold on any machine; how much later than
    // its bound a call returns depends on the machine and is not checked (a hang is caught by
    // HANG_GUARD).
    const HANG_GUARD: Duration = Duration::from_secs(60);
    let v = autoresolve(Some(&base)).with_fetch_timeout(Duration::from_millis(300));
    let start = Instant::now();
    let got = tokio::time::timeout(HANG_GUARD, v.verify(&token("ec256_a.key", Some("k1"), &base, "a")))
        .await
        .expect("the fetch is bounded");
    let waited = start.elapsed();
    assert!(matches!(got, Err(AuthError::KeyFetchTimeout(_))), "{got:?}");
    assert!(waited >= Duration::from_millis(300), "gave up before its bound: {waited:?}");
    let connections = held.lock().len();
    assert!(connections > 0);

    // A failure is remembered for the refetch interval: the next message fails without asking
    // the issuer again (no new connection to it).
    let again = tokio::time::timeout(HANG_GUARD, v.verify(&token("ec256_a.key", Some("k1"), &base, "b")))
        .await
        .expect("bounded");
    assert!(matches!(again, Err(AuthError::KeyFetchTimeout(_))), "{again:?}");
    assert_eq!(held.lock().len(), connections, "the remembered failure did not refetch");

    // The default bound is 5 s.
    let v = autoresolve(Some(&base));
    let start = Instant::now();
    let got = tokio::time::timeout(HANG_GUARD, v.verify(&token("ec256_a.key", Some("k1"), &base, "a")))
        .await
        .expect("the fetch is bounded");
    assert!(matches!(got, Err(AuthError::KeyFetchTimeout(_))), "{got:?}");
    assert!(start.elapsed() >= Duration::from_secs(5), "gave up before the default bound: {:?}", start.elapsed());
    server.abort();
}
