//! A precise delay line for WAN emulation. Tokio's timer has millisecond granularity and rounds
//! every deadline up, which would add up to a millisecond per emulated hop; this one thread
//! releases each scheduled action within tens of microseconds of its deadline. Actions run on
//! the delay thread and must be quick (a channel send). Equal deadlines run in schedule order,
//! so a link with a constant delay stays FIFO.
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

type Action = Box<dyn FnOnce() + Send>;

struct Item {
    at: Instant,
    seq: u64,
    action: Action,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    /// Reversed: the heap's top is the earliest deadline.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Item>,
    seq: u64,
}

pub struct DelayLine {
    state: Mutex<State>,
    wake: Condvar,
}

impl DelayLine {
    /// The process-wide delay line (its thread starts on first use).
    pub fn global() -> &'static Arc<DelayLine> {
        static LINE: OnceLock<Arc<DelayLine>> = OnceLock::new();
        LINE.get_or_init(|| {
            let line = Arc::new(DelayLine {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            });
            let l = line.clone();
            std::thread::Builder::new()
                .name("delay-line".into())
                .spawn(move || l.run())
                .expect("spawn delay line");
            line
        })
    }

    /// Runs `action` at `at` (immediately if that has passed).
    pub fn schedule(&self, at: Instant, action: impl FnOnce() + Send + 'static) {
        let mut s = self.state.lock().expect("delay line lock");
        s.seq += 1;
        let seq = s.seq;
        let earliest = s.heap.peek().is_none_or(|top| at < top.at);
        s.heap.push(Item {
            at,
            seq,
            action: Box::new(action),
        });
        drop(s);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Resolves after `d`, precisely (zero returns at once).
    pub async fn sleep(&self, d: Duration) {
        if d.is_zero() {
            return;
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.schedule(Instant::now() + d, move || {
            let _ = tx.send(());
        });
        let _ = rx.await;
    }

    fn run(&self) {
        let mut s = self.state.lock().expect("delay line lock");
        loop {
            let now = Instant::now();
            match s.heap.peek().map(|i| i.at) {
                Some(at) if at <= now => {
                    let item = s.heap.pop().expect("peeked");
                    drop(s);
                    (item.action)();
                    s = self.state.lock().expect("delay line lock");
                }
                Some(at) => {
                    s = self
                        .wake
                        .wait_timeout(s, at - now)
                        .expect("delay line lock")
                        .0
                }
                None => s = self.wake.wait(s).expect("delay line lock"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_run_in_deadline_order_and_fifo_on_ties() {
        let line = DelayLine::global();
        let (tx, rx) = std::sync::mpsc::channel();
        let t0 = Instant::now() + Duration::from_millis(20);
        for (i, off) in [(0, 10u64), (1, 0), (2, 10), (3, 5)] {
            let tx = tx.clone();
            line.schedule(t0 + Duration::from_millis(off), move || tx.send(i).unwrap());
        }
        let got: Vec<i32> = (0..4).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(got, vec![1, 3, 0, 2]);
    }
}
