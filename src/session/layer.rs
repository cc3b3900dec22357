//! The app-wide session layer: session table, inbound dispatch (spec §3.2) and the publish path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use super::budget::{BudgetError, MAX_BUFFERED_BYTES, SendBudget};
use super::channel;
use super::context::{AppCore, Stats, Target, data_message, into_delivery};
use super::multicast::{Done, MulticastRole, MulticastTask};
use super::point_to_point::{P2pRole, P2pTask};
use super::queue::{DEFAULT_SESSION_QUEUE_CAPACITY, DELIVERY_WAIT_BOUND, SessionQueue};
use super::{
    Delivery, PublishRequest, REMOTE_RELIABLE_RETRIES, REMOTE_RELIABLE_TIMEOUT, RawDelivery, SESSION_ID_RANGE,
    SessionConfig,
};
use crate::error::SlimError;
use crate::node::local::{LocalDelivery, RouteError};
use crate::wire::{self, Message, Name, SessionMessageType, SessionType};

/// Inbound messages a session task buffers; when full the dispatcher waits (bounded by
/// [`DELIVERY_WAIT_BOUND`]), then drops: see [`SessionEntry::on_inbound`] for what that costs.
pub const SESSION_INBOUND_CAPACITY: usize = 4096;
/// Publish requests waiting for a session task (callers wait when it is full).
pub const SESSION_OUTBOUND_CAPACITY: usize = 1024;
/// Inbound deliveries the dispatcher takes from the node per wake-up.
const DISPATCH_BATCH: usize = 128;

/// What the app asks of a session task.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Publish, the hot variant, is the large one: boxing it would add an allocation.
pub enum Command {
    /// Send this.
    Publish(PublishRequest),
    /// Use new timeout / retry values from now on.
    SetConfig(SessionConfig),
    /// Invite this name into the group (moderator only); the sender learns when it joined.
    Invite(Name, Done),
    /// Remove this participant from the group (moderator only).
    Remove(Name, Done),
}

/// One session as the app and the dispatcher see it; its state machine lives in its task.
#[derive(Debug)]
pub struct SessionEntry {
    /// Session id.
    pub id: u32,
    config: Mutex<SessionConfig>,
    /// What the application reads.
    pub queue: Arc<SessionQueue>,
    /// Next data message id (shared by the task and the unreliable fast path).
    pub next_id: AtomicU32,
    /// Point to point: the byte bound on what the task holds for sending (see [`super::budget`]).
    pub budget: Option<SendBudget>,
    /// Unreliable, non-sticky: publishes skip the task.
    fast_publish: AtomicBool,
    /// Non-sticky point to point: inbound P2P_MSG skips the task.
    fast_inbound: bool,
    /// Created by a peer and not yet shown on the new-session queue.
    announce_pending: AtomicBool,
    /// The task's inbound backlog stayed full for a whole bound (cleared once it has room).
    inbound_stalled: AtomicBool,
    inbound: mpsc::Sender<Message>,
    outbound: mpsc::Sender<Command>,
    /// Cancelled when the session is deleted.
    pub cancel: CancellationToken,
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

    fn prepare(&self, msg: Message) -> RawDelivery {
        let (info, blob) = into_delivery(self.id, msg);
        if self.announce_pending.swap(false, Ordering::AcqRel) {
            self.queue.inbox_announce(info.clone(), blob.clone());
        }
        Ok((info, blob))
    }

    /// Puts a session error on the queue (never dropped for lack of room).
    pub fn deliver_error(&self, err: SlimError) {
        self.queue.push_force(Err(err));
    }

    /// Stops the task and wakes every reader and every publisher waiting for room.
    fn close(&self) {
        self.cancel.cancel();
        self.queue.close();
        if let Some(b) = &self.budget {
            b.close();
        }
    }

    /// How long a publish may wait for room in the send budget: the delivery bound, or, on a
    /// reliable session, the time its oldest unacknowledged message needs to be acknowledged or
    /// to time out (`timeout` × (retries + 1)), whichever is longer.
    fn publish_wait_bound(&self) -> std::time::Duration {
        let retry_horizon = match &*self.config.lock() {
            SessionConfig::Anycast { timeout: Some(t), max_retries, .. }
            | SessionConfig::Unicast { timeout: Some(t), max_retries, .. } => {
                t.saturating_mul(max_retries.unwrap_or(super::DEFAULT_P2P_RETRIES).saturating_add(1))
            }
            _ => std::time::Duration::ZERO,
        };
        retry_horizon.max(DELIVERY_WAIT_BOUND)
    }

    /// Charges a publish of `len` payload bytes against the send budget (waiting, bounded); the
    /// session task gives the charge back once the message left its buffers.
    async fn take_budget(&self, len: usize) -> Result<(), SlimError> {
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

    fn give_back_budget(&self, len: usize) {
        if let Some(b) = &self.budget {
            b.give_back(b.charge(len));
        }
    }

    /// The current configuration.
    pub fn config(&self) -> SessionConfig {
        self.config.lock().clone()
    }

    /// Routes an inbound message to the application (unreliable anycast data) or the session
    /// task. Both wait for room up to [`DELIVERY_WAIT_BOUND`] (back-pressure on the node); a
    /// task whose backlog stayed full is marked stalled and gets no further waits until it has
    /// room again, so one stuck session cannot hold up the dispatcher for more than one bound.
    async fn on_inbound(&self, msg: Message, stats: &Stats) {
        if self.fast_inbound && msg.session_message_type() == SessionMessageType::P2PMsg {
            // Drop point: session queue full past the bound -> REPORTED (MessageLost with the id).
            self.deliver_waiting(msg).await;
            return;
        }
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

fn fast_publish_for(cfg: &SessionConfig) -> bool {
    matches!(cfg, SessionConfig::Anycast { timeout: None, mls_enabled: false, .. })
}

/// Sessions of one app.
#[derive(Debug)]
pub struct SessionLayer {
    /// Shared app state.
    pub core: Arc<AppCore>,
    sessions: RwLock<HashMap<u32, Arc<SessionEntry>>>,
    default_p2p: Mutex<SessionConfig>,
    default_multicast: Mutex<SessionConfig>,
    me: Weak<SessionLayer>,
}

impl SessionLayer {
    /// A layer with no sessions.
    pub fn new(core: Arc<AppCore>) -> Arc<Self> {
        Arc::new_cyclic(|me| SessionLayer {
            core,
            sessions: RwLock::new(HashMap::new()),
            default_p2p: Mutex::new(SessionConfig::default_p2p()),
            default_multicast: Mutex::new(SessionConfig::default_multicast()),
            me: me.clone(),
        })
    }

    /// The session with `id`.
    pub fn get(&self, id: u32) -> Option<Arc<SessionEntry>> {
        self.sessions.read().get(&id).cloned()
    }

    /// True when a live multicast session other than `id` uses `channel` (its subscriptions
    /// and routes are shared with `id` in the node, so `id` must not remove them).
    pub fn channel_shared(&self, id: u32, channel: &Name) -> bool {
        self.sessions.read().values().any(|e| {
            e.id != id && matches!(&*e.config.lock(), SessionConfig::Multicast { topic, .. } if topic == channel)
        })
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.read().len()
    }

    /// True when no session lives.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates a session started by this app (random id).
    pub fn create_local(&self, cfg: SessionConfig) -> Result<u32, SlimError> {
        cfg.validate()?;
        let cfg = cfg.normalized();
        for _ in 0..64 {
            let id = rand::random_range(0..SESSION_ID_RANGE);
            if self.get(id).is_none() {
                self.spawn(id, cfg, P2pRole::Initiator, false)?;
                return Ok(id);
            }
        }
        Err(SlimError::Internal("no free session id".into()))
    }

    fn spawn(&self, id: u32, cfg: SessionConfig, role: P2pRole, remote: bool) -> Result<Arc<SessionEntry>, SlimError> {
        let (in_tx, in_rx) = mpsc::channel(SESSION_INBOUND_CAPACITY);
        let (out_tx, out_rx) = mpsc::channel(SESSION_OUTBOUND_CAPACITY);
        let sticky = matches!(cfg, SessionConfig::Unicast { .. });
        let entry = Arc::new(SessionEntry {
            id,
            queue: SessionQueue::new(id, DEFAULT_SESSION_QUEUE_CAPACITY, self.core.inbox.clone()),
            next_id: AtomicU32::new(0),
            budget: cfg.is_point_to_point().then(|| SendBudget::new(MAX_BUFFERED_BYTES)),
            fast_publish: AtomicBool::new(fast_publish_for(&cfg)),
            fast_inbound: cfg.is_point_to_point() && !sticky,
            announce_pending: AtomicBool::new(remote),
            inbound_stalled: AtomicBool::new(false),
            inbound: in_tx,
            outbound: out_tx,
            cancel: self.core.shutdown.child_token(),
            config: Mutex::new(cfg.clone()),
        });
        self.sessions.write().insert(id, entry.clone());
        if let SessionConfig::Multicast { moderator, .. } = &cfg {
            let role =
                if *moderator && role == P2pRole::Initiator { MulticastRole::Moderator } else { MulticastRole::Member };
            let task = MulticastTask::new(self.core.clone(), entry.clone(), self.me.clone(), &cfg, role);
            tokio::spawn(task.run(in_rx, out_rx));
        } else {
            let task = P2pTask::new(self.core.clone(), entry.clone(), self.me.clone(), &cfg, role);
            tokio::spawn(task.run(in_rx, out_rx));
        }
        Ok(entry)
    }

    /// Deletes a session: its task stops, readers get `SessionClosed`.
    pub fn remove(&self, id: u32) -> Result<(), SlimError> {
        let entry = self.sessions.write().remove(&id).ok_or(SlimError::SessionNotFound(id))?;
        entry.close();
        Ok(())
    }

    /// Closes every session (app shutdown).
    pub fn close_all(&self) {
        let all: Vec<_> = self.sessions.write().drain().map(|(_, e)| e).collect();
        for e in all {
            e.close();
        }
        self.core.inbox.close();
    }

    /// The configuration of session `id`.
    pub fn config(&self, id: u32) -> Result<SessionConfig, SlimError> {
        Ok(self.get(id).ok_or(SlimError::SessionNotFound(id))?.config())
    }

    /// Changes timeout / retries of session `id` (the variant must stay the same).
    pub fn set_config(&self, id: u32, cfg: SessionConfig) -> Result<(), SlimError> {
        cfg.validate()?;
        let entry = self.get(id).ok_or(SlimError::SessionNotFound(id))?;
        let cfg = cfg.normalized();
        {
            let mut cur = entry.config.lock();
            if std::mem::discriminant(&*cur) != std::mem::discriminant(&cfg) {
                return Err(SlimError::Config(format!(
                    "invalid session config type: expected {}, got {}",
                    variant_name(&cur),
                    variant_name(&cfg)
                )));
            }
            *cur = cfg.clone();
        }
        entry.fast_publish.store(fast_publish_for(&cfg), Ordering::Release);
        entry
            .outbound
            .try_send(Command::SetConfig(cfg))
            .map_err(|_| SlimError::Internal("session task busy; retry set_session_config".into()))
    }

    /// Sets the configuration used for sessions created on reception.
    pub fn set_default(&self, cfg: SessionConfig) -> Result<(), SlimError> {
        cfg.validate()?;
        let cfg = cfg.normalized();
        if cfg.is_point_to_point() {
            *self.default_p2p.lock() = cfg;
        } else {
            *self.default_multicast.lock() = cfg;
        }
        Ok(())
    }

    /// Publishes on session `id`. Unreliable anycast goes straight to the node; everything else
    /// through the session task (waits when the task's queue is full).
    pub async fn publish(&self, id: u32, req: PublishRequest) -> Result<(), SlimError> {
        let entry = self.get(id).ok_or(SlimError::SessionNotFound(id))?;
        let target = Target::of(&req)?;
        if entry.fast_publish.load(Ordering::Acquire) {
            let mid = entry.next_id.fetch_add(1, Ordering::Relaxed);
            let fanout = req.fanout;
            let msg = data_message(
                &self.core.name,
                &target,
                fanout,
                SessionType::SessionPointToPoint,
                SessionMessageType::P2PMsg,
                id,
                mid,
                req,
            );
            return self.core.send(msg).await;
        }
        if entry.budget.is_none() {
            // Multicast: the task holds publishes while invites run; it sets its own pace.
            return entry.outbound.send(Command::Publish(req)).await.map_err(|_| SlimError::SessionNotFound(id));
        }
        let len = req.blob.len();
        entry.take_budget(len).await?;
        let cmd = match entry.outbound.try_send(Command::Publish(req)) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(cmd)) => cmd,
            Err(TrySendError::Closed(_)) => {
                entry.give_back_budget(len);
                return Err(SlimError::SessionNotFound(id));
            }
        };
        // Too many small messages waiting (the entry bounds bind before the byte bound).
        match entry.outbound.send_timeout(cmd, entry.publish_wait_bound()).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                entry.give_back_budget(len);
                Err(SlimError::SessionNotFound(id))
            }
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                entry.give_back_budget(len);
                let buffered = entry.budget.as_ref().map_or(0, SendBudget::in_use);
                Err(SlimError::SendBufferFull { session_id: id, buffered })
            }
        }
    }

    /// Publishes without waiting: `Ok(None)` when handed over, `Ok(Some(req))` (the request back)
    /// when the node or the session task has no room right now (call [`Self::publish`] then).
    pub fn try_publish(&self, id: u32, req: PublishRequest) -> Result<Option<PublishRequest>, SlimError> {
        let entry = self.get(id).ok_or(SlimError::SessionNotFound(id))?;
        let target = Target::of(&req)?;
        if entry.fast_publish.load(Ordering::Acquire) {
            let Ok(permit) = self.core.node_tx.try_reserve() else { return Ok(Some(req)) };
            let mid = entry.next_id.fetch_add(1, Ordering::Relaxed);
            let fanout = req.fanout;
            let mut msg = data_message(
                &self.core.name,
                &target,
                fanout,
                SessionType::SessionPointToPoint,
                SessionMessageType::P2PMsg,
                id,
                mid,
                req,
            );
            self.core.stamp_identity(&mut msg)?;
            permit.send(msg);
            return Ok(None);
        }
        match entry.outbound.try_reserve() {
            Ok(permit) => {
                if let Some(b) = &entry.budget
                    && !b.try_take(b.charge(req.blob.len()))
                {
                    return Ok(Some(req));
                }
                permit.send(Command::Publish(req));
                Ok(None)
            }
            Err(TrySendError::Full(())) => Ok(Some(req)),
            Err(TrySendError::Closed(())) => Err(SlimError::SessionNotFound(id)),
        }
    }

    /// Asks a multicast moderator session to invite or remove `name`; the receiver resolves when
    /// the participant joined (or left).
    pub async fn membership(
        &self,
        id: u32,
        name: &Name,
        invite: bool,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), SlimError>>, SlimError> {
        let entry = self.get(id).ok_or(SlimError::SessionNotFound(id))?;
        if entry.config().is_point_to_point() {
            return Err(SlimError::Invite("invite and remove need a multicast session".into()));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cmd = if invite { Command::Invite(name.clone(), tx) } else { Command::Remove(name.clone(), tx) };
        entry.outbound.send(cmd).await.map_err(|_| SlimError::SessionNotFound(id))?;
        Ok(rx)
    }

    /// Reads everything the embedded node delivers until shutdown.
    pub async fn run_dispatcher(self: Arc<Self>, mut rx: mpsc::Receiver<LocalDelivery>) {
        let mut batch = Vec::with_capacity(DISPATCH_BATCH);
        loop {
            let n = tokio::select! {
                biased;
                _ = self.core.shutdown.cancelled() => break,
                n = rx.recv_many(&mut batch, DISPATCH_BATCH) => n,
            };
            if n == 0 {
                break;
            }
            for d in batch.drain(..) {
                match d {
                    LocalDelivery::Message(m) => self.on_message(m).await,
                    LocalDelivery::Error(e) => self.on_route_error(e),
                }
            }
        }
        self.close_all();
    }

    fn on_route_error(&self, e: RouteError) {
        let sid = e.message.session_header().map(|s| s.session_id);
        match sid.and_then(|s| self.get(s)) {
            Some(entry) => entry.deliver_error(SlimError::NoRoute(e.error.to_string())),
            None => {
                // Drop point: an error for a session that no longer exists; counted.
                Stats::bump(&self.core.stats.orphan_route_errors);
                tracing::debug!(error = %e.error, "route error for a message without a live session");
            }
        }
    }

    /// Checks `SLIM_IDENTITY` (sync first, then the verifier's async path). False → dropped.
    async fn identity_ok(&self, msg: &Message) -> bool {
        let Some(token) = msg.metadata.get(wire::META_IDENTITY) else {
            Stats::bump(&self.core.stats.identity_rejected);
            tracing::debug!("inbound publish without identity: dropped");
            return false;
        };
        if self.core.verifier.try_verify(token).is_ok() {
            return true;
        }
        match self.core.verifier.verify(token).await {
            Ok(()) => true,
            Err(e) => {
                Stats::bump(&self.core.stats.identity_rejected);
                tracing::debug!(error = %e, "inbound publish with a rejected identity: dropped");
                false
            }
        }
    }

    async fn on_message(&self, msg: Message) {
        let Some(sh) = msg.session_header() else {
            // Drop point: not a session message (malformed); counted (`invalid`), it belongs to
            // no session's stream.
            Stats::bump(&self.core.stats.invalid);
            return;
        };
        let (sid, session_type) = (sh.session_id, sh.session_type);
        if !self.identity_ok(&msg).await {
            // Drop point: identity missing or rejected; counted (`identity_rejected`). Reliable
            // data is RECOVERED or reported by its session's own machinery (point to point: not
            // acknowledged, the sender retries then raises SLIMTimeoutError; multicast: the id is
            // a hole, asked again, MessageLost once the retries are spent). Unreliable
            // point-to-point data for a live session is REPORTED here (MessageLost with the id).
            if msg.session_message_type() == SessionMessageType::P2PMsg
                && let Some(entry) = self.get(sid)
            {
                entry.report_lost(msg.source_name().as_ref(), sh.message_id);
            }
            return;
        }
        if let Some(dst) = msg.slim_header().and_then(|h| h.destination.as_ref()) {
            let own = &self.core.name;
            let [c0, c1, c2, id] = own.components();
            let other_instance = (dst.component_0, dst.component_1, dst.component_2) == (c0, c1, c2)
                && dst.component_3 != wire::name::ANY_ID
                && dst.component_3 != id;
            if other_instance {
                // A node routes an unknown exact id to the only instance it knows; that instance
                // is not the addressee (it has no state for the conversation).
                // Drop point: not for this app; counted (`misdirected`). A reliable sender
                // retries and reports SLIMTimeoutError; nothing here to report to.
                Stats::bump(&self.core.stats.misdirected);
                tracing::debug!("message for another instance of this name: dropped");
                return;
            }
        }
        let kind = msg.session_message_type();
        if kind == SessionMessageType::ChannelDiscoveryRequest {
            if let Some(reply) = channel::discovery_reply(&self.core, &msg) {
                let _ = self.core.send(reply).await;
            }
            return;
        }
        if let Some(entry) = self.get(sid) {
            entry.on_inbound(msg, &self.core.stats).await;
            return;
        }
        self.create_on_reception(sid, session_type, kind, msg).await;
    }

    async fn create_on_reception(&self, sid: u32, session_type: i32, kind: SessionMessageType, msg: Message) {
        let stats = &self.core.stats;
        let created = match kind {
            SessionMessageType::P2PMsg | SessionMessageType::P2PReliable => {
                let mut cfg = self.default_p2p.lock().clone();
                if kind == SessionMessageType::P2PReliable {
                    cfg = with_reliable_defaults(cfg);
                }
                // A session opened by data has no discovery of its own: it answers whoever wrote.
                let cfg = match cfg {
                    SessionConfig::Unicast { timeout, max_retries, mls_enabled: false } => {
                        SessionConfig::Anycast { timeout, max_retries, mls_enabled: false }
                    }
                    other => other,
                };
                self.spawn(sid, cfg, P2pRole::Responder, true)
            }
            SessionMessageType::ChannelJoinRequest if session_type == SessionType::SessionPointToPoint as i32 => {
                let mls_enabled = msg.metadata.contains_key(wire::META_MLS_ENABLED);
                let (timeout, max_retries) = match &*self.default_p2p.lock() {
                    SessionConfig::Anycast { timeout, max_retries, .. }
                    | SessionConfig::Unicast { timeout, max_retries, .. } => (*timeout, *max_retries),
                    SessionConfig::Multicast { .. } => (None, None),
                };
                let cfg = SessionConfig::Unicast {
                    timeout: Some(timeout.unwrap_or(REMOTE_RELIABLE_TIMEOUT)),
                    max_retries: Some(max_retries.unwrap_or(REMOTE_RELIABLE_RETRIES)),
                    mls_enabled,
                };
                self.spawn(sid, cfg, P2pRole::Responder, true)
            }
            SessionMessageType::ChannelJoinRequest if session_type == SessionType::SessionMulticast as i32 => {
                // Δ0.6: the channel travels in the session-header destination; required.
                let Some(channel) = msg.session_header().and_then(|s| s.destination.as_ref()).map(Name::from_original)
                else {
                    // Drop point: malformed invite; counted (`invalid`); the moderator's invite
                    // fails with InviteError after its retries.
                    Stats::bump(&stats.invalid);
                    tracing::debug!(session = sid, "multicast join request without a channel name: dropped");
                    return;
                };
                let SessionConfig::Multicast { max_retries, timeout, .. } = self.default_multicast.lock().clone()
                else {
                    return;
                };
                let cfg = SessionConfig::Multicast {
                    topic: channel,
                    moderator: false,
                    max_retries,
                    timeout,
                    mls_enabled: msg.metadata.contains_key(wire::META_MLS_ENABLED),
                };
                self.spawn(sid, cfg, P2pRole::Responder, true)
            }
            _ => {
                // Drop point: a message for a session this app does not have that cannot open
                // one (late ACKs, RTX, beacons, replies after a delete); counted
                // (`unknown_session`): there is no session to report to, and a reliable sender
                // reports its own timeout.
                Stats::bump(&stats.unknown_session);
                tracing::debug!(session = sid, ?kind, "message for an unknown session: dropped");
                return;
            }
        };
        match created {
            Ok(entry) => entry.on_inbound(msg, stats).await,
            Err(e) => {
                Stats::bump(&stats.unknown_session);
                tracing::debug!(session = sid, error = %e, "could not create session on reception");
            }
        }
    }
}

fn with_reliable_defaults(cfg: SessionConfig) -> SessionConfig {
    match cfg {
        SessionConfig::Anycast { timeout, max_retries, mls_enabled } => SessionConfig::Anycast {
            timeout: Some(timeout.unwrap_or(REMOTE_RELIABLE_TIMEOUT)),
            max_retries: Some(max_retries.unwrap_or(REMOTE_RELIABLE_RETRIES)),
            mls_enabled,
        },
        SessionConfig::Unicast { timeout, max_retries, mls_enabled } => SessionConfig::Unicast {
            timeout: Some(timeout.unwrap_or(REMOTE_RELIABLE_TIMEOUT)),
            max_retries: Some(max_retries.unwrap_or(REMOTE_RELIABLE_RETRIES)),
            mls_enabled,
        },
        other => other,
    }
}

fn variant_name(cfg: &SessionConfig) -> &'static str {
    match cfg {
        SessionConfig::Anycast { .. } => "Anycast",
        SessionConfig::Unicast { .. } => "Unicast",
        SessionConfig::Multicast { .. } => "Multicast",
    }
}

/// Items a reader gets from a session queue (re-exported for the app).
pub type SessionDelivery = Delivery;
