//! The simulator's invariants, checked after every step and at the end.

use std::collections::{BTreeMap, BTreeSet};

use phr_core::{
    Record,
    blob::Blob,
    consent,
    keys::{BlobId, KeyId, PeerId, RecordId},
    ledger::{Ledger, OpBody, SignedOp},
    party::Role,
    replica::{HELD_BLOBS_PER_AUTHOR_MAX, HELD_BYTES_PER_AUTHOR_MAX, Replica},
    section::Section,
    store::Store,
    sync::{Incoming, message::Message},
};

use super::{LAPTOP, PHONE, TABLET, node::SimNode};

/// What the checkers remember between steps.
#[derive(Debug)]
pub struct Checker {
    record: RecordId,
    /// Every ledger operation any node holds: the truth the key checks judge by.
    global: Ledger,
    /// Per key id: the parties revoked or removed from its section when it was made.
    made_without: BTreeMap<KeyId, BTreeSet<PeerId>>,
    /// Per node: every blob its store ever held (acknowledged), with its bytes (to judge,
    /// when it goes, whether it went because it is void).
    acked: Vec<BTreeMap<(Section, BlobId), Vec<u8>>>,
}

/// What the run knows of the parties the patient withdrew, to judge what every node shows.
#[derive(Debug, Default, Clone)]
pub struct Withdrawals {
    /// Per withdrawn party, the markers of its writes that the laptop showed when it withdrew
    /// the party: what the owner accepted. Every other write of the party is void.
    pub accepted: BTreeMap<PeerId, BTreeSet<String>>,
    /// Who wrote each marker.
    pub author_of: BTreeMap<String, PeerId>,
    /// The markers the pharmacy (a reader) put in audit entries under the key of one of the
    /// patient's entries: shown nowhere, ever.
    pub injected: BTreeSet<String>,
}

impl Withdrawals {
    /// Whether the write `marker` is void: by a withdrawn party, and not accepted.
    pub fn void(&self, marker: &str) -> Option<PeerId> {
        let author = self.author_of.get(marker)?;
        let accepted = self.accepted.get(author)?;
        (!accepted.contains(marker)).then_some(*author)
    }
}

impl Checker {
    /// A checker for `nodes` syncing `record`.
    pub fn new(record: RecordId, nodes: usize) -> Checker {
        Checker {
            record,
            global: Ledger::new(record),
            made_without: BTreeMap::new(),
            acked: vec![BTreeMap::new(); nodes],
        }
    }

    /// The union of every node's ledger.
    pub fn global(&self) -> &Ledger {
        &self.global
    }

    /// A message about to go from `from` to `to`: every item in it must be one `to` may have,
    /// by the sender's own ledger (no node sends a record or section to a peer it does not admit).
    pub fn emission(
        &self,
        from: &SimNode,
        to: &SimNode,
        bytes: &[u8],
        now_ms: i64,
    ) -> Result<(), String> {
        let Ok(incoming) = Incoming::decode(bytes) else {
            return Ok(());
        };
        let items = match &incoming.message {
            Message::Request(r) => &r.items,
            Message::Response(r) => &r.items,
        };
        for (_, item) in items {
            let (record, section) = match (SignedOp::decode(item), Blob::decode(item.clone())) {
                (Ok(op), _) => (op.op().record, None),
                (_, Ok(blob)) => (blob.header().record, Some(blob.header().section)),
                _ => {
                    return Err(format!(
                        "{} sent {} an item that is neither",
                        from.name, to.name
                    ));
                }
            };
            let Some(replica) = from.replicas().get(&record) else {
                return Err(format!(
                    "{} sent {} an item of a record it does not hold",
                    from.name, to.name
                ));
            };
            let state = replica.ledger().state();
            let peer = to.peer();
            let allowed = match section {
                None => {
                    state.admitted(&peer, now_ms)
                        || told_of_withdrawal(replica, &peer)
                            .contains(&SignedOp::decode(item).expect("decoded above").id())
                }
                Some(section) => {
                    state.can_read(&peer, section, now_ms) || state.is_relay(&peer, now_ms)
                }
            };
            if !allowed {
                let what = section.map_or("ledger".to_string(), |s| s.to_string());
                return Err(format!(
                    "{} sent {} a {what} item of a record that does not admit it",
                    from.name, to.name
                ));
            }
        }
        Ok(())
    }

    /// The invariants that hold after every step.
    pub fn step(&mut self, nodes: &[SimNode]) -> Result<(), String> {
        for node in nodes {
            for replica in node.replicas().values() {
                for op in replica.ledger().ops() {
                    let _ = self.global.insert(op.clone());
                }
            }
        }
        // What the patient's devices hold of `audit`: a grantee may drop its own entries once
        // one of them does, and only then.
        let mut delivered = BTreeSet::new();
        for node in [LAPTOP, PHONE, TABLET].map(|i| &nodes[i]) {
            delivered.extend(node.store.blob_ids(&self.record, Section::Audit));
            delivered.extend(
                node.store
                    .replaced(&self.record, Section::Audit)
                    .unwrap_or_default(),
            );
            delivered.extend(
                node.store
                    .held(&self.record)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(_, id, _)| id),
            );
        }
        for (index, node) in nodes.iter().enumerate() {
            self.keys(node)?;
            self.acknowledged(index, node, &delivered)?;
            self.held_within_bounds(node)?;
        }
        Ok(())
    }

    /// What an owner device holds for the patient stays within the bounds per author.
    fn held_within_bounds(&self, node: &SimNode) -> Result<(), String> {
        let mut by_author: BTreeMap<PeerId, (usize, usize)> = BTreeMap::new();
        for (_, id, bytes) in node.store.held(&self.record).unwrap_or_default() {
            let Ok(blob) = Blob::decode(bytes) else {
                return Err(format!(
                    "{} holds a blob {} that does not decode",
                    node.name,
                    id.short()
                ));
            };
            let entry = by_author.entry(blob.header().author).or_default();
            entry.0 += 1;
            entry.1 += blob.len();
        }
        for (author, (count, bytes)) in by_author {
            if count > HELD_BLOBS_PER_AUTHOR_MAX || bytes > HELD_BYTES_PER_AUTHOR_MAX {
                return Err(format!(
                    "{} holds {count} blobs ({bytes} bytes) of {} for the patient, over the bounds",
                    node.name,
                    author.short()
                ));
            }
        }
        Ok(())
    }

    /// What a node shows: no version of a void write once the node holds the close and the pin
    /// of its author (before that, the news is on its way); every version proven by its
    /// writer's own signature and named for the device that wrote it.
    pub fn view(
        &self,
        node: &SimNode,
        replica: &Replica,
        record: &Record,
        withdrawals: &Withdrawals,
    ) -> Result<(), String> {
        let state = replica.ledger().state();
        for section in Section::ALL {
            for (key, _, _) in record.resources(section).unwrap_or_default() {
                let history = record
                    .history(&key)
                    .map_err(|e| format!("{} cannot read the history of {key}: {e}", node.name))?;
                for version in history {
                    if !version.proven || !version.author_is_writer() {
                        return Err(format!(
                            "{} shows version {} of {key} by {} that its writer's signature \
                             does not prove (unproven operations there: {:?})",
                            node.name,
                            version.id,
                            version.author.name,
                            record.unproven(version.section)
                        ) + &format!(
                            "; stored there: {:?}",
                            node.store
                                .blobs(&self.record, version.section)
                                .unwrap_or_default()
                                .into_iter()
                                .filter_map(|(_, b)| Blob::decode(b).ok())
                                .map(|b| format!(
                                    "{:?} by {} proofs {:?}",
                                    b.header().kind,
                                    b.header().author.short(),
                                    b.header()
                                        .proofs
                                        .iter()
                                        .map(|p| p.signer.short())
                                        .collect::<Vec<_>>()
                                ))
                                .collect::<Vec<_>>()
                        ));
                    }
                    let Some(marker) = version.resource["valueString"].as_str() else {
                        continue;
                    };
                    if withdrawals.injected.contains(marker) {
                        return Err(format!(
                            "{} shows `{marker}` as a version of {key} in {}: the pharmacy \
                             injected it, and may not write there",
                            node.name, version.section
                        ));
                    }
                    let Some(author) = withdrawals.void(marker) else {
                        continue;
                    };
                    let closed = state.closes.get(&author).is_some_and(|closes| {
                        closes.iter().any(|c| c.sections.contains(&version.section))
                    }) && state.pins.contains_key(&author);
                    if closed {
                        return Err(format!(
                            "{} shows `{marker}` in {}, written by {} after its access ended \
                             and never accepted",
                            node.name,
                            version.section,
                            author.short()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Relays and outsiders hold no section key; nobody holds a key made after it was revoked
    /// or removed.
    fn keys(&mut self, node: &SimNode) -> Result<(), String> {
        for replica in node.replicas().values() {
            let keyring = replica.keyring();
            if (node.role == Role::Relay || node.name == "outsider") && !keyring.is_empty() {
                return Err(format!(
                    "{} holds {} section keys",
                    node.name,
                    keyring.len()
                ));
            }
            for (key, section, epoch) in keyring.ids() {
                let without = self.made_without(key, section);
                if without.contains(&node.peer()) {
                    return Err(format!(
                        "{} holds the {section} key of epoch {epoch}, made after it was revoked",
                        node.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// The parties revoked or removed from `section` in the ledger state the key was made under.
    fn made_without(&mut self, key: KeyId, section: Section) -> BTreeSet<PeerId> {
        if let Some(without) = self.made_without.get(&key) {
            return without.clone();
        }
        let mut without = BTreeSet::new();
        for op in self.global.ops() {
            let OpBody::Keys {
                section: s, keys, ..
            } = &op.op().body
            else {
                continue;
            };
            if *s != section || !keys.iter().any(|(_, id)| *id == key) {
                continue;
            }
            let Ok(before) = self.global.state_at(&op.op().parents) else {
                continue;
            };
            let known = before
                .keys
                .get(&section)
                .is_some_and(|keys| keys.iter().any(|k| k.key_id == key));
            if known {
                continue;
            }
            // The operation that made the key.
            without.extend(before.removed_devices.iter().copied());
            for grant in &before.revoked {
                let still = before.can_read(&grant.grantee.peer, section, op.op().time_ms);
                if grant.reads(section) && !still {
                    without.insert(grant.grantee.peer);
                }
            }
            self.made_without.insert(key, without.clone());
            break;
        }
        without
    }

    /// Every blob a node's store ever held is still there, or replaced by a compaction it holds,
    /// or void under the node's ledger (held for the patient on an owner device, dropped
    /// elsewhere), or, for a grantee's own audit entry, in `delivered`: held by a patient's
    /// device.
    fn acknowledged(
        &mut self,
        index: usize,
        node: &SimNode,
        delivered: &BTreeSet<BlobId>,
    ) -> Result<(), String> {
        let grantee = !self.global.state().is_owner(&node.peer())
            && ![LAPTOP, PHONE, TABLET].contains(&index);
        let mut now = BTreeSet::new();
        for section in Section::ALL {
            for id in node.store.blob_ids(&self.record, section) {
                now.insert((section, id));
            }
        }
        let ledger = node.replicas().get(&self.record).map(Replica::ledger);
        // A node that is down has no ledger in memory to judge by: judged when it is back.
        if !node.up {
            return Ok(());
        }
        for ((section, id), bytes) in &self.acked[index] {
            if now.contains(&(*section, *id)) {
                continue;
            }
            let replaced = node
                .store
                .is_replaced(&self.record, *section, id)
                .unwrap_or(false);
            // Void: judged by the node's ledger, or (a node down has none in memory) held for
            // the patient, where void blobs go on an owner device.
            let void = ledger.is_some_and(|ledger| {
                Blob::decode(bytes.clone()).is_ok_and(|blob| consent::withdrawn(&blob, ledger))
            }) || node
                .store
                .held(&self.record)
                .unwrap_or_default()
                .iter()
                .any(|(_, held, _)| held == id);
            // A compaction it stores (one restricted, its author removed since) holds it.
            let compacted = || {
                node.store
                    .blobs(&self.record, *section)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(_, bytes)| Blob::decode(bytes).ok())
                    .any(|blob| blob.header().replaces.contains(id))
            };
            let handed_over = || {
                grantee
                    && *section == Section::Audit
                    && delivered.contains(id)
                    && Blob::decode(bytes.clone()).is_ok_and(|b| b.header().author == node.peer())
            };
            if !replaced && !void && !handed_over() && !compacted() {
                let blob = Blob::decode(bytes.clone()).ok();
                let held = node
                    .store
                    .held(&self.record)
                    .unwrap_or_default()
                    .iter()
                    .any(|(_, h, _)| h == id);
                return Err(format!(
                    "{} lost acknowledged {section} blob {} ({:?} by {}, held now: {held})",
                    node.name,
                    id.short(),
                    blob.as_ref().map(|b| b.header().kind),
                    blob.as_ref()
                        .map(|b| b.header().author.short())
                        .unwrap_or_default(),
                ));
            }
        }
        for (section, id) in now {
            if !self.acked[index].contains_key(&(section, id))
                && let Ok(Some(bytes)) = node.store.blob(&self.record, section, &id)
            {
                self.acked[index].insert((section, id), bytes);
            }
        }
        Ok(())
    }
}

/// The ledger operations a party the record no longer admits may be told of: those that ended
/// its access (a revocation of a grant to it, its removal, a close of its writing), the pins of
/// what the owners accepted from it, and everything they build on. Walked here from the
/// operations themselves, not through the replica's own answer.
fn told_of_withdrawal(
    replica: &phr_core::replica::Replica,
    peer: &phr_core::keys::PeerId,
) -> std::collections::BTreeSet<phr_core::keys::OpId> {
    use phr_core::ledger::{OpBody, RevokeTarget};
    let ledger = replica.ledger();
    let state = ledger.state();
    let granted_to_peer = |grant: &phr_core::keys::OpId| {
        ledger.get(grant).is_some_and(
            |op| matches!(&op.op().body, OpBody::Grant { grantee, .. } if grantee.peer == *peer),
        )
    };
    let mut next: Vec<phr_core::keys::OpId> = ledger
        .ops()
        .filter(|op| state.valid.contains(&op.id()))
        .filter(|op| match &op.op().body {
            OpBody::RemoveDevice { device } => device == peer,
            OpBody::Close { party, .. } | OpBody::Pin { party, .. } => party == peer,
            OpBody::Revoke {
                target: RevokeTarget::Party(party),
            } => party == peer,
            OpBody::Revoke {
                target: RevokeTarget::Grant(grant),
            } => granted_to_peer(grant),
            _ => false,
        })
        .map(|op| op.id())
        .collect();
    let mut told = std::collections::BTreeSet::new();
    while let Some(id) = next.pop() {
        if let Some(op) = ledger.get(&id)
            && told.insert(id)
        {
            next.extend(op.op().parents.iter().copied());
        }
    }
    told
}
