//! Shared helpers for phr's integration tests and benchmarks.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use phr_core::{
    Author, Record, Stamp,
    home::{Home, NewPatient},
    import,
};
use serde_json::Value;

/// The FHIR fixtures shared by the project: `../shared/fixtures/fhir` beside the repository.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/fhir")
}

/// Every fixture file (Synthea lifetime records and the IPS example), sorted.
pub fn fixture_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in ["synthea", "ips"] {
        let dir = fixtures_dir().join(sub);
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("readable fixture dir").path();
            if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(
        files.len() >= 6,
        "expected the shared FHIR fixtures in {}",
        fixtures_dir().display()
    );
    files
}

/// The largest fixture: a lifetime record of about 1,100 resources (3.9 MB).
pub fn largest_fixture() -> PathBuf {
    fixtures_dir().join("synthea/Fletcher_Hyatt_fe0562b5-f517-4951-8366-32fdab088930.json")
}

/// A fixed time for writes in tests.
pub fn test_time() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_763_700_000).expect("valid time")
}

/// A new patient home in `dir` for the person the largest fixture is about (Fletcher Hyatt,
/// born 1915-07-03), with no NHS number (the Synthea patients have none): importing that
/// fixture merges its `Patient` into the record's own.
pub fn patient_home(dir: &Path) -> (Home, Record) {
    patient_home_for(dir, &largest_fixture())
}

/// A new patient home in `dir` for the person `fixture` is about: its `Patient`'s first name
/// and birth date, so that importing it merges that `Patient` into the record's own.
pub fn patient_home_for(dir: &Path, fixture: &Path) -> (Home, Record) {
    let (name, birth_date) = fixture_patient(fixture);
    let patient = NewPatient {
        name,
        nhs_number: None,
        birth_date: Some(birth_date.parse().expect("a birth date")),
        device_label: None,
    };
    Home::init_patient(dir, &patient, None, test_time()).expect("init")
}

/// The name ("given family") and birth date of the `Patient` a fixture is about.
pub fn fixture_patient(fixture: &Path) -> (String, String) {
    let bundle: Value =
        serde_json::from_slice(&std::fs::read(fixture).expect("readable fixture")).expect("JSON");
    let patient = bundle["entry"]
        .as_array()
        .expect("a bundle")
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "Patient")
        .expect("a Patient");
    let name = &patient["name"][0];
    let given = name["given"][0].as_str().expect("a given name");
    let family = name["family"].as_str().expect("a family name");
    (
        format!("{given} {family}"),
        patient["birthDate"]
            .as_str()
            .expect("a birth date")
            .to_string(),
    )
}

/// Imports one file into an open home, as `phr import` does, and saves.
pub fn import_file(
    home: &mut Home,
    record: &mut Record,
    path: &Path,
) -> Result<import::ImportReport, import::ImportError> {
    import_file_as(home, record, path, import::ImportOptions::default())
}

/// [`import_file`] as `phr import` does with `options` (`--same-person`).
pub fn import_file_as(
    home: &mut Home,
    record: &mut Record,
    path: &Path,
    options: import::ImportOptions,
) -> Result<import::ImportReport, import::ImportError> {
    let bytes = std::fs::read(path).expect("readable fixture");
    let (parsed, skipped) = import::parse(&path.display().to_string(), &bytes)?;
    let author: Author = home.device().author();
    let report = import::apply_as(
        record,
        Stamp {
            author: &author,
            time: test_time(),
        },
        &parsed,
        skipped,
        options,
    )?;
    home.save(record, test_time()).expect("save");
    Ok(report)
}

/// What importing `bundle` into a record whose own `Patient` is `own` (a key, `Patient/id`)
/// should store, written independently of phr-core: [`expected_after_import`], with the
/// bundle's `Patient` merged into the record's own, so it is not stored under its key, and
/// every reference to it pointing at the record's. Returns the expected resources and the
/// bundle's `Patient` (to check that the record's holds all of it).
pub fn expected_in_record(bundle: &Value, own: &str) -> (HashMap<String, Value>, Value) {
    let mut expected = expected_after_import(bundle);
    let key = expected
        .keys()
        .find(|k| k.starts_with("Patient/"))
        .expect("a Patient")
        .clone();
    let patient = expected.remove(&key).expect("present");
    fn repoint(value: &mut Value, from: &str, to: &str) {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    match v {
                        Value::String(s) if k == "reference" && s == from => *s = to.to_string(),
                        other => repoint(other, from, to),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| repoint(i, from, to)),
            _ => {}
        }
    }
    for resource in expected.values_mut() {
        repoint(resource, &key, own);
    }
    (expected, patient)
}

/// The documented reference rewriting, written independently of phr-core: every `reference`
/// equal to the `fullUrl` of an entry of the bundle becomes that entry's `Type/id`.
pub fn expected_after_import(bundle: &Value) -> HashMap<String, Value> {
    let entries = bundle["entry"].as_array().expect("a bundle with entries");
    let mut by_url = HashMap::new();
    for entry in entries {
        let resource = &entry["resource"];
        let key = format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        if let Some(url) = entry["fullUrl"].as_str() {
            by_url.insert(url.to_string(), key);
        }
    }
    fn rewrite(value: &mut Value, by_url: &HashMap<String, String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    match v {
                        Value::String(s) if k == "reference" => {
                            if let Some(key) = by_url.get(s.as_str()) {
                                *s = key.clone();
                            }
                        }
                        other => rewrite(other, by_url),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| rewrite(i, by_url)),
            _ => {}
        }
    }
    entries
        .iter()
        .map(|entry| {
            let mut resource = entry["resource"].clone();
            rewrite(&mut resource, &by_url);
            let key = format!(
                "{}/{}",
                resource["resourceType"].as_str().unwrap(),
                resource["id"].as_str().unwrap()
            );
            (key, resource)
        })
        .collect()
}

/// Timing helpers shared by the benchmarks.
pub mod sim;

pub mod bench {
    use std::time::{Duration, Instant};

    /// The median of some samples.
    pub fn median(mut samples: Vec<Duration>) -> Duration {
        samples.sort();
        samples[samples.len() / 2]
    }

    /// The median time of `runs` calls of `f`.
    pub fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
        median(
            (0..runs)
                .map(|_| {
                    let start = Instant::now();
                    std::hint::black_box(f());
                    start.elapsed()
                })
                .collect(),
        )
    }

    /// `second` seconds after [`crate::test_time`].
    pub fn t(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(crate::test_time().as_second() + second).expect("valid time")
    }

    /// A new record made by a patient device holding `keys` (the first device, with the root
    /// key) as `device`: its ledger stored in a memory store, and the replica opened on it.
    pub fn record_in_memory(
        keys: &phr_core::keystore::Keystore,
        device: phr_core::party::Party,
        now_ms: i64,
    ) -> Result<
        (phr_core::store::MemoryStore, phr_core::replica::Replica),
        Box<dyn std::error::Error>,
    > {
        use phr_core::store::Store;
        let root = keys
            .root
            .as_ref()
            .ok_or("the first device holds the root key")?;
        let ledger = phr_core::ledger::Ledger::create(root, device, now_ms)?;
        let id = ledger.record();
        let store = phr_core::store::MemoryStore::new();
        let mut batch = phr_core::vault::Batch::new();
        for op in ledger.ops() {
            batch.ledger_op(id, op);
        }
        store.commit(batch)?;
        let replica =
            phr_core::replica::Replica::open(&store, id, keys.device.peer_id(), &keys.age)?;
        Ok((store, replica))
    }

    /// A home blood-pressure reading, `Observation/bp-i`.
    pub fn reading(i: usize) -> serde_json::Value {
        serde_json::json!({"resourceType": "Observation", "id": format!("bp-{i}"),
            "status": "final", "code": {"text": "Blood pressure"},
            "valueString": format!("{}/{}", 110 + i % 40, 70 + i % 20)})
    }

    /// Puts `n` readings starting at `from`, one Automerge change each, and saves once.
    pub fn readings(
        home: &mut phr_core::home::Home,
        record: &mut phr_core::Record,
        from: usize,
        n: usize,
        at: jiff::Timestamp,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let author: phr_core::Author = home.device().author();
        let stamp = phr_core::Stamp {
            author: &author,
            time: at,
        };
        for i in from..from + n {
            record.put(stamp, &reading(i))?;
            record.commit(stamp, "reading");
        }
        home.save(record, at)?;
        Ok(())
    }

    /// Milliseconds, to one decimal place.
    pub fn ms(d: Duration) -> String {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    }
}
