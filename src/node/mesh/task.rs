//! The mesh task of one node: floods records, syncs new neighbours, recomputes routes
//! (docs/mesh.md, "What is announced" and "Link failure and recovery").
//!
//! It wakes on a received control message, a changed local name, a link that came up or went
//! down, and a periodic tick (garbage collection); handles everything pending in one round; and
//! recomputes routes once per round: fully when the topology changed, per name otherwise. It
//! never waits on a link: a message that does not fit a link's queue right away is handed to a
//! task that waits for room (records are idempotent, so their order on the wire does not matter).

use std::collections::{HashMap, HashSet};
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::lsdb::{self, Lsdb, NameRec};
use super::proto::{self, mesh_message::Body};
use super::{MeshLinkView as MeshLink, NodeView, routes::MeshRoutes, spf};
use crate::node::codec::Outbound;
use crate::node::{ConnTx, Inner};
use crate::wire::{Message, Name};

/// How often tombstones and unreachable origins are looked at.
const GC_EVERY: Duration = Duration::from_secs(5);
/// Most control messages handled in one round before routes are recomputed.
const ROUND: usize = 512;
/// After a topology change, routes are recomputed this much later, so that the burst of records
/// one failure causes (every neighbour's new links) costs one computation, not one per record.
/// Flooding is never delayed.
const HOLD_DOWN: Duration = Duration::from_millis(10);

struct State {
    me: u64,
    lsdb: Lsdb,
    paths: spf::Paths,
    links: Vec<MeshLink>,
    synced: HashMap<u64, u64>,
    adjacency: Vec<(u64, u32)>,
    /// When the pending full recomputation is due (None: routes are current).
    recompute_at: Option<tokio::time::Instant>,
}

pub(crate) async fn run(
    inner: Weak<Inner>,
    mut rx: mpsc::Receiver<(u64, proto::MeshMessage)>,
    cancel: CancellationToken,
) {
    let Some(first) = inner.upgrade() else { return };
    let mut st = State {
        me: first.mesh.node,
        lsdb: Lsdb::new(first.mesh.node, &first.mesh.label),
        paths: spf::Paths::default(),
        links: Vec::new(),
        synced: HashMap::new(),
        adjacency: Vec::new(),
        recompute_at: None,
    };
    let mesh = first.mesh.clone();
    drop(first);
    let mut gc = tokio::time::interval(GC_EVERY);
    gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inbox: Vec<(u64, proto::MeshMessage)> = Vec::with_capacity(ROUND);
    loop {
        let mut collect = false;
        let mut due = false;
        let hold = st.recompute_at;
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            n = rx.recv_many(&mut inbox, ROUND) => if n == 0 { return },
            _ = mesh.wake.notified() => {}
            _ = async { tokio::time::sleep_until(hold.unwrap_or_else(tokio::time::Instant::now)).await },
                if hold.is_some() => due = true,
            _ = gc.tick() => collect = true,
        }
        let Some(inner) = inner.upgrade() else { return };
        round(&inner, &mut st, &mut inbox, collect);
        if due || st.recompute_at.is_some_and(|t| t <= tokio::time::Instant::now()) {
            st.recompute_at = None;
            recompute(&inner, &mut st);
            refresh_view(&inner, &st);
        }
    }
}

/// Everything pending, then routes.
fn round(inner: &Inner, st: &mut State, inbox: &mut Vec<(u64, proto::MeshMessage)>, collect: bool) {
    let dirty = std::mem::take(&mut *inner.mesh.dirty.lock());
    let mut topology = false;
    let mut changed: HashSet<Name> = HashSet::new();

    if dirty.links || st.links.is_empty() {
        topology |= refresh_links(inner, st);
    }
    // Our own names.
    let mut own = Vec::new();
    for name in dirty.names {
        let present = inner.mesh.announces(&name);
        if let Some(r) = st.lsdb.set_own_name(&name, present) {
            own.push(lsdb::record_to_proto(&r));
        }
    }
    if !own.is_empty() {
        for chunk in own.chunks(lsdb::SYNC_CHUNK) {
            flood(inner, st, None, &lsdb::names_message(st.me, chunk.to_vec()));
        }
    }
    // What neighbours sent.
    for (from, msg) in inbox.drain(..) {
        match msg.body {
            Some(Body::LinkState(ls)) if st.lsdb.apply_link_state(&ls) => {
                topology = true;
                flood(inner, st, Some(from), &proto::MeshMessage { body: Some(Body::LinkState(ls)) });
            }
            Some(Body::LinkState(_)) => {}
            Some(Body::Names(batch)) => {
                let recs: Vec<NameRec> = batch.records.iter().map(lsdb::record_from_proto).collect();
                let (taken, names) = st.lsdb.apply_names(batch.origin, &recs);
                changed.extend(names);
                if !taken.is_empty() {
                    let out = taken.iter().map(lsdb::record_to_proto).collect();
                    flood(inner, st, Some(from), &lsdb::names_message(batch.origin, out));
                }
            }
            None => {}
        }
    }
    if collect {
        let reachable: HashSet<u64> = st.paths.reach.keys().copied().collect();
        changed.extend(st.lsdb.collect_garbage(Instant::now(), &reachable));
    }
    if topology && st.recompute_at.is_none() {
        st.recompute_at = Some(tokio::time::Instant::now() + HOLD_DOWN);
    }
    if st.recompute_at.is_some() {
        // The full recomputation due soon covers the names that changed.
    } else if !changed.is_empty() {
        let mut routes = inner.mesh.routes.write();
        for name in &changed {
            routes.update_name(name, st.lsdb.origins_of(name));
        }
        inner.mesh.stats.name_updates.fetch_add(changed.len() as u64, Ordering::Relaxed);
    }
    if !changed.is_empty() || collect {
        refresh_view(inner, st);
    }
}

/// Reads the node's mesh links; syncs new ones; re-announces our links when the set of
/// neighbours changed. True when the topology changed.
fn refresh_links(inner: &Inner, st: &mut State) -> bool {
    st.links = inner.mesh_links();
    let live: HashSet<u64> = st.links.iter().map(|l| l.conn).collect();
    st.synced.retain(|c, _| live.contains(c));
    let fresh: Vec<MeshLink> =
        st.links.iter().copied().filter(|l| st.synced.get(&l.conn) != Some(&l.generation)).collect();
    let mut adjacency: Vec<(u64, u32)> = st.links.iter().filter(|l| l.peer != st.me).map(|l| (l.peer, 1)).collect();
    adjacency.sort_unstable();
    adjacency.dedup();
    let mut topology = false;
    if adjacency != st.adjacency || st.lsdb.own_link_state().is_none_or(|l| l.seq == 0) {
        st.adjacency = adjacency.clone();
        let ls = st.lsdb.set_own_links(adjacency);
        topology = true;
        flood(inner, st, None, &proto::MeshMessage { body: Some(Body::LinkState(ls)) });
    }
    for link in fresh {
        st.synced.insert(link.conn, link.generation);
        let msgs: Vec<Message> = st.lsdb.snapshot().iter().map(|m| super::encode_control(st.me, m)).collect();
        debug!(node = %inner.mesh.label, conn = link.conn, peer = format_args!("{:016x}", link.peer),
            messages = msgs.len(), "mesh link up: full sync");
        send_all(inner, link.conn, msgs);
        topology = true;
    }
    topology
}

/// Sends one control message to every mesh link but `except`.
fn flood(inner: &Inner, st: &State, except: Option<u64>, body: &proto::MeshMessage) {
    let msg = super::encode_control(st.me, body);
    for l in &st.links {
        if Some(l.conn) != except {
            send_all(inner, l.conn, vec![msg.clone()]);
        }
    }
}

/// Queues `msgs` on `conn` in order: at once while there is room, the rest from a task that
/// waits for room.
fn send_all(inner: &Inner, conn: u64, msgs: Vec<Message>) {
    let Some(ConnTx::Remote(tx)) = inner.sender_of(conn) else {
        inner.mesh.stats.control_dropped.fetch_add(msgs.len() as u64, Ordering::Relaxed);
        return;
    };
    let stats = &inner.mesh.stats;
    let mut it = msgs.into_iter().map(Outbound::Message);
    for m in it.by_ref() {
        match tx.try_send(m) {
            Ok(()) => {
                stats.control_sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Closed(_)) => {
                // Lost with the link; the next link up brings a full sync.
                stats.control_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(TrySendError::Full(m)) => {
                let rest: Vec<Outbound> = std::iter::once(m).chain(it).collect();
                let n = rest.len() as u64;
                let dropped = inner.mesh.clone();
                tokio::spawn(async move {
                    for m in rest {
                        if tx.send(m).await.is_err() {
                            dropped.stats.control_dropped.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        dropped.stats.control_sent.fetch_add(1, Ordering::Relaxed);
                    }
                });
                debug!(conn, queued = n, "mesh control waits for room on a link");
                return;
            }
        }
    }
}

/// Full recomputation: paths, then every name's routes.
fn recompute(inner: &Inner, st: &mut State) {
    let mut links = st.lsdb.link_map();
    links.insert(st.me, st.adjacency.clone());
    st.paths = spf::compute(st.me, &links);
    let mut peer_conns: HashMap<u64, Vec<u64>> = HashMap::new();
    for l in &st.links {
        peer_conns.entry(l.peer).or_default().push(l.conn);
    }
    let routes = MeshRoutes::build(&st.paths, &peer_conns, st.lsdb.remote_names());
    *inner.mesh.routes.write() = routes;
    inner.mesh.stats.recomputes.fetch_add(1, Ordering::Relaxed);
    debug!(node = %inner.mesh.label, reachable = st.paths.reach.len(), names = st.lsdb.remote_name_count(),
        "mesh routes recomputed");
}

fn refresh_view(inner: &Inner, st: &State) {
    let view: Vec<NodeView> = st
        .lsdb
        .origins()
        .iter()
        .map(|(&id, o)| {
            let reach = st.paths.reach.get(&id);
            NodeView {
                node: id,
                label: o.label.clone(),
                reachable: id == st.me || reach.is_some(),
                cost: reach.map_or(0, |r| r.cost),
                names: o.present_count() as u64,
                seq: o.seq,
                links: o.links.clone(),
            }
        })
        .collect();
    *inner.mesh.view.lock() = view;
}
