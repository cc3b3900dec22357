//! Point-to-point sessions (spec §3.4–§3.6, Δ0.6 wire): anycast and sticky unicast, unreliable
//! or reliable (ACK + retransmission, receiver reorder buffer with RTX).
//!
//! One task per session owns all state; it reads inbound messages (from the dispatcher),
//! publish commands (from the app) and its own timers. Unreliable anycast traffic never reaches
//! the task (see [`super::layer`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::buffers::{Arrival, ReceiverBuffer, Released};
use super::channel;
use super::context::{AppCore, Stats, Target, data_message};
use super::layer::{Command, SessionEntry, SessionLayer};
use super::queue::DELIVERY_WAIT_BOUND;
use super::timer::{Fired, TimerPolicy, TimerSet};
use super::{CONTROL_MAX_RETRIES, CONTROL_RETRY_INTERVAL, DEFAULT_P2P_RETRIES, PublishRequest, SessionConfig};
use crate::error::SlimError;
use crate::mls::{MlsState, interceptor};
use crate::wire::builders::{self, Flags, PublishSpec};
use crate::wire::{Message, Name, SessionMessageType, SessionType};

/// Reliable messages in flight (unacknowledged). Further publishes wait in the pending queue:
/// a fixed retransmission timeout with a deep window turns queueing delay into a
/// retransmission storm, so the window stays small (it still covers many round trips).
pub const MAX_IN_FLIGHT: usize = 256;
/// Publishes buffered (during discovery or behind a full window) before publishers wait. Bytes
/// are bounded too: every publish is charged against the session's [`super::budget`] until it
/// leaves the task's buffers (sent, or, reliable, acknowledged or timed out).
pub const MAX_PENDING: usize = 4096;
/// Recently delivered (source, id) pairs kept to drop duplicates when no peer is pinned.
const RECENT_IDS: usize = 4096;

/// Who started the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum P2pRole {
    /// This app created it (sticky sessions run discovery on first publish).
    Initiator,
    /// A peer's message created it.
    Responder,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TimerKey {
    /// Waiting for the ACK of this data message id.
    Ack(u32),
    /// Waiting for this missing id (RTX_REQUEST on each fire).
    Rtx(u32),
    /// Re-sending this control message (discovery / join).
    Control(u32),
    /// Reliable initiator: the whole handshake (discovery, join and, with MLS, the welcome) must
    /// end by this deadline, `timeout × (max_retries + 1)` after it started.
    Handshake,
}

#[derive(Debug)]
enum Phase {
    /// No peer and no discovery running.
    Idle,
    /// DISCOVERY_REQUEST with this id sent.
    Discovering { request_id: u32 },
    /// JOIN_REQUEST with this id sent to this instance.
    Joining { request_id: u32, peer: Peer },
    /// Peer pinned (or not needed).
    Ready,
}

#[derive(Debug, Clone)]
struct Peer {
    name: Name,
    conn: Option<u64>,
}

/// The state machine of one point-to-point session.
pub struct P2pTask {
    core: Arc<AppCore>,
    entry: Arc<SessionEntry>,
    layer: Weak<SessionLayer>,
    id: u32,
    timeout: Option<Duration>,
    max_retries: u32,
    sticky: bool,
    mls_enabled: bool,
    role: P2pRole,
    phase: Phase,
    peer: Option<Peer>,
    pending: VecDeque<PublishRequest>,
    /// Sent reliable messages by id, with what they were charged against the send budget.
    unacked: HashMap<u32, (Message, usize)>,
    control: HashMap<u32, Message>,
    timers: TimerSet<TimerKey>,
    receiver: Option<ReceiverBuffer<Message>>,
    recent: HashSet<(u64, u32)>,
    recent_order: VecDeque<(u64, u32)>,
    fired: Vec<Fired<TimerKey>>,
    released: Vec<Released<Message>>,
    holes: Vec<u32>,
    /// MLS group state (sessions with `mls_enabled`): created at join time.
    mls: Option<MlsState>,
    /// The two-member group can carry traffic (initiator: welcome acknowledged; responder: welcome applied).
    mls_ready: bool,
    /// Initiator: id of the WELCOME waiting for its ACK.
    welcome_id: Option<u32>,
    /// Responder: the key package sent in JOIN_REPLY (re-sent unchanged on a retransmitted request).
    key_package: Option<Vec<u8>>,
}

impl P2pTask {
    /// A task for `entry` with the point-to-point parameters of `cfg`.
    pub fn new(
        core: Arc<AppCore>,
        entry: Arc<SessionEntry>,
        layer: Weak<SessionLayer>,
        cfg: &SessionConfig,
        role: P2pRole,
    ) -> Self {
        let (timeout, max_retries, sticky, mls_enabled) = params(cfg);
        P2pTask {
            id: entry.id,
            core,
            entry,
            layer,
            timeout,
            max_retries,
            sticky,
            mls_enabled,
            role,
            phase: Phase::Idle,
            peer: None,
            pending: VecDeque::new(),
            unacked: HashMap::new(),
            control: HashMap::new(),
            timers: TimerSet::new(),
            receiver: None,
            recent: HashSet::new(),
            recent_order: VecDeque::new(),
            fired: Vec::new(),
            released: Vec::new(),
            holes: Vec::new(),
            mls: None,
            mls_ready: false,
            welcome_id: None,
            key_package: None,
        }
    }

    /// Runs until the session is deleted or the app shuts down.
    pub async fn run(mut self, mut inbound: mpsc::Receiver<Message>, mut commands: mpsc::Receiver<Command>) {
        let cancel = self.entry.cancel.clone();
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            let next = self.timers.next_deadline();
            if next != armed {
                if let Some(at) = next {
                    sleep.as_mut().reset(at);
                }
                armed = next;
            }
            let accept = self.accepts_publish();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                m = inbound.recv() => match m {
                    Some(m) => self.on_message(m).await,
                    None => break,
                },
                _ = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.on_timers().await;
                }
                c = commands.recv(), if accept => match c {
                    Some(Command::Publish(req)) => self.on_publish(req).await,
                    Some(Command::SetConfig(cfg)) => {
                        let (timeout, max_retries, _, _) = params(&cfg);
                        self.timeout = timeout;
                        self.max_retries = max_retries;
                    }
                    Some(Command::Invite(_, done) | Command::Remove(_, done)) => {
                        let _ = done.send(Err(SlimError::Invite("invite and remove need a multicast session".into())));
                    }
                    None => break,
                },
            }
        }
    }

    /// Publishers wait while too much is buffered.
    fn accepts_publish(&self) -> bool {
        self.pending.len() < MAX_PENDING
    }

    /// Sends pending publishes in order while the peer is known and the window has room.
    async fn drain_pending(&mut self) {
        while self.can_send() && !(self.timeout.is_some() && self.unacked.len() >= MAX_IN_FLIGHT) {
            let Some(req) = self.pending.pop_front() else { break };
            self.send_data(req).await;
        }
    }

    fn needs_discovery(&self) -> bool {
        self.sticky && self.role == P2pRole::Initiator && self.peer.is_none()
    }

    /// Data can go out: the peer is known (sticky) and, with MLS, the group is up.
    fn can_send(&self) -> bool {
        !self.needs_discovery() && (!self.mls_enabled || self.mls_ready)
    }

    /// The send-budget charge of a publish (0 when the session has no budget).
    fn charge_of(&self, req: &PublishRequest) -> usize {
        self.entry.budget.as_ref().map_or(0, |b| b.charge(req.blob.len()))
    }

    /// A message left this task's buffers: its bytes are free for the next publish.
    fn give_back(&self, charge: usize) {
        if let Some(b) = &self.entry.budget
            && charge > 0
        {
            b.give_back(charge);
        }
    }

    async fn send(&self, msg: Message) {
        if let Err(e) = self.core.send(msg).await {
            tracing::debug!(session = self.id, error = %e, "could not hand a message to the node");
        }
    }

    async fn on_publish(&mut self, req: PublishRequest) {
        if self.needs_discovery() {
            if matches!(self.phase, Phase::Idle) {
                match Target::of(&req) {
                    Ok(target) => self.start_discovery(&target.name).await,
                    Err(e) => {
                        self.give_back(self.charge_of(&req));
                        self.entry.deliver_error(e);
                        return;
                    }
                }
            }
            self.pending.push_back(req);
            return;
        }
        if self.pending.is_empty()
            && self.can_send()
            && !(self.timeout.is_some() && self.unacked.len() >= MAX_IN_FLIGHT)
        {
            self.send_data(req).await;
        } else {
            self.pending.push_back(req);
            self.drain_pending().await;
        }
    }

    async fn send_data(&mut self, req: PublishRequest) {
        let charge = self.charge_of(&req);
        let target = match (&self.peer, self.sticky) {
            (Some(p), true) => Target { name: p.name.clone(), forward_to: p.conn },
            _ => match Target::of(&req) {
                Ok(t) => t,
                Err(e) => {
                    self.give_back(charge);
                    self.entry.deliver_error(e);
                    return;
                }
            },
        };
        let mid = self.entry.next_id.fetch_add(1, Ordering::Relaxed);
        let kind = if self.timeout.is_some() { SessionMessageType::P2PReliable } else { SessionMessageType::P2PMsg };
        let fanout = req.fanout;
        let mut msg =
            data_message(&self.core.name, &target, fanout, SessionType::SessionPointToPoint, kind, self.id, mid, req);
        if let Some(mls) = self.mls.as_mut()
            && let Err(e) = interceptor::encrypt_outbound(mls, &mut msg)
        {
            self.give_back(charge);
            self.entry.deliver_error(SlimError::Mls(e.to_string()));
            return;
        }
        if let Some(timeout) = self.timeout {
            self.unacked.insert(mid, (msg.clone(), charge));
            self.timers.start(TimerKey::Ack(mid), TimerPolicy::constant(timeout, self.max_retries), Instant::now());
            self.send(msg).await;
        } else {
            self.send(msg).await;
            self.give_back(charge);
        }
    }

    async fn start_discovery(&mut self, dest: &Name) {
        if let Some(timeout) = self.timeout {
            // A reliable session fails within its own bound whatever the reason (nobody serves
            // the name, the peer died half way through): one deadline for the whole handshake.
            let bound = timeout.saturating_mul(self.max_retries.saturating_add(1));
            self.timers.start(TimerKey::Handshake, TimerPolicy::constant(bound, 0), Instant::now());
        }
        let request_id = channel::nonce();
        let msg = channel::p2p_discovery_request(&self.core, self.id, request_id, dest);
        self.send_control(request_id, msg).await;
        self.phase = Phase::Discovering { request_id };
    }

    async fn send_control(&mut self, mid: u32, msg: Message) {
        self.control.insert(mid, msg.clone());
        self.timers.start(
            TimerKey::Control(mid),
            TimerPolicy::constant(CONTROL_RETRY_INTERVAL, CONTROL_MAX_RETRIES),
            Instant::now(),
        );
        self.send(msg).await;
    }

    /// The handshake ended (peer pinned and, with MLS, the group up): its deadline is off.
    fn handshake_done(&mut self) {
        self.timers.stop(&TimerKey::Handshake);
    }

    /// Discovery, join or welcome got no answer in time: every control retry stops, the session
    /// goes back to idle (the next publish starts discovery again) and each waiting publish is
    /// reported as a timeout on the session.
    fn handshake_failed(&mut self) {
        tracing::debug!(session = self.id, "discovery/join got no answer: pending messages time out");
        for mid in std::mem::take(&mut self.control).into_keys() {
            self.timers.stop(&TimerKey::Control(mid));
        }
        self.timers.stop(&TimerKey::Handshake);
        self.phase = Phase::Idle;
        if self.role == P2pRole::Initiator && !self.mls_ready {
            // Half-made handshake (join answered, welcome not): start over with a fresh group.
            self.peer = None;
            self.receiver = None;
            self.mls = None;
            self.welcome_id = None;
        }
        while let Some(req) = self.pending.pop_front() {
            self.give_back(self.charge_of(&req));
            let message_id = self.entry.next_id.fetch_add(1, Ordering::Relaxed);
            self.entry.deliver_error(SlimError::Timeout { session_id: self.id, message_id });
        }
    }

    fn stop_control(&mut self, mid: u32) {
        self.timers.stop(&TimerKey::Control(mid));
        self.control.remove(&mid);
    }

    async fn on_message(&mut self, msg: Message) {
        let Some(sh) = msg.session_header() else { return };
        let mid = sh.message_id;
        let kind = msg.session_message_type();
        let Some(source) = msg.source_name() else { return };
        let stats = &self.core.stats;
        if let Some(peer) = &self.peer {
            let exempt =
                matches!(kind, SessionMessageType::ChannelDiscoveryReply | SessionMessageType::ChannelJoinReply);
            if self.sticky && source != peer.name && !exempt {
                // Drop point: not from the pinned peer, so not part of this session's stream;
                // counted (`wrong_peer`). A reliable sender times out on its own side.
                Stats::bump(&stats.wrong_peer);
                tracing::debug!(session = self.id, %source, "message from a source other than the pinned peer: dropped");
                return;
            }
        }
        match kind {
            SessionMessageType::P2PMsg => {
                // Drop points: undecryptable -> REPORTED (in `decrypt`); session queue full past
                // the delivery bound -> REPORTED (MessageLost with the id, see push_wait).
                if let Some(msg) = self.decrypt(msg) {
                    self.entry.deliver_waiting(msg).await;
                }
            }
            SessionMessageType::P2PReliable => self.on_reliable(mid, source, msg).await,
            SessionMessageType::P2PAck => {
                if let Some((_, charge)) = self.unacked.remove(&mid) {
                    self.give_back(charge);
                    self.timers.stop(&TimerKey::Ack(mid));
                    self.drain_pending().await;
                } else {
                    Stats::bump(&stats.unknown_acks);
                }
            }
            SessionMessageType::RtxRequest => self.on_rtx_request(mid, &msg).await,
            SessionMessageType::RtxReply => self.on_rtx_reply(mid, msg).await,
            SessionMessageType::ChannelDiscoveryReply => self.on_discovery_reply(mid, source, &msg).await,
            SessionMessageType::ChannelJoinRequest => self.on_join_request(source, &msg).await,
            SessionMessageType::ChannelJoinReply => self.on_join_reply(mid, &msg).await,
            SessionMessageType::ChannelMlsWelcome => self.on_welcome(&msg).await,
            SessionMessageType::ChannelMlsAck => self.on_mls_ack(mid).await,
            SessionMessageType::ChannelLeaveRequest => {
                if let Some(reply) =
                    channel::reply_to(&self.core, &msg, SessionMessageType::ChannelLeaveReply, Vec::new())
                {
                    self.send(reply).await;
                }
                if let Some(layer) = self.layer.upgrade() {
                    let _ = layer.remove(self.id);
                }
            }
            _ => {
                Stats::bump(&stats.unhandled_control);
                tracing::debug!(session = self.id, ?kind, "unhandled message on a point-to-point session");
            }
        }
    }

    fn ack_for(&self, msg: &Message, mid: u32) -> Option<Message> {
        let dst = msg.source_name()?;
        Some(self.core.control(
            &dst,
            Flags::one().forward_to(msg.incoming_conn()),
            SessionType::SessionPointToPoint,
            SessionMessageType::P2PAck,
            self.id,
            mid,
            Vec::new(),
        ))
    }

    async fn on_reliable(&mut self, mid: u32, source: Name, msg: Message) {
        let ack = self.ack_for(&msg, mid);
        let is_new = match &self.receiver {
            Some(rb) => rb.is_new(mid),
            None => !self.recent.contains(&(source.id(), mid)),
        };
        // Admission: a new message is accepted (and acknowledged) only once the application's
        // queue has room, so nothing acknowledged is ever dropped. Not acknowledged, it is
        // retransmitted by the sender, which reports a timeout if the reader never makes room.
        if is_new && !self.entry.queue.has_room() && !self.entry.queue.wait_room(DELIVERY_WAIT_BOUND).await {
            // Drop point: RECOVERED (not acknowledged: retransmitted by the sender, which raises
            // SLIMTimeoutError for it once its retries are spent); counted (`session_backlog`).
            Stats::bump(&self.core.stats.session_backlog);
            tracing::debug!(session = self.id, mid, "application queue full: reliable message not acknowledged");
            return;
        }
        if self.receiver.is_some() {
            if self.feed_receiver(mid, msg) == Arrival::OutOfWindow {
                // Drop point: RECOVERED (not acknowledged: the sender retransmits once the
                // window has moved); counted (`out_of_window`).
                return;
            }
        } else {
            let key = (source.id(), mid);
            if self.recent.insert(key) {
                self.recent_order.push_back(key);
                if self.recent_order.len() > RECENT_IDS
                    && let Some(old) = self.recent_order.pop_front()
                {
                    self.recent.remove(&old);
                }
                self.deliver_app(msg);
            } else {
                // A copy of a message already delivered (acknowledged again): not a loss.
                Stats::bump(&self.core.stats.duplicates);
            }
        }
        if let Some(ack) = ack {
            self.send(ack).await;
        }
    }

    /// Feeds the reorder buffer, delivers what it releases and starts RTX timers for new holes.
    fn feed_receiver(&mut self, mid: u32, msg: Message) -> Arrival {
        let Some(rb) = self.receiver.as_mut() else { return Arrival::Duplicate };
        let arrival = rb.on_message(mid, msg, &mut self.released, &mut self.holes);
        match arrival {
            Arrival::Duplicate => Stats::bump(&self.core.stats.duplicates),
            Arrival::OutOfWindow => Stats::bump(&self.core.stats.out_of_window),
            Arrival::Accepted => {
                self.timers.stop(&TimerKey::Rtx(mid));
            }
        }
        let rtx_every = self.timeout.unwrap_or(Duration::from_secs(1));
        let now = Instant::now();
        for hole in self.holes.drain(..) {
            if !self.timers.is_running(&TimerKey::Rtx(hole)) {
                self.timers.start(TimerKey::Rtx(hole), TimerPolicy::constant(rtx_every, self.max_retries), now);
            }
        }
        self.flush_released();
        arrival
    }

    /// Decrypts (MLS sessions) and hands an admitted data message to the application (into a
    /// full queue too: it was admitted, i.e. the queue had room when it was acknowledged).
    fn deliver_app(&mut self, msg: Message) {
        if let Some(msg) = self.decrypt(msg) {
            self.entry.deliver_admitted(msg);
        }
    }

    /// Decrypts an MLS session's payload. Drop point: a payload that does not belong to the
    /// group -> REPORTED (MessageLost with the id; counted in `mls_failures`), `None`.
    fn decrypt(&mut self, mut msg: Message) -> Option<Message> {
        let flagged = msg.metadata.contains_key(crate::wire::META_MLS_ENCRYPTED);
        if flagged || self.mls_enabled {
            // An MLS session accepts only what was encrypted for its group.
            let decrypted = match self.mls.as_mut() {
                Some(mls) => interceptor::decrypt_inbound(mls, &mut msg),
                None => Ok(false),
            };
            if !matches!(decrypted, Ok(true)) {
                Stats::bump(&self.core.stats.mls_failures);
                tracing::debug!(session = self.id, "message not decryptable by this session's group: reported lost");
                let id = msg.session_header().map_or(0, |h| h.message_id);
                self.entry.report_lost(msg.source_name().as_ref(), id);
                return None;
            }
        }
        Some(msg)
    }

    fn flush_released(&mut self) {
        let released: Vec<_> = self.released.drain(..).collect();
        let peer = self.peer.as_ref().map(|p| p.name.clone());
        for r in released {
            match r {
                Released::Message(m) => self.deliver_app(m),
                // Drop point: the retransmission never came or the sender no longer had it ->
                // REPORTED (MessageLost with the id).
                Released::Lost(id) => self.entry.report_lost(peer.as_ref(), id),
            }
        }
    }

    async fn on_rtx_request(&mut self, mid: u32, request: &Message) {
        let Some(requester) = request.source_name() else { return };
        let own = request.destination_name().unwrap_or_else(|| self.core.name.clone());
        let flags = Flags::one().forward_to(request.incoming_conn());
        let reply = match self.unacked.get(&mid) {
            Some((original, _)) => {
                let content_type = original.publish().and_then(|p| p.msg.as_ref()).map(|c| c.content_type.as_str());
                let spec = PublishSpec {
                    source: &own,
                    destination: &requester,
                    flags,
                    session_type: SessionType::SessionPointToPoint,
                    message_type: SessionMessageType::RtxReply,
                    session_id: self.id,
                    message_id: mid,
                    original_names: true,
                    content_type: content_type.unwrap_or(""),
                };
                let mut meta = original.metadata.clone();
                meta.remove(crate::wire::META_IDENTITY);
                builders::publish(&spec, original.blob_shared(), meta)
            }
            None => {
                Stats::bump(&self.core.stats.rtx_unavailable);
                self.core.control(
                    &requester,
                    flags.error(),
                    SessionType::SessionPointToPoint,
                    SessionMessageType::RtxReply,
                    self.id,
                    mid,
                    Vec::new(),
                )
            }
        };
        self.send(reply).await;
    }

    async fn on_rtx_reply(&mut self, mid: u32, msg: Message) {
        if self.receiver.is_none() || !self.timers.stop(&TimerKey::Rtx(mid)) {
            // Not a loss: the id was delivered or already reported lost.
            Stats::bump(&self.core.stats.unexpected_rtx_replies);
            return;
        }
        let failed = msg.slim_header().and_then(|h| h.error).unwrap_or(false);
        if failed {
            if let Some(rb) = self.receiver.as_mut() {
                rb.on_lost(mid, &mut self.released);
            }
            self.flush_released();
            return;
        }
        let ack = self.ack_for(&msg, mid);
        self.feed_receiver(mid, msg);
        if let Some(ack) = ack {
            self.send(ack).await;
        }
    }

    async fn on_discovery_reply(&mut self, mid: u32, source: Name, msg: &Message) {
        let Phase::Discovering { request_id } = self.phase else {
            Stats::bump(&self.core.stats.unhandled_control);
            return;
        };
        if request_id != mid {
            Stats::bump(&self.core.stats.unhandled_control);
            return;
        }
        self.stop_control(mid);
        let peer = Peer { name: source, conn: msg.incoming_conn() };
        let join_id = channel::nonce();
        let join = channel::join_request(
            &self.core,
            SessionType::SessionPointToPoint,
            self.id,
            join_id,
            &peer.name,
            peer.conn,
            &self.core.name,
            self.mls_enabled,
        );
        self.send_control(join_id, join).await;
        self.phase = Phase::Joining { request_id: join_id, peer };
    }

    async fn on_join_request(&mut self, source: Name, msg: &Message) {
        if self.role != P2pRole::Responder {
            Stats::bump(&self.core.stats.unhandled_control);
            return;
        }
        if self.peer.is_none() {
            self.peer = Some(Peer { name: source, conn: msg.incoming_conn() });
            self.sticky = true;
            self.receiver = Some(ReceiverBuffer::starting_at(0));
            self.phase = Phase::Ready;
        }
        let mut blob = Vec::new();
        if self.mls_enabled {
            match self.responder_key_package() {
                Ok(kp) => blob = kp,
                Err(e) => {
                    self.entry.deliver_error(e);
                    return;
                }
            }
        }
        // Answer every copy: a retransmitted request means our reply was lost.
        if let Some(reply) = channel::reply_to(&self.core, msg, SessionMessageType::ChannelJoinReply, blob) {
            self.send(reply).await;
        }
    }

    /// The responder's key package: made once, re-sent unchanged.
    fn responder_key_package(&mut self) -> Result<Vec<u8>, SlimError> {
        if let Some(kp) = &self.key_package {
            return Ok(kp.clone());
        }
        let mut state = MlsState::new(self.core.provider.clone(), self.core.verifier.clone())
            .map_err(|e| SlimError::Mls(e.to_string()))?;
        let kp = state.key_package().map_err(|e| SlimError::Mls(e.to_string()))?;
        self.mls = Some(state);
        self.key_package = Some(kp.clone());
        Ok(kp)
    }

    /// Responder: joins the group from the WELCOME and acknowledges it (every copy).
    async fn on_welcome(&mut self, msg: &Message) {
        if self.role != P2pRole::Responder {
            Stats::bump(&self.core.stats.unhandled_control);
            return;
        }
        if !self.mls_ready {
            let Some(mls) = self.mls.as_mut() else {
                Stats::bump(&self.core.stats.mls_failures);
                return;
            };
            if let Err(e) = mls.process_welcome(msg.blob()) {
                Stats::bump(&self.core.stats.mls_failures);
                tracing::debug!(session = self.id, error = %e, "welcome rejected");
                return;
            }
            self.mls_ready = true;
        }
        if let Some(ack) = channel::reply_to(&self.core, msg, SessionMessageType::ChannelMlsAck, Vec::new()) {
            self.send(ack).await;
        }
        self.drain_pending().await;
    }

    /// Initiator: the peer applied the WELCOME; the group is up and buffered messages go out.
    async fn on_mls_ack(&mut self, mid: u32) {
        if self.welcome_id != Some(mid) {
            Stats::bump(&self.core.stats.unhandled_control);
            return;
        }
        self.stop_control(mid);
        self.welcome_id = None;
        self.mls_ready = true;
        self.handshake_done();
        self.drain_pending().await;
    }

    /// Initiator: makes the group, adds the peer from its key package and sends the WELCOME.
    async fn start_mls(&mut self, key_package: &[u8]) -> Result<(), SlimError> {
        let mls_err = |e: crate::mls::MlsError| SlimError::Mls(e.to_string());
        let mut state = MlsState::new(self.core.provider.clone(), self.core.verifier.clone()).map_err(mls_err)?;
        state.create_group().map_err(mls_err)?;
        let added = state.add_member(key_package).map_err(mls_err)?;
        self.mls = Some(state);
        let Some(peer) = self.peer.clone() else { return Err(SlimError::Internal("MLS without a peer".into())) };
        let welcome_id = channel::nonce();
        let mut welcome = self.core.control(
            &peer.name,
            Flags::one().forward_to(peer.conn),
            SessionType::SessionPointToPoint,
            SessionMessageType::ChannelMlsWelcome,
            self.id,
            welcome_id,
            added.welcome,
        );
        // The commit that added the peer is the group's first (the reference numbers it 1).
        welcome.metadata.insert(crate::wire::META_MLS_INIT_COMMIT_ID.to_string(), "1".to_string());
        self.welcome_id = Some(welcome_id);
        self.send_control(welcome_id, welcome).await;
        Ok(())
    }

    async fn on_join_reply(&mut self, mid: u32, msg: &Message) {
        let phase = std::mem::replace(&mut self.phase, Phase::Ready);
        let Phase::Joining { request_id, peer } = phase else {
            self.phase = phase;
            return;
        };
        if request_id != mid {
            self.phase = Phase::Joining { request_id, peer };
            Stats::bump(&self.core.stats.unhandled_control);
            return;
        }
        self.stop_control(mid);
        self.peer = Some(peer);
        self.receiver = Some(ReceiverBuffer::starting_at(0));
        if !self.mls_enabled {
            self.handshake_done();
        } else if let Err(e) = self.start_mls(msg.blob()).await {
            tracing::debug!(session = self.id, error = %e, "MLS setup failed");
            self.entry.deliver_error(e);
        }
        self.drain_pending().await;
    }

    async fn on_timers(&mut self) {
        self.timers.expire(Instant::now(), &mut self.fired);
        let fired: Vec<_> = self.fired.drain(..).collect();
        for f in fired {
            match f {
                Fired::Retry { key: TimerKey::Ack(mid), .. } => {
                    if let Some((m, _)) = self.unacked.get(&mid) {
                        let m = m.clone();
                        self.send(m).await;
                    }
                }
                Fired::Failed { key: TimerKey::Ack(mid) } => {
                    if let Some((_, charge)) = self.unacked.remove(&mid) {
                        self.give_back(charge);
                    }
                    self.entry.deliver_error(SlimError::Timeout { session_id: self.id, message_id: mid });
                    self.drain_pending().await;
                }
                Fired::Retry { key: TimerKey::Rtx(mid), .. } => {
                    let still_missing = self.receiver.as_ref().is_some_and(|rb| rb.is_missing(mid));
                    if !still_missing {
                        self.timers.stop(&TimerKey::Rtx(mid));
                        continue;
                    }
                    if let Some(peer) = self.peer.clone() {
                        let req = self.core.control(
                            &peer.name,
                            Flags::one().forward_to(peer.conn),
                            SessionType::SessionPointToPoint,
                            SessionMessageType::RtxRequest,
                            self.id,
                            mid,
                            Vec::new(),
                        );
                        self.send(req).await;
                    }
                }
                Fired::Failed { key: TimerKey::Rtx(mid) } => {
                    if let Some(rb) = self.receiver.as_mut() {
                        rb.on_lost(mid, &mut self.released);
                    }
                    self.flush_released();
                }
                Fired::Retry { key: TimerKey::Control(mid), .. } => {
                    if let Some(m) = self.control.get(&mid) {
                        let m = m.clone();
                        self.send(m).await;
                    }
                }
                Fired::Failed { key: TimerKey::Control(_) | TimerKey::Handshake } => self.handshake_failed(),
                Fired::Retry { key: TimerKey::Handshake, .. } => {}
            }
        }
    }
}

/// (timeout, max_retries, sticky, mls_enabled) of a point-to-point config.
fn params(cfg: &SessionConfig) -> (Option<Duration>, u32, bool, bool) {
    match cfg {
        SessionConfig::Anycast { timeout, max_retries, mls_enabled } => {
            (*timeout, max_retries.unwrap_or(DEFAULT_P2P_RETRIES), false, *mls_enabled)
        }
        SessionConfig::Unicast { timeout, max_retries, mls_enabled } => {
            (*timeout, max_retries.unwrap_or(DEFAULT_P2P_RETRIES), true, *mls_enabled)
        }
        SessionConfig::Multicast { .. } => (None, 0, false, false),
    }
}
