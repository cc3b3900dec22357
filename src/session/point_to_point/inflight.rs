//! The reliable messages a point-to-point session sent and has not seen acknowledged, by id.
//!
//! Ids are handed out in increasing order (`SessionEntry::next_id`), so the messages are kept in
//! the order they were sent, in a ring: a new one goes at the back, and an acknowledgement (nearly
//! always a run at the front, `P2pTask::on_ack`) takes a run out without moving the others. A
//! tree keyed by id did the same with more work: each removal shifted the entries after it in its
//! node, a copy of the whole entry each (the sending app's largest cost of an acknowledgement,
//! benches/README.md). Ids are compared by their distance from the oldest one held, so they may
//! wrap around `u32::MAX`.

use std::collections::VecDeque;

use crate::session::buffers::id_offset;

/// Messages in flight by id, oldest first.
#[derive(Debug)]
pub(super) struct InFlight<T> {
    items: VecDeque<(u32, T)>,
}

impl<T> InFlight<T> {
    pub(super) fn new() -> Self {
        InFlight { items: VecDeque::new() }
    }

    /// Messages held.
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    /// Where `id` stands from the oldest id held (negative: before it).
    fn offset(&self, id: u32) -> i32 {
        id_offset(self.base(id), id)
    }

    /// The oldest id held (`id` itself when nothing is).
    fn base(&self, id: u32) -> u32 {
        self.items.front().map_or(id, |(first, _)| *first)
    }

    /// The number of entries whose id comes before `id` (`inclusive`: or is `id`).
    fn count_before(&self, id: u32, inclusive: bool) -> usize {
        let base = self.base(id);
        let at = id_offset(base, id);
        self.items.partition_point(|(held, _)| {
            let o = id_offset(base, *held);
            o < at || (inclusive && o == at)
        })
    }

    /// The index of the first entry whose id is not before `id`.
    fn position(&self, id: u32) -> usize {
        self.count_before(id, false)
    }

    /// Adds message `id` (after every id held, as sent; an older id finds its place).
    pub(super) fn insert(&mut self, id: u32, value: T) {
        match self.items.back() {
            Some((last, _)) if self.offset(id) <= self.offset(*last) => {
                let at = self.position(id);
                if self.items.get(at).is_some_and(|(held, _)| *held == id) {
                    self.items[at].1 = value;
                } else {
                    self.items.insert(at, (id, value));
                }
            }
            _ => self.items.push_back((id, value)),
        }
    }

    /// The index of message `id`, if held.
    fn index(&self, id: u32) -> Option<usize> {
        let at = self.position(id);
        self.items.get(at).is_some_and(|(held, _)| *held == id).then_some(at)
    }

    /// Message `id`, if held.
    pub(super) fn get(&self, id: u32) -> Option<&T> {
        self.index(id).map(|i| &self.items[i].1)
    }

    /// Message `id`, if held, to change.
    pub(super) fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.index(id).map(|i| &mut self.items[i].1)
    }

    /// Takes message `id` out, if held.
    pub(super) fn remove(&mut self, id: u32) -> Option<T> {
        self.index(id).and_then(|i| self.items.remove(i)).map(|(_, v)| v)
    }

    /// Takes out every message from id `from` to id `to` (both included; nothing when `to` comes
    /// before `from`), oldest first.
    pub(super) fn drain_range(&mut self, from: u32, to: u32) -> std::collections::vec_deque::Drain<'_, (u32, T)> {
        let start = self.position(from);
        let end = self.count_before(to, true).max(start);
        self.items.drain(start..end)
    }

    /// Every message held, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.items.iter().map(|(id, v)| (*id, v))
    }
}

#[cfg(test)]
mod tests {
    use super::InFlight;

    fn ids<T>(f: &InFlight<T>) -> Vec<u32> {
        f.iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn runs_come_out_in_order_and_the_rest_stays() {
        let mut f = InFlight::new();
        for id in 10..20u32 {
            f.insert(id, id * 2);
        }
        let taken: Vec<(u32, u32)> = f.drain_range(5, 12).collect();
        assert_eq!(taken, vec![(10, 20), (11, 22), (12, 24)]);
        let taken: Vec<u32> = f.drain_range(15, 16).map(|(id, _)| id).collect();
        assert_eq!(taken, vec![15, 16]);
        assert_eq!(ids(&f), vec![13, 14, 17, 18, 19]);
        assert_eq!(f.drain_range(16, 15).count(), 0);
        assert_eq!(f.drain_range(30, 40).count(), 0);
        assert_eq!(f.get(14), Some(&28));
        assert_eq!(f.get(15), None);
        *f.get_mut(17).unwrap() = 1;
        assert_eq!(f.remove(17), Some(1));
        assert_eq!(f.remove(17), None);
        assert_eq!(ids(&f), vec![13, 14, 18, 19]);
        assert_eq!(f.len(), 4);
    }

    #[test]
    fn ids_wrap_around() {
        let mut f = InFlight::new();
        for id in [u32::MAX - 2, u32::MAX - 1, u32::MAX, 0, 1, 2] {
            f.insert(id, ());
        }
        let taken: Vec<u32> = f.drain_range(u32::MAX - 1, u32::MAX).map(|(id, _)| id).collect();
        assert_eq!(taken, vec![u32::MAX - 1, u32::MAX]);
        let taken: Vec<u32> = f.drain_range(0, 1).map(|(id, _)| id).collect();
        assert_eq!(taken, vec![0, 1]);
        assert_eq!(ids(&f), vec![u32::MAX - 2, 2]);
        assert!(f.get(2).is_some());
    }

    #[test]
    fn an_older_id_finds_its_place() {
        let mut f = InFlight::new();
        for id in [1u32, 2, 5, 3] {
            f.insert(id, id);
        }
        f.insert(5, 50);
        assert_eq!(ids(&f), vec![1, 2, 3, 5]);
        assert_eq!(f.get(5), Some(&50));
    }
}
