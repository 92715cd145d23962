//! Moves records between two homes without a network: the real sync sessions
//! (`phr_core::sync`), run in process between the two vaults, as two nodes would run them.

use std::{collections::BTreeSet, path::Path};

use phr_core::{home::Home, keys::RecordId};

/// Syncs every record either home holds, `from` starting each session. The homes must not be
/// in use (no `phr` command running on them).
pub fn sync_homes(from: &Path, to: &Path) {
    let from = Home::open(from).unwrap();
    let to = Home::open(to).unwrap();
    let mut records: BTreeSet<RecordId> = BTreeSet::new();
    records.extend(from.sync_parts().0.records().unwrap());
    records.extend(to.sync_parts().0.records().unwrap());
    let now_ms = jiff::Timestamp::now().as_millisecond();
    for record in records {
        from.sync_in_process(&to, record, now_ms).unwrap();
    }
}
