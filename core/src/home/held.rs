//! Entries held for the patient: written by a party after its access ended (see
//! [`crate::consent::withdrawn`]). The patient sees what each would add, then accepts it into the
//! record (as written by its real author) or discards it.

use jiff::Timestamp;

use super::{Home, HomeError, Result};
use crate::{
    audit::party_name,
    keys::{BlobId, PeerId},
    record::{Record, Version},
    section::Section,
};

/// One held entry, as the patient is shown it.
#[derive(Debug, Clone)]
pub struct HeldEntry {
    /// The blob's id.
    pub id: BlobId,
    /// The section it would change.
    pub section: Section,
    /// Who signed it.
    pub author: PeerId,
    /// Their name, as the ledger knows it.
    pub author_name: String,
    /// When it was written, as its author says.
    pub time: Timestamp,
    /// Its size in bytes.
    pub bytes: usize,
    /// The versions it would add, by resource key (empty if it adds none this device can see).
    pub versions: Vec<(String, Version)>,
    /// Why its content cannot be shown, if it cannot.
    pub problem: Option<String>,
}

impl Home {
    /// The entries held for the patient, oldest first, with what each would add to `record`.
    pub fn held_entries(&self, record: &Record) -> Result<Vec<HeldEntry>> {
        let replica = &self.held()?.replica;
        let ledger = replica.ledger();
        let mut entries = Vec::new();
        for held in replica.held() {
            let opened = replica.open_held(&self.vault, &self.keystore.age, &held.id)?;
            let (versions, problem) = match opened {
                Some((_, plain)) => match record.preview(held.section, &plain) {
                    Ok(versions) => (versions, None),
                    Err(e) => (Vec::new(), Some(e.to_string())),
                },
                None => (
                    Vec::new(),
                    Some("this device holds no key that opens it".to_string()),
                ),
            };
            entries.push(HeldEntry {
                id: held.id,
                section: held.section,
                author: held.author,
                author_name: party_name(ledger, &held.author),
                time: Timestamp::from_millisecond(held.time_ms).unwrap_or(Timestamp::UNIX_EPOCH),
                bytes: held.bytes,
                versions,
                problem,
            });
        }
        Ok(entries)
    }

    /// How many entries are held for the patient (none on a home without a record).
    pub fn held_count(&self) -> usize {
        self.held
            .as_ref()
            .map_or(0, |held| held.replica.held().len())
    }

    /// The held entries whose ids start with `prefix` (a full id or the short one shown).
    pub fn find_held(&self, prefix: &str) -> Result<Vec<BlobId>> {
        let ids = self.held()?.replica.held().into_iter().map(|held| held.id);
        one_by_prefix(ids, prefix, "held entry", "phr held").map(|id| vec![id])
    }

    /// Accepts held entries into the record, signed by this owner device: every node then takes
    /// them in as written by their real author. Returns how many were accepted.
    pub fn accept_held(&mut self, ids: &[BlobId], now: Timestamp) -> Result<usize> {
        let held = self
            .held
            .as_mut()
            .ok_or_else(|| HomeError::NoRecord(self.dir.clone()))?;
        held.replica.accept_held(
            &self.vault,
            &self.keystore.device,
            ids,
            now.as_millisecond(),
        )?;
        Ok(ids.len())
    }

    /// Forgets held entries for good. Returns how many were discarded.
    pub fn discard_held(&mut self, ids: &[BlobId]) -> Result<usize> {
        let held = self
            .held
            .as_mut()
            .ok_or_else(|| HomeError::NoRecord(self.dir.clone()))?;
        held.replica.discard_held(&self.vault, ids)?;
        Ok(ids.len())
    }
}

impl Home {
    /// The stored entries the record could not read when it was last loaded, with why (damaged
    /// copies, or entries that fail to load). Load the record first.
    pub fn unreadable(&self) -> Vec<(Section, BlobId, String)> {
        self.held
            .as_ref()
            .map(|held| held.replica.unreadable().to_vec())
            .unwrap_or_default()
    }

    /// Removes an unreadable entry (by its id or the start of it, as listed); a peer's good copy
    /// comes back at the next sync unless `for_good`. The rest of the record is untouched. Load
    /// the record first.
    pub fn remove_unreadable(&mut self, prefix: &str, for_good: bool) -> Result<BlobId> {
        let ids = self.unreadable().into_iter().map(|(_, id, _)| id);
        let id = one_by_prefix(ids, prefix, "unreadable entry", "phr damaged")?;
        let held = self
            .held
            .as_mut()
            .ok_or_else(|| HomeError::NoRecord(self.dir.clone()))?;
        held.replica.remove_unreadable(&self.vault, &id, for_good)?;
        Ok(id)
    }
}

/// The one id among `ids` that starts with `prefix` (a full id or the short one shown), or an
/// error that names the `kind` of entry and the command that lists them.
fn one_by_prefix(
    ids: impl Iterator<Item = BlobId>,
    prefix: &str,
    kind: &str,
    lists: &str,
) -> Result<BlobId> {
    let prefix = prefix.trim().to_ascii_lowercase();
    let found: Vec<BlobId> = ids
        .filter(|id| !prefix.is_empty() && id.to_string().starts_with(&prefix))
        .collect();
    match found[..] {
        [id] => Ok(id),
        [] => Err(HomeError::NothingToDo(format!(
            "no {kind} {prefix}; `{lists}` lists them with their ids"
        ))),
        _ => Err(HomeError::NothingToDo(format!(
            "{} entries start with {prefix}; give more of the id",
            found.len()
        ))),
    }
}
