//! Entry point for fuzzing the HTTP request path's parsing (shared by the cargo-fuzz target
//! `http_request` and a bounded property test): the first line of the input is the request
//! target (`/v1/kv/<key>?<query>` or `/v1/kv?<query>`), the rest the body of a transaction.
//! Every parser must answer with a value or an `ApiError` — never panic — and what it accepts
//! must respect the documented limits.
use crate::api::{self, MAX_KEY};
use crate::service::txn_keys;
use meridian_replica::kv::{KvCommand, Op};
use meridian_replica::node::MAX_COMMAND_BYTES;

pub fn http_input(data: &[u8]) {
    let (line, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(target) = std::str::from_utf8(line) else {
        return; // hyper refuses a request line that is not text before we see it
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if let Some(rest) = path.strip_prefix("/v1/kv/") {
        if let Ok(key) = api::key_from_path(rest) {
            assert!(
                !key.is_empty() && key.len() <= MAX_KEY,
                "{} bytes",
                key.len()
            );
        }
    }
    for allowed in [
        &["consistency", "read_mode", "format"][..],
        &["prefix", "limit", "consistency", "read_mode", "format"][..],
    ] {
        if let Ok(p) = api::params(query, allowed) {
            assert!(p.keys().all(|k| allowed.contains(&k.as_str())));
            let _ = api::consistency(&p);
            let _ = api::read_mode(&p);
            let _ = api::json_format(&p);
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Ok(t) = crate::http::parse_txn(&v) {
            // A transaction the API accepts is one the proxy can size and route.
            let _ = txn_keys(&t);
            let cmd = KvCommand {
                client: 1,
                seq: 1,
                op: Op::Txn(t),
            };
            let n = cmd.encoded_len();
            assert_eq!(n, cmd.encode().len());
            let _ = n > MAX_COMMAND_BYTES;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_requests_never_break_the_parsers(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            http_input(&data);
        }

        #[test]
        fn request_shaped_inputs_never_break_the_parsers(
            key in "[a-z%0-9A-F/]{0,20}",
            query in "[a-z_=&%0-9:]{0,40}",
            body in r#"\{"(compare|success|failure)":\[\{"(put|get|delete|key|value|version)":[^\]]{0,30}\}\]\}"#,
        ) {
            http_input(format!("/v1/kv/{key}?{query}\n{body}").as_bytes());
        }
    }

    #[test]
    fn the_committed_corpus_runs_clean() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/http_request");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            http_input(&std::fs::read(e.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n >= 1);
    }
}
