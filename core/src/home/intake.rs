//! A provider's new patients: a record newly shared with a provider's node waits until a person
//! there accepts it.
//!
//! Anyone can make a record whose ledger grants a provider, so what the node takes in on its
//! own is bounded: at most [`PENDING_RECORDS_MAX`] records wait at once, each storing at most
//! [`PENDING_RECORD_BYTES_MAX`] (enough for the `Patient` a person needs to decide). A waiting
//! record is not listed by `phr patients` and cannot be opened with `--patient`; `phr patients
//! --pending` shows it with who the patient says they are and who shared it. Accepting it lifts
//! it to the node's quota for every record it holds ([`RECORD_BYTES_MAX`]); declining it deletes
//! what the node stored and keeps it out for good (unless accepted after all).
//!
//! The decisions live in the vault's `decisions` table, one row per record, so checking one
//! record is one lookup however long the list. A provider home made before this rule accepts
//! every record it held when it was first opened under it; one whose decisions were kept in the
//! sealed local setting `patients` (before the table) has them moved to the table once.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Home, ProviderError, Result};
use crate::{
    keys::RecordId,
    party::Role,
    replica::{Intake, RECORD_BYTES_MAX},
    vault::{Batch, Decision, Vault, VaultError},
};

pub use crate::replica::{PENDING_RECORD_BYTES_MAX, PENDING_RECORDS_MAX};

/// The local setting that keeps a provider's decisions.
const PATIENT_LIST: &str = "patients";

/// What a person at a provider decided about the records shared with it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct PatientList {
    /// Taken on: listed by `phr patients`, readable within the grant.
    accepted: BTreeSet<RecordId>,
    /// Refused: deleted, and not taken in again.
    declined: BTreeSet<RecordId>,
}

impl PatientList {
    fn read(vault: &Vault) -> Result<PatientList, VaultError> {
        let mut list = PatientList::default();
        for (id, decision) in vault.decisions()? {
            match decision {
                Decision::Accepted => list.accepted.insert(id),
                Decision::Declined => list.declined.insert(id),
            };
        }
        Ok(list)
    }
}

/// Makes a provider home made before acceptance existed accept every record it holds, and
/// moves decisions kept in the `patients` setting into the `decisions` table, once: the
/// setting stays, emptied, to say it was done.
pub(super) fn migrate(vault: &Vault, role: Role) -> Result<()> {
    if role != Role::Provider {
        return Ok(());
    }
    let (accepted, declined): (Vec<RecordId>, Vec<RecordId>) =
        match vault.local::<PatientList>(PATIENT_LIST)? {
            None => (vault.records()?, Vec::new()),
            Some(list) if list.accepted.is_empty() && list.declined.is_empty() => {
                return Ok(());
            }
            Some(list) => (
                list.accepted.into_iter().collect(),
                list.declined.into_iter().collect(),
            ),
        };
    let mut batch = Batch::new();
    for id in accepted {
        batch.decide(id, Decision::Accepted);
    }
    for id in declined {
        batch.decide(id, Decision::Declined);
    }
    batch.local(PATIENT_LIST, &PatientList::default());
    vault.commit(batch)?;
    Ok(())
}

impl Home {
    /// How this node takes in records it does not hold and how much of each it stores: a
    /// patient's device only the record it joined, without bound; a provider every record shared
    /// with it, each waiting for a person to accept it; a relay every record it relays.
    pub fn intake(&self) -> Result<Intake, VaultError> {
        let welcome = self.welcome();
        Ok(match self.device.role {
            Role::Patient => Intake {
                welcome,
                ..Intake::default()
            },
            Role::Relay => Intake {
                welcome,
                quota: RECORD_BYTES_MAX,
                ..Intake::default()
            },
            Role::Provider => {
                let list = PatientList::read(&self.vault)?;
                Intake {
                    welcome,
                    acceptance: true,
                    accepted: list.accepted,
                    declined: list.declined,
                    quota: RECORD_BYTES_MAX,
                }
            }
        })
    }

    /// The ids of the held records that wait for a person at this provider to accept them.
    pub fn pending_records(&self) -> Result<Vec<RecordId>> {
        let intake = self.intake()?;
        Ok(self
            .vault
            .records()?
            .into_iter()
            .filter(|id| intake.is_pending(id))
            .collect())
    }

    /// Whether `record`, held, waits for a person at this provider to accept it: one lookup.
    pub fn is_pending(&self, record: &RecordId) -> Result<bool> {
        Ok(self.device.role == Role::Provider
            && self.vault.decision(record)? != Some(Decision::Accepted))
    }

    /// Takes on a record that waits (by its id or an unambiguous start of it), or, by its whole
    /// id, one declined before or not held yet (a patient who gave the practice their record id
    /// at registration): `phr patients` lists it from now on and the node stores it up to its
    /// quota. Returns its id.
    pub fn accept_patient(&self, query: &str) -> Result<RecordId> {
        if self.device.role != Role::Provider {
            return Err(ProviderError::NotAProvider.into());
        }
        let id = match self.find_pending(query) {
            Ok(id) => id,
            Err(error) => match query.trim().to_ascii_lowercase().parse::<RecordId>() {
                Ok(id) if Some(id) != self.record_id() => id,
                _ => return Err(error),
            },
        };
        let mut batch = Batch::new();
        batch.decide(id, Decision::Accepted);
        self.vault.commit(batch)?;
        Ok(id)
    }

    /// Takes on every record that waits, at once (a practice registering a list of patients):
    /// one write however many there are. Returns their ids.
    pub fn accept_all_pending(&self) -> Result<Vec<RecordId>> {
        if self.device.role != Role::Provider {
            return Err(ProviderError::NotAProvider.into());
        }
        let waiting = self.pending_records()?;
        if waiting.is_empty() {
            return Ok(waiting);
        }
        let mut batch = Batch::new();
        for id in &waiting {
            batch.decide(*id, Decision::Accepted);
        }
        self.vault.commit(batch)?;
        Ok(waiting)
    }

    /// Refuses a record that waits: what this node stored of it is deleted, and it is not taken
    /// in again unless accepted after all. Returns its id.
    pub fn decline_patient(&self, query: &str) -> Result<RecordId> {
        let id = self.find_pending(query)?;
        let mut batch = Batch::new();
        batch.decide(id, Decision::Declined);
        batch.forget_record(id);
        self.vault.commit(batch)?;
        Ok(id)
    }

    /// The one waiting record whose id is or starts with `query`.
    fn find_pending(&self, query: &str) -> Result<RecordId> {
        if self.device.role != Role::Provider {
            return Err(ProviderError::NotAProvider.into());
        }
        let intake = self.intake()?;
        let id = self.find_patient(query, &|id| intake.is_pending(id))?;
        Ok(id)
    }
}
