//! Client authentication and authorization at the proxy (`[auth]` in cluster.toml): a client is
//! a bearer token (`authorization: Bearer <token>`; the config keeps only its SHA-256) or a
//! client certificate signed by the cluster CA; its role grants read or read-write on key
//! prefixes (`root`: everything). Pure: the edges ask `identify`, then `allow` for every key
//! a request touches, and map `AuthError` to 401/403 or UNAUTHENTICATED/PERMISSION_DENIED.
use meridian_replica::config::AuthSection;
use meridian_replica::kv::{Txn, TxnOp};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

#[derive(Debug, PartialEq, Eq)]
enum Grant {
    Root,
    Prefixes {
        read: Vec<Vec<u8>>,
        write: Vec<Vec<u8>>,
    },
}

/// Who a request comes from (`None` from `identify` when auth is off).
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: String,
    pub role: String,
    grant: Arc<Grant>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential, or one this cluster does not know.
    #[error("{0}")]
    Unauthenticated(String),
    /// A known client without the grant.
    #[error("{0}")]
    Forbidden(String),
}

impl AuthError {
    /// The label of `meridian_proxy_auth_refusals_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Unauthenticated(_) => "unauthenticated",
            AuthError::Forbidden(_) => "forbidden",
        }
    }
}

#[derive(Default)]
pub struct Auth {
    enabled: bool,
    tokens: HashMap<[u8; 32], Identity>,
    certs: HashMap<String, Identity>,
}

pub fn sha256(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().try_into().expect("32 bytes")
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A new random token (256 bits, hex) for `cluster up --auth` and operators.
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("the system random source works");
    hex(&b)
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Auth {
    /// Off: every request is allowed.
    pub fn disabled() -> Auth {
        Auth::default()
    }

    pub fn from_config(a: &AuthSection) -> Result<Auth, String> {
        if !a.enabled {
            return Ok(Auth::disabled());
        }
        let mut grants: HashMap<&str, Arc<Grant>> = HashMap::new();
        grants.insert("root", Arc::new(Grant::Root));
        for r in &a.roles {
            let bytes = |v: &Vec<String>| v.iter().map(|p| p.as_bytes().to_vec()).collect();
            grants.insert(
                &r.name,
                Arc::new(Grant::Prefixes {
                    read: bytes(&r.read_prefixes),
                    write: bytes(&r.write_prefixes),
                }),
            );
        }
        let identity = |name: &str, role: &str| -> Result<Identity, String> {
            Ok(Identity {
                name: name.to_string(),
                role: role.to_string(),
                grant: grants
                    .get(role)
                    .cloned()
                    .ok_or_else(|| format!("[auth]: no role '{role}'"))?,
            })
        };
        let mut tokens = HashMap::new();
        for t in &a.tokens {
            let h = unhex(&t.sha256)
                .ok_or_else(|| format!("[[auth.token]] '{}': bad sha256", t.name))?;
            tokens.insert(h, identity(&t.name, &t.role)?);
        }
        let mut certs = HashMap::new();
        for c in &a.certs {
            certs.insert(c.client.clone(), identity(&c.client, &c.role)?);
        }
        Ok(Auth {
            enabled: true,
            tokens,
            certs,
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Who the request is: from its `authorization` header (a bearer token wins) or the
    /// client certificate's name. `Ok(None)` when auth is off.
    pub fn identify(
        &self,
        authorization: Option<&str>,
        cert_client: Option<&str>,
    ) -> Result<Option<Identity>, AuthError> {
        if !self.enabled {
            return Ok(None);
        }
        if let Some(h) = authorization {
            let token = h
                .strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    AuthError::Unauthenticated(
                        "the authorization header must be 'Bearer <token>'".into(),
                    )
                })?;
            return self
                .tokens
                .get(&sha256(token))
                .cloned()
                .map(Some)
                .ok_or_else(|| AuthError::Unauthenticated("unknown token".into()));
        }
        if let Some(c) = cert_client {
            return self.certs.get(c).cloned().map(Some).ok_or_else(|| {
                AuthError::Unauthenticated(format!("client certificate '{c}' has no role here"))
            });
        }
        Err(AuthError::Unauthenticated(
            "authentication required: send 'authorization: Bearer <token>' or a client certificate"
                .into(),
        ))
    }
}

fn starts(key: &[u8], prefixes: &[Vec<u8>]) -> bool {
    prefixes.iter().any(|p| key.starts_with(p))
}

fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// May `who` have `access` to `key`? (Auth off: `who` is `None` and everything is allowed.)
pub fn allow(who: Option<&Identity>, key: &[u8], access: Access) -> Result<(), AuthError> {
    let Some(id) = who else { return Ok(()) };
    let ok = match &*id.grant {
        Grant::Root => true,
        Grant::Prefixes { read, write } => match access {
            Access::Read => starts(key, read) || starts(key, write),
            Access::Write => starts(key, write),
        },
    };
    if ok {
        Ok(())
    } else {
        Err(AuthError::Forbidden(format!(
            "'{}' (role {}) may not {} '{}'",
            id.name,
            id.role,
            match access {
                Access::Read => "read",
                Access::Write => "write",
            },
            show(key)
        )))
    }
}

/// A prefix range is allowed only when every key it can return is: the prefix must lie inside
/// one readable prefix (a range reaching outside the grant is refused whole).
pub fn allow_range(who: Option<&Identity>, prefix: &[u8]) -> Result<(), AuthError> {
    allow(who, prefix, Access::Read).map_err(|_| {
        let id = who.expect("refusals come from identities");
        AuthError::Forbidden(format!(
            "'{}' (role {}) may not read every key under '{}'",
            id.name,
            id.role,
            show(prefix)
        ))
    })
}

/// A key span `[start, end)` (`end` empty: unbounded) is allowed only when every key it can
/// hold is: it must lie inside one granted prefix (root: any span).
pub fn allow_span(
    who: Option<&Identity>,
    start: &[u8],
    end: &[u8],
    access: Access,
) -> Result<(), AuthError> {
    let Some(id) = who else { return Ok(()) };
    let (read, write) = match &*id.grant {
        Grant::Root => return Ok(()),
        Grant::Prefixes { read, write } => (read, write),
    };
    let inside = |p: &Vec<u8>| {
        start.starts_with(p)
            && match prefix_end(p) {
                None => true,
                Some(pe) => !end.is_empty() && end <= pe.as_slice(),
            }
    };
    let ok = match access {
        Access::Read => read.iter().chain(write.iter()).any(inside),
        Access::Write => write.iter().any(inside),
    };
    if ok {
        Ok(())
    } else {
        Err(AuthError::Forbidden(format!(
            "'{}' (role {}) may not {} every key from '{}' to '{}'",
            id.name,
            id.role,
            match access {
                Access::Read => "read",
                Access::Write => "write",
            },
            show(start),
            show(end)
        )))
    }
}

/// The least key above every key with prefix `p` (None: no such key, `p` is all 0xff).
pub fn prefix_end(p: &[u8]) -> Option<Vec<u8>> {
    let mut e = p.to_vec();
    while let Some(last) = e.pop() {
        if last < 0xff {
            e.push(last + 1);
            return Some(e);
        }
    }
    None
}

/// TTL-lease operations: granting, keeping alive and querying leases needs an identity (any);
/// revoking one (which deletes the keys attached to it) needs a write grant on some prefix.
/// The keys themselves are checked when they are attached (a put with a lease).
pub fn allow_lease_revoke(who: Option<&Identity>) -> Result<(), AuthError> {
    let Some(id) = who else { return Ok(()) };
    match &*id.grant {
        Grant::Root => Ok(()),
        Grant::Prefixes { write, .. } if !write.is_empty() => Ok(()),
        Grant::Prefixes { .. } => Err(AuthError::Forbidden(format!(
            "'{}' (role {}) may not revoke leases: it has no write grant",
            id.name, id.role
        ))),
    }
}

/// Every key of a transaction with the access it needs; all must be allowed.
pub fn allow_txn(who: Option<&Identity>, t: &Txn) -> Result<(), AuthError> {
    let (ops, compares) = t.all_ops();
    for c in compares {
        allow(who, &c.key, Access::Read)?;
    }
    for op in ops {
        match op {
            TxnOp::Get { key } => allow(who, key, Access::Read)?,
            TxnOp::Range { start, end } => allow_span(who, start, end, Access::Read)?,
            TxnOp::DeleteRange { start, end } => allow_span(who, start, end, Access::Write)?,
            TxnOp::Put { key, .. }
            | TxnOp::Append { key, .. }
            | TxnOp::PutLease { key, .. }
            | TxnOp::Delete { key } => allow(who, key, Access::Write)?,
            TxnOp::Txn(_) => unreachable!("all_ops leaves nested transactions out"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_replica::config::{CertConfig, RoleConfig, TokenConfig};
    use meridian_replica::kv::{Compare, CompareTarget};

    fn auth() -> Auth {
        Auth::from_config(&AuthSection {
            enabled: true,
            tokens: vec![
                TokenConfig {
                    name: "admin".into(),
                    sha256: hex(&sha256("root-secret")),
                    role: "root".into(),
                },
                TokenConfig {
                    name: "dashboards".into(),
                    sha256: hex(&sha256("reader-secret")),
                    role: "reader".into(),
                },
            ],
            certs: vec![CertConfig {
                client: "app-1".into(),
                role: "app".into(),
            }],
            roles: vec![
                RoleConfig {
                    name: "reader".into(),
                    read_prefixes: vec!["public/".into()],
                    write_prefixes: vec![],
                },
                RoleConfig {
                    name: "app".into(),
                    read_prefixes: vec!["public/".into()],
                    write_prefixes: vec!["app/".into()],
                },
            ],
        })
        .unwrap()
    }

    #[test]
    fn tokens_and_certificates_identify_and_nothing_else_does() {
        let a = auth();
        let who = a
            .identify(Some("Bearer root-secret"), None)
            .unwrap()
            .unwrap();
        assert_eq!((who.name.as_str(), who.role.as_str()), ("admin", "root"));
        let who = a.identify(None, Some("app-1")).unwrap().unwrap();
        assert_eq!(who.role, "app");
        // The token wins over the certificate.
        let who = a
            .identify(Some("Bearer reader-secret"), Some("app-1"))
            .unwrap()
            .unwrap();
        assert_eq!(who.role, "reader");
        for (h, c) in [
            (None, None),
            (Some("Bearer wrong"), None),
            (Some("Bearer "), None),
            (Some("Basic cm9vdA=="), None),
            (Some("root-secret"), None),
            (Some("Bearer wrong"), Some("app-1")),
            (None, Some("app-2")),
        ] {
            let e = a.identify(h, c).unwrap_err();
            assert_eq!(e.reason(), "unauthenticated", "{h:?} {c:?}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
        assert!(Auth::disabled().identify(None, None).unwrap().is_none());
    }

    #[test]
    fn grants_cover_prefixes_and_ranges_must_stay_inside_them() {
        let a = auth();
        let reader = a.identify(Some("Bearer reader-secret"), None).unwrap();
        let app = a.identify(None, Some("app-1")).unwrap();
        let root = a.identify(Some("Bearer root-secret"), None).unwrap();
        let r = reader.as_ref();
        assert!(allow(r, b"public/x", Access::Read).is_ok());
        assert!(allow(r, b"public/x", Access::Write).is_err());
        assert!(allow(r, b"private/x", Access::Read).is_err());
        assert!(
            allow(r, b"public", Access::Read).is_err(),
            "a prefix of the grant"
        );
        assert!(allow(app.as_ref(), b"app/x", Access::Write).is_ok());
        assert!(allow(app.as_ref(), b"app/x", Access::Read).is_ok());
        assert!(allow(app.as_ref(), b"public/x", Access::Write).is_err());
        assert!(allow(root.as_ref(), b"anything", Access::Write).is_ok());
        assert!(allow(None, b"anything", Access::Write).is_ok(), "auth off");
        assert!(allow_range(r, b"public/").is_ok());
        assert!(allow_range(r, b"public/a").is_ok());
        let e = allow_range(r, b"pub").unwrap_err();
        assert_eq!(e.reason(), "forbidden");
        assert!(allow_range(r, b"").is_err());
        assert!(allow_range(root.as_ref(), b"").is_ok());
    }

    #[test]
    fn a_transaction_needs_every_key_it_touches() {
        let a = auth();
        let app = a.identify(None, Some("app-1")).unwrap();
        let txn = |compare: &str, put: &str, get: &str| Txn {
            compares: vec![Compare {
                key: compare.as_bytes().to_vec(),
                target: CompareTarget::Version(0),
            }],
            success: vec![TxnOp::Put {
                key: put.as_bytes().to_vec(),
                value: b"v".to_vec(),
            }],
            failure: vec![TxnOp::Get {
                key: get.as_bytes().to_vec(),
            }],
        };
        assert!(allow_txn(app.as_ref(), &txn("public/a", "app/b", "app/c")).is_ok());
        assert!(allow_txn(app.as_ref(), &txn("secret/a", "app/b", "app/c")).is_err());
        assert!(allow_txn(app.as_ref(), &txn("public/a", "public/b", "app/c")).is_err());
        assert!(allow_txn(app.as_ref(), &txn("public/a", "app/b", "secret/c")).is_err());
    }

    #[test]
    fn spans_must_lie_inside_a_granted_prefix() {
        let a = auth();
        let app = a.identify(None, Some("app-1")).unwrap();
        let root = a.identify(Some("Bearer root-secret"), None).unwrap();
        let w = Access::Write;
        assert!(allow_span(app.as_ref(), b"app/", b"app0", w).is_ok());
        assert!(allow_span(app.as_ref(), b"app/x", b"app/y", w).is_ok());
        assert!(
            allow_span(app.as_ref(), b"app/", b"app1", w).is_err(),
            "past the prefix"
        );
        assert!(
            allow_span(app.as_ref(), b"app/", b"", w).is_err(),
            "unbounded"
        );
        assert!(
            allow_span(app.as_ref(), b"ap", b"app0", w).is_err(),
            "starts before"
        );
        assert!(
            allow_span(app.as_ref(), b"public/", b"public0", w).is_err(),
            "read only"
        );
        assert!(allow_span(app.as_ref(), b"public/", b"public0", Access::Read).is_ok());
        assert!(allow_span(root.as_ref(), b"", b"", w).is_ok());
        assert!(allow_span(None, b"", b"", w).is_ok(), "auth off");
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
    }
}
