//! Write batching bounds: a batch never exceeds a command count nor a byte size below the
//! replica's message limit, so a batch of large writes is never refused as a whole.
use std::collections::VecDeque;

/// Largest batch in bytes of encoded commands: under the replica's 4 MiB message limit with
/// room for framing.
pub const MAX_BATCH_BYTES: usize = 3 << 20;

/// Takes the next batch off `queue`: at least one item, then while both bounds hold.
pub fn take<T>(
    queue: &mut VecDeque<T>,
    size: impl Fn(&T) -> usize,
    max_items: usize,
    max_bytes: usize,
) -> Vec<T> {
    let mut out = Vec::new();
    let mut bytes = 0;
    while let Some(front) = queue.front() {
        let s = size(front);
        if !out.is_empty() && (out.len() >= max_items || bytes + s > max_bytes) {
            break;
        }
        bytes += s;
        out.push(queue.pop_front().expect("front exists"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_writes_split_into_batches_under_the_byte_bound() {
        // 24 writes of 1 MiB: at most 3 per batch.
        let mut q: VecDeque<usize> = std::iter::repeat_n(1 << 20, 24).collect();
        let mut batches = Vec::new();
        while !q.is_empty() {
            batches.push(take(&mut q, |s| *s, 256, MAX_BATCH_BYTES));
        }
        assert_eq!(batches.len(), 8);
        assert!(batches
            .iter()
            .all(|b| b.iter().sum::<usize>() <= MAX_BATCH_BYTES));
    }

    #[test]
    fn one_oversized_item_still_goes_alone_and_counts_bound() {
        let mut q: VecDeque<usize> = [10 << 20, 1, 1, 1].into_iter().collect();
        assert_eq!(take(&mut q, |s| *s, 2, MAX_BATCH_BYTES), vec![10 << 20]);
        assert_eq!(take(&mut q, |s| *s, 2, MAX_BATCH_BYTES), vec![1, 1]);
    }
}

/// The per-shard write queue of a proxy: which writes leave together, and when. A batch leaves
/// as soon as fewer than `max_inflight` batches are in flight (no added delay); it holds what is
/// queued then, within the count and byte bounds. `meridian proxy` and the simulator's proxies
/// both dispatch through it.
pub struct WriteQueue<J> {
    queue: VecDeque<J>,
    inflight: usize,
    max_inflight: usize,
    max_items: usize,
    max_bytes: usize,
}

impl<J> WriteQueue<J> {
    pub fn new(max_inflight: usize, max_items: usize, max_bytes: usize) -> WriteQueue<J> {
        WriteQueue {
            queue: VecDeque::new(),
            inflight: 0,
            max_inflight,
            max_items,
            max_bytes,
        }
    }

    pub fn push(&mut self, job: J) {
        self.queue.push_back(job);
    }

    /// The next batch to send now, if one may leave.
    pub fn next_batch(&mut self, size: impl Fn(&J) -> usize) -> Option<Vec<J>> {
        if self.inflight >= self.max_inflight || self.queue.is_empty() {
            return None;
        }
        self.inflight += 1;
        Some(take(&mut self.queue, size, self.max_items, self.max_bytes))
    }

    /// A batch got its answer.
    pub fn finished(&mut self) {
        self.inflight = self.inflight.saturating_sub(1);
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    #[test]
    fn batches_leave_at_once_up_to_the_inflight_bound() {
        let mut q: WriteQueue<usize> = WriteQueue::new(2, 3, MAX_BATCH_BYTES);
        for _ in 0..10 {
            q.push(1);
        }
        assert_eq!(q.next_batch(|s| *s).map(|b| b.len()), Some(3));
        assert_eq!(q.next_batch(|s| *s).map(|b| b.len()), Some(3));
        assert!(q.next_batch(|s| *s).is_none(), "two in flight");
        q.finished();
        assert_eq!(q.next_batch(|s| *s).map(|b| b.len()), Some(3));
        assert_eq!(q.queued(), 1);
    }
}
