//! The session layer: an end-to-end protocol carried inside Publish messages (docs/protocol.md
//! "Session messages").
//!
//! # Shape
//!
//! - [`layer`]: the app-wide dispatcher. It reads everything the embedded node delivers, checks
//!   `SLIM_IDENTITY` before anything else, answers stateless discovery, routes each message to its
//!   session and creates sessions on reception (docs/protocol.md "How a message finds its session").
//! - [`entry`]: what the layer and the tasks share, below both: the commands a task takes, the
//!   session entry (queue, send budget, channels into the task) and the table of live sessions.
//! - [`task`]: the core of every session task (I/O to the node, timers, control messages re-sent
//!   until answered, the select loop); the per-kind behaviour sits behind its `SessionKind`
//!   trait. A task reports how it ended instead of calling back into the layer.
//! - [`point_to_point`]: one task per point-to-point session (anycast and sticky unicast,
//!   reliable or not). Unreliable anycast traffic skips the task in both directions.
//! - [`channel`]: the control messages shared by sticky P2P and (later) multicast: discovery
//!   request/reply, join request/reply, leave, route subscriptions.
//! - [`buffers`]: producer buffer (kept for retransmission) and receiver reorder buffer with
//!   duplicate suppression, shared by P2P and multicast.
//! - [`timer`]: deadline set with constant / exponential back-off, one per session task (no timer
//!   task per message).
//! - [`budget`]: the byte bound on what a point-to-point sender holds (waiting + unacknowledged).
//! - [`queue`]: the bounded delivery queues the app reads (per session, new sessions, any session).
//! - [`context`]: what a session task needs from its app (own name, identity, the node sender,
//!   counters) and the message builders every session kind uses.
//!
//! - [`multicast`]: one task per group session: producer buffer + beacons, per-producer receiver
//!   buffers with RTX, and the moderator / participant channel protocol (discovery → join →
//!   leave) using the same context, channel helpers, buffers and timers.
//!
//! MLS: a session with `mls_enabled` owns a [`crate::mls::MlsState`]. Point to point: the
//! responder's JOIN_REPLY carries a key package, the initiator answers with a WELCOME and starts
//! sending once it is acknowledged. Multicast: the moderator adds members (WELCOME to the
//! newcomer, COMMIT to earlier members, ACKs counted per member) and removes them with a COMMIT
//! before the LEAVE. Payloads (P2P_*, MULTICAST_MSG, RTX_REPLY) are encrypted on the way out
//! ([`crate::mls::interceptor`]) and decrypted at delivery; an MLS session accepts nothing else.

pub mod budget;
pub mod buffers;
pub mod channel;
pub mod context;
pub mod entry;
pub mod inbound;
pub mod layer;
pub mod liveness;
pub mod multicast;
pub mod point_to_point;
pub mod queue;
pub mod task;
pub mod timer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use bytes::Bytes;

use crate::error::SlimError;
use crate::wire::Name;
use crate::wire::original::Text;

/// Default retransmission timeout of sessions created on reception of a reliable message.
pub const REMOTE_RELIABLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default retry count of sessions created on reception of a reliable message.
pub const REMOTE_RELIABLE_RETRIES: u32 = 5;
/// Default retry count of a point-to-point session when the caller gives none.
pub const DEFAULT_P2P_RETRIES: u32 = 5;
/// Channel control messages (discovery, join, leave) are re-sent every second ...
pub const CONTROL_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// ... up to 60 times (reference values).
pub const CONTROL_MAX_RETRIES: u32 = 60;
/// Default liveness bound of a group and of a sticky point-to-point session (docs/liveness.md): a
/// member learns that its moderator is gone, a moderator that a member is gone, and each side of
/// a sticky session that the other is gone, within this time.
pub const DEFAULT_LIVENESS: Duration = Duration::from_secs(10);
/// Shortest liveness bound accepted (from the configuration or from a peer).
pub const MIN_LIVENESS: Duration = Duration::from_millis(200);
/// Longest liveness bound: refused above it here, clamped to it when a peer offers more.
pub const MAX_LIVENESS: Duration = Duration::from_secs(3600);
/// Session ids are drawn from `0 .. SESSION_ID_RANGE` (reference `SESSION_RANGE`).
pub const SESSION_ID_RANGE: u32 = u32::MAX - 1000;

/// How a session behaves. Mirrors the Python `PySessionConfiguration` variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionConfig {
    /// Point to point, not sticky: every message may reach a different instance of the name.
    Anycast {
        /// Retransmission interval; `None` = unreliable.
        timeout: Option<Duration>,
        /// Retries before a `Timeout` error (default 5).
        max_retries: Option<u32>,
        /// MLS makes the session sticky (reported back as `Unicast`).
        mls_enabled: bool,
        /// Initiator: the bound within which the instance that got its first message learns that
        /// this app is gone (docs/liveness.md, "Anycast sessions"); `None` = [`DEFAULT_LIVENESS`].
        liveness: Option<Duration>,
    },
    /// Point to point, sticky: discovery pins one instance for the whole session.
    Unicast {
        /// Retransmission interval; `None` = unreliable.
        timeout: Option<Duration>,
        /// Retries before a `Timeout` error (default 5).
        max_retries: Option<u32>,
        /// End-to-end encryption with a two-member MLS group.
        mls_enabled: bool,
        /// How soon each side learns that the other is gone (docs/liveness.md, "Point-to-point
        /// sessions"); `None` = [`DEFAULT_LIVENESS`]. The responder uses the initiator's bound.
        liveness: Option<Duration>,
    },
    /// A group on channel `topic`.
    Multicast {
        /// The channel name.
        topic: Name,
        /// Only a moderator can invite and remove.
        moderator: bool,
        /// RTX retries for gaps.
        max_retries: u32,
        /// RTX interval.
        timeout: Duration,
        /// End-to-end group encryption.
        mls_enabled: bool,
        /// Moderator: how soon a silent member is dropped and a member learns that this moderator
        /// is gone (docs/liveness.md); `None` = [`DEFAULT_LIVENESS`]. Members use their
        /// moderator's bound.
        liveness: Option<Duration>,
    },
}

impl SessionConfig {
    /// The default point-to-point config for sessions created on reception (seed: Anycast, no
    /// timeout, 5 retries).
    pub fn default_p2p() -> Self {
        SessionConfig::Anycast {
            timeout: None,
            max_retries: Some(DEFAULT_P2P_RETRIES),
            mls_enabled: false,
            liveness: None,
        }
    }

    /// The default multicast config for sessions created on reception (the channel name slim-bindings 0.6.0 uses).
    pub fn default_multicast() -> Self {
        SessionConfig::Multicast {
            topic: Self::default_multicast_topic(),
            moderator: false,
            max_retries: 10,
            timeout: Duration::from_secs(1),
            mls_enabled: false,
            liveness: None,
        }
    }

    /// Placeholder channel of a multicast default config.
    pub fn default_multicast_topic() -> Name {
        Name::new("agntcy", "ns", "multicast", None)
    }

    /// True for the two point-to-point variants.
    pub fn is_point_to_point(&self) -> bool {
        !matches!(self, SessionConfig::Multicast { .. })
    }

    /// Normalises what the reference normalises: MLS forces a point-to-point session sticky.
    pub fn normalized(self) -> Self {
        match self {
            SessionConfig::Anycast { timeout, max_retries, mls_enabled: true, liveness } => {
                tracing::warn!("MLS requires a sticky session: Anycast with mls_enabled becomes Unicast");
                SessionConfig::Unicast { timeout, max_retries, mls_enabled: true, liveness }
            }
            other => other,
        }
    }

    /// Checks the values a caller can get wrong.
    pub fn validate(&self) -> Result<(), SlimError> {
        match self {
            SessionConfig::Anycast { timeout: Some(t), .. } | SessionConfig::Unicast { timeout: Some(t), .. }
                if t.is_zero() =>
            {
                Err(SlimError::Config("timeout must be greater than zero".into()))
            }
            SessionConfig::Multicast { timeout, .. } if timeout.is_zero() => {
                Err(SlimError::Config("timeout must be greater than zero".into()))
            }
            SessionConfig::Multicast { liveness: Some(l), .. }
            | SessionConfig::Unicast { liveness: Some(l), .. }
            | SessionConfig::Anycast { liveness: Some(l), .. }
                if *l < MIN_LIVENESS || *l > MAX_LIVENESS =>
            {
                // The peer clamps what it is offered to the same range (`liveness::parse_bound`):
                // a bound outside it would not be the one both sides keep.
                Err(SlimError::Config(
                    format!("liveness_timeout must be between {MIN_LIVENESS:?} and {:?}", MAX_LIVENESS).into(),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// What the receiver learns about a message besides its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Session the message belongs to.
    pub session_id: u32,
    /// Sender name with the sender's instance id.
    pub source: Name,
    /// The name the message was addressed to (id may be any).
    pub destination: Name,
    /// Content type (`"msg"` unless the publisher set another).
    pub payload_type: Text,
    /// User metadata only: protocol keys (`SLIM_IDENTITY`, `MLS_*`, ...) are removed.
    pub metadata: HashMap<String, String>,
    /// Connection of this app's node the message came in on (used to reply).
    pub input_connection: Option<u64>,
    /// Message id within the session.
    pub message_id: u32,
}

impl MessageInfo {
    /// An info with only the session id set (what `create_session` returns).
    pub fn for_session(session_id: u32) -> Self {
        MessageInfo {
            session_id,
            source: Name::new("", "", "", None),
            destination: Name::new("", "", "", None),
            payload_type: Text::default(),
            metadata: HashMap::new(),
            input_connection: None,
            message_id: 0,
        }
    }
}

/// One `publish` call. `Default` gives fanout 1 (one instance) and empty everything else.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// Destination; `None` = reply to `reply_to`'s source through its input connection.
    pub dest: Option<Name>,
    /// The message being replied to (used when `dest` is `None`).
    pub reply_to: Option<Arc<MessageInfo>>,
    /// Payload (`Vec<u8>` converts without copying: `vec.into()`).
    pub blob: Bytes,
    /// Content type; `"msg"` when `None`.
    pub payload_type: Option<String>,
    /// User metadata merged into the message.
    pub metadata: Option<HashMap<String, String>>,
    /// SLIM-header fanout (1 = one instance).
    pub fanout: u32,
}

impl Default for PublishRequest {
    fn default() -> Self {
        PublishRequest { dest: None, reply_to: None, blob: Bytes::new(), payload_type: None, metadata: None, fanout: 1 }
    }
}

/// What a session queue yields: a message, or a typed error for that session.
pub type Delivery = Result<(MessageInfo, Vec<u8>), SlimError>;

/// A received message as a session queue holds it: its info, allocated once and shared (the
/// Python layer's `PySessionInfo` holds the same `Arc`; a queue slot and every move of the item
/// carry a pointer, not the ~180-byte info), and the payload still shared with the received frame
/// (the Python layer copies it once, into a `bytes`).
pub type RawMessage = (Arc<MessageInfo>, Bytes);

/// What a session queue holds: [`Delivery`] as [`RawMessage`]s.
pub type RawDelivery = Result<RawMessage, SlimError>;

/// A queued message as the Rust API returns it (info owned, payload copied into a `Vec`).
pub fn owned_message((info, blob): RawMessage) -> (MessageInfo, Vec<u8>) {
    (Arc::unwrap_or_clone(info), Vec::from(blob))
}

/// A queued item as the Rust API returns it (see [`owned_message`]).
pub fn owned(d: RawDelivery) -> Delivery {
    d.map(owned_message)
}
