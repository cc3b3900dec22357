//! Reading protobuf fields straight off a byte slice, by prost's rules, for the two readers that
//! do not go through prost's generic `Buf` decoding on the hot path: the routing view a node reads
//! of a message it only passes on (`node::header`) and the decoder of a data message's common
//! shape (`wire::quick`). Each function either reads what prost would read or refuses with
//! [`NotRead`]; a refusal never means the bytes are malformed, only that the caller leaves them
//! to prost, which then accepts or refuses them as it always did.

use prost::bytes::Buf;

/// Wire types (the protobuf encoding).
pub(crate) const VARINT: u8 = 0;
pub(crate) const FIXED64: u8 = 1;
pub(crate) const DELIMITED: u8 = 2;
pub(crate) const FIXED32: u8 = 5;

/// Why bytes are not read here (the caller hands them to prost instead; no detail needed).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NotRead;

pub(crate) type Res<T> = Result<T, NotRead>;

/// A field key, as prost reads it: a varint of at most 32 bits, a wire type this reader knows
/// (prost fails on 6 and 7; groups, 3 and 4, are left to prost), a field number of at least 1.
#[inline]
pub(crate) fn key(buf: &mut &[u8]) -> Res<(u32, u8)> {
    let k = u32::try_from(read_varint(buf)?).map_err(|_| NotRead)?;
    let (field, wire) = (k >> 3, (k & 7) as u8);
    if field == 0 || !matches!(wire, VARINT | FIXED64 | DELIMITED | FIXED32) {
        return Err(NotRead);
    }
    Ok((field, wire))
}

/// A varint: one byte (keys, small lengths and values: the common case), else [`long_varint`].
#[inline]
pub(crate) fn read_varint(buf: &mut &[u8]) -> Res<u64> {
    match buf.split_first() {
        Some((&b, rest)) if b < 0x80 => {
            *buf = rest;
            Ok(u64::from(b))
        }
        _ => long_varint(buf),
    }
}

/// A varint of two bytes or more, by prost's rules: at most 10 bytes, and the tenth (bit 63) no
/// more than 1, else the bytes are not read. The 64-bit name hashes take 9 or 10 bytes each, eight
/// to a message's SLIM header: with 8 bytes or more left, they are read a word at a time (where the
/// varint ends is the lowest clear top bit; its 7-bit groups are packed in three steps), not a byte
/// and a branch at a time.
#[inline]
fn long_varint(buf: &mut &[u8]) -> Res<u64> {
    let bytes = *buf;
    let Some(head) = bytes.first_chunk::<8>() else { return varint_bytewise(buf) };
    let word = u64::from_le_bytes(*head);
    let ends = !word & 0x8080_8080_8080_8080;
    if ends != 0 {
        // It ends at byte `n - 1` (1..=8): the bytes after it are not its own.
        let n = (ends.trailing_zeros() / 8 + 1) as usize;
        let own = if n == 8 { word } else { word & ((1u64 << (8 * n)) - 1) };
        *buf = bytes.get(n..).ok_or(NotRead)?;
        return Ok(pack7(own & 0x7f7f_7f7f_7f7f_7f7f));
    }
    // Nine or ten bytes: bits 56..62 from the ninth, bit 63 from the tenth (0 or 1).
    let low = pack7(word & 0x7f7f_7f7f_7f7f_7f7f);
    match bytes.get(8..) {
        Some([b8, rest @ ..]) if *b8 < 0x80 => {
            *buf = rest;
            Ok(low | u64::from(*b8) << 56)
        }
        Some([b8, b9, rest @ ..]) if *b9 <= 1 => {
            *buf = rest;
            Ok(low | u64::from(b8 & 0x7f) << 56 | u64::from(*b9) << 63)
        }
        _ => Err(NotRead),
    }
}

/// Packs the 7-bit groups in the eight bytes of `x` (each byte's top bit clear) into its low 56
/// bits, the first byte's group lowest: pairs of bytes, then pairs of 14-bit groups, then of 28.
#[inline]
fn pack7(x: u64) -> u64 {
    let x = ((x & 0x7f00_7f00_7f00_7f00) >> 1) | (x & 0x007f_007f_007f_007f);
    let x = ((x & 0x3fff_0000_3fff_0000) >> 2) | (x & 0x0000_3fff_0000_3fff);
    ((x & 0x0fff_ffff_0000_0000) >> 4) | (x & 0x0000_0000_0fff_ffff)
}

/// A varint read a byte at a time (fewer than 8 bytes left).
fn varint_bytewise(buf: &mut &[u8]) -> Res<u64> {
    let bytes = *buf;
    let mut value = 0u64;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            if i == 9 && b > 1 {
                return Err(NotRead);
            }
            *buf = &bytes[i + 1..];
            return Ok(value);
        }
    }
    Err(NotRead)
}

#[inline]
pub(crate) fn expect(wire: u8, want: u8) -> Res<()> {
    if wire == want { Ok(()) } else { Err(NotRead) }
}

/// A varint field's value (prost fails on any other wire type for a scalar field).
#[inline]
pub(crate) fn varint(wire: u8, buf: &mut &[u8]) -> Res<u64> {
    expect(wire, VARINT)?;
    read_varint(buf)
}

/// The bytes of a length-delimited field (its length must fit in what is left).
#[inline]
pub(crate) fn delimited<'a>(buf: &mut &'a [u8]) -> Res<&'a [u8]> {
    let len = read_varint(buf)?;
    let len = usize::try_from(len).map_err(|_| NotRead)?;
    if len > buf.len() {
        return Err(NotRead);
    }
    let (body, rest) = buf.split_at(len);
    *buf = rest;
    Ok(body)
}

/// A nested message field's bytes.
#[inline]
pub(crate) fn message<'a>(wire: u8, buf: &mut &'a [u8]) -> Res<&'a [u8]> {
    expect(wire, DELIMITED)?;
    delimited(buf)
}

/// `bytes` as a `&str` when they are UTF-8 (prost refuses a `string` field that is not). ASCII,
/// which every name, content type and token of this protocol is, is checked a word at a time
/// first; anything else goes through the full UTF-8 check.
#[inline]
pub(crate) fn utf8(bytes: &[u8]) -> Res<&str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        #[allow(unsafe_code)]
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).map_err(|_| NotRead)
}

/// A string field (prost fails on bytes that are not UTF-8).
#[inline]
pub(crate) fn string<'a>(wire: u8, buf: &mut &'a [u8]) -> Res<&'a str> {
    expect(wire, DELIMITED)?;
    utf8(delimited(buf)?)
}

/// An unknown field, skipped as prost skips it (groups are left to prost).
pub(crate) fn skip(wire: u8, buf: &mut &[u8]) -> Res<()> {
    let n = match wire {
        VARINT => return read_varint(buf).map(|_| ()),
        FIXED64 => 8,
        FIXED32 => 4,
        DELIMITED => return delimited(buf).map(|_| ()),
        _ => return Err(NotRead),
    };
    if buf.remaining() < n {
        return Err(NotRead);
    }
    buf.advance(n);
    Ok(())
}

/// Marks field `field` (1..=31) as seen in `seen`; refuses a field seen before. The decoder of
/// the common shape reads each field once: a repeated one (which prost merges, or where the last
/// value wins) is left to prost.
#[inline]
pub(crate) fn once(seen: &mut u32, field: u32) -> Res<()> {
    let bit = 1u32.checked_shl(field).filter(|_| field < 32).ok_or(NotRead)?;
    if *seen & bit != 0 {
        return Err(NotRead);
    }
    *seen |= bit;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    #[test]
    fn varints_read_as_prost_reads_them() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x80],
            vec![0x80, 0x00],
            vec![0xff; 9],
            [&[0xff; 9][..], &[0x01]].concat(),
            [&[0xff; 9][..], &[0x02]].concat(),
            [&[0x80; 9][..], &[0x81, 0x00]].concat(),
            vec![0xff; 11],
        ];
        for _ in 0..20_000 {
            let v = rng.next() >> rng.below(64);
            let mut enc = Vec::new();
            prost::encoding::encode_varint(v, &mut enc);
            // Followed by 0 to 11 other bytes: both the word-at-a-time and the bytewise reads.
            for _ in 0..rng.below(12) {
                enc.push(rng.next() as u8);
            }
            cases.push(enc);
            let n = rng.below(20);
            cases.push((0..n).map(|_| rng.next() as u8 | if rng.below(3) == 0 { 0 } else { 0x80 }).collect());
            // Nine continuation bytes, then a tenth of every value, then more.
            let mut ten: Vec<u8> = (0..9).map(|_| rng.next() as u8 | 0x80).collect();
            ten.push(rng.next() as u8);
            ten.extend((0..rng.below(4)).map(|_| rng.next() as u8));
            cases.push(ten);
        }
        for c in &cases {
            let mut ours: &[u8] = c;
            let mut theirs: &[u8] = c;
            match (read_varint(&mut ours), prost::encoding::decode_varint(&mut theirs)) {
                (Ok(a), Ok(b)) => assert_eq!((a, ours.len()), (b, theirs.len()), "{c:?}"),
                (Err(NotRead), Err(_)) => {}
                (a, b) => panic!("{c:?}: ours {:?}, prost {b:?}", a.ok()),
            }
        }
    }

    #[test]
    fn utf8_agrees_with_the_standard_check() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut cases: Vec<Vec<u8>> =
            vec![vec![], b"agntcy".to_vec(), "ünïcode".as_bytes().to_vec(), vec![0xff], vec![0xc3], vec![0x7f; 40]];
        for _ in 0..20_000 {
            let n = rng.below(40);
            // Mostly ASCII, some high bytes: valid and invalid sequences at every position.
            cases.push(
                (0..n).map(|_| if rng.below(8) == 0 { rng.next() as u8 } else { rng.next() as u8 & 0x7f }).collect(),
            );
        }
        for c in &cases {
            assert_eq!(utf8(c).ok(), std::str::from_utf8(c).ok(), "{c:?}");
        }
    }

    #[test]
    fn once_refuses_a_field_seen_before_and_numbers_past_31() {
        let mut seen = 0;
        assert_eq!(once(&mut seen, 1), Ok(()));
        assert_eq!(once(&mut seen, 3), Ok(()));
        assert_eq!(once(&mut seen, 1), Err(NotRead));
        assert_eq!(once(&mut seen, 31), Ok(()));
        assert_eq!(once(&mut seen, 32), Err(NotRead));
        assert_eq!(once(&mut seen, u32::MAX), Err(NotRead));
    }
}
