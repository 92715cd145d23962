//! Withdrawn access is final: each attack made the way a removed device or a revoked provider
//! would make it (its own stale home, or blobs crafted by hand, pushed through the sync sessions
//! the node runs), and what the patient and the practice then see.

use automerge::AutoCommit;
use jiff::Timestamp;
use serde_json::{Value, json};
use tempfile::TempDir;

use super::*;
use crate::{
    audit::Logged,
    blob::{Blob, BlobHeader, BlobKind},
    card::Card,
    consent,
    fhir::reference::ResourceKey,
    keys::BlobId,
    ledger::Access,
    nhs::NhsNumber,
    section::Section,
    vault::Batch,
};

fn t(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

fn sync(from: &Home, to: &Home, record: RecordId, now: Timestamp) {
    from.sync_in_process(to, record, now.as_millisecond())
        .unwrap();
}

fn key(text: &str) -> ResourceKey {
    text.parse().unwrap()
}

/// A patient's laptop (holding the root key) and phone, a GP with write access to `summary`
/// and `clinical`, and a pharmacy that reads `summary`. The laptop holds a penicillin allergy and
/// a blood pressure; everyone has synced.
struct World {
    dirs: Vec<TempDir>,
    laptop: Option<Home>,
    phone: Home,
    gp: Home,
    pharmacy: Home,
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
        let (mut laptop, mut record) =
            Home::init_patient(dirs[0].path(), &new, None, t(0)).unwrap();
        let joins = laptop.record_id().unwrap();
        let phone =
            Home::init_device(dirs[1].path(), "Ada Lovelace", "phone", joins, None).unwrap();
        let card = Card::parse(&phone.card(vec![], t(0)).unwrap()).unwrap();
        laptop.add_device(&card, t(1)).unwrap();
        let gp = Home::init_provider(
            dirs[2].path(),
            "Riverside Surgery",
            Some("Y12345".into()),
            None,
        )
        .unwrap();
        let pharmacy = Home::init_provider(dirs[3].path(), "High St Pharmacy", None, None).unwrap();
        laptop
            .grant(
                &gp.party(),
                &[Section::Summary, Section::Clinical],
                Access::Write,
                None,
                None,
                t(1),
            )
            .unwrap();
        laptop
            .grant(
                &pharmacy.party(),
                &[Section::Summary],
                Access::Read,
                None,
                None,
                t(1),
            )
            .unwrap();
        let author = laptop.device().author();
        let stamp = Stamp {
            author: &author,
            time: t(2),
        };
        record.put(stamp, &penicillin()).unwrap();
        record
            .put(
                stamp,
                &json!({"resourceType": "Observation", "id": "bp", "status": "final",
                    "code": {"text": "Blood pressure"}}),
            )
            .unwrap();
        record.commit(stamp, "two entries");
        laptop.save(&mut record, t(2)).unwrap();
        let id = laptop.record_id().unwrap();
        for provider in [&gp, &pharmacy] {
            sync(&laptop, provider, id, t(3));
            provider.accept_patient(&id.to_string()).unwrap();
        }
        for node in [&phone, &gp, &pharmacy] {
            sync(&laptop, node, id, t(3));
        }
        // The phone adopts the record that reached it when it is next opened.
        drop(phone);
        let phone = Home::open(dirs[1].path()).unwrap();
        World {
            dirs,
            laptop: Some(laptop),
            phone,
            gp,
            pharmacy,
            id,
        }
    }

    fn laptop(&self) -> &Home {
        self.laptop.as_ref().expect("open")
    }

    fn laptop_mut(&mut self) -> &mut Home {
        self.laptop.as_mut().expect("open")
    }

    /// The laptop's home opened again, to see what syncs stored meanwhile.
    fn reopen_laptop(&mut self) {
        self.laptop = None;
        self.laptop = Some(Home::open(self.dirs[0].path()).unwrap());
    }

    /// What the patient's laptop shows now.
    fn laptop_record(&mut self) -> Record {
        self.reopen_laptop();
        self.laptop_mut().load_record().unwrap()
    }
}

/// What a provider shows of the patient's `key` now (its read logged, as `phr --patient` does).
fn provider_shows(home: &Home, id: RecordId, section: Section, key_text: &str) -> Option<Value> {
    let mut open = home.open_patient(&id.to_string(), t(50)).unwrap();
    let record = open.read(&Logged::read("show", &[section]), t(50)).unwrap();
    assert!(record.conflicts().unwrap().is_empty());
    record.get(&key(key_text)).unwrap()
}

fn penicillin() -> Value {
    json!({"resourceType": "AllergyIntolerance", "id": "penicillin",
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "criticality": "high",
        "code": {"text": "Penicillin - anaphylaxis"}})
}

/// A blob by `home` sealed as it likes: its own key of the section under its own (stale) view
/// of the ledger, with the kind, plaintext and replaced ids an attacker chooses.
fn craft(
    home: &Home,
    id: RecordId,
    section: Section,
    kind: BlobKind,
    plaintext: &[u8],
    replaces: Vec<BlobId>,
    time: Timestamp,
) -> Blob {
    let replica = Replica::open(&home.vault, id, home.peer_id(), &home.keystore.age).unwrap();
    let ledger = replica.ledger();
    let (epoch, key) =
        consent::writing_key(ledger, replica.keyring(), section, t(3).as_millisecond()).unwrap();
    let header = BlobHeader {
        record: id,
        section,
        kind,
        epoch,
        key_id: key.id(),
        author: home.peer_id(),
        time_ms: time.as_millisecond(),
        ledger_heads: ledger.heads(),
        replaces,
        proofs: Vec::new(),
    };
    Blob::seal(header, key, plaintext, &home.keystore.device).unwrap()
}

/// Stores a crafted blob in an attacker's own vault, so its next sync pushes it.
fn plant(home: &Home, id: RecordId, blob: &Blob) {
    let mut batch = Batch::new();
    batch.blob(id, blob.header().section, blob);
    home.vault.commit(batch).unwrap();
}

/// The phone's crafted compaction: an empty document that claims to replace every clinical
/// blob it holds, planted in its vault. Returns it and what it claims to replace.
fn plant_wipe(w: &World) -> (Blob, Vec<BlobId>) {
    let clinical: Vec<BlobId> = w
        .phone
        .vault
        .blobs(&w.id, Section::Clinical)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(!clinical.is_empty());
    let empty = AutoCommit::new().save();
    let wipe = craft(
        &w.phone,
        w.id,
        Section::Clinical,
        BlobKind::Compaction,
        &empty,
        clinical.clone(),
        t(12),
    );
    plant(&w.phone, w.id, &wipe);
    (wipe, clinical)
}

#[test]
fn a_removed_device_cannot_wipe_a_section_with_a_compaction() {
    let mut w = World::new();
    w.laptop_mut().remove_device("phone", t(10)).unwrap();
    sync(w.laptop(), &w.gp, w.id, t(11));
    // The stolen phone pushes an empty document that claims to replace the live clinical blob.
    let (wipe, _) = plant_wipe(&w);
    sync(&w.phone, &w.gp, w.id, t(13));
    assert!(provider_shows(&w.gp, w.id, Section::Clinical, "Observation/bp").is_some());
    sync(&w.gp, w.laptop(), w.id, t(14));
    assert!(
        w.laptop_record()
            .get(&key("Observation/bp"))
            .unwrap()
            .is_some()
    );
    assert!(
        w.gp.vault
            .blob(&w.id, Section::Clinical, &wipe.id())
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_compaction_that_does_not_hold_what_it_replaces_deletes_nothing_even_from_an_owner() {
    // The GP has not heard of the removal yet, so the phone is still an owner to it: the
    // compaction is taken in, but the GP reads clinical and sees the compaction does not hold
    // the blood pressure, so it keeps that blob.
    let mut w = World::new();
    let (_, clinical) = plant_wipe(&w);
    sync(&w.phone, &w.gp, w.id, t(13));
    for id in &clinical {
        assert!(
            w.gp.vault
                .blob(&w.id, Section::Clinical, id)
                .unwrap()
                .is_some()
        );
    }
    assert!(provider_shows(&w.gp, w.id, Section::Clinical, "Observation/bp").is_some());
    // The patient removes the phone after all. Its compaction, taken in while it was an owner,
    // stays restricted: it deletes nothing, and only what its authors' proofs prove counts.
    w.laptop_mut().remove_device("phone", t(20)).unwrap();
    sync(w.laptop(), &w.gp, w.id, t(21));
    for id in &clinical {
        assert!(
            w.gp.vault
                .blob(&w.id, Section::Clinical, id)
                .unwrap()
                .is_some()
        );
    }
    assert!(provider_shows(&w.gp, w.id, Section::Clinical, "Observation/bp").is_some());
}

#[test]
fn a_removed_device_cannot_plant_an_entry_in_a_providers_name() {
    let mut w = World::new();
    w.laptop_mut().remove_device("phone", t(10)).unwrap();
    sync(w.laptop(), &w.gp, w.id, t(11));
    // The phone writes over the allergy as if the GP had resolved it.
    let mut record = w.phone.load_record().unwrap();
    let forged_author = w.gp.device().author();
    let stamp = Stamp {
        author: &forged_author,
        time: t(12),
    };
    let mut resolved = penicillin();
    resolved["clinicalStatus"] = json!({"coding": [{"code": "resolved"}]});
    resolved["code"] = json!({"text": "Penicillin allergy: RESOLVED, safe to prescribe"});
    record.put(stamp, &resolved).unwrap();
    record.commit(stamp, "resolved");
    w.phone.save(&mut record, t(12)).unwrap();
    w.phone.compact(&mut record, t(12)).unwrap();
    sync(&w.phone, &w.gp, w.id, t(13));
    sync(&w.phone, w.laptop(), w.id, t(13));
    let allergy = "AllergyIntolerance/penicillin";
    let at_gp = provider_shows(&w.gp, w.id, Section::Summary, allergy).unwrap();
    assert_eq!(at_gp["code"]["text"], "Penicillin - anaphylaxis");
    let laptop = w.laptop_record();
    let at_laptop = laptop.get(&key(allergy)).unwrap().unwrap();
    assert_eq!(at_laptop["code"]["text"], "Penicillin - anaphylaxis");
    assert!(laptop.conflicts().unwrap().is_empty());
    // The patient is shown what the phone tried, as the phone's.
    let held = w.laptop().held_entries(&laptop).unwrap();
    assert!(!held.is_empty());
    assert!(held.iter().all(|entry| entry.author == w.phone.peer_id()));
    assert!(held.iter().all(|entry| entry.author_name == "phone"));
}

#[test]
fn a_revoked_providers_write_is_held_for_the_patient_and_shown_nowhere() {
    let mut w = World::new();
    w.laptop_mut().revoke("Riverside Surgery", t(10)).unwrap();
    // The GP has not synced since, so its copy still says "read and write".
    let condition = json!({"resourceType": "Condition", "id": "gout",
        "clinicalStatus": {"coding": [{"code": "active"}]}, "code": {"text": "Gout"}});
    {
        let mut open = w.gp.open_patient(&w.id.to_string(), t(11)).unwrap();
        open.add(&condition, "add condition", t(11)).unwrap();
    }
    // The pharmacy takes the write in while it has not heard of the revocation, and drops it
    // once it has.
    sync(&w.gp, &w.pharmacy, w.id, t(12));
    assert!(provider_shows(&w.pharmacy, w.id, Section::Summary, "Condition/gout").is_some());
    sync(w.laptop(), &w.pharmacy, w.id, t(12));
    assert!(provider_shows(&w.pharmacy, w.id, Section::Summary, "Condition/gout").is_none());
    sync(&w.gp, w.laptop(), w.id, t(12));
    let laptop = w.laptop_record();
    assert!(laptop.get(&key("Condition/gout")).unwrap().is_none());
    let held = w.laptop().held_entries(&laptop).unwrap();
    let write = held
        .iter()
        .find(|entry| entry.section == Section::Summary)
        .expect("the GP's write is held");
    assert_eq!(write.author, w.gp.peer_id());
    assert_eq!(write.versions.len(), 1);
    assert_eq!(write.versions[0].0, "Condition/gout");
    // The patient accepts it: it enters the record as the GP's, and reaches the pharmacy.
    let id = write.id;
    w.laptop_mut().accept_held(&[id], t(14)).unwrap();
    let laptop = w.laptop_record();
    let current = laptop.current(&key("Condition/gout")).unwrap();
    let Some(crate::record::Current::One(version)) = current else {
        panic!("one version: {current:?}");
    };
    assert!(version.author_is_writer());
    assert_eq!(version.author.id, w.gp.peer_id().to_string());
    sync(w.laptop(), &w.pharmacy, w.id, t(15));
    assert!(provider_shows(&w.pharmacy, w.id, Section::Summary, "Condition/gout").is_some());
}

#[test]
fn a_discarded_held_entry_is_gone_and_is_not_taken_in_again() {
    let mut w = World::new();
    w.laptop_mut().revoke("Riverside Surgery", t(10)).unwrap();
    {
        let mut open = w.gp.open_patient(&w.id.to_string(), t(11)).unwrap();
        open.add(
            &json!({"resourceType": "Condition", "id": "gout"}),
            "add condition",
            t(11),
        )
        .unwrap();
    }
    sync(&w.gp, w.laptop(), w.id, t(12));
    w.reopen_laptop();
    let record = w.laptop_mut().load_record().unwrap();
    let ids: Vec<BlobId> = w
        .laptop()
        .held_entries(&record)
        .unwrap()
        .iter()
        .map(|entry| entry.id)
        .collect();
    assert!(!ids.is_empty());
    w.laptop_mut().discard_held(&ids).unwrap();
    w.reopen_laptop();
    let record = w.laptop_mut().load_record().unwrap();
    assert!(w.laptop().held_entries(&record).unwrap().is_empty());
    assert!(record.get(&key("Condition/gout")).unwrap().is_none());
}

#[test]
fn an_offline_edit_found_only_in_a_removed_devices_compaction_is_offered_and_accepted() {
    let mut w = World::new();
    // A tablet joins: a second owner device beside the laptop.
    let tablet_dir = tempfile::tempdir().unwrap();
    let tablet =
        Home::init_device(tablet_dir.path(), "Ada Lovelace", "tablet", w.id, None).unwrap();
    let card = Card::parse(&tablet.card(vec![], t(4)).unwrap()).unwrap();
    w.laptop_mut().add_device(&card, t(4)).unwrap();
    sync(w.laptop(), &tablet, w.id, t(5));
    sync(w.laptop(), &w.phone, w.id, t(5));
    drop(tablet);
    let mut tablet = Home::open(tablet_dir.path()).unwrap();
    tablet.load_record().unwrap();
    // The phone, offline, adds peanuts and compacts summary; only the tablet gets the
    // compaction, and the peanuts' own blob is folded into it.
    let peanuts = phone_writes_peanuts(&mut w, t(6));
    let mut on_phone = w.phone.load_record().unwrap();
    w.phone.compact(&mut on_phone, t(7)).unwrap();
    sync(&w.phone, &tablet, w.id, t(8));
    // The laptop, which never saw the peanuts, removes the phone; the tablet hears of it.
    w.laptop_mut().remove_device("phone", t(9)).unwrap();
    sync(w.laptop(), &tablet, w.id, t(10));
    let record = refreshed(&mut tablet);
    assert!(
        record
            .get(&key("AllergyIntolerance/peanuts"))
            .unwrap()
            .is_none(),
        "void until the patient accepts it"
    );
    // `phr held` offers it: by the phone, adding the peanuts and nothing else.
    let held = tablet.held_entries(&record).unwrap();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].author, w.phone.peer_id());
    let shown: Vec<&str> = held[0].versions.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(shown, ["AllergyIntolerance/peanuts"]);
    // Accepted, it shows on the tablet and, once synced, on the laptop, as the phone's.
    tablet.accept_held(&[held[0].id], t(11)).unwrap();
    let record = refreshed(&mut tablet);
    let version = only_version(&record, "AllergyIntolerance/peanuts");
    assert_eq!(version.resource, peanuts);
    assert_eq!(version.author.id, w.phone.peer_id().to_string());
    assert!(version.proven);
    assert!(tablet.held_entries(&record).unwrap().is_empty());
    sync(&tablet, w.laptop(), w.id, t(12));
    let laptop = w.laptop_record();
    let version = only_version(&laptop, "AllergyIntolerance/peanuts");
    assert_eq!(version.author.id, w.phone.peer_id().to_string());
    assert!(version.proven);
    assert!(
        laptop
            .get(&key("AllergyIntolerance/penicillin"))
            .unwrap()
            .is_some()
    );
}

#[test]
fn writes_made_before_a_revocation_stay_everywhere() {
    let mut w = World::new();
    {
        let mut open = w.gp.open_patient(&w.id.to_string(), t(5)).unwrap();
        open.add(
            &json!({"resourceType": "Condition", "id": "asthma"}),
            "add condition",
            t(5),
        )
        .unwrap();
    }
    sync(&w.gp, w.laptop(), w.id, t(6));
    w.reopen_laptop();
    w.laptop_mut().revoke("Riverside Surgery", t(10)).unwrap();
    // The close accepts what the laptop held of the GP; a node that had it keeps it.
    sync(w.laptop(), &w.pharmacy, w.id, t(11));
    assert!(provider_shows(&w.pharmacy, w.id, Section::Summary, "Condition/asthma").is_some());
    assert!(
        w.laptop_record()
            .get(&key("Condition/asthma"))
            .unwrap()
            .is_some()
    );
}

#[test]
fn an_expired_grantee_cannot_back_date_a_write() {
    let mut w = World::new();
    w.laptop_mut().revoke("Riverside Surgery", t(4)).unwrap();
    let gp = w.gp.party();
    w.laptop_mut()
        .grant(
            &gp,
            &[Section::Summary],
            Access::Write,
            Some(t(20)),
            None,
            t(5),
        )
        .unwrap();
    sync(w.laptop(), &w.gp, w.id, t(6));
    // After the expiry, the patient's next save closes the GP's writing.
    let mut record = w.laptop_mut().load_record().unwrap();
    let author = w.laptop().device().author();
    let stamp = Stamp {
        author: &author,
        time: t(30),
    };
    record
        .put(
            stamp,
            &json!({"resourceType": "Observation", "id": "weight", "status": "final"}),
        )
        .unwrap();
    record.commit(stamp, "weight");
    w.laptop_mut().save(&mut record, t(30)).unwrap();
    let closes = &w.laptop().ledger().unwrap().state().closes;
    assert!(closes.contains_key(&w.gp.peer_id()), "{closes:?}");
    // The GP writes at t(31) but claims t(10), when the grant was live.
    {
        let mut open = w.gp.open_patient(&w.id.to_string(), t(10)).unwrap();
        open.add(
            &json!({"resourceType": "Condition", "id": "backdated"}),
            "add condition",
            t(10),
        )
        .unwrap();
    }
    sync(&w.gp, w.laptop(), w.id, t(31));
    assert!(
        w.laptop_record()
            .get(&key("Condition/backdated"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn an_unreadable_entry_can_be_listed_and_removed_and_a_good_copy_comes_back_unless_refused() {
    let mut w = World::new();
    let (victim, bytes) = w.laptop().vault.blobs(&w.id, Section::Clinical).unwrap()[0].clone();
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    w.laptop()
        .vault
        .overwrite_blob_for_test(&w.id, Section::Clinical, &victim, &damaged)
        .unwrap();
    let record = w.laptop_record();
    assert!(record.get(&key("Observation/bp")).unwrap().is_none());
    let bad = w.laptop().unreadable();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].1, victim);
    assert!(w.laptop_mut().remove_unreadable("ffff", false).is_err());
    w.laptop_mut()
        .remove_unreadable(&victim.short(), false)
        .unwrap();
    // The GP's good copy comes back at the next sync.
    sync(&w.gp, w.laptop(), w.id, t(20));
    let record = w.laptop_record();
    assert!(record.get(&key("Observation/bp")).unwrap().is_some());
    assert!(w.laptop().unreadable().is_empty());
    // Damaged again, and refused for good this time: no sync brings it back.
    w.laptop()
        .vault
        .overwrite_blob_for_test(&w.id, Section::Clinical, &victim, &damaged)
        .unwrap();
    w.laptop_record();
    w.laptop_mut()
        .remove_unreadable(&victim.to_string(), true)
        .unwrap();
    sync(&w.gp, w.laptop(), w.id, t(21));
    sync(w.laptop(), &w.gp, w.id, t(22));
    let record = w.laptop_record();
    assert!(record.get(&key("Observation/bp")).unwrap().is_none());
    assert!(w.laptop().unreadable().is_empty());
    assert!(
        w.laptop().warnings().is_empty(),
        "{:?}",
        w.laptop().warnings()
    );
}

/// The phone writes a peanut allergy in summary and saves it; returns the resource.
fn phone_writes_peanuts(w: &mut World, time: Timestamp) -> Value {
    let mut on_phone = w.phone.load_record().unwrap();
    let author = w.phone.device().author();
    let stamp = Stamp {
        author: &author,
        time,
    };
    let peanuts = json!({"resourceType": "AllergyIntolerance", "id": "peanuts",
        "clinicalStatus": {"coding": [{"code": "active"}]}, "code": {"text": "Peanuts"}});
    on_phone.put(stamp, &peanuts).unwrap();
    on_phone.commit(stamp, "peanuts");
    w.phone.save(&mut on_phone, time).unwrap();
    peanuts
}

/// The GP's condition, written on its node and synced to the laptop.
fn gp_writes_gout(w: &World, time: Timestamp) {
    let condition = json!({"resourceType": "Condition", "id": "gout",
        "clinicalStatus": {"coding": [{"code": "active"}]}, "code": {"text": "Gout"}});
    let mut open = w.gp.open_patient(&w.id.to_string(), time).unwrap();
    open.add(&condition, "add condition", time).unwrap();
}

fn only_version(record: &Record, key_text: &str) -> crate::record::Version {
    match record.current(&key(key_text)).unwrap() {
        Some(crate::record::Current::One(version)) => version,
        other => panic!("one version of {key_text}: {other:?}"),
    }
}

#[test]
fn a_providers_version_stays_proven_by_its_own_signature_after_the_patient_compacts() {
    let mut w = World::new();
    gp_writes_gout(&w, t(10));
    sync(&w.gp, w.laptop(), w.id, t(11));
    let mut record = w.laptop_record();
    assert!(only_version(&record, "Condition/gout").proven);
    w.laptop_mut().compact(&mut record, t(12)).unwrap();
    // The GP's changes blob is gone from the laptop: the compaction stands for it, and carries
    // the GP's own signature over them.
    let summary = w.laptop().vault.blobs(&w.id, Section::Summary).unwrap();
    assert_eq!(summary.len(), 1, "one compaction");
    let compaction = Blob::decode(summary[0].1.clone()).unwrap();
    assert_eq!(compaction.header().kind, BlobKind::Compaction);
    assert!(
        compaction
            .header()
            .proofs
            .iter()
            .any(|proof| proof.signer == w.gp.peer_id())
    );
    let record = w.laptop_record();
    let gout = only_version(&record, "Condition/gout");
    assert_eq!(gout.author.id, w.gp.peer_id().to_string());
    assert!(
        gout.proven,
        "proven by the GP's signature, not the laptop's"
    );
    assert!(only_version(&record, "AllergyIntolerance/penicillin").proven);
    // Compacted again, by the other owner device, after it took the first compaction in.
    sync(w.laptop(), &w.phone, w.id, t(13));
    let mut on_phone = w.phone.load_record().unwrap();
    assert!(only_version(&on_phone, "Condition/gout").proven);
    w.phone.compact(&mut on_phone, t(14)).unwrap();
    let on_phone = w.phone.load_record().unwrap();
    assert!(only_version(&on_phone, "Condition/gout").proven);
    // The pharmacy, which reads summary, sees the same.
    sync(&w.phone, &w.pharmacy, w.id, t(15));
    let mut open = w.pharmacy.open_patient(&w.id.to_string(), t(16)).unwrap();
    let seen = open
        .read(&Logged::read("show", &[Section::Summary]), t(16))
        .unwrap();
    assert!(only_version(seen, "Condition/gout").proven);
}

/// An actor of `peer`'s, as its device writes.
fn actor_of(peer: &PeerId) -> automerge::ActorId {
    let mut bytes = peer.public_key()[..crate::changes::ACTOR_KEY_BYTES].to_vec();
    bytes.extend_from_slice(&[0xee; 8]);
    automerge::ActorId::from(bytes)
}

#[test]
fn an_entry_planted_in_a_providers_name_inside_a_compaction_is_flagged_everywhere() {
    let mut w = World::new();
    gp_writes_gout(&w, t(10));
    sync(&w.gp, w.laptop(), w.id, t(11));
    let mut record = w.laptop_record();
    // The laptop (an owner, say a compromised one) writes, as the GP's actor, an allergy the GP
    // never wrote, and compacts: the compaction's signature is the laptop's own.
    let own = w.laptop().device.actor();
    record
        .doc_for_provenance(Section::Summary)
        .set_actor(actor_of(&w.gp.peer_id()));
    let gp_author = crate::record::Author {
        id: w.gp.peer_id().to_string(),
        name: "Riverside Surgery".into(),
    };
    let stamp = Stamp {
        author: &gp_author,
        time: t(12),
    };
    let resolved = json!({"resourceType": "AllergyIntolerance", "id": "penicillin",
        "clinicalStatus": {"coding": [{"code": "resolved"}]},
        "code": {"text": "Penicillin allergy: RESOLVED, safe to prescribe"}});
    record.put(stamp, &resolved).unwrap();
    record.commit(stamp, "resolved");
    record.doc_for_provenance(Section::Summary).set_actor(own);
    w.laptop_mut().compact(&mut record, t(12)).unwrap();
    let record = w.laptop_record();
    let planted = only_version(&record, "AllergyIntolerance/penicillin");
    assert_eq!(planted.author.id, w.gp.peer_id().to_string());
    assert!(
        planted.author_is_writer(),
        "the actor is the GP's, as the name says"
    );
    assert!(!planted.proven, "but no signature of the GP's proves it");
    let history = record
        .history(&key("AllergyIntolerance/penicillin"))
        .unwrap();
    assert!(
        history[0].proven,
        "the patient's first version is still proven"
    );
    // The GP's real entry, in the same compaction, is proven.
    assert!(only_version(&record, "Condition/gout").proven);
    // The GP takes the compaction in (the laptop is a current owner) and flags it too.
    sync(w.laptop(), &w.gp, w.id, t(13));
    let mut open = w.gp.open_patient(&w.id.to_string(), t(14)).unwrap();
    let seen = open
        .read(&Logged::read("show", &[Section::Summary]), t(14))
        .unwrap();
    assert!(!only_version(seen, "AllergyIntolerance/penicillin").proven);
    assert!(only_version(seen, "Condition/gout").proven);
}

#[test]
fn a_grantee_that_changes_the_patients_version_in_place_is_flagged() {
    let mut w = World::new();
    // The GP's node rewrites the resource inside the patient's own version object, in a blob
    // it signs: every change in it is the GP's, so the blob is accepted.
    let mut replica = Replica::open(&w.gp.vault, w.id, w.gp.peer_id(), &w.gp.keystore.age).unwrap();
    let meta = RecordMeta {
        id: w.id.to_string(),
        subject: None,
        nhs_number: None,
    };
    let (mut record, _) = replica
        .materialise(
            &w.gp.vault,
            meta,
            &actor_of(&w.gp.peer_id()),
            &w.gp.keystore.age,
        )
        .unwrap();
    {
        use automerge::{ReadDoc, transaction::Transactable};
        let doc = record.doc_for_provenance(Section::Summary);
        let (_, version) = doc
            .get(automerge::ROOT, "AllergyIntolerance/penicillin")
            .unwrap()
            .unwrap();
        let forged = json!({"resourceType": "AllergyIntolerance", "id": "penicillin",
            "clinicalStatus": {"coding": [{"code": "resolved"}]},
            "code": {"text": "Penicillin - tolerated"}});
        doc.put(&version, "resource", forged.to_string()).unwrap();
        doc.commit();
    }
    replica
        .save(
            &w.gp.vault,
            &w.gp.keystore.device,
            &mut record,
            t(10).as_millisecond(),
        )
        .unwrap();
    sync(&w.gp, w.laptop(), w.id, t(11));
    let record = w.laptop_record();
    let version = only_version(&record, "AllergyIntolerance/penicillin");
    assert!(version.resource.to_string().contains("tolerated"));
    assert_eq!(version.author.id, w.laptop().peer_id().to_string());
    assert!(
        !version.proven,
        "the patient's name is on a resource the GP wrote"
    );
}

#[test]
fn a_blob_whose_authorship_proof_does_not_match_its_changes_is_unreadable() {
    let mut w = World::new();
    gp_writes_gout(&w, t(10));
    // The GP seals the same changes again under a proof of a head they do not have: a proof
    // that, carried into a compaction, would vouch for changes it never made.
    let (_, bytes) = w
        .gp
        .vault
        .blobs(&w.id, Section::Summary)
        .unwrap()
        .into_iter()
        .find(|(_, bytes)| Blob::decode(bytes.clone()).unwrap().header().author == w.gp.peer_id())
        .expect("the GP's blob");
    let honest = Blob::decode(bytes).unwrap();
    let replica = Replica::open(&w.gp.vault, w.id, w.gp.peer_id(), &w.gp.keystore.age).unwrap();
    let key = replica.keyring().get(&honest.header().key_id).unwrap();
    let plaintext = honest.open(key).unwrap();
    let mut header = honest.header().clone();
    header.proofs = crate::blob::AuthorshipProof::sign(
        w.id,
        Section::Summary,
        vec![automerge::ChangeHash([1; 32])],
        &w.gp.keystore.device,
    )
    .into_iter()
    .collect();
    header.time_ms += 1;
    let forged = Blob::seal(header, key, &plaintext, &w.gp.keystore.device).unwrap();
    plant(&w.gp, w.id, &forged);
    sync(&w.gp, w.laptop(), w.id, t(11));
    let record = w.laptop_record();
    assert!(
        only_version(&record, "Condition/gout").proven,
        "the honest copy loads"
    );
    let unreadable = w.laptop().unreadable();
    assert!(
        unreadable
            .iter()
            .any(|(_, id, why)| *id == forged.id() && why.contains("authorship proof")),
        "{unreadable:?}"
    );
}

/// A home's record as its vault holds it now (syncs in process write to the vault only).
fn refreshed(home: &mut Home) -> Record {
    let id = home.record_id().unwrap();
    let replica = Replica::open(&home.vault, id, home.peer_id(), &home.keystore.age).unwrap();
    home.held.as_mut().unwrap().replica = replica;
    home.load_record().unwrap()
}

/// The laptop revokes the GP, which has not heard of it and writes gout; the phone, which has
/// not heard either, takes the write in from the GP.
fn gp_writes_after_its_revocation_and_the_phone_takes_it(w: &mut World) {
    w.laptop_mut().revoke("Riverside Surgery", t(10)).unwrap();
    gp_writes_gout(w, t(11));
    sync(&w.gp, &w.phone, w.id, t(12));
    let on_phone = w.phone.load_record().unwrap();
    assert!(on_phone.get(&key("Condition/gout")).unwrap().is_some());
}

#[test]
fn a_void_write_folded_into_an_honest_owners_compaction_is_shown_nowhere() {
    let mut w = World::new();
    gp_writes_after_its_revocation_and_the_phone_takes_it(&mut w);
    // The phone compacts summary, the GP's write folded in, before it hears of the revocation.
    let mut on_phone = w.phone.load_record().unwrap();
    w.phone.compact(&mut on_phone, t(13)).unwrap();
    sync(&w.phone, w.laptop(), w.id, t(14));
    let laptop = w.laptop_record();
    assert!(
        laptop.get(&key("Condition/gout")).unwrap().is_none(),
        "the laptop pinned what it accepted of the GP: gout is not of it"
    );
    assert!(
        laptop
            .get(&key("AllergyIntolerance/penicillin"))
            .unwrap()
            .is_some()
    );
    // The phone, once it has the laptop's close, shows it no more either, and neither does the
    // pharmacy that takes the phone's compaction in.
    sync(w.laptop(), &w.phone, w.id, t(15));
    let on_phone = refreshed(&mut w.phone);
    assert!(on_phone.get(&key("Condition/gout")).unwrap().is_none());
    sync(&w.phone, &w.pharmacy, w.id, t(16));
    assert!(provider_shows(&w.pharmacy, w.id, Section::Summary, "Condition/gout").is_none());
    assert!(
        provider_shows(
            &w.pharmacy,
            w.id,
            Section::Summary,
            "AllergyIntolerance/penicillin"
        )
        .is_some()
    );
}

#[test]
fn an_owners_write_built_on_a_void_change_is_written_again_and_reaches_every_device() {
    let mut w = World::new();
    gp_writes_after_its_revocation_and_the_phone_takes_it(&mut w);
    // The phone writes in summary: its change depends on the GP's.
    let peanuts = phone_writes_peanuts(&mut w, t(13));
    // The laptop holds the GP's write for the patient, so the phone's peanuts, built on it,
    // cannot show there yet; the GP's gout shows nowhere.
    sync(&w.phone, w.laptop(), w.id, t(14));
    let laptop = w.laptop_record();
    assert!(laptop.get(&key("Condition/gout")).unwrap().is_none());
    // The phone hears of the revocation: it holds the GP's write, and writes its peanuts again
    // without it when it next loads the record (as every phr command does).
    sync(w.laptop(), &w.phone, w.id, t(15));
    let mut on_phone = refreshed(&mut w.phone);
    assert!(on_phone.get(&key("Condition/gout")).unwrap().is_none());
    assert_eq!(
        on_phone.get(&key("AllergyIntolerance/peanuts")).unwrap(),
        Some(peanuts.clone())
    );
    assert!(on_phone.has_unsaved(), "written again");
    w.phone.save(&mut on_phone, t(16)).unwrap();
    sync(&w.phone, w.laptop(), w.id, t(17));
    let laptop = w.laptop_record();
    assert!(laptop.get(&key("Condition/gout")).unwrap().is_none());
    let version = only_version(&laptop, "AllergyIntolerance/peanuts");
    assert_eq!(version.resource, peanuts);
    assert_eq!(version.author.id, w.phone.peer_id().to_string());
    assert!(version.proven);
    // The GP's write is still the patient's to decide.
    let held = w.laptop().held_entries(&laptop).unwrap();
    assert!(held.iter().any(|entry| entry.author == w.gp.peer_id()));
}

#[test]
fn an_owners_versions_built_on_a_void_change_are_all_written_again_in_order() {
    let mut w = World::new();
    gp_writes_after_its_revocation_and_the_phone_takes_it(&mut w);
    // The phone writes peanuts on the GP's void change, then corrects it: two versions, the
    // second superseding the first, both built on the void change.
    let first = phone_writes_peanuts(&mut w, t(13));
    let mut second = first.clone();
    second["criticality"] = json!("high");
    {
        let mut on_phone = w.phone.load_record().unwrap();
        let author = w.phone.device().author();
        let stamp = Stamp {
            author: &author,
            time: t(14),
        };
        on_phone.put(stamp, &second).unwrap();
        on_phone.commit(stamp, "peanuts, high");
        w.phone.save(&mut on_phone, t(14)).unwrap();
    }
    // The phone hears of the revocation and writes both again without the GP's change.
    sync(w.laptop(), &w.phone, w.id, t(15));
    let mut on_phone = refreshed(&mut w.phone);
    w.phone.save(&mut on_phone, t(16)).unwrap();
    sync(&w.phone, w.laptop(), w.id, t(17));
    for record in [refreshed(&mut w.phone), w.laptop_record()] {
        assert!(record.get(&key("Condition/gout")).unwrap().is_none());
        let current = only_version(&record, "AllergyIntolerance/peanuts");
        assert_eq!(
            current.resource, second,
            "the correction is current, not in conflict"
        );
        let history = record.history(&key("AllergyIntolerance/peanuts")).unwrap();
        let shown: Vec<&Value> = history.iter().map(|v| &v.resource).collect();
        assert_eq!(
            shown,
            [&first, &second],
            "the first version stays in the history"
        );
        assert!(
            history
                .iter()
                .all(|v| v.proven && v.author.id == w.phone.peer_id().to_string())
        );
    }
    // Loading again writes nothing more.
    let mut again = refreshed(&mut w.phone);
    assert!(!again.has_unsaved());
}

#[test]
fn an_owners_version_that_a_withdrawn_partys_write_superseded_is_written_again_and_current() {
    let mut w = World::new();
    gp_writes_after_its_revocation_and_the_phone_takes_it(&mut w);
    // The phone, unaware too, corrects the GP's gout: its version is built on a void change.
    let mut on_phone = w.phone.load_record().unwrap();
    let author = w.phone.device().author();
    let stamp = Stamp {
        author: &author,
        time: t(13),
    };
    let mild = json!({"resourceType": "Condition", "id": "gout",
        "clinicalStatus": {"coding": [{"code": "active"}]}, "code": {"text": "Gout, mild"}});
    on_phone.put(stamp, &mild).unwrap();
    on_phone.commit(stamp, "gout, mild");
    w.phone.save(&mut on_phone, t(13)).unwrap();
    // The GP, still unaware, takes the phone's version in and writes over it (void as well).
    sync(&w.phone, &w.gp, w.id, t(14));
    let over = json!({"resourceType": "Condition", "id": "gout",
        "clinicalStatus": {"coding": [{"code": "resolved"}]}, "code": {"text": "Gout"}});
    {
        let mut open = w.gp.open_patient(&w.id.to_string(), t(15)).unwrap();
        open.add(&over, "resolve", t(15)).unwrap();
    }
    sync(&w.gp, &w.phone, w.id, t(16));
    // The phone hears of the revocation: the GP's writes go, and the phone's own version,
    // which only a void write had superseded, is the current one again, written again.
    sync(w.laptop(), &w.phone, w.id, t(17));
    let mut on_phone = refreshed(&mut w.phone);
    w.phone.save(&mut on_phone, t(18)).unwrap();
    sync(&w.phone, w.laptop(), w.id, t(19));
    for record in [refreshed(&mut w.phone), w.laptop_record()] {
        let current = only_version(&record, "Condition/gout");
        assert_eq!(current.resource, mild);
        assert_eq!(current.author.id, w.phone.peer_id().to_string());
        let history = record.history(&key("Condition/gout")).unwrap();
        assert!(
            history.iter().all(|v| v.resource != over),
            "the void write shows nowhere"
        );
    }
}

#[test]
fn a_compaction_that_carries_a_change_built_on_a_void_one_still_replaces_what_it_holds() {
    let mut w = World::new();
    gp_writes_after_its_revocation_and_the_phone_takes_it(&mut w);
    // The phone writes in summary, on top of the GP's write, and hears of the revocation from
    // the pharmacy: the GP's write is held on the phone since, and never reaches the laptop.
    phone_writes_peanuts(&mut w, t(13));
    sync(w.laptop(), &w.pharmacy, w.id, t(14));
    sync(&w.pharmacy, &w.phone, w.id, t(15));
    sync(&w.phone, w.laptop(), w.id, t(16));
    // The laptop holds the phone's change but not the one it depends on: Automerge keeps it
    // waiting, and the laptop's compaction of summary saves it beside the document.
    let mut laptop = w.laptop_record();
    assert!(
        laptop
            .get(&key("AllergyIntolerance/peanuts"))
            .unwrap()
            .is_none()
    );
    w.laptop_mut().compact(&mut laptop, t(17)).unwrap();
    let compaction = w
        .laptop()
        .vault
        .blobs(&w.id, Section::Summary)
        .unwrap()
        .into_iter()
        .map(|(_, bytes)| Blob::decode(bytes).unwrap())
        .find(|blob| blob.header().kind == BlobKind::Compaction)
        .unwrap();
    let replica = Replica::open(
        &w.laptop().vault,
        w.id,
        w.laptop().peer_id(),
        &w.laptop().keystore.age,
    )
    .unwrap();
    let plain = compaction
        .open(replica.keyring().get(&compaction.header().key_id).unwrap())
        .unwrap();
    let mut document = crate::changes::load_document(&plain).unwrap();
    assert!(
        !document.get_missing_deps(&[]).is_empty(),
        "a change waits in it"
    );
    let replaced = compaction.header().replaces.clone();
    assert!(!replaced.is_empty());
    // It holds every change of the blobs it replaces: the pharmacy and the phone, which read
    // summary, check that and delete them, whatever waits in it.
    for node in [&w.pharmacy, &w.phone] {
        sync(w.laptop(), node, w.id, t(18));
        for old in &replaced {
            assert!(
                node.vault
                    .blob(&w.id, Section::Summary, old)
                    .unwrap()
                    .is_none(),
                "{} still holds {}",
                node.peer_id(),
                old.short()
            );
        }
    }
    assert!(
        provider_shows(
            &w.pharmacy,
            w.id,
            Section::Summary,
            "AllergyIntolerance/penicillin"
        )
        .is_some()
    );
}

#[test]
fn a_compaction_by_a_device_removed_later_keeps_what_everyone_else_wrote() {
    let mut w = World::new();
    gp_writes_gout(&w, t(10));
    sync(&w.gp, &w.phone, w.id, t(11));
    // The phone, an owner still, compacts summary; the laptop takes the compaction in and,
    // having checked that it holds them, deletes the blobs it replaces: its own and the GP's.
    let mut on_phone = refreshed(&mut w.phone);
    w.phone.compact(&mut on_phone, t(12)).unwrap();
    sync(&w.phone, w.laptop(), w.id, t(13));
    sync(&w.phone, &w.pharmacy, w.id, t(13));
    for node in [w.laptop(), &w.pharmacy] {
        let summary = node.vault.blobs(&w.id, Section::Summary).unwrap();
        assert_eq!(summary.len(), 1, "only the phone's compaction");
    }
    // Then the patient removes the phone. Its compaction deletes nothing more and gives
    // nothing back, but what the laptop and the GP wrote in it still shows, proven.
    w.laptop_mut().remove_device("phone", t(14)).unwrap();
    let record = w.laptop_record();
    for key_text in ["AllergyIntolerance/penicillin", "Condition/gout"] {
        let version = only_version(&record, key_text);
        assert!(version.proven, "{key_text}");
    }
    // And so at the pharmacy, which hears of the removal from the laptop and has no other
    // copy of what the compaction replaced.
    sync(w.laptop(), &w.pharmacy, w.id, t(15));
    for key_text in ["AllergyIntolerance/penicillin", "Condition/gout"] {
        assert!(
            provider_shows(&w.pharmacy, w.id, Section::Summary, key_text).is_some(),
            "{key_text}"
        );
    }
}

#[test]
fn a_compaction_bomb_by_a_device_removed_later_is_refused_before_automerge_inflates_it() {
    let mut w = World::new();
    // The phone, an owner still, pushes a compaction of clinical that claims to replace every
    // clinical blob: a document of one note of 65 MiB of one letter, which Automerge's save
    // compresses to well under a megabyte.
    let clinical: Vec<BlobId> = w
        .laptop()
        .vault
        .blobs(&w.id, Section::Clinical)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut doc = AutoCommit::new().with_actor(actor_of(&w.phone.peer_id()));
    let note = "a".repeat(crate::changes::DOCUMENT_INFLATED_BYTES_MAX + 1024 * 1024);
    automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "note", note).unwrap();
    doc.commit();
    let bomb_document = doc.save();
    assert!(bomb_document.len() < 1024 * 1024);
    let bomb = craft(
        &w.phone,
        w.id,
        Section::Clinical,
        BlobKind::Compaction,
        &bomb_document,
        clinical,
        t(12),
    );
    plant(&w.phone, w.id, &bomb);
    sync(&w.phone, w.laptop(), w.id, t(13));
    w.laptop_mut().remove_device("phone", t(14)).unwrap();
    // The laptop kept what the bomb claimed to replace, shows the record as before, and lists
    // the bomb as unreadable, saying why; the patient removes it.
    let record = w.laptop_record();
    for key_text in ["AllergyIntolerance/penicillin", "Observation/bp"] {
        assert!(record.get(&key(key_text)).unwrap().is_some(), "{key_text}");
    }
    let bad = w.laptop().unreadable();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].1, bomb.id());
    assert!(
        bad[0].2.contains("inflates to more than 64 MiB"),
        "{}",
        bad[0].2
    );
    w.laptop_mut()
        .remove_unreadable(&bomb.id().short(), true)
        .unwrap();
    let record = w.laptop_record();
    assert!(record.get(&key("Observation/bp")).unwrap().is_some());
    assert!(w.laptop().unreadable().is_empty());
}

#[test]
fn a_removed_device_is_told_over_sync_and_what_it_writes_goes_nowhere() {
    let mut w = World::new();
    w.laptop_mut().remove_device("phone", t(10)).unwrap();
    // Written after the removal: not sent to the phone.
    let gp = w.gp.party();
    w.laptop_mut()
        .grant(&gp, &[Section::Journal], Access::Read, None, None, t(11))
        .unwrap();
    sync(w.laptop(), &w.phone, w.id, t(12));
    let record = refreshed(&mut w.phone);
    assert!(
        record.get(&key("Observation/bp")).unwrap().is_some(),
        "its copy stays"
    );
    let told = w.phone.warnings().join("\n");
    assert!(
        told.contains("this device was removed from the record on"),
        "{told}"
    );
    let phone_ledger = w.phone.held.as_ref().unwrap().replica.ledger().clone();
    let state = phone_ledger.state();
    assert!(state.removed_devices.contains(&w.phone.peer_id()));
    assert!(
        !state
            .grants
            .iter()
            .any(|g| g.sections.contains(&Section::Journal))
    );
}

#[test]
fn a_providers_write_built_on_a_removed_devices_change_it_dropped_is_written_again() {
    let mut w = World::new();
    // The phone writes peanuts and syncs with the GP only; the GP writes gout on top of it.
    phone_writes_peanuts(&mut w, t(10));
    sync(&w.phone, &w.gp, w.id, t(11));
    gp_writes_gout(&w, t(12));
    // The laptop, which saw neither, removes the phone: its peanuts are void. The GP hears of
    // it and drops the phone's blob, so its gout waits for a change it will never hold again.
    w.laptop_mut().remove_device("phone", t(13)).unwrap();
    sync(&w.gp, w.laptop(), w.id, t(14));
    sync(w.laptop(), &w.gp, w.id, t(15));
    // Opening the record, the GP writes its gout again, without the void change.
    let mut replica = Replica::open(&w.gp.vault, w.id, w.gp.peer_id(), &w.gp.keystore.age).unwrap();
    let meta = RecordMeta {
        id: w.id.to_string(),
        subject: None,
        nhs_number: None,
    };
    let (mut on_gp, _) = replica
        .materialise(
            &w.gp.vault,
            meta,
            &w.gp.device().actor(),
            &w.gp.keystore.age,
        )
        .unwrap();
    assert!(
        on_gp
            .get(&key("AllergyIntolerance/peanuts"))
            .unwrap()
            .is_none()
    );
    let gout = on_gp.get(&key("Condition/gout")).unwrap();
    assert_eq!(
        gout.as_ref().map(|g| g["code"]["text"].clone()),
        Some(json!("Gout"))
    );
    assert!(on_gp.has_unsaved(), "written again");
    replica
        .save(
            &w.gp.vault,
            &w.gp.keystore.device,
            &mut on_gp,
            t(16).as_millisecond(),
        )
        .unwrap();
    // It reaches the laptop, proven by the GP's signature; the peanuts show nowhere.
    sync(&w.gp, w.laptop(), w.id, t(17));
    let laptop = w.laptop_record();
    assert!(
        laptop
            .get(&key("AllergyIntolerance/peanuts"))
            .unwrap()
            .is_none()
    );
    let version = only_version(&laptop, "Condition/gout");
    assert_eq!(version.author.id, w.gp.peer_id().to_string());
    assert!(version.proven);
}
