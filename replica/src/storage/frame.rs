//! WAL record framing: `len: u32 LE | crc32c(payload): u32 LE | payload` (DESIGN.md §3).
//!
//! The payload is a bincode `WalEntry`: the four `Record` variants, in `Record`'s order and with
//! its fields (so a `Record` encodes to the same bytes and logs written before snapshot files
//! read unchanged), plus a reference to a snapshot file.
use bytes::Bytes;
use meridian_core::{Ballot, Batch, Record, Slot};
use serde::{Deserialize, Serialize};

pub const HEADER: usize = 8;
/// Records larger than this are refused on write and treated as corruption on read.
pub const MAX_RECORD: usize = 256 << 20;

/// What one frame holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalEntry {
    Promise(Ballot),
    Accept {
        slot: Slot,
        ballot: Ballot,
        batch: Batch,
    },
    Chosen {
        slot: Slot,
        batch: Batch,
    },
    /// A snapshot inline (written by logs before snapshot files; still read).
    Snapshot {
        through: Slot,
        data: Bytes,
    },
    /// The snapshot through `through` is in its snapshot file, `len` bytes with this CRC32C.
    SnapshotFile {
        through: Slot,
        len: u64,
        crc: u32,
    },
}

impl From<Record> for WalEntry {
    fn from(r: Record) -> WalEntry {
        match r {
            Record::Promise(b) => WalEntry::Promise(b),
            Record::Accept {
                slot,
                ballot,
                batch,
            } => WalEntry::Accept {
                slot,
                ballot,
                batch,
            },
            Record::Chosen { slot, batch } => WalEntry::Chosen { slot, batch },
            Record::Snapshot { through, data } => WalEntry::Snapshot { through, data },
        }
    }
}

/// Frames `entry` (a `Record` or a `WalEntry`: the same bytes for the variants they share).
pub fn encode<T: Serialize>(entry: &T, out: &mut Vec<u8>) {
    let payload = bincode::serialize(entry).expect("records serialize");
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
    Entry(WalEntry, usize),
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
        Ok(r) => Decoded::Entry(r, HEADER + len),
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
        let e = WalEntry::from(r.clone());
        assert_eq!(decode(&buf), Decoded::Entry(e.clone(), buf.len()));
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert!(
                !matches!(decode(&b), Decoded::Entry(ref x, _) if *x == e),
                "flip at {i} undetected"
            );
        }
        assert_eq!(decode(&buf[..buf.len() - 1]), Decoded::Incomplete);
        assert_eq!(decode(&buf[..3]), Decoded::Incomplete);
    }

    /// Every `Record` variant encodes to exactly the bytes of its `WalEntry` twin, so logs
    /// written as `Record`s decode as entries.
    #[test]
    fn records_and_entries_share_their_encoding() {
        let b = Ballot {
            round: 9,
            site: SiteId(2),
        };
        let batch = Batch(vec![b"x".to_vec().into(), b"yz".to_vec().into()]);
        for r in [
            Record::Promise(b),
            rec(4, b"a".to_vec()),
            Record::Chosen {
                slot: Slot(5),
                batch: batch.clone(),
            },
            Record::Snapshot {
                through: Slot(6),
                data: b"state".to_vec().into(),
            },
        ] {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            encode(&r, &mut x);
            encode(&WalEntry::from(r.clone()), &mut y);
            assert_eq!(x, y, "{r:?}");
        }
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
            prop_assert_eq!(decode(&buf), Decoded::Entry(r.into(), buf.len()));
        }
    }
}
