//! A member's side of a group: it joins when the moderator asks (JOIN_REQUEST, then the MLS
//! WELCOME and COMMITs in order) and leaves when asked (LEAVE_REQUEST).

use super::{McTimer, MulticastRole, MulticastTask};
use crate::error::{MlsFailure, SlimError};
use crate::mls::{Admission, CommitOutcome, MlsState};
use crate::session::buffers::{ReceiverBuffer, Released};
use crate::session::channel;
use crate::session::context::Stats;
use crate::session::liveness;
use crate::session::task::Flow;
use crate::wire::builders::{self, Flags};
use crate::wire::{self, META_FIRST_ID, Message, Name, SessionMessageType};

impl MulticastTask {
    /// Participant: the first invite pins the moderator and (without MLS) joins the channel; every
    /// copy is answered, with MLS carrying a key package.
    pub(super) async fn on_join_request(&mut self, source: Name, msg: &Message) {
        if self.role == MulticastRole::Moderator {
            Stats::bump(&self.io.app.stats.unhandled_control);
            return;
        }
        if self.moderator.is_none() {
            let Some(conn) = msg.incoming_conn() else { return };
            // A moderator of this implementation (it says where its stream starts) also says,
            // once this member is in, where the other members' streams start (`super::starts`):
            // until then this member holds its publishes and keeps their messages aside.
            self.starts_pending = msg.metadata.contains_key(META_FIRST_ID);
            self.conn = Some(conn);
            self.moderator = Some(source.clone());
            {
                // Recorded and sent under the table's channel lock: another session of this app
                // leaving the same moderator decides whether to remove this route either wholly
                // before or wholly after it is set (see `on_leave_request`).
                let table = self.sessions.upgrade();
                let mut ops = match &table {
                    Some(t) => Some(t.channel_ops().await),
                    None => None,
                };
                if let Some(ops) = ops.as_mut() {
                    ops.hold_moderator_route(self.io.id, &source, conn);
                }
                self.io.send(channel::set_route(&self.io.app, &source, conn)).await;
            }
            if !self.keys.enabled() {
                self.join_channel(conn, false).await;
            }
            // With MLS the channel is joined on the WELCOME (as 0.6.0 does): group traffic
            // arriving before it could not be decrypted and would be lost, whereas a producer's
            // beacon after the join gets it retransmitted at an epoch this member has.
        }
        // Where the moderator's stream starts for this member (a moderator of this
        // implementation says; a 0.6.0 one does not: then the first message seen). A later
        // invite by the same moderator (the first failed before anything reached this member)
        // moves the start to what that invite says: the messages between were for the group
        // this member was not part of.
        if self.moderator.as_ref() == Some(&source)
            && let Some(first) = msg.metadata.get(META_FIRST_ID).and_then(|v| v.parse::<u32>().ok())
            && self.receivers.get(&source).is_none_or(ReceiverBuffer::untouched)
        {
            self.receivers.insert(source.clone(), ReceiverBuffer::starting_at(first));
        }
        let mut blob = Vec::new();
        if self.keys.enabled() {
            match self.participant_key_package() {
                Ok(kp) => blob = kp,
                Err(e) => {
                    Stats::bump(&self.io.app.stats.mls_failures);
                    tracing::debug!(session = self.io.id, error = %e, "no key package for the join reply");
                    return;
                }
            }
        }
        // Every copy is answered: a retransmitted request means the reply was lost.
        let heartbeats = self.accept_heartbeats(msg);
        if let Some(mut reply) = channel::reply_to(&self.io.app, msg, SessionMessageType::ChannelJoinReply, blob) {
            if let Some(w) = heartbeats.then_some(self.moderator_watch.as_ref()).flatten() {
                reply.metadata.insert(liveness::META_LIVENESS_MS.to_string(), liveness::format_bound(w.bound()));
            }
            if self.starts_pending {
                // Where this member's stream starts: nothing leaves before the positions come.
                let first = self.io.entry.next_id.load(std::sync::atomic::Ordering::Relaxed);
                reply.metadata.insert(META_FIRST_ID.to_string(), first.to_string());
            }
            self.io.send(reply).await;
        }
    }

    /// Participant: the key package for the moderator's JOIN_REPLY, made once and re-sent
    /// unchanged.
    pub(super) fn participant_key_package(&mut self) -> Result<Vec<u8>, SlimError> {
        if let Some(kp) = self.keys.key_package() {
            return Ok(kp.clone());
        }
        let mls_err = SlimError::from;
        let mut state = MlsState::new(self.io.app.provider.clone(), self.io.app.verifier.clone()).map_err(mls_err)?;
        let kp = state.key_package().map_err(mls_err)?;
        self.keys.install(state, Some(kp.clone()));
        Ok(kp)
    }

    /// Participant: joins the group from the WELCOME (first one only) and acknowledges it.
    pub(super) async fn on_welcome(&mut self, msg: &Message) {
        if !self.keys.is_ready() {
            let init_id = msg.metadata.get(wire::META_MLS_INIT_COMMIT_ID).and_then(|v| v.parse::<u32>().ok());
            let applied = match (self.keys.state_mut(), init_id) {
                (Some(mls), Some(init_id)) => {
                    mls.process_welcome(msg.blob()).map(|_| self.sequencer.on_welcome(init_id)).is_ok()
                }
                _ => false,
            };
            if !applied {
                Stats::bump(&self.io.app.stats.mls_failures);
                tracing::debug!(session = self.io.id, "welcome could not be applied");
                return;
            }
            self.keys.set_ready(true);
            self.apply_ready_commits();
            if let Some(conn) = self.conn {
                self.join_channel(conn, false).await;
            }
        }
        if let Some(ack) = channel::reply_to(&self.io.app, msg, SessionMessageType::ChannelMlsAck, Vec::new()) {
            self.io.send(ack).await;
        }
        self.flush_held().await;
    }

    /// Participant: orders and applies a COMMIT, then acknowledges it.
    pub(super) async fn on_commit(&mut self, mid: u32, msg: &Message) {
        match self.sequencer.offer(mid, msg.blob().to_vec()) {
            Admission::Accepted | Admission::Stale => {
                // Stale: already applied, our ACK was lost; acknowledging again is harmless.
                self.apply_ready_commits();
                if let Some(ack) = channel::reply_to(&self.io.app, msg, SessionMessageType::ChannelMlsAck, Vec::new()) {
                    self.io.send(ack).await;
                }
            }
            // A newcomer also hears the COMMIT that added it, before its WELCOME: nothing to apply.
            Admission::NoWelcomeYet => Stats::bump(&self.io.app.stats.unhandled_control),
            Admission::Full => Stats::bump(&self.io.app.stats.mls_failures),
        }
    }

    /// Participant: applies the COMMITs that are next in moderator order; a COMMIT that removes
    /// this member stops its traffic.
    pub(super) fn apply_ready_commits(&mut self) {
        while let Some((id, commit)) = self.sequencer.next_ready() {
            let Some(mls) = self.keys.state_mut() else { return };
            match mls.process_commit(&commit) {
                Ok(CommitOutcome::Applied) => {}
                Ok(CommitOutcome::Removed) => self.keys.set_ready(false),
                Err(e) => {
                    // The group moved on without this member (a commit it cannot apply, e.g. one
                    // adding a member whose credential this app's verifier rejects): what is
                    // encrypted at the new epoch cannot be read here. REPORTED: counted and
                    // delivered on the session's queue (MlsError from `receive`); the messages
                    // it then cannot decrypt are reported one by one as MessageLost.
                    Stats::bump(&self.io.app.stats.mls_failures);
                    tracing::debug!(session = self.io.id, commit = id, error = %e, "commit could not be applied");
                    self.io.entry.deliver_error(SlimError::Mls(MlsFailure::Commit { id, source: e }));
                }
            }
        }
    }

    /// Subscribes the channel toward the group and routes it out through `conn` (docs/protocol.md
    /// "Joining the channel").
    pub(super) async fn join_channel(&mut self, conn: u64, creation: bool) {
        if self.joined_channel {
            return;
        }
        // Sent under the table's channel lock: a session of this app leaving the same channel
        // decides and unsubscribes either wholly before or wholly after this subscribe.
        let table = self.sessions.upgrade();
        let _channel_ops = match &table {
            Some(t) => Some(t.channel_ops().await),
            None => None,
        };
        let mut sub = builders::subscribe(&self.io.app.name, &self.channel, Flags::one().forward_to(Some(conn)));
        sub.metadata.insert(wire::META_CHANNEL_SUBSCRIPTION.to_string(), "true".to_string());
        if creation {
            sub.metadata.insert(wire::META_CHANNEL_CREATION.to_string(), "true".to_string());
        }
        self.io.send(sub).await;
        self.io.send(channel::set_route(&self.io.app, &self.channel, conn)).await;
        self.joined_channel = true;
    }

    /// True when another session of this app is on the same channel: the node keeps one
    /// subscription per (name, connection), so leaving must not take it from that session.
    pub(super) fn channel_shared(&self) -> bool {
        self.sessions.upgrade().is_some_and(|t| t.channel_shared(self.io.id, &self.channel))
    }

    /// Unsubscribes the channel and removes its route, unless another session of this app still
    /// uses them.
    pub(super) async fn leave_channel(&mut self) {
        let Some(conn) = self.conn else { return };
        // The check and the unsubscribe under one lock (see `join_channel`).
        let table = self.sessions.upgrade();
        let _channel_ops = match &table {
            Some(t) => Some(t.channel_ops().await),
            None => None,
        };
        if self.channel_shared() {
            self.joined_channel = false;
            return;
        }
        if self.joined_channel {
            let mut unsub =
                builders::unsubscribe(&self.io.app.name, &self.channel, Flags::one().forward_to(Some(conn)));
            unsub.metadata.insert(wire::META_CHANNEL_SUBSCRIPTION.to_string(), "true".to_string());
            self.io.send(unsub).await;
            self.io.send(channel::remove_route(&self.io.app, &self.channel, conn)).await;
            self.joined_channel = false;
        }
    }

    /// Participant: leaves the channel and answers; [`Flow::Leave`] ends the session.
    pub(super) async fn on_leave_request(&mut self, msg: &Message) -> Flow {
        if self.role == MulticastRole::Moderator {
            Stats::bump(&self.io.app.stats.unhandled_control);
            return Flow::Continue;
        }
        self.leave_channel().await;
        if let Some(reply) = channel::reply_to(&self.io.app, msg, SessionMessageType::ChannelLeaveReply, Vec::new()) {
            self.io.send(reply).await;
        }
        self.drop_moderator_route().await;
        // Drop point: publishes this member still held (waiting for the group to be ready, or
        // still in the command channel) go with the session; REPORTED to the reader, after every
        // message that arrived before, in the `PeerClosed` that names the moderator and counts
        // them (queued by `task::run` once the task stopped). The layer closes the session once
        // the task ended, and drops it once its reader has drained it.
        self.release_all_windows().await;
        let (peer, undelivered) = (self.moderator_named(), self.held.len());
        self.io.ending = Some(SlimError::PeerClosed { session_id: self.io.id, peer, undelivered });
        Flow::Leave
    }

    /// The route to the moderator goes with this session, unless another session of this app
    /// still needs it.
    pub(super) async fn drop_moderator_route(&mut self) {
        if let (Some(moderator), Some(conn)) = (self.moderator.clone(), self.conn) {
            // The route to the moderator is shared by every session of this app that the same
            // moderator invited through the same connection (whatever their channels): it goes
            // only with the last of them. The check and the removal hold the channel lock that
            // `on_join_request` takes to set it, so a session joining meanwhile is either seen
            // here or sets the route again after this removal.
            let table = self.sessions.upgrade();
            let mut ops = match &table {
                Some(t) => Some(t.channel_ops().await),
                None => None,
            };
            let last = match (&table, ops.as_mut()) {
                (Some(t), Some(ops)) => ops.release_moderator_route(t, self.io.id, &moderator, conn),
                // The app is going away: no session of it needs the route.
                _ => true,
            };
            if last {
                self.io.send(channel::remove_route(&self.io.app, &moderator, conn)).await;
            }
        }
    }

    /// Drop point: what the reorder windows held behind holes, and the holes, would go with the
    /// session: released now, messages in order and each hole REPORTED (MessageLost).
    pub(super) async fn release_all_windows(&mut self) {
        if self.starts_pending {
            // What was kept aside waiting for the positions goes to the windows first (each
            // starting at the first message it sees), so it is released too.
            self.release_early().await;
        }
        let producers: Vec<Name> = self.receivers.keys().cloned().collect();
        for producer in producers {
            self.release_window(&producer).await;
        }
    }

    /// Drop point: what `producer`'s reorder window holds behind holes, and the holes: released
    /// now, messages in order and each hole REPORTED (MessageLost); a late retransmission of one
    /// is no longer waited for (its RTX timer stops).
    pub(super) async fn release_window(&mut self, producer: &Name) {
        let Some(rb) = self.receivers.get_mut(producer) else { return };
        rb.give_up_all(&mut self.io.released);
        let holes: Vec<u32> = self
            .io
            .released
            .iter()
            .filter_map(|r| if let Released::Lost(mid) = r { Some(*mid) } else { None })
            .collect();
        for mid in holes {
            self.io.stop_timer(McTimer::Rtx(producer.clone(), mid));
        }
        self.flush_released(producer).await;
    }
}
