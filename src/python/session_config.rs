//! `PySessionConfiguration` (Anycast / Unicast / Multicast) and the unused-but-exported
//! `PySessionType`.

use std::time::Duration;

use pyo3::prelude::*;

use super::name::PyName;
use crate::session::SessionConfig;
use crate::session::liveness::DEFAULT_LIVENESS;

/// The kind of a session (exported for compatibility; no function takes it).
#[pyclass(name = "PySessionType", module = "slim_bindings._slim_bindings", eq, eq_int, from_py_object)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum PySessionType {
    /// Point to point, any instance of the name per message.
    ANYCAST = 0,
    /// Point to point, one instance pinned for the whole session.
    UNICAST = 1,
    /// A group on a channel.
    MULTICAST = 2,
}

/// How a session behaves. Durations are `datetime.timedelta`.
#[pyclass(name = "PySessionConfiguration", module = "slim_bindings._slim_bindings", eq, from_py_object)]
#[derive(Clone, Debug, PartialEq)]
pub enum PySessionConfiguration {
    /// Point to point, any instance of the name per message. `timeout=None` = unreliable.
    /// `liveness_timeout`: each instance that got a message of the session learns that this app
    /// is gone once it was silent that long (its reader gets `PeerLostError`; docs/liveness.md).
    #[pyo3(constructor = (timeout = None, max_retries = None, mls_enabled = false, liveness_timeout = DEFAULT_LIVENESS))]
    Anycast {
        /// Retransmission interval of unacknowledged messages; `None`: unreliable (no acks).
        timeout: Option<Duration>,
        /// Retransmissions before the message is reported as timed out (default 5).
        max_retries: Option<u32>,
        /// End-to-end encryption; it pins one instance, so the session behaves as `Unicast`.
        mls_enabled: bool,
        /// Silence of this app after which the other side ends its session (`PeerLostError`).
        liveness_timeout: Duration,
    },
    /// Point to point, one instance pinned by discovery for the whole session.
    /// `liveness_timeout`: each side learns that the other is gone once it was silent that long
    /// (`PeerLostError`; docs/liveness.md); the responder uses the initiator's.
    #[pyo3(constructor = (timeout = None, max_retries = None, mls_enabled = false, liveness_timeout = DEFAULT_LIVENESS))]
    Unicast {
        /// Retransmission interval of unacknowledged messages; `None`: unreliable (no acks).
        timeout: Option<Duration>,
        /// Retransmissions before the message is reported as timed out (default 5).
        max_retries: Option<u32>,
        /// End-to-end encryption with a two-member MLS group.
        mls_enabled: bool,
        /// Silence of the peer after which the session ends with `PeerLostError`.
        liveness_timeout: Duration,
    },
    /// A group on channel `topic`; `moderator=True` may invite and remove. `liveness_timeout`
    /// (moderator): a silent member is dropped, and members learn that this moderator is gone,
    /// within it (docs/liveness.md).
    #[pyo3(constructor = (topic, moderator = false, max_retries = 0, timeout = Duration::from_secs(1), mls_enabled = false, liveness_timeout = DEFAULT_LIVENESS))]
    Multicast {
        /// The channel name the group publishes to.
        topic: PyName,
        /// This app runs the group: it may invite and remove members.
        moderator: bool,
        /// Retransmission requests for a missing message before it is reported lost.
        max_retries: u32,
        /// Interval between those retransmission requests.
        timeout: Duration,
        /// End-to-end group encryption (MLS).
        mls_enabled: bool,
        /// Moderator: silence after which a member is dropped (and after which members consider
        /// this moderator gone).
        liveness_timeout: Duration,
    },
}

impl From<&PySessionConfiguration> for SessionConfig {
    fn from(c: &PySessionConfiguration) -> Self {
        match c.clone() {
            PySessionConfiguration::Anycast { timeout, max_retries, mls_enabled, liveness_timeout } => {
                SessionConfig::Anycast { timeout, max_retries, mls_enabled, liveness: Some(liveness_timeout) }
            }
            PySessionConfiguration::Unicast { timeout, max_retries, mls_enabled, liveness_timeout } => {
                SessionConfig::Unicast { timeout, max_retries, mls_enabled, liveness: Some(liveness_timeout) }
            }
            PySessionConfiguration::Multicast {
                topic,
                moderator,
                max_retries,
                timeout,
                mls_enabled,
                liveness_timeout,
            } => SessionConfig::Multicast {
                topic: topic.inner,
                moderator,
                max_retries,
                timeout,
                mls_enabled,
                liveness: Some(liveness_timeout),
            },
        }
    }
}

impl From<SessionConfig> for PySessionConfiguration {
    fn from(c: SessionConfig) -> Self {
        match c {
            SessionConfig::Anycast { timeout, max_retries, mls_enabled, liveness } => PySessionConfiguration::Anycast {
                timeout,
                max_retries,
                mls_enabled,
                liveness_timeout: liveness.unwrap_or(DEFAULT_LIVENESS),
            },
            SessionConfig::Unicast { timeout, max_retries, mls_enabled, liveness } => PySessionConfiguration::Unicast {
                timeout,
                max_retries,
                mls_enabled,
                liveness_timeout: liveness.unwrap_or(DEFAULT_LIVENESS),
            },
            SessionConfig::Multicast { topic, moderator, max_retries, timeout, mls_enabled, liveness } => {
                PySessionConfiguration::Multicast {
                    topic: PyName::from_name(topic),
                    moderator,
                    max_retries,
                    timeout,
                    mls_enabled,
                    liveness_timeout: liveness.unwrap_or(DEFAULT_LIVENESS),
                }
            }
        }
    }
}
