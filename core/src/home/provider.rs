//! The provider side: the records patients share with this node, read and written within the
//! grant, every access logged to the patient.
//!
//! A provider's node holds the records it was granted (they arrive by sync) next to no record
//! of its own. [`Home::patients`] lists them with what the ledger grants this node;
//! [`Home::open_patient`] opens one by its id as a [`PatientRecord`], decrypting only the
//! sections this node may read. The record itself is reachable only through
//! [`PatientRecord::read`], which first writes an `AuditEvent` sealed to the patient's devices
//! and commits it durably: if the entry cannot be written, nothing is read (fail closed).
//! [`PatientRecord::add`] writes within the grant and stores its audit entry in the same
//! transaction as the write.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde_json::Value;

use super::{Home, Result};
use crate::{
    audit::{self, AuditAction, Logged},
    blob::Blob,
    fhir::reference::ResourceKey,
    keys::{PeerId, RecordId},
    ledger::{GrantState, LedgerState},
    nhs::NHS_NUMBER_SYSTEM,
    record::{self, Current, PutOutcome, Record, RecordError, RecordMeta, Stamp},
    replica::Replica,
    section::{Section, place},
    store::Store,
    view::PatientHeader,
};

mod inbox;
#[cfg(test)]
mod tests;

pub use inbox::{InboxEntry, InboxItem, Waiting};

/// The one record of `matches`; else the error `none` or `many` makes (given the ids, joined).
fn the_one(
    matches: &[RecordId],
    none: impl FnOnce() -> ProviderError,
    many: impl FnOnce(String) -> ProviderError,
) -> Result<RecordId> {
    match matches {
        [id] => Ok(*id),
        [] => Err(none().into()),
        _ => Err(many(
            matches
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        )
        .into()),
    }
}

/// The local setting that maps NHS numbers to the records on this node that carry them.
const NHS_INDEX: &str = "nhs-index";

/// One record in the patient index (the vault's `patient_index` table, a sealed row per
/// record): who the patient is as last read, and the store generation it was read at
/// ([`crate::store::Store::generations`]). `phr patients` reads a record's summary again only
/// when the record changed since, so a page costs the page and the index, not every record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Indexed {
    generation: u64,
    /// Who the record's `Patient` says the patient is, if this node could read it.
    patient: Option<PatientHeader>,
    /// The `Patient`'s key (`Patient/id`), which the audit entry of showing it names.
    key: Option<String>,
}

/// Which patients [`Home::patients_page`] lists.
#[derive(Debug, Clone)]
pub struct PatientQuery {
    /// Text to find in the name, an NHS number (spaced or not), or the start of a record id.
    pub search: Option<String>,
    /// The page, from 1.
    pub page: usize,
    /// Records per page.
    pub per_page: usize,
}

impl PatientQuery {
    /// Every record, on one page.
    pub fn all() -> PatientQuery {
        PatientQuery {
            search: None,
            page: 1,
            per_page: usize::MAX,
        }
    }

    fn matches(&self, id: &RecordId, patient: Option<&PatientHeader>) -> bool {
        let Some(search) = self
            .search
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return true;
        };
        let wanted = search.to_lowercase();
        let digits: String = search.chars().filter(|c| !c.is_whitespace()).collect();
        id.to_string().starts_with(&wanted)
            || patient.is_some_and(|p| {
                p.name
                    .as_deref()
                    .is_some_and(|name| name.to_lowercase().contains(&wanted))
                    || p.nhs_number
                        .as_deref()
                        .is_some_and(|n| !digits.is_empty() && n.replace(' ', "").contains(&digits))
            })
    }
}

/// A page of [`Home::patients_page`].
#[derive(Debug, Clone)]
pub struct PatientPage {
    /// The records on the page.
    pub items: Vec<SharedRecord>,
    /// How many records match, on every page.
    pub total: usize,
}

/// Why a patient's record cannot be opened, read or written from this node.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No record this node holds has an id starting so.
    #[error(
        "no record shared with this node has an id starting `{0}`; `phr patients` lists the \
         records it holds (a record arrives once the patient has shared it and the two nodes \
         have synced)"
    )]
    UnknownPatient(String),
    /// Several records' ids start so.
    #[error("`{query}` is the start of several records' ids ({matches}); give more of the id")]
    AmbiguousPatient {
        /// What was asked for.
        query: String,
        /// The ids that match.
        matches: String,
    },
    /// No record on this node's list is known to carry the NHS number.
    #[error(
        "no patient with NHS number {0} is known on this node; `phr patients` lists the records \
         shared with it (and learns each one's NHS number), or give the record's id"
    )]
    UnknownNhsNumber(String),
    /// Several records carry the NHS number: a person must tell which is the patient's.
    #[error(
        "NHS number {number} is on {} records here ({matches}); give the record's id, and \
         check with the patient which is theirs",
        .matches.split(", ").count()
    )]
    SharedNhsNumber {
        /// The number.
        number: String,
        /// The ids of the records that carry it.
        matches: String,
    },
    /// The record waits for a person at this provider to accept it.
    #[error(
        "record {0} was shared with this node but nobody here has accepted it yet; see it with \
         `phr patients --pending`, then `phr patients accept {0}` (or `decline`)"
    )]
    Pending(RecordId),
    /// Accepting and declining patients is for a provider's node.
    #[error(
        "this home is not a provider's node; `phr patients accept` and `decline` run on the \
         node of the practice or pharmacy a record was shared with"
    )]
    NotAProvider,
    /// `--patient` named this home's own record.
    #[error("{0} is this home's own record; run the command without --patient")]
    OwnRecord(RecordId),
    /// The ledger grants this node nothing on the record (never, or revoked).
    #[error(
        "record {0} is not shared with this node (the patient never granted it, or revoked the \
         grant); ask the patient to share it with `phr share grant`"
    )]
    NotGranted(RecordId),
    /// The patient withdrew this node's access (revoked its grants): what it still holds is a
    /// copy as of then, and is not shown.
    #[error(
        "this node's access to record {record} ended on {ended}: the patient withdrew it. The \
         copy this node holds is as of {copy} and is not shown; ask the patient to share the \
         record again with `phr share grant` if care continues"
    )]
    Withdrawn {
        /// The record.
        record: RecordId,
        /// When access ended, as the patient's device dated it.
        ended: String,
        /// The newest entry of the copy held.
        copy: String,
    },
    /// Every grant this node holds on the record has expired.
    #[error(
        "this node's access to record {record} expired on {expired}; ask the patient to renew it \
         with `phr share grant`"
    )]
    Expired {
        /// The record.
        record: RecordId,
        /// When the last grant lapsed.
        expired: String,
    },
    /// A section this node may not read.
    #[error(
        "the {section} section of record {record} is not shared with this node (it may read: \
         {readable}); ask the patient to grant it"
    )]
    NotReadable {
        /// The record.
        record: RecordId,
        /// The section asked for.
        section: Section,
        /// What it may read.
        readable: String,
    },
    /// A section this node may not write.
    #[error(
        "this node may not write to the {section} section of record {record} (it may write: \
         {writable}); nothing was saved. Ask the patient for write access to {section}"
    )]
    NotWritable {
        /// The record.
        record: RecordId,
        /// The section the entry belongs in.
        section: Section,
        /// What it may write.
        writable: String,
    },
    /// An import another party made: only it, or the patient, takes it back.
    #[error(
        "import {import} in record {record} was made by {by}, not by this node; only they or \
         the patient can take it back. Nothing was changed"
    )]
    NotOwnImport {
        /// The record.
        record: RecordId,
        /// The import's id.
        import: String,
        /// Who made it.
        by: String,
    },
}

/// A record shared with this node, as [`Home::patients`] lists it.
#[derive(Debug, Clone)]
pub struct SharedRecord {
    /// The record's id.
    pub id: RecordId,
    /// Who the patient is, from the `Patient` resource of `summary`, if this node may read it.
    pub patient: Option<PatientHeader>,
    /// The grants in force to this node, expired ones included (none: revoked).
    pub grants: Vec<GrantState>,
    /// The sections this node may read now.
    pub readable: Vec<Section>,
    /// The sections this node may write now (`audit`, where it only appends, left out).
    pub writable: Vec<Section>,
    /// Problems met opening it (damaged items skipped, an entry that could not be logged).
    pub warnings: Vec<String>,
    /// If the patient withdrew this node's access: when, and how recent the copy held is.
    pub ended: Option<AccessEnded>,
    /// The name of the owner device that signed the newest grant to this node, and when.
    pub shared_by: Option<(String, Timestamp)>,
    /// The bytes of blobs this node stores of the record.
    pub stored_bytes: usize,
}

/// A withdrawal of this node's access, as it was told of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessEnded {
    /// When the patient's device withdrew it (its own clock).
    pub ended: Timestamp,
    /// The time of the newest entry this node holds of the record: the copy is as of then.
    pub copy_as_of: Option<Timestamp>,
}

/// A patient's record, opened on this node within its grant. See the module documentation.
pub struct PatientRecord<'h> {
    home: &'h Home,
    /// Where the replica is stored: the home's vault (a test swaps in a store that fails).
    store: &'h dyn Store,
    replica: Replica,
    record: Record,
    warnings: Vec<String>,
}

impl std::fmt::Debug for PatientRecord<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatientRecord")
            .field("record", &self.replica.id())
            .finish_non_exhaustive()
    }
}

impl Home {
    /// The records this home holds that are not its own, with what the ledger grants this node
    /// at `now`, but those waiting for a person to accept them ([`Home::pending_patients`]).
    /// Where it may read `summary`, the patient's `Patient` resource says who they are; showing
    /// it is a read, so it is logged to the patient first (if that fails, the record is listed
    /// by its id alone, with a warning). The whole list: [`Home::patients_page`] gives a page.
    pub fn patients(&self, now: Timestamp) -> Result<Vec<SharedRecord>> {
        Ok(self.list_patients(now, false, &PatientQuery::all())?.items)
    }

    /// The records shared with this provider that wait for a person to accept them, listed as
    /// [`Home::patients`] lists the others (the `Patient` shown is a logged read too).
    pub fn pending_patients(&self, now: Timestamp) -> Result<Vec<SharedRecord>> {
        Ok(self.list_patients(now, true, &PatientQuery::all())?.items)
    }

    /// One page of [`Home::patients`], ordered by name, of the records whose name, NHS number
    /// or record id matches `query.search`: read from the patient index this node keeps (a
    /// record's `Patient` is read again only when the record changed since), and only the
    /// names on the page are shown, so only those are logged.
    pub fn patients_page(&self, now: Timestamp, query: &PatientQuery) -> Result<PatientPage> {
        self.list_patients(now, false, query)
    }

    /// The NHS numbers the records on this node carry, as their `Patient`s said when last
    /// indexed: digits to record ids.
    fn nhs_index(&self) -> Result<BTreeMap<String, BTreeSet<RecordId>>> {
        Ok(self.vault.local(NHS_INDEX)?.unwrap_or_default())
    }

    /// The patient index: per record, who the patient is as last read, and the store
    /// generation it was read at (see [`Indexed`]).
    fn patient_index(&self) -> Result<BTreeMap<RecordId, Indexed>> {
        Ok(self.vault.patient_index()?.into_iter().collect())
    }

    fn list_patients(
        &self,
        now: Timestamp,
        pending: bool,
        query: &PatientQuery,
    ) -> Result<PatientPage> {
        let now_ms = now.as_millisecond();
        let me = self.peer_id();
        let intake = self.intake()?;
        let generations = self.vault.generations()?;
        let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
        let mut index = self.patient_index()?;
        let before = index.clone();
        let held: BTreeSet<RecordId> = self
            .vault
            .records()?
            .into_iter()
            .filter(|id| Some(*id) != self.record_id())
            .collect();
        index.retain(|id, _| held.contains(id));
        // Read again the `Patient` of each record changed since it was indexed.
        let mut problems: BTreeMap<RecordId, Vec<String>> = BTreeMap::new();
        for id in &held {
            let generation = generations.get(id).copied().unwrap_or(0);
            if index
                .get(id)
                .is_some_and(|entry| entry.generation == generation)
            {
                continue;
            }
            let mut replica = Replica::open(&self.vault, *id, me, &self.keystore.age)?;
            let readable = replica
                .ledger()
                .state()
                .can_read(&me, Section::Summary, now_ms);
            let mut entry = Indexed {
                generation,
                patient: None,
                key: None,
            };
            if readable {
                let (record, warnings) = replica.materialise_sections(
                    &self.vault,
                    meta_of(*id),
                    &self.device.actor(),
                    &self.keystore.age,
                    &[Section::Summary],
                )?;
                if let Some((key, resource)) = crate::identity::record_patient(&record)? {
                    entry.key = Some(key.to_string());
                    entry.patient = Some(crate::view::header_of(&resource, None, today));
                }
                problems.entry(*id).or_default().extend(warnings);
            }
            index.insert(*id, entry);
        }
        let header = |entry: &Indexed| entry.patient.clone().map(|p| p.aged(today));
        // Those this listing is about, ordered by name (unnamed last: `None` sorts after every
        // name here), then id; each name lowered once, not at every comparison.
        let mut matching: Vec<(bool, Option<String>, RecordId)> = held
            .iter()
            .filter(|id| intake.is_pending(id) == pending)
            .filter_map(|id| {
                let name = index
                    .get(id)
                    .and_then(|entry| entry.patient.as_ref())
                    .and_then(|p| p.name.as_deref());
                let found = || index.get(id).and_then(header);
                let shown = if query.search.is_some() {
                    query.matches(id, found().as_ref())
                } else {
                    true
                };
                shown.then(|| (name.is_none(), name.map(str::to_lowercase), *id))
            })
            .collect();
        matching.sort_unstable();
        let total = matching.len();
        let page: Vec<RecordId> = matching
            .into_iter()
            .skip(query.page.saturating_sub(1).saturating_mul(query.per_page))
            .take(query.per_page)
            .map(|(_, _, id)| id)
            .collect();
        let mut out: Vec<SharedRecord> = Vec::new();
        // The audit entries of the names shown, by their place in `out`.
        let mut entries: Vec<(usize, Blob)> = Vec::new();
        for id in page {
            let replica = Replica::open(&self.vault, id, me, &self.keystore.age)?;
            let state = replica.ledger().state();
            let (readable, writable) = sections_of(state, &me, now_ms);
            let mut shared = SharedRecord {
                id,
                patient: None,
                grants: state.grants_to(&me).into_iter().cloned().collect(),
                readable,
                writable,
                warnings: replica.problems().to_vec(),
                ended: access_ended(&replica, &me, now_ms),
                shared_by: shared_by(state, &me),
                stored_bytes: replica.stored_bytes(),
            };
            shared
                .warnings
                .extend(problems.remove(&id).unwrap_or_default());
            let entry = index.get(&id);
            if shared.readable.contains(&Section::Summary)
                && let Some(entry) = entry
                && let (Some(found), Some(key)) = (header(entry), &entry.key)
            {
                let logged = Logged::read("patient list", &[Section::Summary]);
                let logged = match key.parse() {
                    Ok(key) => logged.of(key),
                    Err(_) => logged,
                };
                match self.audit_entry(&replica, &logged, now) {
                    Ok(blob) => {
                        entries.push((out.len(), blob));
                        shared.patient = Some(found);
                    }
                    Err(e) => shared.warnings.push(format!(
                        "record {id}: the patient's name is not shown, because reading it could \
                         not be logged to the patient: {e}"
                    )),
                }
            }
            out.push(shared);
        }
        // Every name shown is logged to its patient first: all the entries in one durable
        // transaction (one fsync for the page, not one per patient), with the indexes. A
        // record given an entry here moves to that transaction's generation.
        let mut batch = crate::vault::Batch::new();
        // The generation this commit gives the records it touches: the next one.
        let next = self.vault.changed_since(u64::MAX)?.0 + 1;
        for (_, entry) in &entries {
            let header = entry.header();
            batch.blob(header.record, header.section, entry);
            if let Some(indexed) = index.get_mut(&header.record) {
                indexed.generation = next;
            }
        }
        // Only the rows that changed are written; the NHS numbers are worked out again only if
        // who a record is about changed (a page shown changes only the generations).
        let mut patients_changed = index.len() != before.len();
        for (id, entry) in &index {
            let was = before.get(id);
            if was != Some(entry) {
                batch.index_patient(*id, entry);
                patients_changed |= was.is_none_or(|was| was.patient != entry.patient);
            }
        }
        if patients_changed {
            let mut numbers: BTreeMap<String, BTreeSet<RecordId>> = BTreeMap::new();
            for (id, entry) in &index {
                if let Some(number) = entry
                    .patient
                    .as_ref()
                    .and_then(|p| p.nhs_number.as_deref())
                    .and_then(|n| crate::nhs::NhsNumber::parse(n).ok())
                {
                    numbers
                        .entry(number.as_str().to_string())
                        .or_default()
                        .insert(*id);
                }
            }
            if numbers != self.nhs_index()? {
                batch.local(NHS_INDEX, &numbers);
            }
        }
        if !batch.is_empty()
            && let Err(e) = self.vault.commit(batch)
        {
            for (at, _) in &entries {
                let shared = &mut out[*at];
                shared.patient = None;
                shared.warnings.push(format!(
                    "record {}: the patient's name is not shown, because reading it could not \
                     be logged to the patient: {e}",
                    shared.id
                ));
            }
        }
        Ok(PatientPage { items: out, total })
    }

    /// Opens a patient's record shared with this node, by its id (32 hex digits) or an
    /// unambiguous start of it, decrypting the sections this node may read at `now`.
    pub fn open_patient(&self, query: &str, now: Timestamp) -> Result<PatientRecord<'_>> {
        let id = self.find_patient(query, &|_| true)?;
        if self.is_pending(&id)? {
            return Err(ProviderError::Pending(id).into());
        }
        let me = self.peer_id();
        let mut replica = Replica::open(&self.vault, id, me, &self.keystore.age)?;
        if let Some(ended) = access_ended(&replica, &me, now.as_millisecond()) {
            return Err(withdrawn(id, ended).into());
        }
        check_admitted(replica.ledger().state(), id, &me, now.as_millisecond())?;
        let (readable, _) = sections_of(replica.ledger().state(), &me, now.as_millisecond());
        let (mut record, mut warnings) = replica.materialise_sections(
            &self.vault,
            meta_of(id),
            &self.device.actor(),
            &self.keystore.age,
            &readable,
        )?;
        warnings.splice(0..0, replica.problems().iter().cloned());
        // Entries added here name the patient as their subject, as the patient's own do.
        if let Some(key) = first_patient(&record)? {
            let nhs_number = record
                .get(&key)?
                .and_then(|patient| nhs_number_of(&patient));
            record.set_meta(RecordMeta {
                subject: Some(key.to_string()),
                nhs_number,
                ..meta_of(id)
            });
        }
        Ok(PatientRecord {
            home: self,
            store: &self.vault,
            replica,
            record,
            warnings,
        })
    }

    /// The one held record, not this home's own and among those `among` takes, whose id is or
    /// starts with `query`.
    pub(super) fn find_patient(
        &self,
        query: &str,
        among: &dyn Fn(&RecordId) -> bool,
    ) -> Result<RecordId> {
        // A valid NHS number (spaced or not) names the patient by the index `phr patients`
        // keeps: no record is read to find it.
        if let Ok(number) = crate::nhs::NhsNumber::parse(query.trim()) {
            let index = self.nhs_index()?;
            let matches: Vec<RecordId> = index
                .get(number.as_str())
                .into_iter()
                .flatten()
                .copied()
                .filter(|id| Some(*id) != self.record_id() && among(id))
                .collect();
            return the_one(
                &matches,
                || ProviderError::UnknownNhsNumber(number.to_string()),
                |matches| ProviderError::SharedNhsNumber {
                    number: number.to_string(),
                    matches,
                },
            );
        }
        let wanted = query.trim().to_ascii_lowercase();
        if let Some(own) = self.record_id()
            && own.to_string() == wanted
        {
            return Err(ProviderError::OwnRecord(own).into());
        }
        // A whole id is looked up, not searched for among every record held.
        if let Ok(id) = wanted.parse::<RecordId>() {
            if among(&id) && !self.vault.ledger_ops(&id)?.is_empty() {
                return Ok(id);
            }
            return Err(ProviderError::UnknownPatient(query.to_string()).into());
        }
        let matches: Vec<RecordId> = self
            .vault
            .records()?
            .into_iter()
            .filter(|id| Some(*id) != self.record_id() && among(id))
            .filter(|id| !wanted.is_empty() && id.to_string().starts_with(&wanted))
            .collect();
        the_one(
            &matches,
            || ProviderError::UnknownPatient(query.to_string()),
            |matches| ProviderError::AmbiguousPatient {
                query: query.to_string(),
                matches,
            },
        )
    }

    /// An `AuditEvent` of this node logging `logged`, sealed to the owners of `replica`'s
    /// record, not yet stored.
    fn audit_entry(&self, replica: &Replica, logged: &Logged, now: Timestamp) -> Result<Blob> {
        let event = audit::audit_event(&crate::new_id(), logged, &self.party(), replica.id(), now);
        let author = self.device.author();
        let stamp = Stamp {
            author: &author,
            time: now,
        };
        let actor = audit::entry_actor(&self.peer_id());
        let message = format!("audit: {}", logged.what);
        let (section, changes) = record::lone_change(stamp, &event, actor, &message)?;
        debug_assert_eq!(section, Section::Audit, "an AuditEvent is placed in audit");
        Ok(replica.seal_to_owners(&self.keystore.device, &changes, now.as_millisecond())?)
    }
}

impl<'h> PatientRecord<'h> {
    /// The record's id.
    pub fn id(&self) -> RecordId {
        self.replica.id()
    }

    /// The `Patient/id` the record is about, if this node may read `summary` (where the
    /// `Patient` is): entries added here name it as their subject.
    pub fn subject(&self) -> Option<&str> {
        self.record.meta().subject.as_deref()
    }

    /// Problems met opening it (damaged blobs skipped and the like).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The grants in force to this node (expired ones included).
    pub fn grants(&self) -> Vec<GrantState> {
        let me = self.home.peer_id();
        let state = self.replica.ledger().state();
        state.grants_to(&me).into_iter().cloned().collect()
    }

    /// The sections this node may read at `now`.
    pub fn readable(&self, now: Timestamp) -> Vec<Section> {
        sections_of(
            self.replica.ledger().state(),
            &self.home.peer_id(),
            now.as_millisecond(),
        )
        .0
    }

    /// Logs `logged` (a read of its sections) to the patient, durably, and only then returns
    /// the record. Refused, with nothing logged or returned, if a section is not readable at
    /// `now` or the grant has lapsed; if the entry cannot be written, the read fails.
    pub fn read(&mut self, logged: &Logged, now: Timestamp) -> Result<&Record> {
        let me = self.home.peer_id();
        let now_ms = now.as_millisecond();
        let state = self.replica.ledger().state();
        check_admitted(state, self.id(), &me, now_ms)?;
        let (readable, _) = sections_of(state, &me, now_ms);
        if let Some(section) = logged.sections.iter().find(|s| !readable.contains(s)) {
            return Err(ProviderError::NotReadable {
                record: self.id(),
                section: *section,
                readable: words(&readable),
            }
            .into());
        }
        let entry = self.home.audit_entry(&self.replica, logged, now)?;
        self.replica.store_sealed(self.store, vec![entry])?;
        Ok(&self.record)
    }

    /// As [`PatientRecord::read`], with the record's consent state beside the record: who
    /// each writer is, to show who signed what.
    pub fn read_with_consent(
        &mut self,
        logged: &Logged,
        now: Timestamp,
    ) -> Result<(&Record, &LedgerState)> {
        self.read(logged, now)?;
        Ok((&self.record, self.replica.ledger().state()))
    }

    /// Writes `resource` (into the section [`place`] chooses) if this node may write there,
    /// signed and sealed by this node, with its audit entry (action `C` or `U`) in the same
    /// durable transaction. A section it may not write is refused and nothing is stored.
    pub fn add(&mut self, resource: &Value, message: &str, now: Timestamp) -> Result<PutOutcome> {
        let outcomes = self.add_all(std::slice::from_ref(resource), message, now)?;
        Ok(outcomes[0])
    }

    /// Writes several resources as one change (as [`PatientRecord::add`] writes one): all of
    /// them or none, with one audit entry naming the first and every section touched. Used
    /// where one decision changes several resources, e.g. a repeat issued (the prescription,
    /// the order and the repeat's count).
    pub fn add_all(
        &mut self,
        resources: &[Value],
        message: &str,
        now: Timestamp,
    ) -> Result<Vec<PutOutcome>> {
        let me = self.home.peer_id();
        let now_ms = now.as_millisecond();
        let state = self.replica.ledger().state();
        check_admitted(state, self.id(), &me, now_ms)?;
        let (_, writable) = sections_of(state, &me, now_ms);
        let mut keys = Vec::with_capacity(resources.len());
        let mut sections = Vec::new();
        let mut updates = false;
        for resource in resources {
            let key = ResourceKey::of(resource).ok_or(RecordError::NoKey)?;
            let section = place(resource);
            // A resource that moves section is also removed from the one it was in.
            let mut touched = vec![section];
            let existing = match self.record.current(&key)? {
                None => Vec::new(),
                Some(Current::One(version)) => vec![version],
                Some(Current::Conflict(versions)) => versions,
            };
            updates |= !existing.is_empty();
            touched.extend(existing.iter().map(|version| version.section));
            self.check_writable(&touched, &writable)?;
            if !sections.contains(&section) {
                sections.push(section);
            }
            keys.push(key);
        }
        let logged = Logged {
            action: if updates {
                AuditAction::Update
            } else {
                AuditAction::Create
            },
            what: message.to_string(),
            sections,
            resource: keys.first().cloned(),
        };
        let entry = self.home.audit_entry(&self.replica, &logged, now)?;
        let author = self.home.device.author();
        let stamp = Stamp {
            author: &author,
            time: now,
        };
        let mut outcomes = Vec::with_capacity(resources.len());
        for resource in resources {
            match self.record.put(stamp, resource) {
                Ok(outcome) => outcomes.push(outcome),
                Err(error) => {
                    self.record.rollback();
                    return Err(error.into());
                }
            }
        }
        if outcomes.iter().all(|o| *o == PutOutcome::Unchanged) {
            return Ok(outcomes);
        }
        self.record.commit(stamp, message);
        self.replica.save_with(
            self.store,
            &self.home.keystore.device,
            &mut self.record,
            vec![entry],
            now_ms,
        )?;
        Ok(outcomes)
    }
}

impl PatientRecord<'_> {
    /// Imports parsed FHIR resources (from [`crate::import::parse`]) if every one of them goes
    /// to a section this node may write (and, if it replaces a stored resource, comes from one),
    /// signed by this node, with one audit entry for the import in the same durable
    /// transaction. All or nothing: one refused resource refuses the import, nothing stored.
    pub fn import(
        &mut self,
        parsed: &[crate::import::Parsed],
        skipped: usize,
        options: crate::import::ImportOptions,
        now: Timestamp,
    ) -> Result<crate::import::ImportReport> {
        let me = self.home.peer_id();
        let now_ms = now.as_millisecond();
        let state = self.replica.ledger().state();
        check_admitted(state, self.id(), &me, now_ms)?;
        let (_, writable) = sections_of(state, &me, now_ms);
        for item in parsed {
            let mut touched = vec![place(&item.resource)];
            if let Some(key) = ResourceKey::of(&item.resource) {
                match self.record.current(&key)? {
                    None => {}
                    Some(Current::One(version)) => touched.push(version.section),
                    Some(Current::Conflict(versions)) => {
                        touched.extend(versions.iter().map(|v| v.section))
                    }
                }
            }
            self.check_writable(&touched, &writable)?;
        }
        let author = self.home.device.author();
        let stamp = Stamp {
            author: &author,
            time: now,
        };
        let report =
            match crate::import::apply_as(&mut self.record, stamp, parsed, skipped, options) {
                Ok(report) => report,
                Err(error) => {
                    self.record.rollback();
                    return Err(super::HomeError::Import(error));
                }
            };
        let written = report.added + report.updated;
        if written == 0 {
            return Ok(report);
        }
        let logged = Logged {
            action: if report.updated > 0 {
                AuditAction::Update
            } else {
                AuditAction::Create
            },
            what: format!("import {written} resources"),
            sections: report.written.keys().copied().collect(),
            resource: None,
        };
        self.save_logged(&logged, now)?;
        Ok(report)
    }
}

impl PatientRecord<'_> {
    /// Saves what was written, signed by this node, with the audit entry of `logged` in the
    /// same durable transaction.
    fn save_logged(&mut self, logged: &Logged, now: Timestamp) -> Result<()> {
        let entry = self.home.audit_entry(&self.replica, logged, now)?;
        self.replica.save_with(
            self.store,
            &self.home.keystore.device,
            &mut self.record,
            vec![entry],
            now.as_millisecond(),
        )?;
        Ok(())
    }

    /// Refuses, naming the first, a section of `touched` this node may not write (`writable`).
    fn check_writable(&self, touched: &[Section], writable: &[Section]) -> Result<()> {
        match touched.iter().find(|s| !writable.contains(s)) {
            Some(refused) => Err(ProviderError::NotWritable {
                record: self.id(),
                section: *refused,
                writable: words(writable),
            }
            .into()),
            None => Ok(()),
        }
    }

    /// Takes back an import this node made (`Record::undo_import`), if every section it
    /// touches is one this node may write, signed by this node, with one audit entry in the
    /// same durable transaction. An import by anyone else, an unknown id, or a section it may
    /// not write is refused with nothing stored.
    pub fn undo_import(&mut self, id: &str, now: Timestamp) -> Result<crate::record::Undone> {
        let me = self.home.peer_id();
        let now_ms = now.as_millisecond();
        let state = self.replica.ledger().state();
        check_admitted(state, self.id(), &me, now_ms)?;
        let (_, writable) = sections_of(state, &me, now_ms);
        let (sections, authors) = self.record.import_scope(id)?;
        if sections.is_empty() {
            return Err(RecordError::UnknownImport(id.to_string()).into());
        }
        if let Some(other) = authors.iter().find(|author| **author != me.to_string()) {
            let by = other
                .parse::<PeerId>()
                .map(|peer| audit::party_name(self.replica.ledger(), &peer))
                .unwrap_or_else(|_| other.clone());
            return Err(ProviderError::NotOwnImport {
                record: self.id(),
                import: id.to_string(),
                by,
            }
            .into());
        }
        let sections: Vec<Section> = sections.into_iter().collect();
        self.check_writable(&sections, &writable)?;
        let author = self.home.device.author();
        let stamp = Stamp {
            author: &author,
            time: now,
        };
        let undone = match self.record.undo_import(stamp, id) {
            Ok(undone) => undone,
            Err(error) => {
                self.record.rollback();
                return Err(error.into());
            }
        };
        if undone.restored + undone.removed == 0 {
            return Ok(undone);
        }
        self.record.commit(stamp, &format!("undo import {id}"));
        let logged = Logged {
            action: AuditAction::Update,
            what: format!("undo import {id}"),
            sections,
            resource: None,
        };
        self.save_logged(&logged, now)?;
        Ok(undone)
    }
}

/// What `me` may read and write in a record at `now_ms` (`audit` left out of both: a grantee
/// never reads it and only appends its own entries).
fn sections_of(state: &LedgerState, me: &PeerId, now_ms: i64) -> (Vec<Section>, Vec<Section>) {
    let sections = Section::ALL
        .into_iter()
        .filter(|s| *s != Section::Audit || state.is_owner(me));
    let readable = sections
        .clone()
        .filter(|s| state.can_read(me, *s, now_ms))
        .collect();
    let writable = sections
        .filter(|s| state.can_write(me, *s, now_ms))
        .collect();
    (readable, writable)
}

/// Refuses a record whose ledger grants `me` nothing live at `now_ms`: never granted or revoked,
/// or expired (with when).
/// When the patient withdrew this node's access, if it did and this node was told: the newest
/// operation that ended it (a revocation, a removal, a close of its writing), and how recent
/// its copy is.
fn access_ended(replica: &Replica, me: &PeerId, now_ms: i64) -> Option<AccessEnded> {
    if replica.admits(me, now_ms) {
        return None;
    }
    let ended_ms = replica
        .withdrawal(me)
        .iter()
        .map(|op| op.op().time_ms)
        .max()?;
    Some(AccessEnded {
        ended: Timestamp::from_millisecond(ended_ms).unwrap_or(Timestamp::UNIX_EPOCH),
        copy_as_of: replica
            .newest_blob_ms()
            .and_then(|ms| Timestamp::from_millisecond(ms).ok()),
    })
}

/// Who shared the record with `me`: the owner device that signed the newest grant to it.
fn shared_by(state: &LedgerState, me: &PeerId) -> Option<(String, Timestamp)> {
    let grant = state.grants_to(me).into_iter().max_by_key(|g| g.time_ms)?;
    let name = state
        .owners
        .get(&grant.granted_by)
        .map(|owner| owner.name.clone())
        .unwrap_or_else(|| "a device no longer an owner".into());
    Some((name, Timestamp::from_millisecond(grant.time_ms).ok()?))
}

fn withdrawn(record: RecordId, ended: AccessEnded) -> ProviderError {
    let day = |t: Timestamp| t.strftime("%Y-%m-%d %H:%M UTC").to_string();
    ProviderError::Withdrawn {
        record,
        ended: day(ended.ended),
        copy: ended
            .copy_as_of
            .map(day)
            .unwrap_or_else(|| "(it holds no entries)".into()),
    }
}

fn check_admitted(state: &LedgerState, id: RecordId, me: &PeerId, now_ms: i64) -> Result<()> {
    if state.admitted(me, now_ms) {
        return Ok(());
    }
    let grants = state.grants_to(me);
    let lapsed = grants.iter().filter_map(|g| g.expires_ms).max();
    match lapsed {
        Some(ms) if !grants.is_empty() => Err(ProviderError::Expired {
            record: id,
            expired: Timestamp::from_millisecond(ms)
                .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|_| ms.to_string()),
        }
        .into()),
        _ => Err(ProviderError::NotGranted(id).into()),
    }
}

fn meta_of(id: RecordId) -> RecordMeta {
    RecordMeta {
        id: id.to_string(),
        subject: None,
        nhs_number: None,
    }
}

/// The first `Patient` of the summary section: who the record is about, as far as a provider
/// can tell (the patient's device keeps the subject in its own sealed settings).
fn first_patient(record: &Record) -> Result<Option<ResourceKey>, RecordError> {
    Ok(crate::identity::record_patient(record)?.map(|(key, _)| key))
}

fn nhs_number_of(patient: &Value) -> Option<String> {
    patient["identifier"]
        .as_array()?
        .iter()
        .find(|i| i["system"].as_str() == Some(NHS_NUMBER_SYSTEM))?["value"]
        .as_str()
        .map(str::to_string)
}

fn words(sections: &[Section]) -> String {
    if sections.is_empty() {
        return "nothing".into();
    }
    sections
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
