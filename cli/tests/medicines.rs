//! The medicines check on the command line: on `phr add medication` and `phr add allergy`, on
//! demand, on a provider's node with `--patient`, over a lifetime record, and with a table the
//! user imports. It never blocks: every command here that checks exits 0.

mod common;

use common::{Phr, Transcript, accept_pending, grant_gp_write, largest, sync::sync_homes};
use serde_json::Value;

const ASK: &str = "Ask your pharmacist or GP before changing anything.";

fn json(phr: &Phr, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&phr.ok(&all)).unwrap()
}

#[test]
fn an_ibuprofen_allergy_while_taking_naproxen_says_so_with_its_source() {
    let phr = Phr::patient();
    let mut t = Transcript::default();
    let added = t.run(&phr, &["add", "medication", "naproxen"]);
    assert!(!added.contains("Medicines check"), "nothing yet: {added}");
    let added = t.run(&phr, &["add", "allergy", "ibuprofen"]);
    assert!(added.contains("High: your allergy to ibuprofen"), "{added}");
    assert!(added.contains(ASK), "{added}");
    assert!(added.contains("doi:10.1111/all.12260"), "{added}");
    let checked = t.run(&phr, &["medicines", "check"]);
    assert!(checked.contains("Kowalski ML"), "{checked}");
    assert!(checked.contains(ASK), "{checked}");
    // A second NSAID: two findings, the new one shown with the add.
    let added = t.run(
        &phr,
        &["add", "medication", "Aspirin 75mg dispersible tablets"],
    );
    assert!(added.contains("2 things to ask about"), "{added}");
    // A row without a source is refused, naming its line; nothing is imported.
    let tables = tempfile::tempdir().unwrap();
    let sourceless = tables.path().join("sourceless.csv");
    std::fs::write(
        &sourceless,
        "a,b,kind,severity,why,source,link\n\
         naproxen,digoxin,drug-drug,low,A made-up clash.,,https://example.org\n",
    )
    .unwrap();
    t.run(&phr, &["medicines", "import", sourceless.to_str().unwrap()]);
    let good = tables.path().join("good.csv");
    std::fs::write(
        &good,
        "a,b,kind,severity,why,source,link\n\
         digoxin,amiodarone,drug-drug,high,\"Amiodarone raises digoxin levels, so digoxin may need a lower dose.\",\"An example source, 2020\",https://example.org/digoxin\n",
    )
    .unwrap();
    t.run(&phr, &["medicines", "import", good.to_str().unwrap()]);
    t.run(
        &phr,
        &["add", "medication", "Digoxin 125 microgram tablets"],
    );
    t.run(&phr, &["add", "medication", "Amiodarone 200mg tablets"]);
    t.run(&phr, &["medicines", "import", "--remove"]);
    t.run(&phr, &["medicines", "check"]);
    let codes = t.finish("medicines");
    assert_eq!(codes, [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]);

    let found = json(&phr, &["medicines", "check"]);
    let findings = found["findings"].as_array().unwrap();
    let allergy = findings
        .iter()
        .find(|f| f["kind"] == "drug-allergy" && f["b"]["shown"] == "naproxen")
        .unwrap_or_else(|| panic!("{found:#}"));
    assert_eq!(allergy["severity"], "high");
    assert_eq!(allergy["a"]["shown"], "ibuprofen");
    assert_eq!(allergy["source"]["link"], "doi:10.1111/all.12260");
    assert_eq!(found["advice"], ASK);
    for finding in findings {
        assert!(
            finding["source"]["citation"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        );
        assert!(
            finding["source"]["link"]
                .as_str()
                .is_some_and(|l| !l.is_empty())
        );
    }
    // In JSON, the add carries what the check found with the new entry.
    let added = json(&phr, &["add", "allergy", "aspirin"]);
    let with_new = added["medicines_check"]["findings"].as_array().unwrap();
    assert!(!with_new.is_empty(), "{added:#}");
    let key = added["added"].as_str().unwrap();
    assert!(with_new.iter().all(|f| f["a"]["references"][0] == key));
    let note = json(&phr, &["add", "note", "no check for a note"]);
    assert!(note.get("medicines_check").is_none());

    // The table, each row with its source.
    let rows = json(&phr, &["medicines", "table"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 36);
    assert!(
        rows.iter()
            .all(|r| r["source"]["link"].as_str().is_some_and(|l| !l.is_empty()))
    );
    let listed = phr.ok(&["medicines", "table"]);
    assert!(
        listed.contains("high · an allergy to NSAIDs, and NSAIDs"),
        "{listed}"
    );
    assert!(
        listed.contains("doi:10.1136/amiajnl-2011-000612"),
        "{listed}"
    );

    // An imported table changed by hand into nonsense: the check says so and what to do; an
    // add still adds, with a note.
    std::fs::write(
        phr.home().join("medicines.csv"),
        "a,b,kind,severity,why,source,link\nwarfarin,aspirin,drug-drug,high,Why.,,\n",
    )
    .unwrap();
    let (code, _, stderr, _) = phr.run(&["medicines", "check"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("line 2: no source"), "{stderr}");
    assert!(stderr.contains("phr medicines import --remove"), "{stderr}");
    let (code, stdout, stderr, _) = phr.run(&["add", "medication", "Ibuprofen 200mg"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("Added MedicationStatement/"), "{stdout}");
    assert!(
        stderr.contains("the medicines check did not run"),
        "{stderr}"
    );
}

#[test]
fn a_gps_prescription_is_checked_where_it_is_written_and_where_it_arrives() {
    let patient = Phr::patient();
    patient.ok(&["add", "medication", "Naproxen 500mg tablets"]);
    let gp = grant_gp_write(&patient);
    sync_homes(&patient.home(), &gp.home());
    let id = accept_pending(&gp).remove(0);
    let short = &id[..12];
    let added = gp.ok(&[
        "--patient",
        short,
        "add",
        "medication",
        "Warfarin 3mg tablets",
    ]);
    assert!(added.contains("High: Warfarin 3mg tablets"), "{added}");
    assert!(added.contains(ASK), "{added}");
    let (code, _, stderr, _) = gp.run(&["--patient", short, "medicines", "table"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("medicines check only"), "{stderr}");

    // The prescription reaches the patient, whose check shows who prescribed it.
    sync_homes(&gp.home(), &patient.home());
    let checked = patient.ok(&["medicines", "check"]);
    assert!(
        checked.contains("Warfarin 3mg tablets (anticoagulants; by Riverside Surgery)"),
        "{checked}"
    );

    // The GP's check reads the record, and the patient's audit shows that read like any other.
    let reads = || {
        let audit = json(&patient, &["audit"]);
        let entries = audit.as_array().unwrap().clone();
        entries
            .into_iter()
            .filter(|e| e["who"]["name"] == "Riverside Surgery" && e["kind"] == "read")
            .collect::<Vec<_>>()
    };
    let before = reads().len();
    let found = json(&gp, &["--patient", short, "medicines", "check"]);
    assert_eq!(found["record"], id.as_str());
    assert_eq!(found["findings"].as_array().unwrap().len(), 1, "{found:#}");
    sync_homes(&gp.home(), &patient.home());
    let after = reads();
    assert_eq!(after.len(), before + 1);
    assert!(
        after
            .iter()
            .any(|e| e["what"].as_str().is_some_and(|w| w.contains("summary"))),
        "{after:#?}"
    );
}

#[test]
fn a_lifetime_record_shows_its_findings_each_with_a_source() {
    let phr = Phr::fletcher();
    phr.ok(&["import", &largest()]);
    let found = json(&phr, &["medicines", "check"]);
    let findings = found["findings"].as_array().unwrap();
    let pairs: Vec<(String, String, String)> = findings
        .iter()
        .map(|f| {
            (
                f["severity"].as_str().unwrap().to_string(),
                f["a"]["matched"].as_str().unwrap().to_string(),
                f["b"]["matched"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let pair = |s: &str, a: &str, b: &str| (s.to_string(), a.to_string(), b.to_string());
    assert_eq!(
        pairs,
        [
            pair("moderate", "NSAIDs", "loop diuretics"),
            pair("moderate", "NSAIDs", "thiazide diuretics"),
            pair("moderate", "NSAIDs", "loop diuretics"),
            pair("low", "furosemide", "furosemide"),
            pair("low", "NSAIDs", "beta blockers"),
        ],
        "{found:#}"
    );
    assert!(
        findings
            .iter()
            .all(|f| f["source"]["link"].as_str().is_some_and(|l| !l.is_empty()))
    );
    assert_eq!(found["not_recognised"]["medicines"], serde_json::json!([]));
    assert_eq!(found["medicines"].as_array().unwrap().len(), 8);
}
