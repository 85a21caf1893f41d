//! One batch of writes as a state machine: sent to the shard's leader, following redirects and
//! retrying transient failures with the *same* exactly-once identities until the deadline; a
//! permanent refusal is never retried.
use super::{backoff, retarget, Call, CallKind, CallResult, ServiceError, Step, WRITE_TIMEOUT};
use meridian_replica::kv::{KvCommand, KvResult};
use std::time::Duration;

pub use super::read_op::ATTEMPT_TIMEOUT;

pub struct WriteOp {
    commands: Vec<KvCommand>,
    sites: usize,
    leader: Option<usize>,
    deadline: Duration,
    target: usize,
    attempt: u32,
    live: Option<u32>,
    next_id: u32,
    /// The planted `proxy-retry-new-seq` bug: every retry takes a new sequence number.
    retry_new_seq: bool,
}

impl WriteOp {
    pub fn new(
        commands: Vec<KvCommand>,
        sites: usize,
        leader: Option<usize>,
        deadline: Duration,
        retry_new_seq: bool,
    ) -> WriteOp {
        WriteOp {
            commands,
            sites,
            leader,
            deadline,
            target: leader.unwrap_or(0),
            attempt: 0,
            live: None,
            next_id: 0,
            retry_new_seq,
        }
    }

    pub fn start(&mut self, now: Duration) -> Vec<Step<Vec<KvResult>>> {
        self.send(now, Duration::ZERO)
    }

    /// The leader this write learned (from its answer or redirects).
    pub fn leader_guess(&self) -> Option<usize> {
        self.leader
    }

    fn send(&mut self, now: Duration, delay: Duration) -> Vec<Step<Vec<KvResult>>> {
        let left = self.deadline.saturating_sub(now);
        if left <= delay {
            self.live = None;
            return vec![Step::Done(Err(ServiceError::Timeout(WRITE_TIMEOUT)))];
        }
        self.next_id += 1;
        self.live = Some(self.next_id);
        vec![Step::Call(Call {
            id: self.next_id,
            site: self.target,
            kind: CallKind::Submit {
                commands: self.commands.clone(),
            },
            delay,
            timeout: (left - delay).min(ATTEMPT_TIMEOUT),
        })]
    }

    pub fn on_result(&mut self, now: Duration, id: u32, r: CallResult) -> Vec<Step<Vec<KvResult>>> {
        if self.live != Some(id) {
            return Vec::new();
        }
        self.live = None;
        self.attempt += 1;
        match r {
            CallResult::Submit(results) => {
                self.leader = Some(self.target);
                vec![Step::Done(Ok(results))]
            }
            CallResult::Refused(m) => vec![Step::Done(Err(ServiceError::Refused(m)))],
            CallResult::NotLeader(Some(h)) if h != self.target && h < self.sites => {
                self.leader = Some(h);
                self.target = h;
                self.retry(now, Duration::ZERO)
            }
            _ => {
                if self.leader == Some(self.target) {
                    self.leader = None;
                }
                self.target = retarget(self.leader, self.target, self.sites);
                self.retry(now, backoff(self.attempt - 1))
            }
        }
    }

    fn retry(&mut self, now: Duration, delay: Duration) -> Vec<Step<Vec<KvResult>>> {
        if self.retry_new_seq {
            for c in &mut self.commands {
                c.seq += 1;
            }
        }
        self.send(now, delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_replica::kv::Op;

    fn w() -> WriteOp {
        let c = KvCommand {
            client: 9,
            seq: 4,
            op: Op::Delete { key: b"k".to_vec() },
        };
        WriteOp::new(vec![c], 5, Some(1), Duration::from_secs(5), false)
    }

    fn seq_of(s: &[Step<Vec<KvResult>>]) -> (usize, u64, u32) {
        match &s[0] {
            Step::Call(Call {
                site,
                id,
                kind: CallKind::Submit { commands },
                ..
            }) => (*site, commands[0].seq, *id),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn retries_keep_the_identity_and_follow_hints() {
        let mut op = w();
        let (site, seq, id) = seq_of(&op.start(Duration::ZERO));
        assert_eq!((site, seq), (1, 4));
        let (site, seq, id) = seq_of(&op.on_result(Duration::ZERO, id, CallResult::Failed));
        assert_eq!((site, seq), (2, 4));
        let (site, seq, _) =
            seq_of(&op.on_result(Duration::ZERO, id, CallResult::NotLeader(Some(3))));
        assert_eq!((site, seq), (3, 4));
    }

    #[test]
    fn a_permanent_refusal_ends_the_write_at_once() {
        let mut op = w();
        let (_, _, id) = seq_of(&op.start(Duration::ZERO));
        let s = op.on_result(Duration::ZERO, id, CallResult::Refused("too big".into()));
        assert_eq!(
            s,
            vec![Step::Done(Err(ServiceError::Refused("too big".into())))]
        );
    }

    #[test]
    fn the_deadline_ends_retries_with_an_unknown_outcome() {
        let mut op = w();
        let (_, _, id) = seq_of(&op.start(Duration::ZERO));
        let s = op.on_result(Duration::from_secs(5), id, CallResult::Failed);
        assert_eq!(
            s,
            vec![Step::Done(Err(ServiceError::Timeout(WRITE_TIMEOUT)))]
        );
    }
}
