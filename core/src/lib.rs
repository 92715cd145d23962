//! phr-core: a patient's health record as FHIR R4 resources in Automerge documents.
//!
//! Architecture invariant: this crate knows nothing of networking, tokio or the terminal. The
//! only I/O it does is the record's own storage, behind [`home::Home`], and the owner-only file
//! helpers ([`owner_only`]) through which the node and the CLI write everything else.
//!
//! - [`record`]: sections, versions, conflicts, history.
//! - [`section`]: which section each resource belongs in.
//! - [`fhir`]: the typed view of the FHIR fields phr reads, references, display helpers.
//! - [`import`] and [`export`]: FHIR Bundles in and out, International Patient Summary.
//! - [`view`]: the record in plain language.
//! - [`entry`]: the resources a patient adds by hand (symptoms, readings, ...).
//! - [`messages`]: messages between the patient and providers (`Communication` in `requests`).
//! - [`repeats`]: repeat prescriptions: the repeat, the patient's order, the issue, the dispense.
//! - [`appointments`]: a practice's free slots (queried live) and the `Appointment`s patients ask for.
//! - [`emergency`]: the emergency summary and the offline card that carries it.
//! - [`medicines`]: the medicines check: current medicines against each other and against
//!   allergies, from a cited table.
//! - [`audit`]: audit entries (`AuditEvent`s a grantee seals to the owners) and the patient's
//!   audit view.
//! - [`home`]: where a node keeps its keys, its vault and the record; the persistence boundary.
//! - [`nhs`]: NHS number validation.
//! - [`owner_only`]: directories (0700) and files (0600) only their owner may use.
//! - [`keys`], [`keystore`], [`card`], [`party`]: identities, the keystore, contact cards.
//! - [`ledger`]: the consent ledger (signed, hash-linked operations; state as a function of the set).
//! - [`consent`]: keeping section keys in step with the ledger; the ingest check for blobs.
//! - [`blob`], [`envelope`]: sealed blobs (what replicates) and section keys wrapped to readers.
//! - [`vault`]: the redb database of blobs, ledger operations and sealed settings.
//! - [`store`]: the storage trait replicas write through (the vault, or memory in the simulator).
//! - [`replica`]: one record as one node holds it: ledger, keys, blob ids, the ingest gate.
//! - [`sync`]: the sans-IO sync protocol between two nodes (sessions, set reconciliation).

pub mod api;
pub mod appointments;
pub mod audit;
pub mod blob;
pub mod card;
pub mod changes;
pub mod consent;
pub mod emergency;
pub mod entry;
pub mod envelope;
pub mod export;
pub mod fhir;
#[doc(hidden)]
pub mod fuzzing;
pub mod home;
pub mod identity;
pub mod import;
pub mod keys;
pub mod keystore;
pub mod ledger;
pub mod medicines;
pub mod messages;
pub mod nhs;
pub mod owner_only;
pub mod party;
pub mod record;
pub mod repeats;
pub mod replica;
pub mod screen;
pub mod section;
pub mod store;
pub mod sync;
pub mod vault;
pub mod view;

/// Secrets that never print (re-exported from age, so callers share the type).
pub use age::secrecy;
pub use record::{Author, Record, RecordMeta, Stamp};
pub use section::Section;

/// A new random resource id (a UUID v4), for entries created here.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Records for unit tests.
#[cfg(test)]
pub(crate) mod test_records {
    use serde_json::Value;

    use crate::{Author, Record, RecordMeta, Stamp};

    /// A record about `Patient/p1` holding `resources`, written by one test device.
    pub(crate) fn record_with(resources: &[Value]) -> Record {
        let author = Author {
            id: "device-test".into(),
            name: "Test".into(),
        };
        let stamp = Stamp {
            author: &author,
            time: jiff::Timestamp::from_second(1_700_000_000).expect("in range"),
        };
        let meta = RecordMeta {
            id: "r1".into(),
            subject: Some("Patient/p1".into()),
            nhs_number: None,
        };
        let mut record = Record::create(meta, &automerge::ActorId::random());
        for resource in resources {
            record.put(stamp, resource).expect("a test resource");
        }
        record.commit(stamp, "test");
        record
    }
}
