//! One application: its name (with a random instance id), identity, sessions, and the local
//! connection to its own embedded [`Node`].
//!
//! Every message the app emits carries `SLIM_IDENTITY`; every inbound publish is verified before
//! anything else looks at it (see [`crate::session::layer`]).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::{Provider, Verifier};
use crate::error::SlimError;
use crate::node::{ClientConfig, Node, ServerConfig};
use crate::session::context::AppCore;
use crate::session::layer::SessionLayer;
use crate::session::queue::Inbox;
use crate::session::{
    Bytes, Delivery, MessageInfo, PublishRequest, RawDelivery, RawMessage, SessionConfig, owned, owned_message,
};
use crate::wire::builders::{self, Flags};
use crate::wire::{Message, Name};

pub use crate::session::context::Stats;

/// How long closing an app waits, at most, for what it already handed over to leave the
/// process (docs/reliability.md, "Closing an app").
pub const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Apps not yet closed, for [`close_all`] (at interpreter exit).
static OPEN: parking_lot::Mutex<Vec<std::sync::Weak<ShutdownOnDrop>>> = parking_lot::Mutex::new(Vec::new());
/// Closes started by a dropped app and not yet finished, for [`close_all`].
static CLOSING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static CLOSED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Closes the app when the last [`App`] handle is dropped: its ports at once, then, in a task,
/// its sessions and its node after what it already sent has left ([`Closer::close`]).
#[derive(Debug)]
struct ShutdownOnDrop(Arc<Closer>);

/// What closing an app needs. Dropped without [`Closer::close`] having run (a runtime shutting
/// down cancels the close task before it starts), it still stops the app's tasks.
#[derive(Debug)]
struct Closer {
    token: CancellationToken,
    node: Node,
    layer: Arc<SessionLayer>,
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// One close task in progress (counted in [`CLOSING`] from its spawn until it ends or is dropped).
struct Closing;

impl Closing {
    fn start() -> Self {
        CLOSING.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Closing
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if CLOSING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            CLOSED.notify_waiters();
        }
    }
}

impl Closer {
    /// Lets what the app already handed over leave the process, then stops it (bounded by
    /// [`CLOSE_LINGER`]): (1) waits until no session has a publish waiting for its task, the
    /// embedded node has taken everything the app sent it and no connection to another process
    /// has anything queued; (2) stops the session tasks; (3) ends each dialed connection after its
    /// queue and waits for the peer to end its side ([`Node::close_gracefully`]); (4) shuts the
    /// node down. Idempotent.
    async fn close(&self) {
        let deadline = tokio::time::Instant::now() + CLOSE_LINGER;
        if !self.token.is_cancelled() {
            let settled = || self.layer.handed_over() && self.node.remote_queues_empty();
            crate::session::timer::until_settled(deadline, settled).await;
            // Drop point, only past CLOSE_LINGER: what a session task still holds (a link down, a
            // reliable peer that stopped acknowledging) goes with the app, as if its process had
            // been killed. Not recovered, and not reported to this app (it is closing); the
            // receiving side of a reliable session reports the gaps it sees (MessageLost).
            self.token.cancel();
            // The session tasks stop; what they send on stopping (an initiator's SESSION_CLOSE,
            // docs/protocol.md "Closing") reaches the links before they end, within the bound.
            let stopped = || self.layer.table().tasks_stopped() && self.layer.handed_over();
            crate::session::timer::until_settled(deadline, || stopped() && self.node.remote_queues_empty()).await;
        }
        self.node.close_gracefully(deadline).await;
        self.node.shutdown().await;
    }
}

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        // The ports are free when the last handle is gone, not when the close task runs.
        self.0.node.close_listeners();
        if self.0.token.is_cancelled() {
            return; // closed already (by `close_all`)
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.0.token.cancel();
            return;
        };
        let (closer, closing) = (self.0.clone(), Closing::start());
        rt.spawn(async move {
            closer.close().await;
            drop(closing);
        });
    }
}

/// Closes every app of the process as a dropped one is ([`Closer::close`]) and waits for
/// the closes in progress, all within [`CLOSE_LINGER`] (the Python module calls it at
/// interpreter exit, before stopping its runtimes).
pub async fn close_all() {
    let open: Vec<Arc<ShutdownOnDrop>> = {
        let mut all = OPEN.lock();
        all.retain(|w| w.strong_count() > 0);
        all.iter().filter_map(std::sync::Weak::upgrade).collect()
    };
    let bounded = async {
        futures::future::join_all(open.iter().map(|a| a.0.close())).await;
        loop {
            let closed = CLOSED.notified();
            if CLOSING.load(std::sync::atomic::Ordering::Acquire) == 0 {
                break;
            }
            closed.await;
        }
    };
    let _ = tokio::time::timeout(CLOSE_LINGER + std::time::Duration::from_millis(500), bounded).await;
}

/// Handle to one application. Cheap to clone; the app stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct App {
    core: Arc<AppCore>,
    layer: Arc<SessionLayer>,
    node: Node,
    _guard: Arc<ShutdownOnDrop>,
}

/// Returned by [`App::invite`]: the invite runs in the background; await [`InviteHandle::joined`]
/// to learn when the participant has joined (or why it could not).
#[derive(Debug)]
pub struct InviteHandle {
    rx: tokio::sync::oneshot::Receiver<Result<(), SlimError>>,
}

impl InviteHandle {
    /// Resolves once the participant answered the join (or the invite failed).
    pub async fn joined(self) -> Result<(), SlimError> {
        self.rx.await.unwrap_or(Err(SlimError::SessionClosed))
    }

    /// Like [`InviteHandle::joined`], but fails with [`SlimError::Invite`] once `bound` has passed
    /// without the participant joining (`None`: the invite's own retry limit is the only bound).
    pub async fn joined_within(self, bound: Option<std::time::Duration>) -> Result<(), SlimError> {
        let Some(bound) = bound else { return self.joined().await };
        match tokio::time::timeout(bound, self.joined()).await {
            Ok(result) => result,
            Err(_) => Err(SlimError::Invite(format!("no answer from the participant within {bound:?}"))),
        }
    }
}

impl App {
    /// Creates the app with its own node and a random id, and subscribes its name locally.
    /// Fails if the provider cannot produce a token.
    pub async fn new(name: Name, provider: Provider, verifier: Verifier) -> Result<App, SlimError> {
        provider.get_token().map_err(|e| SlimError::Config(crate::error::ConfigFailure::Identity(e)))?;
        let id: u64 = rand::random();
        let name = name.with_id(id);
        let node = Node::new(&format!("app/{id:x}"));
        let local = node.register_local();
        let shutdown = CancellationToken::new();
        let core = Arc::new(AppCore {
            name: name.clone(),
            provider,
            verifier,
            node_tx: local.tx,
            inbox: Inbox::new(),
            stats: Stats::default(),
            shutdown: shutdown.clone(),
            dispatch: Default::default(),
        });
        let layer = SessionLayer::new(core.clone());
        let weak = Arc::downgrade(&core);
        node.attach_counters(Arc::new(move || weak.upgrade().map(|c| session_counters(&c)).unwrap_or_default()));
        tokio::spawn(layer.clone().run_dispatcher(local.rx, local.overflow));
        let guard =
            Arc::new(ShutdownOnDrop(Arc::new(Closer { token: shutdown, node: node.clone(), layer: layer.clone() })));
        {
            let mut open = OPEN.lock();
            open.retain(|w| w.strong_count() > 0);
            open.push(Arc::downgrade(&guard));
        }
        let app = App { core, layer, node, _guard: guard };
        app.send_control(builders::subscribe(&name, &name, Flags::one())).await?;
        Ok(app)
    }

    /// This app's name, with its instance id.
    pub fn name(&self) -> Name {
        self.core.name.clone()
    }

    /// The random instance id.
    pub fn id(&self) -> u64 {
        self.core.name.id()
    }

    /// The embedded node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Drop/reject counters of the session layer.
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// Every drop, report and reject counter of this app's session layer, by name (the catalogue
    /// is docs/reliability.md); the same pairs are shown with the node's counters.
    pub fn session_counters(&self) -> Vec<(&'static str, u64)> {
        session_counters(&self.core)
    }

    async fn send_control(&self, msg: Message) -> Result<(), SlimError> {
        self.core.send(msg).await
    }

    /// Connects the embedded node to a remote node and subscribes this app's name there.
    pub async fn connect(&self, cfg: ClientConfig) -> Result<u64, SlimError> {
        let conn = self.node.connect(cfg).await?;
        let name = self.core.name.clone();
        self.subscribe(&name, Some(conn)).await?;
        Ok(conn)
    }

    /// Closes a connection made by [`App::connect`].
    pub async fn disconnect(&self, conn: u64) -> Result<(), SlimError> {
        Ok(self.node.disconnect(conn).await?)
    }

    /// Lets the embedded node accept connections; returns the bound address (port 0 allowed).
    /// A node that serves others routes for them: it joins the mesh of the nodes it links to
    /// from now on (docs/mesh.md).
    pub async fn run_server(&self, cfg: ServerConfig) -> Result<SocketAddr, SlimError> {
        self.node.enable_mesh(&crate::node::MeshConfig::default());
        Ok(self.node.run_server(cfg).await?)
    }

    /// Stops a server started with [`App::run_server`] (same endpoint string).
    pub async fn stop_server(&self, endpoint: &str) -> Result<(), SlimError> {
        Ok(self.node.stop_server(endpoint).await?)
    }

    /// Subscribes `name` for this app: locally, and on `conn`'s remote node when given.
    pub async fn subscribe(&self, name: &Name, conn: Option<u64>) -> Result<(), SlimError> {
        self.send_control(builders::subscribe(&self.core.name, name, Flags::one().forward_to(conn))).await
    }

    /// Removes a subscription made by [`App::subscribe`] (a real Unsubscribe).
    pub async fn unsubscribe(&self, name: &Name, conn: Option<u64>) -> Result<(), SlimError> {
        self.send_control(builders::unsubscribe(&self.core.name, name, Flags::one().forward_to(conn))).await
    }

    /// Local route: traffic for `name` leaves the embedded node through `conn`.
    pub async fn set_route(&self, name: &Name, conn: u64) -> Result<(), SlimError> {
        self.send_control(builders::subscribe(&self.core.name, name, Flags::one().recv_from(conn))).await
    }

    /// Removes a route set by [`App::set_route`].
    pub async fn remove_route(&self, name: &Name, conn: u64) -> Result<(), SlimError> {
        self.send_control(builders::unsubscribe(&self.core.name, name, Flags::one().recv_from(conn))).await
    }

    /// Creates a session started by this app; returns its id.
    pub async fn create_session(&self, cfg: SessionConfig) -> Result<u32, SlimError> {
        self.layer.create_local(cfg)
    }

    /// Deletes a session after what was published on it has left (bounded by
    /// [`crate::session::layer::DELETE_LINGER`]); later calls on it fail with `SessionNotFound`.
    /// The initiator of a point-to-point session tells the other side (docs/protocol.md "Closing").
    pub async fn delete_session(&self, id: u32) -> Result<(), SlimError> {
        self.layer.remove(id).await
    }

    /// Sessions this app holds: open ones, and ones their peer ended whose reader has not taken
    /// everything yet.
    pub fn open_sessions(&self) -> usize {
        self.layer.table().len()
    }

    /// The configuration of session `id`.
    pub fn get_session_config(&self, id: u32) -> Result<SessionConfig, SlimError> {
        self.layer.config(id)
    }

    /// Changes timeout / retries of session `id` (same variant only).
    pub fn set_session_config(&self, id: u32, cfg: SessionConfig) -> Result<(), SlimError> {
        self.layer.set_config(id, cfg)
    }

    /// The configuration used for sessions created on reception.
    pub fn set_default_session_config(&self, cfg: SessionConfig) -> Result<(), SlimError> {
        self.layer.set_default(cfg)
    }

    /// Sends a message on session `id`.
    pub async fn publish(&self, id: u32, req: PublishRequest) -> Result<(), SlimError> {
        self.layer.publish(id, req).await
    }

    /// Publishes without waiting (Python fast path): `Ok(None)` when handed over, `Ok(Some(req))`
    /// with the request back when there is no room right now (then await [`App::publish`]).
    pub fn try_publish(&self, id: u32, req: PublishRequest) -> Result<Option<PublishRequest>, SlimError> {
        self.layer.try_publish(id, req)
    }

    /// `publish_many`'s fast path: hands over `template` with each payload of `blobs` that there
    /// is room for right now (see [`SessionLayer::try_publish_many`]); `sent` counts them.
    /// `Ok(Some(req))`: the first with no room (await [`App::publish`], then call again).
    pub fn try_publish_many(
        &self,
        id: u32,
        template: &PublishRequest,
        blobs: &mut dyn Iterator<Item = Bytes>,
        sent: &mut usize,
    ) -> Result<Option<PublishRequest>, SlimError> {
        self.layer.try_publish_many(id, template, blobs, sent)
    }

    /// Invites `name` (any instance) into multicast session `id` (moderator only). Returns once
    /// the invite is queued; the handle tells when the participant joined.
    pub async fn invite(&self, id: u32, name: &Name) -> Result<InviteHandle, SlimError> {
        self.invite_within(id, name, None).await
    }

    /// [`App::invite`]; an invite still unanswered `bound` from now is abandoned by the
    /// moderator (its handle fails with [`SlimError::Invite`] and the next invite starts).
    pub async fn invite_within(
        &self,
        id: u32,
        name: &Name,
        bound: Option<std::time::Duration>,
    ) -> Result<InviteHandle, SlimError> {
        let deadline = bound.map(|b| tokio::time::Instant::now() + b);
        Ok(InviteHandle { rx: self.layer.membership_within(id, name, true, deadline).await? })
    }

    /// The members of multicast session `id`: on the moderator, itself and every member; on a
    /// member, the list of the moderator's last heartbeat (docs/liveness.md).
    pub async fn participants(&self, id: u32) -> Result<Vec<Name>, SlimError> {
        self.layer.participants(id).await
    }

    /// Removes participant `name` (id optional) from multicast session `id` and waits for its
    /// leave reply.
    pub async fn remove(&self, id: u32, name: &Name) -> Result<(), SlimError> {
        let rx = self.layer.membership(id, name, false).await?;
        rx.await.unwrap_or(Err(SlimError::SessionClosed))
    }

    /// First message of the next session a peer created (that message is also the first item
    /// of the session's own queue).
    pub async fn recv_new_session(&self) -> Result<(MessageInfo, Vec<u8>), SlimError> {
        self.recv_new_session_raw().await.map(owned_message)
    }

    /// Like [`App::recv_new_session`] without waiting.
    pub fn try_recv_new_session(&self) -> Option<(MessageInfo, Vec<u8>)> {
        self.try_recv_new_session_raw().map(owned_message)
    }

    /// Next message (or session error) of session `id`.
    pub async fn recv_session(&self, id: u32) -> Delivery {
        owned(self.recv_session_raw(id).await)
    }

    /// Next message of session `id` if one is waiting (no future; Python fast path).
    pub fn try_recv_session(&self, id: u32) -> Option<Delivery> {
        self.try_recv_session_raw(id).map(owned)
    }

    /// Next message of any session, in arrival order (module-level `receive(svc)`).
    pub async fn recv_any(&self) -> Delivery {
        owned(self.recv_any_raw().await)
    }

    /// Like [`App::recv_any`] without waiting.
    pub fn try_recv_any(&self) -> Option<Delivery> {
        self.try_recv_any_raw().map(owned)
    }

    /// Takes up to `max` messages already waiting on session `id` (never waits); an error for
    /// the session is returned on its own, in its place in the stream.
    pub fn try_recv_session_batch(
        &self,
        id: u32,
        out: &mut Vec<(MessageInfo, Vec<u8>)>,
        max: usize,
    ) -> Result<usize, SlimError> {
        let mut raw = Vec::new();
        let taken = self.try_recv_session_batch_raw(id, &mut raw, max);
        out.extend(raw.into_iter().map(owned_message));
        taken
    }

    // The `_raw` receives hand out the payload as received (shared `Bytes`, no copy): the Python
    // layer copies it once, into the `bytes` object it returns.

    /// [`App::recv_new_session`] with the payload as received.
    pub async fn recv_new_session_raw(&self) -> Result<RawMessage, SlimError> {
        self.core.inbox.recv_new_session().await
    }

    /// [`App::try_recv_new_session`] with the payload as received.
    pub fn try_recv_new_session_raw(&self) -> Option<RawMessage> {
        self.core.inbox.try_recv_new_session()
    }

    /// [`App::recv_session`] with the payload as received.
    pub async fn recv_session_raw(&self, id: u32) -> RawDelivery {
        self.layer.table().reader(id)?.pop().await
    }

    /// [`App::try_recv_session`] with the payload as received.
    pub fn try_recv_session_raw(&self, id: u32) -> Option<RawDelivery> {
        match self.layer.table().reader(id) {
            Ok(queue) => queue.try_pop(),
            Err(e) => Some(Err(e)),
        }
    }

    /// [`App::recv_any`] with the payload as received.
    pub async fn recv_any_raw(&self) -> RawDelivery {
        self.core.inbox.recv_any().await
    }

    /// [`App::try_recv_any`] with the payload as received.
    pub fn try_recv_any_raw(&self) -> Option<RawDelivery> {
        self.core.inbox.try_recv_any()
    }

    /// [`App::try_recv_session_batch`] with the payloads as received.
    pub fn try_recv_session_batch_raw(
        &self,
        id: u32,
        out: &mut Vec<RawMessage>,
        max: usize,
    ) -> Result<usize, SlimError> {
        self.layer.table().reader(id)?.try_pop_batch(out, max)
    }

    /// Bytes point-to-point session `id` holds for sending (waiting + unacknowledged): (now,
    /// peak). Bounded by [`crate::session::budget::MAX_BUFFERED_BYTES`]; (0, 0) for multicast.
    pub fn session_send_buffer(&self, id: u32) -> Result<(usize, usize), SlimError> {
        let entry = self.layer.table().lookup(id)?;
        Ok(entry.budget.as_ref().map_or((0, 0), |b| (b.in_use(), b.peak())))
    }

    /// Messages session `id`'s queue could not take within the delivery bound (each was reported
    /// to the reader as `MessageLost`).
    pub fn session_queue_drops(&self, id: u32) -> Result<u64, SlimError> {
        Ok(self.layer.table().lookup(id)?.queue.dropped())
    }
}

fn session_counters(core: &AppCore) -> Vec<(&'static str, u64)> {
    let mut out: Vec<(&'static str, u64)> = core.stats.snapshot().into_iter().collect();
    out.extend(core.inbox.counters());
    out.sort_unstable();
    out
}
