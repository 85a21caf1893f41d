//! Exactly-once identities for the writes a proxy forwards. The state machine remembers the last
//! sequence number per client id, so concurrent requests must not share an id: the proxy owns a
//! bounded pool of ids, each used by one request at a time with increasing sequence numbers.
//! Retries of a request reuse its (id, seq), so a retried write applies once.
//!
//! An `Identity` goes back to the pool when it is dropped — on every exit path, a client that
//! hung up mid-write (a cancelled request future) included. Its next use takes the following
//! sequence number, so a late apply of the abandoned command is `Stale` there, never a duplicate.
use std::sync::{Arc, Mutex};

pub struct Sessions {
    free: Mutex<Vec<(u64, u64)>>,
    count: usize,
}

pub struct Identity {
    pub client: u64,
    pub seq: u64,
    pool: Arc<Sessions>,
}

impl Drop for Identity {
    fn drop(&mut self) {
        self.pool
            .free
            .lock()
            .expect("sessions lock")
            .push((self.client, self.seq + 1));
    }
}

impl Sessions {
    /// `base` must differ between proxy incarnations (e.g. derived from the start time).
    pub fn new(base: u64, count: u64) -> Arc<Sessions> {
        Arc::new(Sessions {
            free: Mutex::new((0..count).map(|i| (base.wrapping_add(i), 1)).collect()),
            count: count as usize,
        })
    }

    /// A free identity, or None when all are in use (the caller sheds load).
    pub fn acquire(self: &Arc<Self>) -> Option<Identity> {
        let (client, seq) = self.free.lock().expect("sessions lock").pop()?;
        Some(Identity {
            client,
            seq,
            pool: self.clone(),
        })
    }

    /// Identities currently held by requests.
    pub fn in_use(&self) -> usize {
        self.count - self.free.lock().expect("sessions lock").len()
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
        let (client, seq) = (a.client, a.seq);
        drop(a);
        let a2 = p.acquire().unwrap();
        assert_eq!((a2.client, a2.seq), (client, seq + 1));
        drop(b);
        assert_eq!(p.in_use(), 1);
    }

    #[test]
    fn a_cancelled_request_future_returns_its_identity() {
        // Issue "One system under test", defect 4: a client hanging up mid-write.
        let p = Sessions::new(0, 1);
        let fut = {
            let p = p.clone();
            async move {
                let _id = p.acquire().unwrap();
                std::future::pending::<()>().await;
            }
        };
        let mut fut = Box::pin(fut);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(std::future::Future::poll(fut.as_mut(), &mut cx).is_pending());
        assert_eq!(p.in_use(), 1);
        drop(fut);
        assert_eq!(p.in_use(), 0);
        assert!(p.acquire().is_some());
    }
}
