//! Several application messages under one MLS application message (one signature, one AEAD).
//!
//! A sender packs the publishes it already has queued for a group when it encrypts (it never
//! waits to fill a batch), but only when every leaf of the group advertises
//! [`BATCH_EXTENSION`](super::BATCH_EXTENSION) in its capabilities, so a member that does not
//! understand batches (e.g. slim-bindings 0.6.0) never receives one.
//!
//! On the wire a batch is one MULTICAST_MSG whose session-header message id is the first of the
//! `count` consecutive ids it carries, marked with [`META_MLS_BATCH`]` = count`. Its (encrypted)
//! blob is [`encode`]d items; each item keeps its own payload type and metadata. Receivers
//! unpack it into `count` messages with ids `first .. first + count`, so ordering, duplicate
//! suppression and loss reporting stay per original message.
//!
//! Plaintext layout (all integers big-endian):
//! `version u8 (=1) | count u16 | count × item`,
//! `item = payload_type (len u16 + UTF-8) | pairs u16 | pairs × (key len u16 + UTF-8, value len u32 + UTF-8) | blob len u32 + bytes`.

use std::collections::HashMap;

/// Metadata key marking a batch and giving its item count (outside the ciphertext).
pub const META_MLS_BATCH: &str = "SLIM_MLS_BATCH";
/// Most messages one batch may carry.
pub const MAX_BATCH_ITEMS: usize = 64;
/// Most plaintext bytes a sender puts in one batch (a batch may exceed it by one message).
pub const MAX_BATCH_BYTES: usize = 64 * 1024;

const VERSION: u8 = 1;

/// Why a batch plaintext could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The plaintext ends in the middle of a field.
    #[error("batch: truncated")]
    Truncated,
    /// Unknown layout version.
    #[error("batch: unsupported version {0}")]
    Version(u8),
    /// Zero items or more than [`MAX_BATCH_ITEMS`].
    #[error("batch: bad item count {0}")]
    Count(usize),
    /// A payload type or metadata string is not UTF-8.
    #[error("batch: text field is not UTF-8")]
    NotUtf8,
    /// Bytes left after the last item.
    #[error("batch: trailing bytes")]
    Trailing,
    /// A field is too long for its length prefix.
    #[error("batch: field too long")]
    TooLong,
}

/// One application message inside a batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchItem {
    /// The publish's content type ("msg" by default).
    pub payload_type: String,
    /// The publish's metadata (user keys, trace context).
    pub metadata: HashMap<String, String>,
    /// The application payload.
    pub blob: Vec<u8>,
}

impl BatchItem {
    /// Bytes this item takes in the encoded plaintext.
    pub fn encoded_len(&self) -> usize {
        2 + self.payload_type.len()
            + 2
            + self.metadata.iter().map(|(k, v)| 2 + k.len() + 4 + v.len()).sum::<usize>()
            + 4
            + self.blob.len()
    }
}

fn put_u16(out: &mut Vec<u8>, n: usize) -> Result<(), BatchError> {
    let n = u16::try_from(n).map_err(|_| BatchError::TooLong)?;
    out.extend_from_slice(&n.to_be_bytes());
    Ok(())
}

fn put_u32(out: &mut Vec<u8>, n: usize) -> Result<(), BatchError> {
    let n = u32::try_from(n).map_err(|_| BatchError::TooLong)?;
    out.extend_from_slice(&n.to_be_bytes());
    Ok(())
}

/// Encodes `items` (1 ..= [`MAX_BATCH_ITEMS`]) into a batch plaintext.
pub fn encode(items: &[BatchItem]) -> Result<Vec<u8>, BatchError> {
    if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
        return Err(BatchError::Count(items.len()));
    }
    let mut out = Vec::with_capacity(3 + items.iter().map(BatchItem::encoded_len).sum::<usize>());
    out.push(VERSION);
    put_u16(&mut out, items.len())?;
    for item in items {
        put_u16(&mut out, item.payload_type.len())?;
        out.extend_from_slice(item.payload_type.as_bytes());
        put_u16(&mut out, item.metadata.len())?;
        for (k, v) in &item.metadata {
            put_u16(&mut out, k.len())?;
            out.extend_from_slice(k.as_bytes());
            put_u32(&mut out, v.len())?;
            out.extend_from_slice(v.as_bytes());
        }
        put_u32(&mut out, item.blob.len())?;
        out.extend_from_slice(&item.blob);
    }
    Ok(out)
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        if self.rest.len() < n {
            return Err(BatchError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, BatchError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<usize, BatchError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    fn u32(&mut self) -> Result<usize, BatchError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn text(&mut self, len: usize) -> Result<String, BatchError> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| BatchError::NotUtf8)
    }
}

/// Decodes a batch plaintext into its items, refusing anything malformed.
pub fn decode(plaintext: &[u8]) -> Result<Vec<BatchItem>, BatchError> {
    let mut r = Reader { rest: plaintext };
    let version = r.u8()?;
    if version != VERSION {
        return Err(BatchError::Version(version));
    }
    let count = r.u16()?;
    if count == 0 || count > MAX_BATCH_ITEMS {
        return Err(BatchError::Count(count));
    }
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        let len = r.u16()?;
        let payload_type = r.text(len)?;
        let pairs = r.u16()?;
        let mut metadata = HashMap::with_capacity(pairs);
        for _ in 0..pairs {
            let klen = r.u16()?;
            let key = r.text(klen)?;
            let vlen = r.u32()?;
            let value = r.text(vlen)?;
            metadata.insert(key, value);
        }
        let blen = r.u32()?;
        let blob = r.take(blen)?.to_vec();
        items.push(BatchItem { payload_type, metadata, blob });
    }
    if !r.rest.is_empty() {
        return Err(BatchError::Trailing);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(i: u8) -> BatchItem {
        BatchItem {
            payload_type: format!("type-{i}"),
            metadata: HashMap::from([("k".to_string(), format!("v{i}")), ("é".to_string(), String::new())]),
            blob: vec![i; i as usize * 3],
        }
    }

    #[test]
    fn round_trip_and_sizes() {
        let items: Vec<BatchItem> = (0..5).map(item).collect();
        let bytes = encode(&items).unwrap();
        assert_eq!(bytes.len(), 3 + items.iter().map(BatchItem::encoded_len).sum::<usize>());
        assert_eq!(decode(&bytes).unwrap(), items);
        let one = encode(&[BatchItem::default()]).unwrap();
        assert_eq!(decode(&one).unwrap(), vec![BatchItem::default()]);
    }

    #[test]
    fn refuses_malformed_input() {
        assert_eq!(encode(&[]), Err(BatchError::Count(0)));
        let too_many = vec![BatchItem::default(); MAX_BATCH_ITEMS + 1];
        assert_eq!(encode(&too_many), Err(BatchError::Count(MAX_BATCH_ITEMS + 1)));

        let bytes = encode(&[item(3), item(4)]).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "prefix of {cut} bytes accepted");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode(&trailing), Err(BatchError::Trailing));
        let mut version = bytes.clone();
        version[0] = 9;
        assert_eq!(decode(&version), Err(BatchError::Version(9)));
        assert_eq!(decode(&[1, 0, 0]), Err(BatchError::Count(0)));
        let mut bad_text = encode(&[BatchItem { payload_type: "ab".into(), ..Default::default() }]).unwrap();
        bad_text[5] = 0xFF;
        assert_eq!(decode(&bad_text), Err(BatchError::NotUtf8));
    }
}
