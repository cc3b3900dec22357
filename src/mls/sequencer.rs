//! A participant's ordering of MLS control messages (docs/protocol.md "MLS", commit order).
//!
//! The moderator numbers every COMMIT and PROPOSAL it broadcasts (`message_id`, from its
//! `mls_seq` counter); the WELCOME tells a new member where it starts (`MLS_INIT_COMMIT_ID`).
//! The participant applies them strictly in order `last+1, last+2, …`, holds early ones back,
//! and silently drops stale or repeated ones (no ACK).

use std::collections::BTreeMap;

/// What to do with an offered control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Stored (or already stored): ACK it, then drain [`HandshakeSequencer::next_ready`].
    Accepted,
    /// Id ≤ the last applied one: a retransmission of something already applied. Drop, no ACK.
    Stale,
    /// No Welcome yet, so there is no position to order from: drop, no ACK (an error).
    NoWelcomeYet,
    /// Too many messages are waiting for a gap to fill: drop, no ACK (the moderator resends).
    Full,
}

/// Orders items (typically the MLS blob plus its kind) by moderator-assigned id.
#[derive(Debug)]
pub struct HandshakeSequencer<T> {
    last: Option<u32>,
    waiting: BTreeMap<u32, T>,
    max_waiting: usize,
}

impl<T> HandshakeSequencer<T> {
    /// An empty sequencer that holds back at most `max_waiting` early messages.
    pub fn new(max_waiting: usize) -> Self {
        Self { last: None, waiting: BTreeMap::new(), max_waiting }
    }

    /// Records the Welcome's `MLS_INIT_COMMIT_ID`; only the first Welcome counts (returns false
    /// for later ones). Held messages at or below it are discarded.
    pub fn on_welcome(&mut self, init_commit_id: u32) -> bool {
        if self.last.is_some() {
            return false;
        }
        self.last = Some(init_commit_id);
        self.waiting.retain(|id, _| *id > init_commit_id);
        true
    }

    /// The id of the last control message applied (the Welcome's commit id at first).
    pub fn last_applied(&self) -> Option<u32> {
        self.last
    }

    /// Offers a COMMIT/PROPOSAL with its id; see [`Admission`] for what the caller does next.
    pub fn offer(&mut self, id: u32, item: T) -> Admission {
        let Some(last) = self.last else {
            return Admission::NoWelcomeYet;
        };
        if id <= last {
            return Admission::Stale;
        }
        if self.waiting.contains_key(&id) {
            return Admission::Accepted;
        }
        if self.waiting.len() >= self.max_waiting {
            return Admission::Full;
        }
        self.waiting.insert(id, item);
        Admission::Accepted
    }

    /// The next item in sequence, if it has arrived; taking it marks it applied.
    pub fn next_ready(&mut self) -> Option<(u32, T)> {
        let next = self.last?.checked_add(1)?;
        let item = self.waiting.remove(&next)?;
        self.last = Some(next);
        Some((next, item))
    }

    /// How many messages wait for an earlier one.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_drops_stale_and_bounds() {
        let mut s = HandshakeSequencer::new(3);
        assert_eq!(s.offer(5, "early"), Admission::NoWelcomeYet);
        assert!(s.next_ready().is_none());
        assert!(s.on_welcome(2));
        assert!(!s.on_welcome(7), "later Welcomes are ignored");
        assert_eq!(s.last_applied(), Some(2));

        assert_eq!(s.offer(2, "welcome's own commit"), Admission::Stale);
        assert_eq!(s.offer(1, "older"), Admission::Stale);
        assert_eq!(s.offer(5, "c5"), Admission::Accepted);
        assert_eq!(s.offer(4, "c4"), Admission::Accepted);
        assert_eq!(s.offer(4, "c4 again"), Admission::Accepted);
        assert!(s.next_ready().is_none(), "3 missing");
        assert_eq!(s.offer(9, "c9"), Admission::Accepted);
        assert_eq!(s.offer(8, "c8"), Admission::Full);
        assert_eq!(s.waiting(), 3);
        assert_eq!(s.offer(3, "c3"), Admission::Full, "even the gap filler waits for room");

        let mut s = HandshakeSequencer::new(8);
        s.on_welcome(2);
        for (id, v) in [(5, "c5"), (4, "c4"), (3, "c3"), (7, "c7")] {
            assert_eq!(s.offer(id, v), Admission::Accepted);
        }
        let got: Vec<_> = std::iter::from_fn(|| s.next_ready()).collect();
        assert_eq!(got, vec![(3, "c3"), (4, "c4"), (5, "c5")]);
        assert_eq!(s.last_applied(), Some(5));
        assert_eq!(s.waiting(), 1);
        assert_eq!(s.offer(4, "again"), Admission::Stale);
        assert_eq!(s.offer(6, "c6"), Admission::Accepted);
        let got: Vec<_> = std::iter::from_fn(|| s.next_ready()).collect();
        assert_eq!(got, vec![(6, "c6"), (7, "c7")]);

        let mut s = HandshakeSequencer::new(2);
        s.on_welcome(u32::MAX);
        assert_eq!(s.offer(1, ()), Admission::Stale);
        assert!(s.next_ready().is_none());
    }
}
