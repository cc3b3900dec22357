//! How a point-to-point session ends on both sides (docs/protocol.md, "Closing"): an initiator
//! that deletes its session (or whose app closes) tells the side it addressed with SESSION_CLOSE;
//! a side told so, or sent CHANNEL_LEAVE_REQUEST, closes after its reader has taken what arrived
//! before (`SessionTable::retire_when_drained`), and the reader learns why (`PeerClosed`).

use super::{P2pRole, P2pTask};
use crate::error::SlimError;
use crate::session::channel;
use crate::session::context::{Stats, Target, source_with_strings};
use crate::session::task::Flow;
use crate::wire::{Message, Name, SessionMessageType};

impl P2pTask {
    /// The peer ended the session (CHANNEL_LEAVE_REQUEST, answered, or SESSION_CLOSE). Drop point:
    /// what this side still held for the peer (publishes queued, or sent and not acknowledged)
    /// goes with the session; REPORTED to the reader, after every message that arrived before, as
    /// `PeerClosed` with their count.
    pub(super) async fn on_peer_closed(&mut self, source: Name, msg: &Message) -> Flow {
        // A sticky session takes it from its pinned peer only (checked by the caller); any other
        // from the source of what it received last, when it received anything.
        let last_source = self.io.entry.last_names.lock().as_ref().map(|(s, _)| s.clone());
        if last_source.is_some_and(|s| s != source) {
            // Drop point: not this session's peer; counted (`wrong_peer`), not a message.
            Stats::bump(&self.io.app.stats.wrong_peer);
            return Flow::Continue;
        }
        if msg.session_message_type() == SessionMessageType::ChannelLeaveRequest
            && let Some(reply) = channel::reply_to(&self.io.app, msg, SessionMessageType::ChannelLeaveReply, Vec::new())
        {
            self.io.send(reply).await;
        }
        self.peer_left = true;
        self.unwatch();
        self.release_everything_held();
        let source = source_with_strings(msg).unwrap_or(source);
        let undelivered = self.pending.len() + self.unacked.len();
        tracing::debug!(session = self.io.id, undelivered, "the peer closed the session");
        // Queued for the reader when the task stops (`task::run`), with the publishes still in
        // the command channel counted in (`TaskCore::count_unserved`). The layer closes the
        // session once the task ended, and drops it once it is drained.
        self.io.ending = Some(SlimError::PeerClosed { session_id: self.io.id, peer: source, undelivered });
        Flow::Leave
    }

    /// Drop point: what the reorder window held behind a hole, and the holes, would go with the
    /// session: released now, messages in order and each hole REPORTED (MessageLost), before
    /// the end itself.
    pub(super) fn release_everything_held(&mut self) {
        self.take_back();
        if let Some(rb) = self.receiver.as_mut() {
            rb.give_up_all(&mut self.io.released);
        }
        self.flush_released();
    }

    /// The task stops because this app deleted the session or closes. An initiator tells the
    /// side it talks to: the pinned peer of a sticky session, else where its first publish went
    /// (one instance, on the path its data took: `channel::session_close`). A sticky responder
    /// tells its initiator only when the two exchange heartbeats (then the initiator is of this
    /// implementation; a 0.6.0 one would log an error for a message type it does not know). Best
    /// effort and sent once: a delete has already waited for what was published to be taken, and
    /// a lost notice only leaves the other side's session open until its liveness bound (or, with
    /// no heartbeats, until its app deletes it).
    pub(super) async fn send_close_notice(&mut self) {
        let tells = match self.role {
            P2pRole::Initiator => true,
            // Only a sticky one: an anycast initiator talks to a name, and one instance of it
            // leaving does not end its session.
            P2pRole::Responder => self.sticky && self.watched.is_some(),
        };
        if self.peer_left || !tells {
            return;
        }
        let target = match (&self.peer, self.sticky) {
            (Some(p), true) => Target { name: p.name.clone(), forward_to: p.conn },
            _ => match self.io.entry.addressed.get() {
                Some(t) => t.clone(),
                None => return, // never published: nobody to tell
            },
        };
        self.io.send(channel::session_close(&self.io.app, self.io.id, &target)).await;
    }
}
