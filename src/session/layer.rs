//! The app-wide session layer: session table, inbound dispatch and the publish path (see
//! docs/protocol.md "How a message finds its session").

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::budget::{MAX_BUFFERED_BYTES, SendBudget};
use super::channel;
use super::context::{AppCore, Stats, Target, check_len, check_size, data_message, data_message_of, metadata_size};
use super::entry::{AnycastLiveness, SessionTable, fast_publish_for};
pub use super::entry::{Command, SessionEntry};
use super::multicast::{MulticastRole, MulticastTask};
use super::point_to_point::{P2pRole, P2pTask};
use super::queue::{DEFAULT_SESSION_QUEUE_CAPACITY, SessionQueue};
use super::task::{self, Ended};
use super::timer::until_settled;
use super::{
    Delivery, PublishRequest, REMOTE_RELIABLE_RETRIES, REMOTE_RELIABLE_TIMEOUT, SESSION_ID_RANGE, SessionConfig,
};
use crate::error::SlimError;
use crate::wire::{self, Message, Name, SessionMessageType, SessionType};

mod dispatch;

/// Inbound messages a session task buffers; when full the dispatcher waits (bounded by
/// [`DELIVERY_WAIT_BOUND`]), then drops: see [`SessionEntry::on_inbound`] for what that costs.
pub const SESSION_INBOUND_CAPACITY: usize = 4096;
/// Publish requests waiting for a session task (callers wait when it is full).
pub const SESSION_OUTBOUND_CAPACITY: usize = 1024;
/// Most publishes of one `publish_many` call handed to a point-to-point session task as one
/// command ([`Command::PublishBatch`]); a longer call makes several. Bounds what one command adds
/// to the task's pending queue beyond [`super::point_to_point::MAX_PENDING`].
pub const PUBLISH_BATCH_MAX: usize = 64;
/// How long a delete waits for what was published on the session (as `app::CLOSE_LINGER`).
pub const DELETE_LINGER: Duration = Duration::from_secs(2);
/// Inbound deliveries the dispatcher takes from the node per wake-up.
const DISPATCH_BATCH: usize = 128;

/// Sessions of one app.
#[derive(Debug)]
pub struct SessionLayer {
    /// Shared app state.
    pub core: Arc<AppCore>,
    sessions: Arc<SessionTable>,
    default_p2p: Mutex<SessionConfig>,
    default_multicast: Mutex<SessionConfig>,
}

impl SessionLayer {
    /// A layer with no sessions.
    pub fn new(core: Arc<AppCore>) -> Arc<Self> {
        Arc::new(SessionLayer {
            core,
            sessions: Arc::new(SessionTable::default()),
            default_p2p: Mutex::new(SessionConfig::default_p2p()),
            default_multicast: Mutex::new(SessionConfig::default_multicast()),
        })
    }

    /// This app's sessions ([`SessionTable::get`], [`SessionTable::lookup`]).
    pub fn table(&self) -> &SessionTable {
        &self.sessions
    }

    /// True when a live multicast session other than `id` uses `channel` (its subscriptions
    /// and routes are shared with `id` in the node, so `id` must not remove them).
    pub fn channel_shared(&self, id: u32, channel: &Name) -> bool {
        self.sessions.channel_shared(id, channel)
    }

    /// True when what the app handed over has left the layer's queues: no session has a command
    /// waiting for its task, and the embedded node has taken every message the app sent it (see
    /// `App::close`).
    pub fn handed_over(&self) -> bool {
        self.sessions.commands_idle() && self.core.node_tx.capacity() == self.core.node_tx.max_capacity()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
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
            if self.sessions.get(id).is_none() {
                self.spawn(id, cfg, P2pRole::Initiator, false)?;
                return Ok(id);
            }
        }
        Err(SlimError::Internal("no free session id".into()))
    }

    /// Creates session `id` and starts its task; the task's end (a leave asked by the peer)
    /// deletes the session.
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
            last_names: Mutex::new(None),
            no_route_reported: Mutex::new(None),
            liveness: AnycastLiveness::of(&cfg, role == P2pRole::Initiator),
            signals: Default::default(),
            outstanding: std::sync::atomic::AtomicUsize::new(0),
            reliable_in: Default::default(),
            addressed: Default::default(),
        });
        self.sessions.insert(entry.clone());
        let (sessions, this, running) = (Arc::downgrade(&self.sessions), entry.clone(), self.sessions.running());
        if let SessionConfig::Multicast { moderator, .. } = &cfg {
            let role =
                if *moderator && role == P2pRole::Initiator { MulticastRole::Moderator } else { MulticastRole::Member };
            let kind = MulticastTask::new(self.core.clone(), entry.clone(), sessions.clone(), &cfg, role);
            tokio::spawn(async move {
                let ended = task::run(kind, in_rx, out_rx).await;
                Self::ended(&sessions, &this, ended);
                drop(running);
            });
        } else {
            let kind = P2pTask::new(self.core.clone(), entry.clone(), &cfg, role);
            tokio::spawn(async move {
                let ended = task::run(kind, in_rx, out_rx).await;
                Self::ended(&sessions, &this, ended);
                drop(running);
            });
        }
        Ok(entry)
    }

    /// A session task ended: a session its peer closed (or whose moderator went silent) stays
    /// readable until drained, then goes (`SessionTable::retire_when_drained`), unless it was
    /// deleted or replaced meanwhile.
    fn ended(sessions: &std::sync::Weak<SessionTable>, entry: &Arc<SessionEntry>, ended: Ended) {
        if (ended == Ended::Left || entry.cancel.is_cancelled())
            && let Some(table) = sessions.upgrade()
        {
            table.retire_when_drained(entry);
        }
    }

    /// Deletes a session once what was published on it has left its task, waiting at most
    /// [`DELETE_LINGER`] (docs/reliability.md, "Deleting a session"); readers get `SessionClosed`.
    pub async fn remove(&self, id: u32) -> Result<(), SlimError> {
        let Some(entry) = self.sessions.to_delete(id)? else { return Ok(()) };
        let deadline = tokio::time::Instant::now() + DELETE_LINGER;
        let handed_over = until_settled(deadline, || entry.cancel.is_cancelled() || entry.holds_nothing()).await;
        if self.sessions.remove_entry(&entry) {
            let held = entry.held();
            if !handed_over && held > 0 {
                // Drop point, only past DELETE_LINGER: not recovered, and nobody reads the deleted
                // session, so counted and logged (a reliable receiver reports the gaps it sees).
                self.core.stats.delete_discarded.fetch_add(held as u64, Ordering::Relaxed);
                tracing::warn!(session = id, held, "session deleted with publishes its peer never took");
            }
            entry.close();
        }
        Ok(()) // else taken meanwhile by a concurrent delete or the app's close: deleted all the same
    }

    /// Closes every session (app shutdown).
    pub fn close_all(&self) {
        let all = self.sessions.drain();
        for e in all {
            e.close();
        }
        self.core.inbox.close();
    }

    /// The configuration of session `id`.
    pub fn config(&self, id: u32) -> Result<SessionConfig, SlimError> {
        Ok(self.sessions.lookup(id)?.config())
    }

    /// Changes timeout / retries of session `id` (the variant must stay the same).
    pub fn set_config(&self, id: u32, cfg: SessionConfig) -> Result<(), SlimError> {
        cfg.validate()?;
        let entry = self.sessions.lookup(id)?;
        let cfg = cfg.normalized();
        {
            let mut cur = entry.config.lock();
            if std::mem::discriminant(&*cur) != std::mem::discriminant(&cfg) {
                return Err(SlimError::Config(
                    format!("invalid session config type: expected {}, got {}", variant_name(&cur), variant_name(&cfg))
                        .into(),
                ));
            }
            *cur = cfg.clone();
        }
        entry.fast_publish.store(fast_publish_for(&cfg), Ordering::Release);
        entry.liveness.update(&cfg);
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

    /// Publishes on session `id` (a payload and metadata over `wire::MAX_PAYLOAD_SIZE` are refused
    /// with `MessageTooLarge`, nothing sent). Unreliable anycast goes straight to the node; everything else
    /// through the session task (waits when the task's queue is full).
    pub async fn publish(&self, id: u32, req: PublishRequest) -> Result<(), SlimError> {
        check_size(&req)?;
        let entry = self.sessions.open(id)?;
        let target = Target::of(&req)?;
        if entry.fast_publish.load(Ordering::Acquire) {
            entry.note_target(&target);
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
            entry.liveness.mark(&mut msg);
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
        check_size(&req)?;
        let entry = self.sessions.open(id)?;
        let target = Target::of(&req)?;
        if entry.fast_publish.load(Ordering::Acquire) {
            entry.note_target(&target);
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
            entry.liveness.mark(&mut msg);
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

    /// `publish_many`'s hand-over: publishes `template` with each payload `blobs` yields, in order,
    /// without waiting, as [`Self::try_publish`] would one by one, with what is the same for
    /// every message of the call done once (the session lookup, the target), and, on the
    /// session task's path (reliable or sticky sessions), one command per
    /// [`PUBLISH_BATCH_MAX`] messages (one channel trip and one wake-up of the task instead of
    /// one per message). `sent` counts the messages handed over. `Ok(Some(req))`: the first
    /// message with no room right now (await [`Self::publish`] with it, then call again with the
    /// rest); an error leaves the messages before the failing one sent and the rest not.
    pub fn try_publish_many(
        &self,
        id: u32,
        template: &PublishRequest,
        blobs: &mut dyn Iterator<Item = super::Bytes>,
        sent: &mut usize,
    ) -> Result<Option<PublishRequest>, SlimError> {
        let entry = self.sessions.open(id)?;
        let with_blob = |blob| PublishRequest { blob, ..template.clone() };
        let metadata_len = metadata_size(template);
        if entry.fast_publish.load(Ordering::Acquire) {
            // Built per message, as `try_publish` does: copying one message built for the whole
            // call (then setting payload and id) measured slower on the sending app (more
            // allocator time for the same allocations), so only the lookups are shared; built
            // from the template's parts (no request cloned per message).
            // Resolved with the first message (an empty call checks nothing, as before).
            let mut resolved: Option<Target> = None;
            for blob in blobs {
                check_len(blob.len() + metadata_len)?;
                let target = match resolved.take() {
                    Some(t) => t,
                    None => Target::of(template).inspect(|t| entry.note_target(t))?,
                };
                let target = &*resolved.insert(target);
                let Ok(permit) = self.core.node_tx.try_reserve() else { return Ok(Some(with_blob(blob))) };
                let mid = entry.next_id.fetch_add(1, Ordering::Relaxed);
                let mut msg = data_message_of(
                    &self.core.name,
                    target,
                    template.fanout,
                    (SessionType::SessionPointToPoint, SessionMessageType::P2PMsg, id, mid),
                    blob,
                    template.payload_type.as_deref(),
                    template.metadata.clone(),
                );
                entry.liveness.mark(&mut msg);
                self.core.stamp_identity(&mut msg)?;
                permit.send(msg);
                *sent += 1;
            }
            return Ok(None);
        }
        let Some(budget) = entry.budget.as_ref() else {
            // Multicast: its task batches what is queued itself; handed over one by one.
            for blob in blobs {
                match self.try_publish(id, with_blob(blob))? {
                    None => *sent += 1,
                    Some(back) => return Ok(Some(back)),
                }
            }
            return Ok(None);
        };
        // Point to point through the task: chunks of at most PUBLISH_BATCH_MAX messages, each
        // charged against the send budget as a lone publish is.
        loop {
            let Some(first) = blobs.next() else { return Ok(None) };
            check_len(first.len() + metadata_len)?;
            let permit = match entry.outbound.try_reserve() {
                Ok(permit) => permit,
                Err(TrySendError::Full(())) => return Ok(Some(with_blob(first))),
                Err(TrySendError::Closed(())) => return Err(SlimError::SessionNotFound(id)),
            };
            if !budget.try_take(budget.charge(first.len())) {
                return Ok(Some(with_blob(first)));
            }
            let mut chunk = Vec::with_capacity(PUBLISH_BATCH_MAX);
            chunk.push(with_blob(first));
            let mut stopped: Result<Option<PublishRequest>, SlimError> = Ok(None);
            while chunk.len() < PUBLISH_BATCH_MAX {
                let Some(blob) = blobs.next() else { break };
                if let Err(e) = check_len(blob.len() + metadata_len) {
                    stopped = Err(e);
                    break;
                }
                if !budget.try_take(budget.charge(blob.len())) {
                    stopped = Ok(Some(with_blob(blob)));
                    break;
                }
                chunk.push(with_blob(blob));
            }
            let n = chunk.len();
            permit.send(if n == 1 { Command::Publish(chunk.swap_remove(0)) } else { Command::PublishBatch(chunk) });
            *sent += n;
            match stopped {
                Ok(None) => {}
                other => return other,
            }
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
        self.membership_within(id, name, invite, None).await
    }

    /// [`Self::membership`]; an invite not answered by `deadline` is abandoned by the moderator.
    pub async fn membership_within(
        &self,
        id: u32,
        name: &Name,
        invite: bool,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), SlimError>>, SlimError> {
        let entry = self.sessions.open(id)?;
        if entry.config().is_point_to_point() {
            return Err(SlimError::Invite("invite and remove need a multicast session".into()));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cmd = if invite { Command::Invite(name.clone(), tx, deadline) } else { Command::Remove(name.clone(), tx) };
        entry.outbound.send(cmd).await.map_err(|_| SlimError::SessionNotFound(id))?;
        Ok(rx)
    }

    /// The members of multicast session `id` (see [`Command::Participants`]).
    pub async fn participants(&self, id: u32) -> Result<Vec<Name>, SlimError> {
        let entry = self.sessions.open(id)?;
        if entry.config().is_point_to_point() {
            return Err(SlimError::Invite("participants need a multicast session".into()));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        entry.outbound.send(Command::Participants(tx)).await.map_err(|_| SlimError::SessionNotFound(id))?;
        rx.await.unwrap_or(Err(SlimError::SessionClosed))
    }

    /// Checks `SLIM_IDENTITY` (sync first, then the verifier's async path). False → dropped.
    async fn identity_ok(&self, msg: &Message) -> bool {
        let Some(token) = msg.identity_token() else {
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

    /// Dispatches one inbound publish: identity check, misdirection check, discovery answer, then
    /// to its session (created on reception when the message may open one).
    async fn on_message(&self, msg: Message, acks: &mut Vec<Arc<SessionEntry>>) {
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
                && let Some(entry) = self.sessions.get(sid)
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
        if let Some(entry) = self.sessions.get(sid) {
            entry.on_inbound(msg, &self.core, acks).await;
            return;
        }
        self.create_on_reception(sid, session_type, kind, msg).await;
    }

    /// Creates the session a peer's first message opens (P2P data, P2P or multicast join request)
    /// with this app's defaults and hands it the message; anything else is counted and dropped.
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
                    SessionConfig::Unicast { timeout, max_retries, mls_enabled: false, liveness } => {
                        SessionConfig::Anycast { timeout, max_retries, mls_enabled: false, liveness }
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
                    liveness: None, // the initiator's bound (its JOIN_REQUEST) is the one used
                };
                self.spawn(sid, cfg, P2pRole::Responder, true)
            }
            SessionMessageType::ChannelJoinRequest if session_type == SessionType::SessionMulticast as i32 => {
                // The channel travels in the session-header destination (as slim-bindings 0.6.0 sends it); required.
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
                    // The moderator's bound (its JOIN_REQUEST) is the one this member uses.
                    liveness: None,
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
            Ok(entry) => entry.on_inbound(msg, &self.core, &mut Vec::new()).await,
            Err(e) => {
                Stats::bump(&stats.unknown_session);
                tracing::debug!(session = sid, error = %e, "could not create session on reception");
            }
        }
    }
}

/// A point-to-point config made reliable: the default timeout and retries where it has none.
fn with_reliable_defaults(cfg: SessionConfig) -> SessionConfig {
    match cfg {
        SessionConfig::Anycast { timeout, max_retries, mls_enabled, liveness } => SessionConfig::Anycast {
            timeout: Some(timeout.unwrap_or(REMOTE_RELIABLE_TIMEOUT)),
            max_retries: Some(max_retries.unwrap_or(REMOTE_RELIABLE_RETRIES)),
            mls_enabled,
            liveness,
        },
        SessionConfig::Unicast { timeout, max_retries, mls_enabled, liveness } => SessionConfig::Unicast {
            timeout: Some(timeout.unwrap_or(REMOTE_RELIABLE_TIMEOUT)),
            max_retries: Some(max_retries.unwrap_or(REMOTE_RELIABLE_RETRIES)),
            mls_enabled,
            liveness,
        },
        other => other,
    }
}

/// The variant name used in `set_session_config` errors.
fn variant_name(cfg: &SessionConfig) -> &'static str {
    match cfg {
        SessionConfig::Anycast { .. } => "Anycast",
        SessionConfig::Unicast { .. } => "Unicast",
        SessionConfig::Multicast { .. } => "Multicast",
    }
}

/// Items a reader gets from a session queue (re-exported for the app).
pub type SessionDelivery = Delivery;
