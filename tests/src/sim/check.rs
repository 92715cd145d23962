//! The simulator's invariants, checked after every step and at the end.

use std::collections::{BTreeMap, BTreeSet};

use phr_core::{
    blob::Blob,
    keys::{BlobId, KeyId, PeerId, RecordId},
    ledger::{Ledger, OpBody, SignedOp},
    party::Role,
    section::Section,
    store::Store,
    sync::{Incoming, message::Message},
};

use super::node::SimNode;

/// What the checkers remember between steps.
#[derive(Debug)]
pub struct Checker {
    record: RecordId,
    /// Every ledger operation any node holds: the truth the key checks judge by.
    global: Ledger,
    /// Per key id: the parties revoked or removed from its section when it was made.
    made_without: BTreeMap<KeyId, BTreeSet<PeerId>>,
    /// Per node: every blob its store ever held (acknowledged).
    acked: Vec<BTreeSet<(Section, BlobId)>>,
}

impl Checker {
    /// A checker for `nodes` syncing `record`.
    pub fn new(record: RecordId, nodes: usize) -> Checker {
        Checker {
            record,
            global: Ledger::new(record),
            made_without: BTreeMap::new(),
            acked: vec![BTreeSet::new(); nodes],
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
                None => state.admitted(&peer, now_ms),
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
        for (index, node) in nodes.iter().enumerate() {
            self.keys(node)?;
            self.acknowledged(index, node)?;
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

    /// Every blob a node's store ever held is still there, or replaced by a compaction it holds.
    fn acknowledged(&mut self, index: usize, node: &SimNode) -> Result<(), String> {
        let mut now = BTreeSet::new();
        for section in Section::ALL {
            for id in node.store.blob_ids(&self.record, section) {
                now.insert((section, id));
            }
        }
        for (section, id) in &self.acked[index] {
            let replaced = node
                .store
                .is_replaced(&self.record, *section, id)
                .unwrap_or(false);
            if !now.contains(&(*section, *id)) && !replaced {
                return Err(format!(
                    "{} lost acknowledged {section} blob {}",
                    node.name,
                    id.short()
                ));
            }
        }
        self.acked[index].extend(now);
        Ok(())
    }
}
