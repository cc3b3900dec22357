//! The app-wide side of the delivery queues: arrival order across sessions (`recv_any`) and
//! new-session notifications. Policy: see [`super`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{ANY_QUEUE_CAPACITY, NEW_SESSION_QUEUE_CAPACITY, SessionQueue};
use crate::error::SlimError;
use crate::session::{Bytes, MessageInfo, RawDelivery as Delivery, RawMessage};

/// App-wide queues: arrival order across sessions and new-session notifications.
pub struct Inbox {
    seq: AtomicU64,
    any: Mutex<VecDeque<(u64, Arc<SessionQueue>)>>,
    any_notify: Notify,
    any_discarded: AtomicU64,
    new_sessions: Mutex<VecDeque<RawMessage>>,
    new_notify: Notify,
    new_dropped: AtomicU64,
    /// Messages a session queue could not take within the delivery bound (each reported).
    pub(super) queue_dropped: AtomicU64,
    /// Times a producer found a session queue full and waited for its reader (back-pressure,
    /// nothing lost by itself): proof that a slow reader really held the producer back.
    pub(super) full_waits: AtomicU64,
    /// `MessageLost` errors handed to sessions (every cause: queue, RTX, decryption, ...).
    pub(super) lost_reported: AtomicU64,
    /// Messages for a session that was deleted while they were on their way (nobody to tell).
    pub(super) closed_drops: AtomicU64,
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
            queue_dropped: AtomicU64::new(0),
            full_waits: AtomicU64::new(0),
            lost_reported: AtomicU64::new(0),
            closed_drops: AtomicU64::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Inbox {
    /// A new shared inbox.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The next arrival sequence number (shared by every queue of the app).
    pub(super) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Records that `queue` got an item with sequence number `seq` (for `recv_any`).
    pub(super) fn push_token(&self, seq: u64, queue: &Arc<SessionQueue>) {
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

    /// The oldest item still waiting in any session queue.
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
    pub fn announce(&self, info: Arc<MessageInfo>, blob: Bytes) {
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
    pub fn try_recv_new_session(&self) -> Option<RawMessage> {
        self.new_sessions.lock().pop_front()
    }

    /// Waits for the next new-session notification.
    pub async fn recv_new_session(&self) -> Result<RawMessage, SlimError> {
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

    /// App-wide delivery counters, by name (see docs/reliability.md).
    pub fn counters(&self) -> [(&'static str, u64); 6] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("session_queue_dropped", get(&self.queue_dropped)),
            ("session_queue_full_waits", get(&self.full_waits)),
            ("messages_lost_reported", get(&self.lost_reported)),
            ("closed_session_drops", get(&self.closed_drops)),
            ("any_queue_tokens_discarded", get(&self.any_discarded)),
            ("new_session_notifications_dropped", get(&self.new_dropped)),
        ]
    }
}
