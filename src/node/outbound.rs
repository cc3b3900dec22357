//! Writing a stream: [`OutboundBody`], the HTTP/2 body of both ends of a data-plane stream, which
//! frames each queued [`Outbound`] as a gRPC message without tonic's encoder (no copy of a large
//! frame the node forwards), and [`OutboundSlot`], which carries it past tonic's plumbing.
//! docs/protocol.md, "Transport", says how messages sit in DATA frames.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::Frame;
use parking_lot::Mutex;
use prost::Message as _;
use prost::bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::codec::{Outbound, PREFIX_LEN};
use super::shm;

/// A gRPC message at least this long goes out as a DATA frame of its own: a frame the node
/// forwards is handed to HTTP/2 as it is (no copy), after a frame that ends with its 5-byte
/// prefix; a message to encode is encoded with its prefix into a buffer of their size. The
/// receiver, finding the message alone in its DATA frame, reads it as a slice of that frame (see
/// [`InboundStream::split`]). Below it, messages are packed together (a copy each, as
/// tonic's encoder did): two frames per small message would cost more than copying it.
pub(crate) const LARGE_MESSAGE: usize = 16 * 1024;
/// Messages ready together are packed into one DATA frame up to about this size (tonic's yield
/// threshold): a burst of small messages is one frame and one write.
const PACK_LIMIT: usize = 32 * 1024;

/// The outbound buffer's initial (and, once handed over, renewed) capacity.
const OUTBOUND_BUFFER: usize = 8 * 1024;

/// Which end of the stream writes: a server's body ends with trailers carrying the stream's
/// status (OK, or the one the read side ended it with), a client's simply ends.
enum Ending {
    Client,
    /// The status to end with, when the read side has one (dropped unsent: OK).
    Server(oneshot::Receiver<Status>),
}

/// The messages a stream sends, as its HTTP/2 body: each [`Outbound`] taken off the connection's
/// queue is framed as a gRPC message (5-byte prefix, then the message) without going through
/// tonic's encoder, which copies every message into a buffer of its own. What is ready together
/// is packed into one DATA frame (up to [`PACK_LIMIT`]); a message of [`LARGE_MESSAGE`] bytes or
/// more is a DATA frame of its own: a forwarded frame is sent as the bytes it was received in, a
/// message to encode is encoded once into a buffer of exactly its size. The queue is read only
/// as HTTP/2 asks for more (hyper stops asking when its send buffer and the peer's window are
/// full): back-pressure as before.
pub(crate) struct OutboundBody {
    rx: mpsc::Receiver<Outbound>,
    ending: Ending,
    /// Prefixes and small messages not yet handed over.
    buf: BytesMut,
    /// A large message to hand over after `buf` (a forwarded frame: `buf` ends with its prefix).
    next: Option<Bytes>,
    /// An encoding failure: ends the stream once `buf` is out.
    failed: Option<Status>,
    /// The queue has ended (every sender dropped).
    drained: bool,
    /// Nothing more to send.
    done: bool,
    /// The ring large frames go through when the stream shares memory with its peer (see `shm`):
    /// each then costs a stub in `buf` instead of its bytes on the socket.
    shared: Option<shm::Producer>,
    /// A client's ring once its server has answered the offer (see [`PendingRing`]).
    offered: Option<PendingRing>,
    /// A frame for the shared ring that found it full, and what it waits for (see [`Self::hold`]).
    /// Not a drop point: it goes out before anything behind it, or goes with the stream as
    /// everything still queued on it does when a link breaks (docs/reliability.md, the node's rows).
    held: Option<Outbound>,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The next wait for room in the ring.
    ring_wait: Duration,
}

/// The first wait for room in a full shared ring (the timer's resolution), and the longest.
const RING_WAIT_FIRST: Duration = Duration::from_millis(1);
const RING_WAIT_MAX: Duration = Duration::from_millis(8);

/// A client stream's ring until its server answers the offer: `None` until then, then the ring
/// (`Some(Some)`), or none (`Some(None)`: declined). The answer comes before anything is queued
/// (the queue's sender is handed out after the response).
pub(crate) type PendingRing = Arc<Mutex<Option<Option<shm::Producer>>>>;

impl OutboundBody {
    fn new(rx: mpsc::Receiver<Outbound>, ending: Ending) -> Self {
        // Room for a burst of small messages (as tonic's encoder had): when the handed-over part
        // of the buffer is still in flight, the next batch gets a fresh buffer of at least this
        // size instead of growing one from nothing.
        let buf = BytesMut::with_capacity(OUTBOUND_BUFFER);
        OutboundBody {
            rx,
            ending,
            buf,
            next: None,
            failed: None,
            drained: false,
            done: false,
            shared: None,
            offered: None,
            held: None,
            waiting: None,
            ring_wait: RING_WAIT_FIRST,
        }
    }

    /// Large frames go through `ring` (a server that took its client's offer).
    pub(crate) fn sharing(mut self, ring: Option<shm::Producer>) -> Self {
        self.shared = ring;
        self
    }

    /// Large frames go through the ring `pending` gets, if the server takes the offer (a client
    /// that offered shared memory).
    pub(crate) fn offering(mut self, pending: PendingRing) -> Self {
        self.offered = Some(pending);
        self
    }

    /// Puts a frame of `len` bytes (written by `fill`) into the shared ring, and its stub into
    /// `buf`. Nothing is done when the stream has no ring or the frame is not one for it
    /// ([`shm::Put::Inline`]), or when the ring has no room now ([`shm::Put::Full`]).
    fn through_ring(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> shm::Put {
        let Some(ring) = self.shared.as_mut().filter(|_| len >= LARGE_MESSAGE) else { return shm::Put::Inline };
        let put = ring.put(len, fill);
        if let shm::Put::Sent(stub) = &put {
            self.buf.reserve(PREFIX_LEN + shm::STUB_LEN);
            put_flagged(&mut self.buf, shm::STUB_FLAG, shm::STUB_LEN as u32);
            self.buf.extend_from_slice(stub);
        }
        put
    }

    /// Waits for room in the shared ring with `item` (nothing behind it may overtake it): tries it
    /// again when the reader's room frame arrives (it sends one once half the ring is free, see
    /// `shm::Producer::put`), or else when a timer fires, each wait twice the last up to
    /// [`RING_WAIT_MAX`]. A ring that stays full is back-pressure, as a full HTTP/2 window is: the
    /// queue is not read meanwhile.
    fn hold(&mut self, item: Outbound, cx: &mut Context<'_>) {
        self.held = Some(item);
        let mut wait = Box::pin(tokio::time::sleep(self.ring_wait));
        self.ring_wait = (self.ring_wait * 2).min(RING_WAIT_MAX);
        // Registers the timer with this task.
        if wait.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        self.waiting = Some(wait);
    }

    /// The held frame again (woken by its timer, or by a room frame from the reader).
    fn retry_held(&mut self, cx: &mut Context<'_>) {
        self.waiting = None;
        let Some(item) = self.held.take() else { return };
        match self.push(item) {
            Ok(None) => self.ring_wait = RING_WAIT_FIRST,
            Ok(Some(back)) => self.hold(back, cx),
            Err(status) => self.failed = Some(status),
        }
    }

    /// A client's request body.
    pub(crate) fn client(rx: mpsc::Receiver<Outbound>) -> Self {
        OutboundBody::new(rx, Ending::Client)
    }

    /// A server's response body: when the queue ends, trailers with the status `end` delivers
    /// (OK if it is dropped unsent).
    pub(crate) fn server(rx: mpsc::Receiver<Outbound>, end: oneshot::Receiver<Status>) -> Self {
        OutboundBody::new(rx, Ending::Server(end))
    }

    /// Frames `item` into `buf` (or `next`, or the shared ring); gives it back when it is for the
    /// shared ring and the ring is full (see [`Self::hold`]).
    fn push(&mut self, item: Outbound) -> Result<Option<Outbound>, Status> {
        match item {
            Outbound::Message(m) => {
                let len = m.encoded_len();
                match self.through_ring(len, |mut dst| m.encode_raw(&mut dst)) {
                    shm::Put::Sent(_) => return Ok(None),
                    shm::Put::Full => return Ok(Some(Outbound::Message(m))),
                    shm::Put::Inline => {}
                }
                if len >= LARGE_MESSAGE {
                    // Prefix and message in one buffer of exactly their size (no copy of what
                    // `buf` holds), handed over as one DATA frame after `buf`: the receiver
                    // finds the message in one frame, as tonic's encoder would have sent it.
                    let mut own = BytesMut::with_capacity(PREFIX_LEN + len);
                    put_prefix(&mut own, len)?;
                    m.encode_raw(&mut own);
                    self.next = Some(own.freeze());
                } else {
                    put_prefix(&mut self.buf, len)?;
                    self.buf.reserve(len);
                    m.encode_raw(&mut self.buf);
                }
                // `encode_raw` with the room reserved: `encode` would walk the whole message
                // again for its length, only to check a capacity a growable buffer always has.
                Ok(None)
            }
            Outbound::Encoded(bytes) => {
                match self.through_ring(bytes.len(), |dst| dst.copy_from_slice(&bytes)) {
                    shm::Put::Sent(_) => return Ok(None),
                    shm::Put::Full => return Ok(Some(Outbound::Encoded(bytes))),
                    shm::Put::Inline => {}
                }
                put_prefix(&mut self.buf, bytes.len())?;
                if bytes.len() >= LARGE_MESSAGE {
                    self.next = Some(bytes);
                } else {
                    self.buf.extend_from_slice(&bytes);
                }
                Ok(None)
            }
            Outbound::Tagged(bytes, entry) => {
                // Kept in one piece (one copy here): the next node then reads it out of one DATA
                // frame instead of gathering it from two.
                let tag = entry.as_bytes();
                let len = bytes.len() + tag.len();
                let put = self.through_ring(len, |dst| {
                    let (head, tail) = dst.split_at_mut(bytes.len());
                    head.copy_from_slice(&bytes);
                    tail.copy_from_slice(tag);
                });
                match put {
                    shm::Put::Sent(_) => return Ok(None),
                    shm::Put::Full => return Ok(Some(Outbound::Tagged(bytes, entry))),
                    shm::Put::Inline => {}
                }
                put_prefix(&mut self.buf, len)?;
                self.buf.reserve(len);
                self.buf.extend_from_slice(&bytes);
                self.buf.extend_from_slice(tag);
                Ok(None)
            }
        }
    }
}

impl hyper::body::Body for OutboundBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(pending) = &this.offered {
            let answer = pending.lock().take();
            if let Some(ring) = answer {
                this.shared = ring;
                this.offered = None;
            }
        }
        if let Some(ring) = &this.shared {
            ring.register(cx.waker());
            if ring.owes_room() {
                put_flagged(&mut this.buf, shm::ROOM_FLAG, 0);
            }
        }
        if let Some(large) = this.next.take() {
            return Poll::Ready(Some(Ok(Frame::data(large))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        if this.held.is_some() && this.failed.is_none() && this.buf.len() < PACK_LIMIT {
            this.retry_held(cx);
        }
        while this.held.is_none() && this.failed.is_none() && !this.drained && this.buf.len() < PACK_LIMIT {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(item)) => match this.push(item) {
                    Ok(None) if this.next.is_some() => break,
                    Ok(None) => {}
                    Ok(Some(back)) => this.hold(back, cx),
                    // Reported: the stream ends with this status (the peer sees the stream fail;
                    // a reliable sender retransmits on the next connection), as tonic's
                    // encoder did. Not reachable in practice: prost cannot fail on a buffer
                    // with room, and a message is far under 4 GiB (MAX_MESSAGE_SIZE).
                    Err(status) => this.failed = Some(status),
                },
                Poll::Ready(None) => this.drained = true,
                Poll::Pending => break,
            }
        }
        if !this.buf.is_empty() {
            // `next`, when set, follows at the next poll.
            return Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))));
        }
        if let Some(large) = this.next.take() {
            return Poll::Ready(Some(Ok(Frame::data(large))));
        }
        if this.held.is_some() && this.failed.is_none() {
            // Woken by the reader's room frame or the timer (see `hold`).
            return Poll::Pending;
        }
        if let Some(status) = this.failed.take() {
            this.done = true;
            return Poll::Ready(Some(match this.ending {
                Ending::Client => Err(status),
                Ending::Server(_) => trailers(&status),
            }));
        }
        if !this.drained {
            return Poll::Pending;
        }
        match &mut this.ending {
            Ending::Client => {
                this.done = true;
                Poll::Ready(None)
            }
            Ending::Server(end) => {
                let status = ready!(Pin::new(end).poll(cx)).unwrap_or_else(|_| Status::ok(""));
                this.done = true;
                Poll::Ready(Some(trailers(&status)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.next.is_none()
    }
}

/// gRPC's prefix of a message of `len` bytes (not compressed).
fn put_prefix(buf: &mut BytesMut, len: usize) -> Result<(), Status> {
    let len = u32::try_from(len)
        .map_err(|_| Status::resource_exhausted(format!("a message of {len} bytes does not fit gRPC's framing")))?;
    put_flagged(buf, 0, len);
    Ok(())
}

/// A 5-byte prefix with flag byte `flag` (0 for a gRPC message; a shared-memory stub or room
/// frame otherwise, see `shm`) and length `len`.
fn put_flagged(buf: &mut BytesMut, flag: u8, len: u32) {
    buf.reserve(PREFIX_LEN);
    buf.put_u8(flag);
    buf.put_u32(len);
}

/// A server stream's last frame: its status as gRPC trailers.
fn trailers(status: &Status) -> Result<Frame<Bytes>, Status> {
    let mut headers = tonic::codegen::http::HeaderMap::new();
    status.add_header(&mut headers)?;
    Ok(Frame::trailers(headers))
}

/// An [`OutboundBody`] carried in a request's or response's extensions past tonic, which builds
/// the request/response around an empty message stream; the body replaces tonic's (see
/// `transport`).
#[derive(Clone)]
pub(crate) struct OutboundSlot(Arc<Mutex<Option<OutboundBody>>>);

impl OutboundSlot {
    pub(crate) fn new(body: OutboundBody) -> Self {
        OutboundSlot(Arc::new(Mutex::new(Some(body))))
    }

    /// The body (once).
    pub(crate) fn take(&self) -> Option<OutboundBody> {
        self.0.lock().take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::codec::{Inbound, InboundStream, Reading};
    use crate::wire::builders::{Flags, subscribe};
    use crate::wire::{Message, Name};
    use futures::StreamExt as _;
    use http_body_util::{BodyExt as _, StreamBody};

    fn message(tag: &str, pad: usize) -> Message {
        let mut m = subscribe(&Name::new("org", "ns", "me", Some(1)), &Name::new("org", "ns", tag, None), Flags::one());
        m.metadata.insert("pad".into(), "x".repeat(pad));
        m
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_shared_ring_holds_frames_back_in_order_until_its_reader_frees_room() {
        let (producer, consumer, _memfd) = shm::test_ring();
        // Six frames of ~1 MB (the ring holds four), then a small one that must not overtake them.
        let mut sent: Vec<Message> = (0..6).map(|i| message(&format!("big{i}"), 1_000_000)).collect();
        sent.push(message("small", 10));
        let (tx, rx) = mpsc::channel(16);
        for m in &sent {
            tx.send(Outbound::Message(m.clone())).await.expect("queued");
        }
        drop(tx);
        let mut body = OutboundBody::client(rx).sharing(Some(producer));
        let (frames_tx, mut frames) = mpsc::channel::<Result<Frame<Bytes>, Status>>(16);
        tokio::spawn(async move {
            while let Some(frame) = body.frame().await {
                if frames_tx.send(frame).await.is_err() {
                    break;
                }
            }
        });
        let first = frames.recv().await.expect("a frame").expect("no error").into_data().expect("data");
        assert_eq!(first.len(), 4 * (PREFIX_LEN + shm::STUB_LEN), "four stubs: the fifth frame waits for room");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), frames.recv()).await.is_err(),
            "nothing goes out while the ring is full, not even the small message"
        );
        // The reader frees room as it reads: everything arrives, in order, each large one by its ring.
        let rest = tokio_stream::wrappers::ReceiverStream::new(frames);
        let all = futures::stream::once(async move { Ok(Frame::data(first)) }).chain(rest);
        let mut inbound = InboundStream::new(tonic::body::Body::new(StreamBody::new(all)), 8 << 20, Reading::Request);
        inbound.share(consumer);
        for want in &sent {
            let Ok(Some(Inbound::Message(got, _))) = inbound.message().await else { panic!("no message") };
            assert_eq!(&got, want);
        }
        assert!(matches!(inbound.message().await, Ok(None)), "then the body ends");
    }
}
