//! The encrypted vault, each figure beside a baseline measured in the same run:
//!
//! - seal + open throughput of sealed blobs beside ring's raw ChaCha20-Poly1305 seal + open of
//!   the same bytes (target ratio >= 0.5);
//! - cold open of the largest fixture's record from the vault (keystore, redb, ledger, decrypt,
//!   Automerge load) beside Automerge loading the same sections from memory (target <= 200 ms);
//! - bytes at rest beside Automerge `save()` of the same sections (target <= 1.3x);
//! - bytes at rest per fixture, as `phr import` leaves them, on the patient's device and on a GP
//!   after one sync, beside Automerge `save()` of the same sections (target <= 1.5x).
//!
//! Run with `cargo bench -p phr-tests --bench vault` (release build). Figures are medians.

use std::{collections::BTreeMap, time::Duration};

use automerge::ActorId;
use phr_core::{
    Record, Section,
    blob::{Blob, BlobHeader, BlobKind},
    home::Home,
    keys::{OpId, RecordId, SectionKey, SigningKey, random_array},
};
use phr_tests::{
    bench::{ms, time},
    fixture_files, import_file, largest_fixture, patient_home, patient_home_for, test_time,
};
use ring::aead;

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// ring's ChaCha20-Poly1305, sealed and opened in place: the floor under any sealed format.
fn raw_aead(key: &[u8; 32], plaintext: &[u8]) -> usize {
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::CHACHA20_POLY1305, key).unwrap());
    let nonce = random_array::<12>();
    let mut buffer = plaintext.to_vec();
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::empty(),
        &mut buffer,
    )
    .unwrap();
    let opened = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::empty(),
            &mut buffer,
        )
        .unwrap();
    opened.len()
}

fn header(key: &SectionKey, author: &SigningKey) -> BlobHeader {
    BlobHeader {
        record: RecordId([1; 16]),
        section: Section::Clinical,
        kind: BlobKind::Changes,
        epoch: 0,
        key_id: key.id(),
        author: author.peer_id(),
        time_ms: 0,
        ledger_heads: vec![OpId([2; 32])],
        replaces: Vec::new(),
        proofs: Vec::new(),
    }
}

/// Seal, then open what was sealed: what a writer and a reader of one blob do.
fn seal_open(key: &SectionKey, author: &SigningKey, plaintext: &[u8]) -> usize {
    let blob = Blob::seal(header(key, author), key, plaintext, author).unwrap();
    blob.open(key).unwrap().len()
}

/// The same, with the ingest check of a blob that arrives as bytes (a second SHA-256 pass and
/// the signature verification) between them.
fn seal_decode_open(key: &SectionKey, author: &SigningKey, plaintext: &[u8]) -> usize {
    let blob = Blob::seal(header(key, author), key, plaintext, author).unwrap();
    let blob = Blob::decode(blob.into_bytes()).unwrap();
    blob.open(key).unwrap().len()
}

fn main() {
    let path = largest_fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let sections: BTreeMap<Section, Vec<u8>> = {
        let (mut home, mut record) = patient_home(dir.path());
        import_file(&mut home, &mut record, &path).expect("import");
        home.compact(&mut record, test_time()).expect("compact");
        record.save_compacted().into_iter().collect()
    };

    // 1. Throughput, on the real payload (the largest section's Automerge document) and on
    //    1 MiB of it repeated or cut.
    let clinical = &sections[&Section::Clinical];
    let key = SectionKey::generate();
    let author = SigningKey::generate();
    println!("## Seal + open throughput (median of 30)\n");
    println!(
        "| payload | ring ChaCha20-Poly1305 seal+open | phr seal+open | phr / ring | target | phr seal+decode+open (with the ingest check) | / ring |"
    );
    println!("|---|---|---|---|---|---|---|");
    let one_mib: Vec<u8> = clinical.iter().copied().cycle().take(1 << 20).collect();
    for (name, payload) in [
        (
            format!("clinical section document, {} bytes", clinical.len()),
            clinical.as_slice(),
        ),
        ("1 MiB".to_string(), one_mib.as_slice()),
        ("4 KiB (one small edit)".to_string(), &one_mib[..4096]),
    ] {
        // Warm up allocator and caches before timing.
        time(5, || seal_decode_open(&key, &author, payload));
        let raw = time(30, || raw_aead(key.bytes(), payload));
        let phr = time(30, || seal_open(&key, &author, payload));
        let checked = time(30, || seal_decode_open(&key, &author, payload));
        let ratio = raw.as_secs_f64() / phr.as_secs_f64();
        println!(
            "| {name} | {:.0} MB/s | {:.0} MB/s | {ratio:.2} | >= 0.5 ({}) | {:.0} MB/s | {:.2} |",
            mb_per_s(payload.len(), raw),
            mb_per_s(payload.len(), phr),
            if ratio >= 0.5 { "met" } else { "missed" },
            mb_per_s(payload.len(), checked),
            raw.as_secs_f64() / checked.as_secs_f64(),
        );
    }

    // 2. Cold open: everything a CLI command does before it can show the record.
    let cold = time(10, || {
        let mut home = Home::open(dir.path()).expect("open");
        let record = home.load_record().expect("load");
        record.len(Section::Clinical)
    });
    let baseline = time(10, || {
        let record = Record::load(
            phr_core::RecordMeta {
                id: "x".into(),
                subject: None,
                nhs_number: None,
            },
            &sections,
            &ActorId::random(),
        )
        .expect("load");
        record.len(Section::Clinical)
    });
    println!("\n## Cold open of the largest fixture's record (median of 10)\n");
    println!(
        "| operation | phr | baseline: Automerge load of the same sections from memory | target |"
    );
    println!("|---|---|---|---|");
    println!(
        "| open home + load record | {} | {} | <= 200 ms ({}) |",
        ms(cold),
        ms(baseline),
        if cold <= Duration::from_millis(200) {
            "met"
        } else {
            "missed"
        }
    );

    // 3. Bytes at rest.
    let automerge: usize = sections.values().map(Vec::len).sum();
    let home = Home::open(dir.path()).expect("open");
    let id = home.record_id().expect("a record");
    let blobs: usize = Section::ALL
        .into_iter()
        .map(|s| {
            home.vault_for_test()
                .blobs(&id, s)
                .expect("blobs")
                .iter()
                .map(|(_, b)| b.len())
                .sum::<usize>()
        })
        .sum();
    let file = std::fs::metadata(dir.path().join(phr_core::vault::VAULT_FILE))
        .expect("vault file")
        .len() as usize;
    println!("\n## Bytes at rest, after import and compaction\n");
    println!("| stored | bytes | / Automerge save() ({automerge} bytes) | target |");
    println!("|---|---|---|---|");
    let ratio = blobs as f64 / automerge as f64;
    println!(
        "| sealed blobs | {blobs} | {ratio:.3}x | <= 1.3x ({}) |",
        if ratio <= 1.3 { "met" } else { "missed" }
    );
    println!(
        "| vault.redb file (blobs, ledger, indexes, free pages) | {file} | {:.3}x | - |",
        file as f64 / automerge as f64
    );
    at_rest_per_fixture();
}

/// The bytes of a home's sealed blobs of `sections`.
fn stored_bytes(home: &Home, id: &RecordId, sections: &[Section]) -> usize {
    sections
        .iter()
        .map(|s| {
            home.vault_for_test()
                .blobs(id, *s)
                .expect("blobs")
                .iter()
                .map(|(_, b)| b.len())
                .sum::<usize>()
        })
        .sum()
}

/// 4. Bytes at rest per fixture, as `phr import` leaves them (no `phr compact`): on the
///    patient's device, and on a GP granted every section it may read (all but `audit`) after
///    one sync; each beside Automerge `save()` of the same sections' documents.
fn at_rest_per_fixture() {
    println!("\n## Bytes at rest per fixture, after `phr import` and one sync to a GP\n");
    println!(
        "| fixture | Automerge save() | patient's device | / save() | GP (all but audit) | / save() of the same | target |"
    );
    println!("|---|---|---|---|---|---|---|");
    let readable: Vec<Section> = Section::ALL
        .into_iter()
        .filter(|s| *s != Section::Audit)
        .collect();
    for path in fixture_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut home, mut record) = patient_home_for(&dir.path().join("patient"), &path);
        import_file(&mut home, &mut record, &path).expect("import");
        let id = home.record_id().expect("a record");
        let gp = Home::init_provider(&dir.path().join("gp"), "Dr Grey", None, None).expect("gp");
        home.grant(
            &gp.party(),
            &readable,
            phr_core::ledger::Access::Read,
            None,
            None,
            test_time(),
        )
        .expect("grant");
        home.sync_in_process(&gp, id, test_time().as_millisecond())
            .expect("sync");
        let mut save = |sections: &[Section]| -> usize {
            sections.iter().map(|s| record.save_section(*s).len()).sum()
        };
        let all = save(&Section::ALL);
        let shared = save(&readable);
        let patient = stored_bytes(&home, &id, &Section::ALL);
        let at_gp = stored_bytes(&gp, &id, &readable);
        let (p, g) = (patient as f64 / all as f64, at_gp as f64 / shared as f64);
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().chars().take(32).collect::<String>())
            .unwrap_or_default();
        println!(
            "| {name} | {all} | {patient} | {p:.2}x | {at_gp} | {g:.2}x | <= 1.5x ({}) |",
            if p <= 1.5 && g <= 1.5 {
                "met"
            } else {
                "missed"
            }
        );
    }
}
