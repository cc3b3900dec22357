//! [`MlsState`] as the session layer's per-session encryption seam.

use super::{MlsError, MlsState};
use crate::error::SlimError;
use crate::session::context::MlsSeam;

/// The session layer's error for an MLS failure (keeps the MLS wording).
pub fn to_slim_error(e: MlsError) -> SlimError {
    SlimError::Mls(e.to_string())
}

impl MlsSeam for MlsState {
    fn is_ready(&self) -> bool {
        MlsState::is_ready(self)
    }

    fn protect(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, SlimError> {
        self.encrypt(plaintext).map_err(to_slim_error)
    }

    fn unprotect(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, SlimError> {
        self.decrypt(ciphertext).map_err(to_slim_error)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::SharedSecret;

    fn seam(name: &str) -> MlsState {
        let id = Arc::new(SharedSecret::new(name, "s").unwrap());
        MlsState::new(id.clone(), id).unwrap()
    }

    #[test]
    fn seam_round_trip_and_errors() {
        let mut m = seam("m");
        let mut a = seam("a");
        let boxed: &mut dyn MlsSeam = &mut m;
        assert!(!boxed.is_ready());
        assert!(matches!(boxed.protect(b"x"), Err(SlimError::Mls(_))));
        m.create_group().unwrap();
        let r = m.add_member(&a.key_package().unwrap()).unwrap();
        a.process_welcome(&r.welcome).unwrap();
        let (ms, as_): (&mut dyn MlsSeam, &mut dyn MlsSeam) = (&mut m, &mut a);
        let c = ms.protect(b"hi").unwrap();
        assert_eq!(as_.unprotect(&c).unwrap(), b"hi");
        assert!(matches!(as_.unprotect(&c), Err(SlimError::Mls(_))));
    }
}
