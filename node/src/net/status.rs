//! What the node holds and knows, for `phr node status`, `phr status` and `phr peers`.

use super::*;

impl Node {
    pub(super) fn held(&self) -> Vec<Held> {
        self.engine
            .replicas()
            .values()
            .filter(|r| r.is_held())
            .map(held_of)
            .collect()
    }

    /// What [`Node::held`] says of one record, found without walking the others.
    pub(super) fn held_record(&self, record: &RecordId) -> Option<Held> {
        self.engine
            .replicas()
            .get(record)
            .filter(|r| r.is_held())
            .map(held_of)
    }

    /// Answers those waiting for a record to be held as they say, once it is (one record each).
    pub(super) fn answer_held_waiters(&mut self) {
        for (record, like, reply) in std::mem::take(&mut self.held_waiters) {
            match self.held_record(&record).filter(|held| {
                held.ledger_ops == like.ledger_ops
                    && like
                        .blobs
                        .iter()
                        .all(|(section, n)| held.blobs.get(section).copied().unwrap_or(0) == *n)
            }) {
                Some(held) => {
                    let _ = reply.send(held);
                }
                None if reply.is_closed() => {}
                None => self.held_waiters.push((record, like, reply)),
            }
        }
    }

    pub(super) fn status(&self) -> api::NodeStatus {
        let now = Self::now();
        let records = self
            .held()
            .into_iter()
            .map(|held| {
                let confirmed = self.confirmed.get(&held.record);
                let replica = &self.engine.replicas()[&held.record];
                let unsynced = Section::ALL
                    .into_iter()
                    .flat_map(|s| replica.blob_ids(s))
                    .filter(|id| !confirmed.is_some_and(|c| c.contains(id)))
                    .count();
                api::RecordStatus {
                    record: held.record.to_string(),
                    blobs: held.blobs,
                    ledger_ops: held.ledger_ops,
                    unsynced,
                }
            })
            .collect();
        // Which held records admit each peer, in one pass over the records (not one per peer).
        let mut records_of: BTreeMap<PeerId, Vec<String>> = BTreeMap::new();
        for replica in self.engine.replicas().values().filter(|r| r.is_held()) {
            for peer in replica.ledger().state().admitted_peers(now) {
                records_of
                    .entry(peer)
                    .or_default()
                    .push(replica.id().to_string());
            }
        }
        let admitted = self.engine.admitted_peers(now);
        let withdrawn = self.engine.withdrawn_peers(now);
        let mut all: BTreeSet<libp2p::PeerId> = self.peers.keys().copied().collect();
        all.extend(admitted.iter().map(to_libp2p));
        all.extend(withdrawn.keys().map(to_libp2p));
        let peers = all
            .into_iter()
            .map(|lp| {
                let peer = from_libp2p(&lp);
                let known = self.peers.get(&lp);
                api::PeerStatus {
                    peer: lp.to_string(),
                    name: peer.and_then(|p| self.name_of(&p)),
                    addrs: known
                        .map(|k| k.addrs.iter().map(|a| a.to_string()).collect())
                        .unwrap_or_default(),
                    connected: self.swarm.is_connected(&lp),
                    records: peer
                        .and_then(|p| records_of.get(&p).cloned())
                        .unwrap_or_default(),
                    last_sync: known
                        .and_then(|k| k.last_sync_ms)
                        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                        .map(|t| t.to_string()),
                    last_error: known.and_then(|k| k.last_error.clone()),
                    withdrawn: peer
                        .and_then(|p| withdrawn.get(&p))
                        .into_iter()
                        .flatten()
                        .map(|(record, how)| api::Withdrawn {
                            record: record.to_string(),
                            how: how.to_string(),
                        })
                        .collect(),
                }
            })
            .collect();
        api::NodeStatus {
            peer: self.me.to_string(),
            pid: std::process::id(),
            listening: self
                .listen_addrs
                .iter()
                .map(|a| {
                    a.clone()
                        .with(Protocol::P2p(*self.swarm.local_peer_id()))
                        .to_string()
                })
                .collect(),
            relay: self.relay,
            leased: matches!(self.home, Slot::Parked { .. }),
            records,
            peers,
        }
    }

    /// A finished sync with `peer` shows that it holds every blob of `record` it may hold.
    pub(super) fn confirm(&mut self, peer: PeerId, record: RecordId, now: i64) {
        let Some(replica) = self.engine.replicas().get(&record) else {
            return;
        };
        let confirmed = self.confirmed.entry(record).or_default();
        for section in Section::ALL {
            if replica.may_hold(&peer, section, now) {
                confirmed.extend(replica.blob_ids(section));
            }
        }
    }
}

/// What a node holds of one record: its blobs per section and its ledger operations.
fn held_of(replica: &phr_core::replica::Replica) -> Held {
    Held {
        record: replica.id(),
        blobs: Section::ALL
            .into_iter()
            .map(|s| (s, replica.blob_ids(s).count()))
            .filter(|(_, n)| *n > 0)
            .collect(),
        ledger_ops: replica.ledger().len(),
    }
}
