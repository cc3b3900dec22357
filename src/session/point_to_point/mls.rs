//! The two-member MLS group of a point-to-point session: the responder's key package and
//! WELCOME, the initiator's group creation and the WELCOME's acknowledgement.

use super::{P2pRole, P2pTask};
use crate::error::SlimError;
use crate::mls::MlsState;
use crate::session::channel;
use crate::session::context::Stats;
use crate::wire::builders::Flags;
use crate::wire::{Message, SessionMessageType, SessionType};

impl P2pTask {
    /// The responder's key package: made once, re-sent unchanged.
    pub(super) fn responder_key_package(&mut self) -> Result<Vec<u8>, SlimError> {
        if let Some(kp) = &self.key_package {
            return Ok(kp.clone());
        }
        let mut state =
            MlsState::new(self.io.app.provider.clone(), self.io.app.verifier.clone()).map_err(SlimError::from)?;
        let kp = state.key_package().map_err(SlimError::from)?;
        self.mls = Some(state);
        self.key_package = Some(kp.clone());
        Ok(kp)
    }

    /// Responder: joins the group from the WELCOME and acknowledges it (every copy).
    pub(super) async fn on_welcome(&mut self, msg: &Message) {
        if self.role != P2pRole::Responder {
            Stats::bump(&self.io.app.stats.unhandled_control);
            return;
        }
        if !self.mls_ready {
            let Some(mls) = self.mls.as_mut() else {
                Stats::bump(&self.io.app.stats.mls_failures);
                return;
            };
            if let Err(e) = mls.process_welcome(msg.blob()) {
                Stats::bump(&self.io.app.stats.mls_failures);
                tracing::debug!(session = self.io.id, error = %e, "welcome rejected");
                return;
            }
            self.mls_ready = true;
        }
        if let Some(ack) = channel::reply_to(&self.io.app, msg, SessionMessageType::ChannelMlsAck, Vec::new()) {
            self.io.send(ack).await;
        }
        self.drain_pending().await;
    }

    /// Initiator: the peer applied the WELCOME; the group is up and buffered messages go out.
    pub(super) async fn on_mls_ack(&mut self, mid: u32) {
        if self.welcome_id != Some(mid) {
            Stats::bump(&self.io.app.stats.unhandled_control);
            return;
        }
        self.io.stop_control(mid);
        self.welcome_id = None;
        self.mls_ready = true;
        self.handshake_done();
        self.drain_pending().await;
    }

    /// Initiator: makes the group, adds the peer from its key package and sends the WELCOME.
    pub(super) async fn start_mls(&mut self, key_package: &[u8]) -> Result<(), SlimError> {
        let mls_err = SlimError::from;
        let mut state = MlsState::new(self.io.app.provider.clone(), self.io.app.verifier.clone()).map_err(mls_err)?;
        state.create_group().map_err(mls_err)?;
        let added = state.add_member(key_package).map_err(mls_err)?;
        self.mls = Some(state);
        let Some(peer) = self.peer.clone() else { return Err(SlimError::Internal("MLS without a peer".into())) };
        let welcome_id = channel::nonce();
        let mut welcome = self.io.app.control(
            &peer.name,
            Flags::one().forward_to(peer.conn),
            SessionType::SessionPointToPoint,
            SessionMessageType::ChannelMlsWelcome,
            self.io.id,
            welcome_id,
            added.welcome,
        );
        // The commit that added the peer is the group's first (the reference numbers it 1).
        welcome.metadata.insert(crate::wire::META_MLS_INIT_COMMIT_ID.to_string(), "1".to_string());
        self.welcome_id = Some(welcome_id);
        self.io.send_control(welcome_id, welcome).await;
        Ok(())
    }
}
