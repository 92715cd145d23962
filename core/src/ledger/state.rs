//! The ledger's state: which operations count, and what they add up to.
//!
//! [`analyse`] orders the complete operations topologically (parents first, ties by id), computes
//! every operation's strict ancestors as a bitset over that order, and then applies the rules of
//! `docs/FORMAT.md` ("Validity rules"). Every rule is phrased in terms of the ancestor relation
//! ("is in the causal past of"), never in terms of arrival or processing order, so the result is
//! a function of the set. Device operations are judged first because their validity depends on
//! nothing but the `Create`; grants, revocations and key announcements are then judged against
//! the valid device operations.

use std::collections::{BTreeMap, BTreeSet};

use super::{Access, LedgerError, OpBody, RevokeTarget, SignedOp};
use crate::{
    keys::{BlobId, KeyId, OpId, PeerId, RecordId},
    party::Party,
    section::Section,
};

/// What a record's consent ledger says, as of a set of operations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerState {
    /// The record root key, once the record's `Create` is held.
    pub root: Option<PeerId>,
    /// The patient's owner devices: they read and write everything and manage consent.
    pub owners: BTreeMap<PeerId, Party>,
    /// Devices removed by the root key and not re-added since.
    pub removed_devices: BTreeSet<PeerId>,
    /// Grants in force (valid and not revoked), sorted by id. Expired grants are included:
    /// expiry depends on the time, which callers pass to the query methods.
    pub grants: Vec<GrantState>,
    /// Valid grants that a revocation ended, sorted by id, to show the patient.
    pub revoked: Vec<GrantState>,
    /// Every key announced by a valid `Keys` operation, per section, sorted by (epoch, key id).
    pub keys: BTreeMap<Section, Vec<EpochKey>>,
    /// Complete operations the rules reject, with the reason, sorted by id, for diagnostics.
    pub rejected: Vec<(OpId, String)>,
    /// Complete operations the rules accept.
    pub valid: BTreeSet<OpId>,
    /// Operations held whose ancestors are not all held yet; they have no effect.
    pub pending: usize,
    /// The valid `Close` operations, per party they pin.
    pub closes: BTreeMap<PeerId, Vec<CloseState>>,
    /// The change heads valid `Pin` operations accept, per party and section. A party with an
    /// entry here (even an empty one) has its changes judged one by one where they reach a
    /// reader inside a compaction (`consent::change_pins`).
    pub pins: BTreeMap<PeerId, BTreeMap<Section, BTreeSet<[u8; 32]>>>,
}

/// A valid grant, as the state shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantState {
    /// The id of the operation that made it.
    pub id: OpId,
    /// Who was granted access.
    pub grantee: Party,
    /// The sections granted (ignored for relays, which carry every section's ciphertext).
    pub sections: Vec<Section>,
    /// Read, write or relay.
    pub access: Access,
    /// When it lapses, in unix milliseconds; `None` lasts until revoked.
    pub expires_ms: Option<i64>,
    /// Why, in the patient's words.
    pub purpose: Option<String>,
    /// The owner device that signed it.
    pub granted_by: PeerId,
    /// When, by the granting device's clock.
    pub time_ms: i64,
}

impl GrantState {
    /// Whether the grant is still in force at `now_ms` (it lapses at `expires_ms`).
    pub fn unexpired(&self, now_ms: i64) -> bool {
        self.expires_ms.is_none_or(|expires| expires > now_ms)
    }

    /// Whether the grant lets its grantee read `section` (ignoring expiry). Write implies read;
    /// relays read nothing; nobody but owners reads `audit`.
    pub fn reads(&self, section: Section) -> bool {
        matches!(self.access, Access::Read | Access::Write)
            && section != Section::Audit
            && self.sections.contains(&section)
    }
}

/// A valid `Close` of a party: what the owners accept from it once its write access ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseState {
    /// The `Close` operation's id.
    pub id: OpId,
    /// The sections the party's later writes are void in.
    pub sections: BTreeSet<Section>,
    /// The party's blobs the owner accepted.
    pub accepted: BTreeSet<BlobId>,
}

/// One section key the ledger knows of: its epoch, its id and who was sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochKey {
    /// The key's epoch (the lowest announced, if it was announced with several).
    pub epoch: u32,
    /// The key's id.
    pub key_id: KeyId,
    /// Every recipient of every valid `Keys` operation that carried it.
    pub holders: BTreeSet<PeerId>,
}

impl LedgerState {
    /// Whether `peer` is one of the patient's owner devices.
    pub fn is_owner(&self, peer: &PeerId) -> bool {
        self.owners.contains_key(peer)
    }

    /// Whether `peer` may read `section` at `now_ms`: owners read everything; a grantee reads the
    /// sections of its unexpired read or write grants; `audit` is for owners alone.
    pub fn can_read(&self, peer: &PeerId, section: Section, now_ms: i64) -> bool {
        self.is_owner(peer)
            || self
                .live_grants_to(peer, now_ms)
                .any(|grant| grant.reads(section))
    }

    /// Whether `peer` may write `section` at `now_ms`: owners write everything; a grantee writes
    /// the sections of its unexpired write grants, and appends to `audit` if it holds any
    /// unexpired read or write grant (its audit entries are sealed to the owners alone).
    pub fn can_write(&self, peer: &PeerId, section: Section, now_ms: i64) -> bool {
        self.is_owner(peer)
            || self
                .live_grants_to(peer, now_ms)
                .any(|grant| match section {
                    Section::Audit => matches!(grant.access, Access::Read | Access::Write),
                    _ => grant.access == Access::Write && grant.sections.contains(&section),
                })
    }

    /// Whether `peer` holds an unexpired relay grant: it stores and forwards every section's
    /// ciphertext and reads none of it.
    pub fn is_relay(&self, peer: &PeerId, now_ms: i64) -> bool {
        self.live_grants_to(peer, now_ms)
            .any(|grant| grant.access == Access::Relay)
    }

    /// Whether the record may be offered to `peer` at all: an owner device or the holder of any
    /// unexpired grant, relays included.
    pub fn admitted(&self, peer: &PeerId, now_ms: i64) -> bool {
        self.is_owner(peer) || self.live_grants_to(peer, now_ms).next().is_some()
    }

    /// Every peer [`LedgerState::admitted`] admits at `now_ms`: the owners and every grantee
    /// of an unexpired grant.
    pub fn admitted_peers(&self, now_ms: i64) -> BTreeSet<PeerId> {
        let mut peers: BTreeSet<PeerId> = self.owners.keys().copied().collect();
        peers.extend(
            self.grants
                .iter()
                .filter(|grant| grant.unexpired(now_ms))
                .map(|grant| grant.grantee.peer),
        );
        peers
    }

    /// Who may read `section` at `now_ms`, with how to reach them: the owners and every
    /// unexpired read or write grantee of the section. Relays are never readers. A grantee named
    /// by several grants is shown as its newest grant (by time, then id) names it.
    pub fn readers(&self, section: Section, now_ms: i64) -> BTreeMap<PeerId, Party> {
        let mut readers = self.owners.clone();
        let mut newest: BTreeMap<PeerId, &GrantState> = BTreeMap::new();
        for grant in &self.grants {
            if !grant.unexpired(now_ms) || !grant.reads(section) {
                continue;
            }
            let entry = newest.entry(grant.grantee.peer).or_insert(grant);
            if (grant.time_ms, grant.id) > (entry.time_ms, entry.id) {
                *entry = grant;
            }
        }
        for (peer, grant) in newest {
            readers.entry(peer).or_insert_with(|| grant.grantee.clone());
        }
        readers
    }

    /// The key writers of `section` should seal with at `now_ms`: among the keys every holder of
    /// which may still read the section, the one with the highest (epoch, key id). `None` when
    /// no key is safe (say a revoked, removed or expired party holds every one): an owner device
    /// must start a new epoch. A key nobody was sent is never current.
    pub fn current_key(&self, section: Section, now_ms: i64) -> Option<&EpochKey> {
        let readers = self.readers(section, now_ms);
        self.keys
            .get(&section)?
            .iter()
            .filter(|key| {
                !key.holders.is_empty() && key.holders.iter().all(|h| readers.contains_key(h))
            })
            .max_by_key(|key| (key.epoch, key.key_id))
    }

    /// The epoch a new key of `section` should have: one more than the highest announced, or 0.
    /// It saturates at `u32::MAX`, which at one rotation a second takes 136 years.
    pub fn next_epoch(&self, section: Section) -> u32 {
        self.keys
            .get(&section)
            .and_then(|keys| keys.iter().map(|key| key.epoch).max())
            .map_or(0, |epoch| epoch.saturating_add(1))
    }

    /// For each current reader of `section`, the ids of the section's keys it was never sent,
    /// in (epoch, key id) order: what an owner should wrap to it so it can read the whole
    /// history. Readers missing nothing are left out.
    pub fn missing_keys(&self, section: Section, now_ms: i64) -> BTreeMap<PeerId, Vec<KeyId>> {
        let keys = self.keys.get(&section).map(Vec::as_slice).unwrap_or(&[]);
        self.readers(section, now_ms)
            .into_keys()
            .filter_map(|reader| {
                let missing: Vec<KeyId> = keys
                    .iter()
                    .filter(|key| !key.holders.contains(&reader))
                    .map(|key| key.key_id)
                    .collect();
                (!missing.is_empty()).then_some((reader, missing))
            })
            .collect()
    }

    /// The grants in force to `peer`, expired ones included, sorted by id.
    pub fn grants_to(&self, peer: &PeerId) -> Vec<&GrantState> {
        self.grants
            .iter()
            .filter(|grant| grant.grantee.peer == *peer)
            .collect()
    }

    /// Whether `peer` is a provider (not an owner device) that a grant gave write access to
    /// `section`, in force or since revoked: who may have decided what a provider decides (a
    /// booking, a prescription) at the time it wrote.
    pub fn is_provider_writer_of(&self, peer: &PeerId, section: Section) -> bool {
        !self.is_owner(peer)
            && self.grants.iter().chain(&self.revoked).any(|grant| {
                grant.grantee.peer == *peer
                    && grant.grantee.role == crate::party::Role::Provider
                    && grant.access == Access::Write
                    && grant.sections.contains(&section)
            })
    }

    fn live_grants_to(&self, peer: &PeerId, now_ms: i64) -> impl Iterator<Item = &GrantState> {
        self.grants
            .iter()
            .filter(move |grant| grant.grantee.peer == *peer && grant.unexpired(now_ms))
    }
}

/// Whether `author` may append an operation with `body` to a ledger of `record` in `state`
/// (`empty`: the ledger holds nothing yet), with a typed reason if not. It mirrors the rules for
/// an operation whose parents are the current heads, so `append` can say why it refuses.
pub(super) fn check_allowed(
    state: &LedgerState,
    record: RecordId,
    empty: bool,
    author: &PeerId,
    body: &OpBody,
) -> Result<(), LedgerError> {
    let allowed = match body {
        OpBody::Create { root, .. } => {
            if !empty {
                return Err(LedgerError::AlreadyCreated);
            }
            if RecordId::of_root(root) != record {
                return Err(LedgerError::WrongRecord {
                    expected: record,
                    found: RecordId::of_root(root),
                });
            }
            root == author
        }
        OpBody::AddDevice { .. } | OpBody::RemoveDevice { .. } => state.root == Some(*author),
        OpBody::Grant { .. }
        | OpBody::Revoke { .. }
        | OpBody::Keys { .. }
        | OpBody::Close { .. }
        | OpBody::Pin { .. } => {
            if !state.is_owner(author) {
                return Err(LedgerError::NotOwner { peer: *author });
            }
            if let OpBody::Grant {
                sections, access, ..
            } = body
                && *access != Access::Relay
                && sections.contains(&Section::Audit)
            {
                return Err(LedgerError::CannotGrantAudit);
            }
            true
        }
    };
    if !allowed {
        return Err(LedgerError::NotRoot { peer: *author });
    }
    Ok(())
}

/// The state of a set of operations, with what [`super::Ledger`] caches beside it.
#[derive(Debug, Clone)]
pub(super) struct Analysis {
    /// The state.
    pub state: LedgerState,
    /// The maximal valid operations, sorted.
    pub heads: Vec<OpId>,
    /// Every complete operation (whose ancestors are all in the set).
    pub complete: BTreeSet<OpId>,
    /// The rejected operations that some valid operation follows, sorted by id.
    pub rejected_before_heads: Vec<(OpId, String)>,
}

impl Analysis {
    /// The state as of the heads, without recomputing it: every valid operation precedes or is a
    /// head, and validity depends only on valid operations, so only the rejected list differs.
    pub fn state_at_heads(&self) -> LedgerState {
        let rejected = self.rejected_before_heads.clone();
        LedgerState {
            rejected,
            pending: 0,
            ..self.state.clone()
        }
    }
}

/// Strict-ancestor sets of the complete operations, one bit row per operation in topological
/// order. A row only has bits below its own index, since parents come first.
struct Ancestors {
    words: usize,
    bits: Vec<u64>,
}

impl Ancestors {
    fn new(order: &[&SignedOp], index: &BTreeMap<OpId, usize>) -> Ancestors {
        let words = order.len().div_ceil(64);
        let mut bits = vec![0u64; words * order.len()];
        for (i, op) in order.iter().enumerate() {
            let (before, rest) = bits.split_at_mut(i * words);
            let row = &mut rest[..words];
            for parent in &op.op().parents {
                let p = index[parent];
                for (mine, theirs) in row.iter_mut().zip(&before[p * words..(p + 1) * words]) {
                    *mine |= theirs;
                }
                row[p / 64] |= 1 << (p % 64);
            }
        }
        Ancestors { words, bits }
    }

    /// Whether `ancestor` is in the strict causal past of `op`.
    fn has(&self, op: usize, ancestor: usize) -> bool {
        self.bits[op * self.words + ancestor / 64] & (1 << (ancestor % 64)) != 0
    }

    fn row(&self, op: usize) -> &[u64] {
        &self.bits[op * self.words..(op + 1) * self.words]
    }
}

/// The complete operations in topological order: parents first, ties broken by the lowest id.
/// Operations with a missing ancestor never become ready and are left out.
fn topological<'a>(ops: &BTreeMap<OpId, &'a SignedOp>) -> Vec<&'a SignedOp> {
    let mut waiting: BTreeMap<OpId, usize> = BTreeMap::new();
    let mut children: BTreeMap<OpId, Vec<OpId>> = BTreeMap::new();
    let mut ready: BTreeSet<OpId> = BTreeSet::new();
    for (id, op) in ops {
        let parents = &op.op().parents;
        if parents.is_empty() {
            ready.insert(*id);
        }
        waiting.insert(*id, parents.len());
        for parent in parents {
            children.entry(*parent).or_default().push(*id);
        }
    }
    let mut order = Vec::with_capacity(ops.len());
    while let Some(id) = ready.pop_first() {
        order.push(ops[&id]);
        for child in children.get(&id).into_iter().flatten() {
            let count = waiting.get_mut(child).expect("children are held");
            *count -= 1;
            if *count == 0 {
                ready.insert(*child);
            }
        }
    }
    order
}

/// Every add and valid removal of each device, by topological index.
#[derive(Default)]
struct Devices<'a> {
    /// The `Create` (for its first device) and valid `AddDevice` operations.
    adds: BTreeMap<PeerId, Vec<(usize, &'a Party)>>,
    /// Valid `RemoveDevice` operations.
    removes: BTreeMap<PeerId, Vec<usize>>,
}

impl Devices<'_> {
    /// Whether `device` is an owner among the operations `within` accepts (a set closed under
    /// ancestry): some add of it has every removal of it in its causal past. Returns the latest
    /// such add (by topological index), whose party data the state shows.
    fn owner_within(
        &self,
        device: &PeerId,
        anc: &Ancestors,
        within: impl Fn(usize) -> bool,
    ) -> Option<(usize, &Party)> {
        let removes = self.removes.get(device).map(Vec::as_slice).unwrap_or(&[]);
        self.adds
            .get(device)?
            .iter()
            .filter(|(add, _)| within(*add))
            .filter(|(add, _)| {
                removes
                    .iter()
                    .filter(|remove| within(**remove))
                    .all(|remove| anc.has(*add, *remove))
            })
            .max_by_key(|(add, _)| *add)
            .map(|(add, party)| (*add, *party))
    }
}

/// Computes the state of `ops`, a set of operations of one record (see the module docs).
pub(super) fn analyse<'a>(ops: impl IntoIterator<Item = &'a SignedOp>) -> Analysis {
    let ops: BTreeMap<OpId, &SignedOp> = ops.into_iter().map(|op| (op.id(), op)).collect();
    let order = topological(&ops);
    let index: BTreeMap<OpId, usize> = order
        .iter()
        .enumerate()
        .map(|(i, op)| (op.id(), i))
        .collect();
    let anc = Ancestors::new(&order, &index);
    let mut state = LedgerState {
        pending: ops.len() - order.len(),
        ..LedgerState::default()
    };
    let mut verdicts: Vec<Option<Result<(), String>>> = vec![None; order.len()];

    // Rule 1: the record's Create is the lowest-id well-formed parentless Create.
    let create = order
        .iter()
        .enumerate()
        .filter_map(|(i, op)| Some((op.id(), i, well_formed_create(op)?)))
        .min();
    let Some((_, create, root)) = create else {
        let why = || Some(Err("the record's Create operation is not held".to_string()));
        verdicts.fill_with(why);
        return finish(state, &order, &anc, verdicts, BTreeSet::new());
    };
    state.root = Some(root);

    // Rules 1 and 2: structure, and device operations signed by the root.
    let mut devices = Devices::default();
    for (i, op) in order.iter().enumerate() {
        let verdict = judge_structure(i, op, create, root, &anc);
        if verdict.is_ok() {
            match &op.op().body {
                OpBody::Create {
                    first_device: device,
                    ..
                }
                | OpBody::AddDevice { device } => {
                    devices
                        .adds
                        .entry(device.peer)
                        .or_default()
                        .push((i, device));
                }
                OpBody::RemoveDevice { device } => {
                    devices.removes.entry(*device).or_default().push(i);
                }
                _ => {}
            }
        }
        if verdict.is_err() || i == create || is_device_op(&op.op().body) {
            verdicts[i] = Some(verdict);
        }
    }

    // Rule 4: grants, revocations and key announcements signed by owner devices.
    for (i, op) in order.iter().enumerate() {
        if verdicts[i].is_none() {
            verdicts[i] = Some(judge_owner_op(i, op, &devices, &anc));
        }
    }

    // Rule 3: the owners of the whole set.
    for device in devices.adds.keys() {
        if let Some((_, party)) = devices.owner_within(device, &anc, |_| true) {
            state.owners.insert(*device, party.clone());
        }
    }
    state.removed_devices = devices
        .removes
        .keys()
        .filter(|device| !state.owners.contains_key(device))
        .copied()
        .collect();

    let valid: BTreeSet<usize> = verdicts
        .iter()
        .enumerate()
        .filter(|(_, verdict)| matches!(verdict, Some(Ok(()))))
        .map(|(i, _)| i)
        .collect();
    apply_grants(&mut state, &order, &anc, &valid);
    apply_keys(&mut state, &order, &valid);
    apply_closes(&mut state, &order, &valid);
    apply_pins(&mut state, &order, &valid);
    finish(state, &order, &anc, verdicts, valid)
}

/// The root key of `op`, if it is a `Create` that could be its record's: no parents, signed by
/// the root it names, for the record that root's id names.
fn well_formed_create(op: &SignedOp) -> Option<PeerId> {
    let op = op.op();
    match &op.body {
        OpBody::Create { root, .. }
            if op.parents.is_empty()
                && op.author == *root
                && op.record == RecordId::of_root(root) =>
        {
            Some(*root)
        }
        _ => None,
    }
}

/// Rules 1 and 2: everything but the chosen Create descends from it, and device operations are
/// signed by the root. Owner operations that pass still face [`judge_owner_op`].
fn judge_structure(
    i: usize,
    op: &SignedOp,
    create: usize,
    root: PeerId,
    anc: &Ancestors,
) -> Result<(), String> {
    if i == create {
        return Ok(());
    }
    if well_formed_create(op).is_some() {
        return Err("the record already has a Create operation with a lower id".into());
    }
    let op = op.op();
    if let OpBody::Create { .. } = op.body {
        return Err(
            "a Create operation must have no parents and be signed by its record's root key".into(),
        );
    }
    if op.parents.is_empty() {
        return Err("only the record's Create operation may have no parents".into());
    }
    if !anc.has(i, create) {
        return Err("it does not follow the record's Create operation".into());
    }
    if is_device_op(&op.body) && op.author != root {
        return Err(format!(
            "devices are added and removed by the record root key only, not by {}",
            op.author
        ));
    }
    Ok(())
}

fn is_device_op(body: &OpBody) -> bool {
    matches!(body, OpBody::AddDevice { .. } | OpBody::RemoveDevice { .. })
}

/// Rule 4: the author was an owner device in the operation's causal past, and the operation
/// is not concurrent with a removal of its author (it must precede every removal it does not
/// follow; one it follows must have been undone by a later re-add, which the owner check sees).
fn judge_owner_op(
    i: usize,
    op: &SignedOp,
    devices: &Devices,
    anc: &Ancestors,
) -> Result<(), String> {
    let author = op.op().author;
    if devices
        .owner_within(&author, anc, |j| anc.has(i, j))
        .is_none()
    {
        return Err(format!(
            "{author} was not an owner device of the record when it signed this"
        ));
    }
    let removes = devices
        .removes
        .get(&author)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if removes
        .iter()
        .any(|&remove| !anc.has(remove, i) && !anc.has(i, remove))
    {
        return Err(format!(
            "{author} signed this concurrently with its removal from the record's devices"
        ));
    }
    if let OpBody::Grant {
        sections, access, ..
    } = &op.op().body
        && *access != Access::Relay
        && sections.contains(&Section::Audit)
    {
        return Err("the audit section cannot be granted".into());
    }
    Ok(())
}

/// Rule 5: a valid grant is in force unless a valid revocation names it, or a valid revocation
/// of its grantee does not precede it.
fn apply_grants(
    state: &mut LedgerState,
    order: &[&SignedOp],
    anc: &Ancestors,
    valid: &BTreeSet<usize>,
) {
    let mut revoked_grants: BTreeSet<OpId> = BTreeSet::new();
    let mut revoked_parties: BTreeMap<PeerId, Vec<usize>> = BTreeMap::new();
    for &i in valid {
        if let OpBody::Revoke { target } = &order[i].op().body {
            match target {
                RevokeTarget::Grant(id) => {
                    revoked_grants.insert(*id);
                }
                RevokeTarget::Party(peer) => revoked_parties.entry(*peer).or_default().push(i),
            }
        }
    }
    for &i in valid {
        let op = order[i].op();
        let OpBody::Grant {
            grantee,
            sections,
            access,
            expires_ms,
            purpose,
        } = &op.body
        else {
            continue;
        };
        let grant = GrantState {
            id: order[i].id(),
            grantee: grantee.clone(),
            sections: sections.clone(),
            access: *access,
            expires_ms: *expires_ms,
            purpose: purpose.clone(),
            granted_by: op.author,
            time_ms: op.time_ms,
        };
        let party_revoked = revoked_parties
            .get(&grantee.peer)
            .is_some_and(|revokes| revokes.iter().any(|&r| !anc.has(i, r)));
        if revoked_grants.contains(&grant.id) || party_revoked {
            state.revoked.push(grant);
        } else {
            state.grants.push(grant);
        }
    }
    state.grants.sort_by_key(|grant| grant.id);
    state.revoked.sort_by_key(|grant| grant.id);
}

/// Rule 6: every key a valid `Keys` operation announces, at its lowest announced epoch, held by
/// every recipient of every valid operation carrying it.
fn apply_keys(state: &mut LedgerState, order: &[&SignedOp], valid: &BTreeSet<usize>) {
    let mut sections: BTreeMap<Section, BTreeMap<KeyId, EpochKey>> = BTreeMap::new();
    for &i in valid {
        let OpBody::Keys {
            section,
            keys,
            recipients,
            ..
        } = &order[i].op().body
        else {
            continue;
        };
        let known = sections.entry(*section).or_default();
        for (epoch, key_id) in keys {
            let key = known.entry(*key_id).or_insert_with(|| EpochKey {
                epoch: *epoch,
                key_id: *key_id,
                holders: BTreeSet::new(),
            });
            key.epoch = key.epoch.min(*epoch);
            key.holders.extend(recipients.iter().copied());
        }
    }
    state.keys = sections
        .into_iter()
        .map(|(section, keys)| {
            let mut keys: Vec<EpochKey> = keys.into_values().collect();
            keys.sort_by_key(|key| (key.epoch, key.key_id));
            (section, keys)
        })
        .collect();
}

/// Rule 9: the change heads the valid `Pin` operations of each party accept.
fn apply_pins(state: &mut LedgerState, order: &[&SignedOp], valid: &BTreeSet<usize>) {
    for &i in valid {
        let OpBody::Pin { party, heads } = &order[i].op().body else {
            continue;
        };
        let pinned = state.pins.entry(*party).or_default();
        for (section, hashes) in heads {
            pinned
                .entry(*section)
                .or_default()
                .extend(hashes.iter().copied());
        }
    }
}

/// Rule 8: the valid `Close` operations of each party.
fn apply_closes(state: &mut LedgerState, order: &[&SignedOp], valid: &BTreeSet<usize>) {
    for &i in valid {
        let OpBody::Close {
            party,
            sections,
            accepted,
        } = &order[i].op().body
        else {
            continue;
        };
        state.closes.entry(*party).or_default().push(CloseState {
            id: order[i].id(),
            sections: sections.iter().copied().collect(),
            accepted: accepted.iter().copied().collect(),
        });
    }
}

/// Records the verdicts and computes the heads: valid operations no valid operation follows.
fn finish(
    mut state: LedgerState,
    order: &[&SignedOp],
    anc: &Ancestors,
    verdicts: Vec<Option<Result<(), String>>>,
    valid: BTreeSet<usize>,
) -> Analysis {
    let mut followed = vec![0u64; anc.words];
    for &i in &valid {
        for (all, mine) in followed.iter_mut().zip(anc.row(i)) {
            *all |= mine;
        }
    }
    let is_followed = |i: usize| followed[i / 64] & (1 << (i % 64)) != 0;
    let mut rejected_before_heads = Vec::new();
    for (i, (op, verdict)) in order.iter().zip(verdicts).enumerate() {
        if let Some(Err(why)) = verdict {
            if is_followed(i) {
                rejected_before_heads.push((op.id(), why.clone()));
            }
            state.rejected.push((op.id(), why));
        }
    }
    state.rejected.sort_by_key(|(id, _)| *id);
    rejected_before_heads.sort_by_key(|(id, _)| *id);
    let mut heads: Vec<OpId> = valid
        .iter()
        .filter(|&&i| !is_followed(i))
        .map(|&i| order[i].id())
        .collect();
    heads.sort();
    state.valid = valid.iter().map(|&i| order[i].id()).collect();
    Analysis {
        state,
        heads,
        complete: order.iter().map(|op| op.id()).collect(),
        rejected_before_heads,
    }
}
