//! Multicast (group) sessions (spec §3.7, §3.8): the data plane (sequential ids per
//! producer, producer buffer + beacons, per-producer receiver buffers with immediate RTX) and the
//! channel endpoint (moderator: discovery → join → leave, one task at a time from a FIFO queue;
//! participant: join on request, leave on request).
//!
//! One task per session, same shape as [`super::point_to_point`]. With MLS the moderator's add
//! task gains a "securing" phase (WELCOME + COMMIT acknowledged) and removal a COMMIT phase;
//! payloads of MULTICAST_MSG / RTX_REPLY are encrypted on the way out, decrypted on delivery.
//! When every member's leaf advertises it ([`crate::mls::BATCH_EXTENSION`]), the publishes already
//! queued when the task encrypts go out as one MLS batch ([`crate::mls::batch`]) carrying
//! consecutive ids; receivers unpack it and order, deduplicate and report loss per id.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::buffers::{PRODUCER_BUFFER_SLOTS, ReceiverBuffer, Released};
use super::channel;
use super::context::{AppCore, Stats, Target, data_message};
use super::layer::{Command, SessionEntry, SessionLayer};
use super::timer::{Fired, TimerPolicy, TimerSet};
use super::{CONTROL_MAX_RETRIES, CONTROL_RETRY_INTERVAL, PublishRequest, SessionConfig};
use crate::error::SlimError;
use crate::mls::batch::{self, BatchItem, MAX_BATCH_BYTES, MAX_BATCH_ITEMS, META_MLS_BATCH};
use crate::mls::{Admission, CommitOutcome, HandshakeSequencer, MlsState, interceptor};
use crate::wire::builders::{self, Flags, PublishSpec};
use crate::wire::{self, FANOUT_MULTICAST, Message, Name, SessionMessageType, SessionType};

/// First beacon interval after a send (doubles up to [`BEACON_MAX`]).
pub const BEACON_INITIAL: Duration = Duration::from_millis(500);
/// Longest beacon interval.
pub const BEACON_MAX: Duration = Duration::from_secs(30);
/// Publishes a moderator holds before its first participant joined (publishers wait beyond).
pub const MAX_HELD: usize = 4096;
/// Invites / removals waiting behind the current one.
pub const MAX_QUEUED_TASKS: usize = 1024;

/// Completion of an invite or removal.
pub type Done = oneshot::Sender<Result<(), SlimError>>;

/// How recent a message of an earlier MLS epoch must be for its RTX_REPLY to be re-encrypted at
/// the current epoch rather than resent as stored. Members added since it was sent then read it:
/// what was published while their invites were in flight (a 0.6.0 moderator lets its app publish
/// then and sends its invites back to back; its members ask after their WELCOME, prompted by the
/// producer's beacon, and 0.6.0 producers re-encrypt every retransmission). Older messages keep
/// the epoch they were sent in, unreadable to anyone who joined since.
pub const RTX_REENCRYPT_WINDOW: Duration = Duration::from_secs(10);

/// Whether the retransmission of a message encrypted at `sent_epoch`, `age` ago, is encrypted
/// again at `current_epoch`. Within the same epoch always: receivers decrypt on arrival and keep
/// the keys of only the last few hundred generations of a sender, so the stored ciphertext of an
/// older message would no longer open; a fresh encryption is readable by exactly the same
/// members. Across epochs only within [`RTX_REENCRYPT_WINDOW`].
fn reencrypt_for_rtx(sent_epoch: u64, current_epoch: u64, age: Duration) -> bool {
    sent_epoch == current_epoch || (sent_epoch < current_epoch && age <= RTX_REENCRYPT_WINDOW)
}

/// A published message kept for retransmission.
struct Produced {
    /// As sent (MLS groups: encrypted).
    msg: Message,
    /// MLS groups: the epoch the message was encrypted in, and its plaintext blob.
    clear: Option<(u64, Vec<u8>)>,
    sent_at: Instant,
}

/// Which end of the channel this session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MulticastRole {
    /// Created locally with `moderator = true`: invites and removes.
    Moderator,
    /// Created locally without moderation, or by a peer's JOIN_REQUEST.
    Member,
}

/// The last [`PRODUCER_BUFFER_SLOTS`] data messages this member sent, kept for retransmission.
/// One slot per wire message: an MLS batch holds all of its ids in one slot, so batching does not
/// shorten how far back (in ids) a loss can be repaired.
struct SentRing {
    /// (first id, id count, message), oldest first.
    slots: VecDeque<(u32, u32, Produced)>,
}

impl SentRing {
    fn new() -> Self {
        SentRing { slots: VecDeque::with_capacity(PRODUCER_BUFFER_SLOTS) }
    }

    fn push(&mut self, first: u32, count: u32, msg: Produced) {
        if self.slots.len() >= PRODUCER_BUFFER_SLOTS {
            self.slots.pop_front();
        }
        self.slots.push_back((first, count, msg));
    }

    /// The wire message that carried `id`, if still kept (newest first: RTX asks for recent ids).
    fn get(&self, id: u32) -> Option<&Produced> {
        self.slots.iter().rev().find(|(first, count, _)| id.wrapping_sub(*first) < *count).map(|(_, _, m)| m)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum McTimer {
    Beacon,
    Rtx(Name, u32),
    Control(u32),
}

enum ModTask {
    Add { name: Name, done: Done },
    Remove { name: Name, done: Done },
}

enum Current {
    Discovering {
        request_id: u32,
        done: Done,
    },
    Joining {
        request_id: u32,
        invitee: Name,
        done: Done,
    },
    /// MLS add: waiting for the WELCOME ACK and the COMMIT ACKs of the earlier members.
    Securing {
        welcome_id: Option<u32>,
        commit: Option<CommitAcks>,
        invitee: Name,
        identity: Vec<u8>,
        done: Done,
    },
    /// MLS remove: waiting for every member's COMMIT ACK before the LEAVE_REQUEST.
    RemovingCommit {
        commit: CommitAcks,
        invitee: Name,
        done: Done,
    },
    Leaving {
        request_id: u32,
        invitee: Name,
        done: Done,
    },
}

/// A broadcast COMMIT and the members that have not acknowledged it yet.
struct CommitAcks {
    id: u32,
    waiting_for: std::collections::HashSet<Name>,
}

impl Current {
    /// True when the control message `mid` belongs to this task.
    fn owns(&self, mid: u32) -> bool {
        match self {
            Current::Discovering { request_id, .. }
            | Current::Joining { request_id, .. }
            | Current::Leaving { request_id, .. } => *request_id == mid,
            Current::Securing { welcome_id, commit, .. } => {
                *welcome_id == Some(mid) || commit.as_ref().is_some_and(|c| c.id == mid)
            }
            Current::RemovingCommit { commit, .. } => commit.id == mid,
        }
    }

    fn finish(self, result: Result<(), SlimError>) {
        let done = match self {
            Current::Discovering { done, .. }
            | Current::Joining { done, .. }
            | Current::Securing { done, .. }
            | Current::RemovingCommit { done, .. }
            | Current::Leaving { done, .. } => done,
        };
        let _ = done.send(result);
    }
}

/// The state machine of one multicast session.
pub struct MulticastTask {
    core: Arc<AppCore>,
    entry: Arc<SessionEntry>,
    layer: Weak<SessionLayer>,
    id: u32,
    channel: Name,
    role: MulticastRole,
    timeout: Duration,
    max_retries: u32,
    /// Sent data messages by id; the ids of one batch share the batch message.
    producer: SentRing,
    /// Per producer: the reorder window of decrypted (MLS) or plain messages.
    receivers: HashMap<Name, ReceiverBuffer<Message>>,
    rtx_conn: HashMap<Name, Option<u64>>,
    timers: TimerSet<McTimer>,
    held: VecDeque<PublishRequest>,
    /// The connection toward the rest of the group (hub side).
    conn: Option<u64>,
    joined_channel: bool,
    moderator: Option<Name>,
    members: HashMap<Name, Name>,
    tasks: VecDeque<ModTask>,
    current: Option<Current>,
    control: HashMap<u32, Message>,
    fired: Vec<Fired<McTimer>>,
    released: Vec<Released<Message>>,
    holes: Vec<u32>,
    mls_enabled: bool,
    /// Group state once created (moderator) or joined (participant).
    mls: Option<MlsState>,
    /// Traffic may flow: moderator after its first secured add, participant after its WELCOME.
    mls_ready: bool,
    /// Moderator: last COMMIT number handed out (1, 2, 3, ...).
    mls_seq: u32,
    /// Moderator: MLS identity of each member (for removal).
    identities: HashMap<Name, Vec<u8>>,
    /// Participant: COMMITs applied strictly in moderator order.
    sequencer: HandshakeSequencer<Vec<u8>>,
    /// Participant: key package sent in JOIN_REPLY (re-sent unchanged).
    key_package: Option<Vec<u8>>,
}

impl MulticastTask {
    /// A task for `entry`; `cfg` must be a multicast config.
    pub fn new(
        core: Arc<AppCore>,
        entry: Arc<SessionEntry>,
        layer: Weak<SessionLayer>,
        cfg: &SessionConfig,
        role: MulticastRole,
    ) -> Self {
        let (channel, timeout, max_retries, mls_enabled) = match cfg {
            SessionConfig::Multicast { topic, timeout, max_retries, mls_enabled, .. } => {
                (topic.clone(), *timeout, *max_retries, *mls_enabled)
            }
            _ => (SessionConfig::default_multicast_topic(), Duration::from_secs(1), 0, false),
        };
        MulticastTask {
            id: entry.id,
            core,
            entry,
            layer,
            channel,
            role,
            timeout,
            max_retries,
            producer: SentRing::new(),
            receivers: HashMap::new(),
            rtx_conn: HashMap::new(),
            timers: TimerSet::new(),
            held: VecDeque::new(),
            conn: None,
            joined_channel: false,
            moderator: None,
            members: HashMap::new(),
            tasks: VecDeque::new(),
            current: None,
            control: HashMap::new(),
            fired: Vec::new(),
            released: Vec::new(),
            holes: Vec::new(),
            mls_enabled,
            mls: None,
            mls_ready: false,
            mls_seq: 0,
            identities: HashMap::new(),
            sequencer: HandshakeSequencer::new(MAX_HELD),
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
            let accept = self.held.len() < MAX_HELD && self.tasks.len() < MAX_QUEUED_TASKS;
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
                    Some(Command::Publish(req)) if self.batching() => {
                        let follow = self.publish_queued(req, &mut commands).await;
                        if let Some(c) = follow {
                            self.on_command(c).await;
                        }
                    }
                    Some(c) => self.on_command(c).await,
                    None => break,
                },
            }
        }
        if let Some(cur) = self.current.take() {
            cur.finish(Err(SlimError::SessionClosed));
        }
        if self.role == MulticastRole::Moderator && !self.core.shutdown.is_cancelled() {
            // Deleting the moderator's session closes the group (Δ0.6 DELETE_GROUP semantics):
            // one best-effort LEAVE_REQUEST per member, no retries since nobody waits for it.
            let members: Vec<Name> = self.members.values().cloned().collect();
            for member in members {
                let leave = self.core.control(
                    &member,
                    Flags::one().forward_to(self.conn),
                    SessionType::SessionMulticast,
                    SessionMessageType::ChannelLeaveRequest,
                    self.id,
                    channel::nonce(),
                    Vec::new(),
                );
                self.send(leave).await;
            }
        }
        for t in self.tasks.drain(..) {
            let (ModTask::Add { done, .. } | ModTask::Remove { done, .. }) = t;
            let _ = done.send(Err(SlimError::SessionClosed));
        }
    }

    async fn send(&self, msg: Message) {
        if let Err(e) = self.core.send(msg).await {
            tracing::debug!(session = self.id, error = %e, "could not hand a message to the node");
        }
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish(req) => {
                if self.can_publish() && self.held.is_empty() {
                    self.publish(req).await;
                } else {
                    // Nobody to send to yet, or the group key is not there yet: flushed later.
                    self.held.push_back(req);
                }
            }
            Command::SetConfig(SessionConfig::Multicast { timeout, max_retries, .. }) => {
                self.timeout = timeout;
                self.max_retries = max_retries;
            }
            Command::SetConfig(_) => {}
            Command::Invite(name, done) => {
                if self.role != MulticastRole::Moderator {
                    let _ = done.send(Err(SlimError::Invite("only a moderator can invite".into())));
                    return;
                }
                self.tasks.push_back(ModTask::Add { name, done });
                self.start_next_task().await;
            }
            Command::Remove(name, done) => {
                if self.role != MulticastRole::Moderator {
                    let _ = done.send(Err(SlimError::Invite("only a moderator can remove participants".into())));
                    return;
                }
                self.tasks.push_back(ModTask::Remove { name, done });
                self.start_next_task().await;
            }
        }
    }

    /// Whether an application publish may go out now, or must wait in `held`.
    ///
    /// Hold policy (what a caller of `invite` then `publish` expects: the message reaches every
    /// participant invited before it, even without waiting for the joins):
    /// - Moderator: holds while it has nobody to send to (channel not joined yet), while MLS is
    ///   not up, and while any invite is queued or in progress. With MLS every add moves the group
    ///   to a new epoch, and a member that joins at a later epoch cannot decrypt what was
    ///   encrypted before; without MLS a member that subscribes late only recovers the last
    ///   message through the beacon. It also holds while an MLS removal COMMIT is unacknowledged,
    ///   so no member gets ciphertext of an epoch it has not reached yet. The held messages go
    ///   out, in order, as soon as the queue of invites drains. A failing invite bounds the hold:
    ///   its control timer gives up after [`CONTROL_MAX_RETRIES`] retries and the queue moves on.
    /// - Other members: hold only until they joined (MLS: until their WELCOME is applied). They
    ///   cannot see the moderator's queue, so what they publish while an invite is in flight is
    ///   encrypted at their current epoch: the newcomer of a later epoch does not read that copy,
    ///   only a retransmission it asks for, re-encrypted while recent ([`RTX_REENCRYPT_WINDOW`]).
    fn can_publish(&self) -> bool {
        (self.role != MulticastRole::Moderator || (self.joined_channel && !self.membership_changing()))
            && (!self.mls_enabled || self.mls_ready)
    }

    /// Moderator: an invite is queued or running, or an MLS removal commit is not yet acknowledged.
    fn membership_changing(&self) -> bool {
        let running = matches!(
            self.current,
            Some(
                Current::Discovering { .. }
                    | Current::Joining { .. }
                    | Current::Securing { .. }
                    | Current::RemovingCommit { .. }
            )
        );
        running || self.tasks.iter().any(|t| matches!(t, ModTask::Add { .. }))
    }

    async fn flush_held(&mut self) {
        while self.can_publish() {
            let Some(req) = self.held.pop_front() else { break };
            let Some(dest) = req.dest.clone().filter(|_| self.group_reads_batches()) else {
                self.publish(req).await;
                continue;
            };
            let mut bytes = req.blob.len();
            let mut reqs = vec![req];
            while reqs.len() < MAX_BATCH_ITEMS
                && bytes < MAX_BATCH_BYTES
                && self.held.front().is_some_and(|next| next.dest.as_ref() == Some(&dest))
            {
                let Some(next) = self.held.pop_front() else { break };
                bytes += next.blob.len();
                reqs.push(next);
            }
            if reqs.len() == 1 {
                for req in reqs {
                    self.publish(req).await;
                }
            } else {
                self.publish_batch(dest, reqs).await;
            }
        }
    }

    /// True when publishes may go out now as MLS batches: nothing is held back and every
    /// member of the group's current epoch reads batches.
    fn batching(&mut self) -> bool {
        self.held.is_empty() && self.can_publish() && self.group_reads_batches()
    }

    /// True when this is an MLS group whose every member (current epoch) reads batches.
    fn group_reads_batches(&mut self) -> bool {
        self.mls_enabled && self.mls.as_mut().is_some_and(MlsState::group_reads_batches)
    }

    /// Publishes `first` together with the group publishes already waiting behind it (never
    /// waiting for more): one MLS batch when there are several. Returns the command that ended
    /// the batch, for the caller to handle next.
    async fn publish_queued(
        &mut self,
        first: PublishRequest,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Option<Command> {
        let Some(dest) = first.dest.clone() else {
            self.publish(first).await;
            return None;
        };
        let mut bytes = first.blob.len();
        let mut reqs = vec![first];
        let mut follow = None;
        while reqs.len() < MAX_BATCH_ITEMS && bytes < MAX_BATCH_BYTES {
            match commands.try_recv() {
                Ok(Command::Publish(req)) if req.dest.as_ref() == Some(&dest) => {
                    bytes += req.blob.len();
                    reqs.push(req);
                }
                Ok(other) => {
                    follow = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        if reqs.len() == 1 {
            for req in reqs {
                self.publish(req).await;
            }
        } else {
            self.publish_batch(dest, reqs).await;
        }
        follow
    }

    /// Sends `reqs` (2 ..= [`MAX_BATCH_ITEMS`] group publishes to `dest`) as one MLS batch
    /// carrying consecutive message ids.
    async fn publish_batch(&mut self, dest: Name, reqs: Vec<PublishRequest>) {
        let count = reqs.len() as u32;
        let first = self.entry.next_id.fetch_add(count, Ordering::Relaxed);
        let items: Vec<BatchItem> = reqs
            .into_iter()
            .map(|req| {
                let mut metadata = req.metadata.unwrap_or_default();
                if crate::telemetry::otel::active() {
                    crate::telemetry::otel::hop(crate::telemetry::otel::Hop::Publish, &mut metadata, "");
                }
                BatchItem {
                    payload_type: req.payload_type.unwrap_or_else(|| "msg".into()),
                    metadata,
                    blob: Vec::from(req.blob),
                }
            })
            .collect();
        let plaintext = match batch::encode(&items) {
            Ok(p) => p,
            Err(e) => {
                self.entry.deliver_error(SlimError::Mls(e.to_string()));
                return;
            }
        };
        let spec = PublishSpec {
            source: &self.core.name,
            destination: &dest,
            flags: Flags { fanout: FANOUT_MULTICAST, recv_from: None, forward_to: None, error: None },
            session_type: SessionType::SessionMulticast,
            message_type: SessionMessageType::MulticastMsg,
            session_id: self.id,
            message_id: first,
            original_names: true,
            content_type: "msg",
        };
        let meta = HashMap::from([(META_MLS_BATCH.to_string(), count.to_string())]);
        let mut msg = builders::publish(&spec, plaintext, meta);
        let Some(mls) = self.mls.as_mut() else {
            self.entry.deliver_error(SlimError::Mls("no group".into()));
            return;
        };
        let epoch = mls.epoch();
        let plain = msg.blob().to_vec();
        if let Err(e) = interceptor::encrypt_outbound(mls, &mut msg) {
            self.entry.deliver_error(SlimError::Mls(e.to_string()));
            return;
        }
        self.producer.push(
            first,
            count,
            Produced { msg: msg.clone(), clear: Some((epoch, plain)), sent_at: Instant::now() },
        );
        self.timers.start(McTimer::Beacon, TimerPolicy::exponential(BEACON_INITIAL, BEACON_MAX), Instant::now());
        self.send(msg).await;
    }

    async fn publish(&mut self, req: PublishRequest) {
        let (target, fanout) = match &req.dest {
            Some(dest) => (Target { name: dest.clone(), forward_to: None }, FANOUT_MULTICAST),
            None => match Target::of(&req) {
                Ok(t) => (t, 1),
                Err(e) => {
                    self.entry.deliver_error(e);
                    return;
                }
            },
        };
        let mid = self.entry.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = data_message(
            &self.core.name,
            &target,
            fanout,
            SessionType::SessionMulticast,
            SessionMessageType::MulticastMsg,
            self.id,
            mid,
            req,
        );
        let mut clear = None;
        if let Some(mls) = self.mls.as_mut() {
            let epoch = mls.epoch();
            let plain = msg.blob().to_vec();
            if let Err(e) = interceptor::encrypt_outbound(mls, &mut msg) {
                self.entry.deliver_error(SlimError::Mls(e.to_string()));
                return;
            }
            clear = Some((epoch, plain));
        }
        self.producer.push(mid, 1, Produced { msg: msg.clone(), clear, sent_at: Instant::now() });
        self.timers.start(McTimer::Beacon, TimerPolicy::exponential(BEACON_INITIAL, BEACON_MAX), Instant::now());
        self.send(msg).await;
    }

    async fn send_control(&mut self, mid: u32, msg: Message) {
        self.control.insert(mid, msg.clone());
        self.timers.start(
            McTimer::Control(mid),
            TimerPolicy::constant(CONTROL_RETRY_INTERVAL, CONTROL_MAX_RETRIES),
            Instant::now(),
        );
        self.send(msg).await;
    }

    fn stop_control(&mut self, mid: u32) {
        self.timers.stop(&McTimer::Control(mid));
        self.control.remove(&mid);
    }

    /// Starts queued invites / removals until one is running (or none is left), then sends
    /// whatever the hold policy ([`Self::can_publish`]) now lets out.
    async fn start_next_task(&mut self) {
        while self.current.is_none() {
            let Some(task) = self.tasks.pop_front() else { break };
            match task {
                ModTask::Add { name, done } => {
                    let request_id = channel::nonce();
                    let msg = self.core.control(
                        &name,
                        Flags::one(),
                        SessionType::SessionMulticast,
                        SessionMessageType::ChannelDiscoveryRequest,
                        self.id,
                        request_id,
                        Vec::new(),
                    );
                    self.send_control(request_id, msg).await;
                    self.current = Some(Current::Discovering { request_id, done });
                }
                ModTask::Remove { name, done } => {
                    let invitee = if name.has_any_id() { self.members.get(&name).cloned() } else { Some(name.clone()) };
                    let Some(invitee) = invitee.filter(|n| self.members.contains_key(&n.without_id())) else {
                        let _ = done.send(Err(SlimError::Invite(format!("participant not found: {name}"))));
                        continue;
                    };
                    if self.mls_enabled {
                        match self.remove_commit(&invitee).await {
                            Ok(commit) => self.current = Some(Current::RemovingCommit { commit, invitee, done }),
                            Err(e) => {
                                let _ = done.send(Err(e));
                            }
                        }
                        continue;
                    }
                    self.send_leave(invitee, done).await;
                }
            }
        }
        self.flush_held().await;
    }

    async fn send_leave(&mut self, invitee: Name, done: Done) {
        let request_id = channel::nonce();
        let msg = self.core.control(
            &invitee,
            Flags::one().forward_to(self.conn),
            SessionType::SessionMulticast,
            SessionMessageType::ChannelLeaveRequest,
            self.id,
            request_id,
            Vec::new(),
        );
        self.send_control(request_id, msg).await;
        self.current = Some(Current::Leaving { request_id, invitee, done });
    }

    /// Broadcasts a COMMIT to the channel; every name in `members` must acknowledge it.
    async fn broadcast_commit(&mut self, commit: Vec<u8>, members: std::collections::HashSet<Name>) -> CommitAcks {
        self.mls_seq += 1;
        let id = self.mls_seq;
        let msg = self.core.control(
            &self.channel,
            Flags::all(wire::FANOUT_CHANNEL_BROADCAST),
            SessionType::SessionMulticast,
            SessionMessageType::ChannelMlsCommit,
            self.id,
            id,
            commit,
        );
        self.send_control(id, msg).await;
        CommitAcks { id, waiting_for: members }
    }

    /// MLS removal: the commit goes to everyone, the removed member included.
    async fn remove_commit(&mut self, invitee: &Name) -> Result<CommitAcks, SlimError> {
        let identity = self
            .identities
            .get(invitee)
            .cloned()
            .ok_or_else(|| SlimError::Invite(format!("no MLS identity for {invitee}")))?;
        let mls = self.mls.as_mut().ok_or_else(|| SlimError::Mls("no group".into()))?;
        let commit = mls.remove_member(&identity).map_err(|e| SlimError::Mls(e.to_string()))?;
        let everyone = self.members.values().cloned().collect();
        Ok(self.broadcast_commit(commit, everyone).await)
    }

    /// MLS add after JOIN_REPLY: WELCOME to the newcomer, COMMIT to the earlier members.
    async fn secure_add(&mut self, invitee: Name, key_package: &[u8], done: Done) {
        let mls_err = |e: crate::mls::MlsError| SlimError::Mls(e.to_string());
        let result = (|| {
            if self.mls.is_none() {
                let mut state =
                    MlsState::new(self.core.provider.clone(), self.core.verifier.clone()).map_err(mls_err)?;
                state.create_group().map_err(mls_err)?;
                self.mls = Some(state);
            }
            let mls = self.mls.as_mut().ok_or_else(|| SlimError::Mls("no group".into()))?;
            mls.add_member(key_package).map_err(mls_err)
        })();
        let added = match result {
            Ok(a) => a,
            Err(e) => {
                let _ = done.send(Err(e));
                self.start_next_task().await;
                return;
            }
        };
        let earlier: std::collections::HashSet<Name> = self.members.values().cloned().collect();
        let commit = if earlier.is_empty() {
            self.mls_seq += 1;
            None
        } else {
            Some(self.broadcast_commit(added.commit, earlier).await)
        };
        let commit_id = commit.as_ref().map_or(self.mls_seq, |c| c.id);
        let welcome_id = channel::nonce();
        let mut welcome = self.core.control(
            &invitee,
            Flags::one().forward_to(self.conn),
            SessionType::SessionMulticast,
            SessionMessageType::ChannelMlsWelcome,
            self.id,
            welcome_id,
            added.welcome,
        );
        welcome.metadata.insert(wire::META_MLS_INIT_COMMIT_ID.to_string(), commit_id.to_string());
        self.send_control(welcome_id, welcome).await;
        self.current = Some(Current::Securing {
            welcome_id: Some(welcome_id),
            commit,
            invitee,
            identity: added.member_identity,
            done,
        });
    }

    /// Moderator: a member acknowledged a WELCOME or COMMIT of the current task.
    async fn on_mls_ack(&mut self, mid: u32, source: Name) {
        let Some(cur) = self.current.take() else {
            Stats::bump(&self.core.stats.unhandled_control);
            return;
        };
        match cur {
            Current::Securing { mut welcome_id, mut commit, invitee, identity, done } => {
                if welcome_id == Some(mid) && source == invitee {
                    self.stop_control(mid);
                    welcome_id = None;
                }
                if let Some(c) = commit.as_mut()
                    && c.id == mid
                {
                    c.waiting_for.remove(&source);
                    if c.waiting_for.is_empty() {
                        self.stop_control(mid);
                        commit = None;
                    }
                }
                if welcome_id.is_none() && commit.is_none() {
                    self.members.insert(invitee.without_id(), invitee.clone());
                    self.identities.insert(invitee, identity);
                    self.mls_ready = true;
                    let _ = done.send(Ok(()));
                    self.flush_held().await;
                    self.start_next_task().await;
                } else {
                    self.current = Some(Current::Securing { welcome_id, commit, invitee, identity, done });
                }
            }
            Current::RemovingCommit { mut commit, invitee, done } if commit.id == mid => {
                commit.waiting_for.remove(&source);
                if commit.waiting_for.is_empty() {
                    self.stop_control(mid);
                    self.identities.remove(&invitee);
                    self.send_leave(invitee, done).await;
                    // Every member is at the new epoch: held publishes may go out.
                    self.flush_held().await;
                } else {
                    self.current = Some(Current::RemovingCommit { commit, invitee, done });
                }
            }
            other => {
                self.current = Some(other);
                Stats::bump(&self.core.stats.unhandled_control);
            }
        }
    }

    /// Participant: joins the group from the WELCOME (first one only) and acknowledges it.
    async fn on_welcome(&mut self, msg: &Message) {
        if !self.mls_ready {
            let init_id = msg.metadata.get(wire::META_MLS_INIT_COMMIT_ID).and_then(|v| v.parse::<u32>().ok());
            let applied = match (self.mls.as_mut(), init_id) {
                (Some(mls), Some(init_id)) => {
                    mls.process_welcome(msg.blob()).map(|_| self.sequencer.on_welcome(init_id)).is_ok()
                }
                _ => false,
            };
            if !applied {
                Stats::bump(&self.core.stats.mls_failures);
                tracing::debug!(session = self.id, "welcome could not be applied");
                return;
            }
            self.mls_ready = true;
            self.apply_ready_commits();
            if let Some(conn) = self.conn {
                self.join_channel(conn, false).await;
            }
        }
        if let Some(ack) = channel::reply_to(&self.core, msg, SessionMessageType::ChannelMlsAck, Vec::new()) {
            self.send(ack).await;
        }
        self.flush_held().await;
    }

    /// Participant: orders and applies a COMMIT, then acknowledges it.
    async fn on_commit(&mut self, mid: u32, msg: &Message) {
        match self.sequencer.offer(mid, msg.blob().to_vec()) {
            Admission::Accepted | Admission::Stale => {
                // Stale: already applied, our ACK was lost; acknowledging again is harmless.
                self.apply_ready_commits();
                if let Some(ack) = channel::reply_to(&self.core, msg, SessionMessageType::ChannelMlsAck, Vec::new()) {
                    self.send(ack).await;
                }
            }
            // A newcomer also hears the COMMIT that added it, before its WELCOME: nothing to apply.
            Admission::NoWelcomeYet => Stats::bump(&self.core.stats.unhandled_control),
            Admission::Full => Stats::bump(&self.core.stats.mls_failures),
        }
    }

    fn apply_ready_commits(&mut self) {
        while let Some((id, commit)) = self.sequencer.next_ready() {
            let Some(mls) = self.mls.as_mut() else { return };
            match mls.process_commit(&commit) {
                Ok(CommitOutcome::Applied) => {}
                Ok(CommitOutcome::Removed) => self.mls_ready = false,
                Err(e) => {
                    Stats::bump(&self.core.stats.mls_failures);
                    tracing::debug!(session = self.id, commit = id, error = %e, "commit could not be applied");
                }
            }
        }
    }

    /// Subscribes the channel toward the group and routes it out through `conn` (§3.8 `join`).
    async fn join_channel(&mut self, conn: u64, creation: bool) {
        if self.joined_channel {
            return;
        }
        let mut sub = builders::subscribe(&self.core.name, &self.channel, Flags::one().forward_to(Some(conn)));
        sub.metadata.insert(wire::META_CHANNEL_SUBSCRIPTION.to_string(), "true".to_string());
        if creation {
            sub.metadata.insert(wire::META_CHANNEL_CREATION.to_string(), "true".to_string());
        }
        self.send(sub).await;
        self.send(channel::set_route(&self.core, &self.channel, conn)).await;
        self.joined_channel = true;
    }

    /// True when another session of this app is on the same channel: the node keeps one
    /// subscription per (name, connection), so leaving must not take it from that session.
    fn channel_shared(&self) -> bool {
        self.layer.upgrade().is_some_and(|l| l.channel_shared(self.id, &self.channel))
    }

    async fn leave_channel(&mut self) {
        let Some(conn) = self.conn else { return };
        if self.channel_shared() {
            self.joined_channel = false;
            return;
        }
        if self.joined_channel {
            let mut unsub = builders::unsubscribe(&self.core.name, &self.channel, Flags::one().forward_to(Some(conn)));
            unsub.metadata.insert(wire::META_CHANNEL_SUBSCRIPTION.to_string(), "true".to_string());
            self.send(unsub).await;
            self.send(channel::remove_route(&self.core, &self.channel, conn)).await;
            self.joined_channel = false;
        }
    }

    async fn on_message(&mut self, msg: Message) {
        let Some(sh) = msg.session_header() else { return };
        let mid = sh.message_id;
        let kind = msg.session_message_type();
        let Some(source) = msg.source_name() else { return };
        let from_moderator_only = matches!(
            kind,
            SessionMessageType::ChannelMlsWelcome
                | SessionMessageType::ChannelMlsCommit
                | SessionMessageType::ChannelLeaveRequest
        );
        if from_moderator_only && self.role == MulticastRole::Member && self.moderator.as_ref() != Some(&source) {
            // Membership and key changes come from the moderator that invited us, nobody else.
            Stats::bump(&self.core.stats.unhandled_control);
            tracing::debug!(session = self.id, ?kind, "group control message not from the moderator: dropped");
            return;
        }
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
                if !self.timers.is_running(&McTimer::Rtx(source.clone(), mid)) {
                    // Not a loss: the id was accepted or already reported lost.
                    Stats::bump(&self.core.stats.unexpected_rtx_replies);
                    tracing::debug!(session = self.id, %source, mid, "retransmission nobody waits for: dropped");
                    return;
                }
                if msg.slim_header().and_then(|h| h.error).unwrap_or(false) {
                    // Drop point: the producer no longer has the message (its retransmission
                    // ring ran out) -> REPORTED (MessageLost with the id).
                    self.timers.stop(&McTimer::Rtx(source.clone(), mid));
                    if let Some(rb) = self.receivers.get_mut(&source) {
                        rb.on_lost(mid, &mut self.released);
                    }
                    self.flush_released(&source).await;
                } else {
                    self.on_payload(source, mid, msg).await;
                }
            }
            SessionMessageType::BeaconMulticast => {
                let conn = msg.incoming_conn();
                let rb = self.receivers.entry(source.clone()).or_insert_with(ReceiverBuffer::from_first_contact);
                rb.on_beacon(mid, &mut self.holes);
                self.request_holes(&source, conn).await;
            }
            SessionMessageType::RtxRequest => self.on_rtx_request(mid, &msg).await,
            SessionMessageType::ChannelJoinRequest => self.on_join_request(source, &msg).await,
            SessionMessageType::ChannelDiscoveryReply => self.on_discovery_reply(mid, source, &msg).await,
            SessionMessageType::ChannelJoinReply => self.on_join_reply(mid, &msg).await,
            SessionMessageType::ChannelLeaveRequest => self.on_leave_request(&msg).await,
            SessionMessageType::ChannelLeaveReply => self.on_leave_reply(mid).await,
            SessionMessageType::ChannelMlsWelcome => self.on_welcome(&msg).await,
            SessionMessageType::ChannelMlsCommit => self.on_commit(mid, &msg).await,
            SessionMessageType::ChannelMlsAck => self.on_mls_ack(mid, source).await,
            _ => {
                Stats::bump(&self.core.stats.unhandled_control);
                tracing::debug!(session = self.id, ?kind, "unhandled message on a multicast session");
            }
        }
    }

    /// A single data message (first copy or retransmission): decrypted on arrival (MLS groups),
    /// then ordered and deduplicated by the producer's reorder window.
    async fn on_payload(&mut self, source: Name, mid: u32, mut msg: Message) {
        let conn = msg.incoming_conn();
        let rb = self.receivers.entry(source.clone()).or_insert_with(ReceiverBuffer::from_first_contact);
        if !rb.is_new(mid) {
            // Already released or waiting (a key is used once: never decrypt a copy twice).
            Stats::bump(&self.core.stats.duplicates);
            self.timers.stop(&McTimer::Rtx(source.clone(), mid));
            return;
        }
        if !rb.fits(mid) {
            // Drop point: too far ahead of the reorder window; counted (`out_of_window`) and
            // RECOVERED: once the window moves, the id is a hole and is asked for again.
            Stats::bump(&self.core.stats.out_of_window);
            return;
        }
        if !self.open_single(&mut msg) {
            self.unreadable(&source, mid..mid + 1, conn).await;
            return;
        }
        let rb = self.receivers.entry(source.clone()).or_insert_with(ReceiverBuffer::from_first_contact);
        match rb.on_message(mid, msg, &mut self.released, &mut self.holes) {
            super::buffers::Arrival::Accepted => {
                self.timers.stop(&McTimer::Rtx(source.clone(), mid));
            }
            super::buffers::Arrival::Duplicate => Stats::bump(&self.core.stats.duplicates),
            super::buffers::Arrival::OutOfWindow => Stats::bump(&self.core.stats.out_of_window),
        }
        self.flush_released(&source).await;
        self.request_holes(&source, conn).await;
    }

    /// Decrypts an MLS group's data message in place (no-op without MLS); false when it is not
    /// readable by this member (not encrypted for the group, an epoch or key this member does
    /// not have (yet), tampered).
    fn open_single(&mut self, msg: &mut Message) -> bool {
        if !msg.metadata.contains_key(wire::META_MLS_ENCRYPTED) && !self.mls_enabled {
            return true;
        }
        // An MLS group accepts only what was encrypted for it.
        let result = match self.mls.as_mut() {
            Some(mls) if self.mls_ready => interceptor::decrypt_inbound(mls, msg),
            _ => Err(crate::mls::MlsError::NoGroup),
        };
        let ok = matches!(result, Ok(true));
        if !ok {
            tracing::debug!(session = self.id, result = ?result, "group message that cannot be decrypted");
        }
        ok
    }

    /// Drop point: a data message (or batch) this member cannot decrypt; counted
    /// (`mls_failures`) and RECOVERED when possible: its ids become holes whose RTX timers keep
    /// asking (a retransmission is re-encrypted by its producer, and a COMMIT this member had
    /// not applied yet may arrive meanwhile); REPORTED (MessageLost per id) once the retries are
    /// spent.
    async fn unreadable(&mut self, source: &Name, ids: std::ops::Range<u32>, conn: Option<u64>) {
        Stats::bump(&self.core.stats.mls_failures);
        let rb = self.receivers.entry(source.clone()).or_insert_with(ReceiverBuffer::from_first_contact);
        for id in ids {
            rb.mark_missing(id, &mut self.holes);
        }
        self.request_holes(source, conn).await;
    }

    /// An MLS batch of `count` messages with ids `first ..`: decrypted once, unpacked, and each
    /// message fed to the reorder window under its own id (ordering, duplicates and loss stay
    /// per message). A retransmitted batch counts when any of its ids was asked for.
    async fn on_batch(&mut self, source: Name, first: u32, mut msg: Message, retransmitted: bool) {
        let count = msg
            .metadata
            .get(META_MLS_BATCH)
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|c| (1..=MAX_BATCH_ITEMS as u32).contains(c) && first.checked_add(*c).is_some());
        let Some(count) = count else {
            // Drop point: a batch whose size is unreadable; counted (`invalid`) and RECOVERED:
            // its ids are holes once later ids or a beacon arrive, and are asked for again.
            Stats::bump(&self.core.stats.invalid);
            return;
        };
        let ids = first..first + count;
        if retransmitted && !ids.clone().any(|id| self.timers.is_running(&McTimer::Rtx(source.clone(), id))) {
            // Not a loss: every id was accepted or already reported lost.
            Stats::bump(&self.core.stats.unexpected_rtx_replies);
            return;
        }
        let conn = msg.incoming_conn();
        let rb = self.receivers.entry(source.clone()).or_insert_with(ReceiverBuffer::from_first_contact);
        // A batch is decrypted at most once: all of its ids enter the window together.
        if !ids.clone().any(|id| rb.is_new(id)) {
            Stats::bump(&self.core.stats.duplicates);
            for id in ids {
                self.timers.stop(&McTimer::Rtx(source.clone(), id));
            }
            return;
        }
        if !rb.fits(first + count - 1) {
            // Drop point: (partly) beyond the reorder window; counted and RECOVERED (its ids
            // become holes once the window moves, and are asked for again).
            Stats::bump(&self.core.stats.out_of_window);
            return;
        }
        let Some(items) = self.open_batch(&mut msg, count) else {
            tracing::debug!(session = self.id, "group batch that cannot be decrypted");
            self.unreadable(&source, ids, conn).await;
            return;
        };
        if let Some(c) = msg.publish_mut().and_then(|p| p.msg.as_mut()) {
            c.blob = Default::default();
        }
        msg.metadata.clear();
        let rb = self.receivers.entry(source.clone()).or_insert_with(ReceiverBuffer::from_first_contact);
        for (id, item) in ids.zip(items) {
            let mut one = msg.clone();
            if let Some(h) = one.session_header_mut() {
                h.message_id = id;
            }
            if let Some(c) = one.publish_mut().and_then(|p| p.msg.as_mut()) {
                c.blob = item.blob.into();
                c.content_type = item.payload_type;
            }
            one.metadata = item.metadata;
            match rb.on_message(id, one, &mut self.released, &mut self.holes) {
                super::buffers::Arrival::Accepted => {}
                super::buffers::Arrival::Duplicate => Stats::bump(&self.core.stats.duplicates),
                super::buffers::Arrival::OutOfWindow => Stats::bump(&self.core.stats.out_of_window),
            }
            self.timers.stop(&McTimer::Rtx(source.clone(), id));
        }
        self.flush_released(&source).await;
        self.request_holes(&source, conn).await;
    }

    /// Decrypts a batch message in place and decodes its `count` items (None: not for us).
    fn open_batch(&mut self, msg: &mut Message, count: u32) -> Option<Vec<BatchItem>> {
        if !self.mls_enabled || !self.mls_ready {
            return None;
        }
        let mls = self.mls.as_mut()?;
        if !matches!(interceptor::decrypt_inbound(mls, msg), Ok(true)) {
            return None;
        }
        let items = batch::decode(msg.blob()).ok()?;
        (items.len() == count as usize).then_some(items)
    }

    /// Multicast asks for every new hole at once, then again on each timer fire (§3.7.2).
    async fn request_holes(&mut self, producer: &Name, conn: Option<u64>) {
        if self.holes.is_empty() {
            return;
        }
        self.rtx_conn.insert(producer.clone(), conn);
        let now = Instant::now();
        let holes: Vec<u32> = self.holes.drain(..).collect();
        for hole in holes {
            let key = McTimer::Rtx(producer.clone(), hole);
            if self.timers.is_running(&key) {
                continue;
            }
            self.timers.start(key, TimerPolicy::constant(self.timeout, self.max_retries), now);
            self.send(self.rtx_request(producer, hole, conn)).await;
        }
    }

    fn rtx_request(&self, producer: &Name, mid: u32, conn: Option<u64>) -> Message {
        self.core.control(
            producer,
            Flags::one().forward_to(conn),
            SessionType::SessionMulticast,
            SessionMessageType::RtxRequest,
            self.id,
            mid,
            Vec::new(),
        )
    }

    /// Hands what the reorder window of `source` released, in order, to the application:
    /// messages wait (bounded) for room in the session queue, lost ids are reported.
    async fn flush_released(&mut self, source: &Name) {
        let released: Vec<_> = self.released.drain(..).collect();
        for r in released {
            match r {
                // Drop point: the session queue stayed full past the delivery bound -> REPORTED
                // (MessageLost with the id; see SessionQueue::push_wait). Waiting here is the
                // back-pressure: this task stops reading, the dispatcher and the node stop, and
                // the group's sender slows down.
                Released::Message(m) => self.entry.deliver_waiting(m).await,
                Released::Lost(id) => self.entry.report_lost(Some(source), id),
            }
        }
    }

    async fn on_rtx_request(&mut self, mid: u32, request: &Message) {
        let Some(requester) = request.source_name() else { return };
        let flags = Flags::one().forward_to(request.incoming_conn());
        let reads_batches = self.group_reads_batches();
        let reply = match self.producer.get(mid) {
            Some(Produced { msg: original, clear, sent_at }) => {
                // A batch is resent whole, under its first id (the one its header carries).
                let reply_id = original.session_header().map_or(mid, |h| h.message_id);
                let destination = original.destination_name().unwrap_or_else(|| self.channel.clone());
                let spec = PublishSpec {
                    source: &self.core.name,
                    destination: &requester,
                    flags,
                    session_type: SessionType::SessionMulticast,
                    message_type: SessionMessageType::RtxReply,
                    session_id: self.id,
                    message_id: reply_id,
                    original_names: true,
                    content_type: original
                        .publish()
                        .and_then(|p| p.msg.as_ref())
                        .map_or("", |c| c.content_type.as_str()),
                };
                let mut meta = original.metadata.clone();
                meta.remove(wire::META_IDENTITY);
                let reencrypt = match (clear, self.mls.as_ref()) {
                    (Some((epoch, plain)), Some(mls))
                        if mls.is_ready() && reencrypt_for_rtx(*epoch, mls.epoch(), sent_at.elapsed()) =>
                    {
                        Some(plain.clone())
                    }
                    _ => None,
                };
                tracing::debug!(
                    session = self.id,
                    %requester,
                    mid,
                    sent_epoch = clear.as_ref().map(|c| c.0),
                    epoch = self.mls.as_ref().map(|m| m.epoch()),
                    reencrypted = reencrypt.is_some(),
                    "retransmission"
                );
                let mut reply = match reencrypt {
                    Some(plain) if meta.contains_key(META_MLS_BATCH) && !reads_batches => {
                        // A batch, but a member added since cannot read batches:
                        // only the message asked for goes back, on its own.
                        let Some(item) = batch::decode(&plain)
                            .ok()
                            .and_then(|items| items.into_iter().nth(mid.wrapping_sub(reply_id) as usize))
                        else {
                            Stats::bump(&self.core.stats.mls_failures);
                            return;
                        };
                        let single = PublishSpec { message_id: mid, content_type: &item.payload_type, ..spec };
                        builders::publish(&single, item.blob, item.metadata)
                    }
                    Some(plain) => {
                        meta.remove(wire::META_MLS_ENCRYPTED);
                        builders::publish(&spec, plain, meta)
                    }
                    None => builders::publish(&spec, original.blob().to_vec(), meta),
                };
                builders::set_session_destination(&mut reply, &destination);
                if let Some(mls) = self.mls.as_mut()
                    && let Err(e) = interceptor::encrypt_outbound(mls, &mut reply)
                {
                    Stats::bump(&self.core.stats.mls_failures);
                    tracing::debug!(session = self.id, error = %e, "retransmission could not be re-encrypted");
                    return;
                }
                reply
            }
            None => {
                Stats::bump(&self.core.stats.rtx_unavailable);
                self.core.control(
                    &requester,
                    flags.error(),
                    SessionType::SessionMulticast,
                    SessionMessageType::RtxReply,
                    self.id,
                    mid,
                    Vec::new(),
                )
            }
        };
        self.send(reply).await;
    }

    async fn on_join_request(&mut self, source: Name, msg: &Message) {
        if self.role == MulticastRole::Moderator {
            Stats::bump(&self.core.stats.unhandled_control);
            return;
        }
        if self.moderator.is_none() {
            let Some(conn) = msg.incoming_conn() else { return };
            self.conn = Some(conn);
            self.moderator = Some(source.clone());
            self.send(channel::set_route(&self.core, &source, conn)).await;
            if !self.mls_enabled {
                self.join_channel(conn, false).await;
            }
            // With MLS the channel is joined on the WELCOME (as 0.6.0 does): group traffic
            // arriving before it could not be decrypted and would be lost, whereas a producer's
            // beacon after the join gets it retransmitted at an epoch this member has.
        }
        let mut blob = Vec::new();
        if self.mls_enabled {
            match self.participant_key_package() {
                Ok(kp) => blob = kp,
                Err(e) => {
                    Stats::bump(&self.core.stats.mls_failures);
                    tracing::debug!(session = self.id, error = %e, "no key package for the join reply");
                    return;
                }
            }
        }
        // Every copy is answered: a retransmitted request means the reply was lost.
        if let Some(reply) = channel::reply_to(&self.core, msg, SessionMessageType::ChannelJoinReply, blob) {
            self.send(reply).await;
        }
    }

    fn participant_key_package(&mut self) -> Result<Vec<u8>, SlimError> {
        if let Some(kp) = &self.key_package {
            return Ok(kp.clone());
        }
        let mls_err = |e: crate::mls::MlsError| SlimError::Mls(e.to_string());
        let mut state = MlsState::new(self.core.provider.clone(), self.core.verifier.clone()).map_err(mls_err)?;
        let kp = state.key_package().map_err(mls_err)?;
        self.mls = Some(state);
        self.key_package = Some(kp.clone());
        Ok(kp)
    }

    async fn on_discovery_reply(&mut self, mid: u32, source: Name, msg: &Message) {
        match self.current.take() {
            Some(Current::Discovering { request_id, done }) if request_id == mid => {
                self.stop_control(mid);
                let Some(conn) = msg.incoming_conn() else {
                    let _ = done.send(Err(SlimError::Internal("discovery reply without a connection".into())));
                    self.start_next_task().await;
                    return;
                };
                let conn = *self.conn.get_or_insert(conn);
                self.join_channel(conn, true).await;
                let join_id = channel::nonce();
                let join = channel::join_request(
                    &self.core,
                    SessionType::SessionMulticast,
                    self.id,
                    join_id,
                    &source,
                    Some(conn),
                    &self.channel,
                    self.mls_enabled,
                );
                self.send_control(join_id, join).await;
                self.current = Some(Current::Joining { request_id: join_id, invitee: source, done });
            }
            other => {
                self.current = other;
                Stats::bump(&self.core.stats.unhandled_control);
            }
        }
    }

    async fn on_join_reply(&mut self, mid: u32, msg: &Message) {
        match self.current.take() {
            Some(Current::Joining { request_id, invitee, done }) if request_id == mid => {
                self.stop_control(mid);
                if self.mls_enabled {
                    self.secure_add(invitee, msg.blob(), done).await;
                    return;
                }
                self.members.insert(invitee.without_id(), invitee);
                let _ = done.send(Ok(()));
                self.flush_held().await;
                self.start_next_task().await;
            }
            other => {
                self.current = other;
                Stats::bump(&self.core.stats.unhandled_control);
            }
        }
    }

    async fn on_leave_request(&mut self, msg: &Message) {
        if self.role == MulticastRole::Moderator {
            Stats::bump(&self.core.stats.unhandled_control);
            return;
        }
        self.leave_channel().await;
        if let Some(reply) = channel::reply_to(&self.core, msg, SessionMessageType::ChannelLeaveReply, Vec::new()) {
            self.send(reply).await;
        }
        if let (Some(moderator), Some(conn)) = (self.moderator.clone(), self.conn)
            && !self.channel_shared()
        {
            self.send(channel::remove_route(&self.core, &moderator, conn)).await;
        }
        if let Some(layer) = self.layer.upgrade() {
            let _ = layer.remove(self.id);
        }
    }

    async fn on_leave_reply(&mut self, mid: u32) {
        match self.current.take() {
            Some(Current::Leaving { request_id, invitee, done }) if request_id == mid => {
                self.stop_control(mid);
                self.members.remove(&invitee.without_id());
                self.receivers.remove(&invitee);
                let _ = done.send(Ok(()));
                self.start_next_task().await;
            }
            other => {
                self.current = other;
                Stats::bump(&self.core.stats.unhandled_control);
            }
        }
    }

    async fn on_timers(&mut self) {
        self.timers.expire(Instant::now(), &mut self.fired);
        let fired: Vec<_> = self.fired.drain(..).collect();
        for f in fired {
            match f {
                Fired::Retry { key: McTimer::Beacon, .. } => {
                    let sent = self.entry.next_id.load(Ordering::Relaxed);
                    if sent > 0 {
                        let beacon = self.core.control(
                            &self.channel,
                            Flags::all(FANOUT_MULTICAST),
                            SessionType::SessionMulticast,
                            SessionMessageType::BeaconMulticast,
                            self.id,
                            sent - 1,
                            Vec::new(),
                        );
                        self.send(beacon).await;
                    }
                }
                Fired::Failed { key: McTimer::Beacon } => {}
                Fired::Retry { key: McTimer::Rtx(producer, mid), .. } => {
                    let missing = self.receivers.get(&producer).is_some_and(|rb| rb.is_missing(mid));
                    if !missing {
                        self.timers.stop(&McTimer::Rtx(producer, mid));
                        continue;
                    }
                    let conn = self.rtx_conn.get(&producer).copied().flatten();
                    self.send(self.rtx_request(&producer, mid, conn)).await;
                }
                Fired::Failed { key: McTimer::Rtx(producer, mid) } => {
                    // Drop point: no readable retransmission came after every retry -> REPORTED
                    // (MessageLost with the id, in its place in the producer's stream).
                    tracing::debug!(session = self.id, %producer, mid, "no retransmission came: message lost");
                    if let Some(rb) = self.receivers.get_mut(&producer) {
                        rb.on_lost(mid, &mut self.released);
                    }
                    self.flush_released(&producer).await;
                }
                Fired::Retry { key: McTimer::Control(mid), .. } => {
                    if let Some(m) = self.control.get(&mid) {
                        let m = m.clone();
                        self.send(m).await;
                    }
                }
                Fired::Failed { key: McTimer::Control(mid) } => {
                    self.control.remove(&mid);
                    // The current task gives up; the queue moves on (reference bug 15 fixed).
                    if let Some(cur) = self.current.take() {
                        if cur.owns(mid) {
                            cur.finish(Err(SlimError::Invite("no answer from the participant".into())));
                        } else {
                            self.current = Some(cur);
                        }
                    }
                    self.start_next_task().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtx_reencryption_is_bounded() {
        let recent = Duration::from_millis(50);
        assert!(reencrypt_for_rtx(1, 2, recent));
        assert!(reencrypt_for_rtx(1, 4, recent));
        assert!(reencrypt_for_rtx(2, 2, Duration::from_secs(3600)), "same epoch: a fresh generation, same readers");
        assert!(!reencrypt_for_rtx(1, 2, RTX_REENCRYPT_WINDOW + Duration::from_millis(1)), "too old");
    }
}
