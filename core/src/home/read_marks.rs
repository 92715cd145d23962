//! Which messages this node has shown its user: kept by each node for itself, as a sealed local
//! setting per record, never in the record (see [`crate::messages`]).

use std::collections::BTreeSet;

use super::{Home, Result};
use crate::{keys::RecordId, vault::Batch};

/// The most read marks kept per record; past it the oldest go, and those messages show as
/// unread again (harmless, and reached only after a hundred thousand messages).
pub const READ_MARKS_MAX: usize = 100_000;

fn setting(record: RecordId) -> String {
    format!("messages-read/{record}")
}

impl Home {
    /// The ids of the messages of `record` this node has shown.
    pub fn messages_read(&self, record: RecordId) -> Result<BTreeSet<String>> {
        let marks: Vec<String> = self.vault.local(&setting(record))?.unwrap_or_default();
        Ok(marks.into_iter().collect())
    }

    /// Remembers that the messages `ids` of `record` were shown, oldest marks going first past
    /// [`READ_MARKS_MAX`].
    pub fn mark_messages_read(
        &mut self,
        record: RecordId,
        ids: impl IntoIterator<Item = String>,
    ) -> Result<()> {
        let mut marks: Vec<String> = self.vault.local(&setting(record))?.unwrap_or_default();
        let known: BTreeSet<String> = marks.iter().cloned().collect();
        let before = marks.len();
        let mut added = BTreeSet::new();
        for id in ids {
            if !known.contains(&id) && added.insert(id.clone()) {
                marks.push(id);
            }
        }
        if marks.len() == before {
            return Ok(());
        }
        let excess = marks.len().saturating_sub(READ_MARKS_MAX);
        marks.drain(..excess);
        let mut batch = Batch::new();
        batch.local(&setting(record), &marks);
        self.vault.commit(batch)?;
        Ok(())
    }
}
