//! Control payloads in bincode-2 `config::standard()` encoding (little-endian varints), written by
//! hand so that decoding untrusted bytes returns errors instead of panicking.
//!
//! Layouts (docs/protocol.md "Binary control payloads"):
//! `Name = { components: [u64; 4], strings: Option<[String; 3]> }`,
//! `JoinMessagePayload = { channel_name: Name, moderator_name: Name }`,
//! `MlsProposalMessagePayload = { source_name: Name, mls_msg: Vec<u8> }`.

use super::name::Name;

/// Why a control payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The payload ended in the middle of a field.
    #[error("payload truncated")]
    Truncated,
    /// A varint's first byte (the tag given) is none of 0..=250, 0xFB, 0xFC, 0xFD.
    #[error("invalid varint tag {0:#x}")]
    BadVarint(u8),
    /// An option byte (the value given) is neither 0 (absent) nor 1 (present).
    #[error("invalid option tag {0}")]
    BadOption(u8),
    /// A name component string is not valid UTF-8.
    #[error("invalid utf-8 in name string")]
    BadUtf8,
    /// A length prefix (the value given) runs past the end of the payload.
    #[error("length {0} exceeds the payload")]
    BadLength(u64),
    /// The payload goes on (this many bytes) after its last field.
    #[error("{0} trailing bytes after payload")]
    Trailing(usize),
}

/// Appends an unsigned varint.
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    if v < 251 {
        out.push(v as u8);
    } else if v <= u16::MAX as u64 {
        out.push(0xFB);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v <= u32::MAX as u64 {
        out.push(0xFC);
        out.extend_from_slice(&(v as u32).to_le_bytes());
    } else {
        out.push(0xFD);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over untrusted bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PayloadError> {
        if self.buf.len() < n {
            return Err(PayloadError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, PayloadError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, PayloadError> {
        let tag = self.byte()?;
        let mut arr = [0u8; 8];
        let n = match tag {
            0..=250 => return Ok(tag as u64),
            0xFB => 2,
            0xFC => 4,
            0xFD => 8,
            other => return Err(PayloadError::BadVarint(other)),
        };
        arr[..n].copy_from_slice(self.take(n)?);
        Ok(u64::from_le_bytes(arr))
    }

    fn bytes(&mut self) -> Result<&'a [u8], PayloadError> {
        let len = self.varint()?;
        if len > self.buf.len() as u64 {
            return Err(PayloadError::BadLength(len));
        }
        self.take(len as usize)
    }

    fn string(&mut self) -> Result<String, PayloadError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| PayloadError::BadUtf8)
    }

    fn name(&mut self) -> Result<Name, PayloadError> {
        let mut c = [0u64; 4];
        for slot in c.iter_mut() {
            *slot = self.varint()?;
        }
        let strings = match self.byte()? {
            0 => None,
            1 => Some([self.string()?, self.string()?, self.string()?]),
            other => return Err(PayloadError::BadOption(other)),
        };
        Ok(Name::from_parts(c, strings))
    }

    fn finish(self) -> Result<(), PayloadError> {
        if self.buf.is_empty() { Ok(()) } else { Err(PayloadError::Trailing(self.buf.len())) }
    }
}

/// Appends the bincode form of a name (strings included when known).
pub fn put_name(out: &mut Vec<u8>, n: &Name) {
    for c in n.components() {
        put_varint(out, c);
    }
    match n.strings() {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            for part in s.iter() {
                put_bytes(out, part.as_bytes());
            }
        }
    }
}

/// Encodes a name alone (P2P discovery probe blob, `PARTICIPANT_NAME` metadata before base64).
pub fn encode_name(n: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    put_name(&mut out, n);
    out
}

/// Decodes a name alone.
pub fn decode_name(b: &[u8]) -> Result<Name, PayloadError> {
    let mut r = Reader { buf: b };
    let n = r.name()?;
    r.finish()?;
    Ok(n)
}

/// The CHANNEL_JOIN_REQUEST payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMessagePayload {
    /// The multicast channel the invitee is asked to join.
    pub channel_name: Name,
    /// The moderator (or point-to-point initiator) that sends the invitation.
    pub moderator_name: Name,
}

impl JoinMessagePayload {
    /// bincode bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        put_name(&mut out, &self.channel_name);
        put_name(&mut out, &self.moderator_name);
        out
    }

    /// Parses untrusted bytes.
    pub fn decode(b: &[u8]) -> Result<Self, PayloadError> {
        let mut r = Reader { buf: b };
        let channel_name = r.name()?;
        let moderator_name = r.name()?;
        r.finish()?;
        Ok(Self { channel_name, moderator_name })
    }
}

/// The CHANNEL_MLS_PROPOSAL payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlsProposalMessagePayload {
    /// The member that made the proposal.
    pub source_name: Name,
    /// The serialized MLS proposal (this implementation never sends one).
    pub mls_msg: Vec<u8>,
}

impl MlsProposalMessagePayload {
    /// bincode bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.mls_msg.len());
        put_name(&mut out, &self.source_name);
        put_bytes(&mut out, &self.mls_msg);
        out
    }

    /// Parses untrusted bytes.
    pub fn decode(b: &[u8]) -> Result<Self, PayloadError> {
        let mut r = Reader { buf: b };
        let source_name = r.name()?;
        let mls_msg = r.bytes()?.to_vec();
        r.finish()?;
        Ok(Self { source_name, mls_msg })
    }
}

/// Most names a member list may carry (a larger list is refused before anything is allocated).
pub const MAX_MEMBER_NAMES: u64 = 65_536;

/// The member list a moderator's GROUP_PING carries (`Vec<Name>`: a varint count, then the names).
pub fn encode_names(names: &[Name]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 48 * names.len());
    put_varint(&mut out, names.len() as u64);
    for n in names {
        put_name(&mut out, n);
    }
    out
}

/// Parses an untrusted member list.
pub fn decode_names(b: &[u8]) -> Result<Vec<Name>, PayloadError> {
    let mut r = Reader { buf: b };
    let count = r.varint()?;
    // Every name takes at least 5 bytes: a count the payload cannot hold is refused at once.
    if count > MAX_MEMBER_NAMES || count.saturating_mul(5) > r.buf.len() as u64 {
        return Err(PayloadError::BadLength(count));
    }
    let mut names = Vec::with_capacity(count as usize);
    for _ in 0..count {
        names.push(r.name()?);
    }
    r.finish()?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_lists_round_trip_and_refuse_lies() {
        let names = vec![Name::new("a", "b", "c", Some(7)), Name::new("x", "y", "z", None)];
        assert_eq!(decode_names(&encode_names(&names)).unwrap(), names);
        assert_eq!(decode_names(&encode_names(&[])).unwrap(), Vec::<Name>::new());
        let mut lying = Vec::new();
        put_varint(&mut lying, 1_000_000);
        assert!(matches!(decode_names(&lying), Err(PayloadError::BadLength(_))));
        assert!(decode_names(&[]).is_err());
        let mut trailing = encode_names(&names);
        trailing.push(0);
        assert!(matches!(decode_names(&trailing), Err(PayloadError::Trailing(1))));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn name_vectors() {
        let n = Name::from_components([1, 2, 3, u64::MAX]);
        assert_eq!(hex(&encode_name(&n)), "010203fdffffffffffffffff00");
        let n = Name::new("org", "ns", "a", Some(1));
        assert_eq!(
            hex(&encode_name(&n)),
            "fd3b96ea7603583e87fdd190694c9a76f9eefd80524a508a00f53f0101036f7267026e730161"
        );
        let back = decode_name(&encode_name(&n)).expect("round trip");
        assert_eq!(back, n);
        assert_eq!(back.strings(), n.strings());
    }

    #[test]
    fn join_and_proposal_vectors() {
        let j = JoinMessagePayload {
            channel_name: Name::from_components([1, 2, 3, u64::MAX]),
            moderator_name: Name::from_components([4, 5, 6, 7]),
        };
        assert_eq!(hex(&j.encode()), "010203fdffffffffffffffff000405060700");
        assert_eq!(JoinMessagePayload::decode(&j.encode()), Ok(j));
        let p =
            MlsProposalMessagePayload { source_name: Name::from_components([1, 2, 3, 4]), mls_msg: vec![0xaa, 0xbb] };
        assert_eq!(hex(&p.encode()), "010203040002aabb");
        assert_eq!(MlsProposalMessagePayload::decode(&p.encode()), Ok(p));
    }

    #[test]
    fn varint_boundaries() {
        for v in [0u64, 250, 251, 65535, 65536, u32::MAX as u64, u32::MAX as u64 + 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader { buf: &out };
            assert_eq!(r.varint(), Ok(v));
            assert!(r.buf.is_empty());
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(decode_name(&[]), Err(PayloadError::Truncated));
        assert_eq!(decode_name(&[0xFE]), Err(PayloadError::BadVarint(0xFE)));
        assert_eq!(decode_name(&[1, 2, 3, 4, 7]), Err(PayloadError::BadOption(7)));
        assert_eq!(
            decode_name(&[1, 2, 3, 4, 1, 0xFC, 0xff, 0xff, 0xff, 0xff]),
            Err(PayloadError::BadLength(u32::MAX as u64))
        );
        assert_eq!(decode_name(&[1, 2, 3, 4, 0, 9]), Err(PayloadError::Trailing(1)));
        assert_eq!(decode_name(&[1, 2, 3, 4, 1, 1, 0xff, 0, 0]), Err(PayloadError::BadUtf8));
    }
}
