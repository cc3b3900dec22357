//! The SLIM node: a message router (spec §2).
//!
//! A [`Node`] owns a connection table (local in-process connections and remote gRPC streams share one
//! id space; ids are unique and never reused), a [`SubscriptionTable`], and the list of subscriptions
//! it forwarded to each neighbour (replayed after a reconnect). Every message read from any connection
//! is validated, stamped with `incomingConn`, and dispatched: Subscribe/Unsubscribe update the table
//! (and optionally forward), Publish is routed.
//!
//! Queue policy: every connection has one bounded outbound queue ([`QUEUE_CAPACITY`] messages). A full
//! queue applies back-pressure to the connection that is routing into it (the router awaits room);
//! messages are never dropped because a queue is full. The one exception is an error notification to
//! the local app that caused the error: it is offered without waiting (so an app that is blocked
//! sending cannot deadlock against its own error), and counted in `error_reports_dropped` when full.

pub mod config;
pub mod listener;
pub mod local;
pub mod metrics;
pub mod standalone;
mod stats;
pub mod subscription;
mod tls;
mod transport;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub use config::{ClientAuthConfig, ClientConfig, ConfigError, ServerAuthConfig, ServerConfig};
pub use local::{LocalConnection, LocalDelivery, RouteError};
pub use stats::{NodeStats, NodeStatsSnapshot};
pub use subscription::{SubscriptionError, SubscriptionTable};

use crate::wire::builders::subscription_name;
use crate::wire::{Message, MessageType, Name, ValidationError};

/// Capacity of every per-connection queue (local and remote, both directions).
pub const QUEUE_CAPACITY: usize = 1024;

/// Errors of the node module.
#[derive(Debug, Clone, thiserror::Error)]
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
    Local(mpsc::Sender<LocalDelivery>),
    Remote(mpsc::Sender<Message>),
}

#[derive(Debug)]
struct ConnEntry {
    tx: ConnTx,
    cancel: CancellationToken,
    /// The endpoint dialed (client connections) or the peer address (server side), for logs.
    peer: String,
}

impl ConnEntry {
    fn is_local(&self) -> bool {
        matches!(self.tx, ConnTx::Local(_))
    }

    /// Messages waiting in this connection's outbound queue (sent by the router, not yet taken).
    fn queued(&self) -> usize {
        match &self.tx {
            ConnTx::Local(tx) => tx.max_capacity().saturating_sub(tx.capacity()),
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

/// Reusable buffers of one connection's reader task (keeps the hot path allocation-free).
#[derive(Default)]
struct Scratch {
    targets: Vec<u64>,
    txs: Vec<(u64, ConnTx)>,
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
    stats: NodeStats,
    /// The session-layer counters of the app this node is embedded in, if any.
    attached: RwLock<Option<CounterSource>>,
    root: CancellationToken,
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
            inner: Arc::new(Inner {
                node_id: node_id.to_string(),
                next_conn_id: AtomicU64::new(0),
                conns: RwLock::new(HashMap::new()),
                subs: RwLock::new(SubscriptionTable::new()),
                forwarded: Mutex::new(HashMap::new()),
                servers: Mutex::new(HashMap::new()),
                stats: NodeStats::default(),
                attached: RwLock::new(None),
                root: CancellationToken::new(),
            }),
        }
    }

    /// The id given at creation.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Registers an in-process connection for an app. Must be called inside a tokio runtime.
    pub fn register_local(&self) -> LocalConnection {
        let (app_tx, mut node_rx) = mpsc::channel::<Message>(QUEUE_CAPACITY);
        let (node_tx, app_rx) = mpsc::channel::<LocalDelivery>(QUEUE_CAPACITY);
        let cancel = self.inner.root.child_token();
        let id = self.inner.add_connection(ConnTx::Local(node_tx), cancel.clone(), "local".into());
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut scratch = Scratch::default();
            loop {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    m = node_rx.recv() => match m {
                        Some(m) => inner.process(id, true, m, &mut scratch).await,
                        None => break,
                    },
                }
            }
            inner.remove_connection(id);
        });
        LocalConnection { conn_id: id, tx: app_tx, rx: app_rx }
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
    fn add_connection(&self, tx: ConnTx, cancel: CancellationToken, peer: String) -> u64 {
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        self.conns.write().insert(id, ConnEntry { tx, cancel, peer });
        self.stats.connection_opened();
        debug!(node = %self.node_id, conn = id, "connection added");
        id
    }

    /// Swaps the outbound queue of a reconnected client connection (same id, same subscriptions).
    fn replace_sender(&self, id: u64, tx: mpsc::Sender<Message>) -> bool {
        match self.conns.write().get_mut(&id) {
            Some(e) => {
                e.tx = ConnTx::Remote(tx);
                true
            }
            None => false,
        }
    }

    /// Removes a connection and everything attached to it. Idempotent (ids are never reused).
    fn remove_connection(&self, id: u64) {
        let removed = self.conns.write().remove(&id);
        let Some(entry) = removed else { return };
        entry.cancel.cancel();
        let n = self.subs.write().remove_connection(id);
        self.forwarded.lock().remove(&id);
        self.stats.connection_closed();
        debug!(node = %self.node_id, conn = id, peer = %entry.peer, subscriptions = n, "connection removed");
    }

    fn sender_of(&self, id: u64) -> Option<ConnTx> {
        self.conns.read().get(&id).map(|e| e.tx.clone())
    }

    /// Hands an error back to the local app that sent `message`; remote senders only get a log line.
    fn report(&self, in_conn: u64, in_local: bool, message: Message, error: NodeError) {
        debug!(node = %self.node_id, conn = in_conn, %error, "message dropped");
        if !in_local {
            return;
        }
        if let Some(ConnTx::Local(tx)) = self.sender_of(in_conn)
            && tx.try_send(LocalDelivery::Error(RouteError { message, error })).is_err()
        {
            self.stats.error_reports_dropped.fetch_add(1, Ordering::Relaxed);
            debug!(node = %self.node_id, conn = in_conn, "error report dropped: app queue full or closed");
        }
    }

    /// Handles one message read from connection `in_conn`.
    async fn process(&self, in_conn: u64, in_local: bool, mut msg: Message, scratch: &mut Scratch) {
        self.stats.messages_received.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = msg.validate() {
            self.stats.dropped_invalid.fetch_add(1, Ordering::Relaxed);
            self.report(in_conn, in_local, msg, NodeError::InvalidMessage(e));
            return;
        }
        if let Some(h) = msg.slim_header_mut() {
            h.incoming_conn = Some(in_conn);
            // recvFrom/forwardTo are node-local control flags: every node clears them before it
            // transmits, so on a remote connection they can only be forged. Honouring them would
            // let any peer install or remove other connections' subscriptions, or send straight
            // into another connection; the message is routed as if they were absent.
            if !in_local && (h.recv_from.is_some() || h.forward_to.is_some()) {
                h.recv_from = None;
                h.forward_to = None;
                debug!(node = %self.node_id, conn = in_conn, "node-local control flags from a remote peer ignored");
            }
        }
        if crate::telemetry::otel::active() && matches!(msg.message_type, Some(MessageType::Publish(_))) {
            crate::telemetry::otel::hop(crate::telemetry::otel::Hop::Route, &mut msg.metadata, &self.node_id);
        }
        match msg.message_type {
            Some(MessageType::Publish(_)) => self.route_publish(in_conn, in_local, msg, scratch).await,
            Some(MessageType::Subscribe(_)) => self.process_subscription(in_conn, in_local, msg, true).await,
            Some(MessageType::Unsubscribe(_)) => self.process_subscription(in_conn, in_local, msg, false).await,
            None => {}
        }
    }

    async fn route_publish(&self, in_conn: u64, in_local: bool, msg: Message, scratch: &mut Scratch) {
        let Some(h) = msg.slim_header() else { return };
        let forward_to = h.forward_to;
        let fanout = h.fanout;
        let Some(dst) = h.destination.as_ref().map(Name::from_proto) else { return };
        scratch.txs.clear();
        if let Some(fwd) = forward_to {
            match self.sender_of(fwd) {
                Some(tx) => scratch.txs.push((fwd, tx)),
                None => {
                    self.stats.dropped_no_route.fetch_add(1, Ordering::Relaxed);
                    self.report(in_conn, in_local, msg, NodeError::ConnectionNotFound(fwd));
                    return;
                }
            }
        } else {
            let matched = {
                let subs = self.subs.read();
                if fanout == 1 {
                    subs.match_one(&dst, in_conn).map(|c| {
                        scratch.targets.clear();
                        scratch.targets.push(c);
                    })
                } else {
                    subs.match_all(&dst, in_conn, &mut scratch.targets)
                }
            };
            if matched.is_err() {
                self.stats.dropped_no_route.fetch_add(1, Ordering::Relaxed);
                let shown = display_destination(&msg, dst);
                self.report(in_conn, in_local, msg, NodeError::NoMatch(shown));
                return;
            }
            let conns = self.conns.read();
            for &t in &scratch.targets {
                if let Some(e) = conns.get(&t) {
                    scratch.txs.push((t, e.tx.clone()));
                }
            }
        }
        self.deliver(in_conn, in_local, msg, scratch).await;
    }

    /// Sends `msg` to every connection in `scratch.txs` (one clone per extra target).
    async fn deliver(&self, in_conn: u64, in_local: bool, mut msg: Message, scratch: &mut Scratch) {
        if let Some(h) = msg.slim_header_mut() {
            h.recv_from = None;
            h.forward_to = None;
        }
        let n = scratch.txs.len();
        let mut msg = Some(msg);
        for (i, (target, tx)) in scratch.txs.drain(..).enumerate() {
            let m = if i + 1 == n { msg.take() } else { msg.clone() };
            let Some(m) = m else { break };
            if let Err(lost) = send_to(&tx, m).await {
                self.stats.dropped_closed.fetch_add(1, Ordering::Relaxed);
                debug!(node = %self.node_id, conn = target, "send failed: connection closed");
                self.report(in_conn, in_local, lost, NodeError::ConnectionClosed(target));
            } else {
                self.stats.messages_routed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Subscribe (`add`) or Unsubscribe per spec §2.4.
    async fn process_subscription(&self, in_conn: u64, in_local: bool, msg: Message, add: bool) {
        let Some(h) = msg.slim_header() else { return };
        let Some(name) = subscription_name(&msg) else { return };
        let (conn, fwd) = match (h.recv_from, h.forward_to) {
            (Some(rf), _) => (rf, None),
            (None, Some(ft)) => (in_conn, Some(ft)),
            (None, None) => (in_conn, None),
        };
        let source = h.source.as_ref().map(Name::from_proto);
        let conn_is_local = match self.conns.read().get(&conn) {
            Some(e) => e.is_local(),
            None => {
                self.stats.dropped_subscription.fetch_add(1, Ordering::Relaxed);
                self.report(in_conn, in_local, msg, NodeError::ConnectionNotFound(conn));
                return;
            }
        };
        let result = {
            let mut subs = self.subs.write();
            if add {
                subs.add(&name, conn, conn_is_local);
                Ok(())
            } else {
                subs.remove(&name, conn)
            }
        };
        if let Err(e) = result {
            self.stats.dropped_subscription.fetch_add(1, Ordering::Relaxed);
            self.report(in_conn, in_local, msg, e.into());
            return;
        }
        self.stats.subscriptions_processed.fetch_add(1, Ordering::Relaxed);
        let Some(fwd) = fwd else { return };
        let Some(tx) = self.sender_of(fwd) else {
            self.stats.dropped_subscription.fetch_add(1, Ordering::Relaxed);
            self.report(in_conn, in_local, msg, NodeError::ConnectionNotFound(fwd));
            return;
        };
        let mut out = msg;
        if let Some(h) = out.slim_header_mut() {
            h.recv_from = None;
            h.forward_to = None;
        }
        let record = out.clone();
        match send_to(&tx, out).await {
            Ok(()) => {
                self.stats.messages_routed.fetch_add(1, Ordering::Relaxed);
                if let Some(source) = source {
                    let mut fw = self.forwarded.lock();
                    if add {
                        fw.entry(fwd).or_default().insert((source, name), record);
                    } else if let Some(m) = fw.get_mut(&fwd) {
                        m.remove(&(source, name));
                    }
                }
            }
            Err(lost) => {
                self.stats.dropped_closed.fetch_add(1, Ordering::Relaxed);
                self.report(in_conn, in_local, lost, NodeError::ConnectionClosed(fwd));
            }
        }
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

/// The destination for an error text: the routing name, with the session header's strings when they
/// describe the same name.
fn display_destination(msg: &Message, dst: Name) -> Name {
    match msg.resolved_destination() {
        Some(n) if n == dst && n.strings().is_some() => n,
        _ => dst,
    }
}

/// Sends one message on a connection queue, waiting for room (back-pressure). Returns the message
/// if the connection is closed.
async fn send_to(tx: &ConnTx, mut m: Message) -> Result<(), Message> {
    match tx {
        ConnTx::Local(tx) => tx.send(LocalDelivery::Message(m)).await.map_err(|e| match e.0 {
            LocalDelivery::Message(m) => m,
            LocalDelivery::Error(r) => r.message,
        }),
        ConnTx::Remote(tx) => {
            // incomingConn is meaningful only inside the node that stamped it.
            if let Some(h) = m.slim_header_mut() {
                h.incoming_conn = None;
            }
            tx.send(m).await.map_err(|e| e.0)
        }
    }
}
