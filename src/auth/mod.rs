//! Identity tokens: what an app attaches to every message (`SLIM_IDENTITY`) and how a receiver
//! checks it. Providers make tokens; verifiers check them.

pub mod key;
pub mod provider;
mod resolver;
pub mod shared_secret;
pub mod spire;
pub mod transport;
pub mod verifier;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::wire::original::Text;

pub use key::{Algorithm, Key, KeyData, KeyFormat};
pub use provider::{JwtSigner, StaticJwtProvider};
pub use shared_secret::SharedSecret;
pub use spire::jwks_from_spire_bundle;
pub use verifier::{JwtVerifier, JwtVerifierConfig};

/// Why an identity could not be produced or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The provider or verifier was configured wrongly (missing key file, bad key, ...).
    #[error("invalid identity configuration: {0}")]
    Config(String),
    /// The token could not be produced.
    #[error("failed to get token from provider: {0}")]
    Token(String),
    /// The token was checked and rejected.
    #[error("identity verification failed: {0}")]
    Verification(String),
    /// The token is missing.
    #[error("missing identity token")]
    Missing,
    /// Fetching the issuer's keys (OIDC discovery / JWKS) failed.
    #[error("failed to fetch verification keys: {0}")]
    KeyFetch(String),
    /// Fetching the issuer's keys did not finish in time.
    #[error("timed out fetching verification keys: {0}")]
    KeyFetchTimeout(String),
}

/// A boxed future, for verifiers that may need I/O (JWKS auto-resolve).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Produces this app's identity token.
pub trait TokenProvider: Send + Sync + std::fmt::Debug {
    /// The current token (cached by implementations that sign; cheap to call per message).
    fn get_token(&self) -> Result<String, AuthError>;

    /// The current token as the [`Text`] a message carries ([`crate::wire::Message::identity`]).
    /// Default: [`Self::get_token`]'s `String`, taken without copying; a provider whose token
    /// does not change hands out one shared copy instead (a reference count per message).
    fn get_token_text(&self) -> Result<Text, AuthError> {
        self.get_token().map(Text::from)
    }
}

/// Checks a peer's identity token.
pub trait TokenVerifier: Send + Sync + std::fmt::Debug {
    /// Verifies with what is known locally (keys, caches); never blocks on I/O.
    fn try_verify(&self, token: &str) -> Result<(), AuthError>;

    /// Checks a token held in a long-lived credential (an MLS leaf): everything
    /// [`Self::try_verify`] checks except expiry, since the token was current when its holder
    /// joined and the group outlives it (each message still carries, and is checked against, the
    /// sender's current token). Default: [`Self::try_verify`].
    fn try_verify_credential(&self, token: &str) -> Result<(), AuthError> {
        self.try_verify(token)
    }

    /// Verifies, fetching what is missing (e.g. a JWKS) if needed. Default: [`Self::try_verify`].
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), AuthError>> {
        Box::pin(async move { self.try_verify(token) })
    }
}

/// A shareable provider.
pub type Provider = Arc<dyn TokenProvider>;
/// A shareable verifier.
pub type Verifier = Arc<dyn TokenVerifier>;
