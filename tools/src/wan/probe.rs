//! `meridian wan ping`: round trips between two emulated hosts, through both hosts' real
//! kernel stacks: a UDP echo server in one namespace, a prober in the other.
use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Echoes every datagram back until `idle` passes with none.
pub fn echo(bind: SocketAddr, idle: Duration) -> Result<()> {
    let s = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    s.set_read_timeout(Some(idle))?;
    // Tell the parent we listen.
    println!("listening {bind}");
    let mut buf = [0u8; 1500];
    loop {
        match s.recv_from(&mut buf) {
            Ok((n, from)) => {
                s.send_to(&buf[..n], from)?;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Ok(())
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends `count` probes `interval` apart; returns each round trip in ms (None: lost).
pub fn probe(to: SocketAddr, count: usize, interval: Duration) -> Result<Vec<Option<f64>>> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.connect(to)?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0..count as u64 {
        let t0 = Instant::now();
        s.send(&i.to_be_bytes())?;
        let rtt = loop {
            match s.recv(&mut buf) {
                Ok(8) if buf[..8] == i.to_be_bytes() => {
                    break Some(t0.elapsed().as_secs_f64() * 1e3)
                }
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        out.push(rtt);
        std::thread::sleep(interval);
    }
    if out.iter().all(Option::is_none) {
        bail!("no probe to {to} came back");
    }
    Ok(out)
}
