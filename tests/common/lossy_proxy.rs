//! A fault-injecting relay: a `DataPlaneService/OpenChannel` server that opens one upstream
//! stream to a node per accepted stream and relays both ways, dropping and reordering the
//! reliability traffic (P2P_RELIABLE, P2P_ACK, RTX_*, MULTICAST_MSG, BEACON) at configured rates. Everything else
//! (subscriptions, discovery, join) passes untouched, in order.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use slim_bindings::wire::proto::data_plane_service_client::DataPlaneServiceClient;
use slim_bindings::wire::proto::data_plane_service_server::{DataPlaneService, DataPlaneServiceServer};
use slim_bindings::wire::{Message, SessionMessageType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// What the proxy did.
#[derive(Debug, Default)]
pub struct FaultCounters {
    /// Messages dropped.
    pub dropped: AtomicU64,
    /// Messages sent after a later one.
    pub reordered: AtomicU64,
    /// Messages sent twice (see [`start_duplicating`]).
    pub duplicated: AtomicU64,
    /// Messages relayed.
    pub relayed: AtomicU64,
    /// Publishes whose payload contained the watched byte string (see [`start_watching`]).
    pub needle_hits: AtomicU64,
}

/// A running proxy.
pub struct LossyProxy {
    /// Client endpoint (`http://127.0.0.1:port`).
    pub endpoint: String,
    /// Fault counters.
    pub counters: Arc<FaultCounters>,
    cancel: CancellationToken,
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[derive(Clone)]
struct Faults {
    drop_per_mille: u64,
    reorder_per_mille: u64,
    duplicate_per_mille: u64,
    needle: Option<Arc<Vec<u8>>>,
    /// The first this many MULTICAST_MSGs each direction carries are dropped (see
    /// [`start_dropping_first_group_messages`]).
    drop_first_group: u64,
}

struct Relay {
    upstream: String,
    faults: Faults,
    counters: Arc<FaultCounters>,
    seed: Arc<AtomicU64>,
    cancel: CancellationToken,
}

/// Small deterministic generator (xorshift64*), one per relay direction.
struct Rng(u64);

impl Rng {
    fn per_mille(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % 1000
    }
}

fn faultable(m: &Message) -> bool {
    matches!(
        m.session_message_type(),
        SessionMessageType::P2PReliable
            | SessionMessageType::P2PAck
            | SessionMessageType::RtxRequest
            | SessionMessageType::RtxReply
            | SessionMessageType::MulticastMsg
            | SessionMessageType::BeaconMulticast
    )
}

/// Pumps `input` into `out`, applying faults. A held (reordered) message is released right after
/// the next one, or after 5 ms of silence.
async fn pump<S>(
    mut input: S,
    out: mpsc::Sender<Message>,
    faults: Faults,
    mut rng: Rng,
    counters: Arc<FaultCounters>,
    cancel: CancellationToken,
) where
    S: Stream<Item = Result<Message, Status>> + Unpin,
{
    let mut held: Option<Message> = None;
    let mut group_seen = 0u64;
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return,
            n = tokio::time::timeout(Duration::from_millis(5), input.next()) => n,
        };
        let msg = match next {
            Err(_) => {
                if let Some(h) = held.take()
                    && out.send(h).await.is_err()
                {
                    return;
                }
                continue;
            }
            Ok(Some(Ok(m))) => m,
            Ok(_) => return,
        };
        if let Some(needle) = &faults.needle
            && msg.blob().windows(needle.len()).any(|w| w == needle.as_slice())
        {
            counters.needle_hits.fetch_add(1, Ordering::Relaxed);
        }
        if msg.session_message_type() == SessionMessageType::MulticastMsg && group_seen < faults.drop_first_group {
            group_seen += 1;
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if faultable(&msg) {
            if rng.per_mille() < faults.drop_per_mille {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if faults.duplicate_per_mille > 0 && rng.per_mille() < faults.duplicate_per_mille {
                // The copy goes first; the message itself follows (and may be held back below).
                counters.duplicated.fetch_add(1, Ordering::Relaxed);
                if out.send(msg.clone()).await.is_err() {
                    return;
                }
            }
            if held.is_none() && rng.per_mille() < faults.reorder_per_mille {
                counters.reordered.fetch_add(1, Ordering::Relaxed);
                held = Some(msg);
                continue;
            }
        }
        counters.relayed.fetch_add(1, Ordering::Relaxed);
        if out.send(msg).await.is_err() {
            return;
        }
        if let Some(h) = held.take()
            && out.send(h).await.is_err()
        {
            return;
        }
    }
}

type BoxStream = Pin<Box<dyn Stream<Item = Result<Message, Status>> + Send>>;

#[tonic::async_trait]
impl DataPlaneService for Relay {
    type OpenChannelStream = BoxStream;

    async fn open_channel(&self, request: Request<Streaming<Message>>) -> Result<Response<BoxStream>, Status> {
        let mut client = DataPlaneServiceClient::connect(self.upstream.clone())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (up_tx, up_rx) = mpsc::channel(1024);
        let from_hub = client
            .open_channel(ReceiverStream::new(up_rx))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .into_inner();
        let (down_tx, down_rx) = mpsc::channel(1024);
        let seed = self.seed.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) | 1;
        tokio::spawn(pump(
            request.into_inner(),
            up_tx,
            self.faults.clone(),
            Rng(seed),
            self.counters.clone(),
            self.cancel.clone(),
        ));
        tokio::spawn(pump(
            from_hub,
            down_tx,
            self.faults.clone(),
            Rng(seed.rotate_left(17) | 1),
            self.counters.clone(),
            self.cancel.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(down_rx).map(Ok))))
    }
}

/// Starts a proxy on 127.0.0.1 (free port) in front of `upstream`.
pub async fn start(upstream: &str, drop_per_mille: u64, reorder_per_mille: u64, seed: u64) -> LossyProxy {
    start_inner(
        upstream,
        Faults { drop_per_mille, reorder_per_mille, duplicate_per_mille: 0, needle: None, drop_first_group: 0 },
        seed,
    )
    .await
}

/// [`start`], and every faultable message is also sent twice at `duplicate_per_mille`.
pub async fn start_duplicating(
    upstream: &str,
    drop_per_mille: u64,
    reorder_per_mille: u64,
    duplicate_per_mille: u64,
    seed: u64,
) -> LossyProxy {
    start_inner(
        upstream,
        Faults { drop_per_mille, reorder_per_mille, duplicate_per_mille, needle: None, drop_first_group: 0 },
        seed,
    )
    .await
}

/// A fault-free proxy that counts publishes whose payload contains `needle` (a wire tap).
pub async fn start_watching(upstream: &str, needle: &[u8]) -> LossyProxy {
    start_inner(
        upstream,
        Faults {
            drop_per_mille: 0,
            reorder_per_mille: 0,
            duplicate_per_mille: 0,
            needle: Some(Arc::new(needle.to_vec())),
            drop_first_group: 0,
        },
        1,
    )
    .await
}

/// A proxy that drops the first `count` MULTICAST_MSGs of each direction and nothing else: a
/// member whose first group messages are lost on the way (as when a route to it is still being
/// set up) sees a later one, or a beacon, first.
pub async fn start_dropping_first_group_messages(upstream: &str, count: u64) -> LossyProxy {
    let faults = Faults {
        drop_per_mille: 0,
        reorder_per_mille: 0,
        duplicate_per_mille: 0,
        needle: None,
        drop_first_group: count,
    };
    start_inner(upstream, faults, 1).await
}

async fn start_inner(upstream: &str, faults: Faults, seed: u64) -> LossyProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy address");
    let counters = Arc::new(FaultCounters::default());
    let cancel = CancellationToken::new();
    let relay = Relay {
        upstream: upstream.to_string(),
        faults,
        counters: counters.clone(),
        seed: Arc::new(AtomicU64::new(seed)),
        cancel: cancel.clone(),
    };
    let stop = cancel.clone();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(DataPlaneServiceServer::new(relay))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled())
            .await;
    });
    LossyProxy { endpoint: format!("http://{addr}"), counters, cancel }
}
