//! An in-memory group with instant, lossless delivery and instant durability. Used by the core's
//! own tests and by the throughput benchmark; the WAN simulator lives in `meridian-testkit`.
use crate::config::CoreConfig;
use crate::core::Core;
use crate::io::{Input, Output, Record};
use crate::quorum::Quorum;
use crate::types::{Batch, Command, Proposal, SiteId, Slot};
use std::collections::VecDeque;
use std::time::Duration;

pub struct LocalGroup {
    pub cores: Vec<Core>,
    pub now: Duration,
    /// Durable records per site.
    pub disks: Vec<Vec<Record>>,
    /// Applied (slot, batch) per site.
    pub applied: Vec<Vec<(Slot, Batch)>>,
    /// Sites that are down drop everything addressed to them.
    pub down: Vec<bool>,
    /// Messages for which this returns true are lost.
    pub drop: Option<fn(&crate::Message) -> bool>,
    /// Tokens handed back by `Apply` per site, in order.
    pub tokens: Vec<Vec<u64>>,
    next_token: u64,
    queue: VecDeque<(SiteId, Input)>,
}

impl LocalGroup {
    pub fn new(n: usize, cfg: impl Fn(SiteId) -> CoreConfig) -> LocalGroup {
        let cores = (0..n)
            .map(|i| Core::new(cfg(SiteId(i as u8)), Duration::ZERO))
            .collect();
        LocalGroup {
            cores,
            now: Duration::ZERO,
            disks: vec![Vec::new(); n],
            applied: vec![Vec::new(); n],
            down: vec![false; n],
            drop: None,
            tokens: vec![Vec::new(); n],
            next_token: 0,
            queue: VecDeque::new(),
        }
    }

    pub fn majority(n: usize) -> LocalGroup {
        LocalGroup::new(n, |me| CoreConfig::wan(me, Quorum::Majority(n), 7))
    }

    pub fn input(&mut self, site: SiteId, input: Input) {
        self.queue.push_back((site, input));
        self.run();
    }

    /// Delivers every queued input until the group is quiet.
    pub fn run(&mut self) {
        while let Some((site, input)) = self.queue.pop_front() {
            let i = site.0 as usize;
            if self.down[i] {
                continue;
            }
            let outs = self.cores[i].step(self.now, input);
            self.handle(site, outs);
        }
    }

    fn handle(&mut self, site: SiteId, outs: Vec<Output>) {
        let i = site.0 as usize;
        for o in outs {
            match o {
                Output::Send { msg, .. } if self.drop.is_some_and(|d| d(&msg)) => {}
                Output::Send { to, msg } => self
                    .queue
                    .push_back((to, Input::Message { from: site, msg })),
                Output::Persist { records, token } => {
                    self.disks[i].extend(records);
                    self.queue.push_back((site, Input::Persisted { token }));
                }
                Output::Apply {
                    slot,
                    batch,
                    tokens,
                } => {
                    self.applied[i].push((slot, batch));
                    self.tokens[i].extend(tokens);
                }
                Output::InstallSnapshot { .. }
                | Output::Abandoned { .. }
                | Output::ReadReady { .. }
                | Output::ReadRejected { .. }
                | Output::NotLeader { .. } => {}
            }
        }
    }

    /// Advances time by `d` in ticks of `step`, ticking every live core.
    pub fn advance(&mut self, d: Duration, step: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += step;
            for i in 0..self.cores.len() {
                self.queue.push_back((SiteId(i as u8), Input::Tick));
            }
            self.run();
        }
    }

    pub fn leader(&self) -> Option<SiteId> {
        self.cores
            .iter()
            .enumerate()
            .find(|(i, c)| !self.down[*i] && c.is_leader())
            .map(|(_, c)| c.me())
    }

    /// Proposes `commands` with fresh tokens (returned, in order).
    pub fn propose(&mut self, site: SiteId, commands: Vec<Command>) -> Vec<u64> {
        let proposals: Vec<Proposal> = commands
            .into_iter()
            .map(|command| {
                self.next_token += 1;
                Proposal {
                    token: self.next_token,
                    command,
                    writes: true,
                }
            })
            .collect();
        let tokens = proposals.iter().map(|p| p.token).collect();
        self.input(site, Input::Propose(proposals));
        tokens
    }

    /// Restarts `site` from its disk.
    pub fn restart(&mut self, site: SiteId, cfg: CoreConfig) {
        let i = site.0 as usize;
        let (core, outs) = Core::recover(cfg, self.now, self.disks[i].clone());
        self.cores[i] = core;
        self.down[i] = false;
        self.applied[i].clear();
        self.handle(site, outs);
    }
}
