//! `#[serde(with = "bytes_field")]` for `Vec<u8>` fields on hot paths (a put's key and value,
//! a key-value's): serde's default treats a `Vec<u8>` as a sequence, which bincode decodes one
//! element at a time; as bytes it is one length check and one copy. bincode writes both forms
//! identically (a u64 length, then the bytes), so logs, snapshots and messages written before
//! read the same — `encodings_match_the_sequence_form` pins it. Readers also accept a
//! sequence, for self-describing formats that write bytes as one (JSON).
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Serializer;

pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_byte_buf(ByteBuf)
}

struct ByteBuf;

impl<'de> Visitor<'de> for ByteBuf {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // Preallocate from the hint, but not past what a hostile length could claim.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct AsSeq {
        k: Vec<u8>,
        n: u64,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct AsBytes {
        #[serde(with = "super")]
        k: Vec<u8>,
        n: u64,
    }

    #[test]
    fn encodings_match_the_sequence_form() {
        for k in [vec![], b"bench/000042".to_vec(), vec![0xff; 300]] {
            let seq = AsSeq { k: k.clone(), n: 7 };
            let bytes = AsBytes { k: k.clone(), n: 7 };
            let b = bincode::serialize(&bytes).unwrap();
            assert_eq!(bincode::serialize(&seq).unwrap(), b);
            assert_eq!(bincode::deserialize::<AsBytes>(&b).unwrap(), bytes);
            assert_eq!(bincode::deserialize::<AsSeq>(&b).unwrap(), seq);
            let j = serde_json::to_string(&bytes).unwrap();
            assert_eq!(serde_json::to_string(&seq).unwrap(), j);
            assert_eq!(serde_json::from_str::<AsBytes>(&j).unwrap(), bytes);
        }
    }

    #[test]
    fn a_truncated_or_oversized_length_is_an_error() {
        let b = bincode::serialize(&AsBytes {
            k: vec![1; 10],
            n: 7,
        })
        .unwrap();
        assert!(bincode::deserialize::<AsBytes>(&b[..12]).is_err());
        let mut huge = b.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(bincode::deserialize::<AsBytes>(&huge).is_err());
    }
}
