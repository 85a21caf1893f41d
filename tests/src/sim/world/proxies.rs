//! The simulated proxies' side of the world: what a proxy sends, calls crossing the WAN to a
//! site's driver, and the site's replies back.
use super::*;

impl World {
    pub(super) fn proxy_outs(&mut self, p: usize, outs: Vec<ProxyOut>) {
        for o in outs {
            match o {
                ProxyOut::Call { op, call, read } => {
                    if call.delay.is_zero() {
                        self.send_call(p, op, call, read);
                    } else {
                        let at = self.now + call.delay.as_nanos() as u64;
                        let call = meridian_proxy::logic::Call {
                            delay: Duration::ZERO,
                            ..call
                        };
                        self.q.push(
                            at,
                            Event::CallSend {
                                proxy: p,
                                op,
                                call,
                                read,
                            },
                        );
                    }
                }
                ProxyOut::Reply { client, answer } => self.q.push(
                    self.now + CLIENT_PROXY_NS,
                    Event::ClientReply { client, answer },
                ),
            }
        }
    }

    pub(super) fn send_call(
        &mut self,
        p: usize,
        op: u64,
        call: meridian_proxy::logic::Call,
        read: Option<KvCommand>,
    ) {
        let site = call.site;
        let timeout = self.now + call.timeout.as_nanos() as u64;
        let id = call.id;
        self.q.push(
            timeout,
            Event::CallTimeout {
                proxy: p,
                op,
                call: id,
                site,
            },
        );
        let at = self.now
            + self
                .net
                .one_way(self.proxies[p].region, self.nodes[site].region);
        self.q.push(
            at,
            Event::CallArrive {
                node: site,
                proxy: p,
                op,
                call,
                read,
            },
        );
    }

    pub(super) fn call_arrives(
        &mut self,
        node: usize,
        proxy: usize,
        op: u64,
        call: meridian_proxy::logic::Call,
        read: Option<KvCommand>,
    ) {
        if self.nodes[node].driver.is_none() {
            return;
        }
        let (request, submit) = match call.kind {
            CallKind::Submit { commands } => (
                Request::Submit {
                    commands: commands
                        .iter()
                        .map(meridian_replica::kv::EncodedCommand::from)
                        .collect(),
                },
                true,
            ),
            CallKind::Read {
                mode,
                min_applied,
                wait,
            } => (
                Request::Read {
                    command: read.expect("reads carry their command"),
                    mode,
                    min_applied,
                    wait,
                },
                false,
            ),
        };
        let nd = &mut self.nodes[node];
        nd.next_call += 1;
        let id = nd.next_call;
        nd.calls.insert(
            id,
            CallOrigin {
                proxy,
                op,
                call: call.id,
                submit,
                arrived: self.now,
            },
        );
        self.step(
            node,
            DEvent::Client {
                id,
                request,
                origin: Some(proxy as u8),
            },
        );
    }

    pub(super) fn site_reply(&mut self, i: usize, id: u64, reply: Reply) {
        let Some(o) = self.nodes[i].calls.remove(&id) else {
            return;
        };
        let result = match reply {
            Reply::Done { results, .. } if o.submit => {
                self.commit_latency.push(self.now - o.arrived);
                CallResult::Submit(results)
            }
            Reply::Done {
                mut results,
                path,
                applied,
            } => CallResult::Read(SiteRead {
                result: results.swap_remove(0),
                path: path.to_string(),
                applied,
                barrier: 0,
                staleness_ms: 0,
            }),
            Reply::Local {
                result,
                path,
                applied,
                barrier,
                staleness_ms,
            } => CallResult::Read(SiteRead {
                result,
                path: path.to_string(),
                applied,
                barrier,
                staleness_ms,
            }),
            Reply::NotLeader { hint } => CallResult::NotLeader(hint),
            Reply::Overloaded | Reply::Timeout => CallResult::Failed,
            Reply::NotHolder => CallResult::NotHolder,
        };
        let at = self.now
            + self
                .net
                .one_way(self.nodes[i].region, self.proxies[o.proxy].region);
        self.q.push(
            at,
            Event::CallReply {
                proxy: o.proxy,
                op: o.op,
                call: o.call,
                site: i,
                result,
            },
        );
    }
}
