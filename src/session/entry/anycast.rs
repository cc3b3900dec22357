//! Liveness of an anycast session (docs/liveness.md, "Anycast sessions"): the initiator offers
//! its bound on every data message and answers the instances that watch it, on its own too; the
//! responder's dispatcher hands the offer to the session task.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::{Command, SessionEntry};
use crate::session::context::{AppCore, source_with_strings};
use crate::session::liveness::ping_interval;
use crate::session::{DEFAULT_LIVENESS, SessionConfig};
use crate::wire::builders::Flags;
use crate::wire::{Message, Name, SessionMessageType, SessionType};

/// Most instances of a name an anycast initiator answers on its own (beyond: only their pings).
const MAX_ANSWERED: usize = 64;

/// Liveness of an anycast session: what its initiator offers on each data message, whom it
/// answers on its own, and whether the responder took an offer.
#[derive(Debug, Default)]
pub struct AnycastLiveness {
    /// This side is an anycast initiator (it offers, and answers pings).
    initiator: bool,
    /// Initiator: the bound in milliseconds its data messages carry.
    offer: AtomicU32,
    /// Responder: an offer was handed to the task.
    seen: AtomicBool,
    /// Initiator: the instances it answers on its own ([`answer_beat`]), each with "pinged since
    /// the beat last looked".
    answering: Mutex<HashMap<Name, Arc<AtomicBool>>>,
}

impl AnycastLiveness {
    /// What a session with `cfg` offers: an anycast initiator its bound, anything else nothing.
    pub(in crate::session) fn of(cfg: &SessionConfig, initiator: bool) -> Self {
        let initiator = initiator && matches!(cfg, SessionConfig::Anycast { .. });
        let this = AnycastLiveness { initiator, ..Default::default() };
        this.update(cfg);
        this
    }

    /// The session's configuration changed (`set_session_config`): the offer follows its bound.
    pub(in crate::session) fn update(&self, cfg: &SessionConfig) {
        if let (true, SessionConfig::Anycast { liveness, .. }) = (self.initiator, cfg) {
            let ms = u32::try_from(liveness.unwrap_or(DEFAULT_LIVENESS).as_millis()).unwrap_or(u32::MAX);
            self.offer.store(ms, Ordering::Relaxed);
        }
    }

    /// Initiator: every data message carries the offer, so that whichever instance gets any of
    /// them watches this side (also one that opens a new session under the same id later).
    pub(in crate::session) fn mark(&self, msg: &mut Message) {
        if self.initiator
            && let Some(sh) = msg.session_header_mut()
        {
            sh.liveness_ms = Some(self.offer.load(Ordering::Relaxed));
        }
    }

    /// This side answers heartbeats (an anycast initiator).
    pub(super) fn answers(&self) -> bool {
        self.initiator
    }
}

impl SessionEntry {
    /// Anycast responder: the initiator's liveness offer goes to the task, once, which then
    /// watches it (the message itself may take the fast path, in order with the ones after it).
    pub(super) fn note_liveness_offer(&self, msg: &Message) {
        if self.liveness.seen.load(Ordering::Relaxed) {
            return;
        }
        let Some(bound_ms) = msg.session_header().and_then(|sh| sh.liveness_ms) else { return };
        let Some(initiator) = source_with_strings(msg) else { return };
        let conn = msg.incoming_conn();
        // A full command channel (publishes waiting): the next message's offer tries again.
        if self.outbound.try_send(Command::WatchInitiator { bound_ms, initiator, conn }).is_ok() {
            self.liveness.seen.store(true, Ordering::Relaxed);
        }
    }

    /// Anycast initiator, pinged by instance `ping`'s source: that instance also gets a GROUP_PONG
    /// every quarter of the bound from a task of its own ([`answer_beat`]), asked or not, so that
    /// it hears this side while this app's reader pauses and its pings wait behind the stream it
    /// sends here (docs/liveness.md, "What counts as a sign of life").
    pub(super) fn answer_on_its_own(self: &Arc<Self>, ping: &Message, core: &Arc<AppCore>) {
        let Some(pinger) = ping.source_name() else { return };
        let pinged = {
            let mut answering = self.liveness.answering.lock();
            if let Some(pinged) = answering.get(&pinger) {
                pinged.store(true, Ordering::Relaxed);
                return;
            }
            if answering.len() >= MAX_ANSWERED {
                return;
            }
            let pinged = Arc::new(AtomicBool::new(true));
            answering.insert(pinger.clone(), pinged.clone());
            pinged
        };
        let bound = Duration::from_millis(u64::from(self.liveness.offer.load(Ordering::Relaxed)));
        let beat = AnswerBeat { pinger, conn: ping.incoming_conn(), bound, pinged };
        tokio::spawn(answer_beat(core.clone(), self.clone(), beat));
    }
}

/// What an anycast initiator's answering task needs.
struct AnswerBeat {
    pinger: Name,
    /// The connection its pings came in on.
    conn: Option<u64>,
    bound: Duration,
    pinged: Arc<AtomicBool>,
}

/// An anycast initiator answers instance `beat.pinger` on its own, every quarter of the bound,
/// until the session ends or that instance stopped pinging for two bounds (it no longer watches
/// this side) while this app's dispatcher moved (a held dispatcher does not see the pings).
async fn answer_beat(core: Arc<AppCore>, entry: Arc<SessionEntry>, beat: AnswerBeat) {
    let interval = ping_interval(beat.bound);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut quiet, mut seen) = (Duration::ZERO, u64::MAX);
    loop {
        tokio::select! {
            _ = entry.cancel.cancelled() => break,
            _ = ticks.tick() => {}
        }
        // Both looked at, every time (`|`, not `||`): `held_since` remembers this look.
        if beat.pinged.swap(false, Ordering::Relaxed) | core.dispatch.held_since(&mut seen) {
            quiet = Duration::ZERO;
        } else {
            quiet += interval;
        }
        if quiet > beat.bound * 2 {
            break;
        }
        let pong = core.control(
            &beat.pinger,
            Flags::one().forward_to(beat.conn),
            SessionType::SessionPointToPoint,
            SessionMessageType::GroupPong,
            entry.id,
            rand::random::<u32>(),
            Vec::new(),
        );
        // Not sent (the app is closing): the session ends with it.
        tokio::select! {
            _ = entry.cancel.cancelled() => break,
            _ = core.send(pong) => {}
        }
    }
    entry.liveness.answering.lock().remove(&beat.pinger);
}
