//! Delivery queues between the session layer and the application.
//!
//! Policy (bounded everywhere, nothing dropped silently; the whole catalogue of drop points is
//! docs/reliability.md):
//! - each session has its own queue of [`DEFAULT_SESSION_QUEUE_CAPACITY`] items (`capacity`) and
//!   [`DEFAULT_SESSION_QUEUE_BYTES`] payload bytes, whichever fills first ("full" below means
//!   either).
//! - data that the session cannot ask again (unreliable point to point; multicast messages
//!   already released in order by the reorder window) waits for room
//!   ([`SessionQueue::push_wait`]): the producer (the app dispatcher or the session task) stops
//!   reading, which back-pressures through the embedded node's bounded queues and HTTP/2 flow
//!   control to the sender. The wait is bounded by [`DELIVERY_WAIT_BOUND`]: after that the item
//!   is dropped and REPORTED: the reader gets a `MessageLost` error naming the message id in its
//!   place in the stream ([`SessionQueue::report_lost`]), and it is counted in
//!   [`SessionQueue::dropped`] and app-wide in [`Inbox::counters`]. The queue is then marked
//!   stalled: further items are dropped (and reported) at once until the reader makes room
//!   again, so one stuck session stalls the app's other sessions for at most one bound per
//!   episode.
//! - reliable point-to-point data is admitted only when the queue has room
//!   ([`SessionQueue::wait_room`], same bound); a message that finds no room is not
//!   acknowledged, so the sender RECOVERS it by retransmission or, after its retries, reports
//!   `SLIMTimeoutError` for it. What the reorder window releases after admission is queued
//!   unconditionally ([`SessionQueue::push_force`]), so a reliable session's queue can hold up to
//!   `capacity` + the receive window.
//! - errors for a session (`Timeout`, `MessageLost`, `NoRoute`) are queued unconditionally: each
//!   stands for a message that was published or expected. Consecutive lost ids of one producer
//!   share one queue entry (a range), so a reader that stalls for a long time costs a few bytes
//!   per run of losses, not per message; it still gets one `MessageLost` per id.
//! - `recv_any` (arrival order across sessions) reads the same items through a queue of
//!   lightweight tokens; an item is consumed once, by whichever reader takes it first. When the
//!   token queue is full its oldest token is discarded (counted): that item is still reachable
//!   through its session queue, and by `recv_any` once a later token of the same session is read.
//! - the new-session queue holds a copy of the first message of every session this app did not
//!   create; full → the notification is dropped and counted (the session and its messages stay
//!   readable by id and through `recv_any`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{Bytes, MessageInfo, RawDelivery as Delivery, RawMessage};
use crate::error::SlimError;
use crate::wire::Name;

mod inbox;

pub use inbox::Inbox;

/// Items a session queue holds before it drops new ones.
pub const DEFAULT_SESSION_QUEUE_CAPACITY: usize = 16 * 1024;
/// Payload bytes a session queue holds before it counts as full (large messages fill it first:
/// 64 messages of 64 KiB). 4 MiB, not more: the reader copies each payload into a Python `bytes`
/// when it takes it, and payloads that waited behind 32 MiB of others (the former bound) had left
/// the CPU caches, so that copy and the receiving app's other work on them cost more (64 KiB
/// stream through a node: receiver CPU per message 0.77-0.87x with 4 MiB; benches/README.md,
/// "Large messages"). A sender still keeps its own 16 MiB in flight (`session::budget`).
pub const DEFAULT_SESSION_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Longest a producer waits for room in a full session queue before it drops (and counts).
pub const DELIVERY_WAIT_BOUND: Duration = Duration::from_secs(5);
/// Tokens the any-session queue holds before it discards the oldest.
pub const ANY_QUEUE_CAPACITY: usize = 64 * 1024;
/// New-session notifications held before new ones are dropped.
pub const NEW_SESSION_QUEUE_CAPACITY: usize = 1024;

/// Loss ranges looked at (from the back) when a new lost id may extend one of them.
const LOSS_MERGE_SCAN: usize = 16;

/// One entry of a session queue.
enum Item {
    /// A message or an error, as it will be handed out.
    One(Delivery),
    /// Lost ids `first ..= last` of one producer, handed out as one `MessageLost` per id.
    Lost { source: Option<Name>, first: u32, last: u32 },
    /// What ended the session (its peer did: `PeerClosed`), last in the queue: handed out to
    /// the session's readers only, never to the any-session reader (a peer that is done is not an
    /// error of the app's whole stream), and not counted as held (see `SessionQueue::drained`).
    End(SlimError),
}

impl Item {
    /// Payload bytes the item holds.
    fn size(&self) -> usize {
        match self {
            Item::One(Ok((_, blob))) => blob.len(),
            _ => 0,
        }
    }

    /// True for errors and loss ranges (anything but a message).
    fn is_error(&self) -> bool {
        !matches!(self, Item::One(Ok(_)))
    }
}

/// What became of a push.
enum Pushed {
    Queued,
    /// No room: the item is given back.
    Full(Delivery),
    /// The session is gone: nobody to deliver to or to report to.
    Closed,
}

struct QueueState {
    items: VecDeque<(u64, Item)>,
    /// Payload bytes of `items`.
    bytes: usize,
    closed: bool,
    /// Run once the queue is closed and its last item was taken (see [`SessionQueue::when_drained`]).
    on_drained: Option<DrainedHook>,
}

/// What a closed queue runs once its reader took everything it held.
pub type DrainedHook = Box<dyn FnOnce() + Send>;

/// What a pop leaves to do outside the lock.
struct AfterPop {
    /// The pop took a full queue below capacity (a producer may be waiting for room).
    made_room: bool,
    /// The pop emptied a closed queue.
    drained: Option<DrainedHook>,
}

impl QueueState {
    /// The session's end is queued: nothing more comes after it.
    fn ended(&self) -> bool {
        matches!(self.items.back(), Some((_, Item::End(_))))
    }

    /// Takes the front delivery: a whole item, or the first id of a loss range (the rest of the
    /// range stays in front, under the same sequence number).
    fn take_front(&mut self, session_id: u32) -> Option<(u64, Delivery)> {
        let (seq, item) = self.items.front_mut()?;
        let seq = *seq;
        if let Item::Lost { source, first, last } = item
            && *first < *last
        {
            let lost = SlimError::MessageLost { session_id, message_id: *first, producer: source.clone() };
            *first = first.wrapping_add(1);
            return Some((seq, Err(lost)));
        }
        let (seq, item) = self.items.pop_front()?;
        self.bytes -= item.size();
        let d = match item {
            Item::One(d) => d,
            Item::End(e) => Err(e),
            Item::Lost { source, first, .. } => {
                Err(SlimError::MessageLost { session_id, message_id: first, producer: source })
            }
        };
        Some((seq, d))
    }
}

/// The bounded queue of one session.
pub struct SessionQueue {
    session_id: u32,
    capacity: usize,
    byte_capacity: usize,
    state: Mutex<QueueState>,
    notify: Notify,
    /// Signalled when a pop takes a full queue below capacity.
    room: Notify,
    /// A producer gave up waiting; cleared when the reader makes room.
    stalled: AtomicBool,
    dropped: AtomicU64,
    inbox: Arc<Inbox>,
}

impl std::fmt::Debug for SessionQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionQueue").field("session_id", &self.session_id).finish_non_exhaustive()
    }
}

impl SessionQueue {
    /// A new, empty queue of `capacity` items (and [`DEFAULT_SESSION_QUEUE_BYTES`]) feeding
    /// `inbox`'s arrival order.
    pub fn new(session_id: u32, capacity: usize, inbox: Arc<Inbox>) -> Arc<Self> {
        Self::with_bytes(session_id, capacity, DEFAULT_SESSION_QUEUE_BYTES, inbox)
    }

    /// A new, empty queue of `capacity` items and `byte_capacity` payload bytes.
    pub fn with_bytes(session_id: u32, capacity: usize, byte_capacity: usize, inbox: Arc<Inbox>) -> Arc<Self> {
        Arc::new(SessionQueue {
            session_id,
            capacity: capacity.max(1),
            byte_capacity: byte_capacity.max(1),
            state: Mutex::new(QueueState { items: VecDeque::new(), bytes: 0, closed: false, on_drained: None }),
            notify: Notify::new(),
            room: Notify::new(),
            stalled: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            inbox,
        })
    }

    /// Queues an item without waiting. A message that finds the queue full is dropped and
    /// reported (a `MessageLost` for its id takes its place, counted); false then, and when the
    /// queue is closed.
    pub fn push(self: &Arc<Self>, item: Delivery) -> bool {
        match self.push_inner(item, false) {
            Pushed::Queued => true,
            Pushed::Full(item) => {
                self.drop_and_report(item);
                false
            }
            Pushed::Closed => false,
        }
    }

    /// Queues an item even when the queue is full (errors, and reliable messages released by a
    /// reorder window after admission); false only when closed.
    pub fn push_force(self: &Arc<Self>, item: Delivery) -> bool {
        matches!(self.push_inner(item, true), Pushed::Queued)
    }

    /// True when the queue holds `capacity` items or `byte_capacity` payload bytes.
    fn full(&self, st: &QueueState) -> bool {
        st.items.len() >= self.capacity || st.bytes >= self.byte_capacity
    }

    /// Queues `item`; gives it back when the queue is full (not forced).
    fn push_inner(self: &Arc<Self>, item: Delivery, force: bool) -> Pushed {
        let seq = self.inbox.next_seq();
        {
            let mut st = self.state.lock();
            if st.closed || st.ended() {
                drop(st);
                self.inbox.closed_drops.fetch_add(1, Ordering::Relaxed);
                return Pushed::Closed;
            }
            if !force && self.full(&st) {
                return Pushed::Full(item);
            }
            let item = Item::One(item);
            st.bytes += item.size();
            st.items.push_back((seq, item));
        }
        self.notify.notify_one();
        self.inbox.push_token(seq, self);
        Pushed::Queued
    }

    /// A message the queue could not take: counted, and reported to the reader in its place.
    fn drop_and_report(self: &Arc<Self>, item: Delivery) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.inbox.queue_dropped.fetch_add(1, Ordering::Relaxed);
        match item {
            Ok((info, _)) => {
                tracing::debug!(
                    session = self.session_id,
                    message = info.message_id,
                    "session queue full: message dropped, reported as lost"
                );
                self.report_lost(Some(&info.source), info.message_id);
            }
            // An error is never refused for lack of room; keep it anyway.
            Err(e) => {
                self.push_force(Err(e));
            }
        }
    }

    /// Reports message `message_id` of `source` as lost: the reader gets a `MessageLost` for it
    /// in its place in the stream. Consecutive ids of one producer share one entry. Never waits,
    /// never refused for lack of room; does nothing once the queue is closed.
    pub fn report_lost(self: &Arc<Self>, source: Option<&Name>, message_id: u32) {
        self.inbox.lost_reported.fetch_add(1, Ordering::Relaxed);
        let seq = {
            let mut st = self.state.lock();
            if st.closed || st.ended() {
                return;
            }
            let mut merged = None;
            for (seq, item) in st.items.iter_mut().rev().take(LOSS_MERGE_SCAN) {
                let Item::Lost { source: s, last, .. } = item else { break };
                if s.as_ref() == source && last.wrapping_add(1) == message_id {
                    *last = message_id;
                    merged = Some(*seq);
                    break;
                }
            }
            match merged {
                Some(seq) => seq,
                None => {
                    let seq = self.inbox.next_seq();
                    let item = Item::Lost { source: source.cloned(), first: message_id, last: message_id };
                    st.items.push_back((seq, item));
                    seq
                }
            }
        };
        self.notify.notify_one();
        // One token per id, so `recv_any` hands out every id of a range.
        self.inbox.push_token(seq, self);
    }

    /// Waits (up to `bound`) until the queue has room. False when it is closed, or when it stayed
    /// full for `bound` (the queue is then marked stalled and later waits return false at once
    /// until the reader makes room).
    pub async fn wait_room(&self, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        let mut counted = false;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let st = self.state.lock();
                if st.closed {
                    return false;
                }
                if !self.full(&st) {
                    self.stalled.store(false, Ordering::Relaxed);
                    return true;
                }
            }
            if self.stalled.load(Ordering::Relaxed) {
                return false;
            }
            if !counted {
                // Back-pressure applied: the producer waits for the reader (counted once per wait).
                self.inbox.full_waits.fetch_add(1, Ordering::Relaxed);
                counted = true;
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                self.stalled.store(true, Ordering::Relaxed);
                tracing::debug!(session = self.session_id, "session queue stayed full: reader stalled");
                return false;
            }
        }
    }

    /// Queues an item, waiting (up to `bound`) for room; when it had to give up, the message is
    /// dropped and reported (a `MessageLost` for its id, counted) and false is returned.
    pub async fn push_wait(self: &Arc<Self>, item: Delivery, bound: Duration) -> bool {
        if !self.has_room() && !self.wait_room(bound).await {
            if self.state.lock().closed {
                self.inbox.closed_drops.fetch_add(1, Ordering::Relaxed);
            } else {
                self.drop_and_report(item);
            }
            return false;
        }
        self.push_force(item)
    }

    /// True when the queue is open and below capacity.
    pub fn has_room(&self) -> bool {
        let st = self.state.lock();
        !st.closed && !self.full(&st)
    }

    /// Takes the front delivery out of `st`, and what is then left to do outside the lock
    /// ([`Self::after_pop`]).
    fn pop_locked(&self, st: &mut QueueState) -> (Option<(u64, Delivery)>, AfterPop) {
        let was_full = self.full(st);
        let item = st.take_front(self.session_id);
        let made_room = item.is_some() && was_full && !self.full(st);
        (item, AfterPop { made_room, drained: Self::drained(st) })
    }

    /// The hook to run when `st` is closed and holds nothing but its end (taken: it runs once).
    fn drained(st: &mut QueueState) -> Option<DrainedHook> {
        // Looked at only once closed (and then the end, if any, is the only item left or behind
        // the first message, where `all` stops).
        let only_end = st.closed && st.items.iter().all(|(_, item)| matches!(item, Item::End(_)));
        if only_end { st.on_drained.take() } else { None }
    }

    /// Queues what ended the session, after everything else, for this session's readers only
    /// (no token for the any-session reader; see [`Item::End`]).
    pub fn push_end(&self, err: SlimError) {
        let seq = self.inbox.next_seq();
        {
            let mut st = self.state.lock();
            if st.closed {
                return; // closed already: its readers got SessionClosed
            }
            st.items.push_back((seq, Item::End(err)));
        }
        self.notify.notify_one();
    }

    /// True while what ended the session waits for a reader (see `SessionTable::reader`).
    pub fn holds_end(&self) -> bool {
        self.state.lock().ended()
    }

    /// After a pop, outside the lock: wakes producers waiting for room, runs the drained hook.
    fn after_pop(&self, after: AfterPop) {
        if after.made_room {
            self.room.notify_waiters();
        }
        if let Some(hook) = after.drained {
            hook();
        }
    }

    /// Runs `hook` once this queue is closed and its reader took every item it holds: now if it
    /// already is, else after the pop that empties it. A session closed by its peer stays
    /// readable until then (`SessionTable::retire_when_drained`).
    pub fn when_drained(&self, hook: DrainedHook) {
        let mut st = self.state.lock();
        st.on_drained = Some(hook);
        let now = Self::drained(&mut st);
        drop(st);
        if let Some(hook) = now {
            hook();
        }
    }

    /// Takes the next item without waiting.
    pub fn try_pop(&self) -> Option<Delivery> {
        let (item, after) = self.pop_locked(&mut self.state.lock());
        self.after_pop(after);
        Some(item?.1)
    }

    /// Takes the messages waiting (up to `max`) without waiting, appending them to `out`, and
    /// stops before the first error so that errors keep their place in the stream: only when
    /// `out` is empty and the front item is an error is that error taken and returned.
    pub fn try_pop_batch(&self, out: &mut Vec<RawMessage>, max: usize) -> Result<usize, SlimError> {
        let (taken, after, err) = {
            let mut st = self.state.lock();
            let was_full = self.full(&st);
            let mut taken = 0;
            let mut err = None;
            while taken < max {
                match st.items.front() {
                    None => break,
                    Some((_, item)) if item.is_error() && (taken > 0 || !out.is_empty()) => break,
                    Some(_) => {}
                }
                match st.take_front(self.session_id) {
                    Some((_, Ok(m))) => {
                        out.push(m);
                        taken += 1;
                    }
                    Some((_, Err(e))) => {
                        err = Some(e);
                        taken += 1;
                        break;
                    }
                    None => break,
                }
            }
            let after =
                AfterPop { made_room: taken > 0 && was_full && !self.full(&st), drained: Self::drained(&mut st) };
            (taken, after, err)
        };
        self.after_pop(after);
        match err {
            Some(e) => Err(e),
            None => Ok(taken),
        }
    }

    /// Waits for the next item; `SessionClosed` once the session is gone and the queue is drained.
    pub async fn pop(&self) -> Delivery {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.state.lock();
                if let (Some((_, d)), after) = self.pop_locked(&mut st) {
                    drop(st);
                    self.after_pop(after);
                    return d;
                }
                if st.closed {
                    return Err(SlimError::SessionClosed);
                }
            }
            notified.await;
        }
    }

    /// Pops the front item if it is not newer than `seq` (used by the any-session reader).
    pub(super) fn pop_if_not_after(&self, seq: u64) -> Option<Delivery> {
        let mut st = self.state.lock();
        match st.items.front() {
            Some((front, _)) if *front <= seq => {
                let (d, after) = self.pop_locked(&mut st);
                drop(st);
                self.after_pop(after);
                d.map(|(_, d)| d)
            }
            _ => None,
        }
    }

    /// Stops accepting items and wakes every waiter.
    pub fn close(&self) {
        let drained = {
            let mut st = self.state.lock();
            st.closed = true;
            Self::drained(&mut st)
        };
        self.notify.notify_waiters();
        self.room.notify_waiters();
        if let Some(hook) = drained {
            hook();
        }
    }

    /// Entries waiting (a range of lost ids counts as one).
    pub fn len(&self) -> usize {
        self.state.lock().items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Announces (through the app inbox) the session this queue belongs to.
    pub fn inbox_announce(&self, info: Arc<MessageInfo>, blob: Bytes) {
        self.inbox.announce(info, blob);
    }

    /// Messages this queue could not take (full past the delivery bound): each was reported to
    /// the reader as `MessageLost`.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Name;

    fn item(sid: u32, n: u32) -> Delivery {
        let mut info = MessageInfo::for_session(sid);
        info.message_id = n;
        info.source = Name::new("a", "b", "c", Some(1));
        Ok((Arc::new(info), Bytes::from(vec![n as u8])))
    }

    #[tokio::test]
    async fn any_reader_sees_arrival_order_and_skips_taken_items() {
        let inbox = Inbox::new();
        let a = SessionQueue::new(1, 8, inbox.clone());
        let b = SessionQueue::new(2, 8, inbox.clone());
        a.push(item(1, 0));
        b.push(item(2, 0));
        a.push(item(1, 1));
        // Taken through the session queue: the any-reader must not see it again.
        assert_eq!(b.try_pop().unwrap().unwrap().0.session_id, 2);
        let first = inbox.recv_any().await.unwrap().0;
        assert_eq!((first.session_id, first.message_id), (1, 0));
        let second = inbox.recv_any().await.unwrap().0;
        assert_eq!((second.session_id, second.message_id), (1, 1));
        assert!(inbox.try_recv_any().is_none());
    }

    fn lost(sid: u32, n: u32) -> SlimError {
        SlimError::MessageLost { session_id: sid, message_id: n, producer: Some(Name::new("a", "b", "c", Some(1))) }
    }

    #[tokio::test]
    async fn full_queue_waits_for_the_reader_then_reports_what_it_drops() {
        let inbox = Inbox::new();
        let a = SessionQueue::new(1, 1, inbox.clone());
        assert!(a.push_wait(item(1, 0), Duration::from_secs(5)).await);
        let reader = {
            let a = a.clone();
            tokio::spawn(async move { a.pop().await })
        };
        // Waits until the reader takes item 0, then queues item 1.
        assert!(a.push_wait(item(1, 1), Duration::from_secs(5)).await);
        assert_eq!(reader.await.unwrap().unwrap().0.message_id, 0);
        // Nobody reads: dropped after the bound, reported and counted; the next push drops at once.
        assert!(!a.push_wait(item(1, 2), Duration::from_millis(50)).await);
        assert!(!a.push_wait(item(1, 3), Duration::from_secs(3600)).await);
        assert_eq!(a.dropped(), 2);
        assert_eq!(a.len(), 2, "item 1 and one range of lost ids");
        let mut out = Vec::new();
        assert_eq!(a.try_pop_batch(&mut out, 10), Ok(1));
        assert_eq!(out[0].0.message_id, 1);
        assert_eq!(a.try_pop_batch(&mut Vec::new(), 10), Err(lost(1, 2)));
        assert_eq!(a.try_pop(), Some(Err(lost(1, 3))));
        assert!(a.push_wait(item(1, 4), Duration::from_millis(50)).await);
        assert!(a.push_force(item(1, 5)));
        assert_eq!(a.len(), 2);
        let counters = inbox.counters();
        assert!(counters.contains(&("session_queue_dropped", 2)), "{counters:?}");
        assert!(counters.contains(&("messages_lost_reported", 2)), "{counters:?}");
        // Pushes 1 and 2 waited on a full queue; push 3 found it stalled and did not wait, push 4
        // found room.
        assert!(counters.contains(&("session_queue_full_waits", 2)), "{counters:?}");
    }

    #[tokio::test]
    async fn lost_ids_of_one_producer_share_an_entry_and_each_is_reported() {
        let inbox = Inbox::new();
        let a = SessionQueue::new(1, 8, inbox.clone());
        let p = Name::new("a", "b", "c", Some(1));
        let q = Name::new("a", "b", "d", Some(2));
        for id in 10..1010 {
            a.report_lost(Some(&p), id);
            a.report_lost(Some(&q), id);
        }
        assert_eq!(a.len(), 2, "one range per producer");
        a.push(item(1, 7));
        for id in 10..1010 {
            let Some(Err(SlimError::MessageLost { message_id, producer: source, .. })) = a.try_pop() else { panic!() };
            assert_eq!((message_id, source.as_ref()), (id, Some(&p)));
        }
        // Through the arrival-order reader as well.
        for id in 10..1010 {
            let Some(Err(SlimError::MessageLost { message_id, producer: source, .. })) = inbox.try_recv_any() else {
                panic!()
            };
            assert_eq!((message_id, source.as_ref()), (id, Some(&q)));
        }
        assert_eq!(inbox.try_recv_any().unwrap().unwrap().0.message_id, 7);
        assert!(a.try_pop().is_none() && inbox.try_recv_any().is_none());
    }

    #[test]
    fn batches_stop_before_an_error_and_return_it_alone() {
        let inbox = Inbox::new();
        let a = SessionQueue::new(1, 8, inbox);
        a.push(item(1, 0));
        a.push(item(1, 1));
        a.push_force(Err(lost(1, 9)));
        a.push(item(1, 2));
        let mut out = Vec::new();
        assert_eq!(a.try_pop_batch(&mut out, 100), Ok(2));
        // A caller holding messages leaves the error queued.
        assert_eq!(a.try_pop_batch(&mut out, 100), Ok(0));
        let mut rest = Vec::new();
        assert_eq!(a.try_pop_batch(&mut rest, 100), Err(lost(1, 9)));
        assert_eq!(a.try_pop_batch(&mut out, 100), Ok(1));
        assert_eq!(out.iter().map(|m| m.0.message_id).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(a.try_pop_batch(&mut rest, 100), Ok(0));
    }

    #[test]
    fn payload_bytes_fill_the_queue_before_its_item_count() {
        let inbox = Inbox::new();
        let a = SessionQueue::with_bytes(1, 100, 10, inbox);
        let big = |n: u32| -> Delivery { item(1, n).map(|(i, _)| (i, Bytes::from(vec![0u8; 6]))) };
        assert!(a.push(big(0)));
        assert!(a.has_room());
        assert!(a.push(big(1)));
        assert!(!a.has_room(), "12 bytes queued against a bound of 10");
        assert!(!a.push(big(2)), "no room: reported as lost instead");
        assert!(a.push_force(Err(lost(1, 9))));
        assert!(a.try_pop().is_some());
        assert!(a.has_room());
        let mut out = Vec::new();
        assert_eq!(a.try_pop_batch(&mut out, 10), Ok(1));
        assert_eq!(a.try_pop_batch(&mut Vec::new(), 10), Err(lost(1, 2)));
        assert_eq!(a.try_pop_batch(&mut Vec::new(), 10), Err(lost(1, 9)));
        assert!(a.is_empty() && a.has_room());
    }

    #[tokio::test]
    async fn full_queue_reports_counts_and_closes() {
        let inbox = Inbox::new();
        let a = SessionQueue::new(1, 2, inbox.clone());
        assert!(a.push(item(1, 0)));
        assert!(a.push(item(1, 1)));
        assert!(!a.push(item(1, 2)));
        assert_eq!(a.dropped(), 1);
        a.close();
        assert!(!a.push(item(1, 3)), "closed: nobody to deliver to");
        assert!(a.pop().await.is_ok());
        assert!(a.pop().await.is_ok());
        assert_eq!(a.pop().await, Err(lost(1, 2)));
        assert_eq!(a.pop().await, Err(SlimError::SessionClosed));
        assert!(inbox.counters().contains(&("closed_session_drops", 1)));
    }
}
