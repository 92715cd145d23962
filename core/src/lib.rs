//! phr-core: a patient's health record as FHIR R4 resources in Automerge documents.
//!
//! Architecture invariant: this crate knows nothing of networking, tokio or the terminal. The
//! only I/O it does is the record's own storage, behind [`home::Home`].
//!
//! - [`record`]: sections, versions, conflicts, history.
//! - [`section`]: which section each resource belongs in.
//! - [`fhir`]: the typed view of the FHIR fields phr reads, references, display helpers.
//! - [`import`] and [`export`]: FHIR Bundles in and out, International Patient Summary.
//! - [`view`]: the record in plain language.
//! - [`entry`]: the resources a patient adds by hand (symptoms, readings, ...).
//! - [`home`]: where a device keeps its identity and its record.
//! - [`nhs`]: NHS number validation.

pub mod entry;
pub mod export;
pub mod fhir;
pub mod home;
pub mod import;
pub mod keys;
pub mod nhs;
pub mod party;
pub mod record;
pub mod section;
pub mod view;

pub use record::{Author, Record, RecordMeta, Stamp};
pub use section::Section;

/// A new random resource id (a UUID v4), for entries created here.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
