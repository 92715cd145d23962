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

/// A new patient home in `dir` with no NHS number (the Synthea patients have none).
pub fn patient_home(dir: &Path) -> (Home, Record) {
    let patient = NewPatient {
        name: "Test Patient".into(),
        nhs_number: None,
        birth_date: None,
        device_label: None,
    };
    Home::init_patient(dir, &patient, None, test_time()).expect("init")
}

/// Imports one file into an open home, as `phr import` does, and saves.
pub fn import_file(
    home: &mut Home,
    record: &mut Record,
    path: &Path,
) -> Result<import::ImportReport, import::ImportError> {
    let bytes = std::fs::read(path).expect("readable fixture");
    let (parsed, skipped) = import::parse(&path.display().to_string(), &bytes)?;
    let author: Author = home.device().author();
    let report = import::apply(
        record,
        Stamp {
            author: &author,
            time: test_time(),
        },
        &parsed,
        skipped,
    )?;
    home.save(record, test_time()).expect("save");
    Ok(report)
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
