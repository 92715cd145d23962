//! Imports as the patient sees them, and undoing one.
//!
//! Every version an import writes carries the import's id (`import`, see
//! [`crate::import::ImportReport::import`]). Undoing an import writes, for each resource whose
//! current version that import wrote, the version before it again, or, where the import added
//! the resource, a version that removes it ([`Record::remove`]); history keeps all of them.
//! A resource changed since the import (its current version written by someone else, or in
//! conflict) is left as it is, and counted.

use std::collections::{BTreeMap, BTreeSet};

use automerge::ReadDoc;
use jiff::Timestamp;

use super::{Current, Record, RecordError, Result, Stamp, Version};
use crate::{fhir::reference::ResourceKey, section::Section};

/// One import, as its versions still in the record tell it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportSummary {
    /// Its id.
    pub id: String,
    /// When it was made.
    pub time: Timestamp,
    /// Who made it.
    pub author: String,
    /// Resources whose current version it wrote.
    pub current: usize,
}

/// What undoing an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Undone {
    /// Resources given back the version they had before the import.
    pub restored: usize,
    /// Resources the import had added, now removed.
    pub removed: usize,
    /// Resources the import wrote that were changed since: left as they are.
    pub left: Vec<ResourceKey>,
}

impl Record {
    /// Every key of every section, once.
    fn all_keys(&self) -> Vec<ResourceKey> {
        let mut keys = std::collections::BTreeSet::new();
        for section in Section::ALL {
            for key in self.doc(section).keys(automerge::ROOT) {
                if let Ok(key) = key.parse::<ResourceKey>() {
                    keys.insert(key);
                }
            }
        }
        keys.into_iter().collect()
    }

    /// The imports whose versions are current somewhere in the record, newest first.
    pub fn imports(&self) -> Result<Vec<ImportSummary>> {
        let mut by_id = BTreeMap::<String, ImportSummary>::new();
        for key in self.all_keys() {
            let Some(Current::One(version)) = self.current(&key)? else {
                continue;
            };
            let Some(id) = &version.import else {
                continue;
            };
            let entry = by_id.entry(id.clone()).or_insert_with(|| ImportSummary {
                id: id.clone(),
                time: version.time,
                author: version.author.name.clone(),
                current: 0,
            });
            entry.current += 1;
        }
        let mut out: Vec<ImportSummary> = by_id.into_values().collect();
        out.sort_by(|a, b| b.time.cmp(&a.time).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// What taking import `id` back would touch: the sections its versions and the versions
    /// they superseded lie in, and who wrote it (each version's author id). Empty if no
    /// version names the import.
    pub fn import_scope(&self, id: &str) -> Result<(BTreeSet<Section>, BTreeSet<String>)> {
        let mut sections = BTreeSet::new();
        let mut authors = BTreeSet::new();
        for key in self.all_keys() {
            let history = match self.history(&key) {
                Ok(history) => history,
                Err(RecordError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            for version in history.iter().filter(|v| v.import.as_deref() == Some(id)) {
                sections.insert(version.section);
                authors.insert(version.author.id.clone());
                if let Some(before) = self.before(&key, version)? {
                    sections.insert(before.section);
                }
            }
        }
        Ok((sections, authors))
    }

    /// Takes import `id` back (see the module documentation). The writes join the open change;
    /// the caller commits. Refused, with nothing written, if no version of the record names
    /// the import.
    pub fn undo_import(&mut self, stamp: Stamp<'_>, id: &str) -> Result<Undone> {
        let mut undone = Undone::default();
        let mut found = false;
        let why = format!("undo of import {id}");
        for key in self.all_keys() {
            let history = match self.history(&key) {
                Ok(history) => history,
                Err(RecordError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let Some(written) = history
                .iter()
                .rev()
                .find(|v| v.import.as_deref() == Some(id))
            else {
                continue;
            };
            found = true;
            let current = self.all_current(&key)?;
            let [now] = current.as_slice() else {
                undone.left.push(key);
                continue;
            };
            if now.undoes.as_deref() == Some(id) {
                // Undone already.
                continue;
            }
            if now.id != written.id || now.section != written.section {
                undone.left.push(key);
                continue;
            }
            let marks = [("undoes", id)];
            match self.before(&key, written)? {
                Some(before) if before.removed.is_none() => {
                    self.put_marked(stamp, &before.resource, &marks)?;
                    undone.restored += 1;
                }
                _ => {
                    self.remove(stamp, &key, &why, &marks)?;
                    undone.removed += 1;
                }
            }
        }
        if !found {
            return Err(RecordError::UnknownImport(id.to_string()));
        }
        Ok(undone)
    }

    /// The version `version` superseded (its first), if this record holds it.
    fn before(&self, key: &ResourceKey, version: &Version) -> Result<Option<Version>> {
        match version.replaces.first() {
            Some(reference) => self.version_by_reference(&key.to_string(), reference),
            None => Ok(None),
        }
    }
}
