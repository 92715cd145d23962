//! Moves records between two homes without a network: the real sync sessions
//! (`phr_core::sync`), run in process between the two vaults, as two nodes would run them.

use std::{collections::BTreeSet, path::Path};

use phr_core::{home::Home, keys::RecordId};

/// Syncs every record either home holds, `from` starting each session. The homes must not be
/// in use (no `phr` command running on them).
pub fn sync_homes(from: &Path, to: &Path) {
    let from = open_when_free(from);
    let to = open_when_free(to);
    let mut records: BTreeSet<RecordId> = BTreeSet::new();
    records.extend(from.sync_parts().0.records().unwrap());
    records.extend(to.sync_parts().0.records().unwrap());
    let now_ms = jiff::Timestamp::now().as_millisecond();
    for record in records {
        from.sync_in_process(&to, record, now_ms).unwrap();
    }
}

/// Opens a home, waiting (up to 5 s) while its lock is held. A `phr` command this test ran has
/// exited, but another test thread that spawned a process at that moment may hold a copy of the
/// lock's descriptor until that process starts its program (descriptors are closed on exec,
/// not on fork), so the lock can outlive the command by a moment.
fn open_when_free(dir: &Path) -> Home {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Home::open(dir) {
            Err(phr_core::home::HomeError::Busy(_)) if std::time::Instant::now() < deadline => {
                std::thread::yield_now();
            }
            opened => return opened.unwrap(),
        }
    }
}
