//! `[auth]` of cluster.toml: tokens, client certificates and roles at the proxies.
use serde::{Deserialize, Serialize};

/// `[auth]`: who may call the proxies, and on which keys. With `enabled = false` (the default)
/// every client that trusts the CA may read and write every key.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    #[serde(default)]
    pub enabled: bool,
    /// Bearer tokens, stored as the SHA-256 of the token (hex), never the token.
    #[serde(default, rename = "token", skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenConfig>,
    /// Client certificates (signed by the cluster CA; `meridian certs --clients NAME`).
    #[serde(default, rename = "cert", skip_serializing_if = "Vec::is_empty")]
    pub certs: Vec<CertConfig>,
    /// Roles besides the built-in `root` (read-write on every key).
    #[serde(default, rename = "role", skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleConfig>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who the token belongs to (logs name it; they never show the token).
    pub name: String,
    pub sha256: String,
    pub role: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertConfig {
    /// The client name of the certificate (`meridian certs --clients <client>`).
    pub client: String,
    pub role: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub name: String,
    /// Keys starting with one of these may be read.
    #[serde(default)]
    pub read_prefixes: Vec<String>,
    /// Keys starting with one of these may be read and written.
    #[serde(default)]
    pub write_prefixes: Vec<String>,
}

impl AuthSection {
    pub(super) fn validate(&self) -> Result<(), String> {
        let mut roles = vec!["root"];
        for r in &self.roles {
            if roles.contains(&r.name.as_str()) {
                return Err(format!(
                    "[[auth.role]] '{}' is defined twice (or is the built-in root)",
                    r.name
                ));
            }
            roles.push(&r.name);
        }
        let mut names = Vec::new();
        for t in &self.tokens {
            if t.sha256.len() != 64
                || !t
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(format!(
                    "[[auth.token]] '{}': sha256 must be 64 lowercase hex digits (the SHA-256 of the token)",
                    t.name
                ));
            }
            if !roles.contains(&t.role.as_str()) {
                return Err(format!("[[auth.token]] '{}': no role '{}'", t.name, t.role));
            }
            if names.contains(&&t.name) {
                return Err(format!("[[auth.token]] name '{}' appears twice", t.name));
            }
            names.push(&t.name);
        }
        for c in &self.certs {
            if !roles.contains(&c.role.as_str()) {
                return Err(format!(
                    "[[auth.cert]] '{}': no role '{}'",
                    c.client, c.role
                ));
            }
        }
        if self.enabled && self.tokens.is_empty() && self.certs.is_empty() {
            return Err(
                "auth.enabled with no [[auth.token]] and no [[auth.cert]]: no client could do anything"
                    .into(),
            );
        }
        Ok(())
    }
}
