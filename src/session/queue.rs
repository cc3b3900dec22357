//! Delivery queues between the session layer and the application.
//!
//! Policy (bounded everywhere, nothing dropped silently):
//! - each session has its own queue of [`DEFAULT_SESSION_QUEUE_CAPACITY`] items. When it is full
//!   the newest item is dropped, counted in [`SessionQueue::dropped`] and logged at debug. The
//!   producer (the app dispatcher or a session task) never waits, so one slow session cannot stall
//!   the others. Reliable sessions see such a drop as a loss that the peer does not retransmit
//!   (the message was already acknowledged), so size the queue or keep reading.
//! - `recv_any` (arrival order across sessions) reads the same items through a queue of
//!   lightweight tokens; an item is consumed once, by whichever reader takes it first. When the
//!   token queue is full its oldest token is discarded (counted): that item is still reachable
//!   through its session queue.
//! - the new-session queue holds a copy of the first message of every session this app did not
//!   create; full → dropped and counted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{Delivery, MessageInfo};
use crate::error::SlimError;

/// Items a session queue holds before it drops new ones.
pub const DEFAULT_SESSION_QUEUE_CAPACITY: usize = 16 * 1024;
/// Tokens the any-session queue holds before it discards the oldest.
pub const ANY_QUEUE_CAPACITY: usize = 64 * 1024;
/// New-session notifications held before new ones are dropped.
pub const NEW_SESSION_QUEUE_CAPACITY: usize = 1024;

struct QueueState {
    items: VecDeque<(u64, Delivery)>,
    closed: bool,
}

/// The bounded queue of one session.
pub struct SessionQueue {
    session_id: u32,
    capacity: usize,
    state: Mutex<QueueState>,
    notify: Notify,
    dropped: AtomicU64,
    inbox: Arc<Inbox>,
}

impl std::fmt::Debug for SessionQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionQueue").field("session_id", &self.session_id).finish_non_exhaustive()
    }
}

impl SessionQueue {
    /// A new, empty queue feeding `inbox`'s arrival order.
    pub fn new(session_id: u32, capacity: usize, inbox: Arc<Inbox>) -> Arc<Self> {
        Arc::new(SessionQueue {
            session_id,
            capacity: capacity.max(1),
            state: Mutex::new(QueueState { items: VecDeque::new(), closed: false }),
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
            inbox,
        })
    }

    /// Queues an item; false (and counted) when the queue is full or closed.
    pub fn push(self: &Arc<Self>, item: Delivery) -> bool {
        let seq = self.inbox.next_seq();
        {
            let mut st = self.state.lock();
            if st.closed || st.items.len() >= self.capacity {
                drop(st);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(session = self.session_id, "session queue full or closed: message dropped");
                return false;
            }
            st.items.push_back((seq, item));
        }
        self.notify.notify_one();
        self.inbox.push_token(seq, self);
        true
    }

    /// Takes the next item without waiting.
    pub fn try_pop(&self) -> Option<Delivery> {
        self.state.lock().items.pop_front().map(|(_, d)| d)
    }

    /// Waits for the next item; `SessionClosed` once the session is gone and the queue is drained.
    pub async fn pop(&self) -> Delivery {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.state.lock();
                if let Some((_, d)) = st.items.pop_front() {
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
    fn pop_if_not_after(&self, seq: u64) -> Option<Delivery> {
        let mut st = self.state.lock();
        match st.items.front() {
            Some((front, _)) if *front <= seq => st.items.pop_front().map(|(_, d)| d),
            _ => None,
        }
    }

    /// Stops accepting items and wakes every waiter.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.notify.notify_waiters();
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.state.lock().items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Announces (through the app inbox) the session this queue belongs to.
    pub fn inbox_announce(&self, info: MessageInfo, blob: Vec<u8>) {
        self.inbox.announce(info, blob);
    }

    /// Items dropped because the queue was full or closed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// App-wide queues: arrival order across sessions and new-session notifications.
pub struct Inbox {
    seq: AtomicU64,
    any: Mutex<VecDeque<(u64, Arc<SessionQueue>)>>,
    any_notify: Notify,
    any_discarded: AtomicU64,
    new_sessions: Mutex<VecDeque<(MessageInfo, Vec<u8>)>>,
    new_notify: Notify,
    new_dropped: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox {
            seq: AtomicU64::new(0),
            any: Mutex::new(VecDeque::new()),
            any_notify: Notify::new(),
            any_discarded: AtomicU64::new(0),
            new_sessions: Mutex::new(VecDeque::new()),
            new_notify: Notify::new(),
            new_dropped: AtomicU64::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Inbox {
    /// A new shared inbox.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn push_token(&self, seq: u64, queue: &Arc<SessionQueue>) {
        {
            let mut any = self.any.lock();
            if any.len() >= ANY_QUEUE_CAPACITY {
                any.pop_front();
                self.any_discarded.fetch_add(1, Ordering::Relaxed);
            }
            any.push_back((seq, queue.clone()));
        }
        self.any_notify.notify_one();
    }

    fn try_pop_any(&self) -> Option<Delivery> {
        loop {
            let (seq, queue) = self.any.lock().pop_front()?;
            if let Some(d) = queue.pop_if_not_after(seq) {
                return Some(d);
            }
            // Stale token: its item was already taken through the session queue.
        }
    }

    /// Next item of any session in arrival order, without waiting.
    pub fn try_recv_any(&self) -> Option<Delivery> {
        self.try_pop_any()
    }

    /// Waits for the next item of any session.
    pub async fn recv_any(&self) -> Delivery {
        loop {
            let notified = self.any_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(d) = self.try_pop_any() {
                return d;
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(SlimError::Closed);
            }
            notified.await;
        }
    }

    /// Announces a session created by a peer, with a copy of its first message.
    pub fn announce(&self, info: MessageInfo, blob: Vec<u8>) {
        {
            let mut q = self.new_sessions.lock();
            if q.len() >= NEW_SESSION_QUEUE_CAPACITY {
                drop(q);
                self.new_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(session = info.session_id, "new-session queue full: notification dropped");
                return;
            }
            q.push_back((info, blob));
        }
        self.new_notify.notify_one();
    }

    /// Next new-session notification, without waiting.
    pub fn try_recv_new_session(&self) -> Option<(MessageInfo, Vec<u8>)> {
        self.new_sessions.lock().pop_front()
    }

    /// Waits for the next new-session notification.
    pub async fn recv_new_session(&self) -> Result<(MessageInfo, Vec<u8>), SlimError> {
        loop {
            let notified = self.new_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(x) = self.try_recv_new_session() {
                return Ok(x);
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(SlimError::Closed);
            }
            notified.await;
        }
    }

    /// Wakes every reader with `Closed` once their queues are drained.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.any_notify.notify_waiters();
        self.new_notify.notify_waiters();
    }

    /// (tokens discarded from the any-session queue, new-session notifications dropped).
    pub fn drop_counts(&self) -> (u64, u64) {
        (self.any_discarded.load(Ordering::Relaxed), self.new_dropped.load(Ordering::Relaxed))
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
        Ok((info, vec![n as u8]))
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

    #[tokio::test]
    async fn full_queue_drops_and_counts() {
        let inbox = Inbox::new();
        let a = SessionQueue::new(1, 2, inbox.clone());
        assert!(a.push(item(1, 0)));
        assert!(a.push(item(1, 1)));
        assert!(!a.push(item(1, 2)));
        assert_eq!(a.dropped(), 1);
        a.close();
        assert!(a.pop().await.is_ok());
        assert!(a.pop().await.is_ok());
        assert_eq!(a.pop().await, Err(SlimError::SessionClosed));
    }
}
