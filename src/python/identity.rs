//! Identity configuration: providers (make this app's token) and verifiers (check peers' tokens).
//!
//! Everything is validated when converted (at `create_pyservice`), so a bad configuration is a
//! `ValueError` there instead of a failure later inside a task.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;

use super::errors::config_error;
use crate::auth::{
    Algorithm, JwtSigner, JwtVerifier, JwtVerifierConfig, Key, KeyData, KeyFormat, Provider, SharedSecret,
    StaticJwtProvider, Verifier,
};

/// JWT signing/verification algorithms (values match jsonwebtoken's discriminants).
#[pyclass(name = "PyAlgorithm", module = "slim_bindings._slim_bindings", eq, eq_int, from_py_object)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum PyAlgorithm {
    /// HMAC with SHA-256: one secret key signs and verifies.
    HS256 = 0,
    /// HMAC with SHA-384: one secret key signs and verifies.
    HS384 = 1,
    /// HMAC with SHA-512: one secret key signs and verifies.
    HS512 = 2,
    /// ECDSA on P-256 with SHA-256.
    ES256 = 3,
    /// ECDSA on P-384 with SHA-384.
    ES384 = 4,
    /// RSA PKCS#1 v1.5 signature with SHA-256.
    RS256 = 5,
    /// RSA PKCS#1 v1.5 signature with SHA-384.
    RS384 = 6,
    /// RSA PKCS#1 v1.5 signature with SHA-512.
    RS512 = 7,
    /// RSA-PSS signature with SHA-256.
    PS256 = 8,
    /// RSA-PSS signature with SHA-384.
    PS384 = 9,
    /// RSA-PSS signature with SHA-512.
    PS512 = 10,
    /// Ed25519 signature.
    EdDSA = 11,
}

/// How key material is encoded.
#[pyclass(name = "PyKeyFormat", module = "slim_bindings._slim_bindings", eq, eq_int, from_py_object)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PyKeyFormat {
    /// PEM (`-----BEGIN ... KEY-----`); for the HS* algorithms, the raw secret text.
    Pem = 0,
    /// One JSON Web Key (RFC 7517).
    Jwk = 1,
    /// A JSON Web Key Set `{"keys": [...]}` (verification: every usable key it holds).
    Jwks = 2,
}

/// Where key material comes from: a file path or inline text.
#[pyclass(name = "PyKeyData", module = "slim_bindings._slim_bindings", eq, from_py_object)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PyKeyData {
    /// Key read from this file.
    #[pyo3(constructor = (path))]
    File {
        /// The key file's path (read when the provider or verifier is built).
        path: String,
    },
    /// Key given inline.
    #[pyo3(constructor = (content))]
    Content {
        /// The key itself, in the key's format.
        content: String,
    },
}

/// A key: algorithm, encoding and data.
#[pyclass(name = "PyKey", module = "slim_bindings._slim_bindings", eq, from_py_object)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyKey {
    /// The algorithm the key is used with.
    #[pyo3(get, set)]
    pub algorithm: PyAlgorithm,
    /// The encoding of `key`.
    #[pyo3(get, set)]
    pub format: PyKeyFormat,
    /// The key material.
    #[pyo3(get, set)]
    pub key: PyKeyData,
}

#[pymethods]
impl PyKey {
    /// Builds a key description.
    #[new]
    fn new(algorithm: PyAlgorithm, format: PyKeyFormat, key: PyKeyData) -> Self {
        Self { algorithm, format, key }
    }
}

/// How this app proves its identity.
#[pyclass(name = "PyIdentityProvider", module = "slim_bindings._slim_bindings", from_py_object)]
#[derive(Clone, Debug)]
pub enum PyIdentityProvider {
    /// A JWT read from a file (re-read when the file changes).
    #[pyo3(constructor = (path))]
    StaticJwt {
        /// The file holding the token (its whole content, surrounding white space trimmed).
        path: String,
    },
    /// JWTs signed locally with `private_key`, valid for `duration`.
    #[pyo3(constructor = (private_key, duration, issuer = None, audience = None, subject = None))]
    Jwt {
        /// The key that signs the tokens.
        private_key: PyKey,
        /// How long each signed token is valid (1 s to 10 years).
        duration: Duration,
        /// The `iss` claim of each token.
        issuer: Option<String>,
        /// The `aud` claim of each token.
        audience: Option<Vec<String>>,
        /// The `sub` claim of each token (none when unset).
        subject: Option<String>,
    },
    /// A shared secret (tests only: the secret travels in clear).
    #[pyo3(constructor = (identity, shared_secret))]
    SharedSecret {
        /// The identity this app claims (it names the app in its tokens).
        identity: String,
        /// The secret every app of the deployment shares.
        shared_secret: String,
    },
}

/// How this app checks peers' identities.
#[pyclass(name = "PyIdentityVerifier", module = "slim_bindings._slim_bindings", from_py_object)]
#[derive(Clone, Debug)]
pub enum PyIdentityVerifier {
    /// JWT verification with a public key, or keys resolved from the issuer (`autoresolve`).
    #[pyo3(constructor = (public_key = None, autoresolve = false, issuer = None, audience = None, subject = None,
                          require_iss = false, require_aud = false, require_sub = false))]
    Jwt {
        /// The key tokens are checked against; when set, `autoresolve` is ignored.
        public_key: Option<PyKey>,
        /// Without a key: fetch each token issuer's JWKS (OIDC discovery) and check against it.
        autoresolve: bool,
        /// `iss` must be this (and is then required); with `autoresolve`, keys come only from it.
        issuer: Option<String>,
        /// `aud` must contain one of these (and is then required).
        audience: Option<Vec<String>>,
        /// `sub` must be this (and is then required).
        subject: Option<String>,
        /// `iss` must be present, whatever its value.
        require_iss: bool,
        /// `aud` must be present, whatever its value.
        require_aud: bool,
        /// `sub` must be present, whatever its value.
        require_sub: bool,
    },
    /// A shared secret (tests only).
    #[pyo3(constructor = (identity, shared_secret))]
    SharedSecret {
        /// This app's own identity (the verifier's side of the pair).
        identity: String,
        /// The secret every token must be made with.
        shared_secret: String,
    },
}

fn value_error(e: crate::auth::AuthError) -> PyErr {
    config_error(e.to_string())
}

impl PyKey {
    /// The core key description (files are read later, by the signer/verifier).
    pub fn to_key(&self) -> PyResult<Key> {
        let algorithm = Algorithm::from_index(self.algorithm as u8).ok_or_else(|| config_error("unknown algorithm"))?;
        let format = match self.format {
            PyKeyFormat::Pem => KeyFormat::Pem,
            PyKeyFormat::Jwk => KeyFormat::Jwk,
            PyKeyFormat::Jwks => KeyFormat::Jwks,
        };
        let data = match &self.key {
            PyKeyData::File { path } => KeyData::File(path.into()),
            PyKeyData::Content { content } => KeyData::Content(content.clone()),
        };
        Ok(Key::new(algorithm, format, data))
    }
}

impl PyIdentityProvider {
    /// Validates and builds the core provider (reads key and token files now).
    pub fn to_provider(&self) -> PyResult<Provider> {
        match self {
            Self::SharedSecret { identity, shared_secret } => {
                SharedSecret::new(identity, shared_secret).map(|s| Arc::new(s) as Provider).map_err(value_error)
            }
            Self::StaticJwt { path } => {
                StaticJwtProvider::new(path).map(|p| Arc::new(p) as Provider).map_err(value_error)
            }
            Self::Jwt { private_key, duration, issuer, audience, subject } => {
                JwtSigner::new(private_key.to_key()?, *duration, issuer.clone(), audience.clone(), subject.clone())
                    .map(|p| Arc::new(p) as Provider)
                    .map_err(value_error)
            }
        }
    }
}

impl PyIdentityVerifier {
    /// Validates and builds the core verifier (reads key files now).
    pub fn to_verifier(&self) -> PyResult<Verifier> {
        match self {
            Self::SharedSecret { identity, shared_secret } => {
                SharedSecret::new(identity, shared_secret).map(|s| Arc::new(s) as Verifier).map_err(value_error)
            }
            Self::Jwt { public_key, autoresolve, issuer, audience, subject, require_iss, require_aud, require_sub } => {
                let key = public_key.as_ref().map(PyKey::to_key).transpose()?;
                JwtVerifier::new(JwtVerifierConfig {
                    public_key: key,
                    autoresolve: *autoresolve,
                    issuer: issuer.clone(),
                    audience: audience.clone(),
                    subject: subject.clone(),
                    require_iss: *require_iss,
                    require_aud: *require_aud,
                    require_sub: *require_sub,
                })
                .map(|v| Arc::new(v) as Verifier)
                .map_err(value_error)
            }
        }
    }
}
