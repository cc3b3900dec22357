//! Transport authentication: the HTTP `Authorization` header of a gRPC stream. The client side
//! builds the header value ([`ClientAuth::header_value`]); the server side checks it
//! ([`ServerAuth::check`] / [`ServerAuth::check_async`]). The gRPC wiring lives in the node.
//!
//! The config shapes mirror the `auth` key of client/server configs:
//! `"none"`, `{basic: {username, password}}`, `{bearer: {token}}`, `{static_jwt: {file, duration}}`
//! (client), `{jwt: {claims: {issuer?, audience?, subject?, custom_claims?}, duration: "1h",
//! key: {encoding: KEY} | {decoding: KEY} | {autoresolve: true}}}`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::key::Key;
use super::provider::{JwtSigner, StaticJwtProvider};
use super::verifier::{JwtVerifier, JwtVerifierConfig};
use super::{AuthError, TokenProvider, TokenVerifier};

/// `Basic base64(username:password)`.
pub fn basic_header_value(username: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {encoded}")
}

/// `Bearer <token>`.
pub fn bearer_header_value(token: &str) -> String {
    format!("Bearer {token}")
}

/// Compares in time that depends only on the lengths, so a wrong guess leaks no prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The credentials after `scheme ` in a header value (scheme matched case-insensitively).
fn credentials<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (found, rest) = header.trim().split_once(' ')?;
    found.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// What a client attaches to its streams.
#[derive(Debug, Clone, Default)]
pub enum ClientAuth {
    /// No `Authorization` header.
    #[default]
    None,
    /// HTTP Basic.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// `Bearer <token>` with a fixed token.
    Bearer(String),
    /// `Bearer <token>` with a token from a provider (a [`JwtSigner`] or [`StaticJwtProvider`]).
    Token(Arc<dyn TokenProvider>),
}

impl ClientAuth {
    /// The `Authorization` header value to send, if any.
    pub fn header_value(&self) -> Result<Option<String>, AuthError> {
        Ok(match self {
            ClientAuth::None => None,
            ClientAuth::Basic { username, password } => Some(basic_header_value(username, password)),
            ClientAuth::Bearer(token) => Some(bearer_header_value(token)),
            ClientAuth::Token(provider) => Some(bearer_header_value(&provider.get_token()?)),
        })
    }
}

/// What a server demands of incoming streams.
#[derive(Debug, Clone, Default)]
pub enum ServerAuth {
    /// Anything goes.
    #[default]
    None,
    /// HTTP Basic with these credentials (`username:password`).
    Basic {
        /// `username:password` as bytes.
        expected: Vec<u8>,
    },
    /// `Bearer <token>` with exactly this token.
    Bearer(String),
    /// `Bearer <jwt>` accepted by this verifier.
    Jwt(Arc<dyn TokenVerifier>),
}

impl ServerAuth {
    /// Basic credentials; the username may not contain `:`.
    pub fn basic(username: &str, password: &str) -> Result<Self, AuthError> {
        if username.contains(':') {
            return Err(AuthError::Config("basic auth username must not contain ':'".into()));
        }
        Ok(ServerAuth::Basic { expected: format!("{username}:{password}").into_bytes() })
    }

    /// A fixed bearer token (not empty).
    pub fn bearer(token: &str) -> Result<Self, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Config("bearer token is empty".into()));
        }
        Ok(ServerAuth::Bearer(token.to_string()))
    }

    /// JWT bearer tokens checked by `verifier`.
    pub fn jwt(verifier: Arc<dyn TokenVerifier>) -> Self {
        ServerAuth::Jwt(verifier)
    }

    /// Checks a request's `Authorization` header without I/O (JWT: cached keys only).
    pub fn check(&self, header: Option<&str>) -> Result<(), AuthError> {
        match self {
            ServerAuth::None => Ok(()),
            ServerAuth::Basic { expected } => check_basic(expected, header),
            ServerAuth::Bearer(token) => check_static_bearer(token, header),
            ServerAuth::Jwt(verifier) => verifier.try_verify(bearer_token(header)?),
        }
    }

    /// Checks a request's `Authorization` header, fetching JWT keys if needed.
    pub async fn check_async(&self, header: Option<&str>) -> Result<(), AuthError> {
        match self {
            ServerAuth::Jwt(verifier) => verifier.verify(bearer_token(header)?).await,
            other => other.check(header),
        }
    }
}

fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let header = header.ok_or(AuthError::Missing)?;
    credentials(header, "Bearer")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AuthError::Verification("Authorization is not a Bearer token".into()))
}

fn check_basic(expected: &[u8], header: Option<&str>) -> Result<(), AuthError> {
    let header = header.ok_or(AuthError::Missing)?;
    let encoded =
        credentials(header, "Basic").ok_or_else(|| AuthError::Verification("Authorization is not Basic".into()))?;
    let given = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| AuthError::Verification("Basic credentials are not base64".into()))?;
    if constant_time_eq(&given, expected) {
        Ok(())
    } else {
        Err(AuthError::Verification("wrong username or password".into()))
    }
}

fn check_static_bearer(expected: &str, header: Option<&str>) -> Result<(), AuthError> {
    let token = bearer_token(header)?;
    if constant_time_eq(token.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(AuthError::Verification("wrong bearer token".into()))
    }
}

/// Claims of a transport JWT (client: what to sign; server: what to demand).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtClaimsConfig {
    /// `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// `aud`: one string or a list.
    #[serde(default)]
    pub audience: Option<OneOrMany>,
    /// `sub`.
    #[serde(default)]
    pub subject: Option<String>,
    /// Extra top-level claims (client only).
    #[serde(default)]
    pub custom_claims: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// As a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Where a transport JWT's key comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JwtKeyConfig {
    /// A private key to sign with (client).
    Encoding(Key),
    /// A public key to verify with (server).
    Decoding(Key),
    /// Fetch keys from the token's issuer (server).
    Autoresolve(bool),
}

/// The `jwt` auth section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthConfig {
    /// Claims.
    #[serde(default)]
    pub claims: JwtClaimsConfig,
    /// Token lifetime, e.g. `"1h"` (client).
    #[serde(default)]
    pub duration: Option<String>,
    /// The key.
    pub key: JwtKeyConfig,
}

/// `{username, password}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// `{token}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerAuthConfig {
    /// The token.
    pub token: String,
}

/// `{file, duration}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticJwtAuthConfig {
    /// The token file.
    pub file: PathBuf,
    /// Seconds (accepted for compatibility; the file is re-read when it changes).
    #[serde(default)]
    pub duration: Option<u64>,
}

/// The client `auth` config key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthConfig {
    /// `"none"`.
    #[default]
    None,
    /// `{basic: {...}}`.
    Basic(BasicAuthConfig),
    /// `{bearer: {...}}`.
    Bearer(BearerAuthConfig),
    /// `{static_jwt: {...}}`.
    StaticJwt(StaticJwtAuthConfig),
    /// `{jwt: {...}}` with an `encoding` key.
    Jwt(JwtAuthConfig),
}

/// The server `auth` config key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerAuthConfig {
    /// `"none"`.
    #[default]
    None,
    /// `{basic: {...}}`.
    Basic(BasicAuthConfig),
    /// `{bearer: {...}}`.
    Bearer(BearerAuthConfig),
    /// `{jwt: {...}}` with a `decoding` key or `autoresolve: true`.
    Jwt(JwtAuthConfig),
}

/// Parses `"500ms"`, `"10s"`, `"1m"`, `"1h"`, `"1d"` (or a bare number of seconds).
pub fn parse_duration(text: &str) -> Result<Duration, AuthError> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| AuthError::Config(format!("bad duration {text:?}")))?;
    let secs = |mul: u64| {
        n.checked_mul(mul)
            .map(Duration::from_secs)
            .ok_or_else(|| AuthError::Config(format!("duration {text:?} overflows")))
    };
    match unit.trim() {
        "" | "s" => secs(1),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => Err(AuthError::Config(format!("bad duration unit in {text:?}"))),
    }
}

/// Token lifetime used when a `jwt` config has no `duration`.
const DEFAULT_JWT_DURATION: Duration = Duration::from_secs(3600);

impl ClientAuthConfig {
    /// Builds the client side (loads keys and files now).
    pub fn build(&self) -> Result<ClientAuth, AuthError> {
        Ok(match self {
            ClientAuthConfig::None => ClientAuth::None,
            ClientAuthConfig::Basic(b) => {
                ClientAuth::Basic { username: b.username.clone(), password: b.password.clone() }
            }
            ClientAuthConfig::Bearer(b) => {
                if b.token.is_empty() {
                    return Err(AuthError::Config("bearer token is empty".into()));
                }
                ClientAuth::Bearer(b.token.clone())
            }
            ClientAuthConfig::StaticJwt(s) => ClientAuth::Token(Arc::new(StaticJwtProvider::new(&s.file)?)),
            ClientAuthConfig::Jwt(j) => {
                let JwtKeyConfig::Encoding(key) = &j.key else {
                    return Err(AuthError::Config("client jwt auth needs key.encoding".into()));
                };
                let duration = match &j.duration {
                    Some(d) => parse_duration(d)?,
                    None => DEFAULT_JWT_DURATION,
                };
                let signer = JwtSigner::with_custom_claims(
                    key.clone(),
                    duration,
                    j.claims.issuer.clone(),
                    j.claims.audience.clone().map(OneOrMany::into_vec),
                    j.claims.subject.clone(),
                    j.claims.custom_claims.clone().unwrap_or_default(),
                )?;
                ClientAuth::Token(Arc::new(signer))
            }
        })
    }
}

impl ServerAuthConfig {
    /// Builds the server side (loads keys now).
    pub fn build(&self) -> Result<ServerAuth, AuthError> {
        match self {
            ServerAuthConfig::None => Ok(ServerAuth::None),
            ServerAuthConfig::Basic(b) => ServerAuth::basic(&b.username, &b.password),
            ServerAuthConfig::Bearer(b) => ServerAuth::bearer(&b.token),
            ServerAuthConfig::Jwt(j) => {
                let (key, autoresolve) = match &j.key {
                    JwtKeyConfig::Decoding(key) => (Some(key.clone()), false),
                    JwtKeyConfig::Autoresolve(true) => (None, true),
                    JwtKeyConfig::Autoresolve(false) | JwtKeyConfig::Encoding(_) => {
                        return Err(AuthError::Config(
                            "server jwt auth needs key.decoding or key.autoresolve: true".into(),
                        ));
                    }
                };
                let verifier = JwtVerifier::new(JwtVerifierConfig {
                    public_key: key,
                    autoresolve,
                    issuer: j.claims.issuer.clone(),
                    audience: j.claims.audience.clone().map(OneOrMany::into_vec),
                    subject: j.claims.subject.clone(),
                    ..JwtVerifierConfig::default()
                })?;
                Ok(ServerAuth::Jwt(Arc::new(verifier)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::SharedSecret;

    #[test]
    fn basic_round_trip_and_rejections() {
        let server = ServerAuth::basic("alice", "pa:ss").unwrap();
        let good = basic_header_value("alice", "pa:ss");
        assert_eq!(good, "Basic YWxpY2U6cGE6c3M=");
        assert_eq!(server.check(Some(&good)), Ok(()));
        assert_eq!(server.check(Some("basic YWxpY2U6cGE6c3M=")), Ok(()));
        assert!(matches!(server.check(Some(&basic_header_value("alice", "pa:sx"))), Err(AuthError::Verification(_))));
        assert!(matches!(server.check(Some(&basic_header_value("bob", "pa:ss"))), Err(AuthError::Verification(_))));
        assert_eq!(server.check(None), Err(AuthError::Missing));
        assert!(server.check(Some("Basic !!!")).is_err());
        assert!(server.check(Some("Bearer YWxpY2U6cGE6c3M=")).is_err());
        assert!(server.check(Some("")).is_err());
        assert!(ServerAuth::basic("a:b", "c").is_err());
    }

    #[test]
    fn static_bearer() {
        let server = ServerAuth::bearer("t0k3n").unwrap();
        let client = ClientAuth::Bearer("t0k3n".into());
        let header = client.header_value().unwrap().unwrap();
        assert_eq!(header, "Bearer t0k3n");
        assert_eq!(server.check(Some(&header)), Ok(()));
        assert!(server.check(Some("Bearer t0k3")).is_err());
        assert!(server.check(Some("Bearer ")).is_err());
        assert!(server.check(Some("t0k3n")).is_err());
        assert_eq!(server.check(None), Err(AuthError::Missing));
        assert!(ServerAuth::bearer("").is_err());
        assert_eq!(ClientAuth::None.header_value(), Ok(None));
    }

    #[tokio::test]
    async fn bearer_from_provider_checked_by_verifier() {
        let secret = Arc::new(SharedSecret::new("id", "s").unwrap());
        let client = ClientAuth::Token(secret.clone());
        let server = ServerAuth::jwt(secret);
        let header = client.header_value().unwrap().unwrap();
        assert_eq!(server.check(Some(&header)), Ok(()));
        assert_eq!(server.check_async(Some(&header)).await, Ok(()));
        assert!(server.check_async(Some("Bearer x:y")).await.is_err());
    }

    #[test]
    fn config_shapes() {
        let none: ClientAuthConfig = serde_json::from_value(serde_json::json!("none")).unwrap();
        assert_eq!(none, ClientAuthConfig::None);
        let basic: ServerAuthConfig =
            serde_json::from_value(serde_json::json!({"basic": {"username": "u", "password": "p"}})).unwrap();
        assert!(matches!(basic.build().unwrap(), ServerAuth::Basic { .. }));
        let jwt: ServerAuthConfig = serde_json::from_value(serde_json::json!({"jwt": {
            "claims": {"issuer": "https://issuer.example", "audience": "slim"},
            "duration": "1h", "key": {"autoresolve": true}}}))
        .unwrap();
        assert!(matches!(jwt.build().unwrap(), ServerAuth::Jwt(_)));
        let bad: ServerAuthConfig =
            serde_json::from_value(serde_json::json!({"jwt": {"key": {"autoresolve": false}}})).unwrap();
        assert!(matches!(bad.build(), Err(AuthError::Config(_))));
        let client: ClientAuthConfig = serde_json::from_value(serde_json::json!({"jwt": {
            "claims": {"audience": ["a", "b"], "custom_claims": {"role": "node"}},
            "duration": "10m", "key": {"encoding": {"algorithm": "HS256", "format": "Pem", "str": "k"}}}}))
        .unwrap();
        let header = client.build().unwrap().header_value().unwrap().unwrap();
        assert!(header.starts_with("Bearer ey"));
        assert!(serde_json::from_value::<ClientAuthConfig>(serde_json::json!({"basic": {"username": "u"}})).is_err());
    }

    #[tokio::test]
    async fn jwt_transport_round_trip() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/jwt");
        let client: ClientAuthConfig = serde_json::from_value(serde_json::json!({"jwt": {
            "claims": {"issuer": "node-a", "audience": ["slim-nodes"], "subject": "node-a"},
            "duration": "1h",
            "key": {"encoding": {"algorithm": "ES256", "format": "Pem", "file": format!("{dir}/ec256_a.key")}}}}))
        .unwrap();
        let header = client.build().unwrap().header_value().unwrap().unwrap();
        let server = |audience: &str, pub_file: &str| -> ServerAuth {
            let cfg: ServerAuthConfig = serde_json::from_value(serde_json::json!({"jwt": {
                "claims": {"issuer": "node-a", "audience": audience},
                "key": {"decoding": {"algorithm": "ES256", "format": "Pem", "file": format!("{dir}/{pub_file}")}}}}))
            .unwrap();
            cfg.build().unwrap()
        };
        assert_eq!(server("slim-nodes", "ec256_a.pub.pem").check(Some(&header)), Ok(()));
        assert_eq!(server("slim-nodes", "ec256_a.pub.pem").check_async(Some(&header)).await, Ok(()));
        assert!(server("elsewhere", "ec256_a.pub.pem").check(Some(&header)).is_err());
        assert!(server("slim-nodes", "ec256_b.pub.pem").check(Some(&header)).is_err());
        assert_eq!(server("slim-nodes", "ec256_a.pub.pem").check(None), Err(AuthError::Missing));
        let missing_key: ServerAuthConfig = serde_json::from_value(serde_json::json!({"jwt": {
            "key": {"decoding": {"algorithm": "ES256", "format": "Pem", "file": "/nonexistent.pem"}}}}))
        .unwrap();
        assert!(matches!(missing_key.build(), Err(AuthError::Config(_))));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }
}
