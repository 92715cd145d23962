//! The Automerge changes inside an opened blob: the authorship and size checks a reader runs
//! (`check_authorship` for a changes blob, `check_audit_entry` for an audit entry sealed to the
//! owners), then `Record::load_parts`, which loads what passed, and what a compaction holds.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use phr_core::fuzzing::{actor, signer};
use phr_core::{Record, RecordMeta, Section, changes};

fuzz_target!(|data: &[u8]| {
    let signer = signer().peer_id();
    let _ = changes::check_audit_entry(&signer, data);
    let authored = changes::check_authorship(&signer, data).is_ok();
    // A changes blob loads only once it passed; a compaction's plaintext (an owner's) loads as it is.
    let section = if authored {
        Section::Summary
    } else {
        Section::Clinical
    };
    let meta = RecordMeta {
        id: "fuzz".into(),
        subject: None,
        nhs_number: None,
    };
    let parts = BTreeMap::from([(section, vec![data.to_vec()])]);
    let (record, _bad) = Record::load_parts(meta, &parts, &actor());
    // What the views read of a loaded section.
    let _ = record.resources(section);
});
