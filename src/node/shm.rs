//! Large frames through shared memory between two processes of one host (docs/protocol.md,
//! "Shared memory on one host").
//!
//! A client that dials a loopback endpoint offers a region: a sealed memfd holding two byte rings,
//! one per direction, named in the `slim-shm` request header as `<pid>.<fd>.<token>`. A server
//! that allows it, reached over loopback, opens the region through `/proc/<pid>/fd/<fd>`, checks
//! that it is such a memfd, sealed, of the right size and carrying the token, and answers
//! `slim-shm: 1` in its response headers. From then on, on that stream only, each end writes a
//! frame of [`MIN_FRAME`] bytes or more into its outbound ring when the ring has room for it, and
//! sends in its place a stub: a gRPC message whose flag byte is [`STUB_FLAG`] and whose
//! [`STUB_LEN`] bytes say where the frame lies (position, length). The reader copies the frame
//! out, moves its ring's tail past it, and goes on as if the frame had come over the socket.
//!
//! Nothing can be lost on this path, so it has no drop point: a frame too small or too large for
//! a ring goes over the socket as before (same stream, so order is kept); a frame that finds its
//! ring full waits, and everything queued behind it (back-pressure: `outbound::OutboundBody::hold`),
//! until the reader's room frame ([`ROOM_FLAG`]) or a timer; stubs are read in stream order, so a
//! ring is freed in the order it was filled; a stub that does not lie where the ring can hold a
//! frame is a protocol error that ends the stream, as a malformed prefix does. A peer that does
//! not know the header (0.6.0) never answers it, and its streams carry every frame inline.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::task::Waker;

use futures::task::AtomicWaker;

use prost::bytes::Bytes;
use tonic::metadata::MetadataMap;

use super::stats::NodeStats;

/// The header of the offer (request) and of its acceptance (response, value [`ACCEPTED`]).
pub(crate) const HEADER: &str = "slim-shm";
/// The acceptance's value.
pub(crate) const ACCEPTED: &str = "1";
/// The flag byte of a stub (gRPC's own flag is 0 or 1: compressed or not).
pub(crate) const STUB_FLAG: u8 = 0x80;
/// The flag byte of a room frame (no bytes after its prefix): half of the ring the receiver
/// writes is free again, as it asked (see [`Producer::put`]).
pub(crate) const ROOM_FLAG: u8 = 0x81;
/// A stub's length: the frame's position in its ring (u64) and its length (u32), big-endian.
pub(crate) const STUB_LEN: usize = 12;
/// Each ring's size. A stream that uses the region holds its pages (both rings: 8 MiB) once as
/// many large frames have passed; a stream that carries none touches none of them.
pub(crate) const RING: usize = 4 << 20;
/// The smallest frame that goes through a ring (below it, the stub and the copies cost about
/// what the socket does: small frames are packed together on it).
pub(crate) const MIN_FRAME: usize = 16 * 1024;
/// The largest frame that goes through a ring (a larger one would leave room for few others).
pub(crate) const MAX_FRAME: usize = RING / 4;

/// What the region starts with: this, then the token.
const MAGIC: [u8; 8] = *b"SLIMSHM1";
const TOKEN_AT: usize = 8;
const TOKEN_LEN: usize = 16;
/// Where each ring's tail (u64, what its reader has copied out) lies: a cache line each.
const TAIL_AT: [usize; 2] = [64, 128];
/// Where each ring's writer asks to be told of room (u64: its head when it found the ring full,
/// 0 when it asks nothing).
const ASK_AT: [usize; 2] = [192, 256];
/// Where the rings start.
const RINGS_AT: usize = 4096;
const SIZE: usize = RINGS_AT + 2 * RING;
/// The memfd's name; `/proc/<pid>/fd/<fd>` of it reads `/memfd:slim-shm (deleted)`.
const MEMFD_NAME: &std::ffi::CStr = c"slim-shm";

/// Which ring: the client's frames to the server, or the server's to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ring {
    Up = 0,
    Down = 1,
}

/// Which end of the stream: the client writes the up ring and reads the down one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// The ring one end of the stream writes, and the one it reads.
pub(crate) fn ends(region: Arc<Region>, side: Side) -> (Producer, Consumer) {
    let (out, inn) = match side {
        Side::Client => (Ring::Up, Ring::Down),
        Side::Server => (Ring::Down, Ring::Up),
    };
    let local = Arc::new(Local::default());
    (Producer::new(region.clone(), out, local.clone()), Consumer::new(region, inn, local))
}

/// What one process's two ends of a stream share: the stream's outbound body is woken to send a
/// room frame (the ring this process reads has a writer waiting, and half of it is free now) or
/// to try its held frame again (the peer said there is room in the ring this process writes).
#[derive(Default)]
pub(crate) struct Local {
    owe_room: AtomicBool,
    body: AtomicWaker,
}

/// The region, mapped (unmapped when the last holder lets go). Whatever the other process writes
/// into it can only garble the frames that process sends: every position read from it is checked
/// against the ring's bounds, and a frame is copied out before it is used.
pub(crate) struct Region {
    base: NonNull<u8>,
    stats: Arc<NodeStats>,
}

// SAFETY: the mapping is owned by `Region` alone and lives until it drops; what is shared through
// it is read and written through raw pointers and atomics only (see `Producer` and `Consumer`).
#[allow(unsafe_code)]
unsafe impl Send for Region {}
// SAFETY: as for `Send`: `&Region` gives no access that is not through raw pointers or atomics.
#[allow(unsafe_code)]
unsafe impl Sync for Region {}

#[allow(unsafe_code)]
impl Region {
    fn map(file: &File, stats: Arc<NodeStats>) -> io::Result<Region> {
        // SAFETY: a fresh shared mapping of the whole file, whose size was checked (or set) by the
        // caller and sealed against shrinking: no access through it can fault.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Region { base, stats })
    }

    fn tail(&self, ring: Ring) -> &AtomicU64 {
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned); the u64 there is only
        // ever accessed atomically.
        unsafe { &*self.base.as_ptr().add(TAIL_AT[ring as usize]).cast::<AtomicU64>() }
    }

    fn ask(&self, ring: Ring) -> &AtomicU64 {
        // SAFETY: as for `tail`.
        unsafe { &*self.base.as_ptr().add(ASK_AT[ring as usize]).cast::<AtomicU64>() }
    }

    fn ring(&self, ring: Ring) -> *mut u8 {
        // SAFETY: in bounds of the mapping.
        unsafe { self.base.as_ptr().add(RINGS_AT + ring as usize * RING) }
    }

    fn header(&self) -> &[u8] {
        // SAFETY: the first bytes of the mapping, written once by the offering side before the
        // offer was sent.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), TOKEN_AT + TOKEN_LEN) }
    }
}

#[allow(unsafe_code)]
impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, no longer referenced (this was its last holder).
        unsafe { libc::munmap(self.base.as_ptr().cast(), SIZE) };
    }
}

/// A client's offer: the region, and the memfd it is in (kept open until the server has answered,
/// so that it can open it; closed then, the mapping lives on).
pub(crate) struct Offer {
    _file: File,
    region: Arc<Region>,
    value: String,
}

impl Offer {
    /// A fresh region to offer, when `endpoint` is on this host (a loopback address) and a
    /// region can be made; `None` otherwise (the stream then carries every frame inline).
    pub(crate) fn for_endpoint(endpoint: &str, stats: &Arc<NodeStats>) -> Option<Offer> {
        if !is_loopback_endpoint(endpoint) {
            return None;
        }
        Offer::create(stats.clone())
            .map_err(|e| tracing::debug!(error = %e, "no shared memory for this stream: inline frames only"))
            .ok()
    }

    #[cfg(not(target_os = "linux"))]
    fn create(_stats: Arc<NodeStats>) -> io::Result<Offer> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "memfd is Linux's"))
    }

    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn create(stats: Arc<NodeStats>) -> io::Result<Offer> {
        // SAFETY: a plain system call with a valid C string.
        let fd = unsafe { libc::memfd_create(MEMFD_NAME.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(SIZE as u64)?;
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: a plain system call on our own descriptor.
        if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let region = Region::map(&file, stats)?;
        let token: [u8; TOKEN_LEN] = rand::random();
        // SAFETY: the start of our fresh mapping, which nobody else has yet.
        unsafe {
            let base = region.base.as_ptr();
            std::ptr::copy_nonoverlapping(MAGIC.as_ptr(), base, MAGIC.len());
            std::ptr::copy_nonoverlapping(token.as_ptr(), base.add(TOKEN_AT), TOKEN_LEN);
        }
        let value = format!("{}.{fd}.{}", std::process::id(), hex(&token));
        Ok(Offer { _file: file, region: Arc::new(region), value })
    }

    /// The offer in the stream request's headers.
    pub(crate) fn insert_into(&self, md: &mut MetadataMap) {
        if let Ok(v) = self.value.parse() {
            md.insert(HEADER, v);
        }
    }

    /// The region, when the server's response `md` accepted it (the memfd is closed either way).
    pub(crate) fn answered(self, md: &MetadataMap) -> Option<Arc<Region>> {
        let accepted = md.get(HEADER).is_some_and(|v| v == ACCEPTED);
        accepted.then_some(self.region)
    }
}

/// The region a stream request offers, when this server allows shared memory (`enabled`), the
/// request came over loopback (`peer`) and the offer checks out; `None` otherwise, and the
/// stream carries every frame inline. When `Some`, the response must say [`accept`].
pub(crate) fn accept_offer(
    md: &MetadataMap,
    peer: Option<std::net::SocketAddr>,
    enabled: bool,
    stats: &Arc<NodeStats>,
) -> Option<Arc<Region>> {
    let value = md.get(HEADER)?.to_str().ok()?;
    if !enabled || !peer.is_some_and(|p| p.ip().is_loopback()) {
        return None;
    }
    open_offer(value, stats.clone())
        .map_err(|e| tracing::debug!(offer = value, error = %e, "shared memory offer declined: inline frames only"))
        .ok()
        .map(Arc::new)
}

/// Says in the response headers that the offer was taken.
pub(crate) fn accept(md: &mut MetadataMap) {
    md.insert(HEADER, tonic::metadata::MetadataValue::from_static(ACCEPTED));
}

#[cfg(not(target_os = "linux"))]
fn open_offer(_value: &str, _stats: Arc<NodeStats>) -> io::Result<Region> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "memfd is Linux's"))
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn open_offer(value: &str, stats: Arc<NodeStats>) -> io::Result<Region> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    let mut parts = value.split('.');
    let (Some(pid), Some(fd), Some(token), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad("not <pid>.<fd>.<token>"));
    };
    let pid: u32 = pid.parse().map_err(|_| bad("pid"))?;
    let fd: u32 = fd.parse().map_err(|_| bad("fd"))?;
    let token = unhex(token).ok_or_else(|| bad("token"))?;
    let path = format!("/proc/{pid}/fd/{fd}");
    // Only ever a memfd made by `Offer::create`: opening anything else could have side effects.
    let target = std::fs::read_link(&path)?;
    if !target.to_string_lossy().starts_with("/memfd:slim-shm") {
        return Err(bad("not a slim-shm memfd"));
    }
    let file = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(&path)?;
    // SAFETY: a plain system call on our own descriptor.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 || seals & (libc::F_SEAL_SHRINK | libc::F_SEAL_GROW) != libc::F_SEAL_SHRINK | libc::F_SEAL_GROW {
        return Err(bad("not sealed: it could shrink under the mapping"));
    }
    if file.metadata()?.len() != SIZE as u64 {
        return Err(bad("wrong size"));
    }
    let region = Region::map(&file, stats)?;
    let header = region.header();
    // Compared in constant time: how long a refusal takes says nothing about the token.
    let differs = header[TOKEN_AT..].iter().zip(token).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if header[..MAGIC.len()] != MAGIC || differs != 0 {
        return Err(bad("wrong token"));
    }
    Ok(region)
}

/// `http://127.0.0.1:port`, `http://localhost:port`, `http://[::1]:port` (and https).
fn is_loopback_endpoint(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.rsplit_once(':') {
        Some((h, _)) => h,
        None => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; TOKEN_LEN]> {
    if s.len() != 2 * TOKEN_LEN || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; TOKEN_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Where [`Producer::put`] left a frame.
#[derive(Debug)]
pub(crate) enum Put {
    /// In the ring: send this stub in its place.
    Sent([u8; STUB_LEN]),
    /// Not a frame for the ring (too small or too large for it): send it inline.
    Inline,
    /// The ring has no room for it now: wait for its reader.
    Full,
}

/// The writing end of one ring (one per stream, driven by its outbound body).
pub(crate) struct Producer {
    region: Arc<Region>,
    ring: Ring,
    /// Where the next frame goes (a position: grows forever, taken modulo [`RING`]).
    head: u64,
    local: Arc<Local>,
}

#[allow(unsafe_code)]
impl Producer {
    pub(crate) fn new(region: Arc<Region>, ring: Ring, local: Arc<Local>) -> Self {
        Producer { region, ring, head: 0, local }
    }

    /// The outbound body's task, woken when a room frame is owed or room was said.
    pub(crate) fn register(&self, waker: &Waker) {
        self.local.body.register(waker);
    }

    /// Whether a room frame is owed to the peer (true once per owed frame).
    pub(crate) fn owes_room(&self) -> bool {
        self.local.owe_room.swap(false, Ordering::AcqRel)
    }

    /// Room `len` bytes need at `head` given the reader's `tail`: the skip before the frame (a
    /// frame is never split at the ring's end), or `None` when they do not fit now. `Err` for a
    /// tail no reader can have written (past the head, or behind it by more than the ring).
    fn room(&self, tail: u64, len: usize) -> Result<Option<usize>, ()> {
        let used = self.head.checked_sub(tail).filter(|u| *u <= RING as u64).ok_or(())?;
        let at = (self.head % RING as u64) as usize;
        let skip = if at + len <= RING { 0 } else { RING - at };
        Ok((used + (skip + len) as u64 <= RING as u64).then_some(skip))
    }

    /// Writes a frame of `len` bytes into the ring with `fill` (which must fill the slice it is
    /// given) and returns the stub to send in its place; nothing is written when the frame is not
    /// one for the ring or the ring has no room for it now.
    pub(crate) fn put(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Put {
        if !(MIN_FRAME..=MAX_FRAME).contains(&len) {
            return Put::Inline;
        }
        // A tail only a broken reader writes: waiting for it could be forever, so inline.
        let skip = match self.room(self.region.tail(self.ring).load(Ordering::SeqCst), len) {
            Ok(Some(skip)) => skip,
            Err(()) => return Put::Inline,
            Ok(None) => {
                // Ask the reader to say when half the ring is free, then look again: it may have
                // freed room before it could see the ask (it reads the ask after storing its
                // tail, this reads the tail after storing the ask; both sequentially consistent).
                let ask = self.region.ask(self.ring);
                ask.store(self.head, Ordering::SeqCst);
                match self.room(self.region.tail(self.ring).load(Ordering::SeqCst), len) {
                    Ok(Some(skip)) => {
                        // A room frame may still come for this ask: it only wakes the body.
                        ask.store(0, Ordering::SeqCst);
                        skip
                    }
                    Ok(None) => return Put::Full,
                    Err(()) => return Put::Inline,
                }
            }
        };
        let start = self.head + skip as u64;
        let offset = (start % RING as u64) as usize;
        // SAFETY: `offset + len <= RING`, inside this ring, in the part its reader is done with
        // (between its tail and our head, nothing is read): ours alone until the stub is sent.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.region.ring(self.ring).add(offset), len) };
        fill(dst);
        // The frame's bytes before the stub that points at them (the stub goes through a socket:
        // a system call, which orders them anyway).
        fence(Ordering::Release);
        self.head = start + len as u64;
        self.region.stats.shared_frames_sent.fetch_add(1, Ordering::Relaxed);
        let mut stub = [0u8; STUB_LEN];
        stub[..8].copy_from_slice(&start.to_be_bytes());
        stub[8..].copy_from_slice(&(len as u32).to_be_bytes());
        Put::Sent(stub)
    }
}

/// The reading end of one ring (one per stream, driven by its inbound stream).
pub(crate) struct Consumer {
    region: Arc<Region>,
    ring: Ring,
    /// Everything before this position has been copied out.
    tail: u64,
    local: Arc<Local>,
}

#[allow(unsafe_code)]
impl Consumer {
    pub(crate) fn new(region: Arc<Region>, ring: Ring, local: Arc<Local>) -> Self {
        Consumer { region, ring, tail: 0, local }
    }

    /// The peer said there is room in the ring this process writes: its held frame can go.
    pub(crate) fn room_said(&self) {
        self.local.body.wake();
    }

    /// The frame `stub` points at, copied out of the ring (whose room is then the writer's
    /// again); an error when the stub does not point where the writer can have put a frame.
    pub(crate) fn take(&mut self, stub: &[u8]) -> Result<Bytes, String> {
        let stub: &[u8; STUB_LEN] = stub.try_into().map_err(|_| format!("a stub is {STUB_LEN} bytes"))?;
        let (pos, len) = stub.split_at(8);
        let pos = u64::from_be_bytes(pos.try_into().unwrap_or_default());
        let len = u32::from_be_bytes(len.try_into().unwrap_or_default()) as usize;
        let offset = (pos % RING as u64) as usize;
        let within = pos >= self.tail
            && (MIN_FRAME..=MAX_FRAME).contains(&len)
            && offset + len <= RING
            && pos - self.tail + len as u64 <= RING as u64;
        if !within {
            return Err(format!("shared-memory stub out of its ring (position {pos}, {len} bytes)"));
        }
        fence(Ordering::Acquire);
        // SAFETY: `offset + len <= RING`: inside this ring, written by the other end before it
        // sent the stub, and not written again until the tail below passes it.
        let frame = Bytes::copy_from_slice(unsafe {
            std::slice::from_raw_parts(self.region.ring(self.ring).add(offset).cast_const(), len)
        });
        self.tail = pos + len as u64;
        self.region.tail(self.ring).store(self.tail, Ordering::SeqCst);
        self.region.stats.shared_frames_received.fetch_add(1, Ordering::Relaxed);
        // The writer waits (see `Producer::put`): once half the ring is free, this stream's body
        // sends it a room frame.
        let ask = self.region.ask(self.ring);
        let asked = ask.load(Ordering::SeqCst);
        if asked != 0
            && asked.saturating_sub(self.tail) <= (RING / 2) as u64
            && ask.compare_exchange(asked, 0, Ordering::SeqCst, Ordering::Relaxed).is_ok()
        {
            self.local.owe_room.store(true, Ordering::Release);
            self.local.body.wake();
        }
        Ok(frame)
    }
}

/// A client's up ring: its writing end, and its reading end as a server opens it (through
/// /proc); the offer keeps the memfd open.
#[cfg(test)]
pub(crate) fn test_ring() -> (Producer, Consumer, Offer) {
    let stats = Arc::new(NodeStats::default());
    let offer = Offer::create(stats.clone()).expect("memfd");
    let theirs = Arc::new(open_offer(&offer.value, stats).expect("the offer opens"));
    let (mine, yours) = (Arc::default(), Arc::default());
    (Producer::new(offer.region.clone(), Ring::Up, mine), Consumer::new(theirs, Ring::Up, yours), offer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Producer, Consumer, Offer) {
        test_ring()
    }

    fn frame(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    }

    #[test]
    fn frames_cross_in_order_and_wrap_around_the_ring() {
        let (mut p, mut c, _offer) = pair();
        let len = 300_000; // not a divisor of the ring: frames skip its end
        for i in 0..100 {
            let want = frame(i, len);
            let Put::Sent(stub) = p.put(len, |d| d.copy_from_slice(&want)) else { panic!("room: the reader keeps up") };
            assert_eq!(c.take(&stub).expect("a good stub"), want);
        }
        assert!(p.head > 5 * RING as u64, "went round the ring");
    }

    #[test]
    fn a_full_ring_has_room_again_once_its_reader_frees_some() {
        let (mut p, mut c, _offer) = pair();
        let mut stubs = Vec::new();
        while let Put::Sent(stub) = p.put(MAX_FRAME, |d| d.fill(stubs.len() as u8)) {
            stubs.push(stub);
            assert!(stubs.len() <= 4, "the ring holds four of the largest frames");
        }
        assert_eq!(stubs.len(), 4);
        assert!(matches!(p.put(MAX_FRAME, |d| d.fill(9)), Put::Full), "full: no room until the reader frees some");
        assert_eq!(c.take(&stubs[0]).expect("first").len(), MAX_FRAME);
        assert!(matches!(p.put(MAX_FRAME, |d| d.fill(9)), Put::Sent(_)), "room again once the first is read");
        for (i, stub) in stubs.iter().enumerate().skip(1) {
            assert!(c.take(stub).expect("in order").iter().all(|b| *b == i as u8));
        }
    }

    #[test]
    fn a_writer_that_finds_the_ring_full_is_told_once_half_of_it_is_free() {
        let (mut p, mut c, _offer) = pair();
        let stubs: Vec<_> = (0..4)
            .map(|_| match p.put(MAX_FRAME, |d| d.fill(1)) {
                Put::Sent(stub) => stub,
                other => panic!("room for four: {other:?}"),
            })
            .collect();
        assert!(matches!(p.put(MAX_FRAME, |d| d.fill(1)), Put::Full));
        c.take(&stubs[0]).expect("first");
        assert!(!c.local.owe_room.load(Ordering::SeqCst), "a quarter free: not yet");
        c.take(&stubs[1]).expect("second");
        assert!(c.local.owe_room.swap(false, Ordering::SeqCst), "half free: a room frame is owed, once");
        c.take(&stubs[2]).expect("third");
        assert!(!c.local.owe_room.load(Ordering::SeqCst), "the ask was answered");
        assert!(matches!(p.put(MAX_FRAME, |d| d.fill(1)), Put::Sent(_)));
    }

    #[test]
    fn frames_outside_the_rings_bounds_are_refused() {
        let (mut p, mut c, _offer) = pair();
        assert!(matches!(p.put(MIN_FRAME - 1, |_| {}), Put::Inline), "small frames go inline");
        assert!(matches!(p.put(MAX_FRAME + 1, |_| {}), Put::Inline), "very large ones too");
        let Put::Sent(stub) = p.put(MIN_FRAME, |d| d.fill(1)) else { panic!("room") };
        let forged = |pos: u64, len: u32| {
            let mut s = [0u8; STUB_LEN];
            s[..8].copy_from_slice(&pos.to_be_bytes());
            s[8..].copy_from_slice(&len.to_be_bytes());
            s
        };
        for bad in [
            forged(RING as u64 - 10, MIN_FRAME as u32), // across the ring's end
            forged(0, (MAX_FRAME + 1) as u32),
            forged(0, 5),
            forged(2 * RING as u64, MIN_FRAME as u32), // further than the writer can be ahead
        ] {
            assert!(c.take(&bad).is_err());
        }
        assert!(c.take(&stub[..5]).is_err());
        assert!(c.take(&stub).is_ok(), "the good one still reads after the refusals");
        assert!(c.take(&stub).is_err(), "behind the tail: read already");
    }

    #[test]
    fn offers_that_do_not_check_out_are_declined() {
        let stats = Arc::new(NodeStats::default());
        let offer = Offer::create(stats.clone()).expect("memfd");
        let (pid, rest) = offer.value.split_once('.').unwrap();
        let (fd, _) = rest.split_once('.').unwrap();
        let wrong_token = format!("{pid}.{fd}.{}", "00".repeat(TOKEN_LEN));
        assert!(open_offer(&wrong_token, stats.clone()).is_err());
        let stdin = format!("{pid}.0.{}", "00".repeat(TOKEN_LEN));
        assert!(open_offer(&stdin, stats.clone()).is_err(), "not a memfd");
        for garbage in ["", "1.2", "x.y.z", "1.2.3.4", &format!("{pid}.{fd}.zz")] {
            assert!(open_offer(garbage, stats.clone()).is_err(), "{garbage}");
        }
        assert!(open_offer(&offer.value, stats).is_ok());
    }

    #[test]
    fn only_loopback_endpoints_are_offered_a_region() {
        for yes in ["http://127.0.0.1:1", "https://localhost:2", "http://[::1]:3", "http://127.1.2.3:4/"] {
            assert!(is_loopback_endpoint(yes), "{yes}");
        }
        for no in ["http://10.0.0.1:1", "http://example.com:2", "http://[fe80::1]:3"] {
            assert!(!is_loopback_endpoint(no), "{no}");
        }
    }
}
