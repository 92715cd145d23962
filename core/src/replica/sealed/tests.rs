//! Audit entries sealed to the owners, end to end: a patient's home and a read-only grantee's,
//! in temporary directories, the entries carried by the real sync sessions, run in process.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{
    audit::{self, Logged, entry_actor},
    home::{Home, NewPatient},
    keys::RecordId,
    ledger::Access,
    record::{self, Current, Record, Stamp},
    replica::Replica,
    section::Section,
};

fn t(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

/// A patient who holds a peanut allergy, and a pharmacy that may read `summary` only: it can
/// append to `audit` (sealed to the owners) but read nothing there.
struct Shared {
    _dirs: [TempDir; 2],
    patient: Home,
    pharmacy: Home,
    id: RecordId,
}

impl Shared {
    fn new() -> Shared {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let new = NewPatient {
            name: "Ada Lovelace".into(),
            nhs_number: None,
            birth_date: None,
            device_label: None,
        };
        let (mut patient, mut record) =
            Home::init_patient(dirs[0].path(), &new, None, t(0)).unwrap();
        let pharmacy = Home::init_provider(dirs[1].path(), "Pharmacy", None, None).unwrap();
        patient
            .grant(
                &pharmacy.party(),
                &[Section::Summary],
                Access::Read,
                None,
                None,
                t(1),
            )
            .unwrap();
        let author = patient.device().author();
        let stamp = Stamp {
            author: &author,
            time: t(2),
        };
        record.put(stamp, &allergy("Peanut allergy")).unwrap();
        record.commit(stamp, "allergy");
        patient.save(&mut record, t(2)).unwrap();
        let id = patient.record_id().unwrap();
        patient
            .sync_in_process(&pharmacy, id, t(3).as_millisecond())
            .unwrap();
        Shared {
            _dirs: dirs,
            patient,
            pharmacy,
            id,
        }
    }

    /// `resource` as one lone change by a fresh actor of the pharmacy's: how it writes entries.
    fn entry(&self, resource: &Value) -> Vec<u8> {
        let author = self.pharmacy.device().author();
        let stamp = Stamp {
            author: &author,
            time: t(10),
        };
        let actor = entry_actor(&self.pharmacy.peer_id());
        record::lone_change(stamp, resource, actor, "audit: show")
            .unwrap()
            .1
    }

    /// The `AuditEvent` the pharmacy logs for a read of `summary`.
    fn read_event(&self) -> Value {
        let logged = Logged::read("show", &[Section::Summary]);
        let party = self.pharmacy.party();
        audit::audit_event(&crate::new_id(), &logged, &party, self.id, t(10))
    }

    /// Seals `changes` to the owners as the pharmacy's audit entry, stores it on the pharmacy's
    /// node and syncs it to the patient's, as the pharmacy's node would.
    fn log_as_pharmacy(&self, changes: &[u8]) {
        let (vault, age) = self.pharmacy.sync_parts();
        let mut replica = Replica::open(vault, self.id, self.pharmacy.peer_id(), age).unwrap();
        let device = self.pharmacy.device_key();
        let blob = replica
            .seal_to_owners(device, changes, t(10).as_millisecond())
            .unwrap();
        replica.store_sealed(vault, vec![blob]).unwrap();
        self.pharmacy
            .sync_in_process(&self.patient, self.id, t(11).as_millisecond())
            .unwrap();
    }

    /// The patient's record as its device loads it now, the warnings, and how long it took.
    fn load(&mut self) -> (Record, Vec<String>, Duration) {
        let started = Instant::now();
        let record = self.patient.load_record().unwrap();
        let took = started.elapsed();
        (record, self.patient.warnings().to_vec(), took)
    }
}

fn allergy(text: &str) -> Value {
    json!({"resourceType": "AllergyIntolerance", "id": "peanut", "code": {"text": text}})
}

fn audit_events(record: &Record) -> usize {
    record
        .resources_of_type(Section::Audit, "AuditEvent")
        .unwrap()
        .len()
}

#[test]
fn a_grantees_audit_entry_that_inflates_past_the_limit_is_skipped_quickly_and_the_rest_loads() {
    let mut shared = Shared::new();
    let honest = shared.entry(&shared.read_event());
    shared.log_as_pharmacy(&honest);
    let mut bomb = shared.read_event();
    bomb["entity"][0]["description"] = "a".repeat(20_000_000).into();
    // Compressed, as Automerge makes a change's bytes when asked: 20 MB in about 20 KB.
    let mut change = automerge::Change::try_from(shared.entry(&bomb).as_slice()).unwrap();
    let compressed = change.bytes().into_owned();
    assert!(compressed.len() < 64 * 1024, "{} bytes", compressed.len());
    shared.log_as_pharmacy(&compressed);

    let (record, warnings, took) = shared.load();
    assert!(
        warnings.iter().any(|w| w.contains("more than 64 KiB")),
        "{warnings:?}"
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(audit_events(&record), 1, "the honest entry still counts");
    let key = "AllergyIntolerance/peanut".parse().unwrap();
    assert_eq!(
        record.get(&key).unwrap().unwrap(),
        allergy("Peanut allergy")
    );
}

#[test]
fn a_grantees_audit_entry_under_the_key_of_the_patients_allergy_is_not_a_version_of_it() {
    let mut shared = Shared::new();
    let forged = shared.entry(&allergy("No known allergies"));
    shared.log_as_pharmacy(&forged);
    let honest = shared.entry(&shared.read_event());
    shared.log_as_pharmacy(&honest);

    let (record, warnings, _) = shared.load();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("filed under AllergyIntolerance/peanut")),
        "{warnings:?}"
    );
    assert!(record.conflicts().unwrap().is_empty());
    let key = "AllergyIntolerance/peanut".parse().unwrap();
    let Some(Current::One(version)) = record.current(&key).unwrap() else {
        panic!("the allergy has one version");
    };
    assert_eq!(version.resource, allergy("Peanut allergy"));
    assert_eq!(version.section, Section::Summary);
    assert_eq!(record.history(&key).unwrap().len(), 1);
    assert_eq!(audit_events(&record), 1, "the honest entry still counts");
}
