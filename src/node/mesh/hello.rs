//! How two of our nodes recognise each other on a link (docs/mesh.md, "Links").
//!
//! The dialing side adds one gRPC header to `OpenChannel`: `slim-link: v1 id=<16 hex> caps=<list>
//! label=<text>`. The accepting side answers with its own header in the response headers, and only
//! when the request carried one. A 0.6.0 node ignores a request header it does not know, and sends
//! none back, so each side knows from the headers alone what the other understands; nothing is
//! ever sent on the stream that a 0.6.0 peer would have to parse.

use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// The header name (gRPC metadata keys are lowercase ASCII).
pub const HEADER: &str = "slim-link";

/// What one end of a link says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The node's random id for this run.
    pub node: u64,
    /// Takes part in the mesh (link state, routing for others).
    pub mesh: bool,
    /// Understands route-error notices (a "no matching found" sent back over the link).
    pub notify: bool,
    /// The node's label (its configured node id), for operators.
    pub label: String,
}

impl Hello {
    /// The header value.
    pub fn encode(&self) -> String {
        let mut caps = Vec::new();
        if self.mesh {
            caps.push("mesh");
        }
        if self.notify {
            caps.push("notify");
        }
        format!("v1 id={:016x} caps={} label={}", self.node, caps.join(","), sanitize(&self.label))
    }

    /// Parses a header value; `None` when it is not one of ours (a future version, garbage).
    pub fn decode(text: &str) -> Option<Hello> {
        let mut parts = text.split(' ');
        if parts.next()? != "v1" {
            return None;
        }
        let (mut node, mut caps, mut label) = (None, "", String::new());
        for p in parts {
            if let Some(v) = p.strip_prefix("id=") {
                node = u64::from_str_radix(v, 16).ok();
            } else if let Some(v) = p.strip_prefix("caps=") {
                caps = v;
            } else if let Some(v) = p.strip_prefix("label=") {
                label = v.to_string();
            }
        }
        let has = |c: &str| caps.split(',').any(|x| x == c);
        Some(Hello { node: node?, mesh: has("mesh"), notify: has("notify"), label })
    }

    /// Adds this hello to request or response metadata.
    pub fn insert_into(&self, md: &mut MetadataMap) {
        if let Ok(v) = AsciiMetadataValue::try_from(self.encode()) {
            md.insert(HEADER, v);
        }
    }

    /// The peer's hello from request or response metadata, if it sent one.
    pub fn from_metadata(md: &MetadataMap) -> Option<Hello> {
        md.get(HEADER).and_then(|v| v.to_str().ok()).and_then(Hello::decode)
    }
}

/// Labels travel in a header: keep printable ASCII without spaces.
fn sanitize(label: &str) -> String {
    let s: String = label.chars().map(|c| if c.is_ascii_graphic() && c != ',' { c } else { '_' }).take(64).collect();
    if s.is_empty() { "-".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_metadata() {
        let h = Hello { node: 0xfeed_0000_0000_0001, mesh: true, notify: true, label: "node a/é".into() };
        let mut md = MetadataMap::new();
        h.insert_into(&mut md);
        let back = Hello::from_metadata(&md).unwrap();
        assert_eq!(back.node, h.node);
        assert!(back.mesh && back.notify);
        assert_eq!(back.label, "node_a/_");
        let leaf = Hello { node: 5, mesh: false, notify: true, label: String::new() };
        let back = Hello::decode(&leaf.encode()).unwrap();
        assert!(!back.mesh && back.notify);
        assert_eq!(back.label, "-");
    }

    #[test]
    fn unknown_versions_and_garbage_are_not_hellos() {
        assert_eq!(Hello::decode("v2 id=01 caps=mesh"), None);
        assert_eq!(Hello::decode("v1 caps=mesh"), None);
        assert_eq!(Hello::decode("v1 id=zz"), None);
        assert_eq!(Hello::from_metadata(&MetadataMap::new()), None);
        // Unknown capabilities and fields are ignored (a newer peer).
        let h = Hello::decode("v1 id=0a caps=mesh,teleport extra=1").unwrap();
        assert_eq!((h.node, h.mesh, h.notify), (10, true, false));
    }
}
