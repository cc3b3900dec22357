//! The MLS side of a group session as one state: off, no group yet, a group that cannot carry
//! traffic (yet, or any more), or a group that can.

use crate::mls::MlsState;

/// The MLS state of a group session.
pub(super) enum GroupKeys {
    /// The session does not use MLS: payloads travel as published.
    Off,
    /// MLS on, no group state yet: a moderator before its first add, a participant before its
    /// first invite.
    NoGroup,
    /// Group state that cannot carry traffic: a moderator's group before its first secured add,
    /// a participant waiting for its WELCOME, or one a COMMIT removed from the group.
    Waiting {
        /// The openmls group (or, for a participant, its pending key package's state).
        state: MlsState,
        /// Participant: the key package sent in JOIN_REPLY (re-sent unchanged).
        key_package: Option<Vec<u8>>,
    },
    /// Traffic flows: the moderator secured an add, the participant applied its WELCOME.
    Ready {
        /// The openmls group.
        state: MlsState,
        /// Participant: the key package sent in JOIN_REPLY (re-sent unchanged).
        key_package: Option<Vec<u8>>,
    },
}

impl GroupKeys {
    /// The state of a new session: `NoGroup` with MLS, `Off` without.
    pub(super) fn new(mls_enabled: bool) -> Self {
        if mls_enabled { GroupKeys::NoGroup } else { GroupKeys::Off }
    }

    /// The session uses MLS.
    pub(super) fn enabled(&self) -> bool {
        !matches!(self, GroupKeys::Off)
    }

    /// The group can carry traffic.
    pub(super) fn is_ready(&self) -> bool {
        matches!(self, GroupKeys::Ready { .. })
    }

    /// Application traffic may flow: no MLS, or a ready group.
    pub(super) fn carries_traffic(&self) -> bool {
        matches!(self, GroupKeys::Off | GroupKeys::Ready { .. })
    }

    /// The group state, ready or not.
    pub(super) fn state(&self) -> Option<&MlsState> {
        match self {
            GroupKeys::Waiting { state, .. } | GroupKeys::Ready { state, .. } => Some(state),
            GroupKeys::Off | GroupKeys::NoGroup => None,
        }
    }

    /// The group state, ready or not (mutable).
    pub(super) fn state_mut(&mut self) -> Option<&mut MlsState> {
        match self {
            GroupKeys::Waiting { state, .. } | GroupKeys::Ready { state, .. } => Some(state),
            GroupKeys::Off | GroupKeys::NoGroup => None,
        }
    }

    /// The group state when it can carry traffic.
    pub(super) fn ready_state_mut(&mut self) -> Option<&mut MlsState> {
        match self {
            GroupKeys::Ready { state, .. } => Some(state),
            _ => None,
        }
    }

    /// Participant: the key package already sent, if any.
    pub(super) fn key_package(&self) -> Option<&Vec<u8>> {
        match self {
            GroupKeys::Waiting { key_package, .. } | GroupKeys::Ready { key_package, .. } => key_package.as_ref(),
            GroupKeys::Off | GroupKeys::NoGroup => None,
        }
    }

    /// Takes a new group state (not ready yet): a moderator's new group, or a participant's
    /// state with the key package it sends.
    pub(super) fn install(&mut self, state: MlsState, key_package: Option<Vec<u8>>) {
        *self = GroupKeys::Waiting { state, key_package };
    }

    /// The group can carry traffic (`true`: secured add, applied WELCOME) or no longer can
    /// (`false`: a COMMIT removed this member). No-op without group state.
    pub(super) fn set_ready(&mut self, ready: bool) {
        *self = match std::mem::replace(self, GroupKeys::Off) {
            GroupKeys::Waiting { state, key_package } | GroupKeys::Ready { state, key_package } => {
                if ready {
                    GroupKeys::Ready { state, key_package }
                } else {
                    GroupKeys::Waiting { state, key_package }
                }
            }
            other => other,
        };
    }
}
