//! This member's Ed25519 signing key, kept expanded.
//!
//! `openmls_basic_credential::SignatureKeyPair` stores the 32-byte seed and rebuilds the signing
//! key from it on every signature, which derives the public key again (a base-point
//! multiplication and a field inversion): about a third of the CPU of encrypting a group message.
//! This signer expands the key once.

use ed25519_dalek::Signer as _;
use openmls::prelude::{OpenMlsRand, SignatureScheme};
use openmls_traits::signatures::{Signer, SignerError};

use super::MlsError;

/// An Ed25519 key pair for MLS signatures (ciphersuite 0x0001).
pub struct Ed25519Signer {
    key: ed25519_dalek::SigningKey,
    public: Vec<u8>,
}

impl Ed25519Signer {
    /// A fresh key pair whose seed comes from `rand` (the MLS provider's CSPRNG).
    pub fn generate(rand: &impl OpenMlsRand) -> Result<Self, MlsError> {
        let seed: [u8; 32] = rand.random_array().map_err(|e| MlsError::Crypto(format!("{e:?}")))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = key.verifying_key().to_bytes().to_vec();
        Ok(Self { key, public })
    }

    /// The public key (32 bytes), as put in this member's credential.
    pub fn public(&self) -> &[u8] {
        &self.public
    }
}

impl Signer for Ed25519Signer {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.key.sign(payload).to_bytes().to_vec())
    }

    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::Verifier;
    use openmls::prelude::OpenMlsProvider;
    use openmls_rust_crypto::OpenMlsRustCrypto;

    use super::*;

    #[test]
    fn signatures_verify_and_keys_differ() {
        let provider = OpenMlsRustCrypto::default();
        let a = Ed25519Signer::generate(provider.rand()).unwrap();
        let b = Ed25519Signer::generate(provider.rand()).unwrap();
        assert_ne!(a.public(), b.public());
        let sig = a.sign(b"payload").unwrap();
        let vk = ed25519_dalek::VerifyingKey::try_from(a.public()).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
        assert!(vk.verify(b"payload", &sig).is_ok());
        assert!(vk.verify(b"other", &sig).is_err());
        assert_eq!(a.signature_scheme(), SignatureScheme::ED25519);
    }
}
