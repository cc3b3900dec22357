//! The mesh tag: one metadata entry a message carries while it travels between mesh nodes
//! (docs/mesh.md, "Forwarding"; its bytes: "The tag on the wire"). Removed before the message
//! leaves the mesh (to an app or a leaf), so no app, ours or 0.6.0, ever sees it.
//!
//! Value: `<target>/<hops>`, where target is the egress node's id in hex (one-instance delivery,
//! chosen by the first mesh node), `*` (all-instance delivery along the shared tree) or `-` (an
//! explicit route sent it here; resolve again), and hops counts the mesh links crossed so far.

use prost::bytes::Bytes;

/// Metadata key of the tag.
pub(crate) const META_MESH: &str = "SLIM_MESH";

/// Where a message is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// One instance, at this egress node.
    Node(u64),
    /// Every subscriber, along the tree.
    Tree,
    /// Resolve by name at the next node.
    Resolve,
}

/// A parsed tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tag {
    /// Where the message is bound.
    pub target: Target,
    /// Mesh links crossed so far.
    pub hops: u32,
}

impl Tag {
    /// Parses a tag value; `None` for anything malformed.
    pub(crate) fn parse(text: &str) -> Option<Tag> {
        // What our nodes write (see `put_value`), read byte by byte; anything else (a `+` sign,
        // leading zeros past the widths, ...) goes to the general parse below, which decides.
        if let Some(t) = Self::parse_plain(text.as_bytes()) {
            return Some(t);
        }
        let (t, h) = text.split_once('/')?;
        let hops = h.parse().ok()?;
        let target = match t {
            "*" => Target::Tree,
            "-" => Target::Resolve,
            hex => Target::Node(u64::from_str_radix(hex, 16).ok()?),
        };
        Some(Tag { target, hops })
    }

    /// `<1-16 hex digits or * or ->/<1-10 decimal digits>` (the hops within u32), else `None`
    /// (then [`Tag::parse`] reads it the general way: same result for every text this accepts).
    fn parse_plain(text: &[u8]) -> Option<Tag> {
        let slash = text.iter().position(|&b| b == b'/')?;
        let (t, h) = (&text[..slash], &text[slash + 1..]);
        if h.is_empty() || h.len() > 10 {
            return None;
        }
        let mut hops = 0u64;
        for &b in h {
            if !b.is_ascii_digit() {
                return None;
            }
            hops = hops * 10 + u64::from(b - b'0');
        }
        let hops = u32::try_from(hops).ok()?;
        let target = match t {
            b"*" => Target::Tree,
            b"-" => Target::Resolve,
            hex if !hex.is_empty() && hex.len() <= 16 => {
                let mut n = 0u64;
                for &b in hex {
                    let d = match b {
                        b'0'..=b'9' => b - b'0',
                        b'a'..=b'f' => b - b'a' + 10,
                        b'A'..=b'F' => b - b'A' + 10,
                        _ => return None,
                    };
                    n = (n << 4) | u64::from(d);
                }
                Target::Node(n)
            }
            _ => return None,
        };
        Some(Tag { target, hops })
    }

    /// Writes the tag value into `out` (cleared first, so its allocation is reused).
    pub(crate) fn write(&self, out: &mut String) {
        out.clear();
        let mut value = [0u8; MAX_VALUE];
        let n = self.put_value(&mut value);
        // ASCII only (hex and decimal digits, `*`, `-`, `/`).
        out.push_str(std::str::from_utf8(&value[..n]).unwrap_or_default());
    }

    /// Writes the tag value (`{target:x}/{hops}`, `*/{hops}`, `-/{hops}`) into `out`; returns its
    /// length. By hand: `format!` machinery was ~1.5% of a node's CPU in a stream (one per
    /// forwarded message).
    fn put_value(&self, out: &mut [u8; MAX_VALUE]) -> usize {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut at = 0;
        match self.target {
            Target::Node(n) => {
                let digits = (16 - (n.leading_zeros() as usize) / 4).max(1);
                for i in 0..digits {
                    out[digits - 1 - i] = HEX[((n >> (4 * i)) & 0xf) as usize];
                }
                at = digits;
            }
            Target::Tree | Target::Resolve => {
                out[0] = if self.target == Target::Tree { b'*' } else { b'-' };
                at += 1;
            }
        }
        out[at] = b'/';
        at += 1;
        let mut hops = self.hops;
        let mut dec = [0u8; 10];
        let mut k = dec.len();
        loop {
            k -= 1;
            dec[k] = b'0' + (hops % 10) as u8;
            hops /= 10;
            if hops == 0 {
                break;
            }
        }
        let tail = &dec[k..];
        out[at..at + tail.len()].copy_from_slice(tail);
        at + tail.len()
    }

    /// The tag value as a new string.
    #[cfg(test)]
    pub(crate) fn text(&self) -> String {
        let mut s = String::with_capacity(24);
        self.write(&mut s);
        s
    }
}

/// Field number of `Message.metadata` (proto/dataplane.proto): a top-level field of the message,
/// one length-delimited `MapEntry { string key = 1; string value = 2; }` per entry.
const METADATA_FIELD: u32 = 4;
/// Largest encoded tag entry: field key, length, key `SLIM_MESH` and a value of at most 16 hex
/// digits, `/` and 10 digits of hops.
const MAX_ENTRY: usize = 48;
/// Longest tag value: 16 hex digits, `/`, 10 decimal digits.
const MAX_VALUE: usize = 27;

/// A mesh tag encoded as one `metadata` entry of a `Message`, ready to be appended to an encoded
/// message (docs/mesh.md, "Forwarding": the tag on the wire): a protobuf map may repeat a key and the decoder
/// keeps the last entry, so a frame followed by this entry decodes as the message with the tag set.
#[derive(Clone, Copy)]
pub(crate) struct TagEntry {
    buf: [u8; MAX_ENTRY],
    len: u8,
}

impl std::fmt::Debug for TagEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TagEntry").field(&String::from_utf8_lossy(self.as_bytes())).finish()
    }
}

impl TagEntry {
    /// The encoded entry of `tag`.
    pub(crate) fn new(tag: &Tag) -> TagEntry {
        let key = META_MESH.as_bytes();
        // Field key and length of the entry, then the entry: key (field 1) and value (field 2),
        // both length-delimited. The value goes in last, its length byte filled in after.
        let mut e = TagEntry { buf: [0; MAX_ENTRY], len: 0 };
        e.put(&[((METADATA_FIELD << 3) | 2) as u8, 0, 0x0a, key.len() as u8]);
        e.put(key);
        e.put(&[0x12, 0]);
        let value_at = e.len;
        // At most MAX_VALUE bytes: always fits.
        let mut value = [0u8; MAX_VALUE];
        let n = tag.put_value(&mut value);
        e.put(&value[..n]);
        e.buf[usize::from(value_at) - 1] = e.len - value_at;
        e.buf[1] = e.len - 2;
        e
    }

    fn put(&mut self, bytes: &[u8]) {
        let at = usize::from(self.len);
        self.buf[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len() as u8;
    }

    /// The entry's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// `frame` (an encoded `Message`) without its mesh tag entries: the frame itself when it has none,
/// a slice of it (no copy) when they all follow its last other field, which is where [`TagEntry`]
/// puts them. `None` otherwise (an entry among other fields: only a sender that put `SLIM_MESH` in
/// its own metadata does that) or when the frame's top level does not parse (it decoded, so never
/// in practice): the caller encodes the decoded message again.
pub(crate) fn strip(frame: &Bytes) -> Option<Bytes> {
    // Start of the run of tag entries that reaches the end so far, and whether one came earlier.
    let mut tail: Option<usize> = None;
    let mut rest: &[u8] = frame;
    while !rest.is_empty() {
        let start = frame.len() - rest.len();
        let key = read_varint(&mut rest)?;
        let is_tag = match key & 7 {
            2 => {
                let len = usize::try_from(read_varint(&mut rest)?).ok()?;
                let body = rest.get(..len)?;
                rest = &rest[len..];
                key >> 3 == u64::from(METADATA_FIELD) && entry_key(body)? == META_MESH.as_bytes()
            }
            wire => {
                skip_scalar(wire, &mut rest)?;
                false
            }
        };
        match (is_tag, tail) {
            (true, None) => tail = Some(start),
            (false, Some(_)) => return None,
            _ => {}
        }
    }
    Some(match tail {
        Some(start) => frame.slice(..start),
        None => frame.clone(),
    })
}

/// The key of an encoded map entry (its last key field, as a decoder takes it; empty if none).
fn entry_key(mut body: &[u8]) -> Option<&[u8]> {
    let mut key: &[u8] = &[];
    while !body.is_empty() {
        let k = read_varint(&mut body)?;
        if k & 7 == 2 {
            let len = usize::try_from(read_varint(&mut body)?).ok()?;
            let v = body.get(..len)?;
            body = &body[len..];
            if k >> 3 == 1 {
                key = v;
            }
        } else {
            skip_scalar(k & 7, &mut body)?;
        }
    }
    Some(key)
}

/// Skips a field of wire type varint, 64-bit or 32-bit; `None` for any other (groups, deprecated
/// and never in this protocol, are not parsed here).
fn skip_scalar(wire: u64, buf: &mut &[u8]) -> Option<()> {
    match wire {
        0 => read_varint(buf).map(|_| ()),
        1 => buf.get(8..).map(|r| *buf = r),
        5 => buf.get(4..).map(|r| *buf = r),
        _ => None,
    }
}

/// Reads one base-128 varint off the front of `buf`.
fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for t in [
            Tag { target: Target::Node(0xdead_beef_0000_0001), hops: 3 },
            Tag { target: Target::Tree, hops: 0 },
            Tag { target: Target::Resolve, hops: 15 },
        ] {
            assert_eq!(Tag::parse(&t.text()), Some(t));
        }
        assert_eq!(Tag::parse("x/1"), None);
        // The byte-by-byte reader and the general one agree, and the writer is `format!`'s.
        for t in [
            Tag { target: Target::Node(0), hops: 0 },
            Tag { target: Target::Node(u64::MAX), hops: u32::MAX },
            Tag { target: Target::Node(0x10), hops: 10 },
            Tag { target: Target::Tree, hops: 1_000_000 },
        ] {
            let want = match t.target {
                Target::Node(n) => format!("{n:x}/{}", t.hops),
                Target::Tree => format!("*/{}", t.hops),
                Target::Resolve => format!("-/{}", t.hops),
            };
            assert_eq!(t.text(), want);
            assert_eq!(Tag::parse(&want), Some(t));
        }
        for (text, want) in [
            ("DEADBEEF/2", Some(Tag { target: Target::Node(0xdead_beef), hops: 2 })),
            ("+a/+3", Some(Tag { target: Target::Node(10), hops: 3 })),
            ("00000000000000001/1", Some(Tag { target: Target::Node(1), hops: 1 })),
            ("1/00000000001", Some(Tag { target: Target::Node(1), hops: 1 })),
            ("1/4294967296", None),
            ("10000000000000000/1", None),
            ("/1", None),
            ("1/", None),
            ("1/2/3", None),
            ("**/1", None),
        ] {
            assert_eq!(Tag::parse(text), want, "{text}");
        }
        assert_eq!(Tag::parse("*"), None);
        assert_eq!(Tag::parse("*/-1"), None);
    }

    /// The parse before the byte-by-byte fast path (`str::parse` / `from_str_radix`), kept here
    /// as the reference [`Tag::parse`] must agree with on every input.
    fn general_parse(text: &str) -> Option<Tag> {
        let (t, h) = text.split_once('/')?;
        let hops = h.parse().ok()?;
        let target = match t {
            "*" => Target::Tree,
            "-" => Target::Resolve,
            hex => Target::Node(u64::from_str_radix(hex, 16).ok()?),
        };
        Some(Tag { target, hops })
    }

    /// The writer before it went by hand.
    fn format_value(t: &Tag) -> String {
        match t.target {
            Target::Node(n) => format!("{n:x}/{}", t.hops),
            Target::Tree => format!("*/{}", t.hops),
            Target::Resolve => format!("-/{}", t.hops),
        }
    }

    fn agrees(text: &str) {
        let fast = Tag::parse(text);
        assert_eq!(fast, general_parse(text), "{text:?}");
        if let Some(t) = Tag::parse_plain(text.as_bytes()) {
            assert_eq!(Some(t), general_parse(text), "fast path {text:?}");
        }
    }

    #[test]
    fn the_fast_parse_agrees_with_the_general_one_on_every_short_text() {
        // Every string of up to 4 characters over the bytes that matter (digits, hex of both
        // cases, a non-hex letter, signs, the targets, the separator, whitespace, non-ASCII):
        // 15^0 + ... + 15^4 = 54,241 inputs.
        const ALPHABET: [&str; 15] = ["0", "1", "9", "a", "f", "F", "g", "+", "-", "*", "/", " ", "\n", "é", "\0"];
        let mut count = 0usize;
        for len in 0..=4u32 {
            for code in 0..ALPHABET.len().pow(len) {
                let mut text = String::new();
                let mut c = code;
                for _ in 0..len {
                    text.push_str(ALPHABET[c % ALPHABET.len()]);
                    c /= ALPHABET.len();
                }
                agrees(&text);
                count += 1;
            }
        }
        assert_eq!(count, 54_241);
    }

    #[test]
    fn the_fast_parse_agrees_with_the_general_one_on_long_texts() {
        let targets: Vec<String> = [
            "",
            "*",
            "-",
            "+",
            "+*",
            "*0",
            "-0",
            "+-1",
            "0",
            "00",
            "f",
            "+f",
            "ff ",
            " ff",
            "fffffffffffffff",
            "ffffffffffffffff",
            "FFFFFFFFFFFFFFFF",
            "+ffffffffffffffff",
            "1ffffffffffffffff",
            "10000000000000000",
            "0ffffffffffffffff",
            "00000000000000000000001",
            "ffffffffffffffffé",
            "deadbeef00000001",
            "DeAdBeEf",
            "0x10",
            "1_0",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain((0..=24).map(|n| "0".repeat(n) + "1"))
        .chain((1..=20).map(|n| "f".repeat(n)))
        .collect();
        let hops: Vec<String> = [
            "",
            "0",
            "+0",
            "-0",
            "+",
            "-",
            "00",
            "1",
            "+1",
            "-1",
            "01",
            "255",
            "256",
            "65535",
            "65536",
            "4294967295",
            "+4294967295",
            "04294967295",
            "4294967296",
            "9999999999",
            "99999999999",
            "18446744073709551615",
            "18446744073709551616",
            "1 ",
            " 1",
            "1\n",
            "1/",
            "/1",
            "1/2",
            "1é",
            "٣",
            "1a",
            "0x1",
            "1_000",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain((0..=24).map(|n| "0".repeat(n) + "7"))
        .chain((1..=12).map(|n| "9".repeat(n)))
        .collect();
        for t in &targets {
            for h in &hops {
                agrees(&format!("{t}/{h}"));
                agrees(&format!("{t}{h}"));
            }
        }
    }

    #[test]
    fn the_writer_is_formats_and_reads_back() {
        let mut nodes = vec![0u64, u64::MAX];
        for shift in 0..64 {
            let p = 1u64 << shift;
            nodes.extend([p - 1, p, p | 1, p.wrapping_mul(0xf)]);
        }
        let mut hops = vec![0u32, u32::MAX, u32::MAX - 1];
        let mut p = 1u32;
        for _ in 0..10 {
            hops.extend([p - 1, p, p + 1]);
            p = p.saturating_mul(10);
        }
        let mut targets: Vec<Target> = nodes.into_iter().map(Target::Node).collect();
        targets.extend([Target::Tree, Target::Resolve]);
        for &target in &targets {
            for &h in &hops {
                let t = Tag { target, hops: h };
                let want = format_value(&t);
                assert_eq!(t.text(), want);
                assert_eq!(Tag::parse(&want), Some(t), "{want}");
                let alone = Message {
                    message_type: None,
                    metadata: HashMap::from([(META_MESH.to_string(), want.clone())]),
                    identity: None,
                };
                assert_eq!(TagEntry::new(&t).as_bytes(), alone.encode_to_vec().as_slice(), "{want}");
            }
        }
    }

    use std::collections::HashMap;

    use prost::Message as _;

    use crate::wire::builders::{Flags, PublishSpec, publish};
    use crate::wire::{Message, Name, SessionMessageType, SessionType};

    /// A data message as an app sends it: every header set, a payload, user metadata.
    fn sample() -> Message {
        let (src, dst) = (Name::new("org", "ns", "alice", Some(7)), Name::new("org", "ns", "bob", None));
        let spec = PublishSpec {
            source: &src,
            destination: &dst,
            flags: Flags::one(),
            session_type: SessionType::SessionPointToPoint,
            message_type: SessionMessageType::P2PMsg,
            session_id: 42,
            message_id: 9,
            original_names: true,
            content_type: "msg",
        };
        let meta = HashMap::from([("k1".to_string(), "v1".to_string())]);
        let mut m = publish(&spec, vec![0xab; 100], meta);
        m.identity = Some("t".into());
        m
    }

    fn with_tag(m: &Message, value: &str) -> Message {
        let mut m = m.clone();
        m.metadata.insert(META_MESH.to_string(), value.to_string());
        m
    }

    fn appended(frame: &[u8], tag: &Tag) -> Bytes {
        [frame, TagEntry::new(tag).as_bytes()].concat().into()
    }

    #[test]
    fn entry_is_the_metadata_field_prost_writes() {
        for t in [
            Tag { target: Target::Node(u64::MAX), hops: u32::MAX },
            Tag { target: Target::Node(1), hops: 0 },
            Tag { target: Target::Tree, hops: 16 },
            Tag { target: Target::Resolve, hops: 1 },
        ] {
            let alone =
                Message { message_type: None, metadata: HashMap::from([(META_MESH.into(), t.text())]), identity: None };
            assert_eq!(TagEntry::new(&t).as_bytes(), alone.encode_to_vec().as_slice(), "{t:?}");
        }
    }

    #[test]
    fn appended_entry_sets_the_tag_and_keeps_every_field() {
        let m = sample();
        let frame = m.encode_to_vec();
        let t = Tag { target: Target::Node(0xdead_beef), hops: 2 };
        let got = Message::decode(appended(&frame, &t)).unwrap();
        assert_eq!(got, with_tag(&m, "deadbeef/2"));
        // On a frame that already has a tag (a node that did not strip it): the last one wins.
        let twice = appended(&appended(&frame, &Tag { target: Target::Tree, hops: 1 }), &t);
        assert_eq!(Message::decode(twice).unwrap(), with_tag(&m, "deadbeef/2"));
    }

    #[test]
    fn strip_takes_the_tail_entries_off_without_a_copy() {
        let m = sample();
        let frame = Bytes::from(m.encode_to_vec());
        let stripped = strip(&frame).unwrap();
        assert_eq!(stripped, frame, "no tag: unchanged");
        let one = appended(&frame, &Tag { target: Target::Node(3), hops: 1 });
        let two = appended(&one, &Tag { target: Target::Tree, hops: 2 });
        for tagged in [one, two] {
            let stripped = strip(&tagged).unwrap();
            assert_eq!(stripped, frame);
            assert_eq!(stripped.as_ptr(), tagged.as_ptr(), "a slice of the received frame");
            assert_eq!(Message::decode(stripped).unwrap(), m);
        }
        // The next hop's frame: stripped, its own entry appended.
        let next = appended(
            &strip(&appended(&frame, &Tag { target: Target::Tree, hops: 1 })).unwrap(),
            &Tag { target: Target::Tree, hops: 2 },
        );
        assert_eq!(next.len(), frame.len() + TagEntry::new(&Tag { target: Target::Tree, hops: 2 }).as_bytes().len());
        assert_eq!(Message::decode(next).unwrap(), with_tag(&m, "*/2"));
    }

    #[test]
    fn a_tag_a_node_encoded_with_the_token_and_no_other_entry_is_stripped_as_appended() {
        // What a mesh node sends when it encodes the message itself (an app's own message, or a
        // frame it had to decode): the tag in the metadata beside the identity token only. The
        // next mesh node takes the tag off the frame without decoding it (docs/mesh.md).
        let mut m = sample();
        m.metadata.clear();
        let frame = Bytes::from(m.encode_to_vec());
        let tagged = Bytes::from(with_tag(&m, "*/1").encode_to_vec());
        assert_eq!(strip(&tagged), Some(frame));
    }

    #[test]
    fn strip_refuses_a_tag_among_other_fields() {
        let m = sample();
        let frame = m.encode_to_vec();
        let entry = TagEntry::new(&Tag { target: Target::Tree, hops: 1 });
        // A tag before the message body, and one followed by another metadata entry.
        let other =
            Message { message_type: None, metadata: HashMap::from([("k2".into(), "v2".into())]), identity: None };
        for bytes in [[entry.as_bytes(), &frame].concat(), [&frame, entry.as_bytes(), &other.encode_to_vec()].concat()]
        {
            let bytes = Bytes::from(bytes);
            assert!(Message::decode(bytes.clone()).unwrap().metadata.contains_key(META_MESH));
            assert_eq!(strip(&bytes), None);
        }
        // Not a message: refused, no panic.
        for bad in [&[0x22, 0x05, 0x0a][..], &[0x23], &[0xff; 11], &[0x09, 1, 2]] {
            assert_eq!(strip(&Bytes::copy_from_slice(bad)), None, "{bad:?}");
        }
    }
}
