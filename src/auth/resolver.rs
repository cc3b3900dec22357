//! Fetches an issuer's JWKS: `{issuer}/.well-known/openid-configuration` → `jwks_uri`, falling back
//! to `{issuer}/.well-known/jwks.json`. Plain HTTP/1.1 over hyper; https through rustls (ring).

use std::sync::OnceLock;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::AuthError;
use super::key::{KeyFamily, VerifyingKey, parse_jwks};

/// A discovery document or JWKS larger than this is refused.
const MAX_BODY_BYTES: usize = 1 << 20;
const USER_AGENT: &str = concat!("slim-bindings-auth/", env!("CARGO_PKG_VERSION"));

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// One shared client (connection pool) for every verifier in the process.
fn client() -> Result<&'static HttpClient, AuthError> {
    static CLIENT: OnceLock<Result<HttpClient, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
                .map_err(|e| format!("TLS setup failed: {e}"))?
                .https_or_http()
                .enable_http1()
                .build();
            // No pooling: fetches are rare, and a pooled connection would be tied to the runtime
            // that opened it (the bindings and the tests run several).
            Ok(Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(https))
        })
        .as_ref()
        .map_err(|e| AuthError::KeyFetch(e.clone()))
}

/// GETs `url` and returns its body (2xx only, size-capped).
async fn get(url: &str) -> Result<Bytes, AuthError> {
    let uri: hyper::Uri = url.parse().map_err(|e| AuthError::KeyFetch(format!("bad URL {url:?}: {e}")))?;
    let request = hyper::Request::get(uri)
        .header(hyper::header::USER_AGENT, USER_AGENT)
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| AuthError::KeyFetch(format!("bad request for {url}: {e}")))?;
    let response = client()?.request(request).await.map_err(|e| AuthError::KeyFetch(format!("GET {url}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(AuthError::KeyFetch(format!("GET {url}: HTTP {status}")));
    }
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| AuthError::KeyFetch(format!("GET {url}: reading body: {e}")))?;
    Ok(body.to_bytes())
}

/// Resolves and parses the issuer's JWKS, all within `timeout`.
pub(crate) async fn fetch_issuer_keys(issuer: &str, timeout: Duration) -> Result<Vec<VerifyingKey>, AuthError> {
    let base = issuer.trim_end_matches('/');
    if !(base.starts_with("https://") || base.starts_with("http://")) {
        return Err(AuthError::KeyFetch(format!("issuer {issuer:?} is not an http(s) URL")));
    }
    let work = async {
        let discovery = format!("{base}/.well-known/openid-configuration");
        let jwks_uri = match get(&discovery).await {
            Ok(body) => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|doc| doc.get("jwks_uri").and_then(|u| u.as_str()).map(str::to_string)),
            Err(e) => {
                tracing::debug!(error = %e, "OIDC discovery failed; trying /.well-known/jwks.json");
                None
            }
        }
        .unwrap_or_else(|| format!("{base}/.well-known/jwks.json"));
        let body = get(&jwks_uri).await?;
        let text =
            std::str::from_utf8(&body).map_err(|_| AuthError::KeyFetch(format!("JWKS at {jwks_uri} is not UTF-8")))?;
        let mut keys = parse_jwks(text).map_err(|e| AuthError::KeyFetch(format!("{jwks_uri}: {e}")))?;
        // A shared secret published over HTTP is no secret: anyone could forge tokens with it.
        keys.retain(|k| k.family != KeyFamily::Hmac);
        if keys.is_empty() {
            return Err(AuthError::KeyFetch(format!("{jwks_uri}: no public signature key")));
        }
        Ok(keys)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(AuthError::KeyFetchTimeout(format!("issuer {issuer} did not answer within {timeout:?}"))),
    }
}
