//! What the session layer and its tasks share, below both: the [`Command`]s the app sends a
//! session task, the [`SessionEntry`] through which the dispatcher and the app reach a session
//! (its queue, budget and channels into the task), and the [`SessionTable`] of an app's live
//! sessions. Tasks never call back into [`super::layer`]: they report how they ended
//! ([`super::task::Ended`]) and the layer acts on it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::budget::{BudgetError, SendBudget};
use super::context::{AppCore, Stats, Target, into_delivery};
use super::inbound::{AckRun, ReliableInbound};
use super::liveness::PeerSignals;
use super::queue::{DELIVERY_WAIT_BOUND, SessionQueue};
use super::{DEFAULT_P2P_RETRIES, PublishRequest, RawDelivery, SessionConfig};
use crate::error::SlimError;
use crate::wire::{Message, Name, SessionMessageType, SessionType};

mod anycast;
pub use anycast::AnycastLiveness;

/// Completion of an invite or removal.
pub type Done = oneshot::Sender<Result<(), SlimError>>;

/// What the app asks of a session task.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Publish, the hot variant, is the large one: boxing it would add an allocation.
pub enum Command {
    /// Send this.
    Publish(PublishRequest),
    /// Send these, in order (`publish_many` on a point-to-point session: up to
    /// [`super::layer::PUBLISH_BATCH_MAX`], each already charged against the send budget).
    PublishBatch(Vec<PublishRequest>),
    /// Use new timeout / retry values from now on.
    SetConfig(SessionConfig),
    /// Invite this name into the group (moderator only); the sender learns when it joined. With
    /// a deadline, an invite still unanswered then is abandoned (`Invite` error).
    Invite(Name, Done, Option<tokio::time::Instant>),
    /// Remove this participant from the group (moderator only).
    Remove(Name, Done),
    /// The group's members, as this session knows them (multicast only).
    Participants(oneshot::Sender<Result<Vec<Name>, SlimError>>),
    /// The initiator of this anycast session answers heartbeats (docs/liveness.md, "Anycast
    /// sessions"); from the dispatcher, once.
    WatchInitiator {
        /// The liveness bound its messages offer, in milliseconds.
        bound_ms: u32,
        /// The initiator (with its instance id).
        initiator: Name,
        /// The connection of this app's node it came in on.
        conn: Option<u64>,
    },
}

/// One session as the app and the dispatcher see it; its state machine lives in its task.
#[derive(Debug)]
pub struct SessionEntry {
    /// Session id.
    pub id: u32,
    pub(super) config: Mutex<SessionConfig>,
    /// What the application reads.
    pub queue: Arc<SessionQueue>,
    /// Next data message id (shared by the task and the unreliable fast path).
    pub next_id: AtomicU32,
    /// Point to point: the byte bound on what the task holds for sending (see [`super::budget`]).
    pub budget: Option<SendBudget>,
    /// Unreliable, non-sticky: publishes skip the task.
    pub(super) fast_publish: AtomicBool,
    /// Non-sticky point to point: inbound P2P_MSG skips the task.
    pub(super) fast_inbound: bool,
    /// Created by a peer and not yet shown on the new-session queue.
    pub(super) announce_pending: AtomicBool,
    /// The task's inbound backlog stayed full for a whole bound (cleared once it has room).
    pub(super) inbound_stalled: AtomicBool,
    /// Into the session task: inbound messages (filled by the dispatcher).
    pub(super) inbound: mpsc::Sender<Message>,
    /// Into the session task: what the app asks of it.
    pub(super) outbound: mpsc::Sender<Command>,
    /// Cancelled when the session is deleted.
    pub cancel: CancellationToken,
    /// What the session's task holds of this app's publishes, not yet gone for good (see
    /// `SessionKind::outstanding`); read by the app's close.
    pub(super) outstanding: std::sync::atomic::AtomicUsize,
    /// Source and destination of the last message delivered (shared by the next one between the
    /// same names: see `context::into_delivery`).
    pub(super) last_names: Mutex<Option<(Name, Name)>>,
    /// The newest reliable message id a `NoRoute` was reported for (see [`Self::report_no_route`]).
    pub(super) no_route_reported: Mutex<Option<u32>>,
    /// Anycast: the initiator's liveness offer (docs/liveness.md, "Anycast sessions").
    pub(super) liveness: AnycastLiveness,
    /// Point to point: the peer's signs of life, as the dispatcher sees them.
    pub(super) signals: PeerSignals,
    /// A reliable point-to-point stream in order, lent by the task to the dispatcher (see
    /// [`super::inbound`]), and the acknowledgements both owe.
    pub reliable_in: ReliableInbound,
    /// Where the session's first publish went: whom an initiator's delete tells (SESSION_CLOSE)
    /// when no peer is pinned.
    pub(super) addressed: std::sync::OnceLock<Target>,
}

impl SessionEntry {
    /// Hands a received data message to the application (and announces a peer-created session
    /// with its first message), waiting up to [`DELIVERY_WAIT_BOUND`] for room in the session
    /// queue (back-pressure: the caller stops reading, which slows the sender through the node).
    /// Past the bound the message is dropped and REPORTED: the reader gets a `MessageLost` with
    /// its id in its place, and it is counted (see [`SessionQueue::push_wait`]).
    pub async fn deliver_waiting(&self, msg: Message) {
        let item = self.prepare(msg);
        self.queue.push_wait(item, DELIVERY_WAIT_BOUND).await;
    }

    /// Tells the reader that message `message_id` of `source` is gone (a `MessageLost` in its
    /// place in the stream; never refused for lack of room).
    pub fn report_lost(&self, source: Option<&Name>, message_id: u32) {
        self.queue.report_lost(source, message_id);
    }

    /// Hands an already admitted reliable message to the application, even into a full queue
    /// (the receiver waited for room before accepting and acknowledging it).
    pub fn deliver_admitted(&self, msg: Message) {
        let item = self.prepare(msg);
        self.queue.push_force(item);
    }

    /// The delivery of `msg`; announces a peer-created session with its first message.
    fn prepare(&self, msg: Message) -> RawDelivery {
        let (info, blob) = into_delivery(self.id, msg, &mut self.last_names.lock());
        let info = Arc::new(info);
        if self.announce_pending.swap(false, Ordering::AcqRel) {
            self.queue.inbox_announce(info.clone(), blob.clone());
        }
        Ok((info, blob))
    }

    /// What the app asked of this session and it has not done for good: commands waiting for its
    /// task (a publish, an invite, a `publish_many` batch counts once) and publishes the task holds
    /// (queued, or sent and not acknowledged; see `SessionKind::outstanding`). A command between
    /// the channel and the task's buffers is in neither for a moment: callers look twice, apart
    /// (`timer::until_settled`).
    pub(super) fn held(&self) -> usize {
        (self.outbound.max_capacity() - self.outbound.capacity()) + self.outstanding.load(Ordering::Relaxed)
    }

    /// Records where a publish goes, the first time only (see `addressed`).
    pub(super) fn note_target(&self, target: &Target) {
        if self.addressed.get().is_none() {
            let _ = self.addressed.set(target.clone());
        }
    }

    /// [`Self::held`] is zero.
    pub(super) fn holds_nothing(&self) -> bool {
        self.held() == 0
    }

    /// A message of this session found no route (`text`: the node's error): `NoRoute` to the
    /// reader, once per reliable message. Its retransmissions find the same, and its fate is
    /// reported anyway (acknowledged, or `Timeout`, or counted in `PeerLost`/`PeerClosed`), so
    /// a reader does not get one error per retry; nothing is dropped here, only a repeat of an
    /// error already reported.
    pub(super) fn report_no_route(&self, msg: &Message, text: String) {
        if msg.session_message_type() == SessionMessageType::P2PReliable
            && let Some(id) = msg.session_header().map(|sh| sh.message_id)
        {
            let mut newest = self.no_route_reported.lock();
            // Ids grow by one per message: an id not ahead of the newest reported is a retry.
            if newest.is_some_and(|n| (id.wrapping_sub(n) as i32) <= 0) {
                return;
            }
            *newest = Some(id);
        }
        self.deliver_error(SlimError::NoRoute(text));
    }

    /// Puts a session error on the queue (never dropped for lack of room).
    pub fn deliver_error(&self, err: SlimError) {
        self.queue.push_force(Err(err));
    }

    /// Puts what ended the session last on its queue, for the session's readers only (see
    /// `SessionQueue::push_end`).
    pub fn deliver_end(&self, err: SlimError) {
        self.queue.push_end(err);
    }

    /// Stops the task and wakes every reader and every publisher waiting for room.
    pub(super) fn close(&self) {
        self.cancel.cancel();
        self.queue.close();
        if let Some(b) = &self.budget {
            b.close();
        }
    }

    /// How long a publish may wait for room in the send budget: the delivery bound, or, on a
    /// reliable session, the time its oldest unacknowledged message needs to be acknowledged or
    /// to time out (`timeout` × (retries + 1)), whichever is longer.
    pub(super) fn publish_wait_bound(&self) -> std::time::Duration {
        let retry_horizon = match &*self.config.lock() {
            SessionConfig::Anycast { timeout: Some(t), max_retries, .. }
            | SessionConfig::Unicast { timeout: Some(t), max_retries, .. } => {
                t.saturating_mul(max_retries.unwrap_or(DEFAULT_P2P_RETRIES).saturating_add(1))
            }
            _ => std::time::Duration::ZERO,
        };
        retry_horizon.max(DELIVERY_WAIT_BOUND)
    }

    /// Charges a publish of `len` payload bytes against the send budget (waiting, bounded); the
    /// session task gives the charge back once the message left its buffers.
    pub(super) async fn take_budget(&self, len: usize) -> Result<(), SlimError> {
        let Some(b) = &self.budget else { return Ok(()) };
        let charge = b.charge(len);
        if b.try_take(charge) {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.publish_wait_bound();
        b.take(charge, deadline).await.map_err(|e| match e {
            BudgetError::Closed => SlimError::SessionNotFound(self.id),
            BudgetError::TimedOut => {
                tracing::debug!(session = self.id, "send buffer stayed full: publish fails");
                SlimError::SendBufferFull { session_id: self.id, buffered: b.in_use() }
            }
        })
    }

    /// Returns the charge of a publish of `len` bytes that never reached the session task.
    pub(super) fn give_back_budget(&self, len: usize) {
        if let Some(b) = &self.budget {
            b.give_back(b.charge(len));
        }
    }

    /// The current configuration.
    pub fn config(&self) -> SessionConfig {
        self.config.lock().clone()
    }

    /// Routes an inbound message to the application (unreliable anycast data; reliable data in
    /// order while the task lends its stream, see [`super::inbound`]) or the session task. Both
    /// wait for room up to [`DELIVERY_WAIT_BOUND`] (back-pressure on the node); a task whose
    /// backlog stayed full is marked stalled and gets no further waits until it has room again,
    /// so one stuck session cannot hold up the dispatcher for more than one bound. A session
    /// left owing acknowledgements is added to `acks` (the dispatcher sends them once its batch
    /// is done: [`Self::flush_acks`]).
    pub(super) async fn on_inbound(self: &Arc<Self>, msg: Message, core: &Arc<AppCore>, acks: &mut Vec<Arc<Self>>) {
        let stats = &core.stats;
        let kind = msg.session_message_type();
        self.signals.note(&msg);
        if matches!(kind, SessionMessageType::GroupPing | SessionMessageType::GroupPong)
            && msg.session_header().is_some_and(|sh| sh.session_type == SessionType::SessionPointToPoint as i32)
        {
            // A point-to-point heartbeat, handled here rather than behind what waits for the task
            // (docs/liveness.md): its sign of life is noted above; an anycast initiator answers
            // a ping. The wait for room towards the node is bounded, as `send_ack`'s is (two apps
            // streaming at each other must not lock their dispatchers). Not sent -> nothing lost:
            // the next ping asks again, and the peer's bound has room for a few missed.
            if kind == SessionMessageType::GroupPing && self.liveness.answers() {
                if let Some(pong) = core.reply(&msg, SessionMessageType::GroupPong, Vec::new()) {
                    let _ = tokio::time::timeout(DELIVERY_WAIT_BOUND, core.send(pong)).await;
                }
                self.answer_on_its_own(&msg, core);
            }
            return;
        }
        if self.fast_inbound {
            self.note_liveness_offer(&msg);
        }
        if self.fast_inbound && kind == SessionMessageType::P2PMsg {
            // Drop point: session queue full past the bound -> REPORTED (MessageLost with the id).
            self.deliver_waiting(msg).await;
            return;
        }
        let msg = if kind == SessionMessageType::P2PReliable {
            match self.deliver_lent(msg, stats) {
                Ok((full, pending)) => {
                    if let Some(run) = full {
                        self.send_ack(core, run).await;
                    }
                    if pending && !acks.iter().any(|e| Arc::ptr_eq(e, self)) {
                        acks.push(self.clone());
                    }
                    return;
                }
                Err(msg) => msg,
            }
        } else {
            msg
        };
        let msg = match self.inbound.try_send(msg) {
            Ok(()) => {
                self.inbound_stalled.store(false, Ordering::Relaxed);
                return;
            }
            Err(TrySendError::Closed(_)) => {
                // Drop point: the session was deleted meanwhile; nobody to deliver or report to.
                Stats::bump(&stats.unknown_session);
                return;
            }
            Err(TrySendError::Full(msg)) => msg,
        };
        let msg = if self.inbound_stalled.load(Ordering::Relaxed) {
            msg
        } else {
            match self.inbound.send_timeout(msg, DELIVERY_WAIT_BOUND).await {
                Ok(()) => return,
                Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                    Stats::bump(&stats.unknown_session);
                    return;
                }
                Err(mpsc::error::SendTimeoutError::Timeout(msg)) => {
                    self.inbound_stalled.store(true, Ordering::Relaxed);
                    msg
                }
            }
        };
        // Drop point: the session task's backlog stayed full past the bound. Counted
        // (`session_backlog`), and:
        // - unreliable point-to-point data: REPORTED (MessageLost with the id);
        // - reliable point-to-point data: RECOVERED (not acknowledged: the sender retransmits,
        //   and reports SLIMTimeoutError itself once its retries are spent);
        // - multicast data: RECOVERED (the id becomes a hole: RTX, or MessageLost once the
        //   retries are spent or the producer no longer has it);
        // - control messages: RECOVERED (their senders retry them; RTX requests and beacons
        //   are repeated).
        Stats::bump(&stats.session_backlog);
        tracing::debug!(session = self.id, "session task backlog stayed full: inbound message dropped");
        if msg.session_message_type() == SessionMessageType::P2PMsg {
            let id = msg.session_header().map_or(0, |h| h.message_id);
            self.report_lost(msg.source_name().as_ref(), id);
        }
    }
}

impl SessionEntry {
    /// Delivers reliable data message `msg` when the task lent its stream and `msg` is the next
    /// id, from the pinned peer, not MLS, and the queue has room (see [`super::inbound`]):
    /// delivered and added to the run of acknowledgements, under the stream's lock. Gives `msg`
    /// back otherwise (the task handles it). `Ok`: a full run to send now, and whether a run is
    /// left pending.
    fn deliver_lent(&self, msg: Message, stats: &Stats) -> Result<(Option<AckRun>, bool), Message> {
        let Some(mid) = msg.session_header().map(|h| h.message_id) else { return Err(msg) };
        if self.cancel.is_cancelled() {
            // Deleted: the task's path counts it (nothing delivered, nothing acknowledged).
            return Err(msg);
        }
        let mut st = self.reliable_in.lock();
        let Some(lent) = st.lent.as_mut() else { return Err(msg) };
        let Some(source) = msg.source_name() else { return Err(msg) };
        if lent.next != mid
            || source != lent.peer
            || msg.metadata.contains_key(crate::wire::META_MLS_ENCRYPTED)
            || !self.queue.has_room()
        {
            return Err(msg);
        }
        lent.next = mid.wrapping_add(1);
        let conn = msg.incoming_conn();
        self.deliver_admitted(msg);
        Stats::bump(&stats.dispatcher_deliveries);
        let full = st.add_to_run(source, conn, mid);
        Ok((full, st.run.is_some()))
    }

    /// Sends the acknowledgements this session owes, if any (the dispatcher, after its batch).
    pub(super) async fn flush_acks(&self, core: &AppCore) {
        if let Some(run) = self.reliable_in.take_run() {
            self.send_ack(core, run).await;
        }
    }

    /// Sends the acknowledgement of `run` (the dispatcher). The wait for room towards the node is
    /// bounded by [`DELIVERY_WAIT_BOUND`], as the dispatcher's other waits are: two apps streaming
    /// reliably to each other could otherwise close a cycle of full queues (each dispatcher
    /// waiting on its way out, which waits on the other app's way in, which waits on the other
    /// dispatcher) that nothing would ever break.
    async fn send_ack(&self, core: &AppCore, run: AckRun) {
        let sent = tokio::time::timeout(DELIVERY_WAIT_BOUND, core.send(run.message(core, self.id))).await;
        // Drop point: the acknowledgement could not go (no identity token, the app is closing,
        // or no room towards the node within the bound): RECOVERED, the sender retransmits and
        // the task acknowledges the copy (its own send reports an identity outage on the
        // session's queue); counted when the token was refused.
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if matches!(e, SlimError::Auth(_)) {
                    Stats::bump(&core.stats.identity_send_refused);
                }
                tracing::debug!(session = self.id, error = %e, "acknowledgement not sent");
            }
            Err(_elapsed) => tracing::debug!(session = self.id, "acknowledgement not sent: no room towards the node"),
        }
    }
}

/// Unreliable anycast without MLS: publishes go straight to the node, skipping the task.
pub(super) fn fast_publish_for(cfg: &SessionConfig) -> bool {
    matches!(cfg, SessionConfig::Anycast { timeout: None, mls_enabled: false, .. })
}

/// A drained session its peer ended: its queue while what ended it waits there for a reader.
type ClosedQueue = Option<Arc<SessionQueue>>;

/// Ids of sessions closed by their peer kept (the newest) after their queue was drained, so that
/// a later receive or publish on one gets `SessionClosed`, not `SessionNotFound`.
const CLOSED_IDS_KEPT: usize = 4096;

/// The live sessions of one app, by id, and the sessions its peers closed that still hold
/// messages for the app's reader. Owned by the layer; multicast tasks read it (weakly) to learn
/// whether another session shares their channel.
#[derive(Debug, Default)]
pub struct SessionTable {
    sessions: RwLock<HashMap<u32, Arc<SessionEntry>>>,
    /// Sessions closed by their peer and drained, the newest [`CLOSED_IDS_KEPT`], each with its
    /// queue while what ended it waits there for a reader (see [`Self::reader`]); a new session
    /// with the same id takes its id out.
    closed_ids: Mutex<(VecDeque<u32>, HashMap<u32, ClosedQueue>)>,
    /// Session tasks running (see [`Running`]).
    running: Arc<std::sync::atomic::AtomicUsize>,
    /// Held by a multicast session across "does another session share my channel (or my
    /// moderator)?" and the SUBSCRIBE / UNSUBSCRIBE / route change it then sends: the node keeps
    /// one subscription and one route per (name, connection), so a leaving session's
    /// check-then-unsubscribe must not interleave with a joining session's subscribe (it would
    /// take the channel or the route from the newcomer).
    channel_ops: tokio::sync::Mutex<ChannelOps>,
}

/// What the app's multicast sessions share in the node, read and changed only under
/// [`SessionTable::channel_ops`].
#[derive(Debug, Default)]
pub struct ChannelOps {
    /// The sessions that set a route to a moderator through a connection: the route is removed
    /// only when the last live one of them leaves.
    moderator_routes: HashMap<(Name, u64), HashSet<u32>>,
}

impl ChannelOps {
    /// Records that session `id` routes to `moderator` through `conn`.
    pub fn hold_moderator_route(&mut self, id: u32, moderator: &Name, conn: u64) {
        self.moderator_routes.entry((moderator.clone(), conn)).or_default().insert(id);
    }

    /// Session `id` no longer needs its route to `moderator` through `conn`; true when no other
    /// live session of `table` holds it (the caller then removes the route, still under the lock).
    pub fn release_moderator_route(&mut self, table: &SessionTable, id: u32, moderator: &Name, conn: u64) -> bool {
        let key = (moderator.clone(), conn);
        let Some(holders) = self.moderator_routes.get_mut(&key) else { return true };
        holders.remove(&id);
        // A session that ended without leaving (deleted, its task gone) holds nothing any more.
        holders.retain(|h| table.get(*h).is_some_and(|e| !e.cancel.is_cancelled()));
        if holders.is_empty() {
            self.moderator_routes.remove(&key);
            true
        } else {
            false
        }
    }
}

/// Counts one session task as running until dropped, at the very end of the task (after what
/// it sends on stopping, such as a close notice).
pub(super) struct Running(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SessionTable {
    /// Marks a session task as running (until the returned guard is dropped).
    pub(super) fn running(&self) -> Running {
        self.running.fetch_add(1, Ordering::AcqRel);
        Running(self.running.clone())
    }

    /// True when no session task runs: each has stopped and handed the node what it sends on
    /// stopping (an app's close waits for it, `App::close`).
    pub fn tasks_stopped(&self) -> bool {
        self.running.load(Ordering::Acquire) == 0
    }

    /// The session with `id`.
    pub fn get(&self, id: u32) -> Option<Arc<SessionEntry>> {
        self.sessions.read().get(&id).cloned()
    }

    /// The session with `id`: open, or closed by its peer with messages still queued (`Ok`);
    /// closed by its peer and drained (`SessionClosed`); unknown or deleted by the app
    /// (`SessionNotFound`).
    pub fn lookup(&self, id: u32) -> Result<Arc<SessionEntry>, SlimError> {
        match self.get(id) {
            Some(entry) => Ok(entry),
            None if self.closed_ids.lock().1.contains_key(&id) => Err(SlimError::SessionClosed),
            None => Err(SlimError::SessionNotFound(id)),
        }
    }

    /// The queue a receive on session `id` reads: the session's, also once its peer ended it and
    /// it left the table while what ended it (`PeerClosed`) still waits there for a reader; else
    /// as [`Self::lookup`].
    pub fn reader(&self, id: u32) -> Result<Arc<SessionQueue>, SlimError> {
        if let Some(entry) = self.get(id) {
            return Ok(entry.queue.clone());
        }
        match self.closed_ids.lock().1.get_mut(&id) {
            Some(Some(queue)) if queue.holds_end() => Ok(queue.clone()),
            Some(slot) => {
                *slot = None; // its end was taken: nothing left to read
                Err(SlimError::SessionClosed)
            }
            None => Err(SlimError::SessionNotFound(id)),
        }
    }

    /// The session with `id` as a publisher finds it: [`Self::lookup`], and `SessionClosed` when
    /// its peer closed it (it may still hold messages to read).
    pub fn open(&self, id: u32) -> Result<Arc<SessionEntry>, SlimError> {
        let entry = self.lookup(id)?;
        if entry.cancel.is_cancelled() { Err(SlimError::SessionClosed) } else { Ok(entry) }
    }

    /// The session with `id` for `delete_session`: `None` when its peer closed it and its reader
    /// drained it (deleted already, nothing to do); `SessionNotFound` when unknown.
    pub fn to_delete(&self, id: u32) -> Result<Option<Arc<SessionEntry>>, SlimError> {
        match self.lookup(id) {
            Ok(entry) => Ok(Some(entry)),
            Err(SlimError::SessionClosed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds (or replaces) a session.
    pub(super) fn insert(&self, entry: Arc<SessionEntry>) {
        let id = entry.id;
        self.sessions.write().insert(id, entry);
        let mut closed = self.closed_ids.lock();
        if closed.1.remove(&id).is_some() {
            closed.0.retain(|c| *c != id);
        }
    }

    /// A session its peer ended (removed from a group, the group deleted, the point-to-point
    /// initiator done with it) or whose moderator went silent: closed for publishing at once,
    /// but kept for its reader, who gets every message queued before the end, then what ended it
    /// (`PeerClosed`, `ModeratorLost`), then `SessionClosed` (docs/reliability.md, "When the peer
    /// ends a session"). It leaves the table once the reader took the last item (or when the app
    /// deletes it first).
    pub(super) fn retire_when_drained(self: &Arc<Self>, entry: &Arc<SessionEntry>) {
        let (table, weak) = (Arc::downgrade(self), Arc::downgrade(entry));
        entry.queue.when_drained(Box::new(move || {
            let (Some(table), Some(entry)) = (table.upgrade(), weak.upgrade()) else { return };
            // Held across the removal: a reader that no longer finds the session in the table
            // then waits here and finds it remembered (never `SessionNotFound` in between).
            let mut closed = table.closed_ids.lock();
            if table.remove_entry(&entry) {
                let end = entry.queue.holds_end().then(|| entry.queue.clone());
                if closed.1.insert(entry.id, end).is_none() {
                    closed.0.push_back(entry.id);
                }
                if closed.0.len() > CLOSED_IDS_KEPT
                    && let Some(old) = closed.0.pop_front()
                {
                    closed.1.remove(&old);
                }
            }
        }));
        // After the hook is in place: closing an empty queue runs it at once.
        entry.close();
    }

    /// Takes `entry` out of the table if it is still there (not replaced by a later session
    /// with the same id); true when it was.
    pub(super) fn remove_entry(&self, entry: &Arc<SessionEntry>) -> bool {
        let mut sessions = self.sessions.write();
        if sessions.get(&entry.id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            sessions.remove(&entry.id);
            true
        } else {
            false
        }
    }

    /// Takes every session out of the table.
    pub(super) fn drain(&self) -> Vec<Arc<SessionEntry>> {
        self.sessions.write().drain().map(|(_, e)| e).collect()
    }

    /// True when a live multicast session other than `id` uses `channel` (its subscriptions
    /// and routes are shared with `id` in the node, so `id` must not remove them).
    pub fn channel_shared(&self, id: u32, channel: &Name) -> bool {
        self.sessions.read().values().any(|e| {
            e.id != id
                && !e.cancel.is_cancelled()
                && matches!(&*e.config.lock(), SessionConfig::Multicast { topic, .. } if topic == channel)
        })
    }

    /// Serialises channel subscribe/unsubscribe and moderator route decisions of this app's
    /// sessions (see `channel_ops`).
    pub async fn channel_ops(&self) -> tokio::sync::MutexGuard<'_, ChannelOps> {
        self.channel_ops.lock().await
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.read().len()
    }

    /// True when no session has a command (a publish, an invite) waiting for its task, nor a
    /// publish its task holds (queued, or sent and not acknowledged).
    pub fn commands_idle(&self) -> bool {
        self.sessions.read().values().all(|e| e.cancel.is_cancelled() || e.holds_nothing())
    }

    /// True when no session lives.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
