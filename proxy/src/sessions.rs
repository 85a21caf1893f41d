//! Exactly-once identities for the writes a proxy forwards. The state machine remembers the last
//! sequence number per client id, so concurrent requests must not share an id: the proxy owns a
//! bounded pool of ids, each used by one request at a time with increasing sequence numbers.
//! Retries of a request reuse its (id, seq), so a retried write applies once.
use std::sync::Mutex;

pub struct Sessions {
    free: Mutex<Vec<(u64, u64)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub client: u64,
    pub seq: u64,
}

impl Sessions {
    /// `base` must differ between proxy incarnations (e.g. derived from the start time).
    pub fn new(base: u64, count: u64) -> Sessions {
        Sessions {
            free: Mutex::new((0..count).map(|i| (base.wrapping_add(i), 1)).collect()),
        }
    }

    /// A free identity, or None when all are in use (the caller sheds load).
    pub fn acquire(&self) -> Option<Session> {
        self.free
            .lock()
            .expect("sessions lock")
            .pop()
            .map(|(client, seq)| Session { client, seq })
    }

    /// Returns the identity; its next request uses the following sequence number.
    pub fn release(&self, s: Session) {
        self.free
            .lock()
            .expect("sessions lock")
            .push((s.client, s.seq + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_exclusive_and_sequences_grow() {
        let p = Sessions::new(100, 2);
        let a = p.acquire().unwrap();
        let b = p.acquire().unwrap();
        assert_ne!(a.client, b.client);
        assert!(p.acquire().is_none(), "pool exhausted");
        p.release(a);
        let a2 = p.acquire().unwrap();
        assert_eq!((a2.client, a2.seq), (a.client, a.seq + 1));
    }
}
