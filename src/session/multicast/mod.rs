//! Multicast (group) sessions (docs/protocol.md "Multicast sessions"): the data plane (sequential ids per
//! producer, producer buffer + beacons, per-producer receiver buffers with immediate RTX) and the
//! channel endpoint (moderator: discovery → join → leave, one task at a time from a FIFO queue;
//! participant: join on request, leave on request).
//!
//! Files: this one holds the task's state, its dispatch and its [`SessionKind`] impl (timers,
//! commands, stop); [`producer`] what this member sends (hold policy, batches, retransmission
//! ring, RTX answers); [`receiver`] what it receives (reorder windows per producer, RTX
//! requests, decryption); [`moderator`] invites and removals; [`participant`] joining and
//! leaving on the moderator's request.
//!
//! One task per session, run by [`super::task::run`] like [`super::point_to_point`]. With MLS the moderator's add
//! task gains a "securing" phase (WELCOME + COMMIT acknowledged) and removal a COMMIT phase;
//! payloads of MULTICAST_MSG / RTX_REPLY are encrypted on the way out, decrypted on delivery.
//! When every member's leaf advertises it ([`crate::mls::BATCH_EXTENSION`]), the publishes already
//! queued when the task encrypts go out as one MLS batch ([`crate::mls::batch`]) carrying
//! consecutive ids; receivers unpack it and order, deduplicate and report loss per id.

mod group_keys;
mod liveness;
mod moderator;
mod participant;
mod producer;
mod receiver;
mod starts;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use super::buffers::ReceiverBuffer;
use super::channel;
use super::context::{AppCore, Stats};
pub use super::entry::Done;
use super::entry::{Command, SessionEntry, SessionTable};
use super::task::{Flow, SessionKind, TaskCore};
use super::timer::Fired;
use super::{PublishRequest, SessionConfig};
use crate::error::SlimError;
use crate::mls::HandshakeSequencer;
use crate::mls::batch::META_MLS_BATCH;
use crate::wire::builders::Flags;
use crate::wire::{FANOUT_MULTICAST, Message, Name, SessionMessageType, SessionType};
use group_keys::GroupKeys;
use moderator::{Current, ModTask};
pub use producer::RTX_REENCRYPT_WINDOW;
use producer::SentRing;

/// First beacon interval after a send (doubles up to [`BEACON_MAX`]).
pub const BEACON_INITIAL: Duration = Duration::from_millis(500);
/// Longest beacon interval.
pub const BEACON_MAX: Duration = Duration::from_secs(30);
/// Publishes a moderator holds before its first participant joined (publishers wait beyond).
pub const MAX_HELD: usize = 4096;
/// Invites / removals waiting behind the current one.
pub const MAX_QUEUED_TASKS: usize = 1024;

/// Which end of the channel this session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MulticastRole {
    /// Created locally with `moderator = true`: invites and removes.
    Moderator,
    /// Created locally without moderation, or by a peer's JOIN_REQUEST.
    Member,
}

/// The timers of a multicast task (besides the core's control re-sends).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum McTimer {
    /// Announces this member's last sent id to the channel (exponential back-off).
    Beacon,
    /// Waiting for this missing id of this producer (RTX_REQUEST on each fire).
    Rtx(Name, u32),
    /// Liveness (docs/liveness.md): moderator pings and checks its members, a member checks its
    /// moderator; fires every quarter of the bound while someone is watched.
    Heartbeat,
    /// The caller's deadline for the invite with this number.
    InviteDeadline(u64),
}

/// The state machine of one multicast session.
pub struct MulticastTask {
    io: TaskCore<McTimer>,
    /// The app's sessions: is another one on the same channel?
    sessions: Weak<SessionTable>,
    channel: Name,
    role: MulticastRole,
    timeout: Duration,
    max_retries: u32,
    /// Sent data messages by id; the ids of one batch share the batch message.
    producer: SentRing,
    /// Per producer: the reorder window of decrypted (MLS) or plain messages.
    receivers: HashMap<Name, ReceiverBuffer<Message>>,
    rtx_conn: HashMap<Name, Option<u64>>,
    held: VecDeque<PublishRequest>,
    /// The connection toward the rest of the group (hub side).
    conn: Option<u64>,
    joined_channel: bool,
    moderator: Option<Name>,
    members: HashMap<Name, Name>,
    tasks: VecDeque<ModTask>,
    current: Option<Current>,
    /// MLS: off, no group yet, a group not carrying traffic (yet), or a ready group.
    keys: GroupKeys,
    /// Moderator: last COMMIT number handed out (1, 2, 3, ...).
    mls_seq: u32,
    /// Moderator: MLS identity of each member (for removal).
    identities: HashMap<Name, Vec<u8>>,
    /// Participant: COMMITs applied strictly in moderator order.
    sequencer: HandshakeSequencer<Vec<u8>>,
    /// Moderator: the liveness bound it advertises (docs/liveness.md).
    liveness: Duration,
    /// Moderator: members that answer heartbeats, and when each was last heard.
    member_watch: Option<crate::session::liveness::MemberWatch>,
    /// Moderator: invitees whose JOIN_REPLY promised to answer heartbeats (until they are added).
    heartbeat_capable: std::collections::HashSet<Name>,
    /// Participant: its moderator's heartbeats, when the moderator sends them.
    moderator_watch: Option<crate::session::liveness::ModeratorWatch>,
    /// Its heartbeat task's targets (kept current by a moderator), and what stops the task when
    /// dropped (`liveness::beat`; a member's greets its moderator, a moderator's its members).
    beat: Option<(Arc<parking_lot::Mutex<liveness::BeatTargets>>, tokio_util::sync::DropGuard)>,
    /// Where the dispatcher was at the last heartbeat look (`DispatchProgress::held_since`).
    dispatch_seen: u64,
    /// Moderator: number of the invite started last (its deadline timer carries it).
    invite_seq: u64,
    /// Moderator: the members that say where their streams start for a newcomer
    /// ([`starts`]).
    positioned: std::collections::HashSet<Name>,
    /// Newcomer: waiting to learn where the other members' streams start (GROUP_STREAM_STARTS);
    /// meanwhile its publishes are held and their messages kept aside in `early`.
    starts_pending: bool,
    early: Vec<Message>,
    /// Payload bytes in `early`.
    early_bytes: usize,
}

impl MulticastTask {
    /// A task for `entry`; `cfg` must be a multicast config.
    pub fn new(
        core: Arc<AppCore>,
        entry: Arc<SessionEntry>,
        sessions: Weak<SessionTable>,
        cfg: &SessionConfig,
        role: MulticastRole,
    ) -> Self {
        let (channel, timeout, max_retries, mls_enabled, liveness) = match cfg {
            SessionConfig::Multicast { topic, timeout, max_retries, mls_enabled, liveness, .. } => {
                (topic.clone(), *timeout, *max_retries, *mls_enabled, *liveness)
            }
            _ => (SessionConfig::default_multicast_topic(), Duration::from_secs(1), 0, false, None),
        };
        MulticastTask {
            io: TaskCore::new(core, entry),
            sessions,
            channel,
            role,
            timeout,
            max_retries,
            producer: SentRing::new(),
            receivers: HashMap::new(),
            rtx_conn: HashMap::new(),
            held: VecDeque::new(),
            conn: None,
            joined_channel: false,
            moderator: None,
            members: HashMap::new(),
            tasks: VecDeque::new(),
            current: None,
            keys: GroupKeys::new(mls_enabled),
            mls_seq: 0,
            identities: HashMap::new(),
            sequencer: HandshakeSequencer::new(MAX_HELD),
            liveness: liveness.unwrap_or(crate::session::liveness::DEFAULT_LIVENESS),
            member_watch: None,
            heartbeat_capable: std::collections::HashSet::new(),
            moderator_watch: None,
            beat: None,
            dispatch_seen: u64::MAX,
            invite_seq: 0,
            positioned: std::collections::HashSet::new(),
            starts_pending: false,
            early: Vec::new(),
            early_bytes: 0,
        }
    }

    /// Handles one command: publishes go out or are held, invites and removals are queued.
    async fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish(req) => {
                if self.can_publish() && self.held.is_empty() {
                    self.publish(req).await;
                } else {
                    // Nobody to send to yet, or the group key is not there yet: flushed later.
                    self.held.push_back(req);
                }
            }
            Command::PublishBatch(reqs) => {
                // The layer sends batches to point-to-point sessions only; taken one by one.
                for req in reqs {
                    if self.can_publish() && self.held.is_empty() {
                        self.publish(req).await;
                    } else {
                        self.held.push_back(req);
                    }
                }
            }
            Command::SetConfig(SessionConfig::Multicast { timeout, max_retries, .. }) => {
                self.timeout = timeout;
                self.max_retries = max_retries;
            }
            Command::SetConfig(_) => {}
            Command::Invite(name, done, deadline) => {
                if self.role != MulticastRole::Moderator {
                    let _ = done.send(Err(SlimError::Invite("only a moderator can invite".into())));
                    return;
                }
                self.tasks.push_back(ModTask::Add { name, done, deadline });
                self.start_next_task().await;
            }
            Command::Remove(name, done) => {
                if self.role != MulticastRole::Moderator {
                    let _ = done.send(Err(SlimError::Invite("only a moderator can remove participants".into())));
                    return;
                }
                self.tasks.push_back(ModTask::Remove { name, done, dead: false });
                self.start_next_task().await;
            }
            Command::Participants(done) => {
                let _ = done.send(Ok(self.participant_names()));
            }
            // Point to point only (a group's liveness is its moderator's heartbeats).
            Command::WatchInitiator { .. } => {}
        }
    }

    /// Handles one inbound message; [`Flow::Leave`] when the moderator removed this member.
    async fn handle_message(&mut self, msg: Message) -> Flow {
        let Some(sh) = msg.session_header() else { return Flow::Continue };
        let mid = sh.message_id;
        let kind = msg.session_message_type();
        let Some(source) = msg.source_name() else { return Flow::Continue };
        self.heard_from(&source, kind, &msg);
        let from_moderator_only = matches!(
            kind,
            SessionMessageType::ChannelMlsWelcome
                | SessionMessageType::ChannelMlsCommit
                | SessionMessageType::ChannelLeaveRequest
                | SessionMessageType::GroupStreamQuery
                | SessionMessageType::GroupStreamStarts
        );
        if from_moderator_only && self.role == MulticastRole::Member && self.moderator.as_ref() != Some(&source) {
            // Membership and key changes come from the moderator that invited us, nobody else.
            Stats::bump(&self.io.app.stats.unhandled_control);
            tracing::debug!(session = self.io.id, ?kind, "group control message not from the moderator: dropped");
            return Flow::Continue;
        }
        match kind {
            SessionMessageType::MulticastMsg | SessionMessageType::RtxReply | SessionMessageType::BeaconMulticast => {
                if self.keeps_early(&source, kind) {
                    self.keep_early(msg);
                } else {
                    self.on_data(kind, source, mid, msg).await;
                }
            }
            SessionMessageType::RtxRequest => self.on_rtx_request(mid, &msg).await,
            SessionMessageType::ChannelJoinRequest => self.on_join_request(source, &msg).await,
            SessionMessageType::ChannelDiscoveryReply => self.on_discovery_reply(mid, source, &msg).await,
            SessionMessageType::ChannelJoinReply => self.on_join_reply(mid, &msg).await,
            SessionMessageType::ChannelLeaveRequest => return self.on_leave_request(&msg).await,
            SessionMessageType::ChannelLeaveReply => self.on_leave_reply(mid).await,
            SessionMessageType::ChannelMlsWelcome => self.on_welcome(&msg).await,
            SessionMessageType::ChannelMlsCommit => self.on_commit(mid, &msg).await,
            SessionMessageType::ChannelMlsAck => self.on_mls_ack(mid, source).await,
            SessionMessageType::GroupPing => self.on_ping(source, &msg).await,
            SessionMessageType::GroupStreamQuery if self.role == MulticastRole::Member => {
                self.on_stream_query(&msg).await;
            }
            SessionMessageType::GroupStreamStarts if self.role == MulticastRole::Member => {
                self.on_stream_starts(&msg).await;
            }
            SessionMessageType::GroupStreamAck if self.role == MulticastRole::Moderator => {
                self.on_stream_ack(mid, source, &msg).await;
            }
            // A sign of life, already noted by `heard_from`.
            SessionMessageType::GroupPong => {}
            _ => {
                Stats::bump(&self.io.app.stats.unhandled_control);
                tracing::debug!(session = self.io.id, ?kind, "unhandled message on a multicast session");
            }
        }
        Flow::Continue
    }

    /// A control message of this session, `kind` with id `mid`, to one member (or the moderator),
    /// through the group's connection.
    fn to_member(&self, member: &Name, kind: SessionMessageType, mid: u32, blob: Vec<u8>) -> Message {
        self.io.app.control(
            member,
            Flags::one().forward_to(self.conn),
            SessionType::SessionMulticast,
            kind,
            self.io.id,
            mid,
            blob,
        )
    }

    /// A producer's data message (single or MLS batch), its retransmission, or its beacon.
    async fn on_data(&mut self, kind: SessionMessageType, source: Name, mid: u32, msg: Message) {
        match kind {
            SessionMessageType::MulticastMsg | SessionMessageType::RtxReply
                if msg.metadata.contains_key(META_MLS_BATCH) =>
            {
                self.on_batch(source, mid, msg, kind == SessionMessageType::RtxReply).await;
            }
            SessionMessageType::MulticastMsg => self.on_payload(source, mid, msg).await,
            SessionMessageType::RtxReply => {
                // The RTX timer keeps running until a readable copy is accepted: an unreadable
                // reply is asked for again at the next fire.
                if !self.io.timer_running(McTimer::Rtx(source.clone(), mid)) {
                    // Not a loss: the id was accepted or already reported lost.
                    Stats::bump(&self.io.app.stats.unexpected_rtx_replies);
                    tracing::debug!(session = self.io.id, %source, mid, "retransmission nobody waits for: dropped");
                    return;
                }
                if msg.slim_header().and_then(|h| h.error).unwrap_or(false) {
                    // Drop point: the producer no longer has the message (its retransmission
                    // ring ran out) -> REPORTED (MessageLost with the id).
                    self.io.stop_timer(McTimer::Rtx(source.clone(), mid));
                    if let Some(rb) = self.receivers.get_mut(&source) {
                        rb.on_lost(mid, &mut self.io.released);
                    }
                    self.flush_released(&source).await;
                } else {
                    self.on_payload(source, mid, msg).await;
                }
            }
            SessionMessageType::BeaconMulticast => {
                let conn = msg.incoming_conn();
                let rb = self.receivers.entry(source.clone()).or_insert_with(ReceiverBuffer::from_first_contact);
                rb.on_beacon(mid, &mut self.io.holes);
                self.request_holes(&source, conn).await;
            }
            _ => {}
        }
    }
}

impl SessionKind for MulticastTask {
    type Timer = McTimer;

    fn io(&mut self) -> &mut TaskCore<McTimer> {
        &mut self.io
    }

    fn outstanding(&self) -> usize {
        self.held.len()
    }

    /// Publishers and inviters wait while too many publishes or invites are held.
    fn accepts_commands(&self) -> bool {
        self.held.len() < MAX_HELD && self.tasks.len() < MAX_QUEUED_TASKS
    }

    async fn on_message(&mut self, msg: Message) -> Flow {
        self.handle_message(msg).await
    }

    async fn on_command(&mut self, cmd: Command, more: &mut mpsc::Receiver<Command>) {
        match cmd {
            Command::Publish(req) if self.batching() => {
                if let Some(follow) = self.publish_queued(req, more).await {
                    self.handle_command(follow).await;
                }
            }
            cmd => self.handle_command(cmd).await,
        }
    }

    async fn on_timer(&mut self, fired: Fired<McTimer>) {
        match fired {
            Fired::Retry { key: McTimer::Beacon, .. } => {
                let sent = self.io.entry.next_id.load(Ordering::Relaxed);
                if sent > 0 {
                    let beacon = self.io.app.control(
                        &self.channel,
                        Flags::all(FANOUT_MULTICAST),
                        SessionType::SessionMulticast,
                        SessionMessageType::BeaconMulticast,
                        self.io.id,
                        sent - 1,
                        Vec::new(),
                    );
                    self.io.send(beacon).await;
                }
            }
            Fired::Failed { key: McTimer::Beacon } => {}
            Fired::Retry { key: McTimer::Rtx(producer, mid), .. } => {
                let missing = self.receivers.get(&producer).is_some_and(|rb| rb.is_missing(mid));
                if !missing {
                    self.io.stop_timer(McTimer::Rtx(producer, mid));
                    return;
                }
                let conn = self.rtx_conn.get(&producer).copied().flatten();
                self.io.send(self.rtx_request(&producer, mid, conn)).await;
            }
            Fired::Retry { key: McTimer::Heartbeat, .. } | Fired::Failed { key: McTimer::Heartbeat } => {
                self.on_heartbeat().await;
            }
            Fired::Retry { key: McTimer::InviteDeadline(_), .. } => {}
            Fired::Failed { key: McTimer::InviteDeadline(seq) } => self.on_invite_deadline(seq).await,
            Fired::Failed { key: McTimer::Rtx(producer, mid) } => {
                // Drop point: no readable retransmission came after every retry -> REPORTED
                // (MessageLost with the id, in its place in the producer's stream).
                tracing::debug!(session = self.io.id, %producer, mid, "no retransmission came: message lost");
                if let Some(rb) = self.receivers.get_mut(&producer) {
                    rb.on_lost(mid, &mut self.io.released);
                }
                self.flush_released(&producer).await;
            }
        }
    }

    /// The current invite or removal gives up; the queue moves on (a failing invite must not block
    /// the ones queued behind it).
    async fn on_control_failed(&mut self, mid: u32) {
        // A member that does not answer where its stream starts does not fail the invite; a
        // newcomer that does not acknowledge its positions does, and is asked to leave.
        if self.position_given_up(Some(mid), None).await || self.announcement_failed(mid) {
            self.start_next_task().await;
            return;
        }
        if let Some(cur) = self.current.take() {
            if cur.owns(mid) {
                cur.finish(Err(SlimError::Invite("no answer from the participant".into())));
            } else {
                self.current = Some(cur);
            }
        }
        self.start_next_task().await;
    }

    /// Fails what waits on the session; a moderator's deleted session closes the group.
    async fn on_stop(&mut self) {
        if let Some(cur) = self.current.take() {
            cur.finish(Err(SlimError::SessionClosed));
        }
        if self.role == MulticastRole::Moderator && !self.io.app.shutdown.is_cancelled() {
            // Deleting the moderator's session closes the group (what slim-bindings 0.6.0's DELETE_GROUP does):
            // one best-effort LEAVE_REQUEST per member, no retries since nobody waits for it.
            let members: Vec<Name> = self.members.values().cloned().collect();
            for member in members {
                let leave =
                    self.to_member(&member, SessionMessageType::ChannelLeaveRequest, channel::nonce(), Vec::new());
                self.io.send(leave).await;
            }
        }
        for t in self.tasks.drain(..) {
            let (ModTask::Add { done, .. } | ModTask::Remove { done, .. }) = t;
            let _ = done.send(Err(SlimError::SessionClosed));
        }
    }
}
