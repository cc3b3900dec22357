//! A reliable point-to-point stream received in order, delivered by the app's dispatcher itself.
//!
//! A reliable message normally goes from the dispatcher to its session task, which orders it in
//! its reorder window, waits for room in the application's queue, delivers it and acknowledges
//! it. In a stream that arrives in order nothing of that needs the task: the message is the next
//! id, the window holds nothing, the queue has room. So while its window is idle the task *lends*
//! the stream to the dispatcher ([`ReliableInbound::lend`]): the next id it expects and the peer
//! it is pinned to. The dispatcher then delivers each message that is exactly that id, from that
//! peer, into a queue with room, and adds it to the run of acknowledgements, under one lock; it
//! hands everything else to the task as before (an id out of order, a duplicate, a full queue, an
//! MLS payload, another source). The task takes the stream back ([`ReliableInbound::take_back`])
//! before it touches its window, moves the window on to the id the dispatcher reached, and lends
//! it again once the window is idle. The task's hop (a channel, a wake-up, and data gone cold by
//! the time the task reads it) was most of what a reliable message cost a receiving app beyond
//! an unreliable one (benches/README.md).
//!
//! Ordering: the dispatcher delivers only the exact next id, under the lock, so whatever the task
//! delivers after taking the stream back comes after it; and the task lends only after it
//! delivered what its window released. Exactly once: an id below the next is a duplicate for the
//! task (acknowledged again, not delivered). Acknowledged only once admitted, as before: the
//! dispatcher delivers only into a queue with room, and acknowledges after delivering.
//!
//! The run of acknowledgements (consecutive ids, one P_2_P_ACK for all, docs/reliability.md) is
//! shared by the dispatcher and the task: either extends it, either sends it (when it reaches
//! [`ACK_RUN_MAX`], when an id does not extend it, when the dispatcher's batch or the task's
//! channel runs dry).

use parking_lot::{Mutex, MutexGuard};

use super::context::AppCore;
use crate::wire::builders::Flags;
use crate::wire::{META_ACK_FROM, Message, Name, SessionMessageType, SessionType};

/// Most ids one range acknowledgement covers: a run this long goes out at once (well under the
/// sender's smallest window, `point_to_point::MIN_IN_FLIGHT`, so its window keeps moving).
pub const ACK_RUN_MAX: u32 = 64;

/// Consecutive admitted ids from one sender, acknowledged together by one P_2_P_ACK (message id
/// `to`, [`META_ACK_FROM`] `from`) when the peer takes range acknowledgements.
#[derive(Debug)]
pub struct AckRun {
    /// First id of the run.
    pub from: u32,
    /// Last id of the run.
    pub to: u32,
    /// Whom the acknowledgement goes to.
    pub dst: Name,
    /// The connection the data came in on (the acknowledgement goes back through it).
    pub conn: Option<u64>,
}

impl AckRun {
    /// Adds `mid` from `dst` through `conn` when it extends the run; false when it does not.
    pub fn extend(&mut self, dst: &Name, conn: Option<u64>, mid: u32) -> bool {
        if self.dst == *dst && self.conn == conn && self.to.checked_add(1) == Some(mid) {
            self.to = mid;
            return true;
        }
        false
    }

    /// True when the run is as long as a run gets.
    pub fn is_full(&self) -> bool {
        self.to - self.from + 1 >= ACK_RUN_MAX
    }

    /// The P_2_P_ACK of the run on session `session_id` (a run of one id is a plain one).
    pub fn message(&self, core: &AppCore, session_id: u32) -> Message {
        let mut ack = ack_message(core, session_id, &self.dst, self.conn, self.to);
        if self.from != self.to {
            ack.metadata.insert(META_ACK_FROM.to_string(), self.from.to_string());
        }
        ack
    }
}

/// A P_2_P_ACK for id `mid` of session `session_id` to `dst`, back through `conn`.
pub fn ack_message(core: &AppCore, session_id: u32, dst: &Name, conn: Option<u64>, mid: u32) -> Message {
    core.control(
        dst,
        Flags::one().forward_to(conn),
        SessionType::SessionPointToPoint,
        SessionMessageType::P2PAck,
        session_id,
        mid,
        Vec::new(),
    )
}

/// The stream as lent to the dispatcher.
#[derive(Debug)]
pub struct Lent {
    /// The next id to deliver.
    pub next: u32,
    /// The pinned peer: only its messages are delivered here.
    pub peer: Name,
}

/// What the dispatcher and the session task share of a reliable point-to-point stream.
#[derive(Debug, Default)]
pub struct State {
    /// Set while the task's window is idle and lent (see the module).
    pub lent: Option<Lent>,
    /// Admitted ids not acknowledged yet (peers that take range acknowledgements).
    pub run: Option<AckRun>,
}

impl State {
    /// Adds admitted id `mid` from `dst` (through `conn`) to the run of acknowledgements; the run
    /// to send now, if any: the run itself once full, or the one `mid` does not extend.
    pub fn add_to_run(&mut self, dst: Name, conn: Option<u64>, mid: u32) -> Option<AckRun> {
        if let Some(run) = self.run.as_mut()
            && run.extend(&dst, conn, mid)
        {
            return if run.is_full() { self.run.take() } else { None };
        }
        self.run.replace(AckRun { from: mid, to: mid, dst, conn })
    }
}

/// The shared state behind its lock.
#[derive(Debug, Default)]
pub struct ReliableInbound {
    state: Mutex<State>,
}

impl ReliableInbound {
    /// The state, locked.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// The task's window is idle at `next`: the dispatcher may deliver from there, from `peer`.
    pub fn lend(&self, next: u32, peer: &Name) {
        self.state.lock().lent = Some(Lent { next, peer: peer.clone() });
    }

    /// The task takes the stream back; the next id the dispatcher reached, if it was lent.
    pub fn take_back(&self) -> Option<u32> {
        self.state.lock().lent.take().map(|l| l.next)
    }

    /// Takes the pending run of acknowledgements, if any (the caller sends it).
    pub fn take_run(&self) -> Option<AckRun> {
        self.state.lock().run.take()
    }
}
