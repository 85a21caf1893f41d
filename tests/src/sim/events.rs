//! The simulator's event queue: ordered by (true time, insertion sequence), so equal times are
//! processed in a deterministic order.
use meridian_core::Message;
use meridian_proxy::logic::{Call, CallResult};
use meridian_replica::kv::KvCommand;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::proxy::Answer;

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
    DiskDone {
        node: usize,
        incarnation: u64,
    },
    /// A snapshot the site's driver asked for is serialized (lost if the site crashed).
    SnapshotDone {
        node: usize,
        incarnation: u64,
        through: meridian_core::Slot,
        data: bytes::Bytes,
    },
    /// A proxy's delayed call (backoff) leaves now.
    CallSend {
        proxy: usize,
        op: u64,
        call: Call,
        read: Option<KvCommand>,
    },
    /// A proxy's call reaches a site.
    CallArrive {
        node: usize,
        proxy: usize,
        op: u64,
        call: Call,
        read: Option<KvCommand>,
    },
    CallReply {
        proxy: usize,
        op: u64,
        call: u32,
        site: usize,
        result: CallResult,
    },
    CallTimeout {
        proxy: usize,
        op: u64,
        call: u32,
        site: usize,
    },
    /// A client's request reaches its proxy.
    ProxyRequest {
        client: usize,
    },
    ClientReply {
        client: usize,
        answer: Answer,
    },
    ClientNext {
        client: usize,
    },
    Crash,
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
            | Event::DiskDone { node, .. }
            | Event::SnapshotDone { node, .. }
            | Event::CallArrive { node, .. } => Some(*node),
            _ => None,
        }
    }

    pub fn tag(&self) -> u64 {
        match self {
            Event::Deliver { .. } => 1,
            Event::Tick { .. } => 2,
            Event::DiskDone { .. } => 3,
            Event::CallSend { .. } => 4,
            Event::CallArrive { .. } => 5,
            Event::CallReply { .. } => 6,
            Event::CallTimeout { .. } => 7,
            Event::ProxyRequest { .. } => 8,
            Event::ClientReply { .. } => 9,
            Event::ClientNext { .. } => 10,
            Event::Crash => 11,
            Event::Pause => 12,
            Event::Restart { .. } => 13,
            Event::Partition { .. } => 14,
            Event::HealPartition => 15,
            Event::HealAll => 16,
            Event::SnapshotDone { .. } => 17,
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
