//! Routing-table lookups with 100 and with 100,000 names (docs/mesh.md, "Size and scale"): the mesh
//! routes (one instance by exact id and by any id, all instances along the tree, transit by node id) and
//! the local subscription table. The same lookups at both sizes, in the same run; the target is that
//! 100,000 names cost at most 2x what 100 do.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use slim_bindings::node::SubscriptionTable;
use slim_bindings::node::mesh::routes::MeshRoutes;
use slim_bindings::node::mesh::spf;
use slim_bindings::wire::Name;

/// What a node computes routes from.
struct Inputs {
    paths: spf::Paths,
    peer_conns: HashMap<u64, Vec<u64>>,
    names: Vec<(Name, Vec<u64>)>,
}

/// 100 nodes: a ring with chords (every node links to the next and to the one 7 further), seen from
/// node 1; `names` names spread over the other nodes, 4 instances per type.
fn inputs(names: usize) -> Inputs {
    let n = 100u64;
    let mut links: HashMap<u64, Vec<(u64, u32)>> = HashMap::new();
    let mut link = |a: u64, b: u64| {
        links.entry(a).or_default().push((b, 1));
        links.entry(b).or_default().push((a, 1));
    };
    for i in 1..=n {
        link(i, i % n + 1);
        link(i, (i + 6) % n + 1);
    }
    let paths = spf::compute(1, &links);
    let peer_conns: HashMap<u64, Vec<u64>> = links[&1].iter().map(|&(p, _)| (p, vec![1000 + p])).collect();
    let names = (0..names)
        .map(|k| {
            let name = Name::new("org", "bench", &format!("svc-{}", k / 4), Some(k as u64 % 4));
            (name, vec![2 + (k as u64 % (n - 1))])
        })
        .collect();
    Inputs { paths, peer_conns, names }
}

fn build(i: &Inputs) -> MeshRoutes {
    MeshRoutes::build(&i.paths, &i.peer_conns, i.names.iter().map(|(nm, o)| (nm, o.as_slice())))
}

fn mesh_routes(names: usize) -> (MeshRoutes, Vec<Name>) {
    let i = inputs(names);
    (build(&i), i.names.into_iter().map(|(nm, _)| nm).collect())
}

fn local_table(names: usize) -> (SubscriptionTable, Vec<Name>) {
    let mut t = SubscriptionTable::new();
    let mut list = Vec::with_capacity(names);
    for k in 0..names {
        let name = Name::new("org", "bench", &format!("svc-{}", k / 4), Some(k as u64 % 4));
        t.add(&name, k as u64 % 64, false);
        list.push(name);
    }
    (t, list)
}

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4)
}

/// A full recomputation (what a topology change costs a node) at both sizes, and the memory the
/// routes of 100,000 names take.
fn rebuild(c: &mut Criterion) {
    let big = inputs(100_000);
    let before = rss_kib();
    let routes = build(&big);
    let after = rss_kib();
    println!(
        "mesh routes of 100,000 names over 100 nodes: ~{} MiB resident ({} names routed)",
        after.saturating_sub(before) / 1024,
        routes.name_count()
    );
    drop(routes);
    let mut g = c.benchmark_group("routing_rebuild");
    g.sample_size(10);
    for size in [100usize, 100_000] {
        let i = inputs(size);
        g.bench_function(format!("all_routes/{size}"), |b| b.iter(|| build(black_box(&i)).name_count()));
    }
    let mut links: HashMap<u64, Vec<(u64, u32)>> = HashMap::new();
    for a in 1..=100u64 {
        for b in [a % 100 + 1, (a + 6) % 100 + 1] {
            links.entry(a).or_default().push((b, 1));
            links.entry(b).or_default().push((a, 1));
        }
    }
    g.bench_function("paths_100_nodes", |b| b.iter(|| spf::compute(black_box(1), &links).reach.len()));
    g.finish();
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("routing_lookup");
    g.throughput(Throughput::Elements(1));
    for size in [100usize, 100_000] {
        let (routes, names) = mesh_routes(size);
        let exact = names[names.len() / 2].clone();
        let any = exact.without_id();
        let mut out = Vec::with_capacity(16);
        g.bench_function(format!("mesh_match_one_exact/{size}"), |b| b.iter(|| routes.match_one(black_box(&exact), 7)));
        g.bench_function(format!("mesh_match_one_any/{size}"), |b| b.iter(|| routes.match_one(black_box(&any), 7)));
        g.bench_function(format!("mesh_tree_targets/{size}"), |b| {
            b.iter(|| {
                out.clear();
                routes.tree_targets(black_box(&any), 7, &mut out);
                out.len()
            })
        });
        g.bench_function(format!("mesh_hop_to_node/{size}"), |b| b.iter(|| routes.hop_to(black_box(57))));
        let (table, names) = local_table(size);
        let exact = names[names.len() / 2].clone();
        g.bench_function(format!("local_match_one_exact/{size}"), |b| {
            b.iter(|| table.match_one(black_box(&exact), 999))
        });
    }
    g.finish();
}

/// The benchmarks `criterion_main!` runs.
mod group {
    // criterion_group! writes its `pub fn` without a doc comment: in this private module it is not
    // public, so the missing_docs lint (Cargo.toml) does not ask for one.
    use super::*;
    criterion_group!(benches, lookups, rebuild);
}
criterion_main!(group::benches);
