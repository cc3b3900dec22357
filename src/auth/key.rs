//! JWT keys: which algorithm, which encoding (PEM / JWK / JWKS), and where the bytes live. Turns a
//! [`Key`] into the signing key of a provider or the verification keys of a verifier.

use std::path::PathBuf;
use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};

use super::AuthError;

/// A JWT signature algorithm. The integer values match the Python enum `PyAlgorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
#[allow(clippy::upper_case_acronyms)]
pub enum Algorithm {
    /// HMAC with SHA-256.
    HS256 = 0,
    /// HMAC with SHA-384.
    HS384 = 1,
    /// HMAC with SHA-512.
    HS512 = 2,
    /// ECDSA on P-256 with SHA-256.
    ES256 = 3,
    /// ECDSA on P-384 with SHA-384.
    ES384 = 4,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256 = 5,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384 = 6,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512 = 7,
    /// RSASSA-PSS with SHA-256.
    PS256 = 8,
    /// RSASSA-PSS with SHA-384.
    PS384 = 9,
    /// RSASSA-PSS with SHA-512.
    PS512 = 10,
    /// Ed25519.
    EdDSA = 11,
}

/// What kind of key material an algorithm needs. EC is split by curve because a P-256 key can
/// never check an ES384 signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    /// A shared secret (HS*).
    Hmac,
    /// An RSA key (RS*, PS*).
    Rsa,
    /// A P-256 key (ES256).
    EcP256,
    /// A P-384 key (ES384).
    EcP384,
    /// An Ed25519 key (EdDSA).
    Ed25519,
}

impl Algorithm {
    /// Every algorithm, in integer order.
    pub const ALL: [Algorithm; 12] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::EdDSA,
    ];

    /// The algorithm with this integer value (`HS256=0` … `EdDSA=11`).
    pub fn from_index(index: u8) -> Option<Algorithm> {
        Self::ALL.get(usize::from(index)).copied()
    }

    /// This algorithm's integer value.
    pub fn index(self) -> u8 {
        self as u8
    }

    /// The JOSE name (`"ES256"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// The key material this algorithm needs.
    pub fn family(self) -> KeyFamily {
        match self {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => KeyFamily::Hmac,
            Algorithm::ES256 => KeyFamily::EcP256,
            Algorithm::ES384 => KeyFamily::EcP384,
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyFamily::Rsa,
            Algorithm::EdDSA => KeyFamily::Ed25519,
        }
    }

    pub(crate) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
            Algorithm::HS384 => jsonwebtoken::Algorithm::HS384,
            Algorithm::HS512 => jsonwebtoken::Algorithm::HS512,
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::ES384 => jsonwebtoken::Algorithm::ES384,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::RS384 => jsonwebtoken::Algorithm::RS384,
            Algorithm::RS512 => jsonwebtoken::Algorithm::RS512,
            Algorithm::PS256 => jsonwebtoken::Algorithm::PS256,
            Algorithm::PS384 => jsonwebtoken::Algorithm::PS384,
            Algorithm::PS512 => jsonwebtoken::Algorithm::PS512,
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    pub(crate) fn from_jwt(alg: jsonwebtoken::Algorithm) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.to_jwt() == alg)
    }
}

impl FromStr for Algorithm {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| AuthError::Config(format!("unknown JWT algorithm {s:?}")))
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the key text is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum KeyFormat {
    /// PEM (for HS* algorithms: the raw secret text).
    #[default]
    Pem,
    /// One JSON Web Key.
    Jwk,
    /// A JSON Web Key Set `{"keys": [...]}`.
    Jwks,
}

/// Where the key text lives. Serde names follow the config files: `file: <path>` or `str: <text>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyData {
    /// Read from this file (at construction time).
    #[serde(rename = "file")]
    File(PathBuf),
    /// The key text itself.
    #[serde(rename = "str")]
    Content(String),
}

/// A key for signing or verifying JWTs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key {
    /// The algorithm the key is meant for (ignored for JWKS, whose keys describe themselves).
    pub algorithm: Algorithm,
    /// How [`Self::data`] is encoded.
    #[serde(default)]
    pub format: KeyFormat,
    /// The key text or its file.
    #[serde(flatten)]
    pub data: KeyData,
}

/// Bigger key files than this are not keys; refusing them keeps a wrong path from eating memory.
const MAX_KEY_BYTES: u64 = 1 << 20;

impl Key {
    /// A key from its parts.
    pub fn new(algorithm: Algorithm, format: KeyFormat, data: KeyData) -> Key {
        Key { algorithm, format, data }
    }

    /// A key whose text is in a file.
    pub fn from_file(algorithm: Algorithm, format: KeyFormat, path: impl Into<PathBuf>) -> Key {
        Key::new(algorithm, format, KeyData::File(path.into()))
    }

    /// A key given inline.
    pub fn from_content(algorithm: Algorithm, format: KeyFormat, content: impl Into<String>) -> Key {
        Key::new(algorithm, format, KeyData::Content(content.into()))
    }

    /// The key text (file contents or inline text).
    pub fn read_text(&self) -> Result<String, AuthError> {
        match &self.data {
            KeyData::Content(text) => Ok(text.clone()),
            KeyData::File(path) => read_small_file(path, MAX_KEY_BYTES),
        }
    }

    /// The signing key. Signing keys are PEM (HS*: the raw secret text), or a private JWK.
    pub(crate) fn encoding_key(&self) -> Result<EncodingKey, AuthError> {
        let text = self.read_text()?;
        let bad =
            |e: jsonwebtoken::errors::Error| AuthError::Config(format!("invalid {} signing key: {e}", self.algorithm));
        match (self.format, self.algorithm.family()) {
            (KeyFormat::Pem, KeyFamily::Hmac) => {
                if text.is_empty() {
                    return Err(AuthError::Config("HMAC secret is empty".into()));
                }
                Ok(EncodingKey::from_secret(text.as_bytes()))
            }
            (KeyFormat::Pem, KeyFamily::Rsa) => EncodingKey::from_rsa_pem(text.as_bytes()).map_err(bad),
            (KeyFormat::Pem, KeyFamily::EcP256 | KeyFamily::EcP384) => {
                EncodingKey::from_ec_pem(text.as_bytes()).map_err(bad)
            }
            (KeyFormat::Pem, KeyFamily::Ed25519) => EncodingKey::from_ed_pem(text.as_bytes()).map_err(bad),
            (KeyFormat::Jwk, KeyFamily::Hmac) => {
                let jwk: Jwk = serde_json::from_str(&text)
                    .map_err(|e| AuthError::Config(format!("signing key is not a JWK: {e}")))?;
                match &jwk.algorithm {
                    AlgorithmParameters::OctetKey(oct) => EncodingKey::from_urlsafe_base64_secret(&oct.value)
                        .or_else(|_| EncodingKey::from_base64_secret(&oct.value))
                        .map_err(bad),
                    _ => Err(AuthError::Config(format!("{} needs an \"oct\" JWK", self.algorithm))),
                }
            }
            (format, _) => {
                Err(AuthError::Config(format!("{} signing keys must be PEM, got {format:?}", self.algorithm)))
            }
        }
    }

    /// The verification keys. PEM and JWK keys must suit [`Self::algorithm`]; a JWKS contributes
    /// every key it holds that this crate can use (at least one).
    pub(crate) fn verifying_keys(&self) -> Result<Vec<VerifyingKey>, AuthError> {
        let text = self.read_text()?;
        match self.format {
            KeyFormat::Pem => Ok(vec![pem_verifying_key(self.algorithm, &text)?]),
            KeyFormat::Jwk => {
                let value: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| AuthError::Config(format!("key is not JSON: {e}")))?;
                let key = VerifyingKey::from_jwk_value(&value)
                    .map_err(|e| AuthError::Config(format!("unusable JWK: {e}")))?;
                if key.family != self.algorithm.family() || !key.allows(self.algorithm) {
                    return Err(AuthError::Config(format!(
                        "JWK ({:?}) does not suit algorithm {}",
                        key.family, self.algorithm
                    )));
                }
                Ok(vec![key])
            }
            KeyFormat::Jwks => parse_jwks(&text).map_err(AuthError::Config),
        }
    }
}

/// Reads a whole file, refusing files larger than `max` bytes.
pub(crate) fn read_small_file(path: &std::path::Path, max: u64) -> Result<String, AuthError> {
    let meta =
        std::fs::metadata(path).map_err(|e| AuthError::Config(format!("cannot read {}: {e}", path.display())))?;
    if meta.len() > max {
        return Err(AuthError::Config(format!(
            "{} is {} bytes, more than the {max} allowed",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| AuthError::Config(format!("cannot read {}: {e}", path.display())))
}

/// One key a verifier may check signatures with.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    /// The JWK `kid`, if any.
    pub kid: Option<String>,
    /// What algorithms the key material can serve.
    pub family: KeyFamily,
    /// The JWK `alg`, if it pins one algorithm.
    pub alg: Option<Algorithm>,
    /// The key itself.
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Whether a token signed with `alg` may be checked with this key.
    pub(crate) fn allows(&self, alg: Algorithm) -> bool {
        alg.family() == self.family && self.alg.is_none_or(|pinned| pinned == alg)
    }

    /// Parses one JWK given as JSON.
    pub(crate) fn from_jwk_value(value: &serde_json::Value) -> Result<VerifyingKey, String> {
        let jwk: Jwk = serde_json::from_value(value.clone()).map_err(|e| format!("not a JWK: {e}"))?;
        let alg = match value.get("alg").and_then(|a| a.as_str()) {
            Some(name) => Some(Algorithm::from_str(name).map_err(|_| format!("unsupported JWK alg {name:?}"))?),
            None => None,
        };
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => KeyFamily::EcP256,
                EllipticCurve::P384 => KeyFamily::EcP384,
                ref other => return Err(format!("unsupported EC curve {other:?}")),
            },
            AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
                EllipticCurve::Ed25519 => KeyFamily::Ed25519,
                ref other => return Err(format!("unsupported OKP curve {other:?}")),
            },
            AlgorithmParameters::OctetKey(_) => KeyFamily::Hmac,
            _ => return Err("unsupported key type".into()),
        };
        if let Some(alg) = alg
            && alg.family() != family
        {
            return Err(format!("JWK alg {alg} does not suit its key type"));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("bad JWK: {e}"))?;
        Ok(VerifyingKey { kid: jwk.common.key_id.clone(), family, alg, key })
    }
}

/// Parses a JWKS, keeping the keys this crate can use. Errors when none is usable.
pub(crate) fn parse_jwks(text: &str) -> Result<Vec<VerifyingKey>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let Some(entries) = value.get("keys").and_then(|k| k.as_array()) else {
        return Err("JWKS has no \"keys\" array".into());
    };
    let mut keys = Vec::with_capacity(entries.len());
    let mut skipped = Vec::new();
    for entry in entries {
        // A JWKS may hold encryption keys or curves we do not do; those are skipped, not fatal.
        if entry.get("use").and_then(|u| u.as_str()).is_some_and(|u| u != "sig") {
            continue;
        }
        match VerifyingKey::from_jwk_value(entry) {
            Ok(key) => keys.push(key),
            Err(e) => skipped.push(e),
        }
    }
    if keys.is_empty() {
        return Err(format!("JWKS holds no usable signature key (skipped: {skipped:?})"));
    }
    if !skipped.is_empty() {
        tracing::debug!(?skipped, "JWKS entries skipped");
    }
    Ok(keys)
}

/// A verification key from PEM text (HS*: the raw secret).
fn pem_verifying_key(algorithm: Algorithm, text: &str) -> Result<VerifyingKey, AuthError> {
    let bad = |e: jsonwebtoken::errors::Error| AuthError::Config(format!("invalid {algorithm} verification key: {e}"));
    let family = algorithm.family();
    let key = match family {
        KeyFamily::Hmac => {
            if text.is_empty() {
                return Err(AuthError::Config("HMAC secret is empty".into()));
            }
            DecodingKey::from_secret(text.as_bytes())
        }
        KeyFamily::Rsa => DecodingKey::from_rsa_pem(text.as_bytes()).map_err(bad)?,
        KeyFamily::EcP256 | KeyFamily::EcP384 => {
            let key = DecodingKey::from_ec_pem(text.as_bytes()).map_err(bad)?;
            // The PEM's public point length tells the curve: 1 + 2·32 (P-256) or 1 + 2·48 (P-384).
            let point_len = key.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0);
            let curve_ok = match family {
                KeyFamily::EcP256 => point_len == 65 || point_len == 33,
                _ => point_len == 97 || point_len == 49,
            };
            if !curve_ok {
                return Err(AuthError::Config(format!("EC key curve does not suit {algorithm}")));
            }
            key
        }
        KeyFamily::Ed25519 => DecodingKey::from_ed_pem(text.as_bytes()).map_err(bad)?,
    };
    Ok(VerifyingKey { kid: None, family, alg: None, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_values_match_python() {
        for (i, alg) in Algorithm::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(alg.index()), i);
            assert_eq!(Algorithm::from_index(i as u8), Some(alg));
            assert_eq!(Algorithm::from_jwt(alg.to_jwt()), Some(alg));
            assert_eq!(alg.as_str().parse::<Algorithm>().unwrap(), alg);
        }
        assert_eq!(Algorithm::EdDSA as u8, 11);
        assert_eq!(Algorithm::RS256 as u8, 5);
        assert_eq!(Algorithm::from_index(12), None);
        assert!("none".parse::<Algorithm>().is_err());
    }

    #[test]
    fn key_config_serde_shape() {
        let key: Key =
            serde_json::from_value(serde_json::json!({"algorithm": "ES256", "format": "Pem", "file": "/x.pem"}))
                .unwrap();
        assert_eq!(key, Key::from_file(Algorithm::ES256, KeyFormat::Pem, "/x.pem"));
        let key: Key =
            serde_json::from_value(serde_json::json!({"algorithm": "HS256", "format": "Jwk", "str": "{}"})).unwrap();
        assert_eq!(key, Key::from_content(Algorithm::HS256, KeyFormat::Jwk, "{}"));
        assert!(serde_json::from_value::<Key>(serde_json::json!({"algorithm": "HS256", "format": "Pem"})).is_err());
    }
}
