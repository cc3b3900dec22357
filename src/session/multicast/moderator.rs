//! The moderator's side of a group: invites (discovery → join → MLS add) and removals (MLS
//! commit → leave), one at a time from a FIFO queue.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::{McTimer, MulticastTask, starts};
use crate::error::{MlsFailure, SlimError};
use crate::mls::MlsState;
use crate::session::buffers::ReceiverBuffer;
use crate::session::channel;
use crate::session::context::Stats;
use crate::session::entry::Done;
use crate::session::liveness;
use crate::wire::builders::Flags;
use crate::wire::{self, META_FIRST_ID, Message, Name, SessionMessageType, SessionType};

pub(super) enum ModTask {
    /// Invite; abandoned if still unanswered at `deadline`.
    Add { name: Name, done: Done, deadline: Option<Instant> },
    /// Remove; `dead`: the member stopped answering heartbeats, so nothing is awaited from it.
    Remove { name: Name, done: Done, dead: bool },
}

pub(super) enum Current {
    Discovering {
        request_id: u32,
        /// The name invited (with its strings: the discovery reply carries only hashes).
        name: Name,
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
        /// Where the invitee's stream starts (its JOIN_REPLY said; see [`super::starts`]).
        first: Option<u32>,
        identity: Vec<u8>,
        done: Done,
    },
    /// The newcomer is in: waiting for the members' answers to where their streams start
    /// (query id -> member), collecting them ([`super::starts`]).
    Positioning {
        queries: HashMap<u32, Name>,
        starts: Vec<(Name, u32)>,
        invitee: Name,
        done: Done,
    },
    /// Waiting for the newcomer to acknowledge the positions (GROUP_STREAM_STARTS `request_id`).
    Announcing {
        request_id: u32,
        invitee: Name,
        done: Done,
    },
    /// MLS remove: waiting for every member's COMMIT ACK before the LEAVE_REQUEST.
    RemovingCommit {
        commit: CommitAcks,
        invitee: Name,
        done: Done,
        dead: bool,
    },
    Leaving {
        request_id: u32,
        invitee: Name,
        done: Done,
    },
}

/// A broadcast COMMIT and the members that have not acknowledged it yet.
pub(super) struct CommitAcks {
    id: u32,
    waiting_for: HashSet<Name>,
}

impl Current {
    /// The id of this task's COMMIT when it still waits for `member`'s acknowledgement.
    pub(super) fn commit_waiting_on(&self, member: &Name) -> Option<u32> {
        match self {
            Current::Securing { commit: Some(c), .. } | Current::RemovingCommit { commit: c, .. }
                if c.waiting_for.contains(member) =>
            {
                Some(c.id)
            }
            _ => None,
        }
    }

    /// True when the control message `mid` belongs to this task.
    pub(super) fn owns(&self, mid: u32) -> bool {
        match self {
            Current::Discovering { request_id, .. }
            | Current::Joining { request_id, .. }
            | Current::Leaving { request_id, .. }
            | Current::Announcing { request_id, .. } => *request_id == mid,
            Current::Positioning { queries, .. } => queries.contains_key(&mid),
            Current::Securing { welcome_id, commit, .. } => {
                *welcome_id == Some(mid) || commit.as_ref().is_some_and(|c| c.id == mid)
            }
            Current::RemovingCommit { commit, .. } => commit.id == mid,
        }
    }

    /// Completes the invite or removal with `result`.
    pub(super) fn finish(self, result: Result<(), SlimError>) {
        let done = match self {
            Current::Discovering { done, .. }
            | Current::Joining { done, .. }
            | Current::Securing { done, .. }
            | Current::RemovingCommit { done, .. }
            | Current::Positioning { done, .. }
            | Current::Announcing { done, .. }
            | Current::Leaving { done, .. } => done,
        };
        let _ = done.send(result);
    }
}

impl MulticastTask {
    /// Moderator: an invite is queued or running, or an MLS removal commit is not yet acknowledged.
    pub(super) fn membership_changing(&self) -> bool {
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

    /// True when `member` stopped answering heartbeats and its removal is queued.
    pub(super) fn removal_queued_as_dead(&self, member: &Name) -> bool {
        self.tasks.iter().any(|t| matches!(t, ModTask::Remove { name, dead: true, .. } if name == member))
    }

    /// Starts queued invites / removals until one is running (or none is left), then sends
    /// whatever the hold policy ([`Self::can_publish`]) now lets out.
    pub(super) async fn start_next_task(&mut self) {
        while self.current.is_none() {
            let Some(task) = self.tasks.pop_front() else { break };
            match task {
                ModTask::Add { name, done, deadline } => {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| d <= now) {
                        let _ = done.send(Err(SlimError::Invite("no answer from the participant in time".into())));
                        continue;
                    }
                    self.invite_seq += 1;
                    if let Some(d) = deadline {
                        let policy = crate::session::timer::TimerPolicy::constant(d - now, 0);
                        self.io.start_timer(McTimer::InviteDeadline(self.invite_seq), policy, now);
                    }
                    let request_id = channel::nonce();
                    let msg = self.io.app.control(
                        &name,
                        Flags::one(),
                        SessionType::SessionMulticast,
                        SessionMessageType::ChannelDiscoveryRequest,
                        self.io.id,
                        request_id,
                        Vec::new(),
                    );
                    self.io.send_control(request_id, msg).await;
                    self.current = Some(Current::Discovering { request_id, name, done });
                }
                ModTask::Remove { name, done, dead } => {
                    let invitee = if name.has_any_id() { self.members.get(&name).cloned() } else { Some(name.clone()) };
                    let Some(invitee) = invitee.filter(|n| self.members.contains_key(&n.without_id())) else {
                        let _ = done.send(Err(SlimError::Invite(format!("participant not found: {name}"))));
                        continue;
                    };
                    if self.keys.enabled() {
                        match self.remove_commit(&invitee).await {
                            Ok(mut commit) => {
                                if dead {
                                    // Nothing will come from it: only the others acknowledge.
                                    commit.waiting_for.remove(&invitee);
                                }
                                if commit.waiting_for.is_empty() {
                                    self.io.stop_control(commit.id);
                                    self.removal_committed(invitee, done, dead).await;
                                } else {
                                    self.current = Some(Current::RemovingCommit { commit, invitee, done, dead });
                                }
                            }
                            Err(e) => {
                                let _ = done.send(Err(e));
                            }
                        }
                        continue;
                    }
                    if dead {
                        self.drop_dead(invitee, done).await;
                        continue;
                    }
                    self.send_leave(invitee, done).await;
                }
            }
        }
        self.flush_held().await;
    }

    /// Moderator: asks `invitee` to leave (re-sent until answered); the task waits in `Leaving`.
    pub(super) async fn send_leave(&mut self, invitee: Name, done: Done) {
        let request_id = channel::nonce();
        let msg = self.to_member(&invitee, SessionMessageType::ChannelLeaveRequest, request_id, Vec::new());
        self.io.send_control(request_id, msg).await;
        self.current = Some(Current::Leaving { request_id, invitee, done });
    }

    /// Broadcasts a COMMIT to the channel; every name in `members` must acknowledge it.
    pub(super) async fn broadcast_commit(&mut self, commit: Vec<u8>, members: HashSet<Name>) -> CommitAcks {
        self.mls_seq += 1;
        let id = self.mls_seq;
        let msg = self.io.app.control(
            &self.channel,
            Flags::all(wire::FANOUT_CHANNEL_BROADCAST),
            SessionType::SessionMulticast,
            SessionMessageType::ChannelMlsCommit,
            self.io.id,
            id,
            commit,
        );
        self.io.send_control(id, msg).await;
        // Members already found dead (their removal is queued) will never acknowledge.
        let waiting_for = members.into_iter().filter(|m| !self.removal_queued_as_dead(m)).collect();
        CommitAcks { id, waiting_for }
    }

    /// MLS removal: the commit goes to everyone, the removed member included.
    pub(super) async fn remove_commit(&mut self, invitee: &Name) -> Result<CommitAcks, SlimError> {
        let identity = self
            .identities
            .get(invitee)
            .cloned()
            .ok_or_else(|| SlimError::Invite(format!("no MLS identity for {invitee}")))?;
        let mls = self.keys.state_mut().ok_or(SlimError::Mls(MlsFailure::NoGroup))?;
        let commit = mls.remove_member(&identity).map_err(SlimError::from)?;
        let everyone = self.members.values().cloned().collect();
        Ok(self.broadcast_commit(commit, everyone).await)
    }

    /// MLS add after JOIN_REPLY: WELCOME to the newcomer, COMMIT to the earlier members.
    pub(super) async fn secure_add(&mut self, invitee: Name, first: Option<u32>, key_package: &[u8], done: Done) {
        let mls_err = SlimError::from;
        let result = (|| {
            if self.keys.state().is_none() {
                let mut state =
                    MlsState::new(self.io.app.provider.clone(), self.io.app.verifier.clone()).map_err(mls_err)?;
                state.create_group().map_err(mls_err)?;
                self.keys.install(state, None);
            }
            let mls = self.keys.state_mut().ok_or(SlimError::Mls(MlsFailure::NoGroup))?;
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
        let earlier: HashSet<Name> = self.members.values().cloned().collect();
        let commit = if earlier.is_empty() {
            self.mls_seq += 1;
            None
        } else {
            Some(self.broadcast_commit(added.commit, earlier).await)
        };
        let commit_id = commit.as_ref().map_or(self.mls_seq, |c| c.id);
        let welcome_id = channel::nonce();
        let mut welcome = self.to_member(&invitee, SessionMessageType::ChannelMlsWelcome, welcome_id, added.welcome);
        welcome.metadata.insert(wire::META_MLS_INIT_COMMIT_ID.to_string(), commit_id.to_string());
        self.io.send_control(welcome_id, welcome).await;
        self.current = Some(Current::Securing {
            welcome_id: Some(welcome_id),
            commit,
            invitee,
            first,
            identity: added.member_identity,
            done,
        });
    }

    /// Moderator: a member acknowledged a WELCOME or COMMIT of the current task.
    pub(super) async fn on_mls_ack(&mut self, mid: u32, source: Name) {
        let Some(cur) = self.current.take() else {
            Stats::bump(&self.io.app.stats.unhandled_control);
            return;
        };
        match cur {
            Current::Securing { mut welcome_id, mut commit, invitee, first, identity, done } => {
                if welcome_id == Some(mid) && source == invitee {
                    self.io.stop_control(mid);
                    welcome_id = None;
                }
                if let Some(c) = commit.as_mut()
                    && c.id == mid
                {
                    c.waiting_for.remove(&source);
                    if c.waiting_for.is_empty() {
                        self.io.stop_control(mid);
                        commit = None;
                    }
                }
                if welcome_id.is_none() && commit.is_none() {
                    self.member_added(invitee.clone());
                    self.identities.insert(invitee.clone(), identity);
                    self.keys.set_ready(true);
                    self.position_newcomer(invitee, first, done).await;
                    self.flush_held().await;
                    self.start_next_task().await;
                } else {
                    self.current = Some(Current::Securing { welcome_id, commit, invitee, first, identity, done });
                }
            }
            Current::RemovingCommit { mut commit, invitee, done, dead } if commit.id == mid => {
                commit.waiting_for.remove(&source);
                if commit.waiting_for.is_empty() {
                    self.io.stop_control(mid);
                    self.removal_committed(invitee, done, dead).await;
                } else {
                    self.current = Some(Current::RemovingCommit { commit, invitee, done, dead });
                }
            }
            other => {
                self.current = Some(other);
                Stats::bump(&self.io.app.stats.unhandled_control);
            }
        }
    }

    /// Moderator: the invitee was found: the channel is joined (and created) toward it and the
    /// JOIN_REQUEST goes out.
    pub(super) async fn on_discovery_reply(&mut self, mid: u32, source: Name, msg: &Message) {
        match self.current.take() {
            Some(Current::Discovering { request_id, name, done }) if request_id == mid => {
                self.io.stop_control(mid);
                // The instance that answered, under the name as invited (strings included).
                let source = if source.equal_without_id(&name) { name.with_id(source.id()) } else { source };
                let Some(conn) = msg.incoming_conn() else {
                    let _ = done.send(Err(SlimError::Internal("discovery reply without a connection".into())));
                    self.start_next_task().await;
                    return;
                };
                let conn = *self.conn.get_or_insert(conn);
                self.join_channel(conn, true).await;
                let join_id = channel::nonce();
                let mut join = channel::join_request(
                    &self.io.app,
                    SessionType::SessionMulticast,
                    self.io.id,
                    join_id,
                    &source,
                    Some(conn),
                    &self.channel,
                    self.keys.enabled(),
                );
                // Heartbeats are offered; an invitee of this implementation accepts in its reply.
                join.metadata.insert(liveness::META_LIVENESS_MS.to_string(), liveness::format_bound(self.liveness));
                // Where this moderator's stream starts for the invitee: the id its next data
                // message gets (publishes are held while an invite is in progress, and ids are
                // given as they leave). The invitee's window starts there rather than at the
                // first message that reaches it, so one lost on the way before it (a route to the
                // invitee still being set up) is a gap it asks for, not a silent loss.
                let first = self.io.entry.next_id.load(Ordering::Relaxed);
                join.metadata.insert(META_FIRST_ID.to_string(), first.to_string());
                self.io.send_control(join_id, join).await;
                self.current = Some(Current::Joining { request_id: join_id, invitee: source, done });
            }
            other => {
                self.current = other;
                Stats::bump(&self.io.app.stats.unhandled_control);
            }
        }
    }

    /// Moderator: the invitee joined; with MLS it is added to the group first
    /// ([`Self::secure_add`]).
    pub(super) async fn on_join_reply(&mut self, mid: u32, msg: &Message) {
        match self.current.take() {
            Some(Current::Joining { request_id, invitee, done }) if request_id == mid => {
                self.io.stop_control(mid);
                if liveness::parse_bound(msg.metadata.get(liveness::META_LIVENESS_MS)).is_some() {
                    self.heartbeat_capable.insert(invitee.clone());
                }
                // Where the invitee's stream starts: it holds its publishes until it knows where
                // the others' start, so every id from this one on is for the group as it is now.
                let first = starts::first_id(msg);
                if let Some(first) = first
                    && self.receivers.get(&invitee).is_none_or(ReceiverBuffer::untouched)
                {
                    self.receivers.insert(invitee.clone(), ReceiverBuffer::starting_at(first));
                }
                if self.keys.enabled() {
                    self.secure_add(invitee, first, msg.blob(), done).await;
                    return;
                }
                self.member_added(invitee.clone());
                self.position_newcomer(invitee, first, done).await;
                self.flush_held().await;
                self.start_next_task().await;
            }
            other => {
                self.current = other;
                Stats::bump(&self.io.app.stats.unhandled_control);
            }
        }
    }

    /// Moderator: the removed member left; the next invite or removal starts.
    pub(super) async fn on_leave_reply(&mut self, mid: u32) {
        match self.current.take() {
            Some(Current::Leaving { request_id, invitee, done }) if request_id == mid => {
                self.io.stop_control(mid);
                self.member_gone(&invitee).await;
                let _ = done.send(Ok(()));
                self.start_next_task().await;
            }
            other => {
                self.current = other;
                Stats::bump(&self.io.app.stats.unhandled_control);
            }
        }
    }
}
