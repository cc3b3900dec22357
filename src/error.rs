//! The one error type of the app and session layers, and the only one the Python layer maps to
//! exceptions. Display texts keep the upstream wording so substring checks in user code still work.

use crate::auth::AuthError;
use crate::mls::MlsError;
use crate::mls::batch::BatchError;
use crate::node::{ConfigError, NodeError};

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
    /// Connecting, serving or disconnecting failed (the node's error is the source).
    #[error("connection error: {0}")]
    Connection(#[source] NodeError),
    /// A configuration value or argument is invalid.
    #[error("configuration error {0}")]
    Config(#[source] ConfigFailure),
    /// An identity token could not be produced or was rejected.
    #[error("identity error: {0}")]
    Auth(#[from] AuthError),
    /// MLS failed (group setup, encryption, decryption).
    #[error("mls error: {0}")]
    Mls(#[source] MlsFailure),
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
    /// A group member stopped hearing from its moderator (no heartbeat for the session's liveness
    /// bound): raised after every message that arrived before; the session is closed on this
    /// member (`ModeratorLostError`, a `SessionClosedError`). `undelivered`: publishes this member
    /// still held (waiting for the group to be ready, or not yet taken by its session), dropped
    /// with the session.
    #[error(
        "session {session_id}: moderator {moderator} stopped answering (nothing for {silent_ms} ms; {undelivered} messages published here not delivered); session closed"
    )]
    ModeratorLost {
        /// The group session.
        session_id: u32,
        /// The moderator that went silent.
        moderator: crate::wire::Name,
        /// How long nothing came from it.
        silent_ms: u64,
        /// Publishes of this member dropped with the session.
        undelivered: usize,
    },
    /// The other side ended the session: the initiator of a point-to-point session deleted it or
    /// its app closed, or a group's moderator removed this member or deleted the group. Raised
    /// after every message that arrived before; the session is closed on this side
    /// (`PeerClosedError`, a `SessionClosedError`). `undelivered`: publishes this side still
    /// held (queued, or sent and not acknowledged), dropped with the session.
    #[error(
        "session {session_id}: peer {peer} closed the session ({undelivered} messages published here not delivered)"
    )]
    PeerClosed {
        /// The point-to-point session.
        session_id: u32,
        /// The peer that ended it.
        peer: crate::wire::Name,
        /// Publishes of this side dropped with the session.
        undelivered: usize,
    },
    /// The peer of a point-to-point session (either side of a sticky one, the client of an anycast
    /// one) stopped answering heartbeats for longer than the session's liveness bound (its
    /// process died, or its node or network is gone; docs/liveness.md). Raised after every message that arrived before; the session is closed on this side
    /// (`PeerLostError`, a `SessionClosedError`). `undelivered`: publishes this side still held
    /// (queued, or sent and not acknowledged), dropped with the session.
    #[error(
        "session {session_id}: peer {peer} stopped answering (nothing for {silent_ms} ms; {undelivered} messages published here not delivered); session closed"
    )]
    PeerLost {
        /// The point-to-point session.
        session_id: u32,
        /// The peer that went silent.
        peer: crate::wire::Name,
        /// How long nothing came from it.
        silent_ms: u64,
        /// Publishes of this side dropped with the session.
        undelivered: usize,
    },
    /// The app (or its node) has shut down.
    #[error("app closed")]
    Closed,
    /// A bug or an unexpected internal state.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a configuration was refused: the source of [`SlimError::Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigFailure {
    /// The node's configuration (endpoints, TLS, auth, keepalive, ...) could not be used.
    #[error(transparent)]
    Node(#[from] ConfigError),
    /// The identity provider could not produce a token when the app was created.
    #[error("Failed to get token from provider: {0}")]
    Identity(#[source] AuthError),
    /// A session configuration or an argument is invalid (the text says which and why).
    #[error("{0}")]
    Invalid(String),
}

impl From<String> for ConfigFailure {
    fn from(text: String) -> Self {
        ConfigFailure::Invalid(text)
    }
}

impl From<&str> for ConfigFailure {
    fn from(text: &str) -> Self {
        ConfigFailure::Invalid(text.to_string())
    }
}

/// Why MLS failed: the source of [`SlimError::Mls`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MlsFailure {
    /// An operation of the MLS group failed.
    #[error(transparent)]
    Group(#[from] MlsError),
    /// A batch of messages could not be encoded for encryption.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// A participant could not apply a commit of its moderator: the group moved to an epoch
    /// this member does not have.
    #[error("commit {id} could not be applied: {source}")]
    Commit {
        /// The commit's message id (moderator order).
        id: u32,
        /// Why the MLS group refused it.
        source: MlsError,
    },
    /// The session has no MLS group (not set up yet, or this member was removed).
    #[error("no group")]
    NoGroup,
}

impl From<MlsError> for SlimError {
    fn from(e: MlsError) -> Self {
        SlimError::Mls(MlsFailure::Group(e))
    }
}

impl From<BatchError> for SlimError {
    fn from(e: BatchError) -> Self {
        SlimError::Mls(MlsFailure::Batch(e))
    }
}

impl SlimError {
    /// True for errors that belong to one session's stream (delivered on its queue).
    pub fn is_session_event(&self) -> bool {
        matches!(
            self,
            SlimError::Timeout { .. }
                | SlimError::MessageLost { .. }
                | SlimError::NoRoute(_)
                | SlimError::ModeratorLost { .. }
                | SlimError::PeerClosed { .. }
                | SlimError::PeerLost { .. }
        )
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
            SlimError::ModeratorLost { .. } => "ModeratorLost",
            SlimError::PeerClosed { .. } => "PeerClosed",
            SlimError::PeerLost { .. } => "PeerLost",
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
            SlimError::Connection(NodeError::ConnectFailed {
                endpoint: "http://127.0.0.1:1".into(),
                attempts: 1,
                reason: "refused".into(),
            }),
            SlimError::Config("bad value".into()),
            SlimError::Auth(AuthError::Missing),
            SlimError::Mls(MlsFailure::NoGroup),
            SlimError::Invite("nobody answered".into()),
            SlimError::SendBufferFull { session_id: 3, buffered: 1024 },
            SlimError::MessageTooLarge {
                size: crate::wire::MAX_PAYLOAD_SIZE + 1,
                limit: crate::wire::MAX_PAYLOAD_SIZE,
            },
            SlimError::ModeratorLost {
                session_id: 3,
                moderator: crate::wire::Name::new("org", "ns", "moderator", Some(8)),
                silent_ms: 10_000,
                undelivered: 3,
            },
            SlimError::PeerClosed {
                session_id: 3,
                peer: crate::wire::Name::new("org", "ns", "client", Some(9)),
                undelivered: 2,
            },
            SlimError::PeerLost {
                session_id: 3,
                peer: crate::wire::Name::new("org", "ns", "server", Some(10)),
                silent_ms: 10_000,
                undelivered: 1,
            },
            SlimError::Closed,
            SlimError::Internal("unexpected".into()),
        ]
    }
}

impl From<NodeError> for SlimError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Config(config) => SlimError::Config(ConfigFailure::Node(config)),
            other => SlimError::Connection(other),
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
        assert_eq!(names.len(), 17, "{names:?}");
    }

    #[test]
    fn wrapped_errors_are_sources_and_texts_are_unchanged() {
        use std::error::Error as _;
        let node = NodeError::ConnectionClosed(4);
        let e = SlimError::from(node.clone());
        assert_eq!(e.to_string(), format!("connection error: {node}"));
        assert_eq!(e.source().and_then(|s| s.downcast_ref::<NodeError>()), Some(&node));

        let mls = MlsError::NoGroup;
        let e = SlimError::from(mls.clone());
        assert_eq!(e.to_string(), format!("mls error: {mls}"));
        let failure = e.source().and_then(|s| s.downcast_ref::<MlsFailure>());
        assert_eq!(failure, Some(&MlsFailure::Group(mls.clone())));
        let commit = SlimError::Mls(MlsFailure::Commit { id: 7, source: mls.clone() });
        assert_eq!(commit.to_string(), format!("mls error: commit 7 could not be applied: {mls}"));
        let inner = commit.source().and_then(|s| s.source()).and_then(|s| s.downcast_ref::<MlsError>());
        assert_eq!(inner, Some(&mls));

        let config = ConfigError::Invalid("endpoint".into());
        let e = SlimError::from(NodeError::Config(config.clone()));
        assert_eq!(e.to_string(), format!("configuration error {config}"));
        assert_eq!(e.source().and_then(|s| s.downcast_ref::<ConfigFailure>()), Some(&ConfigFailure::Node(config)));
        let token = SlimError::Config(ConfigFailure::Identity(AuthError::Missing));
        assert_eq!(token.to_string(), "configuration error Failed to get token from provider: missing identity token");
        assert_eq!(SlimError::Config("bad value".into()).to_string(), "configuration error bad value");
    }

    #[test]
    fn texts_keep_upstream_wording() {
        assert_eq!(SlimError::SessionNotFound(7).to_string(), "session not found: 7");
        assert_eq!(SlimError::Timeout { session_id: 3, message_id: 9 }.to_string(), "message=9 session=3: timeout");
        assert!(SlimError::NoRoute("no matching found for a/b/c".into()).to_string().contains("no matching found for"));
    }
}
