//! The request table: which caller request each proposal token belongs to, and the results
//! gathered so far. Tokens are fresh per driver incarnation and never reused.
use crate::kv::{KvCommand, KvResult};
use std::collections::BTreeMap;

struct Pending {
    results: Vec<Option<KvResult>>,
    left: usize,
    tokens: Vec<u64>,
    log_read: bool,
}

#[derive(Default)]
pub(super) struct Requests {
    next_token: u64,
    /// token -> (request id, position in the request).
    tokens: BTreeMap<u64, (u64, usize)>,
    pending: BTreeMap<u64, Pending>,
    /// Leader reads waiting for the core's lease verdict: read id -> (request id, command).
    lease_reads: BTreeMap<u64, (u64, KvCommand)>,
    next_read: u64,
}

impl Requests {
    pub fn len(&self) -> usize {
        self.pending.len() + self.lease_reads.len()
    }

    /// Registers request `req` of `n` commands; returns one fresh token per command.
    pub fn register(&mut self, req: u64, n: usize, read_only: bool) -> Vec<u64> {
        let tokens: Vec<u64> = (0..n)
            .map(|pos| {
                self.next_token += 1;
                self.tokens.insert(self.next_token, (req, pos));
                self.next_token
            })
            .collect();
        self.pending.insert(
            req,
            Pending {
                results: vec![None; n],
                left: n,
                tokens: tokens.clone(),
                log_read: read_only,
            },
        );
        tokens
    }

    /// Records the result of `token`'s command; returns the request once every result is in.
    pub fn fill(&mut self, token: u64, result: KvResult) -> Option<(u64, Vec<KvResult>)> {
        let (req, pos) = self.tokens.remove(&token)?;
        let p = self.pending.get_mut(&req)?;
        if p.results[pos].is_none() {
            p.results[pos] = Some(result);
            p.left -= 1;
        }
        if p.left > 0 {
            return None;
        }
        let p = self.pending.remove(&req).expect("present");
        Some((
            req,
            p.results.into_iter().map(|r| r.expect("filled")).collect(),
        ))
    }

    /// The requests these tokens belong to, removed (each once): they are answered with a
    /// retryable error. Their other tokens are forgotten too.
    pub fn fail_tokens(&mut self, tokens: &[u64]) -> Vec<u64> {
        let mut failed = Vec::new();
        for t in tokens {
            let Some((req, _)) = self.tokens.remove(t) else {
                continue;
            };
            if let Some(p) = self.pending.remove(&req) {
                for other in &p.tokens {
                    self.tokens.remove(other);
                }
                failed.push(req);
            }
        }
        failed
    }

    /// Every pending read through the log (only the planted `LogReadSharedToken` bug uses it).
    pub fn take_all_log_reads(&mut self) -> Vec<(u64, ())> {
        let reads: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.log_read)
            .map(|(r, _)| *r)
            .collect();
        reads
            .into_iter()
            .map(|r| {
                let p = self.pending.remove(&r).expect("listed");
                for t in p.tokens {
                    self.tokens.remove(&t);
                }
                (r, ())
            })
            .collect()
    }

    /// A leader read waiting for the lease check; returns the core's read id.
    pub fn lease_read(&mut self, req: u64, cmd: KvCommand) -> u64 {
        self.next_read += 1;
        self.lease_reads.insert(self.next_read, (req, cmd));
        self.next_read
    }

    pub fn take_lease_read(&mut self, id: u64) -> Option<(u64, KvCommand)> {
        self.lease_reads.remove(&id)
    }
}
