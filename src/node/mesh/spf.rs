//! Paths from one node over the link-state graph: shortest paths (unicast next hops) and the
//! shared multicast tree (docs/mesh.md, "What each node keeps").
//!
//! Pure functions of the link-state database, so that every node with the same database derives
//! the same tree. An edge exists only when both ends list each other (a dead node's stale record
//! still lists its neighbours, but they no longer list it).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};

/// What one node knows how to reach: per reachable node, the path cost, the neighbour that starts
/// a shortest path to it, and the tree neighbour whose side of the shared tree holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paths {
    /// Reachable node → (cost, first-hop neighbour, tree-branch neighbour). The computing node
    /// itself is not in the map.
    pub reach: HashMap<u64, Reach>,
    /// The computing node's neighbours on the shared tree.
    pub tree_neighbours: BTreeSet<u64>,
}

/// How one node is reached (see [`Paths`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Sum of link costs along a shortest path.
    pub cost: u32,
    /// The neighbour a shortest path starts with (smallest node id among equal-cost paths).
    pub first_hop: u64,
    /// The tree neighbour on whose side of the shared tree the node is.
    pub branch: u64,
}

/// Two-way edges of the graph: `links[a]` lists `(b, cost)` as `a` announced them; the edge is kept
/// when `b` also lists `a`, with the larger of the two costs.
pub fn two_way_edges(links: &HashMap<u64, Vec<(u64, u32)>>) -> HashMap<u64, Vec<(u64, u32)>> {
    let mut out: HashMap<u64, Vec<(u64, u32)>> = HashMap::with_capacity(links.len());
    for (&a, adj) in links {
        for &(b, cost_ab) in adj {
            if a == b {
                continue;
            }
            let back = links.get(&b).and_then(|l| l.iter().find(|(n, _)| *n == a).map(|(_, c)| *c));
            if let Some(cost_ba) = back {
                let entry = out.entry(a).or_default();
                if !entry.iter().any(|(n, _)| *n == b) {
                    entry.push((b, cost_ab.max(cost_ba).max(1)));
                }
            }
        }
    }
    for adj in out.values_mut() {
        adj.sort_unstable();
    }
    out
}

/// Shortest paths and the shared tree from `me`.
pub fn compute(me: u64, links: &HashMap<u64, Vec<(u64, u32)>>) -> Paths {
    let graph = two_way_edges(links);
    let (dist, first_hop) = dijkstra(me, &graph);
    let tree = spanning_tree(&graph, dist.keys().copied());
    let branch = branches(me, &tree);
    let tree_neighbours: BTreeSet<u64> = tree.get(&me).map(|s| s.iter().copied().collect()).unwrap_or_default();
    let reach = dist
        .iter()
        .filter(|(n, _)| **n != me)
        .filter_map(|(&n, &cost)| {
            let fh = *first_hop.get(&n)?;
            let br = *branch.get(&n)?;
            Some((n, Reach { cost, first_hop: fh, branch: br }))
        })
        .collect();
    Paths { reach, tree_neighbours }
}

/// Dijkstra with deterministic ties: among equal-cost paths, the smallest first hop wins.
fn dijkstra(me: u64, graph: &HashMap<u64, Vec<(u64, u32)>>) -> (HashMap<u64, u32>, HashMap<u64, u64>) {
    let mut dist: HashMap<u64, u32> = HashMap::from([(me, 0)]);
    let mut first_hop: HashMap<u64, u64> = HashMap::new();
    let mut done: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut heap = BinaryHeap::from([Reverse((0u32, me))]);
    while let Some(Reverse((d, u))) = heap.pop() {
        if !done.insert(u) {
            continue;
        }
        let fh_u = first_hop.get(&u).copied();
        for &(v, c) in graph.get(&u).map(Vec::as_slice).unwrap_or_default() {
            if done.contains(&v) {
                continue;
            }
            let nd = d.saturating_add(c);
            let candidate = fh_u.unwrap_or(v);
            match dist.get(&v) {
                Some(&old) if nd > old => {}
                Some(&old) if nd == old => {
                    if first_hop.get(&v).is_none_or(|&f| candidate < f) {
                        first_hop.insert(v, candidate);
                    }
                }
                _ => {
                    dist.insert(v, nd);
                    first_hop.insert(v, candidate);
                    heap.push(Reverse((nd, v)));
                }
            }
        }
    }
    (dist, first_hop)
}

/// Minimum spanning tree of the nodes in `component` (Kruskal; edges ordered by cost, then by
/// their two node ids, so every node computes the same tree).
fn spanning_tree(
    graph: &HashMap<u64, Vec<(u64, u32)>>,
    component: impl Iterator<Item = u64>,
) -> HashMap<u64, BTreeSet<u64>> {
    let nodes: Vec<u64> = component.collect();
    let index: HashMap<u64, usize> = nodes.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut edges: Vec<(u32, u64, u64)> = Vec::new();
    for &a in &nodes {
        for &(b, c) in graph.get(&a).map(Vec::as_slice).unwrap_or_default() {
            if a < b && index.contains_key(&b) {
                edges.push((c, a, b));
            }
        }
    }
    edges.sort_unstable();
    let mut parent: Vec<usize> = (0..nodes.len()).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let mut tree: HashMap<u64, BTreeSet<u64>> = HashMap::new();
    for (_, a, b) in edges {
        let (ra, rb) = (find(&mut parent, index[&a]), find(&mut parent, index[&b]));
        if ra != rb {
            parent[ra] = rb;
            tree.entry(a).or_default().insert(b);
            tree.entry(b).or_default().insert(a);
        }
    }
    tree
}

/// For every node of the tree, the neighbour of `me` on whose side it is.
fn branches(me: u64, tree: &HashMap<u64, BTreeSet<u64>>) -> HashMap<u64, u64> {
    let mut branch: HashMap<u64, u64> = HashMap::new();
    let mut queue: VecDeque<u64> = VecDeque::new();
    for &n in tree.get(&me).into_iter().flatten() {
        branch.insert(n, n);
        queue.push_back(n);
    }
    while let Some(u) = queue.pop_front() {
        let b = branch[&u];
        for &v in tree.get(&u).into_iter().flatten() {
            if v != me && !branch.contains_key(&v) {
                branch.insert(v, b);
                queue.push_back(v);
            }
        }
    }
    branch
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Undirected graph from an edge list (both ends announce the link, cost 1).
    fn graph(edges: &[(u64, u64)]) -> HashMap<u64, Vec<(u64, u32)>> {
        let mut g: HashMap<u64, Vec<(u64, u32)>> = HashMap::new();
        for &(a, b) in edges {
            g.entry(a).or_default().push((b, 1));
            g.entry(b).or_default().push((a, 1));
        }
        g
    }

    #[test]
    fn chain_hops_and_costs() {
        let g = graph(&[(1, 2), (2, 3), (3, 4)]);
        let p = compute(1, &g);
        assert_eq!(p.reach[&4], Reach { cost: 3, first_hop: 2, branch: 2 });
        assert_eq!(p.reach[&2].cost, 1);
        assert_eq!(p.tree_neighbours, BTreeSet::from([2]));
        let p3 = compute(3, &g);
        assert_eq!(p3.reach[&1].first_hop, 2);
        assert_eq!(p3.reach[&4].first_hop, 4);
        assert_eq!(p3.tree_neighbours, BTreeSet::from([2, 4]));
    }

    #[test]
    fn one_way_links_are_ignored() {
        // 3 died: its stale record still lists 2, but 2 no longer lists 3.
        let mut g = graph(&[(1, 2)]);
        g.insert(3, vec![(2, 1)]);
        let p = compute(1, &g);
        assert!(!p.reach.contains_key(&3));
        assert_eq!(two_way_edges(&g).get(&3), None);
    }

    #[test]
    fn ring_ties_pick_the_smallest_first_hop_and_the_tree_drops_one_edge() {
        // 1-2-3-4-1: from 1, node 3 is two hops either way.
        let g = graph(&[(1, 2), (2, 3), (3, 4), (4, 1)]);
        let p = compute(1, &g);
        assert_eq!(p.reach[&3], Reach { cost: 2, first_hop: 2, branch: p.reach[&3].branch });
        // Every node derives the same tree: 3 edges, the same set from any vantage point.
        let tree_edges = |me: u64| {
            let p = compute(me, &g);
            let mut e: Vec<(u64, u64)> = p.tree_neighbours.iter().map(|&n| (me.min(n), me.max(n))).collect();
            e.sort();
            e
        };
        let mut all: BTreeSet<(u64, u64)> = BTreeSet::new();
        for me in 1..=4 {
            all.extend(tree_edges(me));
        }
        assert_eq!(all.len(), 3, "a spanning tree of 4 nodes has 3 edges: {all:?}");
        assert!(!all.contains(&(3, 4)), "ties are broken by node ids: (3,4) is the last edge");
    }

    #[test]
    fn costs_choose_the_cheaper_path() {
        let mut g: HashMap<u64, Vec<(u64, u32)>> = HashMap::new();
        let mut link = |a: u64, b: u64, c: u32| {
            g.entry(a).or_default().push((b, c));
            g.entry(b).or_default().push((a, c));
        };
        link(1, 2, 10);
        link(1, 3, 1);
        link(3, 2, 1);
        let p = compute(1, &g);
        assert_eq!(p.reach[&2], Reach { cost: 2, first_hop: 3, branch: 3 });
        assert_eq!(p.tree_neighbours, BTreeSet::from([3]));
    }

    #[test]
    fn disconnected_nodes_are_unreachable() {
        let g = graph(&[(1, 2), (3, 4)]);
        let p = compute(1, &g);
        assert_eq!(p.reach.len(), 1);
        let alone = compute(9, &g);
        assert!(alone.reach.is_empty() && alone.tree_neighbours.is_empty());
    }

    #[test]
    fn branches_partition_the_tree() {
        // A star around 1 with a tail: 1-2, 1-3, 3-4, 4-5.
        let g = graph(&[(1, 2), (1, 3), (3, 4), (4, 5)]);
        let p = compute(1, &g);
        assert_eq!(p.reach[&5].branch, 3);
        assert_eq!(p.reach[&2].branch, 2);
        let p4 = compute(4, &g);
        assert_eq!(p4.reach[&2].branch, 3);
        assert_eq!(p4.reach[&5].branch, 5);
    }
}
