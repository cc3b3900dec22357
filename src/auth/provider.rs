//! JWT token providers: a token read from a file ([`StaticJwtProvider`]) and a token signed here
//! ([`JwtSigner`]). Both are cheap per call: the token is cached and only refreshed when needed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use parking_lot::Mutex;

use super::key::{Key, read_small_file};
use super::{AuthError, TokenProvider};

/// A token file larger than this is not a token.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;
/// How often [`StaticJwtProvider`] looks at the file's modification time.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Longer token lifetimes are refused (they would overflow clock arithmetic long before being useful).
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 366 * 86_400);

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A token read from a file (e.g. a SPIRE JWT-SVID), re-read when the file changes.
#[derive(Debug)]
pub struct StaticJwtProvider {
    path: PathBuf,
    state: Mutex<FileToken>,
}

#[derive(Debug)]
struct FileToken {
    token: String,
    /// The token's `exp` claim (seconds since the Unix epoch), when it is a JWT that has one.
    expires: Option<u64>,
    modified: Option<SystemTime>,
    len: u64,
    checked_at: Instant,
}

impl StaticJwtProvider {
    /// Reads the token now; a missing, unreadable or empty file is a configuration error (an
    /// expired token is not: the file may be renewed before it is used).
    pub fn new(path: impl AsRef<Path>) -> Result<Self, AuthError> {
        let path = path.as_ref().to_path_buf();
        let (token, modified, len) = read_token_file(&path)?;
        let expires = jwt_expiry(&token);
        Ok(Self { path, state: Mutex::new(FileToken { token, expires, modified, len, checked_at: Instant::now() }) })
    }

    /// The token file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The trimmed token, the file's modification time and length.
fn read_token_file(path: &Path) -> Result<(String, Option<SystemTime>, u64), AuthError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| AuthError::Config(format!("cannot read token file {}: {e}", path.display())))?;
    let text = read_small_file(path, MAX_TOKEN_FILE_BYTES)?;
    // Editors and `echo` add a trailing newline, which is never part of a JWT.
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(AuthError::Config(format!("token file {} is empty", path.display())));
    }
    Ok((token, meta.modified().ok(), meta.len()))
}

impl TokenProvider for StaticJwtProvider {
    fn get_token(&self) -> Result<String, AuthError> {
        let mut state = self.state.lock();
        if state.checked_at.elapsed() >= FILE_CHECK_INTERVAL {
            state.checked_at = Instant::now();
            match std::fs::metadata(&self.path) {
                Ok(meta) if meta.modified().ok() != state.modified || meta.len() != state.len => {
                    match read_token_file(&self.path) {
                        Ok((token, modified, len)) => {
                            state.expires = jwt_expiry(&token);
                            state.token = token;
                            state.modified = modified;
                            state.len = len;
                        }
                        // A half-written file is common during rotation: keep serving the last good token.
                        Err(e) => tracing::warn!(error = %e, "token file changed but could not be reloaded"),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "token file unreadable; keeping last token")
                }
            }
        }
        // Every receiver would reject an expired token and drop the message: refuse to send it
        // instead (reported to the caller as an identity error, nothing sent).
        if let Some(exp) = state.expires
            && unix_now() >= exp
        {
            return Err(AuthError::Token(format!(
                "the token in {} expired at {exp} (Unix time; now {}); renew the file",
                self.path.display(),
                unix_now()
            )));
        }
        Ok(state.token.clone())
    }
}

/// The `exp` claim of a JWT, read without checking the signature (only to know when this app's
/// own token stops being accepted); `None` for a token that is not a JWT or has no `exp`.
fn jwt_expiry(token: &str) -> Option<u64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    exp.as_u64().or_else(|| exp.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f as u64))
}

/// Signs its own JWTs: `iss`, `sub`, `aud` (array), `exp`, `iat`, `nbf` plus optional custom
/// claims. The token is cached and re-signed only when less than a third of its lifetime remains.
pub struct JwtSigner {
    algorithm: jsonwebtoken::Algorithm,
    key: EncodingKey,
    lifetime: Duration,
    claims: serde_json::Map<String, serde_json::Value>,
    cached: Mutex<Option<SignedToken>>,
}

struct SignedToken {
    token: String,
    refresh_at: Instant,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("algorithm", &self.algorithm)
            .field("lifetime", &self.lifetime)
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// Loads the private key and signs a first token, so a bad key or a key that does not suit its
    /// algorithm fails here. `duration` is the token lifetime (at least one second).
    pub fn new(
        private_key: Key,
        duration: Duration,
        issuer: Option<String>,
        audience: Option<Vec<String>>,
        subject: Option<String>,
    ) -> Result<Self, AuthError> {
        Self::with_custom_claims(private_key, duration, issuer, audience, subject, serde_json::Map::new())
    }

    /// Like [`Self::new`], with extra claims placed at the top level of every token (the standard
    /// claims win on a name clash).
    pub fn with_custom_claims(
        private_key: Key,
        duration: Duration,
        issuer: Option<String>,
        audience: Option<Vec<String>>,
        subject: Option<String>,
        custom_claims: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, AuthError> {
        if duration < Duration::from_secs(1) {
            return Err(AuthError::Config(format!("token duration {duration:?} is shorter than 1 s")));
        }
        if duration > MAX_TOKEN_LIFETIME {
            return Err(AuthError::Config(format!("token duration {duration:?} is longer than 10 years")));
        }
        let key = private_key.encoding_key()?;
        let mut claims = custom_claims;
        if let Some(iss) = issuer {
            claims.insert("iss".into(), iss.into());
        }
        if let Some(sub) = subject {
            claims.insert("sub".into(), sub.into());
        }
        if let Some(aud) = audience {
            claims.insert("aud".into(), aud.into());
        }
        let signer = Self {
            algorithm: private_key.algorithm.to_jwt(),
            key,
            lifetime: duration,
            claims,
            cached: Mutex::new(None),
        };
        let first = signer.sign().map_err(|e| match e {
            AuthError::Token(msg) => AuthError::Config(msg),
            other => other,
        })?;
        *signer.cached.lock() = Some(first);
        Ok(signer)
    }

    /// The configured token lifetime.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn sign(&self) -> Result<SignedToken, AuthError> {
        let now = unix_now();
        let mut claims = self.claims.clone();
        claims.insert("iat".into(), now.into());
        claims.insert("nbf".into(), now.into());
        claims.insert("exp".into(), (now + self.lifetime.as_secs()).into());
        let token = jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key)
            .map_err(|e| AuthError::Token(format!("signing with {:?} failed: {e}", self.algorithm)))?;
        Ok(SignedToken { token, refresh_at: Instant::now() + self.lifetime * 2 / 3 })
    }
}

impl TokenProvider for JwtSigner {
    fn get_token(&self) -> Result<String, AuthError> {
        let mut cached = self.cached.lock();
        if let Some(current) = cached.as_ref()
            && Instant::now() < current.refresh_at
        {
            return Ok(current.token.clone());
        }
        let fresh = self.sign()?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }
}
