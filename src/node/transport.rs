//! gRPC transport: the `OpenChannel` server and client, connect retries and reconnection.
//!
//! The service is hand-wired (instead of the generated server/client) to use a lenient codec: a frame
//! that does not decode as a `Message` is counted and dropped, and the stream carries on. With the
//! generated prost codec a single bad frame would end the whole connection.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use hyper_util::rt::TokioTimer;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::service::Routes;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::codec::{Inbound, InboundStream, LenientCodec, Outbound, RawBody, Reading};
use super::config::{ClientConfig, ClientKeepalive, ConfigError, ServerConfig};
use super::exec::{Spawner, finish_despite_cancel, unless_cancelled};
use super::link::{Direction, Ingress, LinkMeta};
use super::listener::{Incoming, Listener};
use super::mesh::{self, Hello};
use super::outbound::{OutboundBody, OutboundSlot, PendingRing};
use super::serve::serve;
use super::shm;
use super::stats::NodeStats;
use super::{ConnTx, Inner, NodeError, QUEUE_CAPACITY, Scratch, ServerHandle};
use crate::auth::transport::{ClientAuth, ServerAuth};
use crate::wire::MAX_MESSAGE_SIZE;

/// gRPC service name of the data plane.
pub(crate) const SERVICE_NAME: &str = "dataplane.proto.v1.DataPlaneService";
/// HTTP/2 path of the one RPC.
pub(crate) const OPEN_CHANNEL_PATH: &str = "/dataplane.proto.v1.DataPlaneService/OpenChannel";

/// Attempts made by `connect` before it gives up.
pub(crate) const CONNECT_ATTEMPTS: u32 = 10;
/// Upper bound on the whole `connect` when the config sets no `connect_timeout`.
pub(crate) const DEFAULT_CONNECT_BUDGET: Duration = Duration::from_secs(5);
/// Attempts made to re-open a client stream that ended on its own (~2 minutes with the backoff).
pub(crate) const RECONNECT_ATTEMPTS: u32 = 120;

pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = inner.source();
    }
    s
}

/// Reads a connection's stream until it ends or `cancel` fires, processing every message.
/// Returns the error that ended it, if the stream failed (a frame over [`MAX_MESSAGE_SIZE`],
/// a reset, a broken connection).
async fn read_stream(
    inner: &Inner,
    ingress: &Ingress,
    inbound: &mut InboundStream,
    cancel: &CancellationToken,
    scratch: &mut Scratch,
) -> Option<Status> {
    let id = ingress.conn;
    // Publishes are routed by their header (not decoded) on links where most are in transit: mesh
    // links and the links a node accepted (apps and nodes that dial it). On a link this node
    // dialed to another node (an app's uplink) nearly every message is for an app in this
    // process, which needs it decoded anyway: there it is decoded at once, as before.
    inbound.route_by_view(ingress.is_mesh() || inbound.reading() == Reading::Request);
    // One `cancelled()` for the stream's life, polled only while waiting (see `unless_cancelled`).
    // A message taken from the stream is routed to the end even when the connection is cancelled
    // meanwhile (`finish_despite_cancel`): the reader stops after it. It goes only with its
    // target's connection (`dropped_closed`) or with the node when the node stops.
    let mut cancelled = std::pin::pin!(cancel.cancelled());
    loop {
        let item = unless_cancelled(cancel, cancelled.as_mut(), inbound.message()).await?;
        let done = match item {
            Ok(Some(Inbound::Message(m, frame))) => {
                let routed = std::pin::pin!(inner.process(ingress, m, Some(frame), scratch));
                finish_despite_cancel(cancel, cancelled.as_mut(), &inner.root, routed).await
            }
            Ok(Some(Inbound::Routable(view, frame))) => {
                let routed = std::pin::pin!(inner.process_routable(ingress, view, frame, scratch));
                finish_despite_cancel(cancel, cancelled.as_mut(), &inner.root, routed).await
            }
            Ok(Some(Inbound::Malformed(e))) => {
                inner.malformed(id, &e);
                Some(())
            }
            Ok(None) => {
                debug!(node = %inner.node_id, conn = id, "stream closed by peer");
                return None;
            }
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                // A frame over MAX_MESSAGE_SIZE: gRPC cannot skip it (the stream is unusable
                // after it), so the message is dropped and the connection ends. Reported, not
                // recovered here: the server ends the peer's stream with this status (see
                // `oversized_frame_status`); our own apps never send one (`publish` refuses a
                // payload over `wire::MAX_PAYLOAD_SIZE` with `MessageTooLarge`).
                warn!(node = %inner.node_id, conn = id, %status, "oversized frame: message dropped, stream ended");
                return Some(status);
            }
            Err(status) => {
                debug!(node = %inner.node_id, conn = id, %status, "stream failed");
                return Some(status);
            }
        };
        done?;
    }
}

/// The status a server ends a peer's stream with when that peer sent a frame over
/// [`MAX_MESSAGE_SIZE`] (`failure`, tonic's `OutOfRange`): the peer learns why its connection
/// ended instead of seeing a clean end of stream. `None` for other failures (the stream is
/// already broken; nothing would reach the peer).
fn oversized_frame_status(failure: Option<&Status>) -> Option<Status> {
    let failure = failure.filter(|s| s.code() == tonic::Code::OutOfRange)?;
    Some(Status::out_of_range(format!(
        "message too large: a SLIM node accepts messages of up to {MAX_MESSAGE_SIZE} bytes; \
         the message was dropped and this stream ended ({})",
        failure.message()
    )))
}

// ---------------------------------------------------------------------------------------------
// Server

/// The hand-wired `DataPlaneService` server.
#[derive(Clone)]
pub(super) struct DataPlaneServer {
    pub(super) inner: Arc<Inner>,
    cancel: CancellationToken,
    /// What incoming streams must present (None = nothing).
    auth: Option<Arc<ServerAuth>>,
    /// Loopback clients' offers of shared memory are taken (see `shm`).
    shared_memory: bool,
}

impl tonic::server::NamedService for DataPlaneServer {
    const NAME: &'static str = SERVICE_NAME;
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<Outbound, Status>> + Send + 'static>>;

struct OpenChannel(DataPlaneServer);

impl tonic::server::StreamingService<Inbound> for OpenChannel {
    type Response = Outbound;
    type ResponseStream = ResponseStream;
    type Future = BoxFuture<Response<ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<Inbound>>) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move { server.open_channel(request).await })
    }
}

impl DataPlaneServer {
    async fn open_channel(&self, request: Request<Streaming<Inbound>>) -> Result<Response<ResponseStream>, Status> {
        if let Some(auth) = &self.auth {
            let given = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
            // Cached keys first; a JWT verifier may need to fetch its issuer's keys.
            let verdict = match auth.check(given) {
                Err(_) if matches!(**auth, ServerAuth::Jwt(_)) => auth.check_async(given).await,
                other => other,
            };
            if let Err(e) = verdict {
                debug!(node = %self.inner.node_id, error = %e, "stream rejected: transport auth");
                return Err(Status::unauthenticated("invalid or missing authorization"));
            }
        }
        if self.cancel.is_cancelled() {
            return Err(Status::unavailable("server is stopping"));
        }
        let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_else(|| "unknown".into());
        let hello = Hello::from_metadata(request.metadata());
        let answer = hello.is_some();
        let mesh = &self.inner.mesh;
        let meta = LinkMeta::remote(Direction::In, hello, mesh.enabled(), mesh.node);
        // The body as sent (see `codec::InboundStream`); tonic's own decoder got an empty one.
        let mut inbound = InboundStream::from_extensions(request.extensions(), MAX_MESSAGE_SIZE, Reading::Request);
        let md = request.metadata();
        let shared = shm::accept_offer(md, request.remote_addr(), self.shared_memory, &self.inner.stats);
        let ring = shared.clone().map(|region| {
            let (producer, consumer) = shm::ends(region, shm::Side::Server);
            inbound.share(consumer);
            producer
        });
        let (tx, rx) = mpsc::channel::<Outbound>(QUEUE_CAPACITY);
        let cancel = self.cancel.child_token();
        let (id, counters) = self.inner.add_connection(ConnTx::Remote(tx), cancel.clone(), peer, meta.clone());
        let ingress = Ingress::new(id, &meta, counters);
        let inner = self.inner.clone();
        let (end_tx, end_rx) = tokio::sync::oneshot::channel::<Status>();
        tokio::spawn(async move {
            let mut scratch = Scratch::default();
            let failure = read_stream(&inner, &ingress, &mut inbound, &cancel, &mut scratch).await;
            if let Some(status) = oversized_frame_status(failure.as_ref()) {
                // The response stream has ended once the connection is removed (its sender
                // dropped); the status follows as the stream's trailers.
                let _ = end_tx.send(status);
            }
            inner.remove_connection(id);
        });
        // What the node sends, then (only when the peer's frame was too large) the error status,
        // written by our own body (`outbound::OutboundBody`): tonic gets an empty stream, and
        // `DataPlaneServer::call` puts this body in place of the one tonic builds around it.
        let mut response: Response<ResponseStream> = Response::new(Box::pin(futures::stream::empty()));
        response.extensions_mut().insert(OutboundSlot::new(OutboundBody::server(rx, end_rx).sharing(ring)));
        if shared.is_some() {
            shm::accept(response.metadata_mut());
        }
        // Only a peer that introduced itself gets an answer (a 0.6.0 client never sees the header).
        if answer {
            mesh.hello().insert_into(response.metadata_mut());
        }
        Ok(response)
    }

    /// Transport auth of a request on the node's port (the data plane and the inspection API).
    pub(super) async fn authorized(&self, headers: &http::HeaderMap) -> bool {
        let Some(auth) = &self.auth else { return true };
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        let verdict = match auth.check(given) {
            Err(_) if matches!(**auth, ServerAuth::Jwt(_)) => auth.check_async(given).await,
            other => other,
        };
        if let Err(e) = &verdict {
            debug!(node = %self.inner.node_id, error = %e, "request rejected: transport auth");
        }
        verdict.is_ok()
    }
}

impl<B> Service<http::Request<B>> for DataPlaneServer
where
    B: tonic::codegen::Body<Data = prost::bytes::Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == OPEN_CHANNEL_PATH {
            let method = OpenChannel(self.clone());
            // The request body goes to `open_channel` as it is (see `codec::InboundStream`);
            // tonic decodes an empty one and encodes the response stream as usual.
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(RawBody::new(Body::new(body)));
            let req = http::Request::from_parts(parts, Body::empty());
            return Box::pin(async move {
                let mut grpc =
                    tonic::server::Grpc::new(LenientCodec).apply_max_message_size_config(Some(MAX_MESSAGE_SIZE), None);
                let (mut parts, body) = grpc.streaming(method, req).await.into_parts();
                // Our body in place of tonic's (see `outbound::OutboundBody`); a refused stream has
                // none and keeps tonic's (its status in the headers).
                let body = match parts.extensions.remove::<OutboundSlot>().and_then(|s| s.take()) {
                    Some(ours) => Body::new(ours),
                    None => body,
                };
                Ok(http::Response::from_parts(parts, body))
            });
        }
        Box::pin(async move {
            let mut response = http::Response::new(tonic::body::Body::default());
            let headers = response.headers_mut();
            headers.insert(Status::GRPC_STATUS, (tonic::Code::Unimplemented as i32).into());
            headers.insert(http::header::CONTENT_TYPE, tonic::metadata::GRPC_CONTENT_TYPE);
            Ok(response)
        })
    }
}

const MIB: u32 = 1024 * 1024;
/// Largest HTTP/2 frame size the protocol allows.
const MAX_HTTP2_FRAME: u32 = (1 << 24) - 1;
/// HTTP/2 frame size this node accepts unless configured: a 64 KiB message travels in one DATA
/// frame (one write) instead of four 16 KiB ones.
pub(crate) const DEFAULT_HTTP2_FRAME: u32 = MIB;
/// HTTP/2 flow-control windows this node grants (per stream, per connection): room for dozens of
/// large messages in flight, so a sender is not stopped every few messages waiting for
/// WINDOW_UPDATE. A reader that stops reading still stops its peer once these are full.
pub(crate) const HTTP2_STREAM_WINDOW: u32 = 4 * MIB;
/// See [`HTTP2_STREAM_WINDOW`].
pub(crate) const HTTP2_CONNECTION_WINDOW: u32 = 8 * MIB;

pub(super) async fn run_server(inner: &Arc<Inner>, cfg: ServerConfig) -> Result<std::net::SocketAddr, NodeError> {
    if inner.root.is_cancelled() {
        return Err(NodeError::Shutdown);
    }
    let addr = cfg.socket_addr()?;
    if inner.servers.lock().contains_key(&cfg.endpoint) {
        return Err(NodeError::ServerAlreadyRunning(cfg.endpoint.clone()));
    }
    let tls = if cfg.tls.insecure { None } else { Some(super::tls::server_acceptor(&cfg.tls)?) };
    let auth = match cfg.auth.build().map_err(|e| ConfigError::Invalid(format!("auth: {e}")))? {
        ServerAuth::None => None,
        other => Some(Arc::new(other)),
    };
    if auth.is_some() && tls.is_none() {
        warn!(endpoint = %cfg.endpoint, "transport auth without TLS: credentials travel in clear text");
    }
    let server_err = |e: std::io::Error| NodeError::Server { endpoint: cfg.endpoint.clone(), reason: e.to_string() };
    let socket = tokio::net::TcpListener::bind(addr).await.map_err(server_err)?;
    let bound = socket.local_addr().map_err(server_err)?;
    let listener = Listener::new(socket);
    let cancel = inner.root.child_token();
    let shared_memory = cfg.shared_memory != Some(false);
    let svc = DataPlaneServer { inner: inner.clone(), cancel: cancel.clone(), auth, shared_memory };

    let keepalive = cfg.keepalive.clone().unwrap_or_default();
    // A mesh node notices a silent neighbour within seconds, and a paused app keeps its
    // connection (docs/mesh.md, "Link failure"; see `mesh::ACCEPT_KEEPALIVE_TIMEOUT`).
    let (ping_every, ping_timeout) = if inner.mesh.enabled() {
        (mesh::KEEPALIVE_INTERVAL, mesh::ACCEPT_KEEPALIVE_TIMEOUT)
    } else {
        (Duration::from_secs(120), Duration::from_secs(20))
    };
    let frame = cfg.max_frame_size.map_or(DEFAULT_HTTP2_FRAME, |mib| mib.saturating_mul(MIB));
    // The settings tonic's `Server` would give these connections; hyper serves them directly so
    // that its tasks run on our executor (`exec::Spawner`: no wake-up of a second worker per
    // message sent, see src/node/exec.rs).
    let mut h2 = hyper::server::conn::http2::Builder::new(Spawner);
    h2.timer(TokioTimer::new())
        .keep_alive_interval(Some(keepalive.time.unwrap_or(ping_every)))
        .keep_alive_timeout(keepalive.timeout.unwrap_or(ping_timeout))
        .max_frame_size(frame.clamp(16 * 1024, MAX_HTTP2_FRAME))
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        .adaptive_window(false)
        .max_concurrent_streams(cfg.max_concurrent_streams)
        // h2's own bounds on streams reset early by the peer (20) and on resets caused by the
        // peer's protocol errors (hyper's 1,024, where tonic's `Server` set none): a peer that
        // opens and resets streams in a loop (HTTP/2 "rapid reset") gets a GOAWAY.
        .max_pending_accept_reset_streams(None);
    if let Some(n) = cfg.max_header_list_size {
        h2.max_header_list_size(n);
    }
    let routes = Routes::new(svc.clone()).add_service(super::serve::NodeInfoServer(svc)).prepare();
    let node_id = inner.node_id.clone();
    let task = match tls {
        None => {
            let incoming = Incoming::new(listener.clone());
            tokio::spawn(serve(incoming, routes, h2, cancel.clone(), node_id))
        }
        Some(acceptor) => {
            let incoming = super::tls::incoming(listener.clone(), acceptor, cancel.clone());
            tokio::spawn(serve(incoming, routes, h2, cancel.clone(), node_id))
        }
    };
    let mut servers = inner.servers.lock();
    if servers.contains_key(&cfg.endpoint) {
        listener.close();
        cancel.cancel();
        return Err(NodeError::ServerAlreadyRunning(cfg.endpoint.clone()));
    }
    servers.insert(cfg.endpoint.clone(), ServerHandle { cancel, addr: bound, listener, task });
    debug!(node = %inner.node_id, endpoint = %cfg.endpoint, %bound, "data-plane server listening");
    Ok(bound)
}

// ---------------------------------------------------------------------------------------------
// Client

/// The client's channel, handing each response's body to `Dialer::open` as it is (in the
/// response's extensions, see `codec::InboundStream`): tonic decodes an empty body instead. The
/// request's body is ours too (`outbound::OutboundBody`, carried in the request's extensions past
/// tonic, which encodes an empty stream).
#[derive(Clone)]
struct KeepBody(tonic::transport::Channel);

impl Service<http::Request<Body>> for KeepBody {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let body = match parts.extensions.remove::<OutboundSlot>().and_then(|s| s.take()) {
            Some(ours) => Body::new(ours),
            None => body,
        };
        let response = self.0.call(http::Request::from_parts(parts, body));
        Box::pin(async move {
            let (mut parts, body) = response.await?.into_parts();
            parts.extensions.insert(RawBody::new(body));
            Ok(http::Response::from_parts(parts, Body::empty()))
        })
    }
}

/// Everything needed to (re)open a client stream.
pub(crate) struct Dialer {
    cfg: ClientConfig,
    endpoint: Endpoint,
    /// Transport credentials attached to every stream request.
    auth: ClientAuth,
    /// TLS handshake done by us (None = plaintext h2c).
    tls: Option<super::tls::TlsDialer>,
    headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    /// What this node says about itself on the link.
    hello: Hello,
    /// Where a stream that shares memory with its server counts its frames (None: no offer).
    shared: Option<Arc<NodeStats>>,
}

/// How hard to try.
struct RetryPolicy {
    attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    deadline: Option<Instant>,
}

/// An open stream: its outbound queue, its inbound messages, and the peer's hello (if any).
type Opened = (mpsc::Sender<Outbound>, InboundStream, Option<Hello>);

pub(crate) enum DialError {
    /// Worth another attempt (refused, reset, timeout...).
    Retry(String),
    /// Will fail the same way again (rejected credentials, bad config).
    Fatal(String),
}

impl Dialer {
    pub(crate) fn new(mut cfg: ClientConfig, hello: Hello) -> Result<Self, NodeError> {
        cfg.check()?;
        if hello.mesh && cfg.keepalive.is_none() {
            // A mesh node notices a silent neighbour within seconds (docs/mesh.md, "Link failure").
            cfg.keepalive = Some(ClientKeepalive {
                http2_keepalive: Some(mesh::KEEPALIVE_INTERVAL),
                timeout: Some(mesh::KEEPALIVE_TIMEOUT),
                keep_alive_while_idle: true,
                ..Default::default()
            });
        }
        let invalid = |what: &str, e: &dyn std::fmt::Display| ConfigError::Invalid(format!("{what}: {e}"));
        let (uri, tls) = if cfg.tls.is_plaintext() {
            (cfg.endpoint.clone(), None)
        } else {
            let (uri, dialer) = super::tls::client_dialer(&cfg)?;
            (uri, Some(dialer))
        };
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|e| invalid(&format!("endpoint `{}`", cfg.endpoint), &e))?
            .tcp_nodelay(true)
            // The connection's tasks run on our executor (no wake-up of a second worker per
            // message sent: see src/node/exec.rs).
            .executor(Spawner)
            .max_frame_size(DEFAULT_HTTP2_FRAME)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW);
        if let Some(origin) = &cfg.origin {
            let uri: http::Uri = origin.parse().map_err(|e| invalid("origin", &e))?;
            endpoint = endpoint.origin(uri);
        }
        if let Some(t) = cfg.connect_timeout.filter(|t| !t.is_zero()) {
            endpoint = endpoint.connect_timeout(t);
        }
        if let Some(k) = &cfg.keepalive {
            endpoint = endpoint
                .tcp_keepalive(Some(k.tcp_keepalive.unwrap_or(Duration::from_secs(60))))
                .http2_keep_alive_interval(k.http2_keepalive.unwrap_or(Duration::from_secs(60)))
                .keep_alive_timeout(k.timeout.unwrap_or(Duration::from_secs(10)))
                .keep_alive_while_idle(k.keep_alive_while_idle);
        }
        let mut headers = Vec::with_capacity(cfg.headers.len() + 1);
        for (k, v) in &cfg.headers {
            let key = AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|e| invalid(&format!("headers key `{k}`"), &e))?;
            let value: AsciiMetadataValue = v.parse().map_err(|e| invalid(&format!("headers[{k}]"), &e))?;
            headers.push((key, value));
        }
        let auth = cfg.auth.build().map_err(|e| ConfigError::Invalid(format!("auth: {e}")))?;
        Ok(Self { cfg, endpoint, auth, tls, headers, hello, shared: None })
    }

    /// Offers a loopback server shared memory for large frames, unless the config says not to.
    pub(crate) fn sharing_memory(mut self, stats: &Arc<NodeStats>) -> Self {
        self.shared = (self.cfg.shared_memory != Some(false)).then(|| stats.clone());
        self
    }

    pub(crate) fn request_metadata(&self, md: &mut MetadataMap) -> Result<(), DialError> {
        for (k, v) in &self.headers {
            md.insert(k.clone(), v.clone());
        }
        self.hello.insert_into(md);
        let auth = self.auth.header_value().map_err(|e| DialError::Fatal(e.to_string()))?;
        if let Some(value) = auth {
            let value: AsciiMetadataValue =
                value.parse().map_err(|_| DialError::Fatal("authorization value is not ASCII".into()))?;
            md.insert("authorization", value);
        }
        Ok(())
    }

    /// A connected HTTP/2 channel (TCP + TLS as configured).
    pub(crate) async fn channel(&self) -> Result<tonic::transport::Channel, DialError> {
        match &self.tls {
            Some(dialer) => self.endpoint.connect_with_connector(dialer.clone()).await,
            None => self.endpoint.connect().await,
        }
        .map_err(|e| {
            let reason = error_chain(&e);
            // Certificate problems do not fix themselves between attempts.
            if reason.contains("invalid peer certificate") || reason.contains("fatal alert") {
                DialError::Fatal(reason)
            } else {
                DialError::Retry(reason)
            }
        })
    }

    /// One attempt: TCP (+TLS) + HTTP/2 + `OpenChannel`. Returns the stream and the peer's hello.
    async fn open(&self) -> Result<Opened, DialError> {
        let channel = self.channel().await?;
        let mut grpc = tonic::client::Grpc::new(KeepBody(channel)).max_decoding_message_size(MAX_MESSAGE_SIZE);
        grpc.ready().await.map_err(|e| DialError::Retry(error_chain(&e)))?;
        let (tx, rx) = mpsc::channel::<Outbound>(QUEUE_CAPACITY);
        let mut request = Request::new(futures::stream::empty::<Outbound>());
        let offer = self.shared.as_ref().and_then(|stats| shm::Offer::for_endpoint(&self.cfg.endpoint, stats));
        let pending = PendingRing::default();
        let body = OutboundBody::client(rx).offering(pending.clone());
        request.extensions_mut().insert(OutboundSlot::new(body));
        self.request_metadata(request.metadata_mut())?;
        if let Some(offer) = &offer {
            offer.insert_into(request.metadata_mut());
        }
        let path = http::uri::PathAndQuery::from_static(OPEN_CHANNEL_PATH);
        match grpc.streaming(request, path, LenientCodec).await {
            Ok(resp) => {
                let hello = Hello::from_metadata(resp.metadata());
                let mut inbound =
                    InboundStream::from_extensions(resp.extensions(), MAX_MESSAGE_SIZE, Reading::Response);
                // Set before the queue's sender is handed out: the body finds it on the first message.
                let ring = offer.and_then(|offer| offer.answered(resp.metadata())).map(|region| {
                    let (producer, consumer) = shm::ends(region, shm::Side::Client);
                    inbound.share(consumer);
                    producer
                });
                *pending.lock() = Some(ring);
                Ok((tx, inbound, hello))
            }
            Err(s) if matches!(s.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) => {
                Err(DialError::Fatal(format!("rejected by server: {}", s.message())))
            }
            Err(s) => Err(DialError::Retry(format!("{}: {}", s.code(), s.message()))),
        }
    }

    async fn open_with_retry(&self, policy: &RetryPolicy, cancel: &CancellationToken) -> Result<Opened, NodeError> {
        let fail = |attempts: u32, reason: String| NodeError::ConnectFailed {
            endpoint: self.cfg.endpoint.clone(),
            attempts,
            reason,
        };
        let mut backoff = policy.initial_backoff;
        let mut last = String::from("no attempt made");
        let mut made = 0;
        for attempt in 1..=policy.attempts {
            let remaining = policy.deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if remaining.is_some_and(|r| r.is_zero()) {
                break;
            }
            made = attempt;
            let outcome = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(NodeError::Shutdown),
                r = async {
                    match remaining {
                        Some(r) => tokio::time::timeout(r, self.open()).await
                            .unwrap_or_else(|_| Err(DialError::Retry("timed out".into()))),
                        None => self.open().await,
                    }
                } => r,
            };
            match outcome {
                Ok(s) => return Ok(s),
                Err(DialError::Fatal(reason)) => return Err(fail(attempt, reason)),
                Err(DialError::Retry(reason)) => {
                    debug!(endpoint = %self.cfg.endpoint, attempt, %reason, "connect attempt failed");
                    last = reason;
                }
            }
            if attempt == policy.attempts {
                break;
            }
            let mut pause = backoff;
            if let Some(d) = policy.deadline {
                pause = pause.min(d.saturating_duration_since(Instant::now()));
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(NodeError::Shutdown),
                _ = tokio::time::sleep(pause) => {}
            }
            backoff = (backoff * 2).min(policy.max_backoff);
        }
        Err(fail(made, last))
    }
}

pub(super) async fn connect(inner: &Arc<Inner>, cfg: ClientConfig) -> Result<u64, NodeError> {
    if inner.root.is_cancelled() {
        return Err(NodeError::Shutdown);
    }
    let budget = cfg.connect_timeout.filter(|t| !t.is_zero()).unwrap_or(DEFAULT_CONNECT_BUDGET);
    let dialer = Dialer::new(cfg, inner.mesh.hello())?.sharing_memory(&inner.stats);
    let policy = RetryPolicy {
        attempts: CONNECT_ATTEMPTS,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        deadline: Some(Instant::now() + budget),
    };
    let (tx, inbound, hello) = dialer.open_with_retry(&policy, &inner.root).await?;
    let cancel = inner.root.child_token();
    let meta = LinkMeta::remote(Direction::Out, hello, inner.mesh.enabled(), inner.mesh.node);
    let (id, counters) =
        inner.add_connection(ConnTx::Remote(tx), cancel.clone(), dialer.cfg.endpoint.clone(), meta.clone());
    debug!(node = %inner.node_id, conn = id, endpoint = %dialer.cfg.endpoint, kind = meta.kind.as_str(), "connected");
    let ingress = Ingress::new(id, &meta, counters);
    tokio::spawn(run_client(inner.clone(), ingress, dialer, inbound, cancel));
    Ok(id)
}

/// Reads a client connection; when the stream ends on its own, reconnects (same id, same
/// subscriptions) and replays the subscriptions forwarded on it.
async fn run_client(
    inner: Arc<Inner>,
    mut ingress: Ingress,
    dialer: Dialer,
    mut inbound: InboundStream,
    cancel: CancellationToken,
) {
    let id = ingress.conn;
    // Node::close_gracefully waits for this task to return.
    let _ended = inner.reader_ended(id).map(CancellationToken::drop_guard);
    let mut scratch = Scratch::default();
    let policy = RetryPolicy {
        attempts: RECONNECT_ATTEMPTS,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        deadline: None,
    };
    loop {
        read_stream(&inner, &ingress, &mut inbound, &cancel, &mut scratch).await;
        // Closed by Node::close_gracefully (taken out of the table, its stream ended after its
        // queue): the peer ended its side in turn, nothing to reconnect.
        if cancel.is_cancelled() || !inner.has_connection(id) {
            break;
        }
        debug!(node = %inner.node_id, conn = id, endpoint = %dialer.cfg.endpoint, "stream ended; reconnecting");
        inner.link_down(id);
        match dialer.open_with_retry(&policy, &cancel).await {
            Ok((tx, new_inbound, hello)) => {
                let meta = LinkMeta::remote(Direction::Out, hello, inner.mesh.enabled(), inner.mesh.node);
                let Some(new_ingress) = inner.reconnected(id, tx, meta) else { break };
                ingress = new_ingress;
                inbound = new_inbound;
                inner.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                // A mesh neighbour learns our names from the sync; a leaf needs its subscriptions again.
                let replayed = if ingress.is_mesh() { 0 } else { inner.replay_forwarded(id).await };
                info!(node = %inner.node_id, conn = id, endpoint = %dialer.cfg.endpoint, replayed, "reconnected");
            }
            // The app closed while the link was down: no failure to warn of ("connection removed" follows).
            Err(NodeError::Shutdown) => break,
            Err(e) => {
                warn!(node = %inner.node_id, conn = id, error = %e, "reconnect gave up; connection removed");
                break;
            }
        }
    }
    inner.remove_connection(id);
}
