//! What changes would add to a record, shown without applying them: how the patient sees an
//! entry held for review before accepting or discarding it.

use automerge::{ROOT, ReadDoc};

use super::{Record, Result, Version, am, read_version};
use crate::section::Section;

impl Record {
    /// The versions that applying `changes` (Automerge changes of `section`) would add, by key,
    /// without changing the record. Changes that need others this record lacks add nothing.
    pub fn preview(&self, section: Section, changes: &[u8]) -> Result<Vec<(String, Version)>> {
        let before = self.doc(section);
        let mut after = before.clone();
        crate::changes::catch_automerge_panic(|| after.load_incremental(changes))
            .map_err(|message| super::RecordError::AutomergePanicked { section, message })?
            .map_err(am(section))?;
        let mut added = Vec::new();
        for key in after.keys(ROOT) {
            let old: Vec<_> = before
                .get_all(ROOT, key.as_str())
                .map_err(am(section))?
                .into_iter()
                .map(|(_, obj)| obj)
                .collect();
            for (_, obj) in after.get_all(ROOT, key.as_str()).map_err(am(section))? {
                if !old.contains(&obj) {
                    added.push((key.clone(), read_version(&after, section, &key, &obj, &[])?));
                }
            }
        }
        Ok(added)
    }
}
