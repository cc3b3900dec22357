//! The mesh tag: one metadata entry a message carries while it travels between mesh nodes
//! (docs/mesh.md, "Forwarding"). Removed before the message leaves the mesh (to an app or a leaf),
//! so no app, ours or 0.6.0, ever sees it.
//!
//! Value: `<target>/<hops>`, where target is the egress node's id in hex (one-instance delivery,
//! chosen by the first mesh node), `*` (all-instance delivery along the shared tree) or `-` (an
//! explicit route sent it here; resolve again), and hops counts the mesh links crossed so far.

use std::fmt::Write as _;

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
        let (t, h) = text.split_once('/')?;
        let hops = h.parse().ok()?;
        let target = match t {
            "*" => Target::Tree,
            "-" => Target::Resolve,
            hex => Target::Node(u64::from_str_radix(hex, 16).ok()?),
        };
        Some(Tag { target, hops })
    }

    /// Writes the tag value into `out` (cleared first, so its allocation is reused).
    pub(crate) fn write(&self, out: &mut String) {
        out.clear();
        let _ = match self.target {
            Target::Node(n) => write!(out, "{n:x}/{}", self.hops),
            Target::Tree => write!(out, "*/{}", self.hops),
            Target::Resolve => write!(out, "-/{}", self.hops),
        };
    }

    /// The tag value as a new string.
    #[cfg(test)]
    pub(crate) fn text(&self) -> String {
        let mut s = String::with_capacity(24);
        self.write(&mut s);
        s
    }
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
        assert_eq!(Tag::parse("*"), None);
        assert_eq!(Tag::parse("*/-1"), None);
    }
}
