//! Key to shard. A key's shard is a stable hash (FNV-1a 64) of its *placement key*, modulo the
//! shard count: the key itself, or — for a key under one of the cluster's `colocate` prefixes —
//! that prefix, so every key under it lives on one shard (DESIGN.md §4). Every proxy, tool and
//! test maps keys the same way.

/// A stable hash (FNV-1a 64) over the bytes, modulo the shard count.
pub fn shard_for_key(key: &[u8], shards: u32) -> u32 {
    assert!(shards > 0, "a cluster has at least one shard");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
    (h % shards as u64) as u32
}

/// The first key after every key that starts with `prefix` (empty: no such key, the span runs
/// to the end of the key space).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// Where keys live: the shard count and the co-located prefixes (`cluster.colocate`). Prefixes
/// never nest (the configuration refuses that), so a key has at most one.
#[derive(Clone, Debug)]
pub struct Placement {
    shards: u32,
    colocate: Vec<Vec<u8>>,
}

impl Placement {
    /// Every key hashed on its own.
    pub fn hashed(shards: u32) -> Placement {
        assert!(shards > 0, "a cluster has at least one shard");
        Placement {
            shards,
            colocate: Vec::new(),
        }
    }

    /// `colocate`: prefixes whose keys share one shard. Refuses an empty or nested prefix.
    pub fn new(shards: u32, colocate: &[String]) -> Result<Placement, String> {
        meridian_replica::config::check_colocate(colocate)?;
        let mut p = Placement::hashed(shards);
        p.colocate = colocate.iter().map(|c| c.as_bytes().to_vec()).collect();
        Ok(p)
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The co-located prefix `key` lives under, if any.
    pub fn group(&self, key: &[u8]) -> Option<&[u8]> {
        self.colocate
            .iter()
            .find(|p| key.starts_with(p))
            .map(|p| p.as_slice())
    }

    /// The shard of `key`.
    pub fn shard(&self, key: &[u8]) -> u32 {
        shard_for_key(self.group(key).unwrap_or(key), self.shards)
    }

    /// The one shard that holds every key of `[start, end)` (`end` empty: unbounded), when the
    /// placement puts them all on one: a one-shard cluster, a one-key span, or a span inside one
    /// co-located prefix. `None`: the span's keys may be on any shard.
    pub fn span_shard(&self, start: &[u8], end: &[u8]) -> Option<u32> {
        if self.shards == 1 {
            return Some(0);
        }
        if end.len() == start.len() + 1 && end.starts_with(start) && end.last() == Some(&0) {
            return Some(self.shard(start));
        }
        let p = self.group(start)?;
        let pe = prefix_end(p);
        // Every key k of the span has p <= start <= k < end <= pe, so k starts with p.
        let inside = pe.is_empty() || (!end.is_empty() && end <= pe.as_slice());
        inside.then(|| shard_for_key(p, self.shards))
    }

    /// The shards a span's keys may be on, in shard order.
    pub fn span_shards(&self, start: &[u8], end: &[u8]) -> Vec<u32> {
        match self.span_shard(start, end) {
            Some(s) => vec![s],
            None => (0..self.shards).collect(),
        }
    }
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
    fn colocated_prefixes_share_a_shard_and_confine_their_spans() {
        let p = Placement::new(8, &["locks/".into(), "elect/a/".into()]).unwrap();
        let home = shard_for_key(b"locks/", 8);
        for k in ["locks/", "locks/a", "locks/b/c", "locks/694d8a3b1c2d"] {
            assert_eq!(p.shard(k.as_bytes()), home, "{k}");
        }
        // Keys outside every prefix keep their own hash (no cluster moves a key it had).
        for k in ["lock", "locks", "lockt/a", "elect/b/x", "x"] {
            assert_eq!(p.shard(k.as_bytes()), shard_for_key(k.as_bytes(), 8), "{k}");
        }
        // A prefix range inside the group is one shard; spans reaching outside are not.
        assert_eq!(
            p.span_shard(b"locks/m/", &prefix_end(b"locks/m/")),
            Some(home)
        );
        assert_eq!(p.span_shard(b"locks/", b"locks0"), Some(home));
        assert_eq!(p.span_shard(b"locks/", b"locks1"), None);
        assert_eq!(p.span_shard(b"locks/", b""), None);
        assert_eq!(p.span_shard(b"lock", b"locks/z"), None);
        assert_eq!(p.span_shards(b"a", b"b").len(), 8);
        // A one-key span is its key's shard, grouped or not.
        assert_eq!(p.span_shard(b"x", b"x\0"), Some(shard_for_key(b"x", 8)));
        assert_eq!(Placement::hashed(1).span_shard(b"a", b""), Some(0));
        // A prefix of 0xff bytes runs to the end of the key space.
        let ff = Placement::new(8, &["\u{7f}".into()]).unwrap();
        assert_eq!(prefix_end(b"\xff\xff"), Vec::<u8>::new());
        assert_eq!(ff.span_shard(b"\x7fz", b""), None);
        assert_eq!(
            ff.span_shard(b"\x7fz", b"\x80"),
            Some(shard_for_key(b"\x7f", 8))
        );
    }

    #[test]
    fn overlapping_or_empty_prefixes_are_refused() {
        let e = Placement::new(4, &["a/".into(), "a/b/".into()]).unwrap_err();
        assert!(e.contains("'a/' and 'a/b/' overlap"), "{e}");
        assert!(Placement::new(4, &["a/".into(), "a/".into()]).is_err());
        assert!(Placement::new(4, &["".into()])
            .unwrap_err()
            .contains("shards = 1"));
        assert!(Placement::new(4, &["a/".into(), "b/".into()]).is_ok());
    }

    /// Short keys over an alphabet that makes the prefixes and their edges common.
    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            proptest::sample::select(vec![0u8, b'a', b'b', 0x7f, 0x80, 0xff]),
            0..5,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn a_confined_span_holds_only_keys_of_its_shard(
            key in bytes(),
            start in bytes(),
            end in bytes(),
        ) {
            let p = Placement::new(16, &["ab".into(), "\u{7f}".into()]).unwrap();
            let inside = key >= start && (end.is_empty() || key < end);
            if let (true, Some(s)) = (inside, p.span_shard(&start, &end)) {
                prop_assert_eq!(p.shard(&key), s);
            }
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
