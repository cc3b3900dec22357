//! The SLIM node: a message router (docs/protocol.md "Node routing").
//!
//! A [`Node`] owns a connection table (local in-process connections and remote gRPC streams share one
//! id space; ids are unique and never reused), a [`SubscriptionTable`], and the list of subscriptions
//! it forwarded to each neighbour (replayed after a reconnect). Every message read from any connection
//! is validated, stamped with `incomingConn`, and dispatched: Subscribe/Unsubscribe update the table
//! (and optionally forward), Publish is routed.
//!
//! Queue policy: every connection has one bounded outbound queue ([`QUEUE_CAPACITY`] messages). A full
//! queue applies back-pressure to the connection that is routing into it (the router awaits room);
//! messages are never dropped because a queue is full. An error notification to the local app that
//! caused the error is offered without waiting (so an app that is blocked sending cannot deadlock
//! against its own error); when the app's queue is full it is merged into the app's
//! [`local::Overflow`] (per session: one report and a count) and counted in
//! `error_reports_deferred`; the app takes it from there.

mod codec;
pub mod config;
mod exec;
mod forward;
mod header;
pub mod link;
pub mod listener;
pub mod local;
pub mod mesh;
pub mod metrics;
mod notice;
mod outbound;
mod serve;
mod shm;
pub mod standalone;
mod stats;
pub mod subscription;
mod tls;
pub(crate) mod transport;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub use config::{ClientAuthConfig, ClientConfig, ConfigError, ServerAuthConfig, ServerConfig};
pub use link::{Direction, LinkInfo, LinkKind};
pub use local::{LocalConnection, LocalDelivery, RouteError};
pub use mesh::MeshConfig;
pub use stats::{NodeStats, NodeStatsSnapshot};
pub use subscription::{SubscriptionError, SubscriptionTable};

use crate::wire::{Message, Name, ValidationError};
use forward::Scratch;
use link::{Ingress, LinkCounters, LinkMeta};
use local::room;

/// Capacity of every per-connection queue (local and remote, both directions).
pub const QUEUE_CAPACITY: usize = 1024;

/// Errors of the node module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// A publish matched no subscription (wording kept from the reference for substring checks).
    #[error("no matching found for {0}")]
    NoMatch(Name),
    /// A message named a connection this node does not have.
    #[error("connection not found: {0}")]
    ConnectionNotFound(u64),
    /// A message failed validation and was dropped.
    #[error("invalid message: {0}")]
    InvalidMessage(#[from] ValidationError),
    /// A subscription table operation failed.
    #[error("subscription error: {0}")]
    Subscription(SubscriptionError),
    /// The target connection closed while sending.
    #[error("connection {0} is closed")]
    ConnectionClosed(u64),
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `connect` gave up.
    #[error("failed to connect to {endpoint} after {attempts} attempts: {reason}")]
    ConnectFailed {
        /// The endpoint dialed.
        endpoint: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// A server could not be started.
    #[error("cannot serve on {endpoint}: {reason}")]
    Server {
        /// The endpoint requested.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A server is already running on this endpoint.
    #[error("a server is already running on {0}")]
    ServerAlreadyRunning(String),
    /// `stop_server` for an endpoint that has no server.
    #[error("no server running on {0}")]
    ServerNotFound(String),
    /// TLS material could not be loaded or is inconsistent.
    #[error("tls: {0}")]
    Tls(String),
    /// The node was shut down.
    #[error("node is shut down")]
    Shutdown,
}

impl From<SubscriptionError> for NodeError {
    fn from(e: SubscriptionError) -> Self {
        match e {
            SubscriptionError::NoMatch(n) => NodeError::NoMatch(n),
            other => NodeError::Subscription(other),
        }
    }
}

/// Where a connection's outbound messages go.
#[derive(Debug, Clone)]
enum ConnTx {
    /// A local app's queue, and where its error reports go when that queue is full.
    Local(mpsc::Sender<LocalDelivery>, Arc<local::Overflow>),
    Remote(mpsc::Sender<codec::Outbound>),
}

#[derive(Debug)]
struct ConnEntry {
    tx: ConnTx,
    cancel: CancellationToken,
    /// The endpoint dialed (client connections) or the peer address (server side), for logs.
    peer: String,
    /// Kind, direction, state and the peer's hello.
    meta: LinkMeta,
    /// Messages in and out.
    counters: Arc<LinkCounters>,
    /// Cancelled when the task reading a client connection has returned (it is given a drop
    /// guard of it): [`Node::close_gracefully`] waits on it.
    reader_ended: CancellationToken,
}

impl ConnEntry {
    fn is_local(&self) -> bool {
        matches!(self.tx, ConnTx::Local(..))
    }

    fn is_mesh(&self) -> bool {
        self.meta.kind == LinkKind::Mesh
    }

    /// Messages waiting in this connection's outbound queue (sent by the router, not yet taken).
    fn queued(&self) -> usize {
        match &self.tx {
            ConnTx::Local(tx, _) => tx.max_capacity().saturating_sub(tx.capacity()),
            ConnTx::Remote(tx) => tx.max_capacity().saturating_sub(tx.capacity()),
        }
    }
}

/// The outbound queue of one connection at one instant (see [`Node::queue_depths`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionQueue {
    /// The connection id.
    pub conn: u64,
    /// An in-process app connection (else a gRPC stream to another node or a remote app).
    pub local: bool,
    /// Messages waiting to be taken by the app or written to the stream.
    pub depth: usize,
    /// The queue's bound ([`QUEUE_CAPACITY`]).
    pub capacity: usize,
}

struct ServerHandle {
    cancel: CancellationToken,
    addr: SocketAddr,
    /// Closed first when the server stops: the port is free again at once.
    listener: Arc<listener::Listener>,
    task: tokio::task::JoinHandle<()>,
}

/// Counters of the layer above a node (an app's session layer), reported with the node's own
/// (`/metrics`, `node_stats()`): (name, value) pairs.
pub type CounterSource = Arc<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

/// Subscriptions forwarded on one connection: (source, name) → the message as sent.
type ForwardedSubscriptions = HashMap<(Name, Name), Message>;

/// Shared state of a node.
pub(crate) struct Inner {
    node_id: String,
    next_conn_id: AtomicU64,
    conns: RwLock<HashMap<u64, ConnEntry>>,
    subs: RwLock<SubscriptionTable>,
    /// Subscriptions this node forwarded per neighbour connection, replayed after a reconnect:
    /// (source, name) → the message as it was sent.
    forwarded: Mutex<HashMap<u64, ForwardedSubscriptions>>,
    servers: Mutex<HashMap<String, ServerHandle>>,
    stats: Arc<NodeStats>,
    /// The session-layer counters of the app this node is embedded in, if any.
    attached: RwLock<Option<CounterSource>>,
    root: CancellationToken,
    /// Routing through other nodes (off until [`Node::enable_mesh`]).
    mesh: Arc<mesh::Mesh>,
    /// This node's own `Arc` (for tasks spawned from `&self` methods).
    self_ref: Weak<Inner>,
    /// Route-error notices waiting for their grace period.
    pending_notices: AtomicUsize,
}

/// A SLIM node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("node_id", &self.inner.node_id).finish_non_exhaustive()
    }
}

impl Node {
    /// A node with no connections (no I/O happens here).
    pub fn new(node_id: &str) -> Node {
        Node {
            inner: Arc::new_cyclic(|me| Inner {
                node_id: node_id.to_string(),
                next_conn_id: AtomicU64::new(0),
                conns: RwLock::new(HashMap::new()),
                subs: RwLock::new(SubscriptionTable::new()),
                forwarded: Mutex::new(HashMap::new()),
                servers: Mutex::new(HashMap::new()),
                stats: Arc::default(),
                attached: RwLock::new(None),
                root: CancellationToken::new(),
                mesh: Arc::new(mesh::Mesh::new(node_id)),
                self_ref: me.clone(),
                pending_notices: AtomicUsize::new(0),
            }),
        }
    }

    /// Makes this node a mesh node (docs/mesh.md): it announces the names of its local and leaf
    /// connections to linked mesh nodes and routes for them. Links opened from now on negotiate
    /// the mesh; links already open stay leaf links. Must be called inside a tokio runtime.
    pub fn enable_mesh(&self, cfg: &MeshConfig) {
        mesh::start(&self.inner, cfg);
    }

    /// True when this node takes part in the mesh.
    pub fn mesh_enabled(&self) -> bool {
        self.inner.mesh.enabled()
    }

    /// This node's random id for this run (what other mesh nodes know it by).
    pub fn mesh_node_id(&self) -> u64 {
        self.inner.mesh.node
    }

    /// Mesh counters (loops caught, off-tree copies, transit drops, notices, control traffic).
    pub fn mesh_stats(&self) -> &mesh::MeshStats {
        &self.inner.mesh.stats
    }

    /// Number of names this node has a mesh route for (names announced by other nodes and
    /// reachable from here).
    pub fn mesh_route_count(&self) -> usize {
        self.inner.mesh.routes.read().name_count()
    }

    /// True when a one-instance message to `name` would leave this node through the mesh (or a
    /// local or attached connection holds it).
    pub fn can_route(&self, name: &Name) -> bool {
        self.inner.subs.read().match_one(name, u64::MAX).is_ok()
            || self.inner.mesh.routes.read().match_one(name, u64::MAX).is_some()
    }

    /// Every connection: kind, direction, peer, state, counters.
    pub fn links(&self) -> Vec<LinkInfo> {
        self.inner.links()
    }

    /// What the inspection API (`NodeInfo/Get`) answers for this node.
    pub fn describe(&self, max_routes: u32, name_filter: &str) -> mesh::proto::NodeInfoReply {
        let req = mesh::proto::NodeInfoRequest { max_routes, name_filter: name_filter.to_string() };
        mesh::inspect::describe(&self.inner, &req)
    }

    /// The id given at creation.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Registers an in-process connection for an app. Must be called inside a tokio runtime.
    pub fn register_local(&self) -> LocalConnection {
        let (app_tx, mut node_rx) = mpsc::channel::<Message>(QUEUE_CAPACITY);
        let (node_tx, app_rx) = mpsc::channel::<LocalDelivery>(QUEUE_CAPACITY);
        let overflow = Arc::new(local::Overflow::default());
        let cancel = self.inner.root.child_token();
        let tx = ConnTx::Local(node_tx, overflow.clone());
        let (id, counters) = self.inner.add_connection(tx, cancel.clone(), "local".into(), LinkMeta::local());
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut scratch = Scratch::default();
            let ingress = Ingress::new(id, &LinkMeta::local(), counters);
            let mut cancelled = std::pin::pin!(cancel.cancelled());
            while let Some(Some(m)) = exec::unless_cancelled(&cancel, cancelled.as_mut(), node_rx.recv()).await {
                inner.process(&ingress, m, None, &mut scratch).await;
            }
            inner.remove_connection(id);
        });
        LocalConnection { conn_id: id, tx: app_tx, rx: app_rx, overflow }
    }

    /// Starts a gRPC server; returns the bound address once it is listening (port 0 is allowed).
    pub async fn run_server(&self, cfg: ServerConfig) -> Result<SocketAddr, NodeError> {
        transport::run_server(&self.inner, cfg).await
    }

    /// Stops the server started with this endpoint string (the bound address is accepted too) and
    /// closes the connections it accepted.
    pub async fn stop_server(&self, endpoint: &str) -> Result<(), NodeError> {
        let handle = {
            let mut servers = self.inner.servers.lock();
            let key = if servers.contains_key(endpoint) {
                Some(endpoint.to_string())
            } else {
                servers.iter().find(|(_, h)| h.addr.to_string() == endpoint).map(|(k, _)| k.clone())
            };
            key.and_then(|k| servers.remove(&k))
        };
        let handle = handle.ok_or_else(|| NodeError::ServerNotFound(endpoint.to_string()))?;
        stop_server_handle(handle).await;
        Ok(())
    }

    /// Dials a node and opens the data-plane stream; retries a bounded number of times.
    /// Returns the new connection id.
    pub async fn connect(&self, cfg: ClientConfig) -> Result<u64, NodeError> {
        transport::connect(&self.inner, cfg).await
    }

    /// Closes a connection (no reconnect); its subscriptions are removed.
    pub async fn disconnect(&self, conn: u64) -> Result<(), NodeError> {
        let cancel = {
            let conns = self.inner.conns.read();
            conns.get(&conn).map(|e| e.cancel.clone()).ok_or(NodeError::ConnectionNotFound(conn))?
        };
        cancel.cancel();
        self.inner.remove_connection(conn);
        Ok(())
    }

    /// Closes every listening socket of this node now (their ports are free when this returns);
    /// the servers' connections end with [`Node::shutdown`] or [`Node::stop_server`].
    pub fn close_listeners(&self) {
        for h in self.inner.servers.lock().values() {
            h.listener.close();
            h.cancel.cancel();
        }
    }

    /// True when no connection to another process has a message waiting in its outbound queue.
    pub fn remote_queues_empty(&self) -> bool {
        self.inner.conns.read().values().all(|e| e.is_local() || e.queued() == 0)
    }

    /// Ends every connection this node dialed in order, for an app that is closing
    /// (docs/reliability.md, "Closing an app"): the connection leaves the tables, its stream ends
    /// after the messages already queued on it (HTTP/2 END_STREAM follows them), and the call
    /// waits, until `deadline`, for the peer to end its side, which it does only after it has
    /// read everything before the end. A link that is down (reconnecting) is closed at once: what
    /// its queue holds is lost there, as when a node vanishes (recovered by reliable sessions'
    /// retransmission up to their retry limit, then reported as MessageLostError).
    pub async fn close_gracefully(&self, deadline: tokio::time::Instant) {
        let dialed: Vec<u64> = self
            .inner
            .conns
            .read()
            .iter()
            .filter(|(_, e)| matches!(e.tx, ConnTx::Remote(_)) && e.meta.direction == Direction::Out)
            .map(|(&id, _)| id)
            .collect();
        let mut ending = Vec::with_capacity(dialed.len());
        for id in dialed {
            let Some(ConnEntry { tx, cancel, meta, reader_ended, .. }) = self.inner.detach_connection(id) else {
                continue;
            };
            drop(tx);
            if meta.up {
                ending.push((cancel, reader_ended));
            } else {
                cancel.cancel();
            }
        }
        for (cancel, reader_ended) in ending {
            if tokio::time::timeout_at(deadline, reader_ended.cancelled()).await.is_err() {
                debug!(node = %self.inner.node_id, "a link did not end in time; closed");
            }
            cancel.cancel();
        }
    }

    /// Stops every server and closes every connection.
    pub async fn shutdown(&self) {
        self.inner.root.cancel();
        let handles: Vec<ServerHandle> = self.inner.servers.lock().drain().map(|(_, h)| h).collect();
        for h in handles {
            stop_server_handle(h).await;
        }
        let ids: Vec<u64> = self.inner.conns.read().keys().copied().collect();
        for id in ids {
            self.inner.remove_connection(id);
        }
    }

    /// Counters (messages routed, drops by reason, connections).
    pub fn stats(&self) -> NodeStatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Shows `source`'s counters with this node's (the app that embeds it calls this once).
    pub fn attach_counters(&self, source: CounterSource) {
        *self.inner.attached.write() = Some(source);
    }

    /// The attached layer's counters (empty when nothing is attached).
    pub fn attached_counters(&self) -> Vec<(&'static str, u64)> {
        let source = self.inner.attached.read().clone();
        source.map(|f| f()).unwrap_or_default()
    }

    /// Ids of the current connections (local and remote).
    pub fn connection_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.inner.conns.read().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Depth of every connection's outbound queue, by connection id. Reading it takes the
    /// connection table's read lock once; nothing on the routing path changes.
    pub fn queue_depths(&self) -> Vec<ConnectionQueue> {
        let mut out: Vec<ConnectionQueue> = self
            .inner
            .conns
            .read()
            .iter()
            .map(|(&conn, e)| ConnectionQueue {
                conn,
                local: e.is_local(),
                depth: e.queued(),
                capacity: QUEUE_CAPACITY,
            })
            .collect();
        out.sort_unstable_by_key(|q| q.conn);
        out
    }

    /// Names subscribed on a connection.
    pub fn subscriptions_of(&self, conn: u64) -> Vec<Name> {
        self.inner.subs.read().names_of(conn)
    }
}

async fn stop_server_handle(h: ServerHandle) {
    h.listener.close();
    h.cancel.cancel();
    let abort = h.task.abort_handle();
    // Graceful shutdown waits for the accepted streams, which the cancel above closes; the bound
    // only matters if a peer does not finish its side.
    if tokio::time::timeout(std::time::Duration::from_secs(3), h.task).await.is_err() {
        abort.abort();
    }
}

impl Inner {
    fn links(&self) -> Vec<LinkInfo> {
        let mut out: Vec<LinkInfo> = self
            .conns
            .read()
            .iter()
            .map(|(&conn, e)| LinkInfo {
                conn,
                kind: e.meta.kind,
                direction: e.meta.direction,
                peer: e.peer.clone(),
                up: e.meta.up,
                peer_node: e.meta.hello.as_ref().map(|h| h.node),
                peer_label: e.meta.hello.as_ref().map(|h| h.label.clone()),
                messages_in: e.counters.messages_in.load(Ordering::Relaxed),
                messages_out: e.counters.messages_out.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_unstable_by_key(|l| l.conn);
        out
    }

    fn add_connection(
        &self,
        tx: ConnTx,
        cancel: CancellationToken,
        peer: String,
        meta: LinkMeta,
    ) -> (u64, Arc<LinkCounters>) {
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let counters = Arc::new(LinkCounters::default());
        let mesh = meta.kind == LinkKind::Mesh;
        let reader_ended = CancellationToken::new();
        self.conns.write().insert(id, ConnEntry { tx, cancel, peer, meta, counters: counters.clone(), reader_ended });
        self.stats.connection_opened();
        debug!(node = %self.node_id, conn = id, mesh, "connection added");
        if mesh {
            self.mesh.links_changed();
        }
        (id, counters)
    }

    /// Swaps the outbound queue of a reconnected client connection (same id, same subscriptions)
    /// and records what the peer said this time. Returns the ingress for its reader, or `None`
    /// when the connection was removed meanwhile.
    fn reconnected(&self, id: u64, tx: mpsc::Sender<codec::Outbound>, meta: LinkMeta) -> Option<Ingress> {
        let mut conns = self.conns.write();
        let e = conns.get_mut(&id)?;
        e.tx = ConnTx::Remote(tx);
        let generation = e.meta.generation + 1;
        e.meta = LinkMeta { generation, ..meta };
        let ingress = Ingress::new(id, &e.meta, e.counters.clone());
        drop(conns);
        self.mesh.links_changed();
        Some(ingress)
    }

    /// A client connection's stream ended; it is reconnecting (routes through it are withdrawn).
    fn link_down(&self, id: u64) {
        let was_mesh = match self.conns.write().get_mut(&id) {
            Some(e) => {
                e.meta.up = false;
                e.is_mesh()
            }
            None => false,
        };
        if was_mesh {
            self.mesh.links_changed();
        }
    }

    /// Mesh links that are up (the mesh task's view of this node's neighbours).
    fn mesh_links(&self) -> Vec<mesh::MeshLinkView> {
        self.conns
            .read()
            .iter()
            .filter(|(_, e)| e.is_mesh() && e.meta.up)
            .filter_map(|(&conn, e)| {
                let h = e.meta.hello.as_ref()?;
                Some(mesh::MeshLinkView { conn, peer: h.node, generation: e.meta.generation })
            })
            .collect()
    }

    /// Removes a connection and everything attached to it. Idempotent (ids are never reused).
    fn remove_connection(&self, id: u64) {
        if let Some(entry) = self.detach_connection(id) {
            entry.cancel.cancel();
        }
    }

    /// Takes connection `id` out of the tables (its subscriptions, the names and routes announced
    /// for it, the counters) without stopping its tasks; the caller holds the entry (dropping its
    /// `tx` ends the outbound stream after what is queued) and cancels it when done.
    fn detach_connection(&self, id: u64) -> Option<ConnEntry> {
        let removed = self.conns.write().remove(&id);
        let entry = removed?;
        let n = {
            let mut subs = self.subs.write();
            let names = subs.remove_connection(id);
            if !entry.is_mesh() && self.mesh.enabled() {
                for name in &names {
                    self.mesh.name_removed(name);
                }
            }
            names.len()
        };
        if entry.is_mesh() {
            self.mesh.links_changed();
        }
        self.forwarded.lock().remove(&id);
        self.stats.connection_closed();
        debug!(node = %self.node_id, conn = id, peer = %entry.peer, subscriptions = n, "connection removed");
        Some(entry)
    }

    /// True while connection `id` is in the table.
    fn has_connection(&self, id: u64) -> bool {
        self.conns.read().contains_key(&id)
    }

    /// The token cancelled when connection `id`'s reader returns (see [`ConnEntry::reader_ended`]).
    fn reader_ended(&self, id: u64) -> Option<CancellationToken> {
        self.conns.read().get(&id).map(|e| e.reader_ended.clone())
    }

    fn sender_of(&self, id: u64) -> Option<ConnTx> {
        self.conns.read().get(&id).map(|e| e.tx.clone())
    }

    /// Re-sends on `conn` every subscription this node had forwarded there (after a reconnect).
    async fn replay_forwarded(&self, conn: u64) -> usize {
        let msgs: Vec<Message> =
            self.forwarded.lock().get(&conn).map(|m| m.values().cloned().collect()).unwrap_or_default();
        let Some(tx) = self.sender_of(conn) else { return 0 };
        let mut sent = 0;
        for m in msgs {
            if send_to(&tx, m).await.is_ok() {
                sent += 1;
            }
        }
        sent
    }
}

/// For the `frame` fuzz target: checks the node's routing view of an encoded message (what a node
/// reads of a message it only passes on) against prost's decoding of it; panics when they differ.
#[doc(hidden)]
pub fn check_route_view(frame: &[u8]) {
    header::check_against_prost(frame);
}

/// Sends one message on a connection queue, waiting for room (back-pressure). Returns the message
/// if the connection is closed.
async fn send_to(tx: &ConnTx, mut m: Message) -> Result<(), Message> {
    match tx {
        ConnTx::Local(tx, _) => match room(tx).await {
            Some(permit) => {
                permit.send(LocalDelivery::Message(m));
                Ok(())
            }
            None => Err(m),
        },
        ConnTx::Remote(tx) => {
            // incomingConn is meaningful only inside the node that stamped it.
            if let Some(h) = m.slim_header_mut() {
                h.incoming_conn = None;
            }
            match room(tx).await {
                Some(permit) => {
                    permit.send(codec::Outbound::Message(m));
                    Ok(())
                }
                None => Err(m),
            }
        }
    }
}
