//! The MLS encryption step on session messages (docs/protocol.md "MLS", payloads).
//!
//! Outbound, payload-carrying publishes get their blob replaced by an MLS application message and
//! `MLS_ENCRYPTED=true`. Inbound, a payload-carrying publish must be flagged `MLS_ENCRYPTED=true`;
//! it is decrypted in place and the flag removed, so it never reaches user metadata.
//!
//! Channel control messages (DISCOVERY, JOIN, LEAVE, MLS_*) are never touched. Unlike the
//! reference, ACK, RTX_REQUEST and BEACON (always empty) are not encrypted either: receivers
//! never decrypt them (slim-bindings 0.6.0 encrypts them, and nobody reads them), so encrypting them
//! only burns sender generations.
//! Such messages arriving flagged from a 0.6 peer are left as they are.

use super::{MlsError, MlsState};
use crate::wire::{META_MLS_ENCRYPTED, Message, SessionMessageType};

/// True for the session message types whose blob is application data.
pub fn carries_payload(message_type: SessionMessageType) -> bool {
    matches!(
        message_type,
        SessionMessageType::P2PMsg
            | SessionMessageType::P2PReliable
            | SessionMessageType::MulticastMsg
            | SessionMessageType::RtxReply
    )
}

/// Encrypts the blob of a payload-carrying publish in place; returns whether it did.
///
/// A message already flagged `MLS_ENCRYPTED` (e.g. a stored message sent again as RTX_REPLY)
/// is left alone, so nothing is encrypted twice. On error the message is unchanged.
pub fn encrypt_outbound(state: &mut MlsState, msg: &mut Message) -> Result<bool, MlsError> {
    if !carries_payload(msg.session_message_type()) || is_flagged(msg) {
        return Ok(false);
    }
    let Some(content) = msg.publish_mut().and_then(|p| p.msg.as_mut()) else {
        return Ok(false);
    };
    content.blob = state.encrypt(&content.blob)?.into();
    msg.metadata.insert(META_MLS_ENCRYPTED.to_string(), "true".to_string());
    Ok(true)
}

/// Decrypts the blob of a flagged payload-carrying publish in place and removes the flag;
/// returns whether it did. A payload-carrying publish without the flag is refused with
/// [`MlsError::NotEncrypted`] (on an MLS session, plaintext would bypass the group's
/// authentication). On error the message is unchanged (the caller drops and counts it).
pub fn decrypt_inbound(state: &mut MlsState, msg: &mut Message) -> Result<bool, MlsError> {
    if !carries_payload(msg.session_message_type()) {
        return Ok(false);
    }
    if !is_flagged(msg) {
        return Err(MlsError::NotEncrypted);
    }
    let Some(content) = msg.publish_mut().and_then(|p| p.msg.as_mut()) else {
        return Ok(false);
    };
    content.blob = state.decrypt(&content.blob)?.into();
    msg.metadata.remove(META_MLS_ENCRYPTED);
    Ok(true)
}

fn is_flagged(msg: &Message) -> bool {
    msg.metadata.get(META_MLS_ENCRYPTED).is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::auth::SharedSecret;
    use crate::wire::builders::{Flags, PublishSpec, publish};
    use crate::wire::{Name, SessionType};

    fn member(name: &str) -> MlsState {
        let id = Arc::new(SharedSecret::new(name, "s").unwrap());
        MlsState::new(id.clone(), id).unwrap()
    }

    fn message(t: SessionMessageType, blob: &[u8]) -> Message {
        let (src, dst) = (Name::new("org", "ns", "a", Some(4)), Name::new("org", "ns", "chan", None));
        let spec = PublishSpec {
            source: &src,
            destination: &dst,
            flags: Flags::one(),
            session_type: SessionType::SessionMulticast,
            message_type: t,
            session_id: 9,
            message_id: 1,
            original_names: true,
            content_type: "",
        };
        let mut meta = HashMap::new();
        meta.insert("user".to_string(), "kept".to_string());
        publish(&spec, blob.to_vec(), meta)
    }

    #[test]
    fn round_trip_and_passthrough() {
        let mut m = member("m");
        let mut a = member("a");
        let mut data = message(SessionMessageType::MulticastMsg, b"hello group");
        // Without a group the message cannot go out encrypted, and is left untouched.
        assert_eq!(encrypt_outbound(&mut m, &mut data), Err(MlsError::NoGroup));
        assert_eq!(data.blob(), b"hello group");
        assert!(!data.metadata.contains_key(META_MLS_ENCRYPTED));

        m.create_group().unwrap();
        let r = m.add_member(&a.key_package().unwrap()).unwrap();
        a.process_welcome(&r.welcome).unwrap();

        assert_eq!(encrypt_outbound(&mut m, &mut data), Ok(true));
        assert_ne!(data.blob(), b"hello group");
        assert_eq!(data.metadata.get(META_MLS_ENCRYPTED).map(String::as_str), Some("true"));
        // Already encrypted: not encrypted twice.
        let before = data.blob().to_vec();
        assert_eq!(encrypt_outbound(&mut m, &mut data), Ok(false));
        assert_eq!(data.blob(), before.as_slice());

        let mut tampered = data.clone();
        if let Some(c) = tampered.publish_mut().and_then(|p| p.msg.as_mut()) {
            let mut tampered = c.blob.to_vec();
            let last = tampered.len() - 1;
            tampered[last] ^= 1;
            c.blob = tampered.into();
        }
        assert!(decrypt_inbound(&mut a, &mut tampered).is_err());
        assert!(tampered.metadata.contains_key(META_MLS_ENCRYPTED));

        assert_eq!(decrypt_inbound(&mut a, &mut data), Ok(true));
        assert_eq!(data.blob(), b"hello group");
        assert!(!data.metadata.contains_key(META_MLS_ENCRYPTED));
        assert_eq!(data.metadata.get("user").map(String::as_str), Some("kept"));

        // Control and empty signalling messages pass through both ways.
        for t in [
            SessionMessageType::ChannelMlsCommit,
            SessionMessageType::ChannelJoinReply,
            SessionMessageType::P2PAck,
            SessionMessageType::RtxRequest,
            SessionMessageType::BeaconMulticast,
        ] {
            let mut msg = message(t, b"control");
            assert_eq!(encrypt_outbound(&mut m, &mut msg), Ok(false));
            assert_eq!(msg.blob(), b"control");
            msg.metadata.insert(META_MLS_ENCRYPTED.into(), "true".into());
            assert_eq!(decrypt_inbound(&mut a, &mut msg), Ok(false));
        }
        // A data message in the clear is refused, left unchanged.
        let mut plain = message(SessionMessageType::P2PMsg, b"plain");
        assert_eq!(decrypt_inbound(&mut a, &mut plain), Err(MlsError::NotEncrypted));
        assert_eq!(plain.blob(), b"plain");
    }
}
