//! What a node reads of a message it only passes on: the routing fields of an encoded `Message`,
//! read straight off its bytes, without decoding (and allocating) the rest: the payload, the
//! metadata map, the session header's names (docs/protocol.md, "Node routing": what a node reads).
//!
//! A [`RouteView`] is only ever a shortcut: [`RouteView::parse`] accepts a frame only when
//! prost would decode it as a `Message` too (every field the schema knows has its wire type, every
//! string is UTF-8, every length fits; a frame with a group, which this protocol never sends, is
//! not read here), and what it reports is what the decoded message would hold (the last value of
//! a field that repeats, the last entry of a map key, nested messages merged, a oneof reset when
//! another variant follows: prost's rules). Anything it does not accept goes to the full decode,
//! which handles it exactly as before, malformed frames included.

use super::mesh::tag::{META_MESH, Tag};
use super::notice::META_ROUTE_ERROR;
use crate::wire::proto::{Name as ProtoName, SlimHeader};
use crate::wire::scan::{DELIMITED, Res, delimited, expect, key, message, skip, string, varint};

/// Which `messageType` variant a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Subscribe,
    Unsubscribe,
    Publish,
}

/// The fields of a `Message` a node routes a publish by (see the module doc).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RouteView {
    /// The `messageType` variant (None: no variant).
    pub kind: Option<Kind>,
    /// The variant's SLIM header.
    pub header: Option<SlimHeader>,
    /// A publish carries a session header.
    pub session: bool,
    /// The mesh tag (`metadata[SLIM_MESH]`, parsed; None when absent or malformed).
    pub mesh: Option<Tag>,
    /// `metadata` has a `SLIM_ROUTE_ERROR` entry.
    pub route_error: bool,
}

// Field numbers of proto/dataplane.proto.
const MSG_SUBSCRIBE: u32 = 1;
const MSG_UNSUBSCRIBE: u32 = 2;
const MSG_PUBLISH: u32 = 3;
const MSG_METADATA: u32 = 4;

impl RouteView {
    /// The routing fields of `frame`, an encoded `Message`; `None` when the frame is not one, or
    /// holds something this reader leaves to the full decode (see the module doc).
    pub(crate) fn parse(frame: &[u8]) -> Option<RouteView> {
        let mut view = RouteView::default();
        view.read(frame).ok()?;
        Some(view)
    }

    /// True when a node may route the message with this view alone: a valid publish (what
    /// `Message::validate` checks) whose SLIM header has none of the node-local fields
    /// (`recvFrom`, `forwardTo`, `incomingConn`: the node rewrites those) and that is not a
    /// route-error notice (the node rewrites those too).
    pub(crate) fn forwardable(&self) -> bool {
        let Some(h) = &self.header else { return false };
        self.kind == Some(Kind::Publish)
            && self.session
            && h.source.is_some()
            && h.destination.is_some()
            && h.recv_from.is_none()
            && h.forward_to.is_none()
            && h.incoming_conn.is_none()
            && !(h.error == Some(true) && self.route_error)
    }

    fn read(&mut self, mut buf: &[u8]) -> Res<()> {
        while !buf.is_empty() {
            let (field, wire) = key(&mut buf)?;
            let kind = match field {
                MSG_SUBSCRIBE => Kind::Subscribe,
                MSG_UNSUBSCRIBE => Kind::Unsubscribe,
                MSG_PUBLISH => Kind::Publish,
                MSG_METADATA => {
                    // A metadata field that is not length-delimited: left to the decoder (which
                    // refuses it, as prost's generated code does).
                    expect(wire, DELIMITED)?;
                    self.entry(delimited(&mut buf)?)?;
                    continue;
                }
                _ => {
                    skip(wire, &mut buf)?;
                    continue;
                }
            };
            expect(wire, DELIMITED)?;
            let body = delimited(&mut buf)?;
            // A oneof: the same variant again merges into it, another one replaces it.
            if self.kind != Some(kind) {
                self.kind = Some(kind);
                self.header = None;
                self.session = false;
            }
            match kind {
                Kind::Publish => self.publish(body)?,
                Kind::Subscribe | Kind::Unsubscribe => self.subscription(body)?,
            }
        }
        Ok(())
    }

    /// `Publish { SLIMHeader header = 1; SessionHeader session = 2; Content msg = 3; }`
    fn publish(&mut self, mut buf: &[u8]) -> Res<()> {
        while !buf.is_empty() {
            let (field, wire) = key(&mut buf)?;
            match field {
                1 => header(self.header.get_or_insert_with(SlimHeader::default), message(wire, &mut buf)?)?,
                2 => {
                    session_header(message(wire, &mut buf)?)?;
                    self.session = true;
                }
                3 => content(message(wire, &mut buf)?)?,
                _ => skip(wire, &mut buf)?,
            }
        }
        Ok(())
    }

    /// `Subscribe` / `Unsubscribe { SLIMHeader header = 1; string component_0..2 = 2..4; }`
    fn subscription(&mut self, mut buf: &[u8]) -> Res<()> {
        while !buf.is_empty() {
            let (field, wire) = key(&mut buf)?;
            match field {
                1 => header(self.header.get_or_insert_with(SlimHeader::default), message(wire, &mut buf)?)?,
                2..=4 => {
                    string(wire, &mut buf)?;
                }
                _ => skip(wire, &mut buf)?,
            }
        }
        Ok(())
    }

    /// One `metadata` entry: `{ string key = 1; string value = 2; }`, each the last given (an
    /// absent one is empty); the entry replaces an earlier one with the same key.
    fn entry(&mut self, mut buf: &[u8]) -> Res<()> {
        let (mut k, mut v) = ("", "");
        while !buf.is_empty() {
            let (field, wire) = key(&mut buf)?;
            match field {
                1 => k = string(wire, &mut buf)?,
                2 => v = string(wire, &mut buf)?,
                _ => skip(wire, &mut buf)?,
            }
        }
        if k == META_MESH {
            self.mesh = Tag::parse(v);
        } else if k == META_ROUTE_ERROR {
            self.route_error = true;
        }
        Ok(())
    }
}

/// `SLIMHeader`, merged into `h` (a header given twice is merged, as prost does).
fn header(h: &mut SlimHeader, mut buf: &[u8]) -> Res<()> {
    while !buf.is_empty() {
        let (field, wire) = key(&mut buf)?;
        match field {
            1 => name(h.source.get_or_insert_with(ProtoName::default), message(wire, &mut buf)?)?,
            2 => name(h.destination.get_or_insert_with(ProtoName::default), message(wire, &mut buf)?)?,
            // uint32: prost keeps the low 32 bits of the varint.
            3 => h.fanout = varint(wire, &mut buf)? as u32,
            4 => h.recv_from = Some(varint(wire, &mut buf)?),
            5 => h.forward_to = Some(varint(wire, &mut buf)?),
            6 => h.incoming_conn = Some(varint(wire, &mut buf)?),
            7 => h.error = Some(varint(wire, &mut buf)? != 0),
            _ => skip(wire, &mut buf)?,
        }
    }
    Ok(())
}

/// `Name { uint64 component_0..3 = 1..4; }`, merged into `n`.
fn name(n: &mut ProtoName, mut buf: &[u8]) -> Res<()> {
    while !buf.is_empty() {
        let (field, wire) = key(&mut buf)?;
        match field {
            1 => n.component_0 = varint(wire, &mut buf)?,
            2 => n.component_1 = varint(wire, &mut buf)?,
            3 => n.component_2 = varint(wire, &mut buf)?,
            4 => n.component_3 = varint(wire, &mut buf)?,
            _ => skip(wire, &mut buf)?,
        }
    }
    Ok(())
}

/// `SessionHeader`: checked, not kept (enums and ids are varints, the names `OriginalName`s).
fn session_header(mut buf: &[u8]) -> Res<()> {
    while !buf.is_empty() {
        let (field, wire) = key(&mut buf)?;
        match field {
            1..=4 => {
                varint(wire, &mut buf)?;
            }
            5 | 6 => original_name(message(wire, &mut buf)?)?,
            _ => skip(wire, &mut buf)?,
        }
    }
    Ok(())
}

/// `OriginalName { string component_0..2 = 1..3; uint64 component_3 = 4; }`: checked, not kept.
fn original_name(mut buf: &[u8]) -> Res<()> {
    while !buf.is_empty() {
        let (field, wire) = key(&mut buf)?;
        match field {
            1..=3 => {
                string(wire, &mut buf)?;
            }
            4 => {
                varint(wire, &mut buf)?;
            }
            _ => skip(wire, &mut buf)?,
        }
    }
    Ok(())
}

/// `Content { string content_type = 1; bytes blob = 2; }`: checked, not kept.
fn content(mut buf: &[u8]) -> Res<()> {
    while !buf.is_empty() {
        let (field, wire) = key(&mut buf)?;
        match field {
            1 => {
                string(wire, &mut buf)?;
            }
            2 => {
                expect(wire, DELIMITED)?;
                delimited(&mut buf)?;
            }
            _ => skip(wire, &mut buf)?,
        }
    }
    Ok(())
}

impl RouteView {
    /// What the view of a message's encoding must be.
    fn of(m: &crate::wire::Message) -> RouteView {
        use crate::wire::MessageType;
        let kind = match &m.message_type {
            Some(MessageType::Subscribe(_)) => Some(Kind::Subscribe),
            Some(MessageType::Unsubscribe(_)) => Some(Kind::Unsubscribe),
            Some(MessageType::Publish(_)) => Some(Kind::Publish),
            None => None,
        };
        RouteView {
            kind,
            header: m.slim_header().cloned(),
            session: m.session_header().is_some(),
            mesh: m.metadata.get(META_MESH).and_then(|v| Tag::parse(v)),
            route_error: m.metadata.contains_key(META_ROUTE_ERROR),
        }
    }
}

/// Checks [`RouteView::parse`] against prost on `frame` (tests and the `frame` fuzz target):
/// panics when the view reads a frame prost refuses, or reads it differently. True when the view
/// read it.
pub(crate) fn check_against_prost(frame: &[u8]) -> bool {
    use prost::Message as _;
    let Some(view) = RouteView::parse(frame) else { return false };
    match crate::wire::Message::decode(frame) {
        Ok(m) => assert_eq!(view, RouteView::of(&m), "the view differs from the decoded message: {frame:?}"),
        Err(e) => panic!("the view read a frame prost refuses ({e}): {frame:?}"),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::mesh::tag::{TagEntry, Target};
    use crate::wire::builders::{Flags, PublishSpec, publish, subscribe, unsubscribe};
    use crate::wire::{Message, Name, SessionMessageType, SessionType};
    use prost::Message as _;
    use std::collections::HashMap;

    fn samples() -> Vec<Vec<u8>> {
        let (a, b) = (Name::new("org", "ns", "alice", Some(1)), Name::new("org", "ns", "bob", None));
        let mut out = Vec::new();
        for (i, flags) in
            [Flags::one(), Flags::one().forward_to(Some(3)), Flags::one().recv_from(2)].into_iter().enumerate()
        {
            let mut meta = HashMap::new();
            meta.insert("SLIM_IDENTITY".to_string(), "token".repeat(i + 1));
            if i == 1 {
                meta.insert(META_MESH.to_string(), "1f/2".to_string());
            }
            if i == 2 {
                meta.insert(META_ROUTE_ERROR.to_string(), "no match".to_string());
            }
            let spec = PublishSpec {
                source: &a,
                destination: &b,
                session_type: SessionType::SessionPointToPoint,
                message_type: SessionMessageType::P2PReliable,
                session_id: 7,
                message_id: i as u32,
                flags,
                original_names: i != 1,
                content_type: "text/plain",
            };
            let mut m = publish(&spec, vec![0xab; 40], meta);
            if i == 2 {
                m.slim_header_mut().unwrap().error = Some(true);
            }
            out.push(m.encode_to_vec());
            out.push(subscribe(&a, &b, flags).encode_to_vec());
            out.push(unsubscribe(&a, &b, flags).encode_to_vec());
        }
        out
    }

    use crate::testing::Rng;

    fn check(frame: &[u8]) -> bool {
        check_against_prost(frame)
    }

    #[test]
    fn real_messages_read_as_prost_decodes_them() {
        for f in samples() {
            assert!(check(&f), "a real message is read: {f:?}");
        }
    }

    #[test]
    fn appended_tags_repeated_and_replaced_variants_read_as_prost_decodes_them() {
        let s = samples();
        let tag = TagEntry::new(&Tag { target: Target::Node(0xab), hops: 3 });
        let bad = TagEntry::new(&Tag { target: Target::Tree, hops: 1 });
        let cases: Vec<Vec<u8>> = vec![
            [&s[0][..], tag.as_bytes()].concat(),
            [&s[3][..], tag.as_bytes(), bad.as_bytes()].concat(),
            // A publish, then a subscribe: the subscribe replaces it; then a publish again.
            [&s[0][..], &s[1][..]].concat(),
            [&s[0][..], &s[1][..], &s[3][..]].concat(),
            // The same publish twice: merged (headers merge, the session stays).
            [&s[0][..], &s[6][..]].concat(),
            Vec::new(),
        ];
        for c in &cases {
            assert!(check(c), "read: {c:?}");
        }
        let v = RouteView::parse(&cases[0]).unwrap();
        assert_eq!(v.mesh, Some(Tag { target: Target::Node(0xab), hops: 3 }));
        assert!(v.forwardable());
        assert_eq!(RouteView::parse(&cases[2]).unwrap().kind, Some(Kind::Subscribe));
        assert!(!RouteView::parse(&s[3]).unwrap().forwardable(), "forwardTo is rewritten by the node");
        assert!(!RouteView::parse(&s[6]).unwrap().forwardable(), "recvFrom, and a notice");
    }

    #[test]
    fn frames_that_are_not_messages_are_never_read() {
        // Invalid UTF-8 in a metadata value, in the content type, in a subscription component;
        // a wrong wire type for a known field; a group; a length past the end.
        let s = samples();
        let n_read = Rng(0x9e37_79b9_7f4a_7c15).count_read(&s, 20_000, check);
        // The mutations leave many frames valid and break many: both sides were exercised.
        assert!(n_read > 1_000 && n_read < 19_000, "{n_read} of 20000 read");
        let utf8 = {
            let mut m = Message::decode(&s[0][..]).unwrap();
            m.metadata.insert("k".into(), "v".into());
            let mut f = m.encode_to_vec();
            let at = f.windows(3).position(|w| w == [0x12, 1, b'v']).unwrap() + 2;
            f[at] = 0xff;
            f
        };
        assert!(Message::decode(&utf8[..]).is_err());
        assert!(RouteView::parse(&utf8).is_none());
        // field 3 (publish) as a varint; a group (field 9, start and end).
        assert!(RouteView::parse(&[0x18, 1]).is_none());
        let group = [&s[0][..], &[0x4b, 0x4c][..]].concat();
        assert!(Message::decode(&group[..]).is_ok(), "prost skips the group");
        assert!(RouteView::parse(&group).is_none(), "and leaves it to the full decode");
    }
}
