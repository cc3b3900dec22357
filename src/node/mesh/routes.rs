//! The mesh routes a node forwards with (docs/mesh.md, "Forwarding"): built by the mesh task from
//! the link-state database and the computed [`Paths`], read on every message that no local or
//! attached subscription takes.
//!
//! Per name announced by other nodes: the candidates for one-instance delivery (origin, first-hop
//! connection, cost; nearest first) and the tree connections for delivery to all (one per tree
//! neighbour whose side of the shared tree holds an announcing origin). Per type, the same
//! aggregated over ids, for destinations with any id. Per node: the first-hop connection (transit
//! of messages already bound to an egress node).

use std::collections::{BTreeSet, HashMap, HashSet};

use rand::RngExt;

use super::spf::Paths;
use crate::wire::Name;
use crate::wire::name::ANY_ID;

type TypeKey = (u64, u64, u64);

/// One way to deliver to one instance of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The node announcing the name.
    pub origin: u64,
    /// The connection the first hop leaves on.
    pub conn: u64,
    /// Path cost to the origin.
    pub cost: u32,
    /// The neighbour node at the other end of `conn`.
    pub via: u64,
}

#[derive(Debug, Clone)]
struct NameRoutes {
    /// The name, with its strings when known (inspection).
    name: Name,
    /// Nearest first (cost, then origin id).
    unicast: Vec<Candidate>,
    tree: Vec<u64>,
}

#[derive(Debug, Clone, Default)]
struct TypeRoutes {
    ids: HashMap<u64, NameRoutes>,
    /// The nearest candidate of every id (one per instance).
    any_unicast: Vec<Candidate>,
    /// Union of the ids' tree connections.
    any_tree: Vec<u64>,
    /// Distinct origins announcing any id of the type.
    origins: Vec<u64>,
}

impl TypeRoutes {
    fn rebuild_aggregates(&mut self) {
        self.any_unicast = self.ids.values().filter_map(|r| r.unicast.first().copied()).collect();
        self.any_unicast.sort_unstable_by_key(|c| (c.cost, c.origin, c.conn));
        let mut tree: Vec<u64> = self.ids.values().flat_map(|r| r.tree.iter().copied()).collect();
        tree.sort_unstable();
        tree.dedup();
        self.any_tree = tree;
        let mut origins: Vec<u64> = self.ids.values().flat_map(|r| r.unicast.iter().map(|c| c.origin)).collect();
        origins.sort_unstable();
        origins.dedup();
        self.origins = origins;
    }
}

/// How this node reaches one other node.
#[derive(Debug, Clone, Copy)]
struct NodeRoute {
    cost: u32,
    hop_conn: u64,
    hop_node: u64,
    tree_conn: Option<u64>,
}

/// The mesh routing table of one node (see the module doc).
#[derive(Debug, Default)]
pub struct MeshRoutes {
    nodes: HashMap<u64, NodeRoute>,
    conn_peer: HashMap<u64, u64>,
    tree_neighbours: BTreeSet<u64>,
    types: HashMap<TypeKey, TypeRoutes>,
    names: usize,
}

fn type_key(n: &Name) -> TypeKey {
    n.type_key()
}

impl MeshRoutes {
    /// Routes from `paths`, with `peer_conns` (neighbour node → its up connections, any order) and
    /// every name other nodes announce with its origins.
    pub fn build<'a>(
        paths: &Paths,
        peer_conns: &HashMap<u64, Vec<u64>>,
        names: impl Iterator<Item = (&'a Name, &'a [u64])>,
    ) -> Self {
        let conn_of = |node: u64| peer_conns.get(&node).and_then(|c| c.iter().min().copied());
        let mut nodes = HashMap::with_capacity(paths.reach.len());
        for (&n, r) in &paths.reach {
            let Some(hop_conn) = conn_of(r.first_hop) else { continue };
            let tree_conn = if paths.tree_neighbours.contains(&r.branch) { conn_of(r.branch) } else { None };
            nodes.insert(n, NodeRoute { cost: r.cost, hop_conn, hop_node: r.first_hop, tree_conn });
        }
        let conn_peer = peer_conns.iter().flat_map(|(&node, conns)| conns.iter().map(move |&c| (c, node))).collect();
        let mut routes =
            Self { nodes, conn_peer, tree_neighbours: paths.tree_neighbours.clone(), types: HashMap::new(), names: 0 };
        let mut touched: HashSet<TypeKey> = HashSet::new();
        for (name, origins) in names {
            if routes.set_name_no_aggregate(name, origins) {
                touched.insert(type_key(name));
            }
        }
        for key in touched {
            if let Some(t) = routes.types.get_mut(&key) {
                t.rebuild_aggregates();
            }
        }
        routes
    }

    /// Recomputes the routes of one name after its announcing origins changed (same paths).
    pub fn update_name(&mut self, name: &Name, origins: &[u64]) {
        self.set_name_no_aggregate(name, origins);
        let key = type_key(name);
        let empty = match self.types.get_mut(&key) {
            Some(t) => {
                t.rebuild_aggregates();
                t.ids.is_empty()
            }
            None => false,
        };
        if empty {
            self.types.remove(&key);
        }
    }

    /// Sets (or clears) one name's routes; true when the type now has an entry for it.
    fn set_name_no_aggregate(&mut self, name: &Name, origins: &[u64]) -> bool {
        let mut r = NameRoutes { name: name.clone(), unicast: Vec::new(), tree: Vec::new() };
        for &o in origins {
            if let Some(nr) = self.nodes.get(&o) {
                r.unicast.push(Candidate { origin: o, conn: nr.hop_conn, cost: nr.cost, via: nr.hop_node });
                if let Some(t) = nr.tree_conn
                    && !r.tree.contains(&t)
                {
                    r.tree.push(t);
                }
            }
        }
        let key = type_key(name);
        if r.unicast.is_empty() {
            if let Some(t) = self.types.get_mut(&key)
                && t.ids.remove(&name.id()).is_some()
            {
                self.names -= 1;
            }
            return false;
        }
        r.unicast.sort_unstable_by_key(|c| (c.cost, c.origin));
        r.tree.sort_unstable();
        if self.types.entry(key).or_default().ids.insert(name.id(), r).is_none() {
            self.names += 1;
        }
        true
    }

    /// Number of (exact) names with a route.
    pub fn name_count(&self) -> usize {
        self.names
    }

    /// The connection toward node `node`, if it is reachable.
    pub fn hop_to(&self, node: u64) -> Option<u64> {
        self.nodes.get(&node).map(|r| r.hop_conn)
    }

    /// Cost and first-hop node toward `node`.
    pub fn path_to(&self, node: u64) -> Option<(u32, u64)> {
        self.nodes.get(&node).map(|r| (r.cost, r.hop_node))
    }

    /// The neighbour node at the other end of a mesh connection.
    pub fn peer_of(&self, conn: u64) -> Option<u64> {
        self.conn_peer.get(&conn).copied()
    }

    /// True when `conn` leads to a neighbour on the shared tree (a multicast copy may come in on it).
    pub fn is_tree_link(&self, conn: u64) -> bool {
        self.peer_of(conn).is_some_and(|p| self.tree_neighbours.contains(&p))
    }

    /// True when some other node announces a name of `dst`'s type.
    pub fn knows_type(&self, dst: &Name) -> bool {
        self.types.contains_key(&type_key(dst))
    }

    /// One instance of `dst` (`fanout == 1`), never back toward the neighbour `incoming` came from:
    /// an exact id goes to its nearest origin; any id picks uniformly among the instances; an id
    /// nobody announces goes to the type's only origin if there is exactly one.
    pub fn match_one(&self, dst: &Name, incoming: u64) -> Option<Candidate> {
        let t = self.types.get(&type_key(dst))?;
        let back = self.peer_of(incoming);
        let allowed = |c: &&Candidate| c.conn != incoming && Some(c.via) != back;
        if dst.id() == ANY_ID {
            let n = t.any_unicast.iter().filter(allowed).count();
            if n == 0 {
                return None;
            }
            let pick = if n == 1 { 0 } else { rand::rng().random_range(0..n) };
            return t.any_unicast.iter().filter(allowed).nth(pick).copied();
        }
        match t.ids.get(&dst.id()) {
            Some(r) => r.unicast.iter().find(allowed).copied(),
            None if t.origins.len() == 1 => t.any_unicast.iter().find(allowed).copied(),
            None => None,
        }
    }

    /// The tree connections for `dst` (`fanout != 1`), without the one(s) toward `incoming`'s
    /// neighbour; appended to `out`.
    pub fn tree_targets(&self, dst: &Name, incoming: u64, out: &mut Vec<u64>) {
        let Some(t) = self.types.get(&type_key(dst)) else { return };
        let list = if dst.id() == ANY_ID {
            &t.any_tree
        } else {
            match t.ids.get(&dst.id()) {
                Some(r) => &r.tree,
                None if t.origins.len() == 1 => &t.any_tree,
                None => return,
            }
        };
        let back = self.peer_of(incoming);
        out.extend(list.iter().copied().filter(|&c| c != incoming && (back.is_none() || self.peer_of(c) != back)));
    }

    /// Every route (for inspection): name, candidates (nearest first).
    pub fn entries(&self) -> impl Iterator<Item = (&Name, &[Candidate])> {
        self.types.values().flat_map(|t| t.ids.values().map(|r| (&r.name, r.unicast.as_slice())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::mesh::spf;

    fn n(t: &str, id: Option<u64>) -> Name {
        Name::new("org", "ns", t, id)
    }

    /// Node 1 in the ring 1-2-3-4-1, conn 12 to node 2 and conn 14 to node 4.
    fn ring_routes(names: &[(Name, Vec<u64>)]) -> MeshRoutes {
        let mut g: HashMap<u64, Vec<(u64, u32)>> = HashMap::new();
        for (a, b) in [(1, 2), (2, 3), (3, 4), (4, 1)] {
            g.entry(a).or_default().push((b, 1));
            g.entry(b).or_default().push((a, 1));
        }
        let paths = spf::compute(1, &g);
        let peers = HashMap::from([(2, vec![12]), (4, vec![14, 41])]);
        MeshRoutes::build(&paths, &peers, names.iter().map(|(n, o)| (n, o.as_slice())))
    }

    #[test]
    fn exact_ids_go_to_the_nearest_origin_and_never_back() {
        let a = n("a", Some(7));
        let r = ring_routes(&[(a.clone(), vec![3, 4])]);
        let c = r.match_one(&a, 999).unwrap();
        assert_eq!((c.origin, c.conn, c.cost), (4, 14, 1));
        // Coming from node 4 (either of its connections), the other way round to 3.
        assert_eq!(r.match_one(&a, 41).map(|c| (c.origin, c.conn)), Some((3, 12)));
        assert_eq!(r.hop_to(3), Some(12));
        assert_eq!(r.path_to(3), Some((2, 2)));
    }

    #[test]
    fn any_id_spreads_over_instances() {
        let names = [(n("s", Some(1)), vec![2]), (n("s", Some(2)), vec![4])];
        let r = ring_routes(&names);
        let mut seen = HashSet::new();
        for _ in 0..200 {
            seen.insert(r.match_one(&n("s", None), 999).unwrap().origin);
        }
        assert_eq!(seen, HashSet::from([2, 4]));
        assert_eq!(r.match_one(&n("s", None), 12).unwrap().origin, 4);
        // An id nobody announces: two origins, no guess.
        assert!(r.match_one(&n("s", Some(3)), 999).is_none());
    }

    #[test]
    fn single_origin_fallback_for_unknown_ids() {
        let r = ring_routes(&[(n("chan", None), vec![3])]);
        assert_eq!(r.match_one(&n("chan", Some(5)), 999).unwrap().origin, 3);
        let mut out = Vec::new();
        r.tree_targets(&n("chan", Some(5)), 999, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn tree_targets_follow_the_shared_tree_and_exclude_the_incoming_side() {
        // The tree of the ring drops (3,4): from 1, nodes 2 and 3 are on 2's side, 4 on its own.
        let g = n("group", None);
        let r = ring_routes(&[(g.clone(), vec![2, 3, 4])]);
        let mut out = Vec::new();
        r.tree_targets(&g, 999, &mut out);
        out.sort();
        assert_eq!(out, vec![12, 14]);
        out.clear();
        r.tree_targets(&g, 41, &mut out);
        assert_eq!(out, vec![12]);
        assert!(r.is_tree_link(12) && r.is_tree_link(41));
    }

    #[test]
    fn updates_add_and_remove_names() {
        let a = n("a", Some(1));
        let mut r = ring_routes(&[]);
        assert!(!r.knows_type(&a));
        r.update_name(&a, &[3]);
        assert_eq!(r.name_count(), 1);
        assert!(r.knows_type(&a));
        r.update_name(&a, &[]);
        assert_eq!(r.name_count(), 0);
        assert!(!r.knows_type(&a));
        // An unreachable origin gives no route.
        r.update_name(&a, &[99]);
        assert!(r.match_one(&a, 0).is_none());
    }
}
