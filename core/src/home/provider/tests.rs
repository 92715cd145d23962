//! The provider side end to end in core: homes in temporary directories, records moved between
//! them by the real sync sessions, run in process.

use std::path::Path;

use jiff::Timestamp;
use serde_json::json;
use tempfile::TempDir;

use super::*;
use crate::{
    audit::{AuditKind, entry_actor},
    blob::{BlobError, BlobKind},
    home::{HomeError, NewPatient, PENDING_RECORDS_MAX, PatientPage, PatientQuery},
    ledger::Access,
    nhs::NhsNumber,
    vault::{Batch, VaultError},
};

fn t(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

/// Runs one sync session of `record` between two homes, `from` starting it, as their nodes
/// would over the network.
fn sync(from: &Home, to: &Home, record: RecordId, now: Timestamp) {
    from.sync_in_process(to, record, now.as_millisecond())
        .unwrap();
}

/// A patient who holds an allergy (summary) and a blood pressure (clinical), and has granted a
/// GP write access to summary and clinical, a pharmacy read access to summary, and a relay.
struct World {
    dirs: Vec<TempDir>,
    patient: Option<Home>,
    gp: Home,
    pharmacy: Home,
    relay: Home,
    id: RecordId,
}

impl World {
    fn new() -> World {
        let dirs: Vec<TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let new = NewPatient {
            name: "Ada Lovelace".into(),
            nhs_number: Some(NhsNumber::parse("9434765919").unwrap()),
            birth_date: None,
            device_label: None,
        };
        let (mut patient, mut record) =
            Home::init_patient(dirs[0].path(), &new, None, t(0)).unwrap();
        let gp =
            Home::init_provider(dirs[1].path(), "Leeds GP", Some("B86001".into()), None).unwrap();
        let pharmacy = Home::init_provider(dirs[2].path(), "Pharmacy", None, None).unwrap();
        let relay = Home::init_relay(dirs[3].path(), "Relay", None).unwrap();
        let grants = [
            (
                &gp,
                vec![Section::Summary, Section::Clinical],
                Access::Write,
            ),
            (&pharmacy, vec![Section::Summary], Access::Read),
            (&relay, vec![Section::Summary], Access::Relay),
        ];
        for (who, sections, access) in grants {
            patient
                .grant(&who.party(), &sections, access, None, None, t(1))
                .unwrap();
        }
        let author = patient.device().author();
        let stamp = Stamp {
            author: &author,
            time: t(2),
        };
        let allergy = json!({"resourceType": "AllergyIntolerance", "id": "peanut",
            "code": {"text": "Peanut allergy"}});
        let bp = json!({"resourceType": "Observation", "id": "bp", "status": "final",
            "code": {"text": "Blood pressure"}});
        record.put(stamp, &allergy).unwrap();
        record.put(stamp, &bp).unwrap();
        record.commit(stamp, "two entries");
        patient.save(&mut record, t(2)).unwrap();
        let id = patient.record_id().unwrap();
        let world = World {
            dirs,
            patient: Some(patient),
            gp,
            pharmacy,
            relay,
            id,
        };
        for node in [&world.gp, &world.pharmacy, &world.relay] {
            sync(world.patient(), node, id, t(3));
        }
        for provider in [&world.gp, &world.pharmacy] {
            provider.accept_patient(&id.to_string()).unwrap();
        }
        world
    }

    fn patient(&self) -> &Home {
        self.patient.as_ref().expect("open")
    }

    fn patient_mut(&mut self) -> &mut Home {
        self.patient.as_mut().expect("open")
    }

    /// The patient's home opened again, to see what syncs stored meanwhile.
    fn reopen_patient(&mut self) {
        // The old home (and its lock) goes before the directory is opened again.
        self.patient = None;
        self.patient = Some(Home::open(self.dirs[0].path()).unwrap());
    }

    fn audit_blobs(&self, home: &Home) -> Vec<Blob> {
        home.vault
            .blobs(&self.id, Section::Audit)
            .unwrap()
            .into_iter()
            .map(|(_, bytes)| Blob::decode(bytes).unwrap())
            .collect()
    }
}

fn allergies(record: &Record) -> usize {
    record
        .resources_of_type(Section::Summary, "AllergyIntolerance")
        .unwrap()
        .len()
}

#[test]
fn a_provider_read_is_logged_to_the_owner_with_the_provider_as_signer() {
    let mut w = World::new();
    let prefix = &w.id.to_string()[..6];
    let mut open = w.gp.open_patient(prefix, t(10)).unwrap();
    let record = open
        .read(&Logged::read("show", &[Section::Summary]), t(10))
        .unwrap();
    assert_eq!(allergies(record), 1);
    let sealed = w.audit_blobs(&w.gp);
    assert_eq!(sealed.len(), 1, "the read wrote one entry, durably");
    assert_eq!(sealed[0].header().kind, BlobKind::SealedToOwners);
    assert_eq!(sealed[0].header().author, w.gp.peer_id());

    // The patient's device starts this sync and fetches the entry (the other tests push it).
    sync(w.patient(), &w.gp, w.id, t(11));
    w.reopen_patient();
    let audit = w.patient_mut().audit().unwrap();
    let reads: Vec<_> = audit.iter().filter(|e| e.kind == AuditKind::Read).collect();
    assert_eq!(reads.len(), 1, "{audit:#?}");
    assert_eq!(reads[0].who.peer, Some(w.gp.peer_id()));
    assert_eq!(reads[0].who.name, "Leeds GP");
    assert_eq!(reads[0].who.ods.as_deref(), Some("B86001"));
    assert_eq!(reads[0].claimed_agent, None);
    assert!(reads[0].what.contains("summary"), "{}", reads[0].what);
    assert_eq!(reads[0].time, t(10));
    // The consent operations are there too, newest first overall.
    assert!(audit.iter().any(|e| {
        e.kind == AuditKind::Consent
            && e.what
                .contains("granted Leeds GP read and write access to summary, clinical")
    }));
    assert!(audit.windows(2).all(|pair| pair[0].time >= pair[1].time));
    assert!(
        w.patient().warnings().is_empty(),
        "{:?}",
        w.patient().warnings()
    );
}

#[test]
fn nobody_but_the_owners_opens_an_audit_entry() {
    let w = World::new();
    let mut open = w.gp.open_patient(&w.id.to_string(), t(10)).unwrap();
    open.read(&Logged::read("show", &[Section::Summary]), t(10))
        .unwrap();
    let entry = w.audit_blobs(&w.gp).remove(0);
    for (who, age) in [
        ("the GP itself", &w.gp.keystore.age),
        ("another grantee", &w.pharmacy.keystore.age),
        ("a relay", &w.relay.keystore.age),
    ] {
        assert_eq!(
            entry.open_sealed(age),
            Err(BlobError::NotForMe { id: entry.id() }),
            "{who} opened it"
        );
    }
    let plain = entry.open_sealed(&w.patient().keystore.age).unwrap();
    crate::changes::check_authorship(&w.gp.peer_id(), &plain).unwrap();

    // Sync carries it to the patient and the relay (ciphertext), never to another grantee.
    sync(&w.gp, &w.relay, w.id, t(11));
    sync(&w.gp, &w.pharmacy, w.id, t(11));
    sync(&w.relay, &w.pharmacy, w.id, t(11));
    assert_eq!(w.audit_blobs(&w.relay).len(), 1);
    assert!(w.audit_blobs(&w.pharmacy).is_empty());
    // The GP's own node reads its record without it, and without a warning.
    let again = w.gp.open_patient(&w.id.to_string(), t(12)).unwrap();
    assert!(again.warnings().is_empty(), "{:?}", again.warnings());
}

#[test]
fn a_forged_agent_is_shown_as_its_signer() {
    let mut w = World::new();
    let open = w.gp.open_patient(&w.id.to_string(), t(10)).unwrap();
    // The GP logs a read as if the pharmacy had made it.
    let logged = Logged::read("show", &[Section::Summary]);
    let forged_id = crate::new_id();
    let event = audit::audit_event(&forged_id, &logged, &w.pharmacy.party(), w.id, t(10));
    let author = w.gp.device().author();
    let stamp = Stamp {
        author: &author,
        time: t(10),
    };
    let actor = entry_actor(&w.gp.peer_id());
    let (_, changes) = record::lone_change(stamp, &event, actor, "forged").unwrap();
    let forged = open
        .replica
        .seal_to_owners(&w.gp.keystore.device, &changes, t(10).as_millisecond())
        .unwrap();
    // And once more with the pharmacy's actor, which the GP's signature cannot cover.
    let event = audit::audit_event(&crate::new_id(), &logged, &w.pharmacy.party(), w.id, t(10));
    let actor = entry_actor(&w.pharmacy.peer_id());
    let (_, changes) = record::lone_change(stamp, &event, actor, "smuggled").unwrap();
    let smuggled = open
        .replica
        .seal_to_owners(&w.gp.keystore.device, &changes, t(10).as_millisecond())
        .unwrap();
    let mut batch = Batch::new();
    for blob in [&forged, &smuggled] {
        batch.blob(w.id, Section::Audit, blob);
    }
    w.gp.vault.commit(batch).unwrap();
    drop(open);

    sync(&w.gp, w.patient(), w.id, t(11));
    w.reopen_patient();
    let audit = w.patient_mut().audit().unwrap();
    let reads: Vec<_> = audit.iter().filter(|e| e.kind == AuditKind::Read).collect();
    assert_eq!(
        reads.len(),
        1,
        "the smuggled entry is not shown: {reads:#?}"
    );
    assert_eq!(reads[0].reference, format!("AuditEvent/{forged_id}"));
    assert_eq!(
        reads[0].who.peer,
        Some(w.gp.peer_id()),
        "shown as its signer"
    );
    assert_eq!(reads[0].claimed_agent.as_deref(), Some("Pharmacy"));
    assert!(
        w.patient()
            .warnings()
            .iter()
            .any(|warning| warning.contains("another actor")),
        "{:?}",
        w.patient().warnings()
    );
}

#[test]
fn compaction_folds_the_entries_into_the_audit_section() {
    let mut w = World::new();
    let mut open = w.gp.open_patient(&w.id.to_string(), t(10)).unwrap();
    for second in 10..13 {
        open.read(&Logged::read("show", &[Section::Summary]), t(second))
            .unwrap();
    }
    drop(open);
    sync(&w.gp, w.patient(), w.id, t(13));
    w.reopen_patient();
    let before = w.patient_mut().audit().unwrap();
    let mut record = w.patient_mut().load_record().unwrap();
    w.patient_mut().compact(&mut record, t(14)).unwrap();
    let blobs = w.audit_blobs(w.patient());
    assert_eq!(blobs.len(), 1);
    assert_eq!(blobs[0].header().kind, BlobKind::Compaction);
    assert_eq!(blobs[0].header().replaces.len(), 3);
    w.reopen_patient();
    let after = w.patient_mut().audit().unwrap();
    assert_eq!(after, before, "the same entries, signers included");
    assert_eq!(
        after.iter().filter(|e| e.kind == AuditKind::Read).count(),
        3
    );
    // The GP offering its sealed entries again changes nothing: the compaction stands for them.
    sync(&w.gp, w.patient(), w.id, t(15));
    w.reopen_patient();
    assert_eq!(w.audit_blobs(w.patient()).len(), 1);
}

#[test]
fn a_provider_writes_within_its_grant_only() {
    let mut w = World::new();
    let condition = json!({"resourceType": "Condition", "id": "asthma",
        "code": {"text": "Asthma"}});
    let held = |home: &Home| -> usize {
        Section::ALL
            .into_iter()
            .map(|s| home.vault.blobs(&w.id, s).unwrap().len())
            .sum()
    };

    let before = held(&w.pharmacy);
    let mut open = w.pharmacy.open_patient(&w.id.to_string(), t(10)).unwrap();
    let refused = open.add(&condition, "add condition", t(10)).unwrap_err();
    assert!(
        matches!(
            refused,
            HomeError::Provider(ProviderError::NotWritable {
                section: Section::Summary,
                ..
            })
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("nothing was saved"));
    drop(open);
    assert_eq!(held(&w.pharmacy), before, "nothing stored");

    let mut open = w.gp.open_patient(&w.id.to_string(), t(10)).unwrap();
    assert_eq!(
        open.add(&condition, "add condition", t(10)).unwrap(),
        PutOutcome::Added
    );
    let sensitive = json!({"resourceType": "Condition", "id": "private",
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}});
    assert!(matches!(
        open.add(&sensitive, "add condition", t(11)),
        Err(HomeError::Provider(ProviderError::NotWritable {
            section: Section::Sensitive,
            ..
        }))
    ));
    drop(open);
    sync(&w.gp, w.patient(), w.id, t(12));
    w.reopen_patient();
    let record = w.patient_mut().load_record().unwrap();
    let key: ResourceKey = "Condition/asthma".parse().unwrap();
    let Some(Current::One(version)) = record.current(&key).unwrap() else {
        panic!("the GP's condition reached the patient");
    };
    assert!(version.author_is_writer());
    assert_eq!(version.author.name, "Leeds GP");
    assert!(
        record
            .get(&"Condition/private".parse().unwrap())
            .unwrap()
            .is_none()
    );
    let audit = w.patient_mut().audit().unwrap();
    let writes: Vec<_> = audit
        .iter()
        .filter(|e| e.kind == AuditKind::Write)
        .collect();
    assert_eq!(
        writes.len(),
        1,
        "logged and written, shown once: {writes:#?}"
    );
    assert_eq!(writes[0].who.peer, Some(w.gp.peer_id()));
    assert!(
        writes[0].what.contains("Condition/asthma"),
        "{}",
        writes[0].what
    );
}

#[test]
fn reads_outside_the_grant_are_refused_and_not_logged() {
    let w = World::new();
    let mut open = w.pharmacy.open_patient(&w.id.to_string(), t(10)).unwrap();
    assert_eq!(open.readable(t(10)), vec![Section::Summary]);
    let refused = open
        .read(
            &Logged::read("export", &[Section::Summary, Section::Clinical]),
            t(10),
        )
        .unwrap_err();
    assert!(matches!(
        refused,
        HomeError::Provider(ProviderError::NotReadable {
            section: Section::Clinical,
            ..
        })
    ));
    assert!(w.audit_blobs(&w.pharmacy).is_empty());
    let record = open
        .read(&Logged::read("show", &[Section::Summary]), t(10))
        .unwrap();
    assert!(record.resources(Section::Clinical).unwrap().is_empty());
}

/// A store whose writes all fail, as a full disk would.
struct FullDisk<'a>(&'a dyn Store);

impl Store for FullDisk<'_> {
    fn commit(&self, _: Batch) -> Result<(), VaultError> {
        Err(VaultError::InUse(Path::new("full disk").to_path_buf()))
    }
    fn ledger_ops(&self, record: &RecordId) -> Result<Vec<Vec<u8>>, VaultError> {
        self.0.ledger_ops(record)
    }
    fn blobs(
        &self,
        record: &RecordId,
        section: Section,
    ) -> Result<Vec<(crate::keys::BlobId, Vec<u8>)>, VaultError> {
        self.0.blobs(record, section)
    }
    fn blob(
        &self,
        record: &RecordId,
        section: Section,
        id: &crate::keys::BlobId,
    ) -> Result<Option<Vec<u8>>, VaultError> {
        self.0.blob(record, section, id)
    }
    fn replaced_by(
        &self,
        record: &RecordId,
        section: Section,
        id: &crate::keys::BlobId,
    ) -> Result<Option<crate::keys::BlobId>, VaultError> {
        self.0.replaced_by(record, section, id)
    }
    fn replaced(
        &self,
        record: &RecordId,
        section: Section,
    ) -> Result<Vec<crate::keys::BlobId>, VaultError> {
        self.0.replaced(record, section)
    }
    #[allow(clippy::type_complexity)]
    fn held(
        &self,
        record: &RecordId,
    ) -> Result<Vec<(Section, crate::keys::BlobId, Vec<u8>)>, VaultError> {
        self.0.held(record)
    }
    fn records(&self) -> Result<Vec<RecordId>, VaultError> {
        self.0.records()
    }
    fn generations(&self) -> Result<std::collections::BTreeMap<RecordId, u64>, VaultError> {
        self.0.generations()
    }
    fn changed_since(&self, after: u64) -> Result<(u64, Vec<RecordId>), VaultError> {
        self.0.changed_since(after)
    }
}

#[test]
fn a_read_that_cannot_be_logged_returns_nothing() {
    let w = World::new();
    let summary = w.gp.vault.blobs(&w.id, Section::Summary).unwrap().len();
    let full = FullDisk(&w.gp.vault);
    let mut open = w.gp.open_patient(&w.id.to_string(), t(10)).unwrap();
    open.store = &full;
    let failed = open.read(&Logged::read("show", &[Section::Summary]), t(10));
    assert!(matches!(failed, Err(HomeError::Vault(_))), "{failed:?}");
    let condition = json!({"resourceType": "Condition", "id": "asthma"});
    assert!(open.add(&condition, "add condition", t(10)).is_err());
    drop(open);
    assert!(w.audit_blobs(&w.gp).is_empty());
    assert!(w.gp.vault.blobs(&w.id, Section::Summary).unwrap().len() == summary);
}

#[test]
fn patients_lists_what_each_record_grants_and_logs_the_names_it_shows() {
    let w = World::new();
    let listed = w.gp.patients(t(10)).unwrap();
    assert_eq!(listed.len(), 1);
    let shared = &listed[0];
    assert_eq!(shared.id, w.id);
    assert_eq!(
        shared.patient.as_ref().and_then(|p| p.name.as_deref()),
        Some("Ada Lovelace")
    );
    assert_eq!(shared.readable, vec![Section::Summary, Section::Clinical]);
    assert_eq!(shared.writable, vec![Section::Summary, Section::Clinical]);
    assert_eq!(shared.grants.len(), 1);
    assert!(shared.warnings.is_empty(), "{:?}", shared.warnings);
    assert_eq!(w.audit_blobs(&w.gp).len(), 1, "showing the name was logged");

    let relayed = w.relay.patients(t(10)).unwrap();
    assert_eq!(relayed.len(), 1);
    assert!(relayed[0].patient.is_none() && relayed[0].readable.is_empty());
    assert!(w.audit_blobs(&w.relay).is_empty());
    assert!(
        w.patient().patients(t(10)).unwrap().is_empty(),
        "not its own"
    );
}

#[track_caller]
fn error(home: &Home, query: &str, at: Timestamp) -> HomeError {
    match home.open_patient(query, at) {
        Ok(open) => panic!("{query} opened {open:?}"),
        Err(e) => e,
    }
}

#[test]
fn opening_names_what_is_wrong() {
    let mut w = World::new();
    assert!(matches!(
        error(&w.gp, "ffff", t(10)),
        HomeError::Provider(ProviderError::UnknownPatient(_))
    ));
    assert!(matches!(
        error(&w.gp, "", t(10)),
        HomeError::Provider(ProviderError::UnknownPatient(_))
    ));
    let own = w.id.to_string();
    assert!(matches!(
        error(w.patient(), &own, t(10)),
        HomeError::Provider(ProviderError::OwnRecord(_))
    ));
    // A second patient shares with the GP: a one-digit prefix may now match both.
    let dir = tempfile::tempdir().unwrap();
    let new = NewPatient {
        name: "Grace Hopper".into(),
        nhs_number: None,
        birth_date: None,
        device_label: None,
    };
    let (mut other, _) = Home::init_patient(dir.path(), &new, None, t(0)).unwrap();
    other
        .grant(
            &w.gp.party(),
            &[Section::Summary],
            Access::Read,
            Some(t(20)),
            None,
            t(1),
        )
        .unwrap();
    let other_id = other.record_id().unwrap();
    sync(&other, &w.gp, other_id, t(3));
    let common =
        w.id.to_string()
            .chars()
            .zip(other_id.to_string().chars())
            .take_while(|(a, b)| a == b)
            .count();
    let shared_prefix = &own[..common];
    if !shared_prefix.is_empty() {
        assert!(matches!(
            error(&w.gp, shared_prefix, t(10)),
            HomeError::Provider(ProviderError::AmbiguousPatient { .. })
        ));
    }
    let other_text = other_id.to_string();
    assert!(matches!(
        error(&w.gp, &other_text, t(10)),
        HomeError::Provider(ProviderError::Pending(_))
    ));
    w.gp.accept_patient(&other_text).unwrap();
    assert!(w.gp.open_patient(&other_text, t(10)).is_ok());
    assert!(matches!(
        error(&w.gp, &other_text, t(21)),
        HomeError::Provider(ProviderError::Expired { .. })
    ));
    // Sync carries the operations that withdrew it to the GP, and only those and what they
    // build on: not a grant made after them. The GP is then told when its access ended.
    w.patient_mut().revoke("Leeds GP", t(30)).unwrap();
    let later = Home::init_provider(&w.dirs[0].path().join("later"), "Later", None, None).unwrap();
    w.patient_mut()
        .grant(
            &later.party(),
            &[Section::Summary],
            Access::Read,
            None,
            None,
            t(31),
        )
        .unwrap();
    sync(w.patient(), &w.gp, w.id, t(32));
    assert!(matches!(
        error(&w.gp, &own, t(32)),
        HomeError::Provider(ProviderError::Withdrawn { .. })
    ));
    let listed = w.gp.patients(t(32)).unwrap();
    let ended = listed.iter().find(|r| r.id == w.id).unwrap().ended.unwrap();
    assert_eq!(ended.ended, t(30));
    let gp_ledger = Replica::open(&w.gp.vault, w.id, w.gp.peer_id(), &w.gp.keystore.age)
        .unwrap()
        .ledger()
        .clone();
    let patient_ledger = w.patient().ledger().unwrap();
    let missing: Vec<_> = patient_ledger
        .ops()
        .filter(|op| !gp_ledger.contains(&op.id()))
        .collect();
    assert!(!missing.is_empty());
    assert!(
        missing
            .iter()
            .all(|op| op.op().time_ms >= t(31).as_millisecond())
    );
    assert!(
        gp_ledger
            .state()
            .grants
            .iter()
            .all(|g| g.grantee.peer != later.peer_id())
    );
}

/// A patient home, "Patient N", that grants `to` read access to its summary.
fn sharing_patient(dir: &Path, n: usize, to: &Home) -> (Home, RecordId) {
    let new = NewPatient {
        name: format!("Patient {n}"),
        nhs_number: None,
        birth_date: None,
        device_label: Some(format!("phone {n}")),
    };
    let (mut patient, _) = Home::init_patient(dir, &new, None, t(0)).unwrap();
    patient
        .grant(
            &to.party(),
            &[Section::Summary],
            Access::Read,
            None,
            None,
            t(1),
        )
        .unwrap();
    let id = patient.record_id().unwrap();
    (patient, id)
}

#[test]
fn a_record_newly_shared_with_a_provider_waits_until_a_person_there_accepts_it() {
    let w = World::new();
    let dir = tempfile::tempdir().unwrap();
    let (patient, id) = sharing_patient(dir.path(), 1, &w.gp);
    sync(&patient, &w.gp, id, t(3));

    // Held, but not listed, not readable, and shown with who shared it.
    assert_eq!(w.gp.pending_records().unwrap(), vec![id]);
    assert!(w.gp.patients(t(10)).unwrap().iter().all(|r| r.id != id));
    assert!(matches!(
        w.gp.open_patient(&id.to_string(), t(10)),
        Err(HomeError::Provider(ProviderError::Pending(_)))
    ));
    let pending = w.gp.pending_patients(t(10)).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].patient.as_ref().and_then(|p| p.name.as_deref()),
        Some("Patient 1")
    );
    // The device's label is sealed to the owners: the provider sees that a device of the
    // patient's shared it, and when.
    assert_eq!(
        pending[0].shared_by,
        Some(("a device of the patient's (name sealed)".to_string(), t(1)))
    );

    let accepted = w.gp.accept_patient(&id.to_string()[..10]).unwrap();
    assert_eq!(accepted, id);
    assert!(w.gp.pending_records().unwrap().is_empty());
    assert!(w.gp.patients(t(10)).unwrap().iter().any(|r| r.id == id));
    assert!(w.gp.open_patient(&id.to_string(), t(10)).is_ok());
    // Accepting is a provider's, and of what waits, or by a whole id.
    assert!(matches!(
        w.gp.accept_patient("ffffffff"),
        Err(HomeError::Provider(ProviderError::UnknownPatient(_)))
    ));
    let dir = tempfile::tempdir().unwrap();
    let (told, told_id) = sharing_patient(dir.path(), 2, &w.gp);
    w.gp.accept_patient(&told_id.to_string()).unwrap();
    sync(&told, &w.gp, told_id, t(3));
    assert!(w.gp.open_patient(&told_id.to_string(), t(10)).is_ok());
    assert!(matches!(
        w.relay.accept_patient(&id.to_string()),
        Err(HomeError::Provider(ProviderError::NotAProvider))
    ));
}

#[test]
fn a_declined_record_is_deleted_and_not_taken_in_again_unless_accepted_after_all() {
    let w = World::new();
    let dir = tempfile::tempdir().unwrap();
    let (patient, id) = sharing_patient(dir.path(), 1, &w.gp);
    sync(&patient, &w.gp, id, t(3));
    assert_eq!(w.gp.decline_patient(&id.to_string()).unwrap(), id);
    assert!(!w.gp.vault.records().unwrap().contains(&id), "deleted");
    assert!(w.gp.vault.blobs(&id, Section::Summary).unwrap().is_empty());

    // The patient's node offers it again: the GP answers as a node that does not hold it.
    sync(&patient, &w.gp, id, t(4));
    assert!(
        !w.gp.vault.records().unwrap().contains(&id),
        "not taken in again"
    );
    assert!(w.gp.pending_records().unwrap().is_empty());

    // A mistake is undone by accepting it by its whole id: the next sync brings it.
    w.gp.accept_patient(&id.to_string()).unwrap();
    sync(&patient, &w.gp, id, t(5));
    assert!(w.gp.open_patient(&id.to_string(), t(10)).is_ok());
}

#[test]
fn strangers_cannot_make_a_provider_hold_more_than_its_waiting_room() {
    let w = World::new();
    let dirs: Vec<TempDir> = (0..=PENDING_RECORDS_MAX)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let mut ids = Vec::new();
    for (n, dir) in dirs.iter().enumerate() {
        let (patient, id) = sharing_patient(dir.path(), n, &w.gp);
        sync(&patient, &w.gp, id, t(3));
        ids.push(id);
    }
    let held = w.gp.vault.records().unwrap();
    let last = ids[PENDING_RECORDS_MAX];
    assert!(
        ids[..PENDING_RECORDS_MAX]
            .iter()
            .all(|id| held.contains(id))
    );
    assert!(!held.contains(&last), "the waiting room is full");
    assert_eq!(w.gp.pending_records().unwrap().len(), PENDING_RECORDS_MAX);
    // The records already accepted sync as before.
    assert!(w.gp.open_patient(&w.id.to_string(), t(10)).is_ok());

    // Declining one makes room for the next.
    w.gp.decline_patient(&ids[0].to_string()).unwrap();
    let patient = Home::open(dirs[PENDING_RECORDS_MAX].path()).unwrap();
    sync(&patient, &w.gp, last, t(4));
    assert!(w.gp.vault.records().unwrap().contains(&last));
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

/// Tried as a curious grantee and a curious relay would (issue 13): the patient shares the
/// sensitive section with a sexual health clinic, with a purpose. The pharmacy (granted
/// `summary` only) and the relay hold the whole ledger, but none of the clinic's name, ODS
/// code or purpose, nor the patient's device's label, anywhere in their files; the clinic
/// reads its own grant, and the patient's devices read everything, as before.
#[test]
fn a_grantee_and_a_relay_learn_no_other_grantees_name_ods_code_or_purpose() {
    let mut w = World::new();
    let clinic_dir = tempfile::tempdir().unwrap();
    let clinic = Home::init_provider(
        clinic_dir.path(),
        "Riverside Sexual Health Clinic",
        Some("Y12345".into()),
        None,
    )
    .unwrap();
    let purpose = "HIV and sexual health care";
    w.patient_mut()
        .grant(
            &clinic.party(),
            &[Section::Sensitive],
            Access::Read,
            None,
            Some(purpose.into()),
            t(4),
        )
        .unwrap();
    for node in [&w.pharmacy, &w.relay, &clinic] {
        sync(w.patient(), node, w.id, t(5));
    }
    let secrets = ["Riverside", "Y12345", purpose, "Leeds GP", "B86001"];
    for (who, dir) in [("pharmacy", 2), ("relay", 3)] {
        let files = files_under(w.dirs[dir].path());
        assert!(files.iter().any(|(p, _)| p.ends_with("vault.redb")));
        for (path, bytes) in &files {
            for secret in secrets {
                assert!(
                    !bytes
                        .windows(secret.len())
                        .any(|window| window == secret.as_bytes()),
                    "the {who}'s {} holds {secret:?}",
                    path.display()
                );
            }
        }
    }
    // What the pharmacy reads of the ledger: its own grant, and placeholders for the others.
    let me = w.pharmacy.peer_id();
    let replica = Replica::open(&w.pharmacy.vault, w.id, me, &w.pharmacy.keystore.age).unwrap();
    let state = replica.ledger().state();
    let own = state.grants_to(&me);
    assert_eq!(own[0].grantee.name, "Pharmacy");
    let clinic_grant = state.grants_to(&clinic.peer_id());
    assert_eq!(
        clinic_grant[0].grantee.name,
        "a party the patient shares with (name sealed)"
    );
    assert_eq!(clinic_grant[0].grantee.ods, None);
    assert_eq!(clinic_grant[0].purpose, None);
    // Access, sections and expiry stay readable: checking the ledger needs them.
    assert_eq!(clinic_grant[0].sections, vec![Section::Sensitive]);
    assert!(
        state
            .owners
            .values()
            .all(|device| device.name == "a device of the patient's (name sealed)")
    );
    // The clinic reads its own grant, purpose included.
    let replica =
        Replica::open(&clinic.vault, w.id, clinic.peer_id(), &clinic.keystore.age).unwrap();
    let own = replica.ledger().state().grants_to(&clinic.peer_id());
    assert_eq!(own[0].grantee.ods.as_deref(), Some("Y12345"));
    assert_eq!(own[0].purpose.as_deref(), Some(purpose));
    // The patient's device, opened again from its files, reads every name and purpose.
    w.reopen_patient();
    let state = w.patient().ledger().unwrap().state();
    let grant = state.grants_to(&clinic.peer_id());
    assert_eq!(grant[0].grantee.name, "Riverside Sexual Health Clinic");
    assert_eq!(grant[0].purpose.as_deref(), Some(purpose));
    assert!(
        state
            .owners
            .values()
            .all(|device| !device.name.contains("sealed"))
    );
    assert!(
        w.patient()
            .ledger()
            .unwrap()
            .ops()
            .filter(|op| matches!(op.op().body, crate::ledger::OpBody::Grant { .. }))
            .all(|op| op.is_sealed() && op.revealed())
    );
}

/// One patient per record (issue 14): the patient imports a hospital's file about them (no NHS
/// number, a name and birth date that match); its Patient is merged into the record's own, so
/// the GP's node shows the same person as the patient's device, NHS number included, and the
/// record holds one Patient.
#[test]
fn an_imported_patient_is_merged_and_every_node_shows_one_identity_with_the_nhs_number() {
    let dirs: Vec<TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let new = NewPatient {
        name: "Martha DeLarosa".into(),
        nhs_number: Some(NhsNumber::parse("9434765919").unwrap()),
        birth_date: Some("1972-05-01".parse().unwrap()),
        device_label: None,
    };
    let (mut patient, mut record) = Home::init_patient(dirs[0].path(), &new, None, t(0)).unwrap();
    let gp = Home::init_provider(dirs[1].path(), "Leeds GP", None, None).unwrap();
    patient
        .grant(
            &gp.party(),
            &[Section::Summary],
            Access::Read,
            None,
            None,
            t(1),
        )
        .unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/fhir/ips/Bundle-IPS-examples-Bundle-01.json");
    let bytes = std::fs::read(&path).unwrap();
    let (parsed, skipped) = crate::import::parse("ips.json", &bytes).unwrap();
    let author = patient.device().author();
    let stamp = Stamp {
        author: &author,
        time: t(2),
    };
    let report = crate::import::apply(&mut record, stamp, &parsed, skipped).unwrap();
    assert_eq!(report.merged.len(), 1);
    patient.save(&mut record, t(2)).unwrap();
    assert_eq!(
        record
            .resources_of_type(Section::Summary, "Patient")
            .unwrap()
            .len(),
        1
    );
    let id = patient.record_id().unwrap();
    sync(&patient, &gp, id, t(3));
    gp.accept_patient(&id.to_string()).unwrap();
    let listed = gp.patients(t(4)).unwrap();
    let header = listed[0].patient.as_ref().unwrap();
    assert_eq!(header.name.as_deref(), Some("Martha DeLarosa"));
    assert_eq!(header.nhs_number.as_deref(), Some("943 476 5919"));
    assert_eq!(header.gender.as_deref(), Some("female"));
    let today = t(4).to_zoned(jiff::tz::TimeZone::UTC).date();
    let own = crate::view::patient_header(&record, today).unwrap();
    assert_eq!(&own, header);
    // The IPS's entries are about the record's Patient: the allergy's patient points at it.
    let allergy = record
        .resources_of_type(Section::Summary, "AllergyIntolerance")
        .unwrap();
    let (own_key, _) = crate::identity::record_patient(&record).unwrap().unwrap();
    assert!(
        allergy
            .iter()
            .all(|a| a["patient"]["reference"] == own_key.to_string())
    );
}

#[test]
fn after_a_command_a_node_reads_again_only_the_records_it_changed() {
    let w = World::new();
    let dirs: Vec<TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut ids = vec![w.id];
    for (n, dir) in dirs.iter().enumerate() {
        let (patient, id) = sharing_patient(dir.path(), n, &w.gp);
        sync(&patient, &w.gp, id, t(3));
        w.gp.accept_patient(&id.to_string()).unwrap();
        ids.push(id);
    }
    let (vault, age) = w.gp.sync_parts();
    let mut engine = crate::sync::Engine::open(vault, w.gp.peer_id(), age).unwrap();
    assert_eq!(engine.replicas().len(), 4);
    assert_eq!(engine.refresh(vault, age).unwrap(), 0, "nothing changed");
    // A command reads one patient's record: its audit entry changes that record alone.
    let mut open = w.gp.open_patient(&ids[2].to_string(), t(10)).unwrap();
    open.read(&Logged::read("show", &[Section::Summary]), t(10))
        .unwrap();
    drop(open);
    assert_eq!(engine.refresh(vault, age).unwrap(), 1);
    // The replica read again holds the new entry; the others are as they were.
    let audit = |engine: &crate::sync::Engine, id: &RecordId| {
        engine.replicas()[id].blob_ids(Section::Audit).count()
    };
    let before = audit(&engine, &ids[2]);
    let mut open = w.gp.open_patient(&ids[2].to_string(), t(11)).unwrap();
    open.read(&Logged::read("show", &[Section::Summary]), t(11))
        .unwrap();
    drop(open);
    engine.refresh(vault, age).unwrap();
    assert_eq!(audit(&engine, &ids[2]), before + 1);
    // A record deleted from the store leaves the engine at the next refresh.
    let mut forget = Batch::new();
    forget.forget_record(ids[3]);
    vault.commit(forget).unwrap();
    engine.refresh(vault, age).unwrap();
    assert_eq!(engine.replicas().len(), 3);
}

#[test]
fn patients_are_paged_and_searched_and_only_the_names_shown_are_logged() {
    let w = World::new();
    let dirs: Vec<TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut ids = Vec::new();
    let mut patients = Vec::new();
    for (n, dir) in dirs.iter().enumerate() {
        let (patient, id) = sharing_patient(dir.path(), n, &w.gp);
        sync(&patient, &w.gp, id, t(3));
        w.gp.accept_patient(&id.to_string()).unwrap();
        ids.push(id);
        patients.push(patient);
    }
    let audit_count = |id: &RecordId| w.gp.vault.blobs(id, Section::Audit).unwrap().len();
    let page = |search: Option<&str>, page: usize| {
        let query = PatientQuery {
            search: search.map(str::to_string),
            page,
            per_page: 2,
        };
        w.gp.patients_page(t(10), &query).unwrap()
    };
    let names = |listed: &PatientPage| -> Vec<String> {
        listed
            .items
            .iter()
            .map(|s| s.patient.as_ref().and_then(|p| p.name.clone()).unwrap())
            .collect()
    };
    // Ordered by name; two a page; only the two shown are logged.
    let first = page(Some("patient"), 1);
    assert_eq!(first.total, 3);
    assert_eq!(names(&first), ["Patient 0", "Patient 1"]);
    assert_eq!(audit_count(&ids[0]), 1);
    assert_eq!(audit_count(&ids[1]), 1);
    assert_eq!(audit_count(&ids[2]), 0, "not shown, not logged");
    let second = page(Some("patient"), 2);
    assert_eq!(names(&second), ["Patient 2"]);
    assert_eq!(audit_count(&ids[2]), 1);
    // By NHS number, spaced or not, and by the start of a record id.
    assert_eq!(names(&page(Some("943 476 5919"), 1)), ["Ada Lovelace"]);
    assert_eq!(names(&page(Some("9434765919"), 1)), ["Ada Lovelace"]);
    let by_id = page(Some(&ids[1].to_string()[..10]), 1);
    assert_eq!(names(&by_id), ["Patient 1"]);
    // A patient renamed on their device is read again once their record changes here.
    let renamed = &mut patients[2];
    let mut record = renamed.load_record().unwrap();
    let (_, mut resource) = crate::identity::record_patient(&record).unwrap().unwrap();
    resource["name"] = json!([{"family": "Byron", "given": ["Ada"]}]);
    let author = renamed.device().author();
    let stamp = Stamp {
        author: &author,
        time: t(12),
    };
    record.put(stamp, &resource).unwrap();
    record.commit(stamp, "name");
    renamed.save(&mut record, t(12)).unwrap();
    sync(renamed, &w.gp, ids[2], t(13));
    assert_eq!(names(&page(Some("byron"), 1)), ["Ada Byron"]);
    assert_eq!(page(Some("Patient 2"), 1).total, 0);
    // The whole list still shows everyone.
    let all = w.gp.patients(t(14)).unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|s| s.patient.is_some()));
}

#[test]
fn decisions_kept_in_the_old_setting_move_to_the_table_once_and_still_hold() {
    let w = World::new();
    let dir = tempfile::tempdir().unwrap();
    let (patient, waiting) = sharing_patient(dir.path(), 1, &w.gp);
    sync(&patient, &w.gp, waiting, t(3));
    assert!(w.gp.is_pending(&waiting).unwrap());
    // As a node of the version before kept them: the sealed `patients` setting, no table rows
    // for these two (the accepted record, and one declined that is not held).
    let declined = RecordId([9; 16]);
    let mut batch = Batch::new();
    batch.local(
        "patients",
        &json!({"accepted": [w.id], "declined": [declined]}),
    );
    w.gp.vault.commit(batch).unwrap();
    let gp_dir = w.dirs[1].path().to_path_buf();
    let World { gp, .. } = w;
    drop(gp);
    let gp = Home::open(&gp_dir).unwrap();
    assert_eq!(
        gp.vault.decision(&declined).unwrap(),
        Some(crate::vault::Decision::Declined)
    );
    let intake = gp.intake().unwrap();
    assert!(intake.declined.contains(&declined));
    assert!(gp.is_pending(&waiting).unwrap(), "still waits");
    assert_eq!(gp.patients(t(10)).unwrap().len(), 1);
    // Moved once: the setting is emptied, and opening again changes nothing.
    drop(gp);
    let gp = Home::open(&gp_dir).unwrap();
    assert_eq!(gp.patients(t(11)).unwrap().len(), 1);
    assert_eq!(gp.pending_records().unwrap(), vec![waiting]);
}
