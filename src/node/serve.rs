//! A data-plane server's accept loop: each accepted connection served by hyper's HTTP/2 server
//! (as tonic's `Server` does, HTTP/2 only) with our executor ([`super::exec::Spawner`]), so that
//! the tasks hyper spawns for a connection's streams do not wake a second runtime worker per
//! message (see src/node/exec.rs). The settings come from `transport::run_server`. Also the
//! inspection API ([`NodeInfoServer`]), served next to the data plane.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::service::Routes;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::debug;

use super::exec::{NoSelfWake, Spawner};
use super::mesh;
use super::transport::{DataPlaneServer, error_chain};
use crate::wire::MAX_MESSAGE_SIZE;

/// Accepts connections from `incoming` until `shutdown` fires or it ends, serving each with `h2`
/// (HTTP/2 only, as tonic's `Server` without HTTP/1) in a task of its own; then shuts every
/// connection down gracefully (GOAWAY, the open streams end as their connections are removed)
/// and returns once all of them have ended.
pub(super) async fn serve<I, IO>(
    incoming: I,
    routes: Routes,
    h2: hyper::server::conn::http2::Builder<Spawner>,
    shutdown: CancellationToken,
    node_id: String,
) where
    I: Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: Connected<ConnectInfo = TcpConnectInfo> + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Every connection task holds a clone; the last one dropped ends `all_ended.recv()`.
    let (ended_tx, mut all_ended) = mpsc::channel::<()>(1);
    {
        let mut incoming = std::pin::pin!(incoming);
        loop {
            let io = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                io = incoming.next() => match io {
                    Some(Ok(io)) => io,
                    Some(Err(e)) => {
                        debug!(node = %node_id, error = %e, "accept failed");
                        continue;
                    }
                    None => break,
                },
            };
            let svc = ConnService { routes: routes.clone(), info: io.connect_info() };
            let conn = h2.serve_connection(TokioIo::new(io), svc);
            let stop = shutdown.clone();
            let held = ended_tx.clone();
            let node_id = node_id.clone();
            tokio::spawn(NoSelfWake::new(async move {
                let _held = held;
                let mut conn = std::pin::pin!(conn);
                let outcome = tokio::select! {
                    r = conn.as_mut() => r,
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = outcome {
                    debug!(node = %node_id, error = %error_chain(&e), "connection ended with an error");
                }
            }));
        }
    }
    drop(ended_tx);
    let _ = all_ended.recv().await;
}

/// One connection's request handler: the node's routes, with the peer's address in every
/// request's extensions (what `Request::remote_addr` reads, as tonic's `Server` puts it there).
#[derive(Clone)]
struct ConnService {
    routes: Routes,
    info: TcpConnectInfo,
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for ConnService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(self.info.clone());
        let mut routes = self.routes.clone();
        Box::pin(async move { routes.call(req).await })
    }
}

/// The inspection API (`slim.mesh.v1.NodeInfo`), served next to the data plane with the same auth.
#[derive(Clone)]
pub(super) struct NodeInfoServer(pub(super) DataPlaneServer);

impl tonic::server::NamedService for NodeInfoServer {
    const NAME: &'static str = mesh::inspect::SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for NodeInfoServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move {
            if req.uri().path() != mesh::inspect::NODE_INFO_PATH {
                return Ok(Status::unimplemented("unknown method").into_http());
            }
            if !server.authorized(req.headers()).await {
                return Ok(Status::unauthenticated("invalid or missing authorization").into_http());
            }
            let method = mesh::inspect::NodeInfoMethod(server.inner.clone());
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                .apply_max_message_size_config(Some(64 * 1024), Some(MAX_MESSAGE_SIZE));
            Ok(grpc.unary(method, req).await)
        })
    }
}
