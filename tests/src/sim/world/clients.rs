//! The simulated clients' side of the world: the next operation, its request to the region's
//! proxy, and what its answer means for the checkers.
use super::*;

impl World {
    pub(super) fn client_next(&mut self, c: usize) {
        let keys = self.cfg.keys;
        let cl = &mut self.clients[c];
        if cl.remaining == 0 || cl.current.is_some() {
            return;
        }
        cl.seq += 1;
        let op = cl.next_op(c, keys, &mut self.rng);
        let op = cl.at_revision(op);
        self.clients[c].current = Some(Pending {
            op,
            invoke_ns: self.now,
        });
        self.q.push(
            self.now + CLIENT_PROXY_NS,
            Event::ProxyRequest { client: c },
        );
    }

    pub(super) fn proxy_request(&mut self, c: usize) {
        let Some(p) = self.clients[c].current.as_ref() else {
            return;
        };
        let (proxy, op) = (self.clients[c].proxy, p.op.clone());
        let now = Duration::from_nanos(self.now);
        let outs = match &op {
            ClientOp::Get {
                consistency, mode, ..
            } => {
                // Without quorum leases a forced lease read is refused by design: ask auto.
                let mode = match mode {
                    Mode::Lease if self.holders.is_empty() => Mode::Auto,
                    m => *m,
                };
                self.proxies[proxy].read(now, c, op.to_op(), *consistency, mode)
            }
            ClientOp::GetAt { .. } => {
                self.proxies[proxy].read(now, c, op.to_op(), Consistency::Serializable, Mode::Auto)
            }
            _ => self.proxies[proxy].write(now, c, op.to_op()),
        };
        self.proxy_outs(proxy, outs);
    }

    pub(super) fn on_answer(&mut self, c: usize, answer: Answer) {
        let Some(p) = self.clients[c].current.take() else {
            return;
        };
        let key = p.op.key().to_string();
        let list = key.starts_with('l');
        let mut h = HistoryOp {
            process: c as u64,
            op: OpKind::Get,
            key: key.clone(),
            value: None,
            expect: None,
            invoke_ns: p.invoke_ns,
            complete_ns: self.now,
            outcome: HOutcome::Ok,
            read: None,
            path: None,
        };
        let late = p.invoke_ns > self.heal_at + 5_000 * MS;
        let told = match &answer {
            Answer::Read(Ok(o)) => o.result.revision,
            Answer::Write(Ok(r)) => r.revision,
            _ => 0,
        };
        self.clients[c].revision = self.clients[c].revision.max(told);
        match (&p.op, answer) {
            (ClientOp::GetAt { revision, .. }, Answer::Read(Ok(o))) => {
                match &o.result.outcome {
                    Outcome::Scan { kvs, .. } if kvs.len() <= 1 => self.at_revision.answered(
                        o.site,
                        key.as_bytes(),
                        *revision,
                        kvs.first(),
                        &mut self.findings,
                    ),
                    // Below the answering replica's history, or above its revision: no
                    // answer, as the etcd edge says ("compacted", or it asks again).
                    Outcome::Compacted { .. } | Outcome::FutureRevision => {}
                    other => self.findings.violation(format!(
                        "client {c}: a read at revision {revision} answered with {other:?}"
                    )),
                }
                return self.next(c);
            }
            (ClientOp::GetAt { .. }, Answer::Read(Err(_))) => {
                self.incomplete += usize::from(late);
                return self.next(c);
            }
            (ClientOp::Get { consistency, .. }, Answer::Read(Ok(o))) => {
                *self.reads_by_path.entry(o.path.to_string()).or_default() += 1;
                let Outcome::Get { kv } = &o.result.outcome else {
                    self.findings
                        .violation(format!("client {c}: a get answered with {:?}", o.result));
                    return self.next(c);
                };
                let v = kv
                    .as_ref()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                if o.path == "local" {
                    // Not linearizable by contract: judged by the staleness checker.
                    if let Consistency::Bounded(b) = consistency {
                        let b = b.as_nanos() as u64;
                        self.staleness
                            .bounded_read(p.invoke_ns, b, o.result.revision, &key);
                    }
                    return self.next(c);
                }
                if list {
                    self.lists.read(&key, p.invoke_ns, self.now, v.as_deref());
                    return self.next(c);
                }
                self.clients[c].seen.insert(key, v.clone());
                h.read = v;
                h.path = Some(o.path.to_string());
            }
            (ClientOp::Get { .. }, Answer::Read(Err(e))) => {
                // With auto leases a forced lease read may find no holder (the leaders may
                // have chosen none): refused by contract, not a liveness failure.
                let refused = self.cfg.auto_leases && matches!(e, ServiceError::NoLease(_));
                self.incomplete += usize::from(late && !refused);
                return self.next(c);
            }
            (op, Answer::Write(Err(e))) => {
                self.incomplete += usize::from(late);
                if matches!(e, ServiceError::Overloaded) {
                    // Never sent: no effect.
                    return self.next(c);
                }
                h.outcome = HOutcome::Unknown;
                self.record_write(op, &mut h, None);
                if let ClientOp::Append { elem, .. } = op {
                    self.lists.append(&key, elem, p.invoke_ns, None);
                }
                if !list {
                    self.history.push(h);
                }
                return self.next(c);
            }
            (op, Answer::Write(Ok(r))) => {
                self.staleness.write_acked(self.now, r.revision);
                if let ClientOp::Append { elem, .. } = op {
                    self.lists.append(&key, elem, p.invoke_ns, Some(self.now));
                    return self.next(c);
                }
                if !self.record_write(op, &mut h, Some(r.outcome)) {
                    return self.next(c);
                }
            }
            (op, a) => {
                self.findings
                    .violation(format!("client {c}: {op:?} answered with {a:?}"));
                return self.next(c);
            }
        }
        self.history.push(h);
        self.next(c);
    }

    /// Fills a write's history entry; false if the reply does not fit the operation.
    pub(super) fn record_write(
        &mut self,
        op: &ClientOp,
        h: &mut HistoryOp,
        outcome: Option<Outcome>,
    ) -> bool {
        let c = h.process as usize;
        match (op, outcome) {
            (ClientOp::Put { value, .. }, None | Some(Outcome::Put { .. })) => {
                h.op = OpKind::Put;
                h.value = Some(value.clone());
            }
            (ClientOp::Delete { .. }, None | Some(Outcome::Delete { .. })) => h.op = OpKind::Delete,
            (ClientOp::Cas { expect, value, .. }, o) => {
                h.op = OpKind::Cas;
                h.expect = expect.clone();
                h.value = Some(value.clone());
                match o {
                    Some(Outcome::Txn { succeeded, .. }) => {
                        h.outcome = if succeeded {
                            HOutcome::Ok
                        } else {
                            HOutcome::Fail
                        };
                        if succeeded {
                            self.clients[c]
                                .seen
                                .insert(h.key.clone(), Some(value.clone()));
                        }
                    }
                    None => {}
                    Some(other) => {
                        self.findings
                            .violation(format!("client {c}: {op:?} answered with {other:?}"));
                        return false;
                    }
                }
            }
            (ClientOp::Append { .. }, _) => {}
            (op, Some(other)) => {
                self.findings
                    .violation(format!("client {c}: {op:?} answered with {other:?}"));
                return false;
            }
            (ClientOp::Get { .. } | ClientOp::GetAt { .. }, None) => return false,
        }
        true
    }

    pub(super) fn next(&mut self, c: usize) {
        self.clients[c].remaining -= 1;
        let think = self.rng.below(200 * MS);
        self.q
            .push(self.now + think, Event::ClientNext { client: c });
    }
}
