//! The medicines check: a record's current medicines against each other and against its
//! allergies, each finding with the row of a cited table that says why.
//!
//! ```text
//! record ──► current medicines, current allergies      (the summary's notion of current)
//!               │  vocabulary: codes and words ──► ingredients ──► classes
//!               ▼
//!          every allergy × medicine, every medicine × medicine
//!               │  table rows: (a, b, kind, severity, why, source)
//!               ▼
//!          findings, most severe first, each carrying its row
//! ```
//!
//! - `vocabulary`: the ingredients and classes phr knows, with the words and codes (RxNorm,
//!   SNOMED CT) that name them. Small and written out in full, so it can be read and reviewed.
//! - `table`: the interaction rows. phr ships a small table of facts from public, citable sources
//!   (`table.csv`, embedded in the binary); a user may import a larger one in the same format
//!   ([`Table::parse`]). A row without a source is refused, so no finding is ever without one.
//! - `check`: which medicines and allergies are current, and the findings.
//!
//! The check informs and never blocks: adding a medicine or an allergy is never refused because
//! of a finding, and every finding ends in "ask your pharmacist or GP". It knows only what its
//! tables say: no finding does not mean no interaction, which is why it lists the medicines it
//! could not recognise.
//!
//! The module does no I/O: the imported table is read and kept by [`crate::home::Home`].
//!
//! ```
//! use phr_core::medicines::{Origin, Table, findings, Item};
//!
//! let item = |shown: &str, ingredient: &str, class: &str| Item {
//!     shown: shown.into(),
//!     references: vec![format!("MedicationStatement/{ingredient}")],
//!     by: None,
//!     ingredients: vec![ingredient.into()],
//!     classes: vec![class.into()],
//! };
//! let naproxen = item("Naproxen 250mg tablets", "naproxen", "nsaids");
//! let ibuprofen_allergy = Item {
//!     references: vec!["AllergyIntolerance/1".into()],
//!     ..item("ibuprofen", "ibuprofen", "nsaids")
//! };
//! let rows: Vec<_> = Table::shipped().rows().iter().collect();
//! let found = findings(&[naproxen], &[ibuprofen_allergy], &rows);
//! assert_eq!(found.len(), 1);
//! assert_eq!(found[0].severity().as_str(), "high");
//! assert!(found[0].source().link().starts_with("doi:"));
//! ```

mod check;
mod csv;
mod table;
#[cfg(test)]
mod tests;
pub mod vocabulary;

pub use check::{CHECKED_SECTIONS, Check, Finding, Item, check, findings};
pub use table::{
    COLUMNS, Kind, MEDICINES_FIELD_BYTES_MAX, MEDICINES_TABLE_BYTES_MAX, MEDICINES_TABLE_ROWS_MAX,
    Origin, Row, RowProblem, Severity, Source, Table, TableError, Term,
};

/// What every finding ends with, in the CLI's words too: the check informs, people decide.
pub const ASK: &str = "Ask your pharmacist or GP before changing anything.";
