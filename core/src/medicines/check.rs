//! The check itself: a record's current medicines and allergies, read as ingredients and
//! classes, against the rows of the tables.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::{
    table::{Kind, Row, Severity, Source, Table, Term},
    vocabulary::{self, ExtraNames, Resolved},
};
use crate::{
    fhir::{
        model::{AllergyIntolerance, CodeableConcept, view},
        reference::ResourceKey,
        status,
    },
    record::{Record, RecordError},
    section::Section,
    view::{
        CurrentMedicine, current_medicines, medicine_name, named_other_than_patient,
        referenced_medication, text_of,
    },
};

/// The sections the check reads medicines and allergies from, where the reader may read them:
/// the summary (where they belong), sensitive (an entry the patient marked so), and requests
/// (prescriptions in flight between the patient and a practice).
pub const CHECKED_SECTIONS: [Section; 3] =
    [Section::Summary, Section::Sensitive, Section::Requests];

/// A current medicine or allergy, as the check read it. Entries that name the same thing are
/// one item, as the summary shows them as one line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Item {
    /// What the record calls it.
    pub shown: String,
    /// Its resources (`Type/id`); the first is the one shown.
    pub references: Vec<String>,
    /// Who prescribed or recorded it, when not the patient.
    pub by: Option<String>,
    /// The ingredients found in it.
    pub ingredients: Vec<String>,
    /// The classes found in it (of its ingredients, or named directly).
    pub classes: Vec<String>,
}

impl Item {
    /// Whether the check recognised nothing in it: a medicine it cannot check, or an allergy to
    /// something that is no medicine it knows (a food, for instance).
    pub fn unrecognised(&self) -> bool {
        self.ingredients.is_empty() && self.classes.is_empty()
    }

    fn matches(&self, term: &Term) -> bool {
        match term {
            Term::Same => !self.ingredients.is_empty(),
            Term::Ingredient(name) => self.ingredients.contains(name),
            Term::Class(name) => self.classes.iter().any(|c| c == name),
        }
    }
}

/// One thing to ask a pharmacist or GP about: two items and the row that says why they clash.
/// A finding is only ever made from a row, and a row always has its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// For a drug-allergy finding, the allergy; else one of the two medicines.
    pub a: Item,
    /// The medicine.
    pub b: Item,
    /// What of each the row matched, in words: an ingredient or a class.
    pub matched: [String; 2],
    /// The row.
    pub row: Row,
}

impl Finding {
    /// How much it matters.
    pub fn severity(&self) -> Severity {
        self.row.severity
    }

    /// Drug-drug or drug-allergy.
    pub fn kind(&self) -> Kind {
        self.row.kind
    }

    /// Why, in a patient's words.
    pub fn why(&self) -> &str {
        &self.row.why
    }

    /// Where it is written.
    pub fn source(&self) -> &Source {
        &self.row.source
    }

    /// Whether `reference` (`Type/id`) is one of the two items' resources.
    pub fn involves(&self, reference: &str) -> bool {
        [&self.a, &self.b]
            .iter()
            .any(|item| item.references.iter().any(|r| r == reference))
    }
}

/// What the check found, and what it looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Check {
    /// The findings, most severe first.
    pub findings: Vec<Finding>,
    /// The current medicines it read.
    pub medicines: Vec<Item>,
    /// The current allergies it read.
    pub allergies: Vec<Item>,
}

impl Check {
    /// The findings that involve the resource `reference` (`Type/id`): what adding it brought.
    pub fn involving<'a>(&'a self, reference: &'a str) -> impl Iterator<Item = &'a Finding> {
        self.findings.iter().filter(move |f| f.involves(reference))
    }
}

/// Checks the current medicines and allergies of `sections` of `record` against the rows of
/// `tables` (the shipped table first, then an imported one).
pub fn check(
    record: &Record,
    sections: &[Section],
    tables: &[&Table],
) -> Result<Check, RecordError> {
    let extra = ExtraNames::new(tables.iter().flat_map(|t| t.extra_names()));
    let mut medicines = Vec::new();
    let mut allergies = Vec::new();
    for &section in sections {
        for current in current_medicines(record, section)? {
            medicines.push(medicine(record, &current, &extra)?);
        }
        for resource in record.resources_of_type(section, "AllergyIntolerance")? {
            allergies.extend(allergy(&resource, &extra));
        }
    }
    let medicines = merged(medicines);
    let allergies = merged(allergies);
    let rows: Vec<&Row> = tables.iter().flat_map(|t| t.rows()).collect();
    let findings = findings(&medicines, &allergies, &rows);
    Ok(Check {
        findings,
        medicines,
        allergies,
    })
}

/// The findings among `medicines` and `allergies`: for each pair, the row that matters most.
pub fn findings(medicines: &[Item], allergies: &[Item], rows: &[&Row]) -> Vec<Finding> {
    // Only rows both of whose sides match something here can match a pair: an imported table
    // may hold thousands of rows, a record a few dozen medicines.
    let items: Vec<&Item> = medicines.iter().chain(allergies).collect();
    let present = |term: &Term| items.iter().any(|item| item.matches(term));
    let rows: Vec<&Row> = rows
        .iter()
        .copied()
        .filter(|row| present(&row.a) && present(&row.b))
        .collect();
    let rows = &rows;
    let mut out = Vec::new();
    for allergy in allergies {
        for medicine in medicines {
            out.extend(best(rows, Kind::DrugAllergy, allergy, medicine));
        }
    }
    for (i, first) in medicines.iter().enumerate() {
        for second in &medicines[i + 1..] {
            out.extend(best(rows, Kind::DrugDrug, first, second));
        }
    }
    out.sort_by(|x, y| {
        (y.severity(), x.kind(), &x.a.shown, &x.b.shown).cmp(&(
            x.severity(),
            y.kind(),
            &y.a.shown,
            &y.b.shown,
        ))
    });
    out
}

/// The row of `kind` that matters most for `a` and `b` (for drug-drug rows, either way round):
/// the most severe, then the most specific (an ingredient over a class), then the first written.
fn best(rows: &[&Row], kind: Kind, a: &Item, b: &Item) -> Option<Finding> {
    let mut candidates = Vec::new();
    for (index, row) in rows.iter().enumerate().filter(|(_, r)| r.kind == kind) {
        if let Some(matched) = matched(row, a, b) {
            candidates.push((row, index, a, b, matched));
        } else if kind == Kind::DrugDrug
            && let Some(matched) = matched(row, b, a)
        {
            candidates.push((row, index, b, a, matched));
        }
    }
    let rank = |c: &(&&Row, usize, &Item, &Item, [String; 2])| {
        let specificity = c.0.a.specificity() + c.0.b.specificity();
        (c.0.severity, specificity, std::cmp::Reverse(c.1))
    };
    let (row, _, a, b, matched) = candidates.into_iter().max_by_key(rank)?;
    Some(Finding {
        a: a.clone(),
        b: b.clone(),
        matched,
        row: (*row).clone(),
    })
}

/// What `row` matched in `a` and `b`, in words, if it matches them in that order.
fn matched(row: &Row, a: &Item, b: &Item) -> Option<[String; 2]> {
    if row.a == Term::Same {
        let shared = a.ingredients.iter().find(|i| b.ingredients.contains(i))?;
        return Some([shared.clone(), shared.clone()]);
    }
    (a.matches(&row.a) && b.matches(&row.b)).then(|| [row.a.shown().into(), row.b.shown().into()])
}

/// A current medicine as an item: named as the summary names it, read from its words and codes
/// and from those of the `Medication` it refers to.
fn medicine(
    record: &Record,
    current: &CurrentMedicine,
    extra: &ExtraNames,
) -> Result<Item, RecordError> {
    let CurrentMedicine {
        concept,
        reference,
        by,
        resource,
        ..
    } = current;
    let shown = medicine_name(record, resource, concept.as_ref(), reference.as_ref())?;
    let referenced = referenced_medication(record, resource, reference.as_ref())?;
    let concepts: Vec<&CodeableConcept> = concept
        .iter()
        .chain(referenced.as_ref().and_then(|m| m.code.as_ref()))
        .collect();
    let mut texts = vec![shown.clone()];
    texts.extend(reference.as_ref().and_then(|r| r.display.clone()));
    let resolved = resolve(&concepts, &texts, extra);
    Ok(item(shown, resource, by.clone(), resolved))
}

/// A current allergy as an item; `None` for one that is not current (refuted, entered in
/// error, inactive or resolved).
fn allergy(resource: &Value, extra: &ExtraNames) -> Option<Item> {
    let a = view::<AllergyIntolerance>(resource).filter(status::allergy_is_current)?;
    let shown = text_of(a.code.as_ref()).unwrap_or_else(|| "Substance not named".into());
    let resolved = resolve(
        &a.code.iter().collect::<Vec<_>>(),
        std::slice::from_ref(&shown),
        extra,
    );
    let by = named_other_than_patient(&[&a.recorder, &a.asserter]);
    Some(item(shown, resource, by, resolved))
}

fn resolve(concepts: &[&CodeableConcept], texts: &[String], extra: &ExtraNames) -> Resolved {
    let codings = concepts.iter().flat_map(|c| &c.coding);
    let mut words: Vec<&str> = texts.iter().map(String::as_str).collect();
    words.extend(concepts.iter().filter_map(|c| c.text.as_deref()));
    words.extend(codings.clone().filter_map(|c| c.display.as_deref()));
    let codes = codings.filter_map(|c| Some((c.system.as_deref()?, c.code.as_deref()?)));
    vocabulary::resolve(words, codes, extra)
}

fn item(shown: String, resource: &Value, by: Option<String>, resolved: Resolved) -> Item {
    Item {
        shown,
        references: ResourceKey::of(resource)
            .map(|k| k.to_string())
            .into_iter()
            .collect(),
        by,
        ingredients: resolved.ingredients.into_iter().collect(),
        classes: resolved.classes.into_iter().map(str::to_string).collect(),
    }
}

/// Items of one name as one: their resources, ingredients and classes together, the first
/// prescriber named. Sorted by name.
fn merged(items: Vec<Item>) -> Vec<Item> {
    let mut by_name = BTreeMap::<String, Item>::new();
    for item in items {
        let Some(kept) = by_name.get_mut(&item.shown) else {
            by_name.insert(item.shown.clone(), item);
            continue;
        };
        kept.references.extend(item.references);
        kept.by = kept.by.take().or(item.by);
        for (into, from) in [
            (&mut kept.ingredients, item.ingredients),
            (&mut kept.classes, item.classes),
        ] {
            into.extend(from);
            into.sort();
            into.dedup();
        }
    }
    by_name.into_values().collect()
}
