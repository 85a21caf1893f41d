//! Key to shard: a stable hash (FNV-1a 64) over the key bytes, modulo the shard count. Every
//! proxy, tool and test maps keys the same way.
pub fn shard_for_key(key: &[u8], shards: u32) -> u32 {
    assert!(shards > 0, "a cluster has at least one shard");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
    (h % shards as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values_are_stable_across_releases() {
        // Changing the hash would strand every key on the wrong shard: pin it.
        assert_eq!(shard_for_key(b"", 4), (0xcbf2_9ce4_8422_2325u64 % 4) as u32);
        assert_eq!(
            shard_for_key(b"a", 1000),
            (0xaf63_dc4c_8601_ec8cu64 % 1000) as u32
        );
    }

    proptest! {
        #[test]
        fn always_in_range(key in proptest::collection::vec(any::<u8>(), 0..64), shards in 1u32..64) {
            prop_assert!(shard_for_key(&key, shards) < shards);
        }
    }

    #[test]
    fn spreads_keys_evenly() {
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[shard_for_key(format!("key-{i}").as_bytes(), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }
}
