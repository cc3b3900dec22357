//! [`JwtVerifier`]: checks JWT signatures and claims against a configured key (PEM, JWK, JWKS) or
//! against the issuer's JWKS fetched over HTTP (auto-resolve).
//!
//! Rules, in order: tokens over [`MAX_TOKEN_BYTES`] are refused unparsed; a token verified before
//! and not yet expired is accepted from a bounded cache; the header `alg` picks the algorithm (there
//! is no `none`), and only keys of that algorithm's family (and curve) are tried; a `kid` selects
//! keys with that id; `exp` is required; `exp` and `nbf` are enforced with [`DEFAULT_LEEWAY`];
//! configured `iss`/`aud`/`sub` must match (and are then required).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use parking_lot::RwLock;
use serde::Deserialize;

use super::key::{Algorithm, Key, KeyData, VerifyingKey};
use super::provider::unix_now;
use super::resolver::fetch_issuer_keys;
use super::{AuthError, BoxFuture, TokenVerifier};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew tolerated on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// How long a fetched JWKS is trusted before it is fetched again.
pub const DEFAULT_JWKS_TTL: Duration = Duration::from_secs(3600);
/// The longest one JWKS resolution (discovery + JWKS) may take.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Per issuer, at most one refetch in this interval for a token with an unknown `kid`, and no new
/// attempt within it after a failed fetch.
pub const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// At most this many verified tokens are remembered.
const TOKEN_CACHE_CAPACITY: usize = 4096;
/// At most this many issuers' key sets are remembered (auto-resolve without a configured issuer).
const ISSUER_CACHE_CAPACITY: usize = 16;
/// At most this many failed issuers are remembered.
const FAILED_FETCH_CAPACITY: usize = 64;

/// Verifies JWTs. Cheap to share (`Arc`); all caches are internal and thread-safe.
pub struct JwtVerifier {
    static_keys: Option<RwLock<Arc<Vec<VerifyingKey>>>>,
    /// The configured key when it lives in a file: re-read when the file changes.
    key_file: Option<KeyFileWatch>,
    issuer: Option<String>,
    audience: Option<Vec<String>>,
    subject: Option<String>,
    require_iss: bool,
    require_aud: bool,
    require_sub: bool,
    leeway: Duration,
    jwks_ttl: Duration,
    fetch_timeout: Duration,
    refetch_interval: Duration,
    /// Verified token → its `exp` (Unix seconds).
    verified: RwLock<HashMap<String, u64>>,
    issuer_keys: RwLock<HashMap<String, IssuerKeys>>,
    /// Recent failed fetches: retried only after the refetch interval, so a dead issuer costs one
    /// bounded wait per interval instead of one per message.
    failed_fetches: parking_lot::Mutex<HashMap<String, (Instant, AuthError)>>,
    /// One fetch at a time, so a burst of tokens from a new issuer makes one request.
    fetch_gate: tokio::sync::Mutex<()>,
}

struct KeyFileWatch {
    key: Key,
    path: std::path::PathBuf,
    /// (modification time, length, last look).
    stamp: parking_lot::Mutex<(Option<std::time::SystemTime>, u64, Instant)>,
}

/// How often a key file's modification time is looked at.
const KEY_FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

fn file_stamp(path: &std::path::Path) -> (Option<std::time::SystemTime>, u64) {
    std::fs::metadata(path).map(|m| (m.modified().ok(), m.len())).unwrap_or((None, 0))
}

struct IssuerKeys {
    keys: Arc<Vec<VerifyingKey>>,
    fetched_at: Instant,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("static_keys", &self.static_keys)
            .field("autoresolve", &self.static_keys.is_none())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// What one verification pass concluded.
enum Attempt {
    Verified,
    /// The issuer's keys are not cached (or are stale, or lack the token's `kid`).
    NeedKeys {
        issuer: String,
        unknown_kid: bool,
    },
    Failed(AuthError),
}

#[derive(Deserialize)]
struct IssuerClaim {
    iss: Option<String>,
}

#[derive(Deserialize)]
struct ExpClaim {
    exp: f64,
}

fn rejected(msg: impl Into<String>) -> AuthError {
    AuthError::Verification(msg.into())
}

/// What a [`JwtVerifier`] checks tokens against: a key (or the issuer's published keys) and the
/// claims a token must carry.
///
/// ```
/// # use slim_bindings::auth::{Algorithm, JwtVerifierConfig, Key, KeyFormat};
/// let cfg = JwtVerifierConfig {
///     issuer: Some("https://issuer.example".into()),
///     audience: Some(vec!["slim".into()]),
///     ..JwtVerifierConfig::with_key(Key::from_file(Algorithm::ES256, KeyFormat::Pem, "issuer.pub.pem"))
/// };
/// # let _ = cfg;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtVerifierConfig {
    /// The key tokens are checked against; when set, `autoresolve` is ignored.
    pub public_key: Option<Key>,
    /// Without a key: fetch each token issuer's JWKS (OIDC discovery) and check against it.
    pub autoresolve: bool,
    /// `iss` must be this (and is then required); with `autoresolve`, keys are fetched only from it.
    pub issuer: Option<String>,
    /// `aud` must contain one of these (and is then required); an empty list is refused.
    pub audience: Option<Vec<String>>,
    /// `sub` must be this (and is then required).
    pub subject: Option<String>,
    /// `iss` must be present, whatever its value.
    pub require_iss: bool,
    /// `aud` must be present, whatever its value.
    pub require_aud: bool,
    /// `sub` must be present, whatever its value.
    pub require_sub: bool,
}

impl JwtVerifierConfig {
    /// Checks tokens against `key`, with no claim requirements beyond `exp`.
    pub fn with_key(key: Key) -> Self {
        Self { public_key: Some(key), ..Self::default() }
    }

    /// Checks tokens against their issuer's published keys, with no claim requirements beyond `exp`.
    pub fn autoresolve() -> Self {
        Self { autoresolve: true, ..Self::default() }
    }
}

impl JwtVerifier {
    /// Builds a verifier. With a `public_key`, tokens are checked against it; without one,
    /// `autoresolve` must be true and keys are fetched from each token's issuer (restricted to
    /// `issuer` when configured). Key problems are reported here.
    pub fn new(config: JwtVerifierConfig) -> Result<Self, AuthError> {
        let JwtVerifierConfig {
            public_key,
            autoresolve,
            issuer,
            audience,
            subject,
            require_iss,
            require_aud,
            require_sub,
        } = config;
        let key_file = match &public_key {
            Some(key @ Key { data: KeyData::File(path), .. }) => {
                let (modified, len) = file_stamp(path);
                Some(KeyFileWatch {
                    key: key.clone(),
                    path: path.clone(),
                    stamp: parking_lot::Mutex::new((modified, len, Instant::now())),
                })
            }
            _ => None,
        };
        let static_keys = match public_key {
            Some(key) => Some(RwLock::new(Arc::new(key.verifying_keys()?))),
            None if autoresolve => None,
            None => {
                return Err(AuthError::Config("JWT verifier needs a public key or autoresolve=true".into()));
            }
        };
        if audience.as_ref().is_some_and(|a| a.is_empty()) {
            return Err(AuthError::Config("audience list is empty".into()));
        }
        Ok(Self {
            static_keys,
            key_file,
            issuer,
            audience,
            subject,
            require_iss,
            require_aud,
            require_sub,
            leeway: DEFAULT_LEEWAY,
            jwks_ttl: DEFAULT_JWKS_TTL,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            refetch_interval: DEFAULT_REFETCH_INTERVAL,
            verified: RwLock::new(HashMap::new()),
            issuer_keys: RwLock::new(HashMap::new()),
            failed_fetches: parking_lot::Mutex::new(HashMap::new()),
            fetch_gate: tokio::sync::Mutex::new(()),
        })
    }

    /// Sets the clock-skew tolerance on `exp`/`nbf` (default [`DEFAULT_LEEWAY`], at most a day).
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        // Capped at a day: the claim checks subtract it from the current time.
        self.leeway = leeway.min(Duration::from_secs(86_400));
        self
    }

    /// Sets how long a fetched JWKS is used (default [`DEFAULT_JWKS_TTL`]).
    pub fn with_jwks_ttl(mut self, ttl: Duration) -> Self {
        self.jwks_ttl = ttl;
        self
    }

    /// Sets the bound on one JWKS resolution (default [`DEFAULT_FETCH_TIMEOUT`]).
    pub fn with_fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Sets how often an unknown `kid` or a failed fetch may trigger a new fetch per issuer
    /// (default [`DEFAULT_REFETCH_INTERVAL`]).
    pub fn with_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// Whether keys come from the token issuer rather than a configured key.
    pub fn is_autoresolve(&self) -> bool {
        self.static_keys.is_none()
    }

    fn validation(&self, alg: Algorithm, check_expiry: bool) -> Validation {
        let mut v = Validation::new(alg.to_jwt());
        v.leeway = self.leeway.as_secs();
        v.validate_exp = check_expiry;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        if self.require_iss || self.issuer.is_some() {
            required.push("iss");
        }
        if self.require_aud || self.audience.is_some() {
            required.push("aud");
        }
        if self.require_sub || self.subject.is_some() {
            required.push("sub");
        }
        v.set_required_spec_claims(&required);
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
        }
        match &self.audience {
            Some(aud) => v.set_audience(aud),
            // Without a configured audience any `aud` is acceptable.
            None => v.validate_aud = false,
        }
        v.sub = self.subject.clone();
        v
    }

    fn cached(&self, token: &str) -> bool {
        self.verified.read().get(token).is_some_and(|&exp| exp > unix_now())
    }

    fn remember(&self, token: &str, exp: u64) {
        let mut verified = self.verified.write();
        if verified.len() >= TOKEN_CACHE_CAPACITY {
            let now = unix_now();
            verified.retain(|_, &mut e| e > now);
            if verified.len() >= TOKEN_CACHE_CAPACITY {
                // Still full of live tokens: start over rather than track recency on the hot path.
                verified.clear();
            }
        }
        verified.insert(token.to_string(), exp);
    }

    /// Keys from the issuer cache, if fresh.
    fn issuer_cached_keys(&self, issuer: &str) -> Option<Arc<Vec<VerifyingKey>>> {
        let cache = self.issuer_keys.read();
        let entry = cache.get(issuer)?;
        (entry.fetched_at.elapsed() < self.jwks_ttl).then(|| entry.keys.clone())
    }

    fn attempt(&self, token: &str) -> Attempt {
        self.attempt_with(token, true)
    }

    /// One verification pass; `check_expiry` false is for credential tokens (their `exp` must
    /// still be present), whose success is not cached for messages.
    fn attempt_with(&self, token: &str, check_expiry: bool) -> Attempt {
        if token.len() > MAX_TOKEN_BYTES {
            return Attempt::Failed(rejected(format!(
                "token is {} bytes, more than the {MAX_TOKEN_BYTES} allowed",
                token.len()
            )));
        }
        if self.cached(token) {
            return Attempt::Verified;
        }
        // `decode_header` refuses `alg: none` and unknown algorithms (no such enum variant).
        let header = match decode_header(token) {
            Ok(h) => h,
            Err(e) => return Attempt::Failed(rejected(format!("malformed token: {e}"))),
        };
        let Some(alg) = Algorithm::from_jwt(header.alg) else {
            return Attempt::Failed(rejected(format!("unsupported algorithm {:?}", header.alg)));
        };
        let (keys, issuer) = match &self.static_keys {
            Some(keys) => {
                self.reload_key_file_if_changed();
                (keys.read().clone(), None)
            }
            None => {
                let iss = match jsonwebtoken::dangerous::insecure_decode_claims::<IssuerClaim>(token) {
                    Ok(IssuerClaim { iss: Some(iss) }) => iss,
                    Ok(_) => return Attempt::Failed(rejected("token has no iss; cannot resolve its keys")),
                    Err(e) => return Attempt::Failed(rejected(format!("malformed token claims: {e}"))),
                };
                // Only the configured issuer may make us fetch anything.
                if self.issuer.as_ref().is_some_and(|configured| *configured != iss) {
                    return Attempt::Failed(rejected(format!("issuer {iss:?} is not the configured issuer")));
                }
                match self.issuer_cached_keys(&iss) {
                    Some(keys) => (keys, Some(iss)),
                    None => return Attempt::NeedKeys { issuer: iss, unknown_kid: false },
                }
            }
        };

        let kid = header.kid.as_deref();
        let by_kid: Vec<&VerifyingKey> = match kid {
            Some(kid) => keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).collect(),
            None => Vec::new(),
        };
        let candidates: Vec<&VerifyingKey> = if !by_kid.is_empty() {
            by_kid.into_iter().filter(|k| k.allows(alg)).collect()
        } else {
            // No kid, or an unknown one: keys without a kid are tried; with no kid, all keys are.
            keys.iter().filter(|k| k.allows(alg) && (kid.is_none() || k.kid.is_none())).collect()
        };
        if candidates.is_empty() {
            if let (Some(issuer), Some(_)) = (issuer, kid) {
                return Attempt::NeedKeys { issuer, unknown_kid: true };
            }
            return Attempt::Failed(rejected(match kid {
                Some(kid) => format!("no {alg} key with kid {kid:?}"),
                None => format!("no key suits algorithm {alg}"),
            }));
        }

        let validation = self.validation(alg, check_expiry);
        let mut last_error = None;
        for key in &candidates {
            match decode::<ExpClaim>(token, &key.key, &validation) {
                Ok(data) => {
                    if check_expiry {
                        self.remember(token, data.claims.exp as u64);
                    }
                    return Attempt::Verified;
                }
                Err(e) => match e.kind() {
                    // Signature-level failures: another key may still fit.
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidEddsaKey
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidKeyFormat
                    | ErrorKind::InvalidAlgorithm => last_error = Some(e),
                    _ => return Attempt::Failed(claim_error(e)),
                },
            }
        }
        Attempt::Failed(rejected(format!(
            "signature does not verify with {} candidate key(s): {}",
            candidates.len(),
            last_error.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    /// Re-reads a file key that changed (looked at once a second at most, only on cache misses).
    /// A rewrite that does not parse keeps the previous keys.
    fn reload_key_file_if_changed(&self) {
        let (Some(watch), Some(keys)) = (&self.key_file, &self.static_keys) else { return };
        let mut stamp = watch.stamp.lock();
        if stamp.2.elapsed() < KEY_FILE_CHECK_INTERVAL {
            return;
        }
        stamp.2 = Instant::now();
        let (modified, len) = file_stamp(&watch.path);
        if (modified, len) == (stamp.0, stamp.1) {
            return;
        }
        match watch.key.verifying_keys() {
            Ok(fresh) => {
                (stamp.0, stamp.1) = (modified, len);
                *keys.write() = Arc::new(fresh);
                // Tokens accepted under the old key must be checked again under the new one.
                self.verified.write().clear();
                tracing::info!(path = %watch.path.display(), "JWT verification key reloaded");
            }
            Err(e) => tracing::warn!(path = %watch.path.display(), error = %e, "key file changed but does not load"),
        }
    }

    /// Fetches `issuer`'s keys unless another caller just did.
    async fn refresh_issuer(&self, issuer: &str, unknown_kid: bool) -> Result<(), AuthError> {
        let _gate = self.fetch_gate.lock().await;
        {
            let cache = self.issuer_keys.read();
            if let Some(entry) = cache.get(issuer) {
                let age = entry.fetched_at.elapsed();
                let fresh = age < self.jwks_ttl;
                if fresh && (!unknown_kid || age < self.refetch_interval) {
                    return Ok(());
                }
            }
        }
        if let Some((at, error)) = self.failed_fetches.lock().get(issuer)
            && at.elapsed() < self.refetch_interval
        {
            return Err(error.clone());
        }
        let keys = match fetch_issuer_keys(issuer, self.fetch_timeout).await {
            Ok(keys) => {
                self.failed_fetches.lock().remove(issuer);
                keys
            }
            Err(error) => {
                let mut failed = self.failed_fetches.lock();
                if failed.len() >= FAILED_FETCH_CAPACITY {
                    failed.clear();
                }
                failed.insert(issuer.to_string(), (Instant::now(), error.clone()));
                return Err(error);
            }
        };
        let mut cache = self.issuer_keys.write();
        if cache.len() >= ISSUER_CACHE_CAPACITY && !cache.contains_key(issuer) {
            let oldest = cache.iter().min_by_key(|(_, e)| e.fetched_at).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                cache.remove(&oldest);
            }
        }
        cache.insert(issuer.to_string(), IssuerKeys { keys: Arc::new(keys), fetched_at: Instant::now() });
        Ok(())
    }
}

fn claim_error(e: jsonwebtoken::errors::Error) -> AuthError {
    rejected(match e.kind() {
        ErrorKind::ExpiredSignature => "token expired".to_string(),
        ErrorKind::ImmatureSignature => "token not yet valid (nbf)".to_string(),
        ErrorKind::InvalidIssuer => "issuer mismatch".to_string(),
        ErrorKind::InvalidAudience => "audience mismatch".to_string(),
        ErrorKind::InvalidSubject => "subject mismatch".to_string(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing required claim {claim}"),
        _ => format!("invalid token: {e}"),
    })
}

fn conclude(attempt: Attempt) -> Result<(), AuthError> {
    match attempt {
        Attempt::Verified => Ok(()),
        Attempt::Failed(e) => Err(e),
        Attempt::NeedKeys { issuer, unknown_kid: false } => {
            Err(rejected(format!("keys of issuer {issuer} are not fetched yet")))
        }
        Attempt::NeedKeys { issuer, unknown_kid: true } => {
            Err(rejected(format!("token kid is not among the keys of issuer {issuer}")))
        }
    }
}

impl TokenVerifier for JwtVerifier {
    fn try_verify(&self, token: &str) -> Result<(), AuthError> {
        conclude(self.attempt(token))
    }

    fn try_verify_credential(&self, token: &str) -> Result<(), AuthError> {
        conclude(self.attempt_with(token, false))
    }

    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), AuthError>> {
        Box::pin(async move {
            match self.attempt(token) {
                Attempt::NeedKeys { issuer, unknown_kid } => {
                    self.refresh_issuer(&issuer, unknown_kid).await?;
                    conclude(self.attempt(token))
                }
                done => conclude(done),
            }
        })
    }
}
