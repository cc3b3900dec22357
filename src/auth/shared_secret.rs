//! Shared-secret identities: the token is `"<secret>:<identity>"` (wire-compatible with the
//! reference). Meant for tests: the secret travels in clear text.

use super::{AuthError, TokenProvider, TokenVerifier};
use crate::wire::original::Text;

/// A shared-secret provider and verifier.
#[derive(Clone)]
pub struct SharedSecret {
    identity: String,
    secret: String,
    /// `"<secret>:<identity>"`, made once: every message an app sends carries it (shared).
    token: Text,
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSecret").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl SharedSecret {
    /// Validates and builds. Neither part may be empty or contain `:`.
    pub fn new(identity: &str, secret: &str) -> Result<Self, AuthError> {
        if secret.is_empty() {
            return Err(AuthError::Config("shared_secret is empty".into()));
        }
        if secret.contains(':') {
            return Err(AuthError::Config("shared_secret must not contain ':'".into()));
        }
        if identity.contains(':') {
            return Err(AuthError::Config("identity must not contain ':'".into()));
        }
        Ok(Self {
            identity: identity.to_string(),
            secret: secret.to_string(),
            token: Text::from(format!("{secret}:{identity}")),
        })
    }

    /// The identity part.
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

impl TokenProvider for SharedSecret {
    fn get_token(&self) -> Result<String, AuthError> {
        Ok(self.token.as_str().to_owned())
    }

    fn get_token_text(&self) -> Result<Text, AuthError> {
        Ok(self.token.clone())
    }
}

impl TokenVerifier for SharedSecret {
    fn try_verify(&self, token: &str) -> Result<(), AuthError> {
        let mut parts = token.split(':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(secret), Some(_id), None) if secret == self.secret => Ok(()),
            (Some(_), Some(_), None) => Err(AuthError::Verification("shared secret mismatch".into())),
            _ => Err(AuthError::Verification("malformed shared-secret token".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_format_and_check() {
        let a = SharedSecret::new("alice", "s3cret").expect("valid");
        let tok = a.get_token().expect("token");
        assert_eq!(tok, "s3cret:alice");
        let b = SharedSecret::new("bob", "s3cret").expect("valid");
        assert_eq!(b.try_verify(&tok), Ok(()));
        let c = SharedSecret::new("carol", "other").expect("valid");
        assert!(matches!(c.try_verify(&tok), Err(AuthError::Verification(_))));
        assert!(c.try_verify("garbage").is_err());
        assert!(c.try_verify("a:b:c").is_err());
        assert!(SharedSecret::new("x", "").is_err());
    }
}
