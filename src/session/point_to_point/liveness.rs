//! Liveness of a point-to-point session (docs/liveness.md, "Point-to-point sessions").
//!
//! - Sticky: the initiator offers its bound in its JOIN_REQUEST; a responder of this
//!   implementation echoes it in its JOIN_REPLY. From then on each side pings the other
//!   (GROUP_PING, not answered) every quarter of the bound and watches it.
//! - Anycast: the initiator's data messages carry its bound (the session header's
//!   `liveness_ms`); each responder instance that gets one pings the initiator, whose dispatcher
//!   answers (GROUP_PONG), and watches it. The initiator watches nobody (its messages may reach
//!   several instances).
//!
//! The watch runs on a heartbeat task of its own ([`beat`]), and the signs of life are noted by
//! the app's dispatcher as they arrive (`PeerSignals`), so that neither the session task's
//! backlog nor a slow reader delays either. A side that hears nothing from the other for the
//! bound ends the session: its reader gets everything that arrived, then `PeerLost`. A
//! slim-bindings 0.6.0 peer neither offers nor echoes a bound, so it is never pinged nor watched.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{P2pRole, P2pTask, Peer};
use crate::error::SlimError;
use crate::session::CONTROL_RETRY_INTERVAL;
use crate::session::channel;
use crate::session::context::{AppCore, Stats, source_with_strings};
use crate::session::entry::SessionEntry;
use crate::session::liveness::{self, META_LIVENESS_MS, PeerWatch};
use crate::session::task::Flow;
use crate::wire::builders::Flags;
use crate::wire::{Message, Name, SessionMessageType, SessionType};

/// What a side knows of its peer's liveness, once both sides agreed on heartbeats.
#[derive(Debug)]
pub(super) struct Watched {
    bound: Duration,
    /// The peer, with its strings when its handshake message carried them.
    named: Name,
    /// Stops the heartbeat task when the watch ends (the task stops with the session too: its
    /// token is a child of the session's).
    _beat: DropGuard,
}

impl P2pTask {
    /// Initiator: offers heartbeats in its JOIN_REQUEST.
    pub(super) fn offer_heartbeats(&self, join: &mut Message) {
        join.metadata.insert(META_LIVENESS_MS.to_string(), liveness::format_bound(self.liveness));
    }

    /// Responder, first JOIN_REQUEST: takes part when the initiator offered heartbeats, with the
    /// initiator's bound. Its first look waits one handshake retry longer: the initiator pings
    /// only once our JOIN_REPLY reached it, and a lost reply costs a retry of the request.
    pub(super) fn accept_heartbeats(&mut self, source: Name, join: &Message) {
        if let Some(bound) = liveness::parse_bound(join.metadata.get(META_LIVENESS_MS)) {
            let peer = Peer { name: source.clone(), conn: join.incoming_conn() };
            self.watch_peer(bound, source_with_strings(join).unwrap_or(source), peer, CONTROL_RETRY_INTERVAL);
        }
    }

    /// Responder: its JOIN_REPLY says that it takes part (every copy of it).
    pub(super) fn confirm_heartbeats(&self, reply: &mut Message) {
        if let Some(w) = &self.watched {
            reply.metadata.insert(META_LIVENESS_MS.to_string(), liveness::format_bound(w.bound));
        }
    }

    /// Initiator, JOIN_REPLY: the responder takes part when it echoed the bound.
    pub(super) fn heartbeats_agreed(&mut self, peer: &Peer, reply: &Message) {
        if reply.metadata.contains_key(META_LIVENESS_MS) {
            let named = source_with_strings(reply).unwrap_or_else(|| peer.name.clone());
            self.watch_peer(self.liveness, named, peer.clone(), Duration::ZERO);
        }
    }

    /// Anycast responder: the initiator's messages offer heartbeats (the dispatcher saw one,
    /// `SessionEntry::note_liveness_offer`): this side pings it and watches it.
    pub(super) fn watch_initiator(&mut self, bound_ms: u32, initiator: Name, conn: Option<u64>) {
        if self.role != P2pRole::Responder || self.sticky || self.watched.is_some() {
            Stats::bump(&self.io.app.stats.unhandled_control);
            return;
        }
        let Some(bound) = liveness::parse_bound(Some(&bound_ms.to_string())) else { return };
        let peer = Peer { name: initiator.clone(), conn };
        self.watch_peer(bound, initiator, peer, Duration::ZERO);
    }

    fn watch_peer(&mut self, bound: Duration, named: Name, peer: Peer, grace: Duration) {
        self.unwatch();
        let stop = self.io.entry.cancel.child_token();
        self.io.entry.signals.watch(peer.name.clone());
        let plan = Beat { bound, grace, peer };
        tokio::spawn(beat(self.io.app.clone(), self.io.entry.clone(), plan, stop.clone()));
        self.watched = Some(Watched { bound, named, _beat: stop.drop_guard() });
    }

    /// No heartbeats any more (the handshake starts over, or the session ends).
    pub(super) fn unwatch(&mut self) {
        self.watched = None;
        self.io.entry.signals.unwatch();
    }

    /// The heartbeat task found the peer silent for the bound (`PeerSignals::raise`).
    pub(super) fn on_alarm_inner(&mut self) -> Flow {
        match self.io.entry.signals.take_alarm() {
            Some(silent) if self.watched.is_some() => {
                self.peer_lost(silent);
                Flow::Leave
            }
            _ => Flow::Continue,
        }
    }

    /// The peer stayed silent for the bound. Drop point: what this side still held for it
    /// (publishes queued, or sent and not acknowledged) goes with the session; REPORTED to the
    /// reader, after every message that arrived before (and the holes, as in
    /// [`Self::release_everything_held`]), as `PeerLost` with their count (publishes still in the
    /// command channel included: `TaskCore::count_unserved`). The task stops; the layer closes the session
    /// on this side, and it leaves the app once drained.
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
        // Queued for the reader when the task stops (`task::run`).
        self.io.ending = Some(SlimError::PeerLost {
            session_id: self.io.id,
            peer,
            silent_ms: u64::try_from(silent.as_millis()).unwrap_or(u64::MAX),
            undelivered,
        });
    }
}

/// What a heartbeat task watches.
struct Beat {
    bound: Duration,
    /// Added to the first look only (see [`P2pTask::accept_heartbeats`]).
    grace: Duration,
    /// Where the pings go.
    peer: Peer,
}

/// The heartbeat task of a watched peer: every quarter of the bound, it looks whether the peer
/// was heard (`PeerSignals`, noted by the dispatcher) or the dispatcher was held meanwhile (then
/// the silence is this app's, not the peer's), raises the alarm once the peer was silent for the
/// bound, and else pings it. Runs apart from the session task, whose backlog (a slow reader, a
/// long inbound stream) must not delay a ping or make a live peer look gone.
async fn beat(app: Arc<AppCore>, entry: Arc<SessionEntry>, plan: Beat, stop: CancellationToken) {
    let interval = liveness::ping_interval(plan.bound);
    let start = Instant::now();
    let mut watch = PeerWatch::new(plan.bound, start + plan.grace);
    let mut seen = u64::MAX;
    let mut ticks = tokio::time::interval_at(start + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = Instant::now();
        // Both looked at, every time (`|`, not `||`): `held_since` remembers this look.
        if entry.signals.take_heard() | app.dispatch.held_since(&mut seen) {
            watch.heard(now);
        }
        if let Some(silent) = watch.lost(now) {
            // Not for a watch that ended meanwhile (a handshake started over: a new watch runs).
            if !stop.is_cancelled() {
                entry.signals.raise(silent);
            }
            return;
        }
        let ping = app.control(
            &plan.peer.name,
            Flags::one().forward_to(plan.peer.conn),
            SessionType::SessionPointToPoint,
            SessionMessageType::GroupPing,
            entry.id,
            channel::nonce(),
            Vec::new(),
        );
        // Not sent (the app is closing): the next look, or the session's end, settles it.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = app.send(ping) => {}
        }
    }
}
