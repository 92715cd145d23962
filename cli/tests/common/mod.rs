//! What the CLI tests share: a temporary home, a way to run `phr` in it, and snapshots with
//! the run-to-run differences (ids, times, paths) replaced by placeholders.

#![allow(dead_code)]

pub mod sync;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use tempfile::TempDir;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/fhir")
}

pub fn largest() -> String {
    fixtures()
        .join("synthea/Fletcher_Hyatt_fe0562b5-f517-4951-8366-32fdab088930.json")
        .display()
        .to_string()
}

/// A temporary home and a way to run `phr` in it.
pub struct Phr {
    pub dir: TempDir,
}

impl Phr {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A home with a patient record.
    pub fn patient() -> Self {
        let phr = Self::new();
        phr.ok(&[
            "init",
            "--name",
            "Ada Lovelace",
            "--nhs-number",
            "943 476 5919",
            "--birth-date",
            "1815-12-10",
        ]);
        phr
    }

    /// A home with the record of the person the largest fixture is about (Fletcher Hyatt, born
    /// 1915-07-03), with an NHS number the fixture does not carry: importing the fixture merges
    /// its Patient into the record's own.
    pub fn fletcher() -> Self {
        Self::patient_named("Fletcher Hyatt", "1915-07-03")
    }

    /// A home with a patient record for `name` born on `born`, NHS number 943 476 5919.
    pub fn patient_named(name: &str, born: &str) -> Self {
        let phr = Self::new();
        phr.ok(&[
            "init",
            "--name",
            name,
            "--nhs-number",
            "943 476 5919",
            "--birth-date",
            born,
        ]);
        phr
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Runs phr and renders the transcript: command, exit code, stdout, stderr.
    pub fn run(&self, args: &[&str]) -> (i32, String, String, String) {
        self.run_env(args, &[])
    }

    /// Runs phr with extra environment variables (PHR_PASSPHRASE), stdin closed.
    ///
    /// A command refused because the home is busy is run again (for up to 5 s): no test runs
    /// two commands on one home at once, but a test that opened a home in process (`sync_homes`)
    /// may have had its lock's descriptor copied into a process another test thread was
    /// spawning at that moment, which holds it until that process starts its program. A busy
    /// home is refused before anything is read or written, so running again is safe.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String, String) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let output = loop {
            let output = Command::new(env!("CARGO_BIN_EXE_phr"))
                .arg("--home")
                .arg(self.home())
                .args(args)
                .env_remove("PHR_HOME")
                .env_remove("PHR_PASSPHRASE")
                // Unwrapped unless a test asks for a width.
                .env_remove("COLUMNS")
                .envs(env.iter().copied())
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let busy =
                String::from_utf8_lossy(&output.stderr).contains("another phr command is using");
            if !busy || std::time::Instant::now() >= deadline {
                break output;
            }
            std::thread::yield_now();
        };
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        let code = output.status.code().unwrap_or(-1);
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("{a:?}")
                } else {
                    a.to_string()
                }
            })
            .collect();
        let transcript = format!(
            "$ phr {}\nexit: {code}\n--- stdout\n{stdout}--- stderr\n{stderr}",
            shown.join(" ")
        );
        (code, stdout, stderr, self.redact(&transcript))
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr, _) = self.run(args);
        assert_eq!(code, 0, "phr {args:?} failed: {stderr}");
        stdout
    }

    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.dir.path().display().to_string(), "[TMP]")
            .replace(&fixtures().display().to_string(), "[FIXTURES]")
    }
}

/// Runs each command and snapshots the whole transcript.
pub fn snapshot(name: &str, phr: &Phr, commands: &[&[&str]]) -> Vec<i32> {
    let mut transcript = Transcript::default();
    for args in commands {
        transcript.run(phr, args);
    }
    transcript.finish(name)
}

/// A transcript of commands run on one or more homes, snapshotted at the end.
#[derive(Default)]
pub struct Transcript {
    text: String,
    codes: Vec<i32>,
}

impl Transcript {
    /// Runs a command and records it; returns stdout.
    pub fn run(&mut self, phr: &Phr, args: &[&str]) -> String {
        self.run_env(phr, args, &[])
    }

    /// Runs a command with extra environment variables and records it; returns stdout.
    pub fn run_env(&mut self, phr: &Phr, args: &[&str], env: &[(&str, &str)]) -> String {
        let (code, stdout, _, text) = phr.run_env(args, env);
        self.codes.push(code);
        self.text.push_str(&text);
        self.text.push('\n');
        stdout
    }

    /// A note in the transcript (which node the next commands run on).
    pub fn note(&mut self, text: &str) {
        self.text.push_str(&format!("# {text}\n"));
    }

    /// Pins the transcript; returns the exit codes.
    pub fn finish(self, name: &str) -> Vec<i32> {
        // Today's date, as entries written by the test carry it (a reading taken now).
        let today = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date()
            .to_string();
        // Every test file's snapshots live in cli/tests/snapshots, named by the test alone.
        insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false, filters => vec![
            (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "[UUID]"),
            (r"/tmp/\.tmp[A-Za-z0-9]+", "[OTHER-TMP]"),
            (r"\b\d+@[0-9a-f]{8,}\b", "[VERSION]"),
            (r"\b[0-9a-f]{32}\b", "[ID]"),
            (r"\(device [1-9A-HJ-NP-Za-km-z]{8}\)", "(device [DEVICE])"),
            (r"12D3KooW[1-9A-HJ-NP-Za-km-z]{44}", "[PEER]"),
            (r"phr-card:v1:[A-Za-z0-9_.-]+", "[CARD]"),
            (r"\b[0-9a-f]{12}\b", "[SHORT]"),
            (r"\bimport [0-9a-f]{8}\b", "import [IMPORT]"),
            (r"\bimports undo [0-9a-f]{8}\b", "imports undo [IMPORT]"),
            (r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?( UTC|Z)", "[TIME]"),
            (r"\(age \d+\)", "(age [AGE])"),
            (r"\(\d+ bytes\)", "([N] bytes)"),
            // After [TIME], so that only dates without a time are left.
            (today.as_str(), "[TODAY]"),
        ]}, {
            insta::assert_snapshot!(name, self.text);
        });
        self.codes
    }
}

/// A provider node's home, named `name` with ODS code `ods`.
pub fn provider(name: &str, ods: &str) -> Phr {
    let phr = Phr::new();
    phr.ok(&["init", "--provider", "--name", name, "--ods", ods]);
    phr
}

/// A node's contact card.
pub fn card(phr: &Phr) -> String {
    phr.ok(&["card"]).trim().to_string()
}

/// The id of the record `phr` holds, as `phr status` shows it.
pub fn record_id(phr: &Phr) -> String {
    let status: serde_json::Value = serde_json::from_str(&phr.ok(&["--json", "status"])).unwrap();
    status["record"].as_str().expect("a record").to_string()
}

/// A further device of the patient whose first device is `first`, joining its record.
pub fn device_of(first: &Phr, label: &str) -> Phr {
    let device = Phr::new();
    let record = record_id(first);
    device.ok(&[
        "init",
        "--device",
        "--join",
        &record,
        "--name",
        "Ada Lovelace",
        "--label",
        label,
    ]);
    device
}

/// Accepts every record waiting at the provider `phr` (`phr patients accept`), as a person there
/// would once they have checked who the patient is; returns their ids.
pub fn accept_pending(phr: &Phr) -> Vec<String> {
    let waiting: serde_json::Value =
        serde_json::from_str(&phr.ok(&["patients", "--pending", "--json"])).unwrap();
    let ids: Vec<String> = waiting
        .as_array()
        .expect("a list")
        .iter()
        .map(|record| record["record"].as_str().expect("an id").to_string())
        .collect();
    for id in &ids {
        phr.ok(&["patients", "accept", id]);
    }
    ids
}

/// The GP "Riverside Surgery" (Y12345), added to `patient`'s contacts as "gp" and granted write
/// access to `summary` and `clinical`, as a patient does it at the practice.
pub fn grant_gp_write(patient: &Phr) -> Phr {
    let gp = provider("Riverside Surgery", "Y12345");
    patient.ok(&["contacts", "add", &card(&gp), "--alias", "gp"]);
    patient.ok(&[
        "share",
        "grant",
        "gp",
        "--sections",
        "summary,clinical",
        "--access",
        "write",
    ]);
    gp
}

/// `phr args`, which must succeed, its output parsed as JSON (pass `--json`).
pub fn json(phr: &Phr, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&phr.ok(args)).unwrap()
}

/// `phr args`, which must be refused as a user error (exit 1); its standard error.
pub fn fails(phr: &Phr, args: &[&str]) -> String {
    let (code, _, stderr, _) = phr.run(args);
    assert_eq!(
        code, 1,
        "phr {args:?} should be refused as a user error: {stderr}"
    );
    stderr
}

/// `patient` adds `provider` as the contact "gp", grants it `sections` (comma separated) with
/// write access, syncs, and the provider takes the record on; returns the record's id.
pub fn taken_on_by(patient: &Phr, provider: &Phr, sections: &str) -> String {
    patient.ok(&["contacts", "add", &card(provider), "--alias", "gp"]);
    patient.ok(&[
        "share",
        "grant",
        "gp",
        "--sections",
        sections,
        "--access",
        "write",
    ]);
    sync::sync_homes(&patient.home(), &provider.home());
    accept_pending(provider).remove(0)
}
