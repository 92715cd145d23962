//! Which changes of a section document its authors' own signatures prove, after any number of
//! compactions.
//!
//! A change is proven when it came in a blob its author signed (every change in a changes blob
//! is by its signer's actors: [`super::check_authorship_hashes`]), or when an
//! [`AuthorshipProof`] by the owner of its actor names a head in whose past it lies: a change
//! hash covers the hashes of the changes it depends on, so nobody can add a change to the past
//! of a signed head. The actor of a change says whose it must be (its first 16 bytes are its
//! device's public key's, [`super::actor_of`]); a change whose actor nobody proves is unproven.
//! The graph is Automerge's change metadata (`get_changes_meta`): hashes, actors, dependencies
//! and operation counters, without re-encoding a change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::RangeInclusive;

use automerge::{ActorId, AutoCommit, ChangeHash};

use crate::{blob::AuthorshipProof, keys::PeerId};

use super::ACTOR_KEY_BYTES;

/// Operations of one actor whose authorship no signature proves: Automerge operation counters
/// `ops` of `actor` (a version whose id is `counter@actor` with a counter in the range is one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unproven {
    /// The actor the changes claim.
    pub actor: ActorId,
    /// Their operation counters.
    pub ops: RangeInclusive<u64>,
}

/// One change, as the graph needs it.
#[derive(Debug)]
struct Node {
    actor: ActorId,
    deps: Vec<ChangeHash>,
    ops: RangeInclusive<u64>,
}

/// The changes of one section document and what each depends on.
#[derive(Debug)]
pub struct ChangeGraph {
    nodes: HashMap<ChangeHash, Node>,
}

impl ChangeGraph {
    /// The graph of every change `doc` holds.
    pub fn of(doc: &mut AutoCommit) -> ChangeGraph {
        let nodes = doc
            .get_changes_meta(&[])
            .into_iter()
            .map(|meta| {
                let node = Node {
                    actor: meta.actor.into_owned(),
                    deps: meta.deps,
                    ops: meta.start_op..=meta.max_op,
                };
                (meta.hash, node)
            })
            .collect();
        ChangeGraph { nodes }
    }

    /// How many changes it holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it holds no change.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every change in the past of `from` (`from` included unless `strict`), among those held.
    fn past(
        &self,
        from: impl IntoIterator<Item = ChangeHash>,
        strict: bool,
    ) -> HashSet<ChangeHash> {
        let mut seen = HashSet::new();
        let mut stack: Vec<ChangeHash> = Vec::new();
        for hash in from {
            if strict {
                if let Some(node) = self.nodes.get(&hash) {
                    stack.extend(node.deps.iter().copied());
                }
            } else {
                stack.push(hash);
            }
        }
        while let Some(hash) = stack.pop() {
            let Some(node) = self.nodes.get(&hash) else {
                continue;
            };
            if seen.insert(hash) {
                stack.extend(node.deps.iter().copied());
            }
        }
        seen
    }

    /// Every change in the past of `heads` (`heads` included), among those held.
    pub fn past_of(&self, heads: impl IntoIterator<Item = ChangeHash>) -> HashSet<ChangeHash> {
        self.past(heads, false)
    }

    /// Whether it holds this change.
    pub fn contains(&self, hash: &ChangeHash) -> bool {
        self.nodes.contains_key(hash)
    }

    /// The changes made by actors of `peer`.
    pub fn changes_by(&self, peer: &PeerId) -> Vec<ChangeHash> {
        self.nodes
            .iter()
            .filter(|(_, node)| super::actor_of(peer, &node.actor))
            .map(|(hash, _)| *hash)
            .collect()
    }

    /// `from` (those held) and every change that has one of them in its past.
    pub fn with_descendants(&self, from: &HashSet<ChangeHash>) -> HashSet<ChangeHash> {
        let mut children: HashMap<ChangeHash, Vec<ChangeHash>> = HashMap::new();
        for (hash, node) in &self.nodes {
            for dep in &node.deps {
                children.entry(*dep).or_default().push(*hash);
            }
        }
        let mut seen = HashSet::new();
        let mut stack: Vec<ChangeHash> = from
            .iter()
            .filter(|hash| self.nodes.contains_key(hash))
            .copied()
            .collect();
        while let Some(hash) = stack.pop() {
            if seen.insert(hash) {
                stack.extend(children.get(&hash).into_iter().flatten().copied());
            }
        }
        seen
    }

    /// The actors and operations of the changes in `hashes` made by the device whose actor
    /// `actor` is (any actor with its first 16 bytes).
    pub fn ops_by(
        &self,
        actor: &ActorId,
        hashes: &HashSet<ChangeHash>,
    ) -> Vec<(ActorId, RangeInclusive<u64>)> {
        hashes
            .iter()
            .filter_map(|hash| self.nodes.get(hash))
            .filter(|node| same_device(&node.actor, actor) && !node.ops.is_empty())
            .map(|node| (node.actor.clone(), node.ops.clone()))
            .collect()
    }

    /// The change that made operation `counter` of `actor`, if held.
    pub fn change_of_op(&self, actor: &ActorId, counter: u64) -> Option<ChangeHash> {
        self.nodes
            .iter()
            .find(|(_, node)| node.actor == *actor && node.ops.contains(&counter))
            .map(|(hash, _)| *hash)
    }

    /// The heads of what the change that made operation `counter` of `actor` was built on,
    /// leaving out `excluded` (and so everything built on it): the state its author saw, less
    /// the void changes. `None` if no change held made that operation.
    pub fn kept_past_of_op(
        &self,
        actor: &ActorId,
        counter: u64,
        excluded: &HashSet<ChangeHash>,
    ) -> Option<Vec<ChangeHash>> {
        let (hash, _) = self
            .nodes
            .iter()
            .find(|(_, node)| node.actor == *actor && node.ops.contains(&counter))?;
        let kept: Vec<ChangeHash> = self
            .past([*hash], true)
            .into_iter()
            .filter(|h| !excluded.contains(h))
            .collect();
        let covered = self.past(kept.iter().copied(), true);
        let mut heads: Vec<ChangeHash> =
            kept.into_iter().filter(|h| !covered.contains(h)).collect();
        heads.sort();
        Some(heads)
    }

    /// Those of `hashes` made by the device whose actor `actor` is.
    pub fn of_device(&self, actor: &ActorId, hashes: &HashSet<ChangeHash>) -> Vec<ChangeHash> {
        hashes
            .iter()
            .filter(|hash| {
                self.nodes
                    .get(hash)
                    .is_some_and(|node| same_device(&node.actor, actor))
            })
            .copied()
            .collect()
    }

    /// The heads of `peer`'s changes: its changes that no other change of its depends on, in
    /// order. What `peer` signs to prove them all.
    pub fn heads_by(&self, peer: &PeerId) -> Vec<ChangeHash> {
        let mine: Vec<ChangeHash> = self
            .nodes
            .iter()
            .filter(|(_, node)| super::actor_of(peer, &node.actor))
            .map(|(hash, _)| *hash)
            .collect();
        let covered = self.past(mine.iter().copied(), true);
        let mut heads: Vec<ChangeHash> = mine
            .into_iter()
            .filter(|hash| !covered.contains(hash))
            .collect();
        heads.sort();
        heads
    }

    /// The operations no signature proves: of changes not in `direct` (the hashes of changes
    /// that came in a blob their author signed) and in the past of no head that a proof in
    /// `proofs` by the owner of their actor signs. `proofs` must have been verified.
    pub fn unproven(
        &self,
        direct: &HashSet<ChangeHash>,
        proofs: &[AuthorshipProof],
    ) -> Vec<Unproven> {
        let mut by_key: BTreeMap<[u8; ACTOR_KEY_BYTES], Vec<ChangeHash>> = BTreeMap::new();
        for proof in proofs {
            let mut key = [0; ACTOR_KEY_BYTES];
            key.copy_from_slice(&proof.signer.public_key()[..ACTOR_KEY_BYTES]);
            by_key
                .entry(key)
                .or_default()
                .extend(proof.heads.iter().copied());
        }
        let mut proven: HashMap<[u8; ACTOR_KEY_BYTES], HashSet<ChangeHash>> = HashMap::new();
        let mut out: Vec<Unproven> = Vec::new();
        for (hash, node) in &self.nodes {
            if direct.contains(hash) {
                continue;
            }
            let actor = node.actor.to_bytes();
            let key: Option<[u8; ACTOR_KEY_BYTES]> = actor
                .get(..ACTOR_KEY_BYTES)
                .and_then(|prefix| prefix.try_into().ok());
            let is_proven = key.is_some_and(|key| {
                let Some(heads) = by_key.get(&key) else {
                    return false;
                };
                proven
                    .entry(key)
                    .or_insert_with(|| self.past(heads.iter().copied(), false))
                    .contains(hash)
            });
            if !is_proven && !node.ops.is_empty() {
                out.push(Unproven {
                    actor: node.actor.clone(),
                    ops: node.ops.clone(),
                });
            }
        }
        out.sort_by(|a, b| (&a.actor, a.ops.start()).cmp(&(&b.actor, b.ops.start())));
        out
    }

    /// The changes among `candidates` that no proof in `proofs` by the owner of their actor
    /// covers (`proofs` must have been verified).
    pub fn unproven_among(
        &self,
        candidates: &HashSet<ChangeHash>,
        proofs: &[AuthorshipProof],
    ) -> HashSet<ChangeHash> {
        if candidates.is_empty() {
            return HashSet::new();
        }
        let mut by_key: BTreeMap<&[u8], Vec<ChangeHash>> = BTreeMap::new();
        for proof in proofs {
            by_key
                .entry(&proof.signer.public_key()[..ACTOR_KEY_BYTES])
                .or_default()
                .extend(proof.heads.iter().copied());
        }
        let proven: BTreeMap<&[u8], HashSet<ChangeHash>> = by_key
            .into_iter()
            .map(|(key, heads)| (key, self.past(heads, false)))
            .collect();
        candidates
            .iter()
            .filter(|hash| {
                let Some(node) = self.nodes.get(hash) else {
                    return false;
                };
                let actor = node.actor.to_bytes();
                let key = actor.get(..ACTOR_KEY_BYTES).unwrap_or(&[]);
                !proven.get(key).is_some_and(|past| past.contains(hash))
            })
            .copied()
            .collect()
    }

    /// The proofs worth carrying into a compaction of this document: each once, and not one
    /// whose every head lies in the strict past of another head of the same signer (the later
    /// proof proves all it did). Proofs naming no change held here are dropped.
    pub fn prune(&self, mut proofs: Vec<AuthorshipProof>) -> Vec<AuthorshipProof> {
        proofs.sort();
        proofs.dedup();
        let mut by_signer: BTreeMap<PeerId, Vec<AuthorshipProof>> = BTreeMap::new();
        for proof in proofs {
            by_signer.entry(proof.signer).or_default().push(proof);
        }
        let mut kept = Vec::new();
        for (_, proofs) in by_signer {
            let heads = proofs.iter().flat_map(|p| p.heads.iter().copied());
            let covered = self.past(heads, true);
            kept.extend(proofs.into_iter().filter(|proof| {
                proof
                    .heads
                    .iter()
                    .any(|head| self.nodes.contains_key(head) && !covered.contains(head))
            }));
        }
        kept
    }
}

/// Whether two actors are of one device (the same first 16 bytes).
pub fn same_device(a: &ActorId, b: &ActorId) -> bool {
    a.to_bytes().get(..ACTOR_KEY_BYTES) == b.to_bytes().get(..ACTOR_KEY_BYTES)
}

#[cfg(test)]
mod tests {
    use automerge::{ROOT, transaction::Transactable};

    use super::*;
    use crate::{keys::SigningKey, section::Section};

    fn actor(peer: &PeerId) -> ActorId {
        let mut bytes = peer.public_key()[..ACTOR_KEY_BYTES].to_vec();
        bytes.extend_from_slice(&[7; 8]);
        ActorId::from(bytes)
    }

    fn write(doc: &mut AutoCommit, who: &PeerId, key: &str) -> ChangeHash {
        doc.set_actor(actor(who));
        doc.put(ROOT, key, "value").unwrap();
        doc.commit().unwrap()
    }

    fn record() -> crate::keys::RecordId {
        crate::keys::RecordId([9; 16])
    }

    #[test]
    fn a_signed_head_proves_its_signers_past_and_nothing_else() {
        let patient = SigningKey::generate();
        let gp = SigningKey::generate();
        let mut doc = AutoCommit::new();
        write(&mut doc, &patient.peer_id(), "a");
        write(&mut doc, &gp.peer_id(), "b");
        let gp_head = write(&mut doc, &gp.peer_id(), "c");
        let patient_head = write(&mut doc, &patient.peer_id(), "d");
        let graph = ChangeGraph::of(&mut doc);
        assert_eq!(graph.heads_by(&gp.peer_id()), vec![gp_head]);
        assert_eq!(graph.heads_by(&patient.peer_id()), vec![patient_head]);
        let sign = |key: &SigningKey, heads| {
            AuthorshipProof::sign(record(), Section::Summary, heads, key).unwrap()
        };
        let both = [sign(&gp, vec![gp_head]), sign(&patient, vec![patient_head])];
        assert!(graph.unproven(&HashSet::new(), &both).is_empty());
        // Without the GP's proof, its two changes are unproven, though the patient's head
        // depends on them: the patient's signature vouches for the patient's changes only.
        let unproven = graph.unproven(&HashSet::new(), &both[1..]);
        assert_eq!(unproven.len(), 2);
        assert!(unproven.iter().all(|u| u.actor == actor(&gp.peer_id())));
        // A proof signed by another key over the GP's head proves nothing of the GP's: only
        // the patient's first change, which lies in that head's past.
        let forged = sign(&patient, vec![gp_head]);
        let unproven = graph.unproven(&HashSet::new(), &[forged]);
        assert_eq!(unproven.len(), 3);
        assert_eq!(
            unproven
                .iter()
                .filter(|u| u.actor == actor(&gp.peer_id()))
                .count(),
            2
        );
    }

    #[test]
    fn a_later_proof_of_the_same_signer_makes_an_earlier_one_redundant() {
        let gp = SigningKey::generate();
        let other = SigningKey::generate();
        let mut doc = AutoCommit::new();
        let first = write(&mut doc, &gp.peer_id(), "a");
        let second = write(&mut doc, &gp.peer_id(), "b");
        let theirs = write(&mut doc, &other.peer_id(), "c");
        let graph = ChangeGraph::of(&mut doc);
        let sign = |key: &SigningKey, heads| {
            AuthorshipProof::sign(record(), Section::Summary, heads, key).unwrap()
        };
        let proofs = vec![
            sign(&gp, vec![first]),
            sign(&gp, vec![second]),
            sign(&gp, vec![second]),
            sign(&other, vec![theirs]),
        ];
        let kept = graph.prune(proofs.clone());
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept.contains(&proofs[1]) && kept.contains(&proofs[3]));
        assert!(graph.unproven(&HashSet::new(), &kept).is_empty());
    }
}
