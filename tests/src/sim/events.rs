//! The simulator's event queue: ordered by (true time, insertion sequence), so equal times are
//! processed in a deterministic order.
use meridian_core::Message;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::client::{ClientReply, ClientRequest};

#[derive(Debug)]
pub enum Event {
    Deliver {
        to: usize,
        from: usize,
        msg: Message,
    },
    Tick {
        node: usize,
        incarnation: u64,
    },
    PersistDone {
        node: usize,
        token: u64,
        incarnation: u64,
    },
    Request {
        node: usize,
        req: ClientRequest,
    },
    Reply {
        client: usize,
        reply: ClientReply,
    },
    ClientTimeout {
        client: usize,
        seq: u64,
        attempt: u32,
    },
    ClientNext {
        client: usize,
    },
    Crash {
        node: usize,
    },
    Pause,
    Restart {
        node: usize,
    },
    /// A clean split (`side` vs the rest), or, with `links`, that many random link cuts.
    Partition {
        side: u32,
        links: u32,
    },
    HealPartition,
    HealAll,
}

impl Event {
    /// The site this event happens at, if it is one (a stalled site defers it).
    pub fn site(&self) -> Option<usize> {
        match self {
            Event::Deliver { to, .. } => Some(*to),
            Event::Tick { node, .. }
            | Event::PersistDone { node, .. }
            | Event::Request { node, .. } => Some(*node),
            _ => None,
        }
    }

    pub fn tag(&self) -> u64 {
        match self {
            Event::Deliver { .. } => 1,
            Event::Tick { .. } => 2,
            Event::PersistDone { .. } => 3,
            Event::Request { .. } => 4,
            Event::Reply { .. } => 5,
            Event::ClientTimeout { .. } => 6,
            Event::ClientNext { .. } => 7,
            Event::Crash { .. } => 8,
            Event::Restart { .. } => 9,
            Event::Partition { .. } => 10,
            Event::HealPartition => 11,
            Event::HealAll => 12,
            Event::Pause => 13,
        }
    }
}

struct Item {
    at: u64,
    seq: u64,
    ev: Event,
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
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Default)]
pub struct Queue {
    heap: BinaryHeap<Reverse<Item>>,
    seq: u64,
}

impl Queue {
    pub fn push(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.heap.push(Reverse(Item {
            at,
            seq: self.seq,
            ev,
        }));
    }
    pub fn pop(&mut self) -> Option<(u64, Event)> {
        self.heap.pop().map(|Reverse(i)| (i.at, i.ev))
    }
}
