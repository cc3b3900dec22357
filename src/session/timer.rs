//! Retransmission timers (docs/protocol.md "Retries and timers") as a deadline set owned by one session task.
//!
//! A timer fires after its current interval; each fire is a retry until `max_retries` retries
//! have happened, and the next fire is the failure. With `max_retries = N` and a constant
//! interval `d`, retries happen at d, 2d, … Nd and failure at (N+1)·d. Exponential back-off
//! doubles the interval after each fire, capped. The session task sleeps until
//! [`TimerSet::next_deadline`] and then calls [`TimerSet::expire`], so no task or timer-wheel
//! entry exists per message.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// Polls `settled` every millisecond until it holds twice in a row, or until `deadline`; true when
/// it held. For waits nothing signals (an app's close, a session's delete: "every queue empty"):
/// what moves between two queues is in neither for a moment, and seeing them empty twice, a
/// millisecond apart, covers it.
pub async fn until_settled(deadline: Instant, mut settled: impl FnMut() -> bool) -> bool {
    let mut quiet = 0;
    while Instant::now() < deadline {
        quiet = if settled() { quiet + 1 } else { 0 };
        if quiet == 2 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

/// How the interval evolves between fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// Always the same interval.
    Constant(Duration),
    /// Starts at `initial`, doubles after each fire, never above `max`.
    Exponential {
        /// First interval.
        initial: Duration,
        /// Cap.
        max: Duration,
    },
}

/// A back-off plus an optional retry limit (`None` = fire forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerPolicy {
    /// Interval evolution.
    pub backoff: Backoff,
    /// Retries before failure.
    pub max_retries: Option<u32>,
}

impl TimerPolicy {
    /// Constant interval with a retry limit.
    pub fn constant(interval: Duration, max_retries: u32) -> Self {
        TimerPolicy { backoff: Backoff::Constant(interval), max_retries: Some(max_retries) }
    }

    /// Every `interval`, without a retry limit (heartbeats): fires until stopped.
    pub fn periodic(interval: Duration) -> Self {
        TimerPolicy { backoff: Backoff::Constant(interval), max_retries: None }
    }

    /// Exponential back-off without a retry limit (multicast beacons).
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        TimerPolicy { backoff: Backoff::Exponential { initial, max }, max_retries: None }
    }

    /// The interval before the first fire.
    fn first_interval(&self) -> Duration {
        match self.backoff {
            Backoff::Constant(d) => d,
            Backoff::Exponential { initial, .. } => initial,
        }
    }

    /// The interval after one of `current` (doubles up to the maximum when exponential).
    fn next_interval(&self, current: Duration) -> Duration {
        match self.backoff {
            Backoff::Constant(d) => d,
            Backoff::Exponential { max, .. } => current.saturating_mul(2).min(max),
        }
    }
}

/// What a fire means for its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired<K> {
    /// Retry number `attempt` (1-based): re-send.
    Retry {
        /// Timer key.
        key: K,
        /// 1 for the first retry.
        attempt: u32,
    },
    /// Retries exhausted: the timer is removed.
    Failed {
        /// Timer key.
        key: K,
    },
}

#[derive(Debug)]
struct Entry {
    policy: TimerPolicy,
    retries: u32,
    current: Duration,
    slot: (Instant, u64),
}

/// A set of keyed timers ordered by deadline.
#[derive(Debug)]
pub struct TimerSet<K: Eq + Hash + Clone> {
    by_deadline: BTreeMap<(Instant, u64), K>,
    entries: HashMap<K, Entry>,
    seq: u64,
}

impl<K: Eq + Hash + Clone> Default for TimerSet<K> {
    fn default() -> Self {
        TimerSet { by_deadline: BTreeMap::new(), entries: HashMap::new(), seq: 0 }
    }
}

impl<K: Eq + Hash + Clone> TimerSet<K> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A unique position in the deadline order for a timer due at `at`.
    fn slot(&mut self, at: Instant) -> (Instant, u64) {
        self.seq += 1;
        (at, self.seq)
    }

    /// Starts (or restarts from scratch) the timer `key`.
    pub fn start(&mut self, key: K, policy: TimerPolicy, now: Instant) {
        self.stop(&key);
        let current = policy.first_interval();
        let slot = self.slot(now + current);
        self.by_deadline.insert(slot, key.clone());
        self.entries.insert(key, Entry { policy, retries: 0, current, slot });
    }

    /// Cancels `key`; false if it was not running.
    pub fn stop(&mut self, key: &K) -> bool {
        match self.entries.remove(key) {
            Some(e) => {
                self.by_deadline.remove(&e.slot);
                true
            }
            None => false,
        }
    }

    /// Stop + start again from the first interval with the same policy; false if not running.
    pub fn reset(&mut self, key: &K, now: Instant) -> bool {
        match self.entries.get(key).map(|e| e.policy) {
            Some(policy) => {
                self.start(key.clone(), policy, now);
                true
            }
            None => false,
        }
    }

    /// True while `key` runs.
    pub fn is_running(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Number of running timers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no timer runs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The earliest deadline, if any timer runs.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.keys().next().map(|(at, _)| *at)
    }

    /// Processes every timer due at `now`, appending what happened to `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Fired<K>>) {
        while let Some(entry) = self.by_deadline.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            let Some(e) = self.entries.get_mut(&key) else { continue };
            if e.policy.max_retries.is_some_and(|max| e.retries >= max) {
                self.entries.remove(&key);
                out.push(Fired::Failed { key });
                continue;
            }
            e.retries += 1;
            e.current = e.policy.next_interval(e.current);
            let attempt = e.retries;
            let at = now + e.current;
            self.seq += 1;
            let slot = (at, self.seq);
            e.slot = slot;
            self.by_deadline.insert(slot, key.clone());
            out.push(Fired::Retry { key, attempt });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives the set like a session task does, each deadline taken as the moment it is reached
    /// (the set reads no clock: every call is given its `now`), and records (elapsed ms, event).
    fn run(set: &mut TimerSet<u32>, start: Instant, limit: usize) -> Vec<(u128, Fired<u32>)> {
        let mut log = Vec::new();
        let mut out = Vec::new();
        while let Some(at) = set.next_deadline() {
            if log.len() >= limit {
                break;
            }
            set.expire(at, &mut out);
            for f in out.drain(..) {
                log.push((at.duration_since(start).as_millis(), f));
            }
        }
        log
    }

    #[test]
    fn constant_retries_then_fails_at_n_plus_one_intervals() {
        let mut set = TimerSet::new();
        let start = Instant::now();
        set.start(7, TimerPolicy::constant(Duration::from_millis(100), 3), start);
        let log = run(&mut set, start, 10);
        assert_eq!(
            log,
            vec![
                (100, Fired::Retry { key: 7, attempt: 1 }),
                (200, Fired::Retry { key: 7, attempt: 2 }),
                (300, Fired::Retry { key: 7, attempt: 3 }),
                (400, Fired::Failed { key: 7 }),
            ]
        );
        assert!(set.is_empty());
    }

    #[test]
    fn zero_retries_fails_at_first_fire() {
        let mut set = TimerSet::new();
        let start = Instant::now();
        set.start(1, TimerPolicy::constant(Duration::from_millis(50), 0), start);
        assert_eq!(run(&mut set, start, 10), vec![(50, Fired::Failed { key: 1 })]);
    }

    #[test]
    fn exponential_doubles_up_to_cap() {
        let mut set = TimerSet::new();
        let start = Instant::now();
        set.start(1, TimerPolicy::exponential(Duration::from_millis(500), Duration::from_secs(2)), start);
        let times: Vec<u128> = run(&mut set, start, 5).into_iter().map(|(t, _)| t).collect();
        assert_eq!(times, vec![500, 1500, 3500, 5500, 7500]);
    }

    #[test]
    fn stop_and_reset() {
        let mut set = TimerSet::new();
        let start = Instant::now();
        set.start(1, TimerPolicy::constant(Duration::from_millis(100), 5), start);
        set.start(2, TimerPolicy::constant(Duration::from_millis(100), 5), start);
        assert!(set.stop(&1));
        assert!(!set.stop(&1));
        let later = start + Duration::from_millis(60);
        assert!(set.reset(&2, later));
        assert!(!set.reset(&1, later));
        let log = run(&mut set, start, 1);
        assert_eq!(log, vec![(160, Fired::Retry { key: 2, attempt: 1 })]);
    }
}
