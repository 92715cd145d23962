//! Tests of the medicines check on small records built in memory, of the tables, and of the
//! vocabulary. The check over the shared Synthea fixtures is in `fixtures`.

mod fixtures;

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{vocabulary::*, *};
use crate::{record::Record, section::Section, test_records::record_with};

/// The shipped table's check of a record, over the sections it reads.
pub(super) fn checked(record: &Record) -> Check {
    check(record, &CHECKED_SECTIONS, &[Table::shipped()]).unwrap()
}

fn statement(id: &str, text: &str, status: &str) -> Value {
    json!({"resourceType": "MedicationStatement", "id": id, "status": status,
        "medicationCodeableConcept": {"text": text}})
}

fn allergy(id: &str, text: &str) -> Value {
    json!({"resourceType": "AllergyIntolerance", "id": id, "code": {"text": text},
        "clinicalStatus": {"coding": [{"code": "active"}]}})
}

/// (severity, a, b, link) of each finding.
fn summary(check: &Check) -> Vec<(&'static str, String, String, String)> {
    check
        .findings
        .iter()
        .map(|f| {
            (
                f.severity().as_str(),
                f.a.shown.clone(),
                f.b.shown.clone(),
                f.source().link().to_string(),
            )
        })
        .collect()
}

#[test]
fn an_ibuprofen_allergy_while_taking_naproxen_is_an_nsaid_cross_sensitivity_finding() {
    let record = record_with(&[
        statement("m1", "Naproxen 250mg tablets", "active"),
        allergy("a1", "ibuprofen"),
    ]);
    let check = checked(&record);
    assert_eq!(check.findings.len(), 1, "{:?}", summary(&check));
    let finding = &check.findings[0];
    assert_eq!(finding.kind(), Kind::DrugAllergy);
    assert_eq!(finding.severity(), Severity::High);
    assert_eq!(finding.a.references, ["AllergyIntolerance/a1"]);
    assert_eq!(finding.b.references, ["MedicationStatement/m1"]);
    assert!(
        finding.why().contains("cross-reactive"),
        "{}",
        finding.why()
    );
    assert_eq!(finding.source().link(), "doi:10.1111/all.12260");
    assert!(finding.source().citation().contains("Kowalski"));
    assert_eq!(
        check.involving("AllergyIntolerance/a1").count(),
        1,
        "the new allergy's findings"
    );
}

#[test]
fn warfarin_with_ibuprofen_is_high() {
    let record = record_with(&[
        statement("m1", "Warfarin 1mg tablets", "active"),
        statement("m2", "Ibuprofen 200mg", "active"),
    ]);
    let check = checked(&record);
    assert_eq!(
        summary(&check),
        [(
            "high",
            "Warfarin 1mg tablets".to_string(),
            "Ibuprofen 200mg".to_string(),
            "https://www.medicines.org.uk/emc/product/13238/smpc".to_string()
        )]
    );
    assert_eq!(check.findings[0].matched, ["anticoagulants", "NSAIDs"]);
}

#[test]
fn a_shellfish_allergy_finds_nothing_and_says_it_matched_no_medicine() {
    let record = record_with(&[
        statement("m1", "Naproxen 250mg tablets", "active"),
        allergy("a1", "Shellfish allergy"),
        allergy("a2", "Allergy to eggs"),
    ]);
    let check = checked(&record);
    assert!(check.findings.is_empty(), "{:?}", summary(&check));
    assert!(check.allergies.iter().all(Item::unrecognised));
    assert!(!check.medicines[0].unrecognised());
}

#[test]
fn stopped_medicines_and_past_allergies_are_left_out() {
    let mut refuted = allergy("a2", "aspirin");
    refuted["verificationStatus"] = json!({"coding": [{"code": "refuted"}]});
    let mut resolved = allergy("a3", "diclofenac");
    resolved["clinicalStatus"] = json!({"coding": [{"code": "resolved"}]});
    let record = record_with(&[
        statement("m1", "Naproxen 250mg tablets", "stopped"),
        statement("m2", "Warfarin 1mg", "active"),
        statement("m3", "Ibuprofen 400mg", "completed"),
        json!({"resourceType": "MedicationRequest", "id": "m4", "status": "cancelled",
            "intent": "order", "medicationCodeableConcept": {"text": "Aspirin 75mg"}}),
        allergy("a1", "ibuprofen").tap_status("entered-in-error"),
        refuted,
        resolved,
    ]);
    let check = checked(&record);
    assert!(check.findings.is_empty(), "{:?}", summary(&check));
    assert_eq!(check.medicines.len(), 1, "only warfarin is current");
    assert!(check.allergies.is_empty());
}

trait TapStatus {
    fn tap_status(self, code: &str) -> Value;
}

impl TapStatus for Value {
    fn tap_status(mut self, code: &str) -> Value {
        self["verificationStatus"] = json!({"coding": [{"code": code}]});
        self
    }
}

#[test]
fn a_prescription_from_a_practice_is_checked_and_says_who_prescribed_it() {
    let record = record_with(&[
        statement("m1", "Naproxen 250mg tablets", "active"),
        json!({"resourceType": "MedicationRequest", "id": "rx1", "status": "active",
            "intent": "order", "requester": {"display": "Dr Okafor, Leeds Road Surgery"},
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "4603"}]}}),
    ]);
    let check = checked(&record);
    assert_eq!(check.findings.len(), 1, "{:?}", summary(&check));
    let finding = &check.findings[0];
    assert_eq!(finding.severity(), Severity::Moderate);
    assert!(finding.involves("MedicationRequest/rx1"));
    let prescribed = [&finding.a, &finding.b]
        .into_iter()
        .find(|i| i.references == ["MedicationRequest/rx1"])
        .unwrap();
    // Named by its RxNorm code alone: the code is what says it is furosemide.
    assert_eq!(prescribed.shown, "4603");
    assert_eq!(prescribed.ingredients, ["furosemide"]);
    assert_eq!(
        prescribed.by.as_deref(),
        Some("Dr Okafor, Leeds Road Surgery")
    );
}

#[test]
fn a_coded_penicillin_allergy_covers_penicillin_v_and_warns_of_cephalosporins() {
    let record = record_with(&[
        json!({"resourceType": "AllergyIntolerance", "id": "a1",
            "code": {"coding": [{"system": SNOMED, "code": "91936005", "display": "Allergy to penicillin"}]}}),
        statement("m1", "Penicillin V Potassium 250 MG Oral Tablet", "active"),
        statement("m2", "Cefalexin 500mg capsules", "active"),
    ]);
    let check = checked(&record);
    assert_eq!(
        summary(&check)
            .iter()
            .map(|(s, _, b, _)| (*s, b.as_str()))
            .collect::<Vec<_>>(),
        [
            ("high", "Penicillin V Potassium 250 MG Oral Tablet"),
            ("moderate", "Cefalexin 500mg capsules"),
        ]
    );
}

#[test]
fn one_ingredient_in_two_medicines_is_a_low_finding_naming_it() {
    let record = record_with(&[
        statement("m1", "Lasix 40mg", "active"),
        statement("m2", "10 ML Furosemide 10 MG/ML Injection", "active"),
        // The same medicine written twice is one item, not a duplicate.
        statement("m3", "Lasix 40mg", "active"),
    ]);
    let check = checked(&record);
    assert_eq!(check.medicines.len(), 2);
    assert_eq!(check.findings.len(), 1);
    let finding = &check.findings[0];
    assert_eq!(finding.severity(), Severity::Low);
    assert_eq!(finding.matched, ["furosemide", "furosemide"]);
    assert_eq!(
        check
            .medicines
            .iter()
            .find(|m| m.shown == "Lasix 40mg")
            .unwrap()
            .references,
        ["MedicationStatement/m1", "MedicationStatement/m3"]
    );
}

#[test]
fn an_allergy_to_the_very_ingredient_beats_its_class_row() {
    let record = record_with(&[
        statement("m1", "Naproxen 250mg tablets", "active"),
        allergy("a1", "naproxen"),
    ]);
    let check = checked(&record);
    assert_eq!(check.findings.len(), 1);
    assert_eq!(check.findings[0].row.a, Term::Same);
    assert_eq!(check.findings[0].matched, ["naproxen", "naproxen"]);
}

#[test]
fn a_sensitive_medicine_is_checked_too() {
    let mut sensitive = statement("m2", "Sertraline 50mg", "active");
    sensitive["meta"] =
        json!({"tag": [{"system": crate::section::SECTION_TAG_SYSTEM, "code": "sensitive"}]});
    let record = record_with(&[
        statement("m1", "Ibuprofen 400mg", "active"),
        sensitive.clone(),
    ]);
    assert_eq!(crate::section::place(&sensitive), Section::Sensitive);
    let check = checked(&record);
    assert_eq!(check.findings.len(), 1, "{:?}", summary(&check));
    let summary_only = check_sections(&record, &[Section::Summary]);
    assert!(
        summary_only.findings.is_empty(),
        "a reader of the summary alone sees neither"
    );
}

fn check_sections(record: &Record, sections: &[Section]) -> Check {
    check(record, sections, &[Table::shipped()]).unwrap()
}

// --- The tables -------------------------------------------------------------------------------

#[test]
fn every_shipped_row_has_a_source_with_a_link_and_names_only_known_terms() {
    let rows = Table::shipped().rows();
    assert!((20..=40).contains(&rows.len()), "{} rows", rows.len());
    for row in rows {
        let at = format!("table.csv line {}", row.line);
        assert!(row.source.citation().len() > 20, "{at}: a citation");
        let link = row.source.link();
        assert!(
            link.starts_with("https://")
                || link.starts_with("http://")
                || link.starts_with("doi:10."),
            "{at}: link {link}"
        );
        assert!(row.why.len() > 20, "{at}: a reason");
        for term in [&row.a, &row.b] {
            match term {
                Term::Same => {}
                // Table names, not synonyms: the table is read by people too.
                Term::Ingredient(name) => assert!(ingredient_named(name).is_some(), "{at}: {name}"),
                Term::Class(name) => assert!(class_named(name).is_some(), "{at}: {name}"),
            }
        }
        assert_eq!(row.origin, Origin::Shipped);
    }
    assert!(Table::shipped().extra_names().is_empty());
}

#[test]
fn the_shipped_table_reads_back_from_its_own_csv() {
    let again = Table::parse(Table::shipped().to_csv().as_bytes(), Origin::Shipped).unwrap();
    let strip = |t: &Table| -> Vec<Row> {
        t.rows()
            .iter()
            .map(|r| Row {
                line: 0,
                ..r.clone()
            })
            .collect()
    };
    assert_eq!(strip(&again), strip(Table::shipped()));
}

const HEADER: &str = "a,b,kind,severity,why,source,link\n";

fn imported(text: &str) -> Result<Table, TableError> {
    Table::parse(text.as_bytes(), Origin::Imported)
}

#[test]
fn an_imported_row_without_a_source_is_refused_naming_its_line() {
    let text = format!(
        "{HEADER}# a comment\ndigoxin,amiodarone,drug-drug,high,Raises digoxin levels.,Some book 2020,https://example.org\nwarfarin,aspirin,drug-drug,high,Bleeding.,,https://example.org\n"
    );
    let error = imported(&text).unwrap_err();
    assert_eq!(
        error,
        TableError::Row {
            place: "line",
            number: 4,
            problem: RowProblem::NoSource
        }
    );
    assert!(
        error.to_string().starts_with("line 4: no source"),
        "{error}"
    );
    let no_link = format!("{HEADER}warfarin,aspirin,drug-drug,high,Bleeding.,A source 2020, \n");
    assert_eq!(
        imported(&no_link).unwrap_err(),
        TableError::Row {
            place: "line",
            number: 2,
            problem: RowProblem::NoLink
        }
    );
    let json = r#"[{"a": "warfarin", "b": "aspirin", "kind": "drug-drug", "severity": "high",
        "why": "Bleeding.", "source": " ", "link": "https://example.org"}]"#;
    assert_eq!(
        imported(json).unwrap_err(),
        TableError::Row {
            place: "entry",
            number: 1,
            problem: RowProblem::NoSource
        }
    );
}

#[test]
fn an_imported_table_is_bounded_and_says_what_is_wrong() {
    let huge = vec![b'a'; MEDICINES_TABLE_BYTES_MAX + 1];
    assert!(matches!(
        Table::parse(&huge, Origin::Imported),
        Err(TableError::TooLarge { .. })
    ));
    assert!(matches!(
        imported("a,b\n"),
        Err(TableError::Header { line: 1, .. })
    ));
    assert_eq!(imported(HEADER), Err(TableError::Empty));
    let cases = [
        (
            "warfarin,aspirin,drug-drug,severe,Why.,Src,https://x",
            RowProblem::Severity("severe".into()),
        ),
        (
            "warfarin,aspirin,interaction,high,Why.,Src,https://x",
            RowProblem::Kind("interaction".into()),
        ),
        (
            "warfarin,aspirin,drug-drug,high,Why.,Src",
            RowProblem::Fields(6),
        ),
        (
            "*,aspirin,drug-drug,high,Why.,Src,https://x",
            RowProblem::LoneSame,
        ),
        (
            "war/farin,aspirin,drug-drug,high,Why.,Src,https://x",
            RowProblem::BadName("war/farin".into()),
        ),
        (
            "warfarin,aspirin,drug-drug,high,\"Why.,Src,https://x",
            RowProblem::Unterminated,
        ),
    ];
    for (line, problem) in cases {
        assert_eq!(
            imported(&format!("{HEADER}{line}\n")),
            Err(TableError::Row {
                place: "line",
                number: 2,
                problem
            }),
            "{line}"
        );
    }
    // The shipped table may name only what the vocabulary knows.
    let unknown = format!("{HEADER}digoxin,amiodarone,drug-drug,high,Why.,Src,https://x\n");
    assert_eq!(
        Table::parse(unknown.as_bytes(), Origin::Shipped),
        Err(TableError::Row {
            place: "line",
            number: 2,
            problem: RowProblem::Unknown("digoxin".into())
        })
    );
}

#[test]
fn an_imported_table_holds_up_to_its_row_bound() {
    let table = |rows: usize| {
        let mut text = HEADER.to_string();
        for i in 0..rows {
            text += &format!(
                "drug{i},drug{},drug-drug,low,Why.,A source 2020,https://x/{i}\n",
                i + 1
            );
        }
        imported(&text)
    };
    let full = table(MEDICINES_TABLE_ROWS_MAX).unwrap();
    assert_eq!(full.rows().len(), MEDICINES_TABLE_ROWS_MAX);
    assert_eq!(full.extra_names().len(), MEDICINES_TABLE_ROWS_MAX + 1);
    assert_eq!(
        table(MEDICINES_TABLE_ROWS_MAX + 1),
        Err(TableError::TooManyRows {
            max: MEDICINES_TABLE_ROWS_MAX
        })
    );
    // Thousands of rows and names do not change what the check finds in a record.
    let record = record_with(&[
        statement("m1", "drug7 5mg", "active"),
        statement("m2", "Drug8 oral solution", "active"),
        statement("m3", "Warfarin 1mg", "active"),
    ]);
    let found = check(&record, &CHECKED_SECTIONS, &[Table::shipped(), &full]).unwrap();
    assert_eq!(found.findings.len(), 1);
    assert_eq!(found.findings[0].row.line, 9, "drug7,drug8 is on line 9");
}

#[test]
fn an_imported_table_adds_names_that_match_medicines_by_their_words() {
    let table = imported(&format!(
        "{HEADER}Digoxin,Amiodarone,drug-drug,high,\"Amiodarone raises digoxin levels.\",\"A Book, 2020\",https://example.org/a\nacetaminophen,nsaid,drug-drug,low,Synonyms resolve.,A Book 2020,doi:10.1/x\n"
    ))
    .unwrap();
    assert_eq!(table.extra_names(), BTreeSet::from(["digoxin".to_string()]));
    assert_eq!(table.rows()[1].a, Term::Ingredient("paracetamol".into()));
    assert_eq!(table.rows()[1].b, Term::Class("nsaids"));
    let record = record_with(&[
        statement("m1", "Digoxin 125 microgram tablets", "active"),
        statement("m2", "Amiodarone 200mg", "active"),
    ]);
    let check = check(&record, &CHECKED_SECTIONS, &[Table::shipped(), &table]).unwrap();
    assert_eq!(check.findings.len(), 1);
    assert_eq!(check.findings[0].row.origin, Origin::Imported);
    assert_eq!(check.findings[0].source().citation(), "A Book, 2020");
    // Without the imported table, the shipped one says nothing of digoxin.
    assert!(checked(&record).findings.is_empty());
}

#[test]
fn a_json_table_reads_as_its_csv_does() {
    let json = r#"[{"a": "warfarin", "b": "aspirin", "kind": "drug-drug", "severity": "high",
        "why": "Bleeding, more of it.", "source": "A \"quoted\" source, 2020", "link": "https://example.org"}]"#;
    let from_json = imported(json).unwrap();
    let from_csv = imported(&from_json.to_csv()).unwrap();
    assert_eq!(from_json.rows()[0].source, from_csv.rows()[0].source);
    assert_eq!(from_json.rows()[0].why, from_csv.rows()[0].why);
    assert!(matches!(imported("[{\"a\": 1}]"), Err(TableError::Json(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_is_read_or_refused_never_a_panic(text in "\\PC{0,400}") {
        let _ = Table::parse(text.as_bytes(), Origin::Imported);
        let _ = Table::parse(format!("{HEADER}{text}").as_bytes(), Origin::Imported);
    }

    #[test]
    fn rows_written_as_csv_read_back_the_same(
        why in "[^\\x00]{1,80}",
        citation in "[^\\x00]{1,80}",
        severity in prop::sample::select(vec!["low", "moderate", "high"]),
    ) {
        prop_assume!(!why.trim().is_empty() && !citation.trim().is_empty());
        let json = serde_json::json!([{"a": "warfarin", "b": "nsaids", "kind": "drug-drug",
            "severity": severity, "why": why, "source": citation, "link": "https://example.org"}]);
        let table = imported(&json.to_string()).unwrap();
        let again = imported(&table.to_csv()).unwrap();
        prop_assert_eq!(&table.rows()[0].why, &again.rows()[0].why);
        prop_assert_eq!(&table.rows()[0].source, &again.rows()[0].source);
        prop_assert_eq!(table.rows()[0].severity, again.rows()[0].severity);
    }
}

// --- The vocabulary ----------------------------------------------------------------------------

#[test]
fn the_vocabulary_names_each_thing_once_and_every_class_it_uses() {
    let mut names = BTreeSet::new();
    for class in CLASSES {
        assert!(names.insert(class.name), "{} twice", class.name);
    }
    for ingredient in INGREDIENTS {
        assert!(names.insert(ingredient.name), "{} twice", ingredient.name);
        assert_eq!(
            words(ingredient.name).join(" "),
            ingredient.name,
            "{}: lowercase words",
            ingredient.name
        );
        for class in ingredient.classes {
            assert!(
                class_named(class).is_some(),
                "{}: class {class}",
                ingredient.name
            );
        }
    }
    // Every class has a member or is named by words or codes: none is dead.
    for class in CLASSES {
        let used = INGREDIENTS.iter().any(|i| i.classes.contains(&class.name));
        assert!(used, "class {} has no ingredient", class.name);
    }
}

#[test]
fn records_name_medicines_in_many_ways() {
    let none = ExtraNames::default();
    let read = |text: &str| {
        resolve([text], [], &none)
            .ingredients
            .into_iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(read("Naproxen sodium 220 MG Oral Tablet"), ["naproxen"]);
    // Synthea's misspelling, matched on purpose.
    assert_eq!(read("Simvistatin 10 MG"), ["simvastatin"]);
    assert_eq!(read("Lasix 40mg"), ["furosemide"]);
    assert_eq!(
        read("24 HR metoprolol succinate 100 MG Extended Release Oral Tablet [Toprol]"),
        ["metoprolol"]
    );
    assert_eq!(
        read("Acetaminophen 300 MG / HYDROcodone Bitartrate 5 MG [Vicodin]"),
        ["hydrocodone", "paracetamol"]
    );
    assert_eq!(read("Co-codamol 30/500"), ["codeine", "paracetamol"]);
    assert_eq!(read("Co-amoxiclav 625mg"), ["amoxicillin"]);
    // Whole words only.
    assert!(read("Aspirinate").is_empty());
    assert!(read("Black Cohosh Extract herbal supplement").is_empty());
    let classes = |text: &str| {
        resolve([text], [], &none)
            .classes
            .into_iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(classes("NSAIDs"), ["nsaids"]);
    assert_eq!(classes("Non-steroidal anti-inflammatory drugs"), ["nsaids"]);
    assert_eq!(classes("penicillin"), ["penicillins"]);
    let coded = resolve([], [(RXNORM, "849574")], &none);
    assert_eq!(
        coded.ingredients.into_iter().collect::<Vec<_>>(),
        ["naproxen"]
    );
    let class_code = resolve([], [(SNOMED, "373270004")], &none);
    assert_eq!(
        class_code.classes.into_iter().collect::<Vec<_>>(),
        ["penicillins"]
    );
    assert!(
        resolve([], [(SNOMED, "849574")], &none).is_empty(),
        "codes are read in their own system"
    );
}
