//! Free ports for the processes a command starts and writes into a configuration. A port from
//! `bind(0)` is an ephemeral one (32768 and up by default), which any outgoing connection of a
//! concurrent process may take between the choice and the process binding it — a replica then
//! stops with "Address already in use" (seen in a full test run). Ports are chosen instead at
//! random below the ephemeral range, where only explicit binds go, and held until all are chosen.
use anyhow::{bail, Result};
use std::net::TcpListener;

/// The range chosen from: below the kernel's default ephemeral range.
pub const LOW: u16 = 20_000;
pub const HIGH: u16 = 32_000;

/// A free port on `ip` in `LOW..HIGH`, held (its listener pushed onto `held`) so no later
/// choice repeats it.
pub fn free_port(ip: &str, held: &mut Vec<TcpListener>) -> Result<u16> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mut x = (std::process::id() as u64) << 20 ^ held.len() as u64 ^ nanos ^ 0x9e37_79b9;
    for _ in 0..1000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = LOW + ((x >> 33) % u64::from(HIGH - LOW)) as u16;
        if let Ok(l) = TcpListener::bind((ip, port)) {
            held.push(l);
            return Ok(port);
        }
    }
    bail!("no free port on {ip} in {LOW}..{HIGH}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_distinct_and_held() {
        let mut held = Vec::new();
        let ports: Vec<u16> = (0..20)
            .map(|_| free_port("127.0.0.1", &mut held).unwrap())
            .collect();
        assert!(ports.iter().all(|p| (LOW..HIGH).contains(p)), "{ports:?}");
        let mut d = ports.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), ports.len(), "{ports:?}");
        // Held: binding one again fails until the holders are dropped.
        assert!(TcpListener::bind(("127.0.0.1", ports[0])).is_err());
        drop(held);
        assert!(TcpListener::bind(("127.0.0.1", ports[0])).is_ok());
    }
}
