//! Point-to-point sessions (docs/protocol.md "Point-to-point sessions"): anycast and sticky unicast, unreliable
//! or reliable (ACK + retransmission, receiver reorder buffer with RTX).
//!
//! One task per session owns all state; it reads inbound messages (from the dispatcher),
//! publish commands (from the app) and its own timers. Unreliable anycast traffic never reaches
//! the task (see [`super::layer`]).
//!
//! Files: this one holds the task's state, its handshake (discovery, join) and its
//! [`SessionKind`] impl; [`sender`] what it sends (publishes queued and batched, reliable ones kept
//! until acknowledged, retransmissions); [`receiver`] what it receives (admission, ordering, ACKs,
//! RTX); [`mls`] the two-member MLS group.

mod close;
mod inflight;
mod liveness;
mod mls;
mod receiver;
mod sender;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::buffers::ReceiverBuffer;
use super::channel;
use super::context::{AppCore, Stats};
use super::entry::{Command, SessionEntry};
use super::task::{Flow, SessionKind, TaskCore};
use super::timer::{Fired, TimerPolicy};
use super::{DEFAULT_LIVENESS, DEFAULT_P2P_RETRIES, PublishRequest, SessionConfig};
use crate::error::SlimError;
use crate::mls::MlsState;
use crate::wire::builders::Flags;
use crate::wire::{META_ACK_RANGES, Message, Name, SessionMessageType, SessionType};
use inflight::InFlight;
use sender::Unacked;

/// Reliable messages in flight (unacknowledged) at most. Further publishes wait in the pending
/// queue. The window a session uses moves between [`MIN_IN_FLIGHT`] and this bound with how long
/// its acknowledgements take (see `P2pTask::adapt_window`): a receiver acknowledges a message only
/// once its application has room for it, so behind a slow reader every message in flight waits
/// its turn, and with a fixed retransmission timeout a deep window would turn that wait into a
/// retransmission storm. A reader that keeps up lets the window open (small messages move in
/// bigger batches through every hop: fewer wake-ups per message, benches/README.md). Below the
/// receiving task's inbound backlog (`layer::SESSION_INBOUND_CAPACITY`, 4,096: one stream never
/// overflows it) and the receive window (8,192 ids); the send budget bounds the bytes.
pub const MAX_IN_FLIGHT: usize = 1024;
/// The window a reliable session starts with and goes back to when acknowledgements come late or
/// a message had to be sent again.
pub const MIN_IN_FLIGHT: usize = 256;
/// Publishes buffered (during discovery or behind a full window) before publishers wait. Bytes
/// are bounded too: every publish is charged against the session's [`super::budget`] until it
/// leaves the task's buffers (sent, or, reliable, acknowledged or timed out).
pub const MAX_PENDING: usize = 4096;
/// Recently delivered (source, id) pairs kept to drop duplicates when no peer is pinned.
const RECENT_IDS: usize = 4096;
pub use super::inbound::ACK_RUN_MAX;
/// Most data messages built before they are handed to the node together (see
/// [`TaskCore::send_many`]); well under the node channel's capacity.
const SEND_BATCH: usize = 64;

/// Who started the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum P2pRole {
    /// This app created it (sticky sessions run discovery on first publish).
    Initiator,
    /// A peer's message created it.
    Responder,
}

/// The timers of a point-to-point task (besides the core's control re-sends).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TimerKey {
    /// The earliest retransmission deadline of the unacknowledged messages (one timer for all of
    /// them: each message keeps its own deadline and retry count in [`Unacked`]).
    Acks,
    /// Waiting for this missing id (RTX_REQUEST on each fire).
    Rtx(u32),
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
    io: TaskCore<TimerKey>,
    timeout: Option<Duration>,
    max_retries: u32,
    sticky: bool,
    mls_enabled: bool,
    role: P2pRole,
    phase: Phase,
    peer: Option<Peer>,
    pending: VecDeque<PublishRequest>,
    /// Reliable messages that may be in flight now ([`MIN_IN_FLIGHT`]..=[`MAX_IN_FLIGHT`]).
    window: usize,
    /// Scratch: data messages built by [`Self::drain_pending`], handed to the node together.
    outbox: Vec<Message>,
    /// Sent reliable messages by id, oldest first (a range acknowledgement removes a run), with
    /// what they were charged against the send budget.
    unacked: InFlight<Unacked>,
    /// The peer takes range acknowledgements (it offered or accepted [`META_ACK_RANGES`] in the
    /// join): consecutive admitted ids are acknowledged by one P_2_P_ACK.
    ack_ranges: bool,
    // Admitted ids not acknowledged yet (only when `ack_ranges`) are a run in
    // `entry.reliable_in`, shared with the dispatcher: sent when the inbound channel goes idle,
    // when the run reaches [`ACK_RUN_MAX`], before the task waits for queue room, and when an id
    // that does not extend it comes.
    /// The reorder window is lent to the dispatcher (see `session::inbound`).
    lent: bool,
    /// Scratch: ids the ack timer found due.
    due: Vec<u32>,
    receiver: Option<ReceiverBuffer<Message>>,
    recent: HashSet<(u64, u32)>,
    recent_order: VecDeque<(u64, u32)>,
    /// MLS group state (sessions with `mls_enabled`): created at join time.
    mls: Option<MlsState>,
    /// The two-member group can carry traffic (initiator: welcome acknowledged; responder: welcome applied).
    mls_ready: bool,
    /// Initiator: id of the WELCOME waiting for its ACK.
    welcome_id: Option<u32>,
    /// Responder: the key package sent in JOIN_REPLY (re-sent unchanged on a retransmitted request).
    key_package: Option<Vec<u8>>,
    /// The peer ended the session ([`Self::on_peer_closed`]) or went silent: no close notice
    /// goes back.
    peer_left: bool,
    /// The liveness bound this side offers as an initiator (docs/liveness.md).
    liveness: Duration,
    /// The peer's liveness, once both sides agreed on heartbeats (sticky sessions only).
    watched: Option<liveness::Watched>,
}

impl P2pTask {
    /// A task for `entry` with the point-to-point parameters of `cfg`.
    pub fn new(core: Arc<AppCore>, entry: Arc<SessionEntry>, cfg: &SessionConfig, role: P2pRole) -> Self {
        let (timeout, max_retries, sticky, mls_enabled, liveness) = params(cfg);
        P2pTask {
            io: TaskCore::new(core, entry),
            timeout,
            max_retries,
            sticky,
            mls_enabled,
            role,
            phase: Phase::Idle,
            peer: None,
            pending: VecDeque::new(),
            window: MIN_IN_FLIGHT,
            outbox: Vec::new(),
            unacked: InFlight::new(),
            ack_ranges: false,
            lent: false,
            due: Vec::new(),
            receiver: None,
            recent: HashSet::new(),
            recent_order: VecDeque::new(),
            mls: None,
            mls_ready: false,
            welcome_id: None,
            key_package: None,
            peer_left: false,
            liveness,
            watched: None,
        }
    }

    /// A sticky initiator with no peer pinned yet must discover one before sending.
    fn needs_discovery(&self) -> bool {
        self.sticky && self.role == P2pRole::Initiator && self.peer.is_none()
    }

    /// Data can go out: the peer is known (sticky) and, with MLS, the group is up.
    fn can_send(&self) -> bool {
        !self.needs_discovery() && (!self.mls_enabled || self.mls_ready)
    }

    /// The send-budget charge of a publish (0 when the session has no budget).
    fn charge_of(&self, req: &PublishRequest) -> usize {
        self.io.entry.budget.as_ref().map_or(0, |b| b.charge(req.blob.len()))
    }

    /// A message left this task's buffers: its bytes are free for the next publish.
    fn give_back(&self, charge: usize) {
        if let Some(b) = &self.io.entry.budget
            && charge > 0
        {
            b.give_back(charge);
        }
    }

    /// Sends a DISCOVERY_REQUEST for `dest` (re-sent until answered).
    async fn start_discovery(&mut self, dest: &Name) {
        if let Some(timeout) = self.timeout {
            // A reliable session fails within its own bound whatever the reason (nobody serves
            // the name, the peer died half way through): one deadline for the whole handshake.
            let bound = timeout.saturating_mul(self.max_retries.saturating_add(1));
            self.io.start_timer(TimerKey::Handshake, TimerPolicy::constant(bound, 0), Instant::now());
        }
        let request_id = channel::nonce();
        let msg = channel::p2p_discovery_request(&self.io.app, self.io.id, request_id, dest);
        self.io.send_control(request_id, msg).await;
        self.phase = Phase::Discovering { request_id };
    }

    /// The handshake ended (peer pinned and, with MLS, the group up): its deadline is off.
    fn handshake_done(&mut self) {
        self.io.stop_timer(TimerKey::Handshake);
    }

    /// Discovery, join or welcome got no answer in time: every control retry stops, the session
    /// goes back to idle (the next publish starts discovery again) and each waiting publish is
    /// reported as a timeout on the session.
    fn handshake_failed(&mut self) {
        tracing::debug!(session = self.io.id, "discovery/join got no answer: pending messages time out");
        self.io.stop_all_control();
        self.io.stop_timer(TimerKey::Handshake);
        self.phase = Phase::Idle;
        if self.role == P2pRole::Initiator && !self.mls_ready {
            // Half-made handshake (join answered, welcome not): start over with a fresh group.
            self.peer = None;
            self.unwatch();
            self.receiver = None;
            self.ack_ranges = false;
            self.take_back();
            self.io.entry.reliable_in.lock().run = None;
            self.mls = None;
            self.welcome_id = None;
        }
        while let Some(req) = self.pending.pop_front() {
            self.give_back(self.charge_of(&req));
            let message_id = self.io.entry.next_id.fetch_add(1, Ordering::Relaxed);
            self.io.entry.deliver_error(SlimError::Timeout { session_id: self.io.id, message_id });
        }
    }

    /// Takes the reorder window back from the dispatcher (see `session::inbound`), moved on to
    /// the id the dispatcher reached.
    fn take_back(&mut self) {
        if !std::mem::take(&mut self.lent) {
            return;
        }
        if let Some(next) = self.io.entry.reliable_in.take_back()
            && let Some(rb) = self.receiver.as_mut()
        {
            rb.skip_to(next);
        }
    }

    /// Lends the reorder window to the dispatcher when it is idle (nothing held out of order, no
    /// hole) on a reliable stream from a pinned peer that takes range acknowledgements, without
    /// MLS (see `session::inbound`).
    fn lend_if_idle(&mut self) {
        if self.lent || !self.ack_ranges || self.mls_enabled || self.timeout.is_none() {
            return;
        }
        let (Some(peer), Some(next)) = (&self.peer, self.receiver.as_ref().and_then(|rb| rb.idle_next())) else {
            return;
        };
        self.io.entry.reliable_in.lend(next, &peer.name);
        self.lent = true;
    }

    /// Handles one inbound message; [`Flow::Leave`] when the peer closed the session.
    async fn handle_message(&mut self, msg: Message) -> Flow {
        let flow = self.handle_inner(msg).await;
        self.lend_if_idle();
        flow
    }

    /// [`Self::handle_message`], the window taken back first when the message may touch it.
    async fn handle_inner(&mut self, msg: Message) -> Flow {
        let Some(sh) = msg.session_header() else { return Flow::Continue };
        let mid = sh.message_id;
        let kind = msg.session_message_type();
        let Some(source) = msg.source_name() else { return Flow::Continue };
        if matches!(kind, SessionMessageType::P2PReliable | SessionMessageType::RtxReply) {
            self.take_back();
        }
        if let Some(peer) = &self.peer {
            let exempt =
                matches!(kind, SessionMessageType::ChannelDiscoveryReply | SessionMessageType::ChannelJoinReply);
            if self.sticky && source != peer.name && !exempt {
                // Drop point: not from the pinned peer, so not part of this session's stream;
                // counted (`wrong_peer`). A reliable sender times out on its own side.
                Stats::bump(&self.io.app.stats.wrong_peer);
                tracing::debug!(session = self.io.id, %source, "message from a source other than the pinned peer: dropped");
                return Flow::Continue;
            }
        }
        match kind {
            SessionMessageType::P2PMsg => {
                // Drop points: undecryptable -> REPORTED (in `decrypt`); session queue full past
                // the delivery bound -> REPORTED (MessageLost with the id, see push_wait).
                if let Some(msg) = self.decrypt(msg) {
                    self.io.entry.deliver_waiting(msg).await;
                }
            }
            SessionMessageType::P2PReliable => self.on_reliable(mid, source, msg).await,
            SessionMessageType::P2PAck => self.on_ack(mid, &msg).await,
            SessionMessageType::RtxRequest => self.on_rtx_request(mid, &msg).await,
            SessionMessageType::RtxReply => self.on_rtx_reply(mid, msg).await,
            SessionMessageType::ChannelDiscoveryReply => self.on_discovery_reply(mid, source, &msg).await,
            SessionMessageType::ChannelJoinRequest => self.on_join_request(source, &msg).await,
            SessionMessageType::ChannelJoinReply => self.on_join_reply(mid, &msg).await,
            SessionMessageType::ChannelMlsWelcome => self.on_welcome(&msg).await,
            SessionMessageType::ChannelMlsAck => self.on_mls_ack(mid).await,
            SessionMessageType::ChannelLeaveRequest | SessionMessageType::SessionClose => {
                return self.on_peer_closed(source, &msg).await;
            }
            // Signs of life, noted by the dispatcher (`PeerSignals`), which also answers the pings
            // an anycast initiator gets; a pong that reaches the task has nothing left to do.
            SessionMessageType::GroupPing | SessionMessageType::GroupPong => {}
            _ => {
                Stats::bump(&self.io.app.stats.unhandled_control);
                tracing::debug!(session = self.io.id, ?kind, "unhandled message on a point-to-point session");
            }
        }
        Flow::Continue
    }

    /// Initiator: the peer answered discovery; it is asked to join (JOIN_REQUEST, re-sent until
    /// answered).
    async fn on_discovery_reply(&mut self, mid: u32, source: Name, msg: &Message) {
        let Phase::Discovering { request_id } = self.phase else {
            Stats::bump(&self.io.app.stats.unhandled_control);
            return;
        };
        if request_id != mid {
            Stats::bump(&self.io.app.stats.unhandled_control);
            return;
        }
        self.io.stop_control(mid);
        let peer = Peer { name: source, conn: msg.incoming_conn() };
        let join_id = channel::nonce();
        let join = channel::join_request(
            &self.io.app,
            SessionType::SessionPointToPoint,
            self.io.id,
            join_id,
            &peer.name,
            peer.conn,
            &self.io.app.name,
            self.mls_enabled,
        );
        let mut join = join;
        // Offer range acknowledgements (a 0.6.0 responder ignores the key and acknowledges each id)
        // and heartbeats (a 0.6.0 responder ignores that key too, and is then never pinged).
        join.metadata.insert(META_ACK_RANGES.to_string(), "1".to_string());
        self.offer_heartbeats(&mut join);
        self.io.send_control(join_id, join).await;
        self.phase = Phase::Joining { request_id: join_id, peer };
    }

    /// Responder: pins the peer on its first JOIN_REQUEST and answers every copy (with MLS, with a
    /// key package).
    async fn on_join_request(&mut self, source: Name, msg: &Message) {
        if self.role != P2pRole::Responder {
            Stats::bump(&self.io.app.stats.unhandled_control);
            return;
        }
        if self.peer.is_none() {
            self.peer = Some(Peer { name: source.clone(), conn: msg.incoming_conn() });
            self.sticky = true;
            self.receiver = Some(ReceiverBuffer::starting_at(0));
            self.phase = Phase::Ready;
            // The initiator takes range acknowledgements only when it offered them (0.6.0 does not).
            self.ack_ranges = msg.metadata.contains_key(META_ACK_RANGES);
            self.accept_heartbeats(source, msg);
        }
        let mut blob = Vec::new();
        if self.mls_enabled {
            match self.responder_key_package() {
                Ok(kp) => blob = kp,
                Err(e) => {
                    self.io.entry.deliver_error(e);
                    return;
                }
            }
        }
        // Answer every copy: a retransmitted request means our reply was lost.
        if let Some(mut reply) = channel::reply_to(&self.io.app, msg, SessionMessageType::ChannelJoinReply, blob) {
            if self.ack_ranges {
                // Accepted: this side takes range acknowledgements too.
                reply.metadata.insert(META_ACK_RANGES.to_string(), "1".to_string());
            }
            self.confirm_heartbeats(&mut reply);
            self.io.send(reply).await;
        }
    }

    /// Initiator: the peer joined; it is pinned, MLS starts if enabled, and queued publishes go
    /// out.
    async fn on_join_reply(&mut self, mid: u32, msg: &Message) {
        let phase = std::mem::replace(&mut self.phase, Phase::Ready);
        let Phase::Joining { request_id, peer } = phase else {
            self.phase = phase;
            return;
        };
        if request_id != mid {
            self.phase = Phase::Joining { request_id, peer };
            Stats::bump(&self.io.app.stats.unhandled_control);
            return;
        }
        self.io.stop_control(mid);
        self.heartbeats_agreed(&peer, msg);
        self.peer = Some(peer);
        self.receiver = Some(ReceiverBuffer::starting_at(0));
        self.ack_ranges = msg.metadata.contains_key(META_ACK_RANGES);
        if !self.mls_enabled {
            self.handshake_done();
        } else if let Err(e) = self.start_mls(msg.blob()).await {
            tracing::debug!(session = self.io.id, error = %e, "MLS setup failed");
            self.io.entry.deliver_error(e);
        }
        self.drain_pending().await;
    }
}

impl SessionKind for P2pTask {
    type Timer = TimerKey;

    fn io(&mut self) -> &mut TaskCore<TimerKey> {
        &mut self.io
    }

    fn outstanding(&self) -> usize {
        self.pending.len() + self.unacked.len()
    }

    /// Publishers wait while too much is buffered (a batch command taken just below the bound
    /// may leave up to `PUBLISH_BATCH_MAX - 1` more pending).
    fn accepts_commands(&self) -> bool {
        self.pending.len() < MAX_PENDING
    }

    async fn on_message(&mut self, msg: Message) -> Flow {
        self.handle_message(msg).await
    }

    async fn on_command(&mut self, cmd: Command, _more: &mut mpsc::Receiver<Command>) {
        match cmd {
            Command::Publish(req) => self.on_publish(req).await,
            Command::PublishBatch(reqs) => self.on_publish_batch(reqs).await,
            Command::SetConfig(cfg) => {
                let (timeout, max_retries, _, _, liveness) = params(&cfg);
                self.timeout = timeout;
                self.max_retries = max_retries;
                self.liveness = liveness;
            }
            Command::Invite(_, done, _) | Command::Remove(_, done) => {
                let _ = done.send(Err(SlimError::Invite("invite and remove need a multicast session".into())));
            }
            Command::Participants(done) => {
                let _ = done.send(Err(SlimError::Invite("participants need a multicast session".into())));
            }
            Command::WatchInitiator { bound_ms, initiator, conn } => self.watch_initiator(bound_ms, initiator, conn),
        }
    }

    async fn on_timer(&mut self, fired: Fired<TimerKey>) {
        if matches!(fired, Fired::Retry { key: TimerKey::Rtx(_), .. } | Fired::Failed { key: TimerKey::Rtx(_) }) {
            self.take_back();
        }
        self.on_timer_inner(fired).await;
        self.lend_if_idle();
    }

    /// Discovery, join or welcome got no answer: the handshake fails as a whole.
    async fn on_control_failed(&mut self, _mid: u32) {
        self.handshake_failed();
    }

    async fn on_stop(&mut self) {
        self.take_back();
        self.flush_acks().await;
        self.send_close_notice().await;
    }

    async fn on_idle(&mut self) {
        self.flush_acks().await;
    }

    async fn on_alarm(&mut self) -> Flow {
        self.on_alarm_inner()
    }
}

impl P2pTask {
    /// [`SessionKind::on_timer`], the window taken back.
    async fn on_timer_inner(&mut self, fired: Fired<TimerKey>) {
        match fired {
            Fired::Failed { key: TimerKey::Acks } => self.on_acks_due().await,
            Fired::Retry { key: TimerKey::Acks, .. } => {}
            Fired::Retry { key: TimerKey::Rtx(mid), .. } => {
                let still_missing = self.receiver.as_ref().is_some_and(|rb| rb.is_missing(mid));
                if !still_missing {
                    self.io.stop_timer(TimerKey::Rtx(mid));
                    return;
                }
                if let Some(peer) = self.peer.clone() {
                    let req = self.io.app.control(
                        &peer.name,
                        Flags::one().forward_to(peer.conn),
                        SessionType::SessionPointToPoint,
                        SessionMessageType::RtxRequest,
                        self.io.id,
                        mid,
                        Vec::new(),
                    );
                    self.io.send(req).await;
                }
            }
            Fired::Failed { key: TimerKey::Rtx(mid) } => {
                if let Some(rb) = self.receiver.as_mut() {
                    rb.on_lost(mid, &mut self.io.released);
                }
                self.flush_released();
            }
            Fired::Failed { key: TimerKey::Handshake } => self.handshake_failed(),
            Fired::Retry { key: TimerKey::Handshake, .. } => {}
        }
    }
}

/// (timeout, max_retries, sticky, mls_enabled, liveness bound) of a point-to-point config.
fn params(cfg: &SessionConfig) -> (Option<Duration>, u32, bool, bool, Duration) {
    match cfg {
        SessionConfig::Anycast { timeout, max_retries, mls_enabled, liveness } => (
            *timeout,
            max_retries.unwrap_or(DEFAULT_P2P_RETRIES),
            false,
            *mls_enabled,
            liveness.unwrap_or(DEFAULT_LIVENESS),
        ),
        SessionConfig::Unicast { timeout, max_retries, mls_enabled, liveness } => (
            *timeout,
            max_retries.unwrap_or(DEFAULT_P2P_RETRIES),
            true,
            *mls_enabled,
            liveness.unwrap_or(DEFAULT_LIVENESS),
        ),
        SessionConfig::Multicast { .. } => (None, 0, false, false, DEFAULT_LIVENESS),
    }
}
