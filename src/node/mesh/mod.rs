//! Nodes that route for each other (docs/mesh.md).
//!
//! Every node has a random id for its run. Linked mesh nodes flood link-state records (their links,
//! and the names subscribed on their local and leaf connections) with duplicate suppression; each
//! computes shortest paths and one shared spanning tree from the same database, and routes:
//! one-instance messages along a shortest path to the egress node chosen by the first mesh node,
//! all-instance messages along the tree. [`Mesh`] is the state the forwarding path reads; the
//! [`task`] keeps it up to date.
//!
//! Layout: [`hello`] (who speaks what on a link), `lsdb` (the database and its merge rules), `spf`
//! (paths and tree, public for the benches), [`routes`] (the table the forwarding path reads), `task` (flooding and
//! recomputation), [`inspect`] (the `NodeInfo` API), `tag` (the per-message mesh metadata).

pub mod hello;
pub mod inspect;
mod lsdb;
pub mod routes;
pub mod spf;
pub(crate) mod tag;
mod task;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use tokio::sync::{Notify, mpsc};

use crate::wire::{Message, Name};
pub use hello::Hello;
pub use routes::MeshRoutes;

/// Generated types of `proto/mesh.proto` (`slim.mesh.v1`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("slim.mesh.v1");
}

/// Default bound on mesh hops of one message (a second guard against loops while routes change).
pub const DEFAULT_MAX_HOPS: u32 = 16;
/// Control messages waiting for the mesh task; a reader that finds it full waits.
pub const CONTROL_QUEUE: usize = 4096;
/// HTTP/2 keepalive on links of a mesh node when the configuration sets none: a silent peer is
/// declared gone after about interval + timeout.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// `mesh:` of a node's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    /// Take part in the mesh (default true for the standalone node).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Most mesh hops a message may take before it is dropped as looping.
    #[serde(default = "default_max_hops")]
    pub max_hops: u32,
}

fn yes() -> bool {
    true
}

fn default_max_hops() -> u32 {
    DEFAULT_MAX_HOPS
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self { enabled: true, max_hops: DEFAULT_MAX_HOPS }
    }
}

/// Mesh counters (all monotonic).
#[derive(Debug, Default)]
pub struct MeshStats {
    /// Dropped: more hops than `max_hops` (a loop while routes changed).
    pub dropped_hop_limit: AtomicU64,
    /// Dropped: an all-instance copy that came in on a link that is not on this node's tree.
    pub dropped_off_tree: AtomicU64,
    /// Dropped in transit: no route at this node for a message another mesh node sent here.
    pub dropped_transit_no_route: AtomicU64,
    /// "no matching found" notices sent back to a leaf.
    pub notices_sent: AtomicU64,
    /// Mesh control messages received / sent.
    pub control_received: AtomicU64,
    pub control_sent: AtomicU64,
    /// Control messages that could not be queued to a link (the link closed).
    pub control_dropped: AtomicU64,
    /// Route recomputations (full) and incremental name updates.
    pub recomputes: AtomicU64,
    pub name_updates: AtomicU64,
}

impl MeshStats {
    /// The mesh's drop counters by name (shown by `node_stats()`, node-info and `/metrics`):
    /// hop limit, off tree, no route in transit, control messages a closed link could not take.
    pub fn drops(&self) -> [(&'static str, u64); 4] {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("mesh_dropped_hop_limit", r(&self.dropped_hop_limit)),
            ("mesh_dropped_off_tree", r(&self.dropped_off_tree)),
            ("mesh_dropped_transit_no_route", r(&self.dropped_transit_no_route)),
            ("mesh_dropped_control", r(&self.control_dropped)),
        ]
    }
}

/// A neighbour node as the inspection API shows it.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    /// The node's id.
    pub node: u64,
    /// Its label.
    pub label: String,
    /// Reachable from here now.
    pub reachable: bool,
    /// Path cost from here.
    pub cost: u32,
    /// Names it announces.
    pub names: u64,
    /// Its link record's sequence number.
    pub seq: u64,
    /// Its links as it announced them.
    pub links: Vec<(u64, u32)>,
}

/// One mesh link that is up, as the mesh task sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MeshLinkView {
    /// The connection.
    pub conn: u64,
    /// The neighbour node's id.
    pub peer: u64,
    /// Bumped every time the link (re)connects: a new generation needs a full sync.
    pub generation: u64,
}

/// What changed since the mesh task last ran.
#[derive(Debug, Default)]
struct Dirty {
    names: HashSet<Name>,
    links: bool,
}

/// The mesh state of one node (see the module doc).
pub struct Mesh {
    /// This node's id for this run.
    pub node: u64,
    /// This node's label (its configured node id).
    pub label: String,
    enabled: AtomicBool,
    max_hops: AtomicU64,
    /// Routes through other nodes.
    pub(crate) routes: RwLock<MeshRoutes>,
    /// Names on local and leaf connections: how many connections hold each.
    local_names: Mutex<HashMap<Name, u32>>,
    dirty: Mutex<Dirty>,
    wake: Notify,
    control_tx: OnceLock<mpsc::Sender<(u64, proto::MeshMessage)>>,
    /// Every known node (inspection), refreshed by the task.
    pub(crate) view: Mutex<Vec<NodeView>>,
    /// Counters.
    pub stats: MeshStats,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh").field("node", &format_args!("{:016x}", self.node)).finish_non_exhaustive()
    }
}

/// Components of the reserved name mesh control messages are addressed to.
static CONTROL_TYPE: LazyLock<(u64, u64, u64)> =
    LazyLock::new(|| Name::new("slim", "mesh", "control", None).type_key());
/// Content type of mesh control messages.
pub const CONTROL_CONTENT_TYPE: &str = "application/x-slim-mesh";

impl Mesh {
    /// Mesh state with a fresh random id, not taking part yet.
    pub fn new(label: &str) -> Self {
        Self {
            node: rand::random::<u64>() | 1,
            label: label.to_string(),
            enabled: AtomicBool::new(false),
            max_hops: AtomicU64::new(u64::from(DEFAULT_MAX_HOPS)),
            routes: RwLock::new(MeshRoutes::default()),
            local_names: Mutex::new(HashMap::new()),
            dirty: Mutex::new(Dirty::default()),
            wake: Notify::new(),
            control_tx: OnceLock::new(),
            view: Mutex::new(Vec::new()),
            stats: MeshStats::default(),
        }
    }

    /// True once this node takes part in the mesh.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Most hops a message may take.
    pub fn max_hops(&self) -> u32 {
        self.max_hops.load(Ordering::Relaxed) as u32
    }

    /// What this node says about itself on a new link.
    pub fn hello(&self) -> Hello {
        Hello { node: self.node, mesh: self.enabled(), notify: true, label: self.label.clone() }
    }

    /// Marks the mesh on and records the names already on local/leaf connections. Called with
    /// the subscription table read-locked, so no subscription change races the scan.
    pub(crate) fn switch_on(&self, cfg: &MeshConfig, existing: impl Iterator<Item = Name>) {
        self.max_hops.store(u64::from(cfg.max_hops.max(1)), Ordering::Relaxed);
        let mut names = self.local_names.lock();
        let mut dirty = self.dirty.lock();
        for n in existing {
            *names.entry(n.clone()).or_default() += 1;
            dirty.names.insert(n);
        }
        dirty.links = true;
        self.enabled.store(true, Ordering::Relaxed);
        drop(dirty);
        self.wake.notify_one();
    }

    /// A subscription was added on a local or leaf connection (call with the table write-locked).
    pub(crate) fn name_added(&self, name: &Name) {
        let first = {
            let mut names = self.local_names.lock();
            let c = names.entry(name.clone()).or_default();
            *c += 1;
            *c == 1
        };
        if first {
            self.mark_name(name);
        }
    }

    /// A subscription was removed from a local or leaf connection (call with the table write-locked).
    pub(crate) fn name_removed(&self, name: &Name) {
        let last = {
            let mut names = self.local_names.lock();
            match names.get_mut(name) {
                Some(c) if *c > 1 => {
                    *c -= 1;
                    false
                }
                Some(_) => {
                    names.remove(name);
                    true
                }
                None => false,
            }
        };
        if last {
            self.mark_name(name);
        }
    }

    fn mark_name(&self, name: &Name) {
        self.dirty.lock().names.insert(name.clone());
        self.wake.notify_one();
    }

    /// A mesh link came up or went down.
    pub(crate) fn links_changed(&self) {
        if self.enabled() {
            self.dirty.lock().links = true;
            self.wake.notify_one();
        }
    }

    /// Whether this node announces `name` now.
    fn announces(&self, name: &Name) -> bool {
        self.local_names.lock().contains_key(name)
    }

    /// Hands a received control message to the mesh task (waits when its queue is full).
    pub(crate) async fn control(&self, conn: u64, msg: proto::MeshMessage) {
        self.stats.control_received.fetch_add(1, Ordering::Relaxed);
        if let Some(tx) = self.control_tx.get() {
            // Closed only at shutdown: nothing left to update then.
            let _ = tx.send((conn, msg)).await;
        }
    }
}

/// True when `msg` is a mesh control message (a Publish to the reserved control name).
pub fn is_control(msg: &Message) -> bool {
    msg.slim_header()
        .and_then(|h| h.destination.as_ref())
        .is_some_and(|d| (d.component_0, d.component_1, d.component_2) == *CONTROL_TYPE)
}

/// The control message carried by `msg`, if it decodes.
pub fn decode_control(msg: &Message) -> Option<proto::MeshMessage> {
    use prost::Message as _;
    let content = msg.publish()?.msg.as_ref()?;
    (content.content_type == CONTROL_CONTENT_TYPE).then(|| proto::MeshMessage::decode(&content.blob[..]).ok())?
}

/// Wraps a control message for the wire (only ever sent on mesh links).
pub fn encode_control(from: u64, body: &proto::MeshMessage) -> Message {
    use crate::wire::builders::{self, Flags, PublishSpec};
    use crate::wire::{SessionMessageType, SessionType};
    use prost::Message as _;
    let src = Name::new("slim", "mesh", "control", Some(from));
    let dst = Name::new("slim", "mesh", "control", None);
    builders::publish(
        &PublishSpec {
            source: &src,
            destination: &dst,
            flags: Flags::one(),
            session_type: SessionType::SessionUnknown,
            message_type: SessionMessageType::Unspecified,
            session_id: 0,
            message_id: 0,
            original_names: false,
            content_type: CONTROL_CONTENT_TYPE,
        },
        body.encode_to_vec(),
        HashMap::new(),
    )
}

/// Starts the mesh task of a node (idempotent) and switches the mesh on.
pub(crate) fn start(inner: &Arc<super::Inner>, cfg: &MeshConfig) {
    let mesh = &inner.mesh;
    if !cfg.enabled || mesh.enabled() {
        return;
    }
    let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
    if mesh.control_tx.set(tx).is_err() {
        return;
    }
    {
        let subs = inner.subs.read();
        let conns = inner.conns.read();
        let existing: Vec<Name> =
            conns.iter().filter(|(_, e)| !e.is_mesh()).flat_map(|(&id, _)| subs.names_of(id)).collect();
        mesh.switch_on(cfg, existing.into_iter());
    }
    tokio::spawn(task::run(Arc::downgrade(inner), rx, inner.root.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip_and_are_recognised() {
        let body = proto::MeshMessage {
            body: Some(proto::mesh_message::Body::LinkState(proto::LinkState {
                origin: 7,
                seq: 3,
                label: "x".into(),
                links: vec![],
            })),
        };
        let m = encode_control(7, &body);
        m.validate().unwrap();
        assert!(is_control(&m));
        assert_eq!(decode_control(&m), Some(body));
        let other = encode_control(7, &proto::MeshMessage::default());
        assert!(is_control(&other));
    }

    #[test]
    fn local_names_are_reference_counted() {
        let m = Mesh::new("t");
        let n = Name::new("a", "b", "c", Some(1));
        m.name_added(&n);
        m.name_added(&n);
        m.name_removed(&n);
        assert!(m.announces(&n));
        m.name_removed(&n);
        assert!(!m.announces(&n));
        m.name_removed(&n);
        assert!(m.dirty.lock().names.contains(&n));
    }
}
