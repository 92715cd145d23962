use std::{collections::BTreeMap, fs};

use age::secrecy::SecretString;
use serde_json::json;

use super::*;
use crate::{
    blob::{Blob, BlobHeader, BlobKind},
    keystore::KeystoreError,
    ledger::{Access, Ledger},
    record::PutOutcome,
    section::Section,
};

fn patient() -> NewPatient {
    NewPatient {
        name: "Ada Lovelace".into(),
        nhs_number: Some(NhsNumber::parse("9434765919").unwrap()),
        birth_date: None,
        device_label: None,
    }
}

fn t(second: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + second).unwrap()
}

fn put(home: &mut Home, record: &mut Record, resource: serde_json::Value, time: Timestamp) {
    let author = home.device().author();
    let stamp = Stamp {
        author: &author,
        time,
    };
    record.put(stamp, &resource).unwrap();
    record.commit(stamp, "test");
    home.save(record, time).unwrap();
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push((path.clone(), fs::read(&path).unwrap()));
        }
    }
    out
}

fn assert_nowhere(dir: &Path, needle: &str) {
    for (path, bytes) in files_under(dir) {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{} holds `{needle}` in plaintext",
            path.display()
        );
    }
}

#[test]
fn init_save_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (home, record) = Home::init_patient(dir.path(), &patient(), None, t(0)).unwrap();
    let subject = record.meta().subject.clone().unwrap();
    let record_id = home.record_id().unwrap();
    assert_eq!(record.meta().id, record_id.to_string());
    assert!(
        matches!(Home::open(dir.path()), Err(HomeError::Busy(_))),
        "the home is locked while open"
    );
    drop(home);
    let mut home = Home::open(dir.path()).unwrap();
    assert_eq!(home.record_id(), Some(record_id));
    let record = home.load_record().unwrap();
    assert!(home.warnings().is_empty(), "{:?}", home.warnings());
    let patient = record.get(&subject.parse().unwrap()).unwrap().unwrap();
    assert_eq!(patient["name"][0]["family"], "Lovelace");
    assert_eq!(patient["identifier"][0]["value"], "9434765919");
    drop(home);
    assert!(matches!(
        Home::init_provider(dir.path(), "x", None, None),
        Err(HomeError::AlreadyInitialised(_))
    ));
}

#[test]
fn many_saves_compact_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut home, mut record) = Home::init_patient(dir.path(), &patient(), None, t(0)).unwrap();
    let total = BLOBS_BEFORE_COMPACTION + 5;
    for i in 0..total {
        let resource = json!({"resourceType": "Condition", "id": format!("c{i}")});
        put(&mut home, &mut record, resource, t(i as i64));
    }
    let record_id = home.record_id().unwrap();
    let stored = home
        .vault
        .blobs(&record_id, Section::Summary)
        .unwrap()
        .len();
    assert!(
        stored <= BLOBS_BEFORE_COMPACTION,
        "{stored} blobs were not compacted"
    );
    drop(home);
    let mut home = Home::open(dir.path()).unwrap();
    let record = home.load_record().unwrap();
    assert!(home.warnings().is_empty(), "{:?}", home.warnings());
    assert_eq!(record.len(Section::Summary), total + 1);
}

#[test]
fn nothing_of_the_record_is_readable_at_rest_before_or_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (mut home, mut record) = Home::init_patient(dir.path(), &patient(), None, t(0)).unwrap();
    let canary = "CANARY-7f3a-sleepless-since-the-accident";
    put(
        &mut home,
        &mut record,
        json!({"resourceType": "Observation", "id": "o1", "status": "final",
               "code": {"text": canary}}),
        t(1),
    );
    for needle in [canary, "Lovelace", "9434765919"] {
        assert_nowhere(dir.path(), needle);
    }
    home.compact(&mut record, t(2)).unwrap();
    drop(home);
    for needle in [canary, "Lovelace", "9434765919"] {
        assert_nowhere(dir.path(), needle);
    }
    let mut home = Home::open(dir.path()).unwrap();
    let record = home.load_record().unwrap();
    let o1 = record
        .get(&"Observation/o1".parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(o1["code"]["text"], canary);
}

#[test]
fn a_flipped_byte_in_a_stored_blob_costs_that_blob_only() {
    let dir = tempfile::tempdir().unwrap();
    let (mut home, mut record) = Home::init_patient(dir.path(), &patient(), None, t(0)).unwrap();
    put(
        &mut home,
        &mut record,
        json!({"resourceType": "Observation", "id": "o1", "status": "final"}),
        t(1),
    );
    put(
        &mut home,
        &mut record,
        json!({"resourceType": "Encounter", "id": "e1", "status": "finished"}),
        t(2),
    );
    let id = home.record_id().unwrap();
    let clinical = home.vault.blobs(&id, Section::Clinical).unwrap();
    assert_eq!(clinical.len(), 2);
    // The newer blob: no other change depends on it. (Changes that causally follow a damaged
    // blob wait, in Automerge's queue, until a good copy of it arrives.)
    let (victim, bytes) = clinical
        .iter()
        .max_by_key(|(_, bytes)| Blob::decode(bytes.clone()).unwrap().header().time_ms)
        .unwrap();
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    home.vault
        .overwrite_blob_for_test(&id, Section::Clinical, victim, &damaged)
        .unwrap();
    drop(home);
    let mut home = Home::open(dir.path()).unwrap();
    let record = home.load_record().unwrap();
    let warnings = home.warnings().join("\n");
    assert!(
        warnings.contains(&format!(
            "blob {} of the clinical section was skipped",
            victim.short()
        )),
        "{warnings}"
    );
    // The encounter is gone with its blob; the observation and the summary load.
    assert_eq!(record.len(Section::Clinical), 1);
    assert!(
        record
            .get(&"Observation/o1".parse().unwrap())
            .unwrap()
            .is_some()
    );
    assert_eq!(record.len(Section::Summary), 1);
}

#[test]
fn a_grantee_reads_only_its_sections_and_nothing_after_revocation() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut home, mut record) =
        Home::init_patient(dirs[0].path(), &patient(), None, t(0)).unwrap();
    let gp = Home::init_provider(dirs[1].path(), "Leeds GP", Some("B86001".into()), None).unwrap();
    let pharmacy = Home::init_provider(dirs[2].path(), "Pharmacy", None, None).unwrap();
    home.grant(
        &gp.party(),
        &[Section::Summary, Section::Clinical],
        Access::Write,
        None,
        None,
        t(1),
    )
    .unwrap();
    home.grant(
        &pharmacy.party(),
        &[Section::Summary],
        Access::Read,
        None,
        None,
        t(1),
    )
    .unwrap();
    put(
        &mut home,
        &mut record,
        json!({"resourceType": "Condition", "id": "before"}),
        t(2),
    );
    put(
        &mut home,
        &mut record,
        json!({"resourceType": "Observation", "id": "secret", "status": "final",
               "meta": {"tag": [{"system": crate::section::SECTION_TAG_SYSTEM, "code": "sensitive"}]}}),
        t(3),
    );
    let id = home.record_id().unwrap();
    let blob_of = |home: &Home, section| -> Vec<Blob> {
        home.vault
            .blobs(&id, section)
            .unwrap()
            .into_iter()
            .map(|(_, bytes)| Blob::decode(bytes).unwrap())
            .collect()
    };
    let opens = |keyring: &Keyring, blob: &Blob| {
        keyring
            .get(&blob.header().key_id)
            .is_some_and(|key| blob.open(key).is_ok())
    };
    let ledger = home.ledger().unwrap().clone();
    let gp_keys = gp.unlock(&ledger);
    let pharmacy_keys = pharmacy.unlock(&ledger);
    let sensitive = blob_of(&home, Section::Sensitive);
    assert!(!sensitive.is_empty());
    for blob in &sensitive {
        assert!(!opens(&gp_keys, blob), "the GP was not granted sensitive");
        assert!(
            !opens(&pharmacy_keys, blob),
            "the pharmacy was not granted sensitive"
        );
    }
    let summary_before = blob_of(&home, Section::Summary);
    assert!(
        summary_before
            .iter()
            .all(|b| opens(&pharmacy_keys, b) && opens(&gp_keys, b))
    );

    let revoked = home.revoke("Pharmacy", t(4)).unwrap();
    assert_eq!(revoked.rotated, vec![Section::Summary]);
    put(
        &mut home,
        &mut record,
        json!({"resourceType": "Condition", "id": "after"}),
        t(5),
    );
    let ledger = home.ledger().unwrap().clone();
    let gp_keys = gp.unlock(&ledger);
    let pharmacy_keys = pharmacy.unlock(&ledger);
    let summary_after = blob_of(&home, Section::Summary);
    let new: Vec<&Blob> = summary_after
        .iter()
        .filter(|b| !summary_before.iter().any(|old| old.id() == b.id()))
        .collect();
    assert_eq!(new.len(), 1);
    assert!(
        !opens(&pharmacy_keys, new[0]),
        "revoked: cannot read the new epoch"
    );
    assert!(opens(&gp_keys, new[0]), "the GP still reads the new epoch");
    assert!(
        summary_before.iter().all(|b| opens(&pharmacy_keys, b)),
        "it keeps what it had"
    );
    assert!(
        !ledger
            .state()
            .can_read(&pharmacy.peer_id(), Section::Summary, t(5).as_millisecond())
    );
}

#[test]
fn a_new_device_gets_every_key_and_a_removed_one_none_of_the_next_epoch() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut home, mut record) =
        Home::init_patient(dirs[0].path(), &patient(), None, t(0)).unwrap();
    let id = home.record_id().unwrap();
    let phone = Home::init_device(dirs[1].path(), "Ada Lovelace", "phone", id, None).unwrap();
    let card = Card::parse(&phone.card(vec![], t(0)).unwrap()).unwrap();
    home.add_device(&card, t(1)).unwrap();
    let ledger = home.ledger().unwrap().clone();
    assert!(ledger.state().is_owner(&phone.peer_id()));
    let keys = phone.unlock(&ledger);
    assert_eq!(keys.sections().len(), Section::ALL.len());
    // The devices' labels are sealed to the owners under the `audit` keys: the new device,
    // given the operations as bytes, reads the first device's label (sealed before it existed)
    // and its own.
    let mut fresh = crate::ledger::Ledger::new(id);
    for op in ledger.ops() {
        fresh
            .insert(crate::ledger::SignedOp::decode(op.bytes()).unwrap())
            .unwrap();
    }
    assert!(
        fresh
            .state()
            .owners
            .values()
            .all(|d| d.name.contains("sealed"))
    );
    let problems = fresh.reveal(|id| keys.get(id), &phone.keystore.age, &phone.peer_id());
    assert!(problems.is_empty(), "{problems:?}");
    let mut labels: Vec<String> = fresh
        .state()
        .owners
        .values()
        .map(|d| d.name.clone())
        .collect();
    labels.sort();
    assert_eq!(labels, [FIRST_DEVICE_LABEL, "phone"]);
    home.remove_device("phone", t(2)).unwrap();
    put(
        &mut home,
        &mut record,
        json!({"resourceType": "Condition", "id": "c"}),
        t(3),
    );
    let ledger = home.ledger().unwrap();
    let keys = phone.unlock(ledger);
    let current = ledger
        .state()
        .current_key(Section::Summary, t(3).as_millisecond())
        .unwrap();
    assert!(keys.get(&current.key_id).is_none());
    assert!(matches!(
        home.remove_device(&home.peer_id().to_string(), t(4)),
        Err(HomeError::NothingToDo(_))
    ));
}

#[test]
fn passphrase_errors_are_clear_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let secret = SecretString::from("correct horse".to_string());
    let (home, _) = Home::init_patient(dir.path(), &patient(), Some(&secret), t(0)).unwrap();
    drop(home);
    let before = files_under(dir.path());
    let err = Home::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, HomeError::Keystore(KeystoreError::PassphraseNeeded)),
        "{err}"
    );
    let err = Home::open_with(dir.path(), &mut || {
        Ok(SecretString::from("wrong".to_string()))
    })
    .unwrap_err();
    assert!(
        matches!(err, HomeError::Keystore(KeystoreError::WrongPassphrase)),
        "{err}"
    );
    let mut home = Home::open_with(dir.path(), &mut || Ok(secret.clone())).unwrap();
    home.load_record().unwrap();
    drop(home);
    let after = files_under(dir.path());
    let keystore = |files: &[(PathBuf, Vec<u8>)]| {
        files
            .iter()
            .find(|(p, _)| p.ends_with(KEYSTORE_FILE))
            .cloned()
    };
    assert_eq!(keystore(&before), keystore(&after));
}

#[test]
fn a_missing_or_corrupt_keystore_is_reported_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    drop(Home::init_patient(dir.path(), &patient(), None, t(0)).unwrap());
    let path = dir.path().join(KEYSTORE_FILE);
    let original = fs::read(&path).unwrap();
    fs::write(&path, b"{\"format\":\"phr-keystore/1\",\"device\":\"AAAA\"").unwrap();
    let err = Home::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("damaged"), "{err}");
    fs::remove_file(&path).unwrap();
    let err = Home::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, HomeError::Keystore(KeystoreError::Missing(_))),
        "{err}"
    );
    assert!(
        !path.exists(),
        "a missing keystore is never silently regenerated"
    );
    fs::write(&path, original).unwrap();
    let mut perms = fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    fs::set_permissions(&path, perms).unwrap();
    Home::open(dir.path()).unwrap().load_record().unwrap();
}

#[test]
fn backup_restores_the_same_record_and_identity() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut home, mut record) =
        Home::init_patient(dirs[0].path(), &patient(), None, t(0)).unwrap();
    put(
        &mut home,
        &mut record,
        json!({"resourceType": "Condition", "id": "asthma"}),
        t(1),
    );
    let secret = SecretString::from("backup words".to_string());
    let bytes = home.backup(&secret).unwrap();
    let wrong = Home::restore(
        dirs[1].path(),
        &bytes,
        &SecretString::from("nope".to_string()),
        None,
    );
    assert!(matches!(
        wrong,
        Err(HomeError::Keystore(KeystoreError::WrongPassphrase))
    ));
    assert!(
        !dirs[1].path().join(KEYSTORE_FILE).exists(),
        "a failed restore writes nothing"
    );
    let mut restored = Home::restore(dirs[1].path(), &bytes, &secret, None)
        .unwrap()
        .home;
    assert_eq!(restored.record_id(), home.record_id());
    assert_eq!(restored.peer_id(), home.peer_id());
    assert_ne!(
        restored.device().actor,
        home.device().actor,
        "a restored home writes as a new actor"
    );
    assert!(restored.holds_root_key());
    let again = restored.load_record().unwrap();
    assert_eq!(
        again
            .get(&"Condition/asthma".parse().unwrap())
            .unwrap()
            .unwrap()["id"],
        "asthma"
    );
    assert!(matches!(
        Home::restore(dirs[1].path(), &bytes, &secret, None),
        Err(HomeError::AlreadyInitialised(_) | HomeError::Busy(_))
    ));
}

#[test]
fn contacts_are_found_by_alias_name_or_peer_id() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut home, _) = Home::init_patient(dirs[0].path(), &patient(), None, t(0)).unwrap();
    let gp = Home::init_provider(dirs[1].path(), "Leeds GP", None, None).unwrap();
    let card = gp
        .card(vec!["/ip4/127.0.0.1/tcp/4001".into()], t(0))
        .unwrap();
    home.add_contact(&card, Some("gp".into()), t(1)).unwrap();
    assert_eq!(
        home.find_contact("gp").unwrap().card.party.peer,
        gp.peer_id()
    );
    assert_eq!(
        home.find_contact("leeds gp").unwrap().card.party.peer,
        gp.peer_id()
    );
    assert_eq!(
        home.find_contact(&gp.peer_id().to_string())
            .unwrap()
            .card
            .party
            .peer,
        gp.peer_id()
    );
    assert!(matches!(
        home.find_contact("dentist"),
        Err(HomeError::UnknownContact(_))
    ));
    let mut tampered = card.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert!(matches!(
        home.add_contact(&tampered, None, t(2)),
        Err(HomeError::Card(_))
    ));
    assert_eq!(
        home.contacts().unwrap().len(),
        1,
        "a bad card changes nothing"
    );
    let own = home.card(vec![], t(0)).unwrap();
    assert!(home.add_contact(&own, None, t(2)).is_err());
    let _ = PutOutcome::Added;
    let _ = Ledger::new;
}

#[test]
fn a_grantee_cannot_pass_off_changes_as_the_patients() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut home, mut record) =
        Home::init_patient(dirs[0].path(), &patient(), None, t(0)).unwrap();
    let gp = Home::init_provider(dirs[1].path(), "Leeds GP", None, None).unwrap();
    home.grant(
        &gp.party(),
        &[Section::Summary],
        Access::Write,
        None,
        None,
        t(1),
    )
    .unwrap();
    let id = home.record_id().unwrap();
    let ledger = home.ledger().unwrap().clone();
    let gp_keys = gp.unlock(&ledger);
    let saved: BTreeMap<Section, Vec<u8>> = record.save_compacted().into_iter().collect();
    // The GP writes one Condition as itself and one as the patient's device, in its own blobs.
    for (actor, condition) in [
        (gp.device().actor(), "by-gp"),
        (home.device().actor(), "forged"),
    ] {
        let mut replica = Record::load(record.meta().clone(), &saved, &actor).unwrap();
        let author = gp.device().author();
        let stamp = Stamp {
            author: &author,
            time: t(2),
        };
        replica
            .put(
                stamp,
                &json!({"resourceType": "Condition", "id": condition}),
            )
            .unwrap();
        replica.commit(stamp, "gp");
        let (_, changes) = replica.take_unsaved().into_iter().next().unwrap();
        let current = ledger
            .state()
            .current_key(Section::Summary, t(2).as_millisecond())
            .unwrap();
        let header = BlobHeader {
            record: id,
            section: Section::Summary,
            kind: BlobKind::Changes,
            epoch: current.epoch,
            key_id: current.key_id,
            author: gp.peer_id(),
            time_ms: t(2).as_millisecond(),
            ledger_heads: ledger.heads(),
            replaces: Vec::new(),
            proofs: Vec::new(),
        };
        let key = gp_keys.get(&current.key_id).unwrap();
        let blob = Blob::seal(header, key, &changes, &gp.keystore.device).unwrap();
        let mut batch = Batch::new();
        batch.blob(id, Section::Summary, &blob);
        home.vault.commit(batch).unwrap();
    }
    drop((home, record));
    let mut home = Home::open(dirs[0].path()).unwrap();
    let record = home.load_record().unwrap();
    let warnings = home.warnings().join("\n");
    assert!(warnings.contains("another actor"), "{warnings}");
    assert!(
        record
            .get(&"Condition/by-gp".parse().unwrap())
            .unwrap()
            .is_some()
    );
    assert!(
        record
            .get(&"Condition/forged".parse().unwrap())
            .unwrap()
            .is_none()
    );
}

/// A patient home with a GP granted `summary` (read) and one entry written: several ledger
/// operations, keys of three sections and blobs, all stored by this device.
fn home_with_a_grant(dir: &Path) -> (Home, RecordId) {
    let (mut home, mut record) = Home::init_patient(dir, &patient(), None, t(0)).unwrap();
    put(
        &mut home,
        &mut record,
        json!({"resourceType": "AllergyIntolerance", "id": "a1", "code": {"text": "Peanut"}}),
        t(1),
    );
    let gp = Home::init_provider(&dir.join("gp"), "Dr Grey", None, None).unwrap();
    home.grant(
        &gp.party(),
        &[Section::Summary],
        Access::Read,
        None,
        None,
        t(2),
    )
    .unwrap();
    let id = home.record_id().unwrap();
    (home, id)
}

/// The record's grant, and its bytes with the last byte of the signature flipped: what someone
/// who can write the vault but cannot sign would store.
fn forged_grant(home: &Home, id: RecordId) -> (crate::ledger::SignedOp, Vec<u8>) {
    let grant = reopen(home, id)
        .ledger()
        .ops()
        .find(|op| matches!(op.op().body, crate::ledger::OpBody::Grant { .. }))
        .unwrap()
        .clone();
    let mut forged = grant.bytes().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    (grant, forged)
}

fn reopen(home: &Home, id: RecordId) -> Replica {
    Replica::open(&home.vault, id, home.peer_id(), &home.keystore.age).unwrap()
}

#[test]
fn what_a_device_stored_is_vouched_for_and_its_keys_kept_so_opening_skips_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let (home, id) = home_with_a_grant(dir.path());
    let first = reopen(&home, id);
    // Every operation and blob this device stored carries its tag, and every key it unwrapped
    // is kept: the next opening checks no signature and opens no envelope.
    let ops = home.vault.ledger_ops_vouched(&id).unwrap();
    assert!(ops.len() >= 4, "{} operations", ops.len());
    assert!(ops.iter().all(|(_, vouched)| vouched.is_some()));
    for section in Section::ALL {
        for (blob, _, vouched) in home.vault.blobs_vouched(&id, section).unwrap() {
            assert!(
                vouched,
                "blob {} of {section} not vouched for",
                blob.short()
            );
        }
    }
    let kept = home.vault.section_keys(&id).unwrap();
    assert_eq!(kept.len(), first.keyring().len());
    assert!(first.keyring().len() >= 3);
    // Opening again reads the same record.
    let again = reopen(&home, id);
    assert_eq!(again.ledger().state().valid, first.ledger().state().valid);
    assert_eq!(
        again.keyring().ids().collect::<Vec<_>>(),
        first.keyring().ids().collect::<Vec<_>>()
    );
    assert!(again.problems().is_empty(), "{:?}", again.problems());
}

#[test]
fn a_forged_ledger_operation_under_a_vouched_id_is_checked_and_refused() {
    // Someone who can write the vault but has no keystore puts other bytes under the key of
    // an operation the node vouched for: a grant whose signature no longer matches (as a
    // grant with its sections widened would). They hash to another id, so they are checked
    // in full, and refused.
    let dir = tempfile::tempdir().unwrap();
    let (home, id) = home_with_a_grant(dir.path());
    let (grant, forged) = forged_grant(&home, id);
    home.vault
        .overwrite_ledger_op_for_test(&id, &grant.id(), &forged)
        .unwrap();
    let after = reopen(&home, id);
    assert!(!after.ledger().contains(&grant.id()));
    assert!(
        after.problems().iter().any(|p| p.contains("skipped")),
        "{:?}",
        after.problems()
    );
    assert!(
        after
            .ledger()
            .state()
            .grants
            .iter()
            .all(|g| g.sections.is_empty() || !g.sections.contains(&Section::Summary)),
        "the forged grant counts"
    );
}

#[test]
fn a_tag_copied_to_a_forged_operation_does_not_vouch_for_it() {
    // The forged bytes stored under their own id, with the tag of a real operation copied to
    // that id's row: a tag covers the id it was made for, so the forgery is checked in full.
    let dir = tempfile::tempdir().unwrap();
    let (home, id) = home_with_a_grant(dir.path());
    let (grant, forged) = forged_grant(&home, id);
    let forged_id = crate::keys::OpId(crate::keys::sha256(&[&forged]));
    home.vault
        .overwrite_ledger_op_for_test(&id, &forged_id, &forged)
        .unwrap();
    home.vault
        .copy_vouch_for_test(&id, &grant.id(), &forged_id)
        .unwrap();
    let ops = home.vault.ledger_ops_vouched(&id).unwrap();
    assert!(
        ops.iter()
            .all(|(bytes, vouched)| *bytes != forged || vouched.is_none()),
        "a copied tag vouches for the forgery"
    );
    let after = reopen(&home, id);
    assert!(!after.ledger().contains(&forged_id));
    assert!(after.ledger().contains(&grant.id()));
}

#[test]
fn a_kept_key_no_envelope_gives_this_device_is_not_used() {
    // A key kept for the record (as a kept row is, sealed) that no valid `Keys` operation
    // addressed to this device announces does not enter the keyring: keeping keys saves
    // unwrapping them, it never gives a key the ledger does not.
    let dir = tempfile::tempdir().unwrap();
    let (home, id) = home_with_a_grant(dir.path());
    let stray = crate::keys::SectionKey::generate();
    let mut batch = crate::vault::Batch::new();
    batch.keep_key(id, Section::Sensitive, 1, &stray);
    home.vault.commit(batch).unwrap();
    assert!(
        home.vault
            .section_keys(&id)
            .unwrap()
            .contains_key(&stray.id())
    );
    let opened = reopen(&home, id);
    assert!(opened.keyring().get(&stray.id()).is_none());
    assert!(opened.keyring().len() >= 3);
}
