//! Liveness of a group and of a sticky point-to-point session (docs/liveness.md): who is still
//! there, known within a bound. The point-to-point exchange is the group's between two: the
//! initiator offers its bound in its JOIN_REQUEST, a responder of this implementation echoes it,
//! then the initiator pings and the responder answers (`PeerWatch` on both sides).
//!
//! A moderator of this implementation puts its liveness bound in its CHANNEL_JOIN_REQUEST
//! ([`META_LIVENESS_MS`]); a member of this implementation answers with the same key in its
//! CHANNEL_JOIN_REPLY. Only then do the two exchange heartbeats: every [`ping_interval`] the
//! moderator sends the member a GROUP_PING (carrying the member list when it changed since the
//! member last confirmed it), and the member answers with a GROUP_PONG. Anything received from
//! the other side counts as a sign of life. A slim-bindings 0.6.0 peer never sees a key it does
//! not know nor a message type it would not understand: it neither sends nor echoes the key.
//!
//! - A member that hears nothing from its moderator for the bound closes the session with
//!   `ModeratorLost` (Python `ModeratorLostError`, a `SessionClosedError`).
//! - A moderator that hears nothing from a member for the bound removes it from the group
//!   (MLS removal commit to the others, a best-effort leave to it) and the others go on.
//!
//! This module only keeps the clocks and the list; the multicast task sends and acts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::wire::{Message, Name};

pub use super::{DEFAULT_LIVENESS, MAX_LIVENESS, MIN_LIVENESS};
/// JOIN_REQUEST (moderator) / JOIN_REPLY (member) metadata: the group's liveness bound in
/// milliseconds. Its presence in a JOIN_REPLY is the member's promise to answer GROUP_PINGs.
pub use crate::wire::META_LIVENESS_MS;
/// GROUP_PING metadata: version of the member list the moderator holds; GROUP_PONG metadata:
/// the version the member holds.
pub use crate::wire::META_MEMBERS_VERSION;

/// Heartbeats per bound: a member is declared gone only after this many pings in a row went
/// unanswered (a lost ping or two is not a death).
const PINGS_PER_BOUND: u32 = 4;

/// How often heartbeats go out for a liveness `bound`.
pub fn ping_interval(bound: Duration) -> Duration {
    bound / PINGS_PER_BOUND
}

/// The bound a peer advertised in `value` (milliseconds), clamped to sane limits; `None` when
/// absent or unreadable (then the peer does not take part in liveness).
pub fn parse_bound(value: Option<&String>) -> Option<Duration> {
    let ms: u64 = value?.parse().ok()?;
    Some(Duration::from_millis(ms).clamp(MIN_LIVENESS, MAX_LIVENESS))
}

/// The metadata value for `bound`.
pub fn format_bound(bound: Duration) -> String {
    bound.as_millis().to_string()
}

/// What a moderator knows of one member that answers heartbeats.
#[derive(Debug, Clone)]
struct Watched {
    last_heard: Instant,
    /// Member-list version the member confirmed (0: none yet).
    confirmed: u64,
}

/// Moderator side: the heartbeat-capable members, when each was last heard, and the version of
/// the member list.
#[derive(Debug)]
pub struct MemberWatch {
    bound: Duration,
    watched: HashMap<Name, Watched>,
    /// Bumped on every membership change.
    version: u64,
}

impl MemberWatch {
    /// A watch with liveness bound `bound`.
    pub fn new(bound: Duration) -> Self {
        MemberWatch { bound, watched: HashMap::new(), version: 1 }
    }

    /// The liveness bound.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// Current member-list version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The member list changed (someone joined or left).
    pub fn membership_changed(&mut self) {
        self.version += 1;
    }

    /// `member` joined and answers heartbeats.
    pub fn watch(&mut self, member: Name, now: Instant) {
        self.watched.insert(member, Watched { last_heard: now, confirmed: 0 });
    }

    /// The members watched.
    pub fn watched(&self) -> impl Iterator<Item = &Name> {
        self.watched.keys()
    }

    /// `member` left (removed, or declared gone).
    pub fn forget(&mut self, member: &Name) {
        self.watched.remove(member);
    }

    /// Something came from `member`; `confirmed` is the list version its GROUP_PONG carried.
    pub fn heard(&mut self, member: &Name, now: Instant, confirmed: Option<u64>) {
        if let Some(w) = self.watched.get_mut(member) {
            w.last_heard = now;
            if let Some(v) = confirmed {
                w.confirmed = w.confirmed.max(v);
            }
        }
    }

    /// Every watched member counts as heard at `now` (this app could not hear them meanwhile:
    /// its dispatcher was held, see [`DispatchProgress`]).
    pub fn heard_all(&mut self, now: Instant) {
        for w in self.watched.values_mut() {
            w.last_heard = now;
        }
    }

    /// The members to ping now, each with whether its ping must carry the member list.
    pub fn to_ping(&self) -> Vec<(Name, bool)> {
        self.watched.iter().map(|(n, w)| (n.clone(), w.confirmed != self.version)).collect()
    }

    /// The watched members silent for longer than the bound at `now` (they are not forgotten:
    /// the caller removes them).
    pub fn silent(&self, now: Instant) -> Vec<Name> {
        let mut gone: Vec<Name> = self
            .watched
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.last_heard) > self.bound)
            .map(|(n, _)| n.clone())
            .collect();
        gone.sort_by_key(|n| n.components());
        gone
    }
}

/// One side of a sticky point-to-point session, or a group member: when the peer (or the
/// moderator) was last heard, against the bound.
#[derive(Debug)]
pub struct PeerWatch {
    bound: Duration,
    last_heard: Instant,
}

impl PeerWatch {
    /// Starts watching a peer under `bound`, as if it had just been heard.
    pub fn new(bound: Duration, now: Instant) -> Self {
        PeerWatch { bound, last_heard: now }
    }

    /// The liveness bound.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// Something came from the peer.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// How long the peer has been silent, when that is longer than the bound.
    pub fn lost(&self, now: Instant) -> Option<Duration> {
        let silent = now.saturating_duration_since(self.last_heard);
        (silent > self.bound).then_some(silent)
    }
}

/// Member side: when the moderator was last heard, and the member list it last sent.
#[derive(Debug)]
pub struct ModeratorWatch {
    peer: PeerWatch,
    version: u64,
    members: Vec<Name>,
}

impl ModeratorWatch {
    /// Starts watching a moderator that advertised `bound`.
    pub fn new(bound: Duration, now: Instant) -> Self {
        ModeratorWatch { peer: PeerWatch::new(bound, now), version: 0, members: Vec::new() }
    }

    /// The liveness bound.
    pub fn bound(&self) -> Duration {
        self.peer.bound()
    }

    /// Something came from the moderator.
    pub fn heard(&mut self, now: Instant) {
        self.peer.heard(now);
    }

    /// A GROUP_PING with list `version` and, when the list changed, the list itself.
    pub fn on_list(&mut self, version: u64, members: Option<Vec<Name>>) {
        if let Some(m) = members
            && version >= self.version
        {
            self.version = version;
            self.members = m;
        }
    }

    /// The list version this member holds (what its GROUP_PONG confirms).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The members as the moderator's last list said.
    pub fn members(&self) -> &[Name] {
        &self.members
    }

    /// How long the moderator has been silent, when that is longer than the bound.
    pub fn lost(&self, now: Instant) -> Option<Duration> {
        self.peer.lost(now)
    }
}

/// A point-to-point session's liveness signals (docs/liveness.md, "Point-to-point sessions"),
/// shared by the app's dispatcher, the session's heartbeat task and the session task:
/// - the dispatcher notes every message from the watched peer as it arrives, before any queue,
///   so that neither the session's backlog nor a slow reader makes a live peer look silent;
/// - the heartbeat task looks every quarter of the bound and raises the alarm;
/// - the session task takes the alarm and ends the session.
#[derive(Debug, Default)]
pub struct PeerSignals {
    /// A watch runs (the peer below is set).
    watching: AtomicBool,
    /// The watched peer.
    peer: Mutex<Option<Name>>,
    /// Something from the peer arrived since the heartbeat task last looked.
    heard: AtomicBool,
    /// The silence that raised the alarm, in milliseconds (0: none raised).
    silent_ms: AtomicU64,
    /// A group member: the member-list version it holds (what its heartbeats confirm).
    version: AtomicU64,
    /// Wakes the session task for the alarm.
    alarm: Notify,
}

impl PeerSignals {
    /// Messages from `peer` are signs of life from now on.
    pub fn watch(&self, peer: Name) {
        *self.peer.lock() = Some(peer);
        self.heard.store(false, Ordering::Relaxed);
        self.silent_ms.store(0, Ordering::Relaxed);
        self.watching.store(true, Ordering::Release);
    }

    /// No watch any more.
    pub fn unwatch(&self) {
        self.watching.store(false, Ordering::Release);
        *self.peer.lock() = None;
    }

    /// Dispatcher: `msg` arrived for this session; from the watched peer, it is a sign of life.
    pub fn note(&self, msg: &Message) {
        if !self.watching.load(Ordering::Acquire) || self.heard.load(Ordering::Relaxed) {
            return;
        }
        if let Some(source) = msg.source_name()
            && self.peer.lock().as_ref() == Some(&source)
        {
            self.heard.store(true, Ordering::Relaxed);
        }
    }

    /// Heartbeat task: whether the peer was heard since the last look.
    pub fn take_heard(&self) -> bool {
        self.heard.swap(false, Ordering::Relaxed)
    }

    /// Heartbeat task: the peer was silent for `silent`, past the bound.
    pub fn raise(&self, silent: Duration) {
        let ms = u64::try_from(silent.as_millis()).unwrap_or(u64::MAX).max(1);
        self.silent_ms.store(ms, Ordering::Release);
        self.alarm.notify_one();
    }

    /// Session task: the silence the alarm was raised for, if one was (taken: once).
    pub fn take_alarm(&self) -> Option<Duration> {
        match self.silent_ms.swap(0, Ordering::AcqRel) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// A group member's task: it now holds member-list `version`.
    pub fn set_version(&self, version: u64) {
        self.version.store(version, Ordering::Relaxed);
    }

    /// The member-list version a group member holds.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Session task: resolves when the alarm may have been raised (see [`Self::take_alarm`]).
    pub fn alarmed(&self) -> tokio::sync::futures::Notified<'_> {
        self.alarm.notified()
    }
}

/// How far the app's dispatcher got: odd while it handles a batch of inbound messages, even
/// between batches. A dispatcher held in one batch (waiting for room in a reader's queue, in a
/// full session task, in the node) delivers nothing meanwhile, so a silence heard while it is
/// held is not the peer's (docs/liveness.md, "What counts as a sign of life").
#[derive(Debug, Default)]
pub struct DispatchProgress {
    turns: AtomicU64,
}

impl DispatchProgress {
    /// A batch starts or ends.
    pub fn step(&self) {
        self.turns.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the dispatcher was held in the same batch since the last look of `seen` (which
    /// remembers this look).
    pub fn held_since(&self, seen: &mut u64) -> bool {
        let now = self.turns.load(Ordering::Relaxed);
        let held = now % 2 == 1 && now == *seen;
        *seen = now;
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(a: &str) -> Name {
        Name::new("org", "ns", a, Some(1))
    }

    #[test]
    fn bounds_are_parsed_and_clamped() {
        assert_eq!(parse_bound(Some(&"2500".to_string())), Some(Duration::from_millis(2500)));
        assert_eq!(parse_bound(Some(&"1".to_string())), Some(MIN_LIVENESS));
        assert_eq!(parse_bound(Some(&u64::MAX.to_string())), Some(MAX_LIVENESS));
        assert_eq!(parse_bound(Some(&"soon".to_string())), None);
        assert_eq!(parse_bound(None), None);
        assert_eq!(format_bound(Duration::from_secs(3)), "3000");
        assert_eq!(ping_interval(Duration::from_secs(8)), Duration::from_secs(2));
    }

    #[test]
    fn moderator_finds_silent_members_and_resends_the_list_until_confirmed() {
        let t0 = Instant::now();
        let mut w = MemberWatch::new(Duration::from_secs(1));
        w.watch(n("a"), t0);
        w.watch(n("b"), t0);
        w.membership_changed();
        assert!(w.to_ping().iter().all(|(_, with_list)| *with_list));
        w.heard(&n("a"), t0 + Duration::from_millis(900), Some(w.version()));
        let pings: HashMap<Name, bool> = w.to_ping().into_iter().collect();
        assert_eq!((pings[&n("a")], pings[&n("b")]), (false, true));
        assert!(w.silent(t0 + Duration::from_millis(1000)).is_empty());
        assert_eq!(w.silent(t0 + Duration::from_millis(1500)), vec![n("b")]);
        w.forget(&n("b"));
        assert!(w.silent(t0 + Duration::from_millis(1500)).is_empty());
        w.heard(&n("b"), t0, None); // forgotten: ignored
        assert_eq!(w.to_ping().len(), 1);
    }

    #[test]
    fn member_notices_a_silent_moderator_and_keeps_the_newest_list() {
        let t0 = Instant::now();
        let mut w = ModeratorWatch::new(Duration::from_secs(2), t0);
        assert_eq!(w.lost(t0 + Duration::from_secs(2)), None);
        w.heard(t0 + Duration::from_secs(1));
        assert_eq!(w.lost(t0 + Duration::from_millis(2900)), None);
        assert_eq!(w.lost(t0 + Duration::from_secs(4)), Some(Duration::from_secs(3)));
        w.on_list(3, Some(vec![n("a"), n("b")]));
        w.on_list(2, Some(vec![n("a")])); // older: ignored
        w.on_list(3, None);
        assert_eq!((w.version(), w.members().len()), (3, 2));
    }

    #[test]
    fn a_dispatcher_is_held_only_when_two_looks_find_it_in_the_same_batch() {
        let progress = DispatchProgress::default();
        let mut seen = u64::MAX;
        assert!(!progress.held_since(&mut seen), "idle");
        progress.step(); // a batch starts
        assert!(!progress.held_since(&mut seen), "first look in it");
        assert!(progress.held_since(&mut seen), "still in it at the next look");
        progress.step(); // it ends
        assert!(!progress.held_since(&mut seen), "between batches");
        progress.step();
        progress.step();
        progress.step(); // batches go by; one is running
        assert!(!progress.held_since(&mut seen), "moving");
    }
}
