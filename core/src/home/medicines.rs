//! The medicines table a user imported: `HOME/medicines.csv` ([`MEDICINES_TABLE_FILE`]), 0600,
//! written atomically, read by the medicines check beside the table phr ships.
//!
//! The file holds the rows as the check read them, in the CSV form of docs/FORMAT.md, whatever
//! form (CSV or JSON) they were imported in. It is checked again each time it is read: a file
//! changed by hand into something the check cannot read is an error, never half used.

use std::{fs, io};

use super::{Home, HomeError, Result, io_err};
use crate::{
    medicines::{Origin, Table, TableError},
    owner_only,
};

/// The imported medicines table, in the home directory.
pub const MEDICINES_TABLE_FILE: &str = "medicines.csv";

impl Home {
    /// The table the user imported, if any.
    pub fn imported_medicines_table(&self) -> Result<Option<Table>> {
        let path = self.dir.join(MEDICINES_TABLE_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        Table::parse(&bytes, Origin::Imported)
            .map(Some)
            .map_err(|problem| HomeError::MedicinesTable { path, problem })
    }

    /// Checks `bytes` as a medicines table (CSV or JSON) and keeps it, replacing the one
    /// imported before. Nothing is written if a row is refused.
    pub fn import_medicines_table(&self, bytes: &[u8]) -> Result<Table, ImportTableError> {
        let table = Table::parse(bytes, Origin::Imported)?;
        let path = self.dir.join(MEDICINES_TABLE_FILE);
        owner_only::write_atomically(&path, table.to_csv().as_bytes())
            .map_err(|e| ImportTableError::Home(io_err(&path)(e)))?;
        Ok(table)
    }

    /// Forgets the imported table; whether there was one.
    pub fn remove_medicines_table(&self) -> Result<bool> {
        let path = self.dir.join(MEDICINES_TABLE_FILE);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path)(e)),
        }
    }
}

/// Why a table could not be imported: the table was refused, or it could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ImportTableError {
    /// A row, or the whole table, was refused; nothing was written.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The table could not be written.
    #[error(transparent)]
    Home(HomeError),
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::{
        home::NewPatient,
        medicines::{RowProblem, TableError},
    };

    fn home(dir: &std::path::Path) -> Home {
        let patient = NewPatient {
            name: "Ada Lovelace".into(),
            nhs_number: None,
            birth_date: None,
            device_label: None,
        };
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        Home::init_patient(dir, &patient, None, now).unwrap().0
    }

    const GOOD: &str = "a,b,kind,severity,why,source,link\n\
        digoxin,amiodarone,drug-drug,high,Raises digoxin levels.,A book 2020,https://example.org\n";
    const SOURCELESS: &str = "a,b,kind,severity,why,source,link\n\
        digoxin,amiodarone,drug-drug,high,Raises digoxin levels.,,https://example.org\n";

    #[test]
    fn an_imported_table_is_kept_0600_and_a_refused_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let home = home(dir.path());
        assert_eq!(home.imported_medicines_table().unwrap(), None);
        let table = home.import_medicines_table(GOOD.as_bytes()).unwrap();
        let path = dir.path().join(MEDICINES_TABLE_FILE);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(home.imported_medicines_table().unwrap(), Some(table));

        let refused = home
            .import_medicines_table(SOURCELESS.as_bytes())
            .unwrap_err();
        assert!(matches!(
            refused,
            ImportTableError::Table(TableError::Row {
                number: 2,
                problem: RowProblem::NoSource,
                ..
            })
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), GOOD);

        assert!(home.remove_medicines_table().unwrap());
        assert!(!home.remove_medicines_table().unwrap());
        assert_eq!(home.imported_medicines_table().unwrap(), None);
    }

    #[test]
    fn a_kept_table_changed_by_hand_into_nonsense_is_an_error_not_half_used() {
        let dir = tempfile::tempdir().unwrap();
        let home = home(dir.path());
        fs::write(dir.path().join(MEDICINES_TABLE_FILE), SOURCELESS).unwrap();
        let error = home.imported_medicines_table().unwrap_err();
        assert!(matches!(error, HomeError::MedicinesTable { .. }), "{error}");
        assert!(error.to_string().contains("line 2: no source"), "{error}");
    }
}
