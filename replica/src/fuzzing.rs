//! Entry points for fuzzing the replica's decoders, shared by the cargo-fuzz targets (`fuzz/`)
//! and the bounded property tests of `cargo test`: each takes arbitrary bytes, must never
//! panic, and checks what must hold for whatever decodes (it panics, so the fuzzer reports
//! it, only on a real bug).
use crate::kv::KvCommand;
use crate::storage::{FileLog, StorageError};
use meridian_core::Message;

/// A peer message as the peer stream decodes it (`node::peer`): whatever decodes encodes back
/// to a message that decodes equal.
pub fn peer_message(data: &[u8]) {
    if let Ok(m) = bincode::deserialize::<Message>(data) {
        let again = bincode::serialize(&m).expect("a decoded message encodes");
        let back: Message = bincode::deserialize(&again).expect("its encoding decodes");
        assert_eq!(back, m);
    }
}

/// A client command as the replica's client service decodes it: whatever decodes round-trips,
/// and its encoded length is what `encoded_len` says (the proxy's size check relies on it).
pub fn command(data: &[u8]) {
    if let Ok(c) = KvCommand::decode(data) {
        let again = c.encode();
        assert_eq!(again.len(), c.encoded_len());
        assert_eq!(KvCommand::decode(&again).expect("round trip"), c);
    }
}

/// WAL recovery from arbitrary segment bytes: either the records come back (a torn tail cut
/// off, and a second open then finds exactly the same records and nothing to cut), or the
/// open refuses with an error naming the segment — never a panic, never silently fewer
/// records from a non-final segment. The bytes are tried as the only segment and as the first
/// of two (where nothing may be cut).
pub fn wal_segment(data: &[u8]) {
    let dir = scratch_dir();
    let seg = |n: u64| dir.join(format!("wal-{n:016}.log"));
    for as_first_of_two in [false, true] {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        std::fs::write(seg(0), data).expect("write segment");
        if as_first_of_two {
            std::fs::write(seg(1), b"").expect("write segment");
        }
        match FileLog::open(&dir) {
            Ok((_, records, recovery)) => {
                if as_first_of_two {
                    assert!(
                        recovery.truncated.is_none(),
                        "a non-final segment was cut: {:?}",
                        recovery.truncated
                    );
                    assert_eq!(
                        std::fs::read(seg(0)).expect("segment").len(),
                        data.len(),
                        "a non-final segment was changed"
                    );
                }
                let (_, again, second) = FileLog::open(&dir).expect("a recovered log reopens");
                assert_eq!(again, records);
                assert!(second.truncated.is_none(), "the second open cut again");
            }
            Err(StorageError::Corrupt { path, offset, .. }) => {
                assert_eq!(path, seg(0));
                assert!(offset <= data.len() as u64);
            }
            Err(e) => panic!("recovery failed with {e}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn scratch_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "meridian-fuzz-wal-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn valid_command() -> Vec<u8> {
        crate::kv::KvCommand {
            client: 7,
            seq: 3,
            op: crate::kv::Op::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
        }
        .encode()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_break_the_decoders(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            peer_message(&data);
            command(&data);
        }

        #[test]
        fn mutated_commands_never_break_the_decoder(flips in proptest::collection::vec((0usize..64, any::<u8>()), 1..6)) {
            let mut data = valid_command();
            for (i, b) in flips {
                let n = data.len();
                data[i % n] ^= b;
            }
            command(&data);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn wal_recovery_survives_arbitrary_segments(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            wal_segment(&data);
        }
    }

    /// Every input of the committed seed corpus (`fuzz/corpus/<target>/`), including the
    /// regression inputs of crashes found and fixed.
    #[test]
    fn the_committed_corpus_runs_clean() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut n = 0;
        for (target, f) in [
            ("peer_message", peer_message as fn(&[u8])),
            ("command", command),
            ("wal_segment", wal_segment),
        ] {
            let dir = root.join(target);
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for e in entries {
                let data = std::fs::read(e.unwrap().path()).unwrap();
                f(&data);
                n += 1;
            }
        }
        assert!(n >= 3, "the corpus has seeds");
    }
}
