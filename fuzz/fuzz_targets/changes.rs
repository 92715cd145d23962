//! The Automerge changes inside an opened blob: the checks a reader runs before Automerge sees
//! them (`check_authorship` for a `Changes` blob, `check_audit_entry` for an audit entry sealed
//! to the owners: chunk types, the bounded inflation of compressed changes, the actor table,
//! authorship), then `Record::load_parts` on what passed, as the reader loads it, and the views'
//! read of the section. Compactions (document chunks, written by owner devices only) are not
//! loaded here: they are refused by both checks.
//!
//! phr catches the panics Automerge raises on some changes (`changes::catch_automerge_panic`)
//! and refuses those changes; libfuzzer-sys's panic hook would abort on them before phr could,
//! so this target puts the default hook back. A panic phr does not catch still aborts the run:
//! libfuzzer-sys aborts on any panic that leaves the target.
#![no_main]

use std::{collections::BTreeMap, sync::Once};

use libfuzzer_sys::fuzz_target;
use phr_core::fuzzing::{actor, signer};
use phr_core::{Record, RecordMeta, Section, changes};

static DEFAULT_PANIC_HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    DEFAULT_PANIC_HOOK.call_once(|| {
        // The default hook prints; it does not abort.
        let _ = std::panic::take_hook();
        std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    });
    let signer = signer().peer_id();
    let section = if changes::check_audit_entry(&signer, data).is_ok() {
        Section::Audit
    } else if changes::check_authorship(&signer, data).is_ok() {
        Section::Summary
    } else {
        return;
    };
    let meta = RecordMeta {
        id: "fuzz".into(),
        subject: None,
        nhs_number: None,
    };
    let parts = BTreeMap::from([(section, vec![data.to_vec()])]);
    let (record, _bad) = Record::load_parts(meta, &parts, &actor());
    let _ = record.resources(section);
});
