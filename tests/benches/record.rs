//! Import, show and export of the largest fixture, each beside `serde_json` parsing the same file
//! in the same run.
//!
//! Run with `cargo bench -p phr-tests --bench record` (release build). Each figure is the median
//! of `RUNS` runs; every run starts from a cold `Home::open` as a CLI invocation would, so load
//! and save are included. Targets (issue "Foundation"): import <= 300 ms, show <= 100 ms,
//! export <= 300 ms.

use std::time::Instant;

use phr_core::{Section, export, home::Home, view};
use phr_tests::{
    bench::{median, ms, time},
    import_file, largest_fixture, patient_home, test_time,
};
use serde_json::Value;

const RUNS: usize = 10;

fn main() {
    let path = largest_fixture();
    let bytes = std::fs::read(&path).expect("fixture");

    let parse = time(RUNS, || {
        serde_json::from_slice::<Value>(&bytes).expect("valid JSON")
    });

    // Import: a fresh home each run (created outside the timing), then read, check, write, fsync.
    let mut import_samples = Vec::new();
    for _ in 0..RUNS {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut home, mut record) = patient_home(dir.path());
        let start = Instant::now();
        let report = import_file(&mut home, &mut record, &path).expect("import");
        import_samples.push(start.elapsed());
        assert_eq!(report.added + report.updated, 1111);
    }
    let import = median(import_samples);

    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut home, mut record) = patient_home(dir.path());
        import_file(&mut home, &mut record, &path).expect("import");
    }
    let today = test_time().to_zoned(jiff::tz::TimeZone::UTC).date();
    let show = time(RUNS, || {
        let mut home = Home::open(dir.path()).expect("open");
        let record = home.load_record().expect("load");
        view::summary(&record, today).expect("summary").to_string()
    });
    let export = time(RUNS, || {
        let mut home = Home::open(dir.path()).expect("open");
        let record = home.load_record().expect("load");
        let bundle = export::collection(&record, &Section::ALL, test_time())
            .expect("export")
            .bundle;
        serde_json::to_string_pretty(&bundle).expect("serialise")
    });

    println!(
        "phr record benchmark: {} ({} bytes, 1111 resources), median of {RUNS} runs",
        path.file_name().unwrap().to_string_lossy(),
        bytes.len()
    );
    println!();
    println!(
        "| operation | phr | baseline: serde_json parse of the same file | phr / baseline | target |"
    );
    println!("|---|---|---|---|---|");
    for (name, took, target) in [
        ("import", import, 300),
        ("show", show, 100),
        ("export", export, 300),
    ] {
        let verdict = if took.as_millis() <= target {
            "met"
        } else {
            "MISSED"
        };
        println!(
            "| {name} | {} | {} | {:.1}x | <= {target} ms ({verdict}) |",
            ms(took),
            ms(parse),
            took.as_secs_f64() / parse.as_secs_f64()
        );
    }
}
