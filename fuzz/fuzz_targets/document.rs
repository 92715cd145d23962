//! A compaction's opened plaintext: the check a reader runs before Automerge sees it
//! (`changes::load_document`: chunk types, the document's layout, the bounded inflation of its
//! compressed columns and changes), then `Record::load_parts` on what passed, as the reader
//! loads it, and the views' read of the section.
//!
//! As in the `changes` target, the default panic hook is put back: phr catches Automerge's
//! panics (`changes::catch_automerge_panic`) and refuses the document; a panic phr does not
//! catch still aborts the run.
#![no_main]

use std::{collections::BTreeMap, sync::Once};

use libfuzzer_sys::fuzz_target;
use phr_core::fuzzing::actor;
use phr_core::{Record, RecordMeta, Section, changes};

static DEFAULT_PANIC_HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    DEFAULT_PANIC_HOOK.call_once(|| {
        let _ = std::panic::take_hook();
        std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    });
    if changes::load_document(data).is_err() {
        return;
    }
    let meta = RecordMeta {
        id: "fuzz".into(),
        subject: None,
        nhs_number: None,
    };
    let parts = BTreeMap::from([(Section::Summary, vec![data.to_vec()])]);
    let (record, _bad) = Record::load_parts(meta, &parts, &actor());
    let _ = record.resources(Section::Summary);
});
