//! Which operations a ledger keeps when they come from a peer: only those that could ever count.
//!
//! Every operation that has effect is signed by the record's root key or by an owner device, and
//! an operation whose whole causal past is held is judged for good: more operations can make it
//! neither valid nor pending again (the rules look only at its past and at removals of its
//! author, and a removal only ever rejects more). So a node does not keep complete operations
//! the rules reject; of those still waiting for parents it keeps only the root's and current
//! owner devices', at most [`LEDGER_PENDING_PER_AUTHOR_MAX`] each. Junk from a stranger, a
//! removed device or a relay can then never use the room ([`LEDGER_OPS_MAX`]) the owners' own
//! operations need, and an honest node never passes it on (it offers only valid operations).
//! Until the record's `Create` is held nobody can be judged: a node that does not hold the
//! record keeps what it is sent in memory only, within [`LEDGER_OPS_MAX`].

use std::collections::{BTreeMap, BTreeSet};

use super::{LEDGER_OPS_MAX, Ledger, LedgerError, SignedOp};
use crate::keys::{OpId, PeerId, RecordId};

/// The most operations of one author kept while they wait for parents not held yet: what one
/// sync request may ask for ([`crate::sync::message::WANT_IDS_MAX`]), so that a ledger arriving
/// over several messages in any order is not dropped on its way.
pub const LEDGER_PENDING_PER_AUTHOR_MAX: usize = 1024;

/// What [`Ledger::admit`] did with operations from a peer.
#[derive(Debug, Default, Clone)]
pub struct Admission {
    /// Operations new to the ledger and kept.
    pub new: Vec<SignedOp>,
    /// Operations already held.
    pub duplicates: usize,
    /// Operations not kept: rejected with their whole past held, waiting for parents but signed
    /// by neither the root nor a current owner device, beyond their author's allowance, or
    /// arriving at a full ledger.
    pub dropped: usize,
    /// Operations held before that turned out never to count, now removed (a store written
    /// before this rule may hold some).
    pub removed: Vec<OpId>,
}

impl Ledger {
    /// Takes operations a peer sent, in any order, keeping only those that could count (see the
    /// module docs). Refuses the lot, keeping nothing, only if one is of another record: no
    /// honest node sends that. A full ledger drops what does not fit instead of refusing, so an
    /// honest sender is never cut off.
    pub fn admit(&mut self, ops: Vec<SignedOp>) -> Result<Admission, LedgerError> {
        if let Some(op) = ops.iter().find(|op| op.op().record != self.record) {
            return Err(LedgerError::WrongRecord {
                expected: self.record,
                found: op.op().record,
            });
        }
        let mut admission = Admission::default();
        for op in ops {
            self.admit_one(op, &mut admission);
        }
        let doomed = self.never_counting();
        if !doomed.is_empty() {
            // Doomed operations of this batch were never held; the others were held before.
            let batch: BTreeSet<OpId> = admission.new.iter().map(SignedOp::id).collect();
            admission.new.retain(|op| !doomed.contains(&op.id()));
            admission.dropped += batch.len() - admission.new.len();
            admission.removed = doomed.difference(&batch).copied().collect();
            self.forget(&doomed.into_iter().collect::<Vec<_>>());
        }
        Ok(admission)
    }

    /// Removes operations, e.g. those an ingest admitted before it refused the rest.
    pub(crate) fn forget(&mut self, ids: &[OpId]) {
        let mut changed = false;
        for id in ids {
            if let Some(op) = self.ops.remove(id) {
                self.bytes -= op.bytes().len();
                changed = true;
            }
        }
        if changed {
            self.cache = std::sync::OnceLock::new();
        }
    }

    fn admit_one(&mut self, op: SignedOp, admission: &mut Admission) {
        if self.ops.contains_key(&op.id()) {
            admission.duplicates += 1;
        } else if self.ops.len() >= LEDGER_OPS_MAX {
            admission.dropped += 1;
        } else {
            self.bytes += op.bytes().len();
            self.ops.insert(op.id(), op.clone());
            self.cache = std::sync::OnceLock::new();
            admission.new.push(op);
        }
    }

    fn is_root(&self, peer: &PeerId) -> bool {
        RecordId::of_root(peer) == self.record
    }

    /// Held operations that will never count: complete and rejected (the root's excepted: its
    /// key is trusted, and a second `Create` is judged by id); once the record's `Create` is
    /// held, waiting ones signed by neither the root nor a current owner device (a removed
    /// device's, a stranger's); and waiting ones beyond their author's allowance (the highest
    /// ids go). An honest operation dropped here is valid at its sender, which offers it again
    /// once its parents can be sent with it.
    fn never_counting(&self) -> BTreeSet<OpId> {
        let analysis = self.analysis();
        let state = &analysis.state;
        let mut doomed: BTreeSet<OpId> = state
            .rejected
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !self.is_root(&self.ops[id].op().author))
            .collect();
        let mut waiting: BTreeMap<PeerId, Vec<OpId>> = BTreeMap::new();
        for (id, op) in &self.ops {
            if analysis.complete.contains(id) {
                continue;
            }
            let author = op.op().author;
            if state.root.is_some() && !self.is_root(&author) && !state.is_owner(&author) {
                doomed.insert(*id);
            } else {
                waiting.entry(author).or_default().push(*id);
            }
        }
        for ids in waiting.values() {
            doomed.extend(ids.iter().skip(LEDGER_PENDING_PER_AUTHOR_MAX));
        }
        doomed
    }
}
