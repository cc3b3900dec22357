//! The link-state database: what every mesh node knows about every other (docs/mesh.md, "What is
//! announced").
//!
//! Per origin node: its links (replaced as a whole by a higher `seq`) and its names, one record per
//! name with the origin's name version at which it last changed (present or withdrawn). A record is
//! taken when its version is higher than the one held, so records may arrive in any order, over any
//! path, any number of times, and every node ends with the same table. Withdrawals stay as
//! tombstones for [`TOMBSTONE_TTL`], then only the origin's `floor` remembers them (a record at or
//! under the floor for a name we do not hold is stale). Origins that stay unreachable for
//! [`ORIGIN_TTL`] are forgotten (a restarted node comes back under a new random id).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::proto;
use crate::wire::Name;

/// How long a withdrawn name is kept as a tombstone.
pub(super) const TOMBSTONE_TTL: Duration = Duration::from_secs(60);
/// How long an unreachable origin is kept before it is forgotten.
pub(super) const ORIGIN_TTL: Duration = Duration::from_secs(60);
/// Records per `NameBatch` in a full sync (keeps every message far below the 4 MiB gRPC limit).
pub(super) const SYNC_CHUNK: usize = 2000;

/// One name record (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NameRec {
    /// The exact name (with its instance id).
    pub name: Name,
    /// The origin's name version at which this record was made.
    pub version: u64,
    /// Announced (true) or withdrawn (false).
    pub present: bool,
}

#[derive(Debug, Clone)]
struct NameEntry {
    version: u64,
    present: bool,
    changed: Instant,
}

/// Everything known about one origin node.
#[derive(Debug, Clone, Default)]
pub(super) struct OriginState {
    /// The origin's label (its configured node id), for operators.
    pub label: String,
    /// Sequence number of the link record held (0 = none yet).
    pub seq: u64,
    /// Neighbours and costs, as the origin announced them.
    pub links: Vec<(u64, u32)>,
    names: HashMap<Name, NameEntry>,
    floor: u64,
    version: u64,
    unreachable_since: Option<Instant>,
}

impl OriginState {
    /// Names the origin announces now.
    pub(super) fn present_names(&self) -> impl Iterator<Item = &Name> {
        self.names.iter().filter(|(_, e)| e.present).map(|(n, _)| n)
    }

    /// Number of names the origin announces now.
    pub(super) fn present_count(&self) -> usize {
        self.names.values().filter(|e| e.present).count()
    }
}

/// The database of one node (its own origin included).
#[derive(Debug)]
pub(super) struct Lsdb {
    me: u64,
    origins: HashMap<u64, OriginState>,
    /// Name → the other origins announcing it (never `me`).
    name_origins: HashMap<Name, Vec<u64>>,
}

/// What applying records changed for routing: the names whose set of announcing origins changed.
pub(super) type ChangedNames = Vec<Name>;

impl Lsdb {
    /// An empty database for node `me`, labelled `label`.
    pub(super) fn new(me: u64, label: &str) -> Self {
        let own = OriginState { label: label.to_string(), ..Default::default() };
        Self { me, origins: HashMap::from([(me, own)]), name_origins: HashMap::new() }
    }

    /// Every origin, this node's own included.
    pub(super) fn origins(&self) -> &HashMap<u64, OriginState> {
        &self.origins
    }

    /// Other origins announcing `name` (in no particular order).
    pub(super) fn origins_of(&self, name: &Name) -> &[u64] {
        self.name_origins.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    /// Every name some other origin announces, with its origins.
    pub(super) fn remote_names(&self) -> impl Iterator<Item = (&Name, &[u64])> {
        self.name_origins.iter().map(|(n, o)| (n, o.as_slice()))
    }

    /// Number of distinct names other origins announce.
    pub(super) fn remote_name_count(&self) -> usize {
        self.name_origins.len()
    }

    /// The links of every origin (input of the path computation).
    pub(super) fn link_map(&self) -> HashMap<u64, Vec<(u64, u32)>> {
        self.origins.iter().filter(|(_, o)| o.seq > 0).map(|(&id, o)| (id, o.links.clone())).collect()
    }

    /// Replaces this node's own link record (new seq); returns it for flooding.
    pub(super) fn set_own_links(&mut self, links: Vec<(u64, u32)>) -> proto::LinkState {
        let own = self.origins.entry(self.me).or_default();
        own.seq += 1;
        own.links = links;
        link_state_of(self.me, own)
    }

    /// Announces (`present`) or withdraws one of this node's own names; returns the record for
    /// flooding, or `None` when nothing changed.
    pub(super) fn set_own_name(&mut self, name: &Name, present: bool) -> Option<NameRec> {
        let own = self.origins.entry(self.me).or_default();
        if own.names.get(name).is_some_and(|e| e.present == present) || (!present && !own.names.contains_key(name)) {
            return None;
        }
        own.version += 1;
        let version = own.version;
        own.names.insert(name.clone(), NameEntry { version, present, changed: Instant::now() });
        Some(NameRec { name: name.clone(), version, present })
    }

    /// This node's own link record as it stands.
    pub(super) fn own_link_state(&self) -> Option<proto::LinkState> {
        self.origins.get(&self.me).map(|o| link_state_of(self.me, o))
    }

    /// Takes a link record if it is newer than the one held. True when taken (flood it on).
    pub(super) fn apply_link_state(&mut self, ls: &proto::LinkState) -> bool {
        if ls.origin == self.me {
            return false;
        }
        let o = self.origins.entry(ls.origin).or_default();
        if ls.seq <= o.seq {
            return false;
        }
        o.seq = ls.seq;
        o.label.clone_from(&ls.label);
        o.links = ls.links.iter().map(|a| (a.node, a.cost)).collect();
        true
    }

    /// Takes the records of `origin` that are newer than what is held. Returns the records taken
    /// (flood them on) and the names whose announcing origins changed.
    pub(super) fn apply_names(&mut self, origin: u64, records: &[NameRec]) -> (Vec<NameRec>, ChangedNames) {
        let mut taken = Vec::new();
        let mut changed = Vec::new();
        if origin == self.me {
            return (taken, changed);
        }
        let now = Instant::now();
        let o = self.origins.entry(origin).or_default();
        for r in records {
            let was_present = match o.names.get(&r.name) {
                Some(e) if e.version >= r.version => continue,
                Some(e) => e.present,
                None if r.version <= o.floor => continue,
                None => false,
            };
            o.names.insert(r.name.clone(), NameEntry { version: r.version, present: r.present, changed: now });
            o.version = o.version.max(r.version);
            taken.push(r.clone());
            if was_present != r.present {
                changed.push(r.name.clone());
                let list = self.name_origins.entry(r.name.clone()).or_default();
                if r.present {
                    list.push(origin);
                } else {
                    list.retain(|&x| x != origin);
                    if list.is_empty() {
                        self.name_origins.remove(&r.name);
                    }
                }
            }
        }
        (taken, changed)
    }

    /// Forgets tombstones older than [`TOMBSTONE_TTL`] and origins unreachable for longer than
    /// [`ORIGIN_TTL`] (`reachable` = origins reachable now). Returns names whose origins changed.
    pub(super) fn collect_garbage(&mut self, now: Instant, reachable: &HashSet<u64>) -> ChangedNames {
        let mut changed = Vec::new();
        let mut forget = Vec::new();
        for (&id, o) in self.origins.iter_mut() {
            if id != self.me {
                if reachable.contains(&id) {
                    o.unreachable_since = None;
                } else {
                    let since = *o.unreachable_since.get_or_insert(now);
                    if now.duration_since(since) >= ORIGIN_TTL {
                        forget.push(id);
                        continue;
                    }
                }
            }
            let floor = &mut o.floor;
            o.names.retain(|_, e| {
                let keep = e.present || now.duration_since(e.changed) < TOMBSTONE_TTL;
                if !keep {
                    *floor = (*floor).max(e.version);
                }
                keep
            });
        }
        for id in forget {
            if let Some(o) = self.origins.remove(&id) {
                for name in o.present_names() {
                    if let Some(list) = self.name_origins.get_mut(name) {
                        list.retain(|&x| x != id);
                        if list.is_empty() {
                            self.name_origins.remove(name);
                        }
                    }
                    changed.push(name.clone());
                }
            }
        }
        changed
    }

    /// The whole database as messages (link records first, then names in chunks of
    /// [`SYNC_CHUNK`]), sent to a neighbour when a link comes up.
    pub(super) fn snapshot(&self) -> Vec<proto::MeshMessage> {
        let mut out = Vec::new();
        for (&id, o) in &self.origins {
            if o.seq > 0 {
                out.push(proto::MeshMessage { body: Some(proto::mesh_message::Body::LinkState(link_state_of(id, o))) });
            }
        }
        for (&id, o) in &self.origins {
            let records: Vec<proto::NameRecord> = o
                .names
                .iter()
                .map(|(n, e)| record_to_proto(&NameRec { name: n.clone(), version: e.version, present: e.present }))
                .collect();
            for chunk in records.chunks(SYNC_CHUNK) {
                out.push(names_message(id, chunk.to_vec()));
            }
        }
        out
    }
}

fn link_state_of(id: u64, o: &OriginState) -> proto::LinkState {
    proto::LinkState {
        origin: id,
        seq: o.seq,
        label: o.label.clone(),
        links: o.links.iter().map(|&(node, cost)| proto::Adjacency { node, cost }).collect(),
    }
}

/// A `NameBatch` message of `origin`.
pub(super) fn names_message(origin: u64, records: Vec<proto::NameRecord>) -> proto::MeshMessage {
    proto::MeshMessage { body: Some(proto::mesh_message::Body::Names(proto::NameBatch { origin, records })) }
}

/// The wire form of a record.
pub(super) fn record_to_proto(r: &NameRec) -> proto::NameRecord {
    let [c0, c1, c2, id] = r.name.components();
    proto::NameRecord {
        c0,
        c1,
        c2,
        id,
        version: r.version,
        present: r.present,
        strings: r.name.strings().map(|s| s.to_vec()).unwrap_or_default(),
    }
}

/// A record from the wire (strings kept only when all three are there).
pub(super) fn record_from_proto(p: &proto::NameRecord) -> NameRec {
    let strings = match p.strings.as_slice() {
        [a, b, c] => Some([a.clone(), b.clone(), c.clone()]),
        _ => None,
    };
    NameRec { name: Name::from_parts([p.c0, p.c1, p.c2, p.id], strings), version: p.version, present: p.present }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(t: &str, id: u64) -> Name {
        Name::new("org", "ns", t, Some(id))
    }

    fn rec(name: &Name, version: u64, present: bool) -> NameRec {
        NameRec { name: name.clone(), version, present }
    }

    #[test]
    fn records_apply_in_any_order_and_only_once() {
        let a = n("a", 1);
        let mut fwd = Lsdb::new(1, "one");
        let mut rev = Lsdb::new(1, "one");
        let records = [rec(&a, 1, true), rec(&a, 2, false), rec(&a, 3, true)];
        let (taken, changed) = fwd.apply_names(7, &records);
        assert_eq!(taken.len(), 3);
        assert_eq!(changed.len(), 3);
        for r in records.iter().rev() {
            rev.apply_names(7, std::slice::from_ref(r));
        }
        assert_eq!(fwd.origins_of(&a), &[7]);
        assert_eq!(rev.origins_of(&a), &[7]);
        // A duplicate changes nothing and is not flooded again.
        let (taken, changed) = fwd.apply_names(7, &records);
        assert!(taken.is_empty() && changed.is_empty());
    }

    #[test]
    fn withdrawal_wins_over_an_older_announcement() {
        let a = n("a", 1);
        let mut db = Lsdb::new(1, "one");
        db.apply_names(7, &[rec(&a, 5, false)]);
        let (taken, _) = db.apply_names(7, &[rec(&a, 4, true)]);
        assert!(taken.is_empty());
        assert!(db.origins_of(&a).is_empty());
    }

    #[test]
    fn own_names_get_versions_and_are_not_in_the_remote_index() {
        let a = n("a", 1);
        let mut db = Lsdb::new(1, "one");
        assert_eq!(db.set_own_name(&a, true), Some(rec(&a, 1, true)));
        assert_eq!(db.set_own_name(&a, true), None);
        assert_eq!(db.set_own_name(&a, false), Some(rec(&a, 2, false)));
        assert_eq!(db.set_own_name(&n("never", 1), false), None);
        assert!(db.origins_of(&a).is_empty());
        // Records about ourselves from others are ignored.
        assert!(db.apply_names(1, &[rec(&a, 9, true)]).0.is_empty());
    }

    #[test]
    fn link_states_need_a_higher_seq() {
        let mut db = Lsdb::new(1, "one");
        let ls = |seq| proto::LinkState {
            origin: 2,
            seq,
            label: "two".into(),
            links: vec![proto::Adjacency { node: 1, cost: 1 }],
        };
        assert!(db.apply_link_state(&ls(3)));
        assert!(!db.apply_link_state(&ls(3)));
        assert!(!db.apply_link_state(&ls(2)));
        assert_eq!(db.origins()[&2].label, "two");
        let own = db.set_own_links(vec![(2, 1)]);
        assert_eq!(own.seq, 1);
        assert!(!db.apply_link_state(&own), "our own record never comes back in");
        assert_eq!(db.link_map().len(), 2);
    }

    #[test]
    fn snapshot_restores_an_equal_database() {
        let mut a = Lsdb::new(1, "one");
        a.set_own_links(vec![(2, 1)]);
        for i in 0..(SYNC_CHUNK as u64 + 5) {
            a.set_own_name(&n("x", i), true);
        }
        a.set_own_name(&n("x", 0), false);
        a.apply_names(3, &[rec(&n("far", 1), 1, true)]);
        let mut b = Lsdb::new(2, "two");
        let msgs = a.snapshot();
        assert!(msgs.len() >= 3, "links + two chunks of own names + the far origin");
        for m in msgs {
            match m.body {
                Some(proto::mesh_message::Body::LinkState(ls)) => {
                    b.apply_link_state(&ls);
                }
                Some(proto::mesh_message::Body::Names(batch)) => {
                    let recs: Vec<NameRec> = batch.records.iter().map(record_from_proto).collect();
                    b.apply_names(batch.origin, &recs);
                }
                None => {}
            }
        }
        assert_eq!(b.origins_of(&n("x", 1)), &[1]);
        assert!(b.origins_of(&n("x", 0)).is_empty(), "the withdrawal travelled as a tombstone");
        assert_eq!(b.origins_of(&n("far", 1)), &[3]);
        assert_eq!(b.origins()[&1].present_count(), SYNC_CHUNK + 4);
    }

    #[test]
    fn garbage_collection_forgets_unreachable_origins_and_old_tombstones() {
        let a = n("a", 1);
        let mut db = Lsdb::new(1, "one");
        db.apply_names(7, &[rec(&a, 1, true)]);
        db.apply_names(8, &[rec(&a, 1, true), rec(&n("b", 1), 2, false)]);
        let t0 = Instant::now();
        let reachable = HashSet::from([8]);
        assert!(db.collect_garbage(t0, &reachable).is_empty());
        let changed = db.collect_garbage(t0 + ORIGIN_TTL, &reachable);
        assert_eq!(changed, vec![a.clone()]);
        assert_eq!(db.origins_of(&a), &[8]);
        assert!(!db.origins().contains_key(&7));
        // The tombstone of 8's "b" is gone, and a stale announcement of it is refused.
        db.collect_garbage(Instant::now() + TOMBSTONE_TTL, &reachable);
        assert!(db.apply_names(8, &[rec(&n("b", 1), 1, true)]).0.is_empty());
        assert!(!db.apply_names(8, &[rec(&n("b", 1), 3, true)]).0.is_empty());
    }
}
