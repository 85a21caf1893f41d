//! The shape rules etcd's server applies to a Txn before it runs, so a client that relies on
//! them gets the same refusal here: at most `MAX_TXN_OPS` operations per list (a nested
//! transaction's lists count against what its parent left), and no key written twice on one
//! path — two puts of a key, or a put of a key that a delete on the same path covers
//! (etcd's "duplicate key given in txn request"). Deletes may overlap each other, and the two
//! branches of one nested transaction may put the same key (only one of them runs).
use etcd_client::proto::{PbTxnOpRequest, PbTxnRequest, PbTxnRequestOp};
use std::collections::HashSet;
use tonic::Status;

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// etcd's refusals, with etcd's words (clients match on them).
pub fn too_many_ops() -> Status {
    Status::invalid_argument("etcdserver: too many operations in txn request")
}
pub fn duplicate_key() -> Status {
    Status::invalid_argument("etcdserver: duplicate key given in txn request")
}

/// Both rules over a whole request.
pub fn check(r: &PbTxnRequest) -> Result<(), Status> {
    count(r, MAX_TXN_OPS)?;
    intervals(&r.success)?;
    intervals(&r.failure)?;
    Ok(())
}

/// The operation count: the longest of the request's three lists may not exceed `max`; a
/// nested transaction gets what is left.
fn count(r: &PbTxnRequest, max: usize) -> Result<(), Status> {
    let n = r.compare.len().max(r.success.len()).max(r.failure.len());
    if n > max {
        return Err(too_many_ops());
    }
    for op in r.success.iter().chain(&r.failure) {
        if let Some(PbTxnOpRequest::RequestTxn(t)) = &op.request {
            count(t, max - n)?;
        }
    }
    Ok(())
}

/// Keys deleted on a path: half-open byte intervals, `None` as end for "to the end of the
/// key space" (etcd's range_end "\0").
#[derive(Default)]
struct Deletes(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl Deletes {
    fn insert(&mut self, key: &[u8], range_end: &[u8]) {
        let end = match range_end {
            [] => {
                let mut e = key.to_vec();
                e.push(0);
                Some(e)
            }
            [0] => None,
            e => Some(e.to_vec()),
        };
        self.0.push((key.to_vec(), end));
    }

    fn covers(&self, key: &[u8]) -> bool {
        self.0
            .iter()
            .any(|(s, e)| s.as_slice() <= key && e.as_deref().is_none_or(|e| key < e))
    }
}

/// etcd's `checkIntervals`: the puts and deletes of one list of operations (nested
/// transactions included), refusing a key put twice or put where a delete reaches.
fn intervals(reqs: &[PbTxnRequestOp]) -> Result<(HashSet<Vec<u8>>, Deletes), Status> {
    let mut dels = Deletes::default();
    for r in reqs {
        if let Some(PbTxnOpRequest::RequestDeleteRange(d)) = &r.request {
            dels.insert(&d.key, &d.range_end);
        }
    }
    let mut puts = HashSet::new();
    for r in reqs {
        let Some(PbTxnOpRequest::RequestTxn(t)) = &r.request else {
            continue;
        };
        let (puts_then, dels_then) = intervals(&t.success)?;
        let (puts_else, dels_else) = intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.covers(k) {
                return Err(duplicate_key());
            }
        }
        for k in &puts_else {
            // The same key in both branches is fine: only one branch runs.
            if (puts.contains(k) && !puts_then.contains(k)) || dels.covers(k) {
                return Err(duplicate_key());
            }
        }
        puts.extend(puts_then);
        puts.extend(puts_else);
        dels.0.extend(dels_then.0);
        dels.0.extend(dels_else.0);
    }
    for r in reqs {
        if let Some(PbTxnOpRequest::RequestPut(p)) = &r.request {
            if !puts.insert(p.key.clone()) || dels.covers(&p.key) {
                return Err(duplicate_key());
            }
        }
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::{PbDeleteRequest, PbPutRequest, PbRangeRequest};

    fn put(k: &str) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestPut(PbPutRequest {
                key: k.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &[u8]) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestDeleteRange(PbDeleteRequest {
                key: k.into(),
                range_end: end.to_vec(),
                ..Default::default()
            })),
        }
    }
    fn get(k: &str) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestRange(PbRangeRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<PbTxnRequestOp>, failure: Vec<PbTxnRequestOp>) -> PbTxnRequest {
        PbTxnRequest {
            compare: Vec::new(),
            success,
            failure,
        }
    }
    fn nested(t: PbTxnRequest) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestTxn(t)),
        }
    }
    fn refused(t: &PbTxnRequest) -> bool {
        match check(t) {
            Ok(()) => false,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::InvalidArgument);
                true
            }
        }
    }

    #[test]
    fn a_key_written_twice_on_one_path_is_refused_as_etcd_does() {
        // Two puts of a key; a put under a delete of the key, a span and "from key".
        assert!(refused(&txn(vec![put("a"), put("a")], vec![])));
        assert!(refused(&txn(vec![], vec![put("a"), put("a")])));
        assert!(refused(&txn(vec![put("a"), del("a", b"")], vec![])));
        assert!(refused(&txn(vec![del("a", b"c"), put("b")], vec![])));
        assert!(refused(&txn(vec![put("zz"), del("m", &[0])], vec![])));
        // Through a nested transaction, in either of its branches.
        assert!(refused(&txn(
            vec![put("a"), nested(txn(vec![put("a")], vec![]))],
            vec![]
        )));
        assert!(refused(&txn(
            vec![del("a", b"b"), nested(txn(vec![], vec![put("a")]))],
            vec![]
        )));
        assert!(refused(&txn(
            vec![put("a"), nested(txn(vec![del("a", b"")], vec![]))],
            vec![]
        )));
        assert_eq!(
            check(&txn(vec![put("a"), put("a")], vec![]))
                .unwrap_err()
                .message(),
            "etcdserver: duplicate key given in txn request"
        );
    }

    #[test]
    fn what_etcd_allows_passes() {
        // The same key in the success and the failure list, in both branches of a nested
        // transaction, reads of a written key, overlapping deletes, a delete next to a put.
        assert!(!refused(&txn(vec![put("a")], vec![put("a")])));
        assert!(!refused(&txn(
            vec![nested(txn(vec![put("a")], vec![put("a")]))],
            vec![]
        )));
        assert!(!refused(&txn(vec![get("a"), put("a"), get("a")], vec![])));
        assert!(!refused(&txn(vec![del("a", b"c"), del("b", b"d")], vec![])));
        assert!(!refused(&txn(vec![del("a", b"c"), put("c")], vec![])));
        assert!(!refused(&txn(vec![del("a", b""), put("a0")], vec![])));
    }

    #[test]
    fn operations_are_counted_per_list_and_nested_lists_share_the_bound() {
        let many = |n: usize| (0..n).map(|i| get(&format!("k{i}"))).collect::<Vec<_>>();
        assert!(!refused(&txn(many(MAX_TXN_OPS), many(MAX_TXN_OPS))));
        assert!(refused(&txn(many(MAX_TXN_OPS + 1), vec![])));
        assert_eq!(
            check(&txn(vec![], many(MAX_TXN_OPS + 1)))
                .unwrap_err()
                .message(),
            "etcdserver: too many operations in txn request"
        );
        // 100 at the top leave 28 for a nested list.
        let mut top = many(99);
        top.push(nested(txn(many(28), vec![])));
        assert!(!refused(&txn(top, vec![])));
        let mut top = many(99);
        top.push(nested(txn(many(29), vec![])));
        assert!(refused(&txn(top, vec![])));
    }
}
