//! The medicines check on the five shared Synthea records: every finding, with its source,
//! pinned so that a change in what the check finds shows here.

use std::path::{Path, PathBuf};

use super::{checked, record_with};
use crate::{import, medicines::Check};

fn synthea(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/fhir/synthea")
        .join(name)
}

/// The fixture's resources in a record, references rewritten as `phr import` rewrites them.
fn fixture_check(name: &str) -> Check {
    let path = synthea(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (parsed, _) = import::parse(name, &bytes).unwrap();
    let resources: Vec<_> = parsed.into_iter().map(|p| p.resource).collect();
    checked(&record_with(&resources))
}

/// One line per finding: severity, kind, the two items, what matched, and the source's link.
fn lines(check: &Check) -> Vec<String> {
    check
        .findings
        .iter()
        .map(|f| {
            format!(
                "{} {}: {} ({}) + {} ({}) [{}]",
                f.severity(),
                f.kind().as_str(),
                f.a.shown,
                f.matched[0],
                f.b.shown,
                f.matched[1],
                f.source().link()
            )
        })
        .collect()
}

fn show(name: &str, check: &Check) {
    println!("{name}");
    for m in &check.medicines {
        println!(
            "  medicine: {} {:?} {:?}",
            m.shown, m.ingredients, m.classes
        );
    }
    for a in &check.allergies {
        println!("  allergy: {} {:?} {:?}", a.shown, a.ingredients, a.classes);
    }
    for line in lines(check) {
        println!("  {line}");
    }
}

const WEBSTER: &str = "doi:10.2165/00003495-198530010-00004";
const NG5: &str = "https://www.nice.org.uk/guidance/ng5";

#[test]
fn the_check_on_the_five_synthea_records() {
    let nsaid = "NSAIDs";
    let naproxen = "Naproxen sodium 220 MG Oral Tablet";
    let injection = "10 ML Furosemide 10 MG/ML Injection";
    #[rustfmt::skip]
    let expected: [(&str, Vec<String>); 5] = [
        // Fexofenadine and an adrenaline auto-injector; a shellfish allergy, which is no medicine.
        ("Benedict_Ortiz_b508ad57-7848-485d-abc1-33669ac1b632.json", vec![]),
        // Naproxen and simvastatin: the table has no row for the two.
        ("Carin_Schowalter_a57d5ea7-934e-4de7-8886-0fb8bec50356.json", vec![]),
        // Simvastatin and an egg allergy.
        ("Clint_Champlin_4e83f4d0-0461-47bf-9711-292d8f5d69ff.json", vec![]),
        // Naproxen with two loop diuretics, a thiazide and a beta blocker; furosemide twice.
        ("Fletcher_Hyatt_fe0562b5-f517-4951-8366-32fdab088930.json", vec![
            format!("moderate drug-drug: {naproxen} ({nsaid}) + {injection} (loop diuretics) [{WEBSTER}]"),
            format!("moderate drug-drug: {naproxen} ({nsaid}) + Hydrochlorothiazide 25 MG (thiazide diuretics) [{WEBSTER}]"),
            format!("moderate drug-drug: {naproxen} ({nsaid}) + Lasix 40mg (loop diuretics) [{WEBSTER}]"),
            format!("low drug-drug: {injection} (furosemide) + Lasix 40mg (furosemide) [{NG5}]"),
            format!("low drug-drug: {naproxen} ({nsaid}) + 24 HR metoprolol succinate 100 MG Extended Release Oral Tablet [Toprol] (beta blockers) [{WEBSTER}]"),
        ]),
        // No current medicine and no allergy.
        ("Luigi_Wiegand_e27d88b0-c5e5-4042-ad49-184f6a900ee3.json", vec![]),
    ];
    for (name, expected) in expected {
        let check = fixture_check(name);
        show(name, &check);
        assert_eq!(lines(&check), expected, "{name}");
        // Every medicine of the five is one the vocabulary recognises; so is no allergy.
        assert!(check.medicines.iter().all(|m| !m.unrecognised()), "{name}");
        assert!(check.allergies.iter().all(|a| a.unrecognised()), "{name}");
        for finding in &check.findings {
            assert!(!finding.source().citation().is_empty() && !finding.source().link().is_empty());
        }
    }
}
