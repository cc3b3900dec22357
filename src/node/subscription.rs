//! The subscription table: which connections want traffic for which names; see
//! docs/protocol.md "Subscriptions and routes" and "Publishing: fanout, anycast and forwardTo".
//!
//! Keyed by the three hashed components ("type"); per type, the connections subscribed to each exact
//! id, split into local (in-process apps) and remote (gRPC) lists, plus every connection subscribed to
//! any id of the type with a reference count. A reverse index per connection makes cleanup on
//! disconnect cheap.
//!
//! Where slim-bindings 0.6.0 nodes behave differently (their bugs, fixed here; see
//! docs/protocol.md "Compatibility with slim-bindings 0.6.0"): the random choice for
//! `fanout == 1` is uniform over every candidate except the incoming connection; broadcasts reach
//! local AND remote subscribers; the single-connection fallback for an unknown exact id applies to
//! both matchers; and there is no pool of connection slots whose reuse could hand one
//! connection's traffic to another.

use std::collections::{HashMap, HashSet};

use rand::RngExt;

use crate::wire::Name;
use crate::wire::name::ANY_ID;

/// Why a table operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// No subscription of this type exists at all.
    #[error("subscription not found: {0}")]
    SubscriptionNotFound(Name),
    /// The type exists but not this id on this connection.
    #[error("id not found for {0}")]
    IdNotFound(Name),
    /// Nothing matches the destination.
    #[error("no matching found for {0}")]
    NoMatch(Name),
}

type TypeKey = (u64, u64, u64);

/// Connections in one class (local or remote).
#[derive(Debug, Default, Clone)]
struct ClassLists {
    local: Vec<u64>,
    remote: Vec<u64>,
}

impl ClassLists {
    fn class(&self, local: bool) -> &Vec<u64> {
        if local { &self.local } else { &self.remote }
    }
    fn class_mut(&mut self, local: bool) -> &mut Vec<u64> {
        if local { &mut self.local } else { &mut self.remote }
    }
    fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }
}

/// Per-type state: exact-id lists and the refcounted set of every connection of the type.
#[derive(Debug, Default)]
struct TypeState {
    ids: HashMap<u64, ClassLists>,
    /// Every connection subscribed to any id of this type, with the number of its ids.
    local_conns: Vec<(u64, usize)>,
    remote_conns: Vec<(u64, usize)>,
}

impl TypeState {
    fn conns(&self, local: bool) -> &Vec<(u64, usize)> {
        if local { &self.local_conns } else { &self.remote_conns }
    }
    fn conns_mut(&mut self, local: bool) -> &mut Vec<(u64, usize)> {
        if local { &mut self.local_conns } else { &mut self.remote_conns }
    }
}

/// The subscription table of one node.
#[derive(Debug, Default)]
pub struct SubscriptionTable {
    types: HashMap<TypeKey, TypeState>,
    /// Reverse index: connection → (is_local, names subscribed on it).
    by_conn: HashMap<u64, (bool, HashSet<Name>)>,
}

fn type_key(name: &Name) -> TypeKey {
    let c = name.components();
    (c[0], c[1], c[2])
}

/// Uniform choice among `candidates` without `incoming`; `None` when nothing is left.
fn pick_one<I>(candidates: I, count: usize, incoming: u64, has_incoming: bool) -> Option<u64>
where
    I: Iterator<Item = u64>,
{
    let eligible = count - usize::from(has_incoming);
    if eligible == 0 {
        return None;
    }
    let target = if eligible == 1 { 0 } else { rand::rng().random_range(0..eligible) };
    candidates.filter(|&c| c != incoming).nth(target)
}

impl SubscriptionTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` on `conn`. Returns false if that exact (name, conn) pair already existed.
    pub fn add(&mut self, name: &Name, conn: u64, is_local: bool) -> bool {
        let entry = self.by_conn.entry(conn).or_insert_with(|| (is_local, HashSet::new()));
        if !entry.1.insert(name.clone()) {
            return false;
        }
        let state = self.types.entry(type_key(name)).or_default();
        state.ids.entry(name.id()).or_default().class_mut(is_local).push(conn);
        let conns = state.conns_mut(is_local);
        match conns.iter_mut().find(|(c, _)| *c == conn) {
            Some((_, count)) => *count += 1,
            None => conns.push((conn, 1)),
        }
        true
    }

    /// Removes `name` from `conn`.
    pub fn remove(&mut self, name: &Name, conn: u64) -> Result<(), SubscriptionError> {
        let key = type_key(name);
        if !self.types.contains_key(&key) {
            return Err(SubscriptionError::SubscriptionNotFound(name.clone()));
        }
        let Some((is_local, names)) = self.by_conn.get_mut(&conn) else {
            return Err(SubscriptionError::IdNotFound(name.clone()));
        };
        let is_local = *is_local;
        if !names.remove(name) {
            return Err(SubscriptionError::IdNotFound(name.clone()));
        }
        if names.is_empty() {
            self.by_conn.remove(&conn);
        }
        self.detach(key, name.id(), conn, is_local);
        Ok(())
    }

    fn detach(&mut self, key: TypeKey, id: u64, conn: u64, is_local: bool) {
        let Some(state) = self.types.get_mut(&key) else { return };
        if let Some(lists) = state.ids.get_mut(&id) {
            lists.class_mut(is_local).retain(|&c| c != conn);
            if lists.is_empty() {
                state.ids.remove(&id);
            }
        }
        let conns = state.conns_mut(is_local);
        if let Some(pos) = conns.iter().position(|(c, _)| *c == conn) {
            conns[pos].1 -= 1;
            if conns[pos].1 == 0 {
                conns.swap_remove(pos);
            }
        }
        if state.ids.is_empty() {
            self.types.remove(&key);
        }
    }

    /// Removes every subscription attached to `conn`; returns the names it held.
    pub fn remove_connection(&mut self, conn: u64) -> Vec<Name> {
        let Some((is_local, names)) = self.by_conn.remove(&conn) else { return Vec::new() };
        let names: Vec<Name> = names.into_iter().collect();
        for name in &names {
            self.detach(type_key(name), name.id(), conn, is_local);
        }
        names
    }

    /// Names subscribed on `conn`.
    pub fn names_of(&self, conn: u64) -> Vec<Name> {
        self.by_conn.get(&conn).map(|(_, s)| s.iter().cloned().collect()).unwrap_or_default()
    }

    /// One connection for `dst` (`fanout == 1`): local subscribers first, then remote ones; never
    /// `incoming`; uniform among the candidates of the chosen class.
    pub fn match_one(&self, dst: &Name, incoming: u64) -> Result<u64, SubscriptionError> {
        let state = self.types.get(&type_key(dst)).ok_or_else(|| SubscriptionError::NoMatch(dst.clone()))?;
        for local in [true, false] {
            if let Some(c) = Self::match_one_in_class(state, dst.id(), incoming, local) {
                return Ok(c);
            }
        }
        Err(SubscriptionError::NoMatch(dst.clone()))
    }

    fn match_one_in_class(state: &TypeState, id: u64, incoming: u64, local: bool) -> Option<u64> {
        if id == ANY_ID {
            let conns = state.conns(local);
            let has_in = conns.iter().any(|(c, _)| *c == incoming);
            return pick_one(conns.iter().map(|(c, _)| *c), conns.len(), incoming, has_in);
        }
        match state.ids.get(&id) {
            Some(lists) => {
                let list = lists.class(local);
                let has_in = list.contains(&incoming);
                pick_one(list.iter().copied(), list.len(), incoming, has_in)
            }
            None => Self::single_connection_fallback(state, incoming, local),
        }
    }

    /// An exact id nobody subscribed: if exactly one connection of the class carries the type, it is
    /// the route (this is what makes `set_route(name without id)` work for `name/<id>` traffic).
    fn single_connection_fallback(state: &TypeState, incoming: u64, local: bool) -> Option<u64> {
        match state.conns(local).as_slice() {
            [(c, _)] if *c != incoming => Some(*c),
            _ => None,
        }
    }

    /// Every connection for `dst` (`fanout != 1`), local and remote, never `incoming`. Appends to
    /// `out` (cleared first) so the caller can reuse its buffer.
    pub fn match_all(&self, dst: &Name, incoming: u64, out: &mut Vec<u64>) -> Result<(), SubscriptionError> {
        out.clear();
        let state = self.types.get(&type_key(dst)).ok_or_else(|| SubscriptionError::NoMatch(dst.clone()))?;
        let id = dst.id();
        for local in [true, false] {
            if id == ANY_ID {
                out.extend(state.conns(local).iter().map(|(c, _)| *c).filter(|&c| c != incoming));
            } else if let Some(lists) = state.ids.get(&id) {
                out.extend(lists.class(local).iter().copied().filter(|&c| c != incoming));
            } else if let Some(c) = Self::single_connection_fallback(state, incoming, local) {
                out.push(c);
            }
        }
        if out.is_empty() { Err(SubscriptionError::NoMatch(dst.clone())) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(t: &str, id: Option<u64>) -> Name {
        Name::new("org", "ns", t, id)
    }

    #[test]
    fn duplicate_add_is_ignored_and_remove_cleans_up() {
        let mut t = SubscriptionTable::new();
        assert!(t.add(&n("a", Some(1)), 5, true));
        assert!(!t.add(&n("a", Some(1)), 5, true));
        assert!(t.add(&n("a", Some(2)), 5, true));
        assert_eq!(t.match_one(&n("a", Some(1)), 99), Ok(5));
        t.remove(&n("a", Some(1)), 5).unwrap();
        // id 2 still holds the type on conn 5
        assert_eq!(t.match_one(&n("a", None), 99), Ok(5));
        t.remove(&n("a", Some(2)), 5).unwrap();
        assert!(matches!(t.match_one(&n("a", None), 99), Err(SubscriptionError::NoMatch(_))));
        assert!(matches!(t.remove(&n("a", Some(2)), 5), Err(SubscriptionError::SubscriptionNotFound(_))));
        t.add(&n("a", Some(3)), 6, false);
        assert!(matches!(t.remove(&n("a", Some(2)), 6), Err(SubscriptionError::IdNotFound(_))));
        assert!(matches!(t.remove(&n("a", Some(3)), 7), Err(SubscriptionError::IdNotFound(_))));
    }

    #[test]
    fn local_first_and_incoming_excluded() {
        let mut t = SubscriptionTable::new();
        t.add(&n("a", Some(1)), 1, true);
        t.add(&n("a", Some(1)), 2, false);
        assert_eq!(t.match_one(&n("a", Some(1)), 99), Ok(1));
        // the local one is the sender → fall back to remote
        assert_eq!(t.match_one(&n("a", Some(1)), 1), Ok(2));
        t.remove(&n("a", Some(1)), 2).unwrap();
        assert!(t.match_one(&n("a", Some(1)), 1).is_err());
    }

    #[test]
    fn match_one_is_uniform_over_all_candidates() {
        let mut t = SubscriptionTable::new();
        for c in 0..5 {
            t.add(&n("a", Some(7)), c, false);
            t.add(&n("b", None), c, false);
        }
        for dst in [n("a", Some(7)), n("b", None)] {
            let mut seen = [0u32; 5];
            for _ in 0..2000 {
                let c = t.match_one(&dst, 2).unwrap();
                seen[c as usize] += 1;
            }
            assert_eq!(seen[2], 0, "incoming connection must never be picked");
            for (i, s) in seen.iter().enumerate() {
                if i != 2 {
                    assert!(*s > 300, "conn {i} picked only {s} times of 2000: {seen:?}");
                }
            }
        }
    }

    #[test]
    fn unknown_exact_id_falls_back_to_single_connection() {
        let mut t = SubscriptionTable::new();
        t.add(&n("a", None), 4, false); // set_route(name without id)
        assert_eq!(t.match_one(&n("a", Some(42)), 99), Ok(4));
        let mut out = Vec::new();
        t.match_all(&n("a", Some(42)), 99, &mut out).unwrap();
        assert_eq!(out, vec![4]);
        assert!(t.match_one(&n("a", Some(42)), 4).is_err());
        t.add(&n("a", Some(1)), 5, false);
        // two remote connections carry the type now: no guess
        assert!(t.match_one(&n("a", Some(42)), 99).is_err());
        assert!(t.match_all(&n("a", Some(42)), 99, &mut out).is_err());
    }

    #[test]
    fn match_all_reaches_local_and_remote_except_incoming() {
        let mut t = SubscriptionTable::new();
        t.add(&n("g", None), 1, true);
        t.add(&n("g", None), 2, true);
        t.add(&n("g", None), 3, false);
        t.add(&n("g", None), 4, false);
        let mut out = Vec::new();
        t.match_all(&n("g", None), 1, &mut out).unwrap();
        out.sort();
        assert_eq!(out, vec![2, 3, 4]);
        t.match_all(&n("g", None), 3, &mut out).unwrap();
        out.sort();
        assert_eq!(out, vec![1, 2, 4]);
        t.add(&n("g", Some(9)), 5, false);
        t.match_all(&n("g", Some(9)), 0, &mut out).unwrap();
        assert_eq!(out, vec![5]);
        assert!(t.match_all(&n("g", Some(9)), 5, &mut out).is_err());
    }

    #[test]
    fn remove_connection_drops_everything_it_held() {
        let mut t = SubscriptionTable::new();
        t.add(&n("a", Some(1)), 1, false);
        t.add(&n("b", None), 1, false);
        t.add(&n("b", None), 2, false);
        assert_eq!(t.remove_connection(1).len(), 2);
        assert!(t.match_one(&n("a", Some(1)), 99).is_err());
        assert_eq!(t.match_one(&n("b", None), 99), Ok(2));
        assert!(t.remove_connection(1).is_empty());
        assert!(t.names_of(1).is_empty());
        assert_eq!(t.names_of(2), vec![n("b", None)]);
    }
}
