//! Liveness of a point-to-point session (docs/liveness.md, "Point-to-point sessions").
//!
//! - Sticky: the initiator offers its bound in its JOIN_REQUEST; a responder of this
//!   implementation echoes it in its JOIN_REPLY. From then on the initiator pings (GROUP_PING)
//!   every quarter of the bound and the responder answers (GROUP_PONG); each side watches the
//!   other.
//! - Anycast: the initiator's first data message carries its bound (the session header's
//!   `liveness_ms`); the responder instance that gets it pings the initiator, which answers, and
//!   watches it. The initiator watches nobody (its messages may reach several instances).
//!
//! A side that hears nothing from the other for the bound ends the session: its reader gets
//! everything that arrived, then `PeerLost`. A slim-bindings 0.6.0 peer neither offers nor echoes
//! a bound, so it is never pinged nor watched.

use std::time::Duration;

use tokio::time::Instant;

use super::{P2pRole, P2pTask, Peer, TimerKey};
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
    /// Where heartbeats go (and where answers come from).
    peer: Peer,
    /// This side sends the heartbeats (a sticky initiator, an anycast responder); the other
    /// answers them.
    pings: bool,
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
            let peer = Peer { name: source.clone(), conn: join.incoming_conn() };
            self.watch_peer(bound, source_with_strings(join).unwrap_or(source), peer, false);
        }
    }

    /// Responder: its JOIN_REPLY says that it takes part (every copy of it).
    pub(super) fn confirm_heartbeats(&self, reply: &mut Message) {
        if let Some(w) = &self.watched {
            reply.metadata.insert(META_LIVENESS_MS.to_string(), liveness::format_bound(w.watch.bound()));
        }
    }

    /// Initiator, JOIN_REPLY: the responder takes part when it echoed the bound.
    pub(super) fn heartbeats_agreed(&mut self, peer: &Peer, reply: &Message) {
        if reply.metadata.contains_key(META_LIVENESS_MS) {
            let named = source_with_strings(reply).unwrap_or_else(|| peer.name.clone());
            self.watch_peer(self.liveness, named, peer.clone(), true);
        }
    }

    /// Anycast responder: the initiator's first message offered heartbeats (the dispatcher saw it,
    /// `SessionEntry::note_liveness_offer`): this side pings it and watches it.
    pub(super) fn watch_initiator(&mut self, bound_ms: u32, initiator: Name, conn: Option<u64>) {
        if self.role != P2pRole::Responder || self.sticky || self.watched.is_some() {
            Stats::bump(&self.io.app.stats.unhandled_control);
            return;
        }
        let Some(bound) = liveness::parse_bound(Some(&bound_ms.to_string())) else { return };
        let peer = Peer { name: initiator.clone(), conn };
        self.watch_peer(bound, initiator, peer, true);
    }

    fn watch_peer(&mut self, bound: Duration, named: Name, peer: Peer, pings: bool) {
        let now = Instant::now();
        self.watched = Some(Watched { watch: PeerWatch::new(bound, now), named, peer, pings });
        self.io.start_timer(TimerKey::Heartbeat, TimerPolicy::periodic(liveness::ping_interval(bound)), now);
    }

    /// No heartbeats any more (the handshake starts over, or the session ends).
    pub(super) fn unwatch(&mut self) {
        self.watched = None;
        self.io.stop_timer(TimerKey::Heartbeat);
    }

    /// Anything from the watched peer that reaches the task is a sign of life (data the
    /// dispatcher delivers itself does not: the heartbeats alone carry liveness).
    pub(super) fn heard_from(&mut self, source: &Name) {
        if let Some(w) = self.watched.as_mut()
            && w.peer.name == *source
        {
            w.watch.heard(Instant::now());
        }
    }

    /// Answers a heartbeat: a sticky responder its initiator's; an anycast initiator any
    /// instance's that got its first message (it watches none of them).
    pub(super) async fn on_ping(&mut self, msg: &Message) {
        let answers = match &self.watched {
            Some(w) => !w.pings,
            None => self.role == P2pRole::Initiator && !self.sticky,
        };
        if !answers {
            Stats::bump(&self.io.app.stats.unhandled_control);
            return;
        }
        if let Some(pong) = channel::reply_to(&self.io.app, msg, SessionMessageType::GroupPong, Vec::new()) {
            self.io.send(pong).await;
        }
    }

    /// Every quarter of the bound: a side whose peer was silent for the bound ends the session;
    /// else the side that pings does.
    pub(super) async fn on_heartbeat(&mut self) {
        let Some(w) = &self.watched else { return };
        if let Some(silent) = w.watch.lost(Instant::now()) {
            self.peer_lost(silent);
            return;
        }
        if !w.pings {
            return;
        }
        let peer = w.peer.clone();
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
