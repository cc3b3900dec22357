//! The send budget of a point-to-point session: how many bytes it may hold for sending.
//!
//! Policy: a publish is charged [`charge_of`] its payload (payload bytes plus a fixed per-message
//! overhead, capped at the whole budget so that one oversized message can still go alone) before it
//! is handed to the session task. The charge stays taken while the message waits in the task's
//! command queue, in its pending queue (discovery, full window) and, on reliable sessions, in the
//! retransmission buffer until it is acknowledged or times out; the task gives it back then.
//! A publish that finds no room waits (fair, first come first served) up to a bound
//! ([`crate::session::layer`] picks it), then fails with [`BudgetError::TimedOut`]; nothing is
//! dropped. So the bytes a sender holds for one session never exceed [`MAX_BUFFERED_BYTES`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Bytes a point-to-point session may hold for sending (waiting publishes + unacknowledged).
pub const MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;
/// Charged per message on top of its payload (headers, names, metadata, bookkeeping).
pub const MESSAGE_OVERHEAD: usize = 256;

/// Why a charge could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The budget stayed full until the deadline.
    #[error("send buffer stayed full")]
    TimedOut,
    /// The session was deleted.
    #[error("session closed")]
    Closed,
}

/// A byte budget shared by a session's publishers and its task.
#[derive(Debug)]
pub struct SendBudget {
    permits: Arc<Semaphore>,
    capacity: usize,
    peak: AtomicUsize,
}

/// What a payload of `len` bytes is charged against a budget of `capacity` bytes.
pub fn charge_of(len: usize, capacity: usize) -> usize {
    (len + MESSAGE_OVERHEAD).min(capacity)
}

impl SendBudget {
    /// A budget of `capacity` bytes (at least one message overhead).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(MESSAGE_OVERHEAD, Semaphore::MAX_PERMITS);
        SendBudget { permits: Arc::new(Semaphore::new(capacity)), capacity, peak: AtomicUsize::new(0) }
    }

    /// The bound in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// What a payload of `len` bytes is charged.
    pub fn charge(&self, len: usize) -> usize {
        charge_of(len, self.capacity)
    }

    /// Takes `charge` bytes if they are free now.
    pub fn try_take(&self, charge: usize) -> bool {
        match self.permits.try_acquire_many(charge_u32(charge)) {
            Ok(p) => {
                p.forget();
                self.note_peak();
                true
            }
            Err(_) => false,
        }
    }

    /// Takes `charge` bytes, waiting for them until `deadline`.
    pub async fn take(&self, charge: usize, deadline: Instant) -> Result<(), BudgetError> {
        if self.try_take(charge) {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, self.permits.acquire_many(charge_u32(charge))).await {
            Ok(Ok(p)) => {
                p.forget();
                self.note_peak();
                Ok(())
            }
            Ok(Err(_)) => Err(BudgetError::Closed),
            Err(_) => Err(BudgetError::TimedOut),
        }
    }

    /// Gives back what a message was charged (it left the session's buffers).
    pub fn give_back(&self, charge: usize) {
        self.permits.add_permits(charge.min(self.capacity));
    }

    /// Bytes currently charged.
    pub fn in_use(&self) -> usize {
        self.capacity.saturating_sub(self.permits.available_permits())
    }

    /// Most bytes ever charged at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Wakes every waiting publisher with [`BudgetError::Closed`] (session deleted).
    pub fn close(&self) {
        self.permits.close();
    }

    /// Records the highest use seen (for diagnostics).
    fn note_peak(&self) {
        self.peak.fetch_max(self.in_use(), Ordering::Relaxed);
    }
}

/// Charges are capped at the capacity, which is at most `Semaphore::MAX_PERMITS`; u32 covers
/// every realistic bound and saturates beyond.
fn charge_u32(charge: usize) -> u32 {
    u32::try_from(charge).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waits_for_room_then_times_out() {
        let b = SendBudget::new(1000);
        assert_eq!(b.charge(10_000), 1000);
        assert!(b.try_take(b.charge(500)));
        assert_eq!(b.in_use(), 756);
        assert!(!b.try_take(b.charge(100)));
        let mut waiting = std::pin::pin!(b.take(b.charge(100), Instant::now() + Duration::from_secs(60)));
        assert!(futures::poll!(&mut waiting).is_pending(), "no room yet: the publish waits");
        b.give_back(756);
        assert_eq!(waiting.await, Ok(()));
        assert_eq!(b.in_use(), 356);
        assert_eq!(b.take(1000, Instant::now() + Duration::from_millis(20)).await, Err(BudgetError::TimedOut));
        assert_eq!(b.peak(), 756);
        b.close();
        assert_eq!(b.take(1000, Instant::now() + Duration::from_secs(60)).await, Err(BudgetError::Closed));
    }
}
