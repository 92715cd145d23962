//! Writes the seed corpus of the fuzz targets (`fuzz/corpus/TARGET/`, docs/FUZZING.md): real
//! blobs, ledger operations, sync messages, frames, cards, envelopes, keystores, backups, FHIR
//! files and Automerge changes, all made with phr's own API, so that the fuzzer starts from
//! inputs that pass every check and mutates them from there.
//!
//! Run from the repository root (the seeds differ between runs: keys and nonces are random):
//!
//! ```text
//! cargo run -p phr-core --example fuzz_seeds -- fuzz/corpus
//! ```
//!
//! The FHIR seeds are cut from the IPS example in `../shared/fixtures/fhir` (or
//! `$PHR_FHIR_FIXTURES`).

use std::{
    collections::BTreeMap,
    error::Error,
    fs,
    path::{Path, PathBuf},
};

use automerge::AutoCommit;
use phr_core::{
    Author, Record, RecordMeta, Section, Stamp,
    audit::{AuditAction, Logged, audit_event},
    card::Card,
    envelope,
    fuzzing::{self, FUZZ_PASSPHRASE},
    home::{Home, NewPatient},
    keys::SectionKey,
    keystore::{self, Keystore},
    ledger::Access,
    record::lone_change,
    replica::Replica,
    secrecy::SecretString,
    sync::{Incoming, InitiatorSession, Local, ResponderSession},
};
use serde_json::{Value, json};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Resources from the IPS example put into the patient's record and cut out as import seeds.
const IPS_ENTRIES: usize = 6;

fn main() -> Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or("fuzz/corpus".into()));
    let fixtures = std::env::var("PHR_FHIR_FIXTURES").unwrap_or("../shared/fixtures/fhir".into());
    let ips_path = Path::new(&fixtures).join("ips/Bundle-IPS-examples-Bundle-01.json");
    let ips_bytes = fs::read(&ips_path).map_err(|e| format!("{}: {e}", ips_path.display()))?;
    let ips: Value = serde_json::from_slice(&ips_bytes)?;
    let resources: Vec<Value> = ips["entry"]
        .as_array()
        .ok_or("the IPS example has no entries")?
        .iter()
        .filter_map(|entry| entry.get("resource").cloned())
        .filter(|resource| resource["resourceType"] != "Patient")
        .take(IPS_ENTRIES)
        .collect();

    let corpus = Corpus(out);
    let tmp = tempfile::tempdir()?;
    let now = fuzzing::now();

    // A patient with a few resources, sharing the summary with a GP.
    let patient_dir = tmp.path().join("patient");
    let (mut patient, mut record) = Home::init_patient(
        &patient_dir,
        &NewPatient {
            name: "Ada Lovelace".into(),
            nhs_number: None,
            birth_date: None,
            device_label: None,
        },
        None,
        now,
    )?;
    let gp = Home::init_provider(
        &tmp.path().join("gp"),
        "Riverside Surgery",
        Some("Y99999".into()),
        None,
    )?;
    let author = patient.device().author();
    let stamp = Stamp {
        author: &author,
        time: now,
    };
    for resource in &resources[..3] {
        record.put(stamp, resource)?;
    }
    record.commit(stamp, "seed");
    patient.save(&mut record, now)?;
    let gp_card = gp.card(vec!["/ip4/192.0.2.7/tcp/4001".into()], now)?;
    let gp_party = Card::parse(&gp_card)?.party;
    patient.grant(
        &gp_party,
        &[Section::Summary],
        Access::Write,
        None,
        Some("care".into()),
        now,
    )?;
    let id = patient.record_id().ok_or("the patient holds a record")?;

    corpus.put("card", "gp", gp_card.as_bytes())?;
    let patient_card = patient.card(
        vec![
            "/ip4/192.0.2.8/tcp/4001".into(),
            "/ip4/192.0.2.8/udp/4001/quic-v1".into(),
        ],
        now,
    )?;
    corpus.put("card", "patient", patient_card.as_bytes())?;

    for (i, op) in patient.ledger()?.ops().enumerate() {
        corpus.put("ledger_op", &format!("op-{i}"), op.bytes())?;
    }
    let (vault, _) = patient.sync_parts();
    for section in Section::ALL {
        for (i, (_, bytes)) in vault.blobs(&id, section)?.iter().enumerate() {
            corpus.put("blob", &format!("{section}-{i}"), bytes)?;
        }
    }

    // Every message of one sync, patient to GP, as sync messages and as frames.
    for (i, message) in sync_messages(&patient, &gp, id)?.iter().enumerate() {
        corpus.put("sync_message", &format!("message-{i}"), message)?;
        corpus.put("frame", &format!("message-{i}"), &frame(message))?;
    }

    write_envelopes(&corpus)?;
    write_keystores(&corpus, &patient)?;
    write_changes(&corpus, &resources, &gp_party)?;

    // A FHIR file of each shape: the whole example, single resources, a small collection.
    corpus.put("import", "ips-bundle", &ips_bytes)?;
    for (i, resource) in resources.iter().enumerate() {
        corpus.put(
            "import",
            &format!("resource-{i}"),
            &serde_json::to_vec(resource)?,
        )?;
    }
    let entries: Vec<Value> = resources[..3]
        .iter()
        .map(|resource| json!({ "resource": resource }))
        .collect();
    let collection = json!({"resourceType": "Bundle", "type": "collection", "entry": entries});
    corpus.put("import", "collection", &serde_json::to_vec(&collection)?)?;

    // The shipped medicines table, as CSV and as JSON.
    let shipped = phr_core::medicines::Table::shipped();
    corpus.put(
        "medicines_table",
        "shipped-csv",
        shipped.to_csv().as_bytes(),
    )?;
    corpus.put("medicines_table", "row-json", MEDICINES_JSON.as_bytes())?;
    println!("seeds written to {}", corpus.0.display());
    Ok(())
}

/// One row of a medicines table in its JSON form, quotes and commas in its fields.
const MEDICINES_JSON: &str = r#"[{"a": "warfarin", "b": "nsaids", "kind": "drug-drug", "severity": "high",
  "why": "Bleeding, \"more\" of it.", "source": "A source, 2024", "link": "https://example.org"}]"#;

/// The corpus directory: one folder per target.
struct Corpus(PathBuf);

impl Corpus {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.0.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), bytes)?;
        Ok(())
    }
}

/// The messages of one sync session between two homes, as `Home::sync_in_process` runs it.
fn sync_messages(from: &Home, to: &Home, id: phr_core::keys::RecordId) -> Result<Vec<Vec<u8>>> {
    let now_ms = fuzzing::NOW_MS;
    let ((from_vault, from_age), (to_vault, to_age)) = (from.sync_parts(), to.sync_parts());
    let mut ours = Replica::open(from_vault, id, from.peer_id(), from_age)?;
    let mut theirs = Replica::open(to_vault, id, to.peer_id(), to_age)?;
    let mut initiator_side = Local {
        replica: &mut ours,
        store: from_vault,
        age: from_age,
        device: None,
    };
    let mut responder_side = Local {
        replica: &mut theirs,
        store: to_vault,
        age: to_age,
        device: None,
    };
    let mut messages = Vec::new();
    let (mut initiator, request) =
        InitiatorSession::start(&initiator_side, to.peer_id(), 1, now_ms)?;
    messages.push(request.clone());
    let (mut responder, mut answer) = ResponderSession::open(
        &mut responder_side,
        from.peer_id(),
        Incoming::decode(&request)?,
        now_ms,
    )?;
    while let Some(bytes) = answer {
        messages.push(bytes.clone());
        let Some(request) =
            initiator.receive(&mut initiator_side, Incoming::decode(&bytes)?, now_ms)?
        else {
            break;
        };
        messages.push(request.clone());
        answer = responder.receive(&mut responder_side, Incoming::decode(&request)?, now_ms)?;
    }
    Ok(messages)
}

/// A sync message as the node's codec frames it: one CBOR byte string (RFC 8949, major type 2).
fn frame(message: &[u8]) -> Vec<u8> {
    let len = message.len();
    let mut out = match len {
        0..=23 => vec![0x40 | len as u8],
        24..=0xff => vec![0x58, len as u8],
        0x100..=0xffff => [&[0x59][..], &(len as u16).to_be_bytes()].concat(),
        _ => [&[0x5a][..], &(len as u32).to_be_bytes()].concat(),
    };
    out.extend_from_slice(message);
    out
}

/// Envelopes wrapped to the fuzz identity (alone and among others), and bare plaintexts in the
/// layout `envelope` documents.
fn write_envelopes(corpus: &Corpus) -> Result<()> {
    let keys = [SectionKey::generate(), SectionKey::generate()];
    let pairs = [(0, &keys[0]), (1, &keys[1])];
    let me = fuzzing::identity().recipient();
    let others: Vec<_> = (0..2)
        .map(|_| phr_core::keys::AgeIdentity::generate().recipient())
        .collect();
    corpus.put(
        "envelope",
        "to-me",
        &envelope::wrap(&pairs, std::slice::from_ref(&me))?,
    )?;
    let all = [others[0].clone(), me, others[1].clone()];
    corpus.put("envelope", "to-three", &envelope::wrap(&pairs[..1], &all)?)?;
    corpus.put("envelope", "to-others", &envelope::wrap(&pairs, &others)?)?;
    let mut plaintext = b"PHRK\x01".to_vec();
    plaintext.extend_from_slice(&2u16.to_le_bytes());
    for (epoch, key) in pairs {
        plaintext.extend_from_slice(&u32::to_le_bytes(epoch));
        plaintext.extend_from_slice(key.bytes());
    }
    corpus.put("envelope", "plaintext", &plaintext)?;
    Ok(())
}

/// Keystores plain and encrypted to the fuzz passphrase (with a work factor the target allows),
/// and a patient's decrypted backup (the backup target's input) and one without a record.
fn write_keystores(corpus: &Corpus, patient: &Home) -> Result<()> {
    let passphrase = SecretString::from(FUZZ_PASSPHRASE);
    let with_root = Keystore::generate(true).to_bytes();
    corpus.put("keystore", "plain-root", &with_root)?;
    corpus.put("keystore", "plain", &Keystore::generate(false).to_bytes())?;
    let encrypted = keystore::encrypt_with_passphrase(&with_root, &passphrase, 2)?;
    corpus.put("keystore", "encrypted", &encrypted)?;
    let backup = keystore::decrypt_with_passphrase(&patient.backup(&passphrase)?, &passphrase)?;
    corpus.put("backup", "patient", &backup)?;
    let encrypted_backup = keystore::encrypt_with_passphrase(&backup, &passphrase, 2)?;
    corpus.put("keystore", "encrypted-backup", &encrypted_backup)?;
    let mut file: Value = serde_json::from_slice(&backup)?;
    file["record"] = Value::Null;
    file["ledger"] = json!([]);
    file["blobs"] = json!({});
    corpus.put("backup", "no-record", &serde_json::to_vec(&file)?)?;
    Ok(())
}

/// Automerge changes by the fuzz signer's actor, as `check_authorship` and `load_parts` see
/// them: uncompressed and compressed change chunks, and an audit entry; and the sections saved
/// whole, as compactions hold them, for the `document` target.
fn write_changes(
    corpus: &Corpus,
    resources: &[Value],
    agent: &phr_core::party::Party,
) -> Result<()> {
    let author = Author {
        id: "fuzz".into(),
        name: "Fuzz".into(),
    };
    let stamp = Stamp {
        author: &author,
        time: fuzzing::now(),
    };
    let meta = RecordMeta {
        id: "fuzz".into(),
        subject: None,
        nhs_number: None,
    };
    let mut record = Record::create(meta, &fuzzing::actor());
    let mut saved: BTreeMap<Section, Vec<u8>> = BTreeMap::new();
    for (i, resource) in resources.iter().enumerate() {
        record.put(stamp, resource)?;
        record.commit(stamp, "seed");
        for (section, bytes) in record.take_unsaved() {
            corpus.put("changes", &format!("change-{i}-{section}"), &bytes)?;
            saved.entry(section).or_default().extend_from_slice(&bytes);
        }
    }
    for (section, bytes) in &saved {
        corpus.put("changes", &format!("changes-{section}"), bytes)?;
        // The same changes as Automerge compresses them (chunk type 2) when asked for their bytes.
        let mut doc = AutoCommit::new();
        doc.load_incremental(bytes)?;
        let compressed: Vec<u8> = doc
            .get_changes(&[])
            .into_iter()
            .flat_map(|mut change| change.bytes().to_vec())
            .collect();
        corpus.put("changes", &format!("compressed-{section}"), &compressed)?;
    }
    // The sections saved whole, as compactions hold them (document chunks, their long columns
    // compressed), for the `document` target; and one followed by a later change.
    for section in saved.keys() {
        corpus.put(
            "document",
            &format!("compaction-{section}"),
            &record.save_section(*section),
        )?;
    }
    if let Some((section, bytes)) = saved.iter().next() {
        let mut doc = AutoCommit::new();
        doc.load_incremental(bytes)?;
        let heads = doc.get_heads();
        automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "later", "x")?;
        doc.commit();
        let document_then_change = [record.save_section(*section), doc.save_after(&heads)].concat();
        corpus.put("document", "compaction-then-change", &document_then_change)?;
    }
    let logged = Logged {
        action: AuditAction::Read,
        what: "show".into(),
        sections: vec![Section::Summary],
        resource: None,
    };
    let record_id = phr_core::keys::RecordId([7; 16]);
    let event = audit_event(
        &phr_core::new_id(),
        &logged,
        agent,
        record_id,
        fuzzing::now(),
    );
    let (_, entry) = lone_change(stamp, &event, fuzzing::actor(), "audit")?;
    corpus.put("changes", "audit-entry", &entry)?;
    Ok(())
}
