//! Moves records between two homes without a network: the real sync sessions
//! (`phr_core::sync`), run in process between the two vaults, as two nodes would run them.

use std::{collections::BTreeSet, path::Path};

use phr_core::{
    home::Home,
    keys::RecordId,
    replica::Replica,
    sync::{Incoming, InitiatorSession, Local, ResponderSession},
};

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
        session(&from, &to, record, now_ms);
    }
}

fn session(from: &Home, to: &Home, record: RecordId, now_ms: i64) {
    let ((from_vault, from_age), (to_vault, to_age)) = (from.sync_parts(), to.sync_parts());
    let mut ours = Replica::open(from_vault, record, from.peer_id(), from_age).unwrap();
    let mut theirs = Replica::open(to_vault, record, to.peer_id(), to_age).unwrap();
    let mut initiator_side = Local {
        replica: &mut ours,
        store: from_vault,
        age: from_age,
    };
    let mut responder_side = Local {
        replica: &mut theirs,
        store: to_vault,
        age: to_age,
    };
    let (mut initiator, request) =
        InitiatorSession::start(&initiator_side, to.peer_id(), 1, now_ms).unwrap();
    let (mut responder, mut answer) = ResponderSession::open(
        &mut responder_side,
        from.peer_id(),
        Incoming::decode(&request).unwrap(),
        now_ms,
    )
    .unwrap();
    while let Some(bytes) = answer {
        let request = initiator
            .receive(
                &mut initiator_side,
                Incoming::decode(&bytes).unwrap(),
                now_ms,
            )
            .unwrap()
            .expect("a fresh answer is acted on");
        answer = responder
            .receive(
                &mut responder_side,
                Incoming::decode(&request).unwrap(),
                now_ms,
            )
            .unwrap();
    }
    assert!(initiator.is_done(), "the session ran to its end");
}
