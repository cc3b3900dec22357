//! The codec of the data plane's one RPC: a frame that does not decode as a `Message` is
//! reported as such (the stream carries on, see `transport`), and a message a node forwards
//! unchanged is written as the bytes it was read as, or those bytes and a mesh tag entry (see
//! `Inner::deliver`). Messages are read off the HTTP/2 body by [`InboundStream`] (no copy of a
//! message that arrived in one DATA frame) and written to it by [`OutboundBody`] (no copy of a
//! large frame the node forwards). docs/protocol.md, "Transport", says how they are framed.

use std::sync::Arc;

use http_body_util::BodyExt as _;
use parking_lot::Mutex;
use prost::Message as _;
use prost::bytes::{Buf, BufMut, Bytes, BytesMut};
use tonic::Status;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::header::RouteView;
use super::mesh::tag::TagEntry;
use super::shm;
use crate::wire::Message;

/// One decoded frame: a message with its encoding as received, or bytes that are not a `Message`.
// The routing view is the large variant and the common one on a node's accepted links: boxing it
// would cost an allocation per message passing through.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Inbound {
    /// The message, and the frame it was decoded from (shares the receive buffer: no copy).
    Message(Message, Bytes),
    /// A publish a node can route by its routing fields alone (see `header`), and its frame: the
    /// frame decodes as a `Message`, which is done only where something needs more than its bytes
    /// (see `Inner::process_routable`).
    Routable(RouteView, Bytes),
    Malformed(prost::DecodeError),
}

impl Inbound {
    /// What `frame` is: a publish the node can route without decoding it (the common case: a
    /// message passing through), else the decoded message, else malformed.
    pub(crate) fn read(frame: Bytes) -> Inbound {
        if let Some(view) = RouteView::parse(&frame)
            && view.forwardable()
        {
            return Inbound::Routable(view, frame);
        }
        Inbound::decode(frame)
    }

    /// `frame` decoded: the message, or malformed.
    pub(crate) fn decode(frame: Bytes) -> Inbound {
        match crate::wire::quick::decode_frame(frame.clone()) {
            Ok(m) => Inbound::Message(m, frame),
            Err(e) => Inbound::Malformed(e),
        }
    }
}

/// What a remote connection's outbound queue carries.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A message to encode.
    Message(Message),
    /// A message forwarded exactly as it was received (its encoding, not re-encoded): a node
    /// passing a message between two remote connections changes nothing in it that is on the
    /// wire (see `Inner::deliver`), so it writes the bytes it read.
    Encoded(Bytes),
    /// A message forwarded as received with a mesh tag entry appended (a node passing a message
    /// on to the next mesh node: see `Inner::deliver` and docs/mesh.md, "Forwarding": the tag on the wire).
    Tagged(Bytes, TagEntry),
}

impl From<Message> for Outbound {
    fn from(m: Message) -> Self {
        Outbound::Message(m)
    }
}

/// Encodes [`Outbound`], decodes [`Inbound`] (never fails on bad bytes). Both halves only run on
/// the empty bodies tonic is given in place of the real ones (see [`InboundStream`] and
/// [`OutboundBody`]): tonic's plumbing needs a codec.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LenientCodec;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MessageEncoder;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LenientDecoder;

impl Codec for LenientCodec {
    type Encode = Outbound;
    type Decode = Inbound;
    type Encoder = MessageEncoder;
    type Decoder = LenientDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        MessageEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        LenientDecoder
    }
}

impl Encoder for MessageEncoder {
    type Item = Outbound;
    type Error = Status;

    fn encode(&mut self, item: Outbound, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Outbound::Message(m) => {
                // One allocation up front: growing the buffer while encoding copies a large
                // payload several times. With the room reserved, `encode_raw` writes the message
                // (`encode` would first walk the whole message again for its length, only to
                // check a capacity that a growable buffer always has).
                buf.reserve(m.encoded_len());
                m.encode_raw(buf);
                Ok(())
            }
            Outbound::Encoded(bytes) => {
                buf.put_slice(&bytes);
                Ok(())
            }
            Outbound::Tagged(bytes, entry) => {
                buf.reserve(bytes.len() + entry.as_bytes().len());
                buf.put_slice(&bytes);
                buf.put_slice(entry.as_bytes());
                Ok(())
            }
        }
    }
}

impl Decoder for LenientDecoder {
    type Item = Inbound;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Inbound>, Status> {
        // The whole frame, split off the receive buffer (no copy); the payload of the decoded
        // message is a slice of it, and a node can forward it as it is.
        let frame = buf.copy_to_bytes(buf.remaining());
        match crate::wire::quick::decode_frame(frame.clone()) {
            Ok(m) => Ok(Some(Inbound::Message(m, frame))),
            Err(e) => Ok(Some(Inbound::Malformed(e))),
        }
    }
}

/// gRPC's length prefix: a compression flag, then the message's length (big-endian u32).
pub(super) const PREFIX_LEN: usize = 5;

/// A prefix's flag byte and length.
fn prefix_fields(prefix: &[u8]) -> (u8, usize) {
    (prefix[0], u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize)
}

/// A stream's request or response body, taken out of the request/response before tonic wraps it
/// (see [`InboundStream`]): tonic then decodes an empty body, and we read the real one.
#[derive(Clone)]
pub(crate) struct RawBody(Arc<Mutex<Option<Body>>>);

impl RawBody {
    pub(crate) fn new(body: Body) -> Self {
        RawBody(Arc::new(Mutex::new(Some(body))))
    }

    /// The body (once).
    pub(crate) fn take(&self) -> Option<Body> {
        self.0.lock().take()
    }
}

/// Which end of the stream reads (as tonic's decoder: a request body cancelled by its client is a
/// clean end, and only a response carries the peer's final status in its trailers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    Request,
    Response,
}

/// The messages of one stream, read straight off its HTTP/2 body. Each DATA frame arrives as its
/// own buffer; a message that lies within one is a slice of it (no copy), one split over several
/// is gathered once. tonic's decoder copies every frame into a buffer of its own and, when a
/// whole message arrived in one frame, grows that buffer to twice the message (a second copy)
/// before decoding: two copies of every large message on each receiving side (benches/README.md,
/// "Large messages"). What it checks, this checks too: a message over `max` bytes ends the stream
/// with `OutOfRange` (see `transport::read_stream`), a compressed one (never negotiated) with
/// `Internal`, a body that ends inside a message with `Internal`; a response's trailers with a
/// non-OK `grpc-status` are returned as that status.
pub(crate) struct InboundStream {
    body: Body,
    /// Unread bytes of the current DATA frame.
    chunk: Bytes,
    /// Length of the current DATA frame, as it arrived.
    frame_len: usize,
    max: usize,
    reading: Reading,
    ended: bool,
    /// Publishes are read as [`Inbound::Routable`] (see [`Self::route_by_view`]).
    by_view: bool,
    /// Where small messages are copied out of their DATA frames (see [`Self::split`]).
    arena: BytesMut,
    /// The ring large frames arrive through, when the stream shares memory with its peer (see
    /// `shm`): a message flagged [`shm::STUB_FLAG`] says where in it the frame lies.
    shared: Option<shm::Consumer>,
}

/// Size of the blocks small messages are copied into (see [`InboundStream::split`]).
const ARENA_BLOCK: usize = 4096;
/// Largest message copied into a block; a larger one gets a buffer of its own size.
const ARENA_MESSAGE: usize = 1024;

impl InboundStream {
    pub(crate) fn new(body: Body, max: usize, reading: Reading) -> Self {
        InboundStream {
            body,
            chunk: Bytes::new(),
            frame_len: 0,
            max,
            reading,
            ended: false,
            by_view: false,
            arena: BytesMut::new(),
            shared: None,
        }
    }

    /// The stream of the body a request or response carries as [`RawBody`] in its extensions
    /// (an ended stream when there is none).
    pub(crate) fn from_extensions(extensions: &tonic::Extensions, max: usize, reading: Reading) -> Self {
        match extensions.get::<RawBody>().and_then(RawBody::take) {
            Some(body) => InboundStream::new(body, max, reading),
            None => InboundStream {
                body: Body::empty(),
                chunk: Bytes::new(),
                frame_len: 0,
                max,
                reading,
                ended: true,
                by_view: false,
                arena: BytesMut::new(),
                shared: None,
            },
        }
    }

    /// Large frames may come through `ring` from now on (the peer took or made the offer).
    pub(crate) fn share(&mut self, ring: shm::Consumer) {
        self.shared = Some(ring);
    }

    /// Whether a publish the node can route by its header is read as [`Inbound::Routable`]
    /// (checked, not decoded: see [`Inbound::read`]) or decoded at once. Only worth it where most
    /// messages pass through: reading the header costs about what the decode saves on a message
    /// the node decodes anyway (one for an app in its process).
    pub(crate) fn route_by_view(&mut self, on: bool) {
        self.by_view = on;
    }

    /// Which end of the stream this reads.
    pub(crate) fn reading(&self) -> Reading {
        self.reading
    }

    /// The next message; `Ok(None)` at the end of the stream.
    pub(crate) async fn message(&mut self) -> Result<Option<Inbound>, Status> {
        let Some(prefix) = self.take(PREFIX_LEN, true).await? else { return Ok(None) };
        let (mut flag, mut len) = prefix_fields(&prefix);
        // Room frames (the peer freed half of the ring this end writes) carry no message.
        while flag == shm::ROOM_FLAG
            && len == 0
            && let Some(ring) = self.shared.as_ref()
        {
            ring.room_said();
            let Some(prefix) = self.take(PREFIX_LEN, true).await? else { return Ok(None) };
            (flag, len) = prefix_fields(&prefix);
        }
        if flag == shm::STUB_FLAG && self.shared.is_some() && len == shm::STUB_LEN {
            let Some(stub) = self.take(len, false).await? else {
                return Err(Status::internal("Unexpected EOF decoding stream."));
            };
            let ring = self.shared.as_mut().ok_or_else(|| Status::internal("no shared memory on this stream"))?;
            // A stub that points outside the ring is as malformed as a bad prefix: the stream ends
            // with this status, and what was in flight on it goes as on any link that breaks
            // (RECOVERED for reliable sessions, retransmitted on the next stream: reliability.md).
            let frame = ring.take(&stub).map_err(|e| Status::internal(format!("protocol error: {e}")))?;
            return Ok(Some(if self.by_view { Inbound::read(frame) } else { Inbound::decode(frame) }));
        }
        if flag != 0 {
            return Err(Status::internal(format!(
                "protocol error: message with compression flag {flag}, but no compression was negotiated"
            )));
        }
        if len > self.max {
            return Err(Status::out_of_range(format!(
                "Error, decoded message length too large: found {len} bytes, the limit is: {} bytes",
                self.max
            )));
        }
        let Some(frame) = self.take(len, false).await? else {
            return Err(Status::internal("Unexpected EOF decoding stream."));
        };
        Ok(Some(if self.by_view { Inbound::read(frame) } else { Inbound::decode(frame) }))
    }

    /// The next `n` bytes: from the current DATA frame when it holds them (see [`Self::split`]),
    /// else gathered from the frames that follow. `None` when the body ends before the first byte
    /// of them and `at_boundary` (a clean end between messages: `n` is a prefix); an error when it
    /// ends inside them.
    async fn take(&mut self, n: usize, at_boundary: bool) -> Result<Option<Bytes>, Status> {
        if self.chunk.len() >= n {
            return Ok(Some(self.split(n, at_boundary)));
        }
        let mut gathered = BytesMut::new();
        loop {
            if gathered.is_empty() && self.chunk.len() >= n {
                return Ok(Some(self.split(n, at_boundary)));
            }
            let missing = n - gathered.len();
            if self.chunk.len() >= missing {
                gathered.extend_from_slice(&self.chunk.split_to(missing));
                return Ok(Some(gathered.freeze()));
            }
            if !self.chunk.is_empty() {
                if gathered.is_empty() {
                    gathered.reserve(n);
                }
                gathered.extend_from_slice(&self.chunk);
                self.chunk = Bytes::new();
            }
            match self.next_chunk().await? {
                Some(c) => {
                    self.frame_len = c.len();
                    self.chunk = c;
                }
                None if at_boundary && gathered.is_empty() => return Ok(None),
                None => return Err(Status::internal("Unexpected EOF decoding stream.")),
            }
        }
    }

    /// The next `n` bytes of the current DATA frame. A message that is at least half of its DATA
    /// frame (a large one, alone in it) is a slice of it: no copy. A smaller one is copied out,
    /// because a slice keeps the whole frame (up to the frame size, 1 MiB by default) alive as
    /// long as the message is held — in a link's queue, a retransmission buffer — and a queue of
    /// small messages, each from a different packed frame, would hold far more than the
    /// messages' own bytes. Messages of up to [`ARENA_MESSAGE`] bytes are copied one after the
    /// other into shared blocks of [`ARENA_BLOCK`] bytes: two allocations per block (the buffer
    /// and, at its first split, its shared header), not two per message (the copy's own, and the
    /// shared header a `Bytes` made from a `Vec` allocates when it is first cloned or sliced:
    /// together ~7% of a mesh node's samples in a 100-byte stream). What a held message keeps is
    /// then at most its block (4 KiB, however small the message); a larger message is copied
    /// into a buffer of its own, so that it keeps at most twice its size. A prefix is read and
    /// dropped at once, so it is never copied.
    fn split(&mut self, n: usize, prefix: bool) -> Bytes {
        let part = self.chunk.split_to(n);
        if self.chunk.is_empty() {
            // Let go of the frame's buffer now (not when the next frame arrives): h2's read
            // buffer can then be reused in place instead of reallocated.
            self.chunk = Bytes::new();
        }
        if prefix || n.saturating_mul(2) >= self.frame_len {
            return part;
        }
        if n > ARENA_MESSAGE {
            return Bytes::copy_from_slice(&part);
        }
        if self.arena.capacity() - self.arena.len() < n {
            self.arena = BytesMut::with_capacity(ARENA_BLOCK);
        }
        self.arena.extend_from_slice(&part);
        self.arena.split().freeze()
    }

    /// The next non-empty DATA frame; `None` at the end of the body (its trailers checked).
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Status> {
        while !self.ended {
            match self.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => return Ok(Some(data)),
                    Err(frame) => {
                        if let Some(status) = frame.trailers_ref().and_then(Status::from_header_map)
                            && self.reading == Reading::Response
                            && status.code() != tonic::Code::Ok
                        {
                            self.ended = true;
                            return Err(status);
                        }
                    }
                },
                Some(Err(status)) => {
                    self.ended = true;
                    if self.reading == Reading::Request && status.code() == tonic::Code::Cancelled {
                        return Ok(None);
                    }
                    return Err(status);
                }
                None => self.ended = true,
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::outbound::{LARGE_MESSAGE, OutboundBody};
    use crate::wire::Name;
    use crate::wire::builders::{Flags, subscribe};
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use tokio::sync::{mpsc, oneshot};

    fn message(tag: &str) -> Message {
        let name = Name::new("org", "ns", tag, Some(7));
        let mut m = subscribe(&Name::new("org", "ns", "me", Some(1)), &name, Flags::one());
        m.metadata.insert("pad".into(), tag.repeat(200));
        m
    }

    fn grpc_frame(m: &Message) -> Vec<u8> {
        let body = m.encode_to_vec();
        let mut out = vec![0u8];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn body(frames: Vec<Frame<Bytes>>, end: Option<Status>) -> Body {
        let mut items: Vec<Result<Frame<Bytes>, Status>> = frames.into_iter().map(Ok).collect();
        items.extend(end.map(Err));
        Body::new(StreamBody::new(futures::stream::iter(items)))
    }

    fn data(chunks: Vec<Vec<u8>>) -> Vec<Frame<Bytes>> {
        chunks.into_iter().map(|c| Frame::data(Bytes::from(c))).collect()
    }

    async fn read_all(mut s: InboundStream) -> (Vec<Message>, Option<Status>) {
        let mut out = Vec::new();
        for _ in 0..100 {
            match s.message().await {
                Ok(Some(Inbound::Message(m, frame))) => {
                    assert_eq!(Message::decode(frame).unwrap(), m, "the frame is the message's encoding");
                    out.push(m);
                }
                Ok(Some(Inbound::Routable(_, frame))) => out.push(Message::decode(frame).unwrap()),
                Ok(Some(Inbound::Malformed(e))) => panic!("malformed: {e}"),
                Ok(None) => return (out, None),
                Err(status) => return (out, Some(status)),
            }
        }
        panic!("stream did not end");
    }

    #[tokio::test]
    async fn messages_whole_split_and_packed_are_read_in_order() {
        let (a, b, c) = (message("a"), message("b"), message("c"));
        let (fa, fb, fc) = (grpc_frame(&a), grpc_frame(&b), grpc_frame(&c));
        // a: one frame of its own; b: prefix split from its body and the body cut in three; c:
        // packed with b's last piece.
        let mut chunks = vec![fa.clone(), fb[..3].to_vec(), fb[3..40].to_vec(), fb[40..90].to_vec()];
        let mut last = fb[90..].to_vec();
        last.extend_from_slice(&fc);
        chunks.push(last);
        let s = InboundStream::new(body(data(chunks), None), MAX, Reading::Request);
        let (got, end) = read_all(s).await;
        assert_eq!(got, vec![a, b, c]);
        assert!(end.is_none());
    }

    const MAX: usize = 1 << 20;

    #[tokio::test]
    async fn a_message_in_one_frame_is_not_copied() {
        let a = message("a");
        let fa = Bytes::from(grpc_frame(&a));
        let within = fa.as_ptr() as usize..fa.as_ptr() as usize + fa.len();
        let mut s = InboundStream::new(body(vec![Frame::data(fa.clone())], None), MAX, Reading::Request);
        let Ok(Some(Inbound::Message(_, frame))) = s.message().await else { panic!("no message") };
        assert!(within.contains(&(frame.as_ptr() as usize)), "the frame is a slice of the DATA frame");
    }

    #[tokio::test]
    async fn small_messages_packed_in_one_frame_are_copied_out_of_it() {
        // Ten messages in one DATA frame: a slice would keep the whole frame alive for each.
        let all: Vec<Message> = (0..10).map(|i| message(&format!("m{i}"))).collect();
        let packed = Bytes::from(all.iter().flat_map(grpc_frame).collect::<Vec<u8>>());
        let within = packed.as_ptr() as usize..packed.as_ptr() as usize + packed.len();
        let mut s = InboundStream::new(body(vec![Frame::data(packed.clone())], None), MAX, Reading::Request);
        let mut frames = Vec::new();
        for want in &all {
            let Ok(Some(Inbound::Message(m, frame))) = s.message().await else { panic!("no message") };
            assert_eq!(&m, want);
            assert!(!within.contains(&(frame.as_ptr() as usize)), "a small message is copied out of its frame");
            frames.push(frame);
        }
        assert!(matches!(s.message().await, Ok(None)));
        // Copied one after the other into 4 KiB blocks: ~450 bytes each, so 10 take 2 blocks.
        let contiguous = frames.windows(2).filter(|w| w[0].as_ptr() as usize + w[0].len() == w[1].as_ptr() as usize);
        assert_eq!(contiguous.count(), frames.len() - 2, "one new block for ten messages");
        assert!(frames.iter().all(|f| f.len() <= ARENA_MESSAGE));
    }

    #[tokio::test]
    async fn mid_sized_messages_packed_in_one_frame_get_buffers_of_their_own() {
        // Over ARENA_MESSAGE and under half their DATA frame: each copied into its own buffer.
        let all: Vec<Message> = (0..4).map(|i| message(&format!("{i}").repeat(8))).collect();
        let packed = Bytes::from(all.iter().flat_map(grpc_frame).collect::<Vec<u8>>());
        let mut s = InboundStream::new(body(vec![Frame::data(packed.clone())], None), MAX, Reading::Request);
        let mut frames = Vec::new();
        for want in &all {
            let Ok(Some(Inbound::Message(m, frame))) = s.message().await else { panic!("no message") };
            assert_eq!(&m, want);
            assert!(frame.len() > ARENA_MESSAGE && frame.len() * 2 < packed.len());
            frames.push(frame);
        }
        let within =
            |f: &Bytes, p: *const u8| (f.as_ptr() as usize..f.as_ptr() as usize + f.len()).contains(&(p as usize));
        assert!(frames.iter().all(|f| !within(&packed, f.as_ptr())));
        assert!(frames.windows(2).all(|w| w[0].as_ptr() as usize + w[0].len() != w[1].as_ptr() as usize));
    }

    #[tokio::test]
    async fn oversized_compressed_and_truncated_messages_end_the_stream() {
        let a = message("a");
        let fa = grpc_frame(&a);
        let s = InboundStream::new(body(data(vec![fa.clone()]), None), fa.len() - 6, Reading::Request);
        let (got, end) = read_all(s).await;
        assert!(got.is_empty());
        assert_eq!(end.map(|s| s.code()), Some(tonic::Code::OutOfRange));

        let mut compressed = fa.clone();
        compressed[0] = 1;
        let (_, end) = read_all(InboundStream::new(body(data(vec![compressed]), None), MAX, Reading::Request)).await;
        assert_eq!(end.map(|s| s.code()), Some(tonic::Code::Internal));

        let truncated = fa[..fa.len() - 1].to_vec();
        let (_, end) = read_all(InboundStream::new(body(data(vec![truncated]), None), MAX, Reading::Request)).await;
        assert_eq!(end.map(|s| s.code()), Some(tonic::Code::Internal));

        let (_, end) =
            read_all(InboundStream::new(body(data(vec![fa[..3].to_vec()]), None), MAX, Reading::Request)).await;
        assert_eq!(end.map(|s| s.code()), Some(tonic::Code::Internal), "a body that ends inside a prefix");
    }

    fn big(tag: &str) -> Message {
        let mut m = message(tag);
        m.metadata.insert("big".into(), tag.repeat(LARGE_MESSAGE));
        m
    }

    /// Every frame `body` yields until it ends (bounded).
    async fn frames_of(mut body: OutboundBody) -> Vec<Frame<Bytes>> {
        let mut out = Vec::new();
        for _ in 0..100 {
            match body.frame().await {
                Some(Ok(f)) => out.push(f),
                Some(Err(status)) => panic!("body failed: {status}"),
                None => return out,
            }
        }
        panic!("body did not end");
    }

    #[tokio::test]
    async fn outbound_messages_read_back_in_order_a_large_forwarded_frame_not_copied() {
        let (small, large, encoded_large, encoded_small) = (message("s"), big("l"), big("e"), message("t"));
        let forwarded = Bytes::from(encoded_large.encode_to_vec());
        let (tx, rx) = mpsc::channel(8);
        for item in [
            Outbound::Message(small.clone()),
            Outbound::Encoded(forwarded.clone()),
            Outbound::Message(large.clone()),
            Outbound::Encoded(Bytes::from(encoded_small.encode_to_vec())),
        ] {
            tx.send(item).await.unwrap();
        }
        drop(tx);
        let frames = frames_of(OutboundBody::client(rx)).await;
        let data: Vec<Bytes> =
            frames.into_iter().map(|f| f.into_data().expect("a client body has no trailers")).collect();
        // [small, prefix], [forwarded frame], [prefix, large], [prefix, small]
        assert_eq!(data.len(), 4, "a large message is a DATA frame of its own");
        assert_eq!(data[1].as_ptr(), forwarded.as_ptr(), "the forwarded frame is sent as it is");
        assert_eq!(data[2].len(), PREFIX_LEN + large.encoded_len(), "an encoded large message: its prefix and itself");
        let body = body(data.iter().cloned().map(Frame::data).collect(), None);
        let mut s = InboundStream::new(body, MAX, Reading::Request);
        for (want, alone) in [
            (&small, None),
            (&encoded_large, Some(&data[1])),
            (&large, Some(&data[2].slice(PREFIX_LEN..))),
            (&encoded_small, None),
        ] {
            let Ok(Some(Inbound::Message(m, frame))) = s.message().await else { panic!("no message") };
            assert_eq!(&m, want);
            if let Some(chunk) = alone {
                assert_eq!(frame.as_ptr(), chunk.as_ptr(), "a large message is read as a slice of its DATA frame");
            }
        }
        assert!(matches!(s.message().await, Ok(None)));
    }

    #[tokio::test]
    async fn a_server_body_ends_with_trailers_ok_or_the_status_it_is_given() {
        for given in [None, Some(Status::out_of_range("too large"))] {
            let (tx, rx) = mpsc::channel(8);
            let (end_tx, end_rx) = oneshot::channel();
            tx.send(Outbound::Message(message("a"))).await.unwrap();
            drop(tx);
            match &given {
                Some(status) => end_tx.send(status.clone()).unwrap(),
                None => drop(end_tx),
            }
            let mut frames = frames_of(OutboundBody::server(rx, end_rx)).await;
            let last = frames.pop().expect("frames").into_trailers().expect("trailers last");
            let status = Status::from_header_map(&last).expect("a status in the trailers");
            assert_eq!(status.code(), given.map_or(tonic::Code::Ok, |s| s.code()));
            assert_eq!(frames.len(), 1);
        }
    }

    #[tokio::test]
    async fn a_response_ends_with_its_trailers_status_and_a_cancelled_request_cleanly() {
        let a = message("a");
        let mut trailers = tonic::codegen::http::HeaderMap::new();
        Status::out_of_range("too large").add_header(&mut trailers).unwrap();
        let mut frames = data(vec![grpc_frame(&a)]);
        frames.push(Frame::trailers(trailers.clone()));
        let (got, end) = read_all(InboundStream::new(body(frames, None), MAX, Reading::Response)).await;
        assert_eq!(got, vec![a.clone()]);
        let end = end.expect("the trailers' status");
        assert_eq!((end.code(), end.message()), (tonic::Code::OutOfRange, "too large"));

        let mut ok = tonic::codegen::http::HeaderMap::new();
        Status::ok("").add_header(&mut ok).unwrap();
        let frames = vec![Frame::data(Bytes::from(grpc_frame(&a))), Frame::trailers(ok)];
        let (got, end) = read_all(InboundStream::new(body(frames, None), MAX, Reading::Response)).await;
        assert_eq!((got.len(), end.map(|s| s.code())), (1, None));

        let cancelled = Some(Status::cancelled("client went away"));
        let s = InboundStream::new(body(data(vec![grpc_frame(&a)]), cancelled.clone()), MAX, Reading::Request);
        let (got, end) = read_all(s).await;
        assert_eq!((got.len(), end.map(|s| s.code())), (1, None));
        let s = InboundStream::new(body(data(vec![grpc_frame(&a)]), cancelled), MAX, Reading::Response);
        let (_, end) = read_all(s).await;
        assert_eq!(end.map(|s| s.code()), Some(tonic::Code::Cancelled));
    }
}
