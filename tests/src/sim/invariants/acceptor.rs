//! The acceptor rule (Lamport, "Paxos Made Simple" §2.2, P1a): an acceptor accepts a proposal
//! numbered n only if it has not promised (or accepted) a higher number — across crashes too.
//! Checked on every acknowledgement a replica sends.
use super::durability::Acknowledged;
use super::Findings;
use meridian_core::Message;

pub fn check_send(site: usize, acked: &Acknowledged, msg: &Message, f: &mut Findings) {
    if let Message::Accepted { ballot, slot, .. } = msg {
        if *ballot < acked.promised() {
            f.violation(format!(
                "acceptor: site {site} accepted slot {} at {ballot:?} after promising {:?}",
                slot.0,
                acked.promised()
            ));
        }
    }
}
