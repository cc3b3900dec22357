//! Buffers shared by point-to-point and multicast sessions: what a producer keeps for
//! retransmission, and the receiver's reorder window with duplicate suppression (docs/protocol.md
//! "Reliable delivery" and "Data, beacons and retransmission").

use std::collections::{HashSet, VecDeque};

/// Slots the producer ring keeps (reference value).
pub const PRODUCER_BUFFER_SLOTS: usize = 500;
/// Ids a receiver holds ahead of the next expected one; messages beyond are dropped (and, on
/// reliable sessions, retransmitted by the sender later).
pub const MAX_RECEIVE_WINDOW: usize = 8192;

/// Where message id `id` stands from `base`, in the order ids are handed out: a sender's ids count
/// up and wrap from `u32::MAX` to 0, so ids are compared by their distance (serial number
/// arithmetic): less than 2^31 ahead is ahead (positive; 0 = `base` itself), anything else is
/// behind (negative). Without this, the first ids after the wrap would read as old ones.
pub fn id_offset(base: u32, id: u32) -> i32 {
    id.wrapping_sub(base) as i32
}

/// How far `id` is ahead of `next` ([`id_offset`]); `None` when it is behind (already released).
fn ahead(next: u32, id: u32) -> Option<usize> {
    usize::try_from(id_offset(next, id)).ok()
}

/// A ring of the last N sent messages, looked up by id.
#[derive(Debug)]
pub struct ProducerBuffer<M> {
    slots: Vec<Option<(u32, M)>>,
}

impl<M> ProducerBuffer<M> {
    /// A ring with `capacity` slots (at least one).
    pub fn new(capacity: usize) -> Self {
        let mut slots = Vec::new();
        slots.resize_with(capacity.max(1), || None);
        ProducerBuffer { slots }
    }

    /// Stores `msg` under `id`, overwriting whatever used that slot.
    pub fn push(&mut self, id: u32, msg: M) {
        let i = id as usize % self.slots.len();
        self.slots[i] = Some((id, msg));
    }

    /// The message with `id`, if still kept.
    pub fn get(&self, id: u32) -> Option<&M> {
        match &self.slots[id as usize % self.slots.len()] {
            Some((stored, m)) if *stored == id => Some(m),
            _ => None,
        }
    }
}

/// What the reorder window hands to the application, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Released<T> {
    /// The next message.
    Message(T),
    /// This id could not be recovered.
    Lost(u32),
}

/// How an arriving id was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Stored or released.
    Accepted,
    /// Already released or already waiting: dropped.
    Duplicate,
    /// Too far ahead of the window: dropped.
    OutOfWindow,
}

/// The receiver side of one producer's stream: in-order, exactly-once release.
#[derive(Debug)]
pub struct ReceiverBuffer<T> {
    /// Next id to release; `None` until first contact (multicast late joiners start anywhere).
    next: Option<u32>,
    /// Where it was told to start (`starting_at`), if it was.
    start: Option<u32>,
    window: VecDeque<Option<T>>,
    lost: HashSet<u32>,
    max_window: usize,
    duplicates: u64,
    out_of_window: u64,
}

impl<T> ReceiverBuffer<T> {
    /// A buffer that starts at the first id it sees (multicast).
    pub fn from_first_contact() -> Self {
        Self::with_start(None)
    }

    /// A buffer that expects `first` as the first id (point to point: ids start at 0), so a
    /// lost first message is detected as a gap.
    pub fn starting_at(first: u32) -> Self {
        Self::with_start(Some(first))
    }

    /// An empty window expecting `next` first (`None`: the first id seen).
    fn with_start(next: Option<u32>) -> Self {
        ReceiverBuffer {
            next,
            start: next,
            window: VecDeque::new(),
            lost: HashSet::new(),
            max_window: MAX_RECEIVE_WINDOW,
            duplicates: 0,
            out_of_window: 0,
        }
    }

    /// True while nothing has reached it since it was made: no id released, held, missing,
    /// lost or dropped (then where it starts may still be changed by making it anew).
    pub fn untouched(&self) -> bool {
        self.next == self.start
            && self.window.is_empty()
            && self.lost.is_empty()
            && self.duplicates == 0
            && self.out_of_window == 0
    }

    /// Overrides the window size.
    pub fn with_max_window(mut self, max_window: usize) -> Self {
        self.max_window = max_window.max(1);
        self
    }

    /// Feeds a payload with `id`. Released items go to `out`; ids that became holes go to `holes`.
    pub fn on_message(&mut self, id: u32, item: T, out: &mut Vec<Released<T>>, holes: &mut Vec<u32>) -> Arrival {
        let next = *self.next.get_or_insert(id);
        let Some(offset) = ahead(next, id) else {
            self.duplicates += 1;
            return Arrival::Duplicate;
        };
        if offset >= self.max_window {
            self.out_of_window += 1;
            return Arrival::OutOfWindow;
        }
        if offset == 0 && self.window.is_empty() {
            // The next id with nothing waiting (a stream in order): released at once.
            out.push(Released::Message(item));
            self.next = Some(next.wrapping_add(1));
            return Arrival::Accepted;
        }
        if offset < self.window.len() {
            if self.window[offset].is_some() {
                self.duplicates += 1;
                return Arrival::Duplicate;
            }
            self.lost.remove(&id);
            self.window[offset] = Some(item);
        } else {
            for missing in self.window.len()..offset {
                holes.push(next.wrapping_add(missing as u32));
            }
            self.window.resize_with(offset, || None);
            self.window.push_back(Some(item));
        }
        self.release(out);
        Arrival::Accepted
    }

    /// A beacon says the producer has sent up to `last_id`: every id not yet received becomes a
    /// hole (returned in `holes`).
    pub fn on_beacon(&mut self, last_id: u32, holes: &mut Vec<u32>) {
        let next = match self.next {
            Some(n) => n,
            None => {
                self.next = Some(last_id);
                last_id
            }
        };
        let Some(offset) = ahead(next, last_id) else { return };
        let wanted = (offset + 1).min(self.max_window);
        for offset in self.window.len()..wanted {
            holes.push(next.wrapping_add(offset as u32));
        }
        if self.window.len() < wanted {
            self.window.resize_with(wanted, || None);
        }
    }

    /// The next id to release when nothing waits in the window (no hole, nothing held out of
    /// order): the point where a stream in order may be taken over by someone else for a while
    /// (see `session::inbound`).
    pub fn idle_next(&self) -> Option<u32> {
        if self.window.is_empty() { self.next } else { None }
    }

    /// Moves an idle window (see [`Self::idle_next`]) on to `next`: the ids before it were
    /// released by whoever took the stream over. Does nothing when the window holds anything.
    pub fn skip_to(&mut self, next: u32) {
        if self.window.is_empty() {
            self.next = Some(next);
        }
    }

    /// Gives up on `id` (RTX failed or the producer no longer has it) and releases what follows.
    pub fn on_lost(&mut self, id: u32, out: &mut Vec<Released<T>>) {
        if self.is_missing(id) {
            self.lost.insert(id);
            self.release(out);
        }
    }

    /// Gives up on every hole of the window (the producer ended the session: nothing more will
    /// come) and releases all it holds, in order: the messages, and each hole as lost.
    pub fn give_up_all(&mut self, out: &mut Vec<Released<T>>) {
        let Some(next) = self.next else { return };
        for (off, slot) in self.window.iter().enumerate() {
            if slot.is_none() {
                self.lost.insert(next.wrapping_add(off as u32));
            }
        }
        self.release(out);
    }

    /// True when `id` would be stored (not released yet, not already waiting in the window).
    pub fn is_new(&self, id: u32) -> bool {
        match self.next.map(|next| ahead(next, id)) {
            Some(None) => false,
            Some(Some(off)) => off >= self.window.len() || self.window[off].is_none(),
            None => true,
        }
    }

    /// True when `id` is not beyond the window (an id already released also "fits").
    pub fn fits(&self, id: u32) -> bool {
        match self.next.and_then(|next| ahead(next, id)) {
            Some(off) => off < self.max_window,
            None => true,
        }
    }

    /// Makes `id` a hole (with every id between the window's end and it, returned in `holes`)
    /// when it is neither released, nor waiting, nor beyond the window: a message that arrived
    /// but could not be read is asked for again like one that never arrived.
    pub fn mark_missing(&mut self, id: u32, holes: &mut Vec<u32>) {
        let next = *self.next.get_or_insert(id);
        let Some(offset) = ahead(next, id).filter(|&off| off < self.max_window) else { return };
        for missing in self.window.len()..=offset {
            holes.push(next.wrapping_add(missing as u32));
        }
        if self.window.len() <= offset {
            self.window.resize_with(offset + 1, || None);
        }
    }

    /// True when `id` is a hole still waiting for its message.
    pub fn is_missing(&self, id: u32) -> bool {
        match self.next.and_then(|next| ahead(next, id)) {
            Some(off) => off < self.window.len() && self.window[off].is_none(),
            None => false,
        }
    }

    /// Moves what is now in order (messages, and ids given up as lost) from the front of the window
    /// to `out`.
    fn release(&mut self, out: &mut Vec<Released<T>>) {
        let Some(mut next) = self.next else { return };
        while let Some(front) = self.window.front_mut() {
            if let Some(item) = front.take() {
                out.push(Released::Message(item));
            } else if self.lost.remove(&next) {
                out.push(Released::Lost(next));
            } else {
                break;
            }
            self.window.pop_front();
            next = next.wrapping_add(1);
        }
        self.next = Some(next);
    }

    /// (duplicates dropped, out-of-window ids dropped).
    pub fn drop_counts(&self) -> (u64, u64) {
        (self.duplicates, self.out_of_window)
    }

    /// Ids currently held or awaited in the window.
    pub fn window_len(&self) -> usize {
        self.window.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(out: &mut Vec<Released<u32>>) -> Vec<u32> {
        out.drain(..)
            .map(|r| match r {
                Released::Message(m) => m,
                Released::Lost(id) => 1_000_000 + id,
            })
            .collect()
    }

    #[test]
    fn a_window_is_untouched_until_anything_reaches_it() {
        let (mut out, mut holes) = (Vec::new(), Vec::new());
        let mut rb = ReceiverBuffer::<u32>::starting_at(7);
        assert!(rb.untouched());
        rb.on_beacon(6, &mut holes);
        assert!(rb.untouched() && holes.is_empty(), "a beacon behind the start shows nothing");
        rb.on_message(9, 9, &mut out, &mut holes);
        assert!(!rb.untouched(), "an id held behind holes");
        let mut rb = ReceiverBuffer::<u32>::starting_at(7);
        rb.on_message(7, 7, &mut out, &mut holes);
        assert!(!rb.untouched(), "an id released");
        assert!(ReceiverBuffer::<u32>::from_first_contact().untouched());
    }

    #[test]
    fn reorders_and_suppresses_duplicates() {
        let mut b = ReceiverBuffer::starting_at(0);
        let (mut out, mut holes) = (Vec::new(), Vec::new());
        assert_eq!(b.on_message(2, 2, &mut out, &mut holes), Arrival::Accepted);
        assert_eq!(holes, vec![0, 1]);
        assert!(out.is_empty());
        assert_eq!(b.on_message(2, 2, &mut out, &mut holes), Arrival::Duplicate);
        b.on_message(0, 0, &mut out, &mut holes);
        assert_eq!(msgs(&mut out), vec![0]);
        b.on_message(1, 1, &mut out, &mut holes);
        assert_eq!(msgs(&mut out), vec![1, 2]);
        assert_eq!(b.on_message(1, 1, &mut out, &mut holes), Arrival::Duplicate);
        assert_eq!(b.drop_counts(), (2, 0));
    }

    #[test]
    fn lost_ids_are_released_as_lost() {
        let mut b = ReceiverBuffer::starting_at(0);
        let (mut out, mut holes) = (Vec::new(), Vec::new());
        b.on_message(1, 1, &mut out, &mut holes);
        b.on_lost(0, &mut out);
        assert_eq!(msgs(&mut out), vec![1_000_000, 1]);
        b.on_lost(0, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn giving_up_releases_everything_held_and_reports_every_hole() {
        let mut b = ReceiverBuffer::starting_at(0);
        let (mut out, mut holes) = (Vec::new(), Vec::new());
        b.on_message(0, 0, &mut out, &mut holes);
        assert_eq!(msgs(&mut out), vec![0]);
        b.on_message(2, 2, &mut out, &mut holes);
        b.on_message(5, 5, &mut out, &mut holes);
        assert!(out.is_empty());
        b.give_up_all(&mut out);
        assert_eq!(msgs(&mut out), vec![1_000_001, 2, 1_000_003, 1_000_004, 5]);
        assert_eq!(b.window_len(), 0);
        // Nothing held: nothing to give up.
        b.give_up_all(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn out_of_window_is_dropped() {
        let mut b = ReceiverBuffer::starting_at(0).with_max_window(4);
        let (mut out, mut holes) = (Vec::new(), Vec::new());
        assert_eq!(b.on_message(4, 4, &mut out, &mut holes), Arrival::OutOfWindow);
        assert_eq!(b.on_message((1 << 31) - 1, 9, &mut out, &mut holes), Arrival::OutOfWindow);
        // The id just before 0 in the order ids wrap in: already released, not far ahead.
        assert_eq!(b.on_message(u32::MAX, 9, &mut out, &mut holes), Arrival::Duplicate);
        assert_eq!(b.drop_counts(), (1, 2));
        assert!(holes.is_empty());
    }

    #[test]
    fn ids_wrap_from_max_to_zero() {
        let mut b = ReceiverBuffer::starting_at(u32::MAX - 1);
        let (mut out, mut holes) = (Vec::new(), Vec::new());
        assert_eq!(b.on_message(u32::MAX - 1, 1, &mut out, &mut holes), Arrival::Accepted);
        // 0 and 1 come after u32::MAX: held until it arrives, the hole is u32::MAX.
        assert_eq!(b.on_message(1, 4, &mut out, &mut holes), Arrival::Accepted);
        assert_eq!(holes, vec![u32::MAX, 0]);
        assert!(b.is_new(0) && b.is_missing(u32::MAX) && b.fits(5) && !b.is_new(1));
        assert_eq!(b.on_message(u32::MAX, 2, &mut out, &mut holes), Arrival::Accepted);
        assert_eq!(b.on_message(0, 3, &mut out, &mut holes), Arrival::Accepted);
        assert_eq!(msgs(&mut out), vec![1, 2, 3, 4]);
        assert_eq!(b.on_message(u32::MAX, 2, &mut out, &mut holes), Arrival::Duplicate);
        assert_eq!(b.on_message(0, 3, &mut out, &mut holes), Arrival::Duplicate);
        assert!(!b.is_new(u32::MAX) && !b.is_missing(0));
        holes.clear();
        b.on_beacon(3, &mut holes);
        assert_eq!(holes, vec![2, 3]);
        b.on_lost(2, &mut out);
        b.on_message(3, 6, &mut out, &mut holes);
        assert_eq!(msgs(&mut out), vec![1_000_002, 6]);
        holes.clear();
        b.mark_missing(5, &mut holes);
        assert_eq!(holes, vec![4, 5]);
        b.mark_missing(u32::MAX, &mut holes);
        assert_eq!(holes, vec![4, 5], "behind the window: nothing");
    }

    #[test]
    fn first_contact_and_beacons() {
        let mut b = ReceiverBuffer::from_first_contact();
        let (mut out, mut holes) = (Vec::new(), Vec::new());
        b.on_message(10, 10, &mut out, &mut holes);
        assert_eq!(msgs(&mut out), vec![10]);
        b.on_beacon(12, &mut holes);
        assert_eq!(holes, vec![11, 12]);
        assert!(b.is_missing(11));
        b.on_message(12, 12, &mut out, &mut holes);
        b.on_message(11, 11, &mut out, &mut holes);
        assert_eq!(msgs(&mut out), vec![11, 12]);
    }

    #[test]
    fn unreadable_ids_become_holes_until_filled_or_lost() {
        let mut b = ReceiverBuffer::from_first_contact().with_max_window(8);
        let (mut out, mut holes) = (Vec::new(), Vec::new());
        b.mark_missing(5, &mut holes);
        assert_eq!(holes, vec![5]);
        assert!(b.is_missing(5) && b.is_new(5));
        b.on_message(6, 6, &mut out, &mut holes);
        assert!(out.is_empty(), "6 waits behind the hole at 5");
        holes.clear();
        b.mark_missing(9, &mut holes);
        assert_eq!(holes, vec![7, 8, 9]);
        assert!(!b.fits(13) && b.fits(12));
        b.mark_missing(13, &mut holes);
        assert_eq!(holes, vec![7, 8, 9], "beyond the window: nothing");
        b.on_message(5, 5, &mut out, &mut holes);
        assert_eq!(msgs(&mut out), vec![5, 6]);
        b.on_lost(7, &mut out);
        b.on_lost(8, &mut out);
        b.on_lost(9, &mut out);
        assert_eq!(msgs(&mut out), vec![1_000_007, 1_000_008, 1_000_009]);
    }

    #[test]
    fn producer_ring_forgets_old_ids() {
        let mut p = ProducerBuffer::new(2);
        p.push(0, "a");
        p.push(1, "b");
        p.push(2, "c");
        assert_eq!(p.get(0), None);
        assert_eq!(p.get(2), Some(&"c"));
    }
}
