//! The one error type of the app and session layers, and the only one the Python layer maps to
//! exceptions. Display texts keep the upstream wording so substring checks in user code still work.

use crate::auth::AuthError;

/// Everything that can go wrong in an [`crate::app::App`] call or on a session's queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlimError {
    /// No session with this id exists in this app.
    #[error("session not found: {0}")]
    SessionNotFound(u32),
    /// The session was deleted while the call was waiting.
    #[error("session closed")]
    SessionClosed,
    /// A reliable message was not acknowledged after all retries (the session stays usable).
    #[error("message={message_id} session={session_id}: timeout")]
    Timeout {
        /// Session the message belongs to.
        session_id: u32,
        /// Id of the message that timed out.
        message_id: u32,
    },
    /// A message of the session's stream was dropped and could not be recovered (its producer
    /// no longer had it, it could not be decrypted, or the reader left it waiting past the
    /// delivery bound); delivery continues after it. One per lost message: see docs/reliability.md.
    #[error("message {message_id} lost in session {session_id}")]
    MessageLost {
        /// Session that lost a message.
        session_id: u32,
        /// Id of the lost message (ids are per producer in a group: see `producer`).
        message_id: u32,
        /// The producer of the lost message, when known.
        producer: Option<crate::wire::Name>,
    },
    /// The local node could not route a message (text contains "no matching found for `name`").
    #[error("error in message forwarding: {0}")]
    NoRoute(String),
    /// Connecting, serving or disconnecting failed.
    #[error("connection error: {0}")]
    Connection(String),
    /// A configuration value or argument is invalid.
    #[error("configuration error {0}")]
    Config(String),
    /// An identity token could not be produced or was rejected.
    #[error("identity error: {0}")]
    Auth(#[from] AuthError),
    /// MLS failed (group setup, encryption, decryption).
    #[error("mls error: {0}")]
    Mls(String),
    /// An invite could not be completed.
    #[error("invite error: {0}")]
    Invite(String),
    /// A publish waited its whole bound for room in the session's send buffer (the peer does not
    /// acknowledge, or the node does not take messages, fast enough); the message was not sent.
    #[error("session {session_id}: send buffer full ({buffered} bytes waiting or unacknowledged)")]
    SendBufferFull {
        /// Session the publish was for.
        session_id: u32,
        /// Bytes held for sending when the publish gave up.
        buffered: usize,
    },
    /// A publish whose payload and metadata exceed `wire::MAX_PAYLOAD_SIZE` (a node carries
    /// messages up to 4 MiB); the message was not sent.
    #[error("message too large: {size} bytes of payload and metadata, the limit is {limit}; not sent")]
    MessageTooLarge {
        /// Bytes of payload plus metadata keys and values.
        size: usize,
        /// `wire::MAX_PAYLOAD_SIZE`.
        limit: usize,
    },
    /// The app (or its node) has shut down.
    #[error("app closed")]
    Closed,
    /// A bug or an unexpected internal state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl SlimError {
    /// True for errors that belong to one session's stream (delivered on its queue).
    pub fn is_session_event(&self) -> bool {
        matches!(self, SlimError::Timeout { .. } | SlimError::MessageLost { .. } | SlimError::NoRoute(_))
    }

    /// The variant's name (`"SessionNotFound"`, `"Timeout"`, ...). The match lists every variant,
    /// so a new one does not compile until it is named here and given a sample in [`Self::samples`].
    pub fn variant_name(&self) -> &'static str {
        match self {
            SlimError::SessionNotFound(_) => "SessionNotFound",
            SlimError::SessionClosed => "SessionClosed",
            SlimError::Timeout { .. } => "Timeout",
            SlimError::MessageLost { .. } => "MessageLost",
            SlimError::NoRoute(_) => "NoRoute",
            SlimError::Connection(_) => "Connection",
            SlimError::Config(_) => "Config",
            SlimError::Auth(_) => "Auth",
            SlimError::Mls(_) => "Mls",
            SlimError::Invite(_) => "Invite",
            SlimError::SendBufferFull { .. } => "SendBufferFull",
            SlimError::MessageTooLarge { .. } => "MessageTooLarge",
            SlimError::Closed => "Closed",
            SlimError::Internal(_) => "Internal",
        }
    }

    /// One value of every variant (for the tests of the mappings of errors to other types, such
    /// as the Python exceptions); checked to be complete by this module's tests.
    #[doc(hidden)]
    pub fn samples() -> Vec<SlimError> {
        vec![
            SlimError::SessionNotFound(7),
            SlimError::SessionClosed,
            SlimError::Timeout { session_id: 3, message_id: 9 },
            SlimError::MessageLost {
                session_id: 3,
                message_id: 11,
                producer: Some(crate::wire::Name::new("org", "ns", "producer", Some(5))),
            },
            SlimError::NoRoute("no matching found for org/ns/nobody".into()),
            SlimError::Connection("refused".into()),
            SlimError::Config("bad value".into()),
            SlimError::Auth(AuthError::Missing),
            SlimError::Mls("no group".into()),
            SlimError::Invite("nobody answered".into()),
            SlimError::SendBufferFull { session_id: 3, buffered: 1024 },
            SlimError::MessageTooLarge {
                size: crate::wire::MAX_PAYLOAD_SIZE + 1,
                limit: crate::wire::MAX_PAYLOAD_SIZE,
            },
            SlimError::Closed,
            SlimError::Internal("unexpected".into()),
        ]
    }
}

impl From<crate::node::NodeError> for SlimError {
    fn from(e: crate::node::NodeError) -> Self {
        match e {
            crate::node::NodeError::Config(_) => SlimError::Config(e.to_string()),
            other => SlimError::Connection(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_hold_every_variant_once() {
        let names: Vec<&str> = SlimError::samples().iter().map(SlimError::variant_name).collect();
        let distinct: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        // As many as `variant_name` has arms: update both when a variant is added.
        assert_eq!(names.len(), 14, "{names:?}");
    }

    #[test]
    fn texts_keep_upstream_wording() {
        assert_eq!(SlimError::SessionNotFound(7).to_string(), "session not found: 7");
        assert_eq!(SlimError::Timeout { session_id: 3, message_id: 9 }.to_string(), "message=9 session=3: timeout");
        assert!(SlimError::NoRoute("no matching found for a/b/c".into()).to_string().contains("no matching found for"));
    }
}
