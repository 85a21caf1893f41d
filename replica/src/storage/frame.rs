//! WAL record framing: `len: u32 LE | crc32c(payload): u32 LE | payload` (DESIGN.md §3).
use meridian_core::Record;

pub const HEADER: usize = 8;
/// Records larger than this are refused on write and treated as corruption on read.
pub const MAX_RECORD: usize = 256 << 20;

pub fn encode(record: &Record, out: &mut Vec<u8>) {
    let payload = bincode::serialize(record).expect("records serialize");
    assert!(
        payload.len() <= MAX_RECORD,
        "record of {} bytes exceeds the WAL limit",
        payload.len()
    );
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// What decoding one frame at an offset found.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Record(Record, usize),
    /// The bytes end before the frame does (a torn write at the tail).
    Incomplete,
    /// Length, checksum or payload is wrong.
    Corrupt(&'static str),
}

pub fn decode(buf: &[u8]) -> Decoded {
    if buf.len() < HEADER {
        return Decoded::Incomplete;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len > MAX_RECORD {
        return Decoded::Corrupt("record length beyond the limit");
    }
    if buf.len() < HEADER + len {
        return Decoded::Incomplete;
    }
    let payload = &buf[HEADER..HEADER + len];
    if crc32c::crc32c(payload) != crc {
        return Decoded::Corrupt("CRC32C mismatch");
    }
    match bincode::deserialize(payload) {
        Ok(r) => Decoded::Record(r, HEADER + len),
        Err(_) => Decoded::Corrupt("payload does not decode"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_core::{Ballot, Batch, SiteId, Slot};
    use proptest::prelude::*;

    fn rec(slot: u64, data: Vec<u8>) -> Record {
        Record::Accept {
            slot: Slot(slot),
            ballot: Ballot {
                round: 3,
                site: SiteId(1),
            },
            batch: Batch(vec![data.into()]),
        }
    }

    #[test]
    fn round_trip_and_every_single_byte_flip_is_detected() {
        let r = rec(7, b"hello".to_vec());
        let mut buf = Vec::new();
        encode(&r, &mut buf);
        assert_eq!(decode(&buf), Decoded::Record(r.clone(), buf.len()));
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert!(
                !matches!(decode(&b), Decoded::Record(ref x, _) if *x == r),
                "flip at {i} undetected"
            );
        }
        assert_eq!(decode(&buf[..buf.len() - 1]), Decoded::Incomplete);
        assert_eq!(decode(&buf[..3]), Decoded::Incomplete);
    }

    proptest! {
        #[test]
        fn decoder_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn records_round_trip(slot in 0u64..1_000_000, data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let r = rec(slot, data);
            let mut buf = Vec::new();
            encode(&r, &mut buf);
            prop_assert_eq!(decode(&buf), Decoded::Record(r, buf.len()));
        }
    }
}
