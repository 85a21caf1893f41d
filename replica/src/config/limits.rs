//! `[limits]` of cluster.toml: what one client connection to a proxy may hold.
use serde::{Deserialize, Serialize};

/// `[limits]`: what one client connection to a proxy may hold and for how long.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Client connections open at once per proxy; beyond, new ones are closed at once.
    #[serde(default = "d_max_connections")]
    pub max_connections: usize,
    /// A TLS handshake must finish within this.
    #[serde(default = "d_handshake_timeout")]
    pub handshake_timeout_ms: u64,
    /// An HTTP/1 request's headers must arrive within this (slowloris).
    #[serde(default = "d_header_timeout")]
    pub header_timeout_ms: u64,
    /// A request body must arrive within this (408 otherwise).
    #[serde(default = "d_body_timeout")]
    pub body_timeout_ms: u64,
    /// A connection with no request in flight and no byte moving is closed after this.
    #[serde(default = "d_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// Concurrent requests (HTTP/2 streams) per connection.
    #[serde(default = "d_streams")]
    pub max_streams_per_connection: u32,
}

fn d_max_connections() -> usize {
    10_000
}
fn d_handshake_timeout() -> u64 {
    10_000
}
fn d_header_timeout() -> u64 {
    10_000
}
fn d_body_timeout() -> u64 {
    30_000
}
fn d_idle_timeout() -> u64 {
    300_000
}
fn d_streams() -> u32 {
    256
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_connections: d_max_connections(),
            handshake_timeout_ms: d_handshake_timeout(),
            header_timeout_ms: d_header_timeout(),
            body_timeout_ms: d_body_timeout(),
            idle_timeout_ms: d_idle_timeout(),
            max_streams_per_connection: d_streams(),
        }
    }
}

impl LimitsSection {
    pub(super) fn validate(&self) -> Result<(), String> {
        let l = self;
        if l.max_connections == 0 || l.max_streams_per_connection == 0 {
            return Err("limits.max_connections and max_streams_per_connection must be > 0".into());
        }
        for (k, v) in [
            ("handshake_timeout_ms", l.handshake_timeout_ms),
            ("header_timeout_ms", l.header_timeout_ms),
            ("body_timeout_ms", l.body_timeout_ms),
            ("idle_timeout_ms", l.idle_timeout_ms),
        ] {
            if v < 100 {
                return Err(format!("limits.{k} must be at least 100 ms, not {v}"));
            }
        }
        Ok(())
    }
}
