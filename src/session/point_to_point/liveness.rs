//! Liveness of a sticky point-to-point session (docs/liveness.md, "Point-to-point sessions").
//! The initiator offers its bound in its JOIN_REQUEST; a responder of this implementation echoes
//! it in its JOIN_REPLY. From then on the initiator pings (GROUP_PING) every quarter of the bound
//! and the responder answers (GROUP_PONG). A side that hears nothing from the other for the bound
//! ends the session: its reader gets everything that arrived, then `PeerLost`. A slim-bindings
//! 0.6.0 peer neither offers nor echoes the bound, so it is never pinged nor watched.

use std::time::Duration;

use tokio::time::Instant;

use super::{P2pRole, P2pTask, TimerKey};
use crate::error::SlimError;
use crate::session::channel;
use crate::session::context::{Stats, source_with_strings};
use crate::session::liveness::{self, META_LIVENESS_MS, PeerWatch};
use crate::session::timer::TimerPolicy;
use crate::wire::builders::Flags;
use crate::wire::{Message, Name, SessionMessageType, SessionType};

/// What a side knows of its peer's liveness, once both sides agreed on heartbeats.
#[derive(Debug)]
pub(super) struct Watched {
    watch: PeerWatch,
    /// The peer, with its strings when its handshake message carried them.
    named: Name,
}

impl P2pTask {
    /// Initiator: offers heartbeats in its JOIN_REQUEST.
    pub(super) fn offer_heartbeats(&self, join: &mut Message) {
        join.metadata.insert(META_LIVENESS_MS.to_string(), liveness::format_bound(self.liveness));
    }

    /// Responder, first JOIN_REQUEST: takes part when the initiator offered heartbeats, with the
    /// initiator's bound.
    pub(super) fn accept_heartbeats(&mut self, source: Name, join: &Message) {
        if let Some(bound) = liveness::parse_bound(join.metadata.get(META_LIVENESS_MS)) {
            self.watch_peer(bound, source_with_strings(join).unwrap_or(source));
        }
    }

    /// Responder: its JOIN_REPLY says that it takes part (every copy of it).
    pub(super) fn confirm_heartbeats(&self, reply: &mut Message) {
        if let Some(w) = &self.watched {
            reply.metadata.insert(META_LIVENESS_MS.to_string(), liveness::format_bound(w.watch.bound()));
        }
    }

    /// Initiator, JOIN_REPLY: the responder takes part when it echoed the bound.
    pub(super) fn heartbeats_agreed(&mut self, peer: Name, reply: &Message) {
        if reply.metadata.contains_key(META_LIVENESS_MS) {
            self.watch_peer(self.liveness, source_with_strings(reply).unwrap_or(peer));
        }
    }

    fn watch_peer(&mut self, bound: Duration, named: Name) {
        let now = Instant::now();
        self.watched = Some(Watched { watch: PeerWatch::new(bound, now), named });
        self.io.start_timer(TimerKey::Heartbeat, TimerPolicy::periodic(liveness::ping_interval(bound)), now);
    }

    /// No heartbeats any more (the handshake starts over, or the session ends).
    pub(super) fn unwatch(&mut self) {
        self.watched = None;
        self.io.stop_timer(TimerKey::Heartbeat);
    }

    /// Anything from the pinned peer that reaches the task is a sign of life (data the dispatcher
    /// delivers itself does not: the heartbeats alone carry liveness).
    pub(super) fn heard_from(&mut self, source: &Name) {
        if let (Some(w), Some(peer)) = (self.watched.as_mut(), &self.peer)
            && peer.name == *source
        {
            w.watch.heard(Instant::now());
        }
    }

    /// Responder: answers a heartbeat of its initiator.
    pub(super) async fn on_ping(&mut self, msg: &Message) {
        if self.watched.is_none() || self.role != P2pRole::Responder {
            Stats::bump(&self.io.app.stats.unhandled_control);
            return;
        }
        if let Some(pong) = channel::reply_to(&self.io.app, msg, SessionMessageType::GroupPong, Vec::new()) {
            self.io.send(pong).await;
        }
    }

    /// Every quarter of the bound: a side whose peer was silent for the bound ends the session;
    /// else the initiator pings.
    pub(super) async fn on_heartbeat(&mut self) {
        let Some(w) = &self.watched else { return };
        if let Some(silent) = w.watch.lost(Instant::now()) {
            self.peer_lost(silent);
            return;
        }
        if self.role != P2pRole::Initiator {
            return;
        }
        let Some(peer) = self.peer.clone() else { return };
        let ping = self.io.app.control(
            &peer.name,
            Flags::one().forward_to(peer.conn),
            SessionType::SessionPointToPoint,
            SessionMessageType::GroupPing,
            self.io.id,
            channel::nonce(),
            Vec::new(),
        );
        self.io.send(ping).await;
    }

    /// The peer stayed silent for the bound. Drop point: what this side still held for it
    /// (publishes queued, or sent and not acknowledged) goes with the session; REPORTED to the
    /// reader, after every message that arrived before (and the holes, as in
    /// [`Self::release_everything_held`]), as `PeerLost` with their count. The session is closed
    /// on this side and leaves the app once drained.
    fn peer_lost(&mut self, silent: Duration) {
        let Some(w) = self.watched.take() else { return };
        self.unwatch();
        // Nothing goes back to a peer that is gone (no close notice on the way out).
        self.peer_left = true;
        self.release_everything_held();
        let undelivered = self.pending.len() + self.unacked.len();
        // Control messages carry no name strings; the peer's last data message may have.
        let last = self.io.entry.last_names.lock().as_ref().map(|(source, _)| source.clone());
        let peer = last.filter(|n| *n == w.named && n.strings().is_some()).unwrap_or(w.named);
        tracing::info!(session = self.io.id, %peer, ?silent, undelivered, "peer stopped answering: session closed");
        self.io.entry.deliver_end(SlimError::PeerLost {
            session_id: self.io.id,
            peer,
            silent_ms: silent.as_millis() as u64,
            undelivered,
        });
        // The task stops; the layer keeps the session readable until drained.
        self.io.entry.close();
    }
}
