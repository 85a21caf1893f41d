//! Catch-up: a lagging or restarted replica fetches chosen entries by range, or a snapshot when
//! the entries it needs were compacted.
use crate::core::Core;
use crate::io::{Output, Record};
use crate::message::Message;
use crate::types::{Batch, SiteId, Slot};
use bytes::Bytes;

impl Core {
    /// Asks `peer` for chosen entries after our commit index (rate-limited).
    pub(crate) fn request_catchup(&mut self, peer: SiteId) {
        if self.now < self.catchup_next_allowed || peer == self.cfg.me {
            return;
        }
        self.catchup_next_allowed = self.now + self.cfg.retransmit_interval;
        self.send(
            peer,
            Message::CatchUpRequest {
                from_slot: self.commit.next(),
            },
        );
    }

    pub(crate) fn on_catchup_request(&mut self, from: SiteId, from_slot: Slot) {
        if from_slot < self.log.first_held() {
            if let Some((through, data)) = self.log.snapshot().cloned() {
                if from_slot <= through {
                    self.send(from, Message::Snapshot { through, data });
                    return;
                }
            }
        }
        let entries = self
            .log
            .chosen_from(from_slot, self.cfg.catchup_max_entries);
        if !entries.is_empty() {
            self.send(
                from,
                Message::CatchUpReply {
                    entries,
                    commit: self.commit,
                },
            );
        }
    }

    pub(crate) fn on_catchup_reply(
        &mut self,
        from: SiteId,
        entries: Vec<(Slot, Batch)>,
        commit: Slot,
    ) {
        // A leader learns chosen values only from its own phase 2: catch-up is for followers
        // and candidates (closing by construction any interleaving with its own proposals).
        if self.is_leader() {
            return;
        }
        let full = entries.len() >= self.cfg.catchup_max_entries;
        for (slot, batch) in entries {
            if self.log.insert_chosen(slot, batch.clone()) {
                self.stage(Record::Chosen { slot, batch });
            }
        }
        self.leader_commit_seen = self.leader_commit_seen.max(commit);
        self.after_catchup(from, full);
    }

    pub(crate) fn on_snapshot(&mut self, from: SiteId, through: Slot, data: Bytes) {
        if through <= self.commit || self.is_leader() {
            return;
        }
        self.log.install(through, data.clone());
        self.stage(Record::Snapshot {
            through,
            data: data.clone(),
        });
        self.out.push(Output::InstallSnapshot { through, data });
        self.commit = through;
        self.applied = through;
        self.after_catchup(from, true);
    }

    fn after_catchup(&mut self, from: SiteId, more: bool) {
        self.advance_commit();
        if more && self.commit < self.leader_commit_seen {
            self.catchup_next_allowed = self.now;
            self.request_catchup(from);
        }
        self.try_finish_phase1();
    }
}
