//! A FHIR R4 JSON file to import: `import::parse`, then `import::apply` into a new record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phr_core::fuzzing::{actor, now};
use phr_core::{Author, Record, RecordMeta, Stamp, import};

fuzz_target!(|data: &[u8]| {
    let Ok((parsed, skipped)) = import::parse("fuzz.json", data) else {
        return;
    };
    let meta = RecordMeta {
        id: "fuzz".into(),
        subject: None,
        nhs_number: None,
    };
    let mut record = Record::create(meta, &actor());
    let author = Author {
        id: "fuzz".into(),
        name: "Fuzz".into(),
    };
    let stamp = Stamp {
        author: &author,
        time: now(),
    };
    let _ = import::apply(&mut record, stamp, &parsed, skipped);
});
