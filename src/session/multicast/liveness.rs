//! Liveness of a group (docs/liveness.md): the moderator pings the members that accepted
//! heartbeats and drops those that stop answering; a member closes its session when its
//! moderator goes silent. Also the member list (`participants`) and invite deadlines.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::moderator::{Current, ModTask};
use super::{McTimer, MulticastRole, MulticastTask};
use crate::error::SlimError;
use crate::session::channel;
use crate::session::context::{AppCore, Stats};
use crate::session::entry::{Done, SessionEntry};
use crate::session::liveness::{self, META_MEMBERS_VERSION, MemberWatch, ModeratorWatch};
use crate::session::timer::TimerPolicy;
use crate::wire::builders::Flags;
use crate::wire::payload::{decode_names, encode_names};
use crate::wire::{Message, Name, SessionMessageType, SessionType};

impl MulticastTask {
    /// The group as this session knows it: on the moderator, itself and every member; on a
    /// member, the list of the moderator's last heartbeat (or, before one came, the moderator
    /// and itself).
    pub(super) fn participant_names(&self) -> Vec<Name> {
        let mut names: Vec<Name> = match (&self.role, &self.moderator_watch) {
            (MulticastRole::Moderator, _) => {
                std::iter::once(self.io.app.name.clone()).chain(self.members.values().cloned()).collect()
            }
            (MulticastRole::Member, Some(w)) if !w.members().is_empty() => w.members().to_vec(),
            (MulticastRole::Member, _) => {
                self.moderator.iter().cloned().chain(std::iter::once(self.io.app.name.clone())).collect()
            }
        };
        names.sort_by_key(|n| n.components());
        names.dedup();
        names
    }

    /// Moderator: `invitee` is now a member (watched when it accepted heartbeats).
    pub(super) fn member_added(&mut self, invitee: Name) {
        self.members.insert(invitee.without_id(), invitee.clone());
        let capable = self.heartbeat_capable.remove(&invitee);
        let bound = self.liveness;
        let first = self.member_watch.is_none();
        let watch = self.member_watch.get_or_insert_with(|| MemberWatch::new(bound));
        watch.membership_changed();
        if capable {
            watch.watch(invitee, Instant::now());
        }
        if first {
            self.io.start_timer(
                McTimer::Heartbeat,
                TimerPolicy::periodic(liveness::ping_interval(bound)),
                Instant::now(),
            );
            self.start_beat(BeatTargets::default(), liveness::ping_interval(bound));
        }
        self.beat_watched();
    }

    /// Starts this session's heartbeat task ([`beat`]) toward `targets`; it stops with the
    /// session (or when `self.beat` is dropped).
    fn start_beat(&mut self, targets: BeatTargets, interval: Duration) {
        let targets = Arc::new(Mutex::new(targets));
        let stop = self.io.entry.cancel.child_token();
        tokio::spawn(beat(self.io.app.clone(), self.io.entry.clone(), targets.clone(), interval, stop.clone()));
        self.beat = Some((targets, stop.drop_guard()));
    }

    /// Moderator: its heartbeat task greets the members it watches now (on every change).
    fn beat_watched(&mut self) {
        let (Some((targets, _)), Some(w)) = (&self.beat, &self.member_watch) else { return };
        let mut t = targets.lock();
        t.conn = self.conn;
        t.names.clear();
        t.names.extend(w.watched().cloned());
    }

    /// Moderator: `invitee` is no longer a member. Drop point: what its reorder window held
    /// behind holes, and the holes, would go with it: released now (messages in order, each hole
    /// REPORTED as MessageLost).
    pub(super) async fn member_gone(&mut self, invitee: &Name) {
        self.members.remove(&invitee.without_id());
        self.positioned.remove(invitee);
        self.release_window(invitee).await;
        self.receivers.remove(invitee);
        self.identities.remove(invitee);
        self.heartbeat_capable.remove(invitee);
        if let Some(w) = self.member_watch.as_mut() {
            w.forget(invitee);
            w.membership_changed();
        }
        self.beat_watched();
    }

    /// Moderator, MLS: every remaining member acknowledged the removal commit. A live member is
    /// asked to leave (and awaited); a dead one is dropped at once.
    pub(super) async fn removal_committed(&mut self, invitee: Name, done: Done, dead: bool) {
        self.identities.remove(&invitee);
        if dead {
            self.drop_dead(invitee, done).await;
        } else {
            self.send_leave(invitee, done).await;
        }
        // Every member is at the new epoch: held publishes may go out.
        self.flush_held().await;
    }

    /// Moderator: forgets a member that stopped answering. Nothing is sent to it: if it only
    /// lost touch for a while, it stops hearing heartbeats and closes its session itself
    /// (`ModeratorLost`).
    pub(super) async fn drop_dead(&mut self, invitee: Name, done: Done) {
        tracing::info!(session = self.io.id, member = %invitee, "member stopped answering heartbeats: removed");
        self.member_gone(&invitee).await;
        let _ = done.send(Ok(()));
    }

    /// Anything from the other side is a sign of life (a GROUP_PONG also says which member-list
    /// version the member holds).
    pub(super) fn heard_from(&mut self, source: &Name, kind: SessionMessageType, msg: &Message) {
        let now = Instant::now();
        if let Some(w) = self.member_watch.as_mut() {
            let confirmed = (kind == SessionMessageType::GroupPong)
                .then(|| msg.metadata.get(META_MEMBERS_VERSION).and_then(|v| v.parse().ok()))
                .flatten();
            w.heard(source, now, confirmed);
        }
        if let Some(w) = self.moderator_watch.as_mut()
            && self.moderator.as_ref() == Some(source)
        {
            w.heard(now);
        }
    }

    /// Participant: the moderator's JOIN_REQUEST offered heartbeats; true when this member takes
    /// part (then its JOIN_REPLY says so).
    pub(super) fn accept_heartbeats(&mut self, msg: &Message) -> bool {
        if self.moderator_watch.is_none() {
            let Some(bound) = liveness::parse_bound(msg.metadata.get(liveness::META_LIVENESS_MS)) else {
                return false;
            };
            let now = Instant::now();
            self.moderator_watch = Some(ModeratorWatch::new(bound, now));
            self.io.start_timer(McTimer::Heartbeat, TimerPolicy::periodic(liveness::ping_interval(bound)), now);
            if let Some(moderator) = msg.source_name() {
                let targets = BeatTargets { conn: msg.incoming_conn(), names: vec![moderator], with_version: true };
                self.start_beat(targets, liveness::ping_interval(bound));
            }
        }
        true
    }

    /// Participant: a heartbeat from the moderator (with the member list when it changed).
    pub(super) async fn on_ping(&mut self, source: Name, msg: &Message) {
        let Some(w) = self.moderator_watch.as_mut().filter(|_| self.moderator.as_ref() == Some(&source)) else {
            Stats::bump(&self.io.app.stats.unhandled_control);
            return;
        };
        let version = msg.metadata.get(META_MEMBERS_VERSION).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let list = if msg.blob().is_empty() {
            None
        } else {
            match decode_names(msg.blob()) {
                Ok(names) => Some(names),
                Err(e) => {
                    Stats::bump(&self.io.app.stats.invalid);
                    tracing::debug!(session = self.io.id, error = %e, "unreadable member list");
                    None
                }
            }
        };
        w.on_list(version, list);
        let held = w.version();
        self.io.entry.signals.set_version(held);
        if let Some(mut pong) = channel::reply_to(&self.io.app, msg, SessionMessageType::GroupPong, Vec::new()) {
            pong.metadata.insert(META_MEMBERS_VERSION.to_string(), held.to_string());
            self.io.send(pong).await;
        }
    }

    /// Every quarter of the bound: the moderator pings and drops the silent; a member checks that
    /// its moderator is still there.
    pub(super) async fn on_heartbeat(&mut self) {
        let now = Instant::now();
        // This app's dispatcher held in one batch since the last look (its reader stopped taking
        // messages): what the others sent waits in front of it, so their silence is not theirs.
        let held = self.io.app.dispatch.held_since(&mut self.dispatch_seen);
        if let Some(w) = self.moderator_watch.as_mut() {
            if held {
                w.heard(now);
            }
            if let Some(silent) = w.lost(now) {
                self.moderator_lost(silent).await;
            }
            return;
        }
        if held && let Some(w) = self.member_watch.as_mut() {
            w.heard_all(now);
        }
        let Some(w) = &self.member_watch else { return };
        let version = w.version();
        let pings = w.to_ping();
        let gone = w.silent(now);
        let list = pings.iter().any(|(_, with_list)| *with_list).then(|| encode_names(&self.participant_names()));
        for (member, with_list) in pings {
            if gone.contains(&member) {
                continue;
            }
            let blob = if with_list { list.clone().unwrap_or_default() } else { Vec::new() };
            let mut ping = self.to_member(&member, SessionMessageType::GroupPing, channel::nonce(), blob);
            ping.metadata.insert(META_MEMBERS_VERSION.to_string(), version.to_string());
            self.io.send(ping).await;
        }
        for member in &gone {
            if let Some(w) = self.member_watch.as_mut() {
                w.forget(member);
            }
            self.beat_watched();
            let (done, _) = tokio::sync::oneshot::channel();
            self.tasks.push_back(ModTask::Remove { name: member.clone(), done, dead: true });
        }
        // A commit under way never gets these members' acknowledgements: it stops waiting for
        // them (else it would stall until the control timeout, and every removal behind it).
        for member in gone {
            if let Some(mid) = self.current.as_ref().and_then(|c| c.commit_waiting_on(&member)) {
                self.on_mls_ack(mid, member).await;
            } else {
                // Nor does a query of where its stream starts for a newcomer (or the newcomer's
                // acknowledgement of its positions).
                self.position_given_up(None, Some(&member)).await;
            }
        }
        self.start_next_task().await;
    }

    /// Participant: the moderator that invited this member, with its strings when the moderator's
    /// member list gave them (the channel's name before a moderator is known).
    pub(super) fn moderator_named(&self) -> crate::wire::Name {
        let moderator = self.moderator.clone().unwrap_or_else(|| self.channel.clone());
        self.moderator_watch
            .as_ref()
            .and_then(|w| w.members().iter().find(|n| **n == moderator).cloned())
            .unwrap_or(moderator)
    }

    /// Participant: the moderator went silent for longer than the bound. Drop point, as when the
    /// moderator removes this member (`on_leave_request`): what the reorder windows held is
    /// released (holes REPORTED as MessageLost), and the publishes this member still held are
    /// REPORTED in the `ModeratorLost` the reader gets last (with those still in the command
    /// channel: `TaskCore::count_unserved`). The task stops; the layer closes the session, and it
    /// leaves the app once drained (later calls get `SessionClosed`).
    async fn moderator_lost(&mut self, silent: std::time::Duration) {
        let moderator = self.moderator_named();
        let undelivered = self.held.len();
        tracing::info!(session = self.io.id, %moderator, ?silent, undelivered, "moderator stopped answering: session closed");
        self.io.stop_timer(McTimer::Heartbeat);
        self.release_all_windows().await;
        self.leave_channel().await;
        self.drop_moderator_route().await;
        self.io.ending = Some(SlimError::ModeratorLost {
            session_id: self.io.id,
            moderator,
            silent_ms: u64::try_from(silent.as_millis()).unwrap_or(u64::MAX),
            undelivered,
        });
    }

    /// Moderator: the caller's deadline for invite `seq` passed; still discovering or joining,
    /// the invite is abandoned and the queue moves on (an MLS add already under way completes).
    pub(super) async fn on_invite_deadline(&mut self, seq: u64) {
        if seq != self.invite_seq {
            return;
        }
        let request_id = match &self.current {
            Some(Current::Discovering { request_id, .. } | Current::Joining { request_id, .. }) => *request_id,
            _ => return,
        };
        self.io.stop_control(request_id);
        if let Some(cur) = self.current.take() {
            cur.finish(Err(SlimError::Invite("no answer from the participant before the invite's deadline".into())));
        }
        self.start_next_task().await;
    }
}

/// Whom a session's heartbeat task ([`beat`]) greets: a member its moderator, a moderator the
/// members it watches (kept current by the session task).
#[derive(Default)]
pub(super) struct BeatTargets {
    /// The connection toward them (the one the moderator's JOIN_REQUEST came in on; the group's).
    conn: Option<u64>,
    names: Vec<Name>,
    /// A member's GROUP_PONG says which member-list version it holds.
    with_version: bool,
}

/// A session's heartbeat task: every quarter of the bound, a GROUP_PONG to each target, whether
/// or not a ping came. A member sends its moderator the member-list version it holds; a
/// moderator greets each member it watches (a member takes anything from its moderator as a sign
/// of life). Pings travel behind the data, and go out from the session task: the pings of a
/// side whose reader pauses wait, or are answered late. These go apart from the session task,
/// the other way, where nothing waits in front of them, so neither a member nor a moderator whose
/// reader pauses is taken for gone (docs/liveness.md, "What counts as a sign of life").
async fn beat(
    app: Arc<AppCore>,
    entry: Arc<SessionEntry>,
    targets: Arc<Mutex<BeatTargets>>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pongs = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        {
            let t = targets.lock();
            let version = t.with_version.then(|| entry.signals.version().to_string());
            pongs.extend(t.names.iter().map(|name| {
                let mut pong = app.control(
                    name,
                    Flags::one().forward_to(t.conn),
                    SessionType::SessionMulticast,
                    SessionMessageType::GroupPong,
                    entry.id,
                    channel::nonce(),
                    Vec::new(),
                );
                if let Some(v) = &version {
                    pong.metadata.insert(META_MEMBERS_VERSION.to_string(), v.clone());
                }
                pong
            }));
        }
        for pong in pongs.drain(..) {
            // Not sent (the app is closing): the session ends with it. Not lost either way: a
            // heartbeat, and the next tick sends another.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = app.send(pong) => {}
            }
        }
    }
}
