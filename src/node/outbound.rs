//! Writing a stream: [`OutboundBody`], the HTTP/2 body of both ends of a data-plane stream, which
//! frames each queued [`Outbound`] as a gRPC message without tonic's encoder (no copy of a large
//! frame the node forwards), and [`OutboundSlot`], which carries it past tonic's plumbing.
//! docs/protocol.md, "Transport", says how messages sit in DATA frames.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use hyper::body::Frame;
use parking_lot::Mutex;
use prost::Message as _;
use prost::bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::codec::{Outbound, PREFIX_LEN};

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
}

impl OutboundBody {
    fn new(rx: mpsc::Receiver<Outbound>, ending: Ending) -> Self {
        // Room for a burst of small messages (as tonic's encoder had): when the handed-over part
        // of the buffer is still in flight, the next batch gets a fresh buffer of at least this
        // size instead of growing one from nothing.
        let buf = BytesMut::with_capacity(OUTBOUND_BUFFER);
        OutboundBody { rx, ending, buf, next: None, failed: None, drained: false, done: false }
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

    fn push(&mut self, item: Outbound) -> Result<(), Status> {
        match item {
            Outbound::Message(m) => {
                let len = m.encoded_len();
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
                Ok(())
            }
            Outbound::Encoded(bytes) => {
                put_prefix(&mut self.buf, bytes.len())?;
                if bytes.len() >= LARGE_MESSAGE {
                    self.next = Some(bytes);
                } else {
                    self.buf.extend_from_slice(&bytes);
                }
                Ok(())
            }
            Outbound::Tagged(bytes, entry) => {
                // Kept in one piece (one copy here): the next node then reads it out of one DATA
                // frame instead of gathering it from two.
                let tag = entry.as_bytes();
                put_prefix(&mut self.buf, bytes.len() + tag.len())?;
                self.buf.reserve(bytes.len() + tag.len());
                self.buf.extend_from_slice(&bytes);
                self.buf.extend_from_slice(tag);
                Ok(())
            }
        }
    }
}

impl hyper::body::Body for OutboundBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(large) = this.next.take() {
            return Poll::Ready(Some(Ok(Frame::data(large))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        while this.failed.is_none() && !this.drained && this.buf.len() < PACK_LIMIT {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(item)) => match this.push(item) {
                    Ok(()) if this.next.is_some() => break,
                    Ok(()) => {}
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
    buf.reserve(PREFIX_LEN);
    buf.put_u8(0);
    buf.put_u32(len);
    Ok(())
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
