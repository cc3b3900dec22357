//! The core every session task shares, whatever its kind: the I/O toward the node, the timer
//! set, control messages re-sent until answered, the reorder scratch vectors, and the one select
//! loop that drives a task ([`run`]). What differs between point-to-point and multicast sessions
//! sits behind [`SessionKind`].
//!
//! A task never calls back into the layer that spawned it: [`run`] returns how the session
//! [`Ended`], and the layer acts on it.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::buffers::Released;
use super::context::{AppCore, Stats};
use super::entry::{Command, SessionEntry};
use super::timer::{Fired, TimerPolicy, TimerSet};
use super::{CONTROL_MAX_RETRIES, CONTROL_RETRY_INTERVAL};
use crate::error::SlimError;
use crate::wire::Message;

/// Inbound messages a task takes from its channel at once (handled one by one; a command of the
/// app is taken between batches, timers fire once the backlog is empty).
const INBOUND_BATCH: usize = 32;

/// How a session task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The session was deleted, the app shut down or the app side of a channel went away.
    Stopped,
    /// The peer (point to point) or the moderator (multicast) asked this session to leave:
    /// the layer deletes it.
    Left,
}

/// What handling one inbound message leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep running.
    Continue,
    /// Stop the task: the session was asked to leave.
    Leave,
}

/// A timer of a session task: one of the core's control re-sends, or one of the kind's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key<K> {
    /// Re-sending the control message with this id until it is answered.
    Control(u32),
    /// A timer of the session kind (acks, RTX, beacons, ...).
    Own(K),
}

/// The state every session task has, and the I/O it does.
pub struct TaskCore<K: Clone + Eq + Hash> {
    /// App-wide state: own name, identity, the node sender, counters.
    pub app: Arc<AppCore>,
    /// The session as the app sees it (queue, budget, message ids).
    pub entry: Arc<SessionEntry>,
    /// Session id.
    pub id: u32,
    /// Every timer of the task: control re-sends and the kind's own.
    timers: TimerSet<Key<K>>,
    /// Control messages waiting for their answer, by message id (re-sent on each timer fire).
    control: HashMap<u32, Message>,
    /// Scratch: timers expired by the last wake-up.
    fired: Vec<Fired<Key<K>>>,
    /// Scratch: what a reorder buffer released, waiting to be delivered.
    pub released: Vec<Released<Message>>,
    /// Scratch: ids a reorder buffer found missing, waiting for an RTX timer.
    pub holes: Vec<u32>,
    /// This app's identity token failed on the last send: the AuthenticationError of this
    /// outage is already on the session's queue.
    identity_failing: AtomicBool,
    /// Why the other side ended the session (`PeerClosed`, `PeerLost`, `ModeratorLost`), once a
    /// kind found it: the task stops at the end of that event, counts the publishes it never got
    /// to into it ([`Self::count_unserved`]), and [`run`] queues it for the reader last.
    pub ending: Option<SlimError>,
}

impl<K: Clone + Eq + Hash> TaskCore<K> {
    /// The core of the task of `entry`.
    pub fn new(app: Arc<AppCore>, entry: Arc<SessionEntry>) -> Self {
        TaskCore {
            id: entry.id,
            app,
            entry,
            timers: TimerSet::new(),
            control: HashMap::new(),
            fired: Vec::new(),
            released: Vec::new(),
            holes: Vec::new(),
            identity_failing: AtomicBool::new(false),
            ending: None,
        }
    }

    /// Hands `msg` to the node; a failure (app shutting down) is logged: the caller's own timers
    /// recover or report what it cost.
    pub async fn send(&self, msg: Message) {
        let sent = self.app.send(msg).await;
        self.sent(sent);
    }

    /// Hands every message of `msgs` to the node, in order, leaving `msgs` empty: each is stamped
    /// with the identity token, then the batch waits once for room in the node's channel for all
    /// of it (not once per message). A message whose token cannot be produced is not sent, as in
    /// [`Self::send`]; the node gone (app closing) costs the rest, as it would one by one.
    pub async fn send_many(&self, msgs: &mut Vec<Message>) {
        let mut refused = false;
        msgs.retain_mut(|m| match self.app.stamp_identity(m) {
            Ok(()) => true,
            Err(e) => {
                // Drop point: see `sent` (REPORTED once per outage, counted each time).
                self.sent(Err(e));
                refused = true;
                false
            }
        });
        let mut rest = msgs.drain(..);
        while rest.len() > 0 {
            let n = rest.len().min(self.app.node_tx.max_capacity());
            match self.app.node_tx.reserve_many(n).await {
                Ok(permits) => {
                    for (permit, msg) in permits.zip(rest.by_ref()) {
                        permit.send(msg);
                    }
                }
                Err(_) => {
                    self.sent(Err(SlimError::Closed));
                    return;
                }
            }
        }
        if !refused {
            self.sent(Ok(()));
        }
    }

    /// What a hand-over to the node came to (see the drop points below).
    fn sent(&self, result: Result<(), SlimError>) {
        match result {
            Ok(()) => {
                if self.identity_failing.load(Ordering::Relaxed) {
                    self.identity_failing.store(false, Ordering::Relaxed);
                }
            }
            // Drop point: this app's own identity token could not be produced (an expired or
            // unreadable token file): nothing was sent; counted (`identity_send_refused`) and
            // REPORTED on the session's queue (an AuthenticationError from `receive`) once per
            // outage: the first refused message raises it, the next ones until a send works
            // again are only counted (retransmissions, heartbeats and control retries would
            // otherwise fill an unread queue without bound). Reliable messages stopped this way
            // are also reported by their own retry timers (SLIMTimeoutError / MessageLost).
            Err(e @ SlimError::Auth(_)) => {
                Stats::bump(&self.app.stats.identity_send_refused);
                tracing::debug!(session = self.id, error = %e, "message not sent: no identity token");
                if !self.identity_failing.swap(true, Ordering::Relaxed) {
                    self.entry.deliver_error(e);
                }
            }
            // The app's node is gone (the app is closing, so is every session): nothing to report to.
            Err(e) => tracing::debug!(session = self.id, error = %e, "could not hand a message to the node"),
        }
    }

    /// Sends control message `mid` and re-sends it every [`CONTROL_RETRY_INTERVAL`] until
    /// [`Self::stop_control`] (its answer came); after [`CONTROL_MAX_RETRIES`] the kind's
    /// [`SessionKind::on_control_failed`] runs.
    pub async fn send_control(&mut self, mid: u32, msg: Message) {
        self.control.insert(mid, msg.clone());
        self.timers.start(
            Key::Control(mid),
            TimerPolicy::constant(CONTROL_RETRY_INTERVAL, CONTROL_MAX_RETRIES),
            Instant::now(),
        );
        self.send(msg).await;
    }

    /// Control message `mid` was answered: no more re-sends.
    pub fn stop_control(&mut self, mid: u32) {
        self.timers.stop(&Key::Control(mid));
        self.control.remove(&mid);
    }

    /// Stops re-sending every control message (a handshake given up as a whole).
    pub fn stop_all_control(&mut self) {
        for mid in std::mem::take(&mut self.control).into_keys() {
            self.timers.stop(&Key::Control(mid));
        }
    }

    /// Starts (or restarts) one of the kind's timers.
    pub fn start_timer(&mut self, key: K, policy: TimerPolicy, now: Instant) {
        self.timers.start(Key::Own(key), policy, now);
    }

    /// Stops one of the kind's timers; true when it was running.
    pub fn stop_timer(&mut self, key: K) -> bool {
        self.timers.stop(&Key::Own(key))
    }

    /// True when one of the kind's timers is running.
    pub fn timer_running(&self, key: K) -> bool {
        self.timers.is_running(&Key::Own(key))
    }

    /// A command the task never got to, the other side having ended the session: a publish in
    /// it is counted in the `undelivered` of [`Self::ending`] (REPORTED, with what the kind
    /// held). Anything else is dropped: a caller waiting on an answer gets `SessionClosed`.
    /// With no ending (the app deleted the session or closes) nobody reads the session any more:
    /// `SessionTable`'s delete and the app's close account for what was still held.
    pub fn count_unserved(&mut self, command: Command) {
        let n = match &command {
            Command::Publish(_) => 1,
            Command::PublishBatch(batch) => batch.len(),
            _ => 0,
        };
        if let Some(
            SlimError::PeerClosed { undelivered, .. }
            | SlimError::PeerLost { undelivered, .. }
            | SlimError::ModeratorLost { undelivered, .. },
        ) = self.ending.as_mut()
        {
            *undelivered += n;
        }
    }
}

/// The behaviour of one session kind (point to point, multicast) on top of [`TaskCore`].
pub trait SessionKind: Send + Sized {
    /// The kind's own timers.
    type Timer: Clone + Eq + Hash + Send + Sync;

    /// The shared core.
    fn io(&mut self) -> &mut TaskCore<Self::Timer>;

    /// False while the task holds as many publishes (or membership changes) as it may: the app's
    /// commands wait in their channel, which makes publishers wait.
    fn accepts_commands(&self) -> bool;

    /// Handles one inbound message.
    fn on_message(&mut self, msg: Message) -> impl Future<Output = Flow> + Send;

    /// Handles one command; `more` lets a kind take the commands already queued behind it.
    fn on_command(&mut self, cmd: Command, more: &mut mpsc::Receiver<Command>) -> impl Future<Output = ()> + Send;

    /// One of the kind's timers fired (a retry) or gave up.
    fn on_timer(&mut self, fired: Fired<Self::Timer>) -> impl Future<Output = ()> + Send;

    /// Control message `mid` got no answer after every retry.
    fn on_control_failed(&mut self, mid: u32) -> impl Future<Output = ()> + Send;

    /// Runs once after the loop, whatever ended it.
    fn on_stop(&mut self) -> impl Future<Output = ()> + Send;

    /// Publishes the task holds that have not left for good: queued (discovery, a full window,
    /// a group not ready) or sent and not yet acknowledged. Published after every event for an
    /// app that is closing (`App`'s close waits, bounded, until every session has none).
    fn outstanding(&self) -> usize {
        0
    }

    /// The session's heartbeat task raised its alarm (`PeerSignals`): the peer was silent for
    /// the bound.
    fn on_alarm(&mut self) -> impl Future<Output = Flow> + Send {
        async { Flow::Continue }
    }

    /// A command still in the channel when the task stopped (the channel is closed by then: no
    /// more come). Drop point: when the other side ended the session, a publish among them is
    /// counted in the end the reader gets (REPORTED: [`TaskCore::count_unserved`]).
    fn on_unserved(&mut self, command: Command) {
        self.io().count_unserved(command);
    }

    /// The inbound channel is empty after a message was handled: what was held back to cover
    /// several messages at once (acknowledgements) goes out now, so a lone message never waits.
    fn on_idle(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Runs a session task until the session is deleted, the app shuts down or the session is asked
/// to leave; reports which.
pub async fn run<S: SessionKind>(
    mut task: S,
    mut inbound: mpsc::Receiver<Message>,
    mut commands: mpsc::Receiver<Command>,
) -> Ended {
    let cancel = task.io().entry.cancel.clone();
    // Made once: a cancellation future made anew in every turn of the loop registers with (and
    // leaves) the token's waiter list, under its lock, once per message.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let entry = task.io().entry.clone();
    let alarm = entry.signals.alarmed();
    tokio::pin!(alarm);
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    let mut batch = Vec::with_capacity(INBOUND_BATCH);
    let mut armed: Option<Instant> = None;
    let mut ended = Ended::Stopped;
    loop {
        let next = task.io().timers.next_deadline();
        if next != armed {
            if let Some(at) = next {
                sleep.as_mut().reset(at);
            }
            armed = next;
        }
        let accept = task.accepts_commands();
        let outstanding = task.outstanding();
        task.io().entry.outstanding.store(outstanding, Ordering::Relaxed);
        tokio::select! {
            biased;
            _ = &mut cancelled => break,
            // Only once the inbound backlog is empty: what the peer sent before it went silent is
            // handled first (delivered, or its loss reported), never dropped with the session. A
            // peer that is gone cannot keep the backlog full.
            _ = &mut alarm, if inbound.is_empty() => {
                alarm.set(entry.signals.alarmed());
                if task.on_alarm().await == Flow::Leave {
                    ended = Ended::Left;
                    break;
                }
            }
            n = inbound.recv_many(&mut batch, INBOUND_BATCH) => {
                if n == 0 {
                    break;
                }
                for m in batch.drain(..) {
                    if task.on_message(m).await == Flow::Leave {
                        ended = Ended::Left;
                        break;
                    }
                }
                if ended == Ended::Left {
                    // What followed the leave in this batch goes with the session, as what
                    // followed it in the channel always did: the peer closed it.
                    break;
                }
                if inbound.is_empty() {
                    task.on_idle().await;
                } else if task.accepts_commands() {
                    // Inbound comes first, but a backlog that never empties (peers sending faster
                    // than this task gets through, say into a full session queue its reader
                    // drains slowly) must not starve the app: between two batches one command is
                    // taken, so a flooded moderator still publishes and invites. Timers keep
                    // waiting for an empty backlog: their liveness checks must not count as
                    // silence what still waits in it.
                    // (A closed channel is the select's business, as before.)
                    if let Ok(c) = commands.try_recv() {
                        task.on_command(c, &mut commands).await;
                    }
                }
            }
            _ = &mut sleep, if armed.is_some() => {
                armed = None;
                fire_timers(&mut task).await;
                if task.io().ending.is_some() {
                    // A timer found the other side gone (a group member's moderator went silent).
                    // The inbound channel was empty when the timer was taken (inbound comes
                    // first); what arrives later comes after the end the reader gets, and goes
                    // with the session, as what follows a peer's close does.
                    ended = Ended::Left;
                    break;
                }
            }
            c = commands.recv(), if accept => match c {
                Some(c) => task.on_command(c, &mut commands).await,
                None => break,
            },
        }
    }
    // What the app asked and the task never got to: the kind accounts for it (a session the
    // other side ended counts the publishes in the end it reports) before it stops.
    // `recv` (not `try_recv`): a publish that reserved its room before the close still sends into
    // it, and `recv` ends only once every such reservation is used or gone.
    commands.close();
    while let Some(c) = commands.recv().await {
        task.on_unserved(c);
    }
    task.on_stop().await;
    if let Some(end) = task.io().ending.take() {
        // Last on the queue: after every message that arrived, and every loss the kind reported.
        entry.deliver_end(end);
    }
    ended
}

/// Handles every timer that expired: control re-sends here, the kind's own timers in the kind.
async fn fire_timers<S: SessionKind>(task: &mut S) {
    let io = task.io();
    let mut fired = std::mem::take(&mut io.fired);
    io.timers.expire(Instant::now(), &mut fired);
    for f in fired.drain(..) {
        match f {
            Fired::Retry { key: Key::Control(mid), .. } => {
                let io = task.io();
                if let Some(m) = io.control.get(&mid) {
                    let m = m.clone();
                    io.send(m).await;
                }
            }
            Fired::Failed { key: Key::Control(mid) } => {
                task.io().control.remove(&mid);
                task.on_control_failed(mid).await;
            }
            Fired::Retry { key: Key::Own(key), attempt } => task.on_timer(Fired::Retry { key, attempt }).await,
            Fired::Failed { key: Key::Own(key) } => task.on_timer(Fired::Failed { key }).await,
        }
    }
    task.io().fired = fired;
}
