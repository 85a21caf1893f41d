//! Request parsing and validation for the HTTP API: pure functions, so that every bad input
//! maps to its documented error before anything reaches a replica.
use crate::reads::{Consistency, Mode};
use std::collections::BTreeMap;
use std::time::Duration;

pub const MAX_KEY: usize = 4096;
pub const MAX_VALUE: usize = 1 << 20;

#[derive(Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

pub fn bad(message: impl Into<String>) -> ApiError {
    ApiError {
        status: 400,
        message: message.into(),
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decoding (`+` stays `+`: keys are paths, not forms).
pub fn percent_decode(s: &str) -> Result<Vec<u8>, ApiError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (h, l) = (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            );
            match (h, l) {
                (Some(h), Some(l)) => out.push(h * 16 + l),
                _ => return Err(bad("malformed percent-encoding in the URL")),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Query parameters; any name outside `allowed` (or repeated) is an error.
pub fn params(query: Option<&str>, allowed: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = String::from_utf8(percent_decode(k)?)
            .map_err(|_| bad("query parameter names are UTF-8"))?;
        let v = String::from_utf8(percent_decode(v)?)
            .map_err(|_| bad(format!("query parameter '{k}' is not UTF-8")))?;
        if !allowed.contains(&k.as_str()) {
            return Err(bad(format!(
                "unknown query parameter '{k}' (allowed here: {})",
                allowed.join(", ")
            )));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(bad(format!("query parameter '{k}' given twice")));
        }
    }
    Ok(out)
}

pub fn key_from_path(rest: &str) -> Result<Vec<u8>, ApiError> {
    let key = percent_decode(rest)?;
    if key.is_empty() {
        return Err(bad("empty key"));
    }
    if key.len() > MAX_KEY {
        return Err(bad(format!(
            "key of {} bytes exceeds the limit of {MAX_KEY}",
            key.len()
        )));
    }
    Ok(key)
}

pub fn consistency(p: &BTreeMap<String, String>) -> Result<Consistency, ApiError> {
    match p.get("consistency").map(String::as_str) {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("serializable") => Ok(Consistency::Serializable),
        Some(s) if s.starts_with("bounded:") => {
            let ms: u64 = s[8..].parse().map_err(|_| {
                bad(format!(
                    "consistency '{s}': expected bounded:<milliseconds>"
                ))
            })?;
            Ok(Consistency::Bounded(Duration::from_millis(ms)))
        }
        Some(s) => Err(bad(format!(
            "unknown consistency '{s}' (linearizable, serializable, bounded:<ms>)"
        ))),
    }
}

pub fn read_mode(p: &BTreeMap<String, String>) -> Result<Mode, ApiError> {
    match p.get("read_mode").map(String::as_str) {
        None | Some("auto") => Ok(Mode::Auto),
        Some("leader") => Ok(Mode::Leader),
        Some("quorum") => Ok(Mode::Quorum),
        Some("lease") => Ok(Mode::Lease),
        Some(s) => Err(bad(format!(
            "unknown read_mode '{s}' (auto, leader, quorum, lease)"
        ))),
    }
}

pub fn json_format(p: &BTreeMap<String, String>) -> Result<bool, ApiError> {
    match p.get("format").map(String::as_str) {
        None | Some("raw") => Ok(false),
        Some("json") => Ok(true),
        Some(s) => Err(bad(format!("unknown format '{s}' (raw, json)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        assert!(params(Some("read_mode=leader"), &["read_mode"]).is_ok());
        let e = params(Some("readmode=leader"), &["read_mode", "format"]).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("unknown query parameter 'readmode'"));
        assert!(params(Some("format=json&format=raw"), &["format"])
            .unwrap_err()
            .message
            .contains("twice"));
    }

    #[test]
    fn keys_decode_and_are_bounded() {
        assert_eq!(key_from_path("a%2Fb").unwrap(), b"a/b");
        assert!(key_from_path("").is_err());
        assert!(key_from_path("%zz").is_err());
        assert!(key_from_path(&"k".repeat(MAX_KEY)).is_ok());
        assert!(key_from_path(&"k".repeat(MAX_KEY + 1))
            .unwrap_err()
            .message
            .contains("exceeds"));
    }

    #[test]
    fn modes_and_consistency_parse() {
        let p = |q: &str| params(Some(q), &["consistency", "read_mode", "format"]).unwrap();
        assert_eq!(read_mode(&p("read_mode=quorum")).unwrap(), Mode::Quorum);
        assert!(read_mode(&p("read_mode=bogus")).is_err());
        assert_eq!(
            consistency(&p("consistency=bounded:250")).unwrap(),
            Consistency::Bounded(Duration::from_millis(250))
        );
        assert!(consistency(&p("consistency=bounded:x")).is_err());
        assert!(json_format(&p("format=json")).unwrap());
    }
}
