//! The summary `phr show` prints first: who the record is about, then allergies, active
//! problems, current medicines, recent results and immunisations, each group in the words a
//! patient reads.

use std::{collections::BTreeMap, fmt};

use jiff::civil::Date;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    Allergy, AllergyReaction, Immunisation, Medicine, PatientHeader, Problem, RECENT_RESULTS_MAX,
    Summary, TestResult, date_part, result::test_result, text_of,
};
use crate::{
    fhir::{
        display,
        model::{
            AllergyIntolerance, CodeableConcept, Condition, HumanName, Immunization, Medication,
            MedicationRequest, MedicationStatement, Observation, Patient, Reference, view,
        },
        reference::ResourceKey,
        status,
    },
    nhs::{NHS_NUMBER_SYSTEM, NhsNumber},
    record::{Record, RecordError},
    section::Section,
};

/// Computes the summary of a record; `today` gives ages (the core never reads a clock).
pub fn summary(record: &Record, today: Date) -> Result<Summary, RecordError> {
    Ok(Summary {
        patient: patient_header(record, today)?,
        allergies: allergies(record)?,
        problems: problems(record)?,
        medicines: medicines(record)?,
        results: recent_results(record)?,
        immunisations: immunisations(record)?,
        conflicts: record.conflicts()?.len(),
        sensitive: record.len(Section::Sensitive),
        in_error: in_error(record)?,
    })
}

/// The entries of the kinds the summary shows that are marked as entered in error.
fn in_error(record: &Record) -> Result<usize, RecordError> {
    const SHOWN: [&str; 6] = [
        "AllergyIntolerance",
        "Condition",
        "MedicationStatement",
        "MedicationRequest",
        "Observation",
        "Immunization",
    ];
    let mut count = 0;
    for section in [Section::Summary, Section::Clinical, Section::Journal] {
        for resource_type in SHOWN {
            count += record
                .resources_of_type(section, resource_type)?
                .iter()
                .filter(|resource| status::is_entered_in_error(resource))
                .count();
        }
    }
    Ok(count)
}

/// The typed views of one resource type in the summary section; resources that do not fit the
/// view are skipped (they are still stored, exported and listed by `section_view`).
fn typed<T: DeserializeOwned>(record: &Record, resource_type: &str) -> Result<Vec<T>, RecordError> {
    let resources = record.resources_of_type(Section::Summary, resource_type)?;
    Ok(resources.iter().filter_map(view).collect())
}

/// Who the record is about: its subject `Patient` (or the first `Patient` of the summary
/// section) and the record's metadata; `today` gives the age.
pub fn patient_header(record: &Record, today: Date) -> Result<PatientHeader, RecordError> {
    let resource = crate::identity::record_patient(record)?
        .map(|(_, resource)| resource)
        .unwrap_or(Value::Null);
    Ok(header_of(
        &resource,
        record.meta().nhs_number.clone(),
        today,
    ))
}

/// The header a `Patient` resource gives (`Value::Null`: none), with `nhs_number` where the
/// Patient carries none; `today` gives the age.
pub fn header_of(resource: &Value, nhs_number: Option<String>, today: Date) -> PatientHeader {
    let fallback_nhs = nhs_number;
    let patient: Patient = view(resource).unwrap_or_default();
    let died = date_part(resource.get("deceasedDateTime").and_then(Value::as_str));
    let deceased =
        died.is_some() || resource.get("deceasedBoolean").and_then(Value::as_bool) == Some(true);
    let birth_date = date_part(patient.birth_date.as_deref());
    // The age of someone who has died is their age at death, not what it would be today.
    let end = match &died {
        Some(d) => d.parse::<Date>().ok(),
        None => Some(today),
    };
    let birth = birth_date.as_deref().and_then(|b| b.parse::<Date>().ok());
    // From the record's Patient, which every device and provider reads alike; a device's own
    // settings only where the Patient carries none (a record made before it did).
    let nhs_number = patient
        .identifier
        .iter()
        .find(|i| i.system.as_deref() == Some(NHS_NUMBER_SYSTEM))
        .and_then(|i| i.value.clone())
        .or(fallback_nhs);
    PatientHeader {
        name: patient
            .name
            .first()
            .map(HumanName::display)
            .filter(|n| !n.is_empty()),
        // An invalid number is shown as written rather than hidden: the patient should see it.
        nhs_number: nhs_number.map(|n| NhsNumber::parse(&n).map_or(n, |valid| valid.to_string())),
        birth_date,
        died,
        deceased,
        age_years: birth
            .zip(end)
            .and_then(|(birth, end)| age_years(birth, end)),
        gender: patient.gender,
    }
}

impl PatientHeader {
    /// The same header with the age as of `today` (at death, if the patient died): a header
    /// kept from an earlier day.
    pub fn aged(mut self, today: Date) -> PatientHeader {
        let birth = self
            .birth_date
            .as_deref()
            .and_then(|b| b.parse::<Date>().ok());
        let end = match &self.died {
            Some(died) => died.parse::<Date>().ok(),
            None => Some(today),
        };
        self.age_years = birth
            .zip(end)
            .and_then(|(birth, end)| age_years(birth, end));
        self
    }
}

fn age_years(birth: Date, on: Date) -> Option<i16> {
    let before_birthday = (on.month(), on.day()) < (birth.month(), birth.day());
    let years = on.year() - birth.year() - i16::from(before_birthday);
    (years >= 0).then_some(years)
}

fn allergies(record: &Record) -> Result<Vec<Allergy>, RecordError> {
    let all = typed::<AllergyIntolerance>(record, "AllergyIntolerance")?;
    let current = all.into_iter().filter(status::allergy_is_current);
    Ok(current
        .map(|a| Allergy {
            by: named_other_than_patient(&[&a.recorder, &a.asserter]),
            substance: text_of(a.code.as_ref()).unwrap_or_else(|| "Substance not named".into()),
            criticality: a.criticality.clone(),
            qualifier: a
                .verification_status
                .as_ref()
                .is_some_and(|v| v.has_code("unconfirmed"))
                .then(|| "unconfirmed".to_string()),
            reactions: a
                .reaction
                .iter()
                .map(|r| AllergyReaction {
                    manifestations: r
                        .manifestation
                        .iter()
                        .filter_map(|m| text_of(Some(m)))
                        .collect(),
                    severity: r.severity.clone(),
                })
                .collect(),
        })
        .collect())
}

fn problems(record: &Record) -> Result<Vec<Problem>, RecordError> {
    let mut by_display = BTreeMap::<String, Problem>::new();
    for c in typed::<Condition>(record, "Condition")?
        .iter()
        .filter(|c| status::condition_is_active(c))
    {
        let display = text_of(c.code.as_ref()).unwrap_or_else(|| "Problem not named".into());
        let onset_start = c.onset_period.as_ref().and_then(|p| p.start.as_deref());
        let since = date_part(
            c.onset_date_time
                .as_deref()
                .or(onset_start)
                .or(c.recorded_date.as_deref()),
        );
        let severity = text_of(c.severity.as_ref());
        let qualifier = c.verification_status.as_ref().and_then(|v| {
            [
                ("unconfirmed", "unconfirmed"),
                ("provisional", "provisional"),
                ("differential", "differential diagnosis"),
            ]
            .into_iter()
            .find(|(code, _)| v.has_code(code))
            .map(|(_, words)| words.to_string())
        });
        let by = named_other_than_patient(&[&c.recorder, &c.asserter]);
        let kept = by_display.entry(display.clone()).or_insert(Problem {
            display,
            since: None,
            severity,
            qualifier: qualifier.clone(),
            by: None,
        });
        if kept.by.is_none() {
            kept.by = by;
        }
        // Recorded again as settled, it is settled.
        if qualifier.is_none() {
            kept.qualifier = None;
        }
        // Synthea records some problems again at every visit: the first onset is the one that counts.
        if since.is_some() && (kept.since.is_none() || since < kept.since) {
            kept.since = since;
        }
    }
    let mut out: Vec<Problem> = by_display.into_values().collect();
    out.sort_by(|a, b| b.since.cmp(&a.since));
    Ok(out)
}

/// A current medicine as one statement or request names it, before the summary shows the
/// medicines of one name as one line. The medicines check reads the same list.
pub(crate) struct CurrentMedicine {
    /// The medicine, as a concept.
    pub(crate) concept: Option<CodeableConcept>,
    /// The medicine, as a reference to a `Medication`.
    pub(crate) reference: Option<Reference>,
    /// How it is taken, in words.
    pub(crate) dosage: Option<String>,
    /// Why it is not being taken right now (on hold, proposed), if it is not.
    pub(crate) qualifier: Option<String>,
    /// Who prescribed or recorded it, when not the patient.
    pub(crate) by: Option<String>,
    /// The statement or request.
    pub(crate) resource: Value,
}

/// The current medicines of `section`: statements and requests whose status says the patient
/// takes them now (`status::statement_is_current`, `status::request_is_current`).
pub(crate) fn current_medicines(
    record: &Record,
    section: Section,
) -> Result<Vec<CurrentMedicine>, RecordError> {
    // Statements and requests name a medicine the same way; gather both.
    let mut current = Vec::new();
    for resource in record.resources_of_type(section, "MedicationStatement")? {
        if let Some(m) = view::<MedicationStatement>(&resource).filter(status::statement_is_current)
        {
            current.push(CurrentMedicine {
                dosage: m.dosage.first().and_then(display::dosage),
                qualifier: paused(m.status.as_deref()),
                by: named_other_than_patient(&[&m.information_source]),
                concept: m.medication_codeable_concept,
                reference: m.medication_reference,
                resource,
            });
        }
    }
    for resource in record.resources_of_type(section, "MedicationRequest")? {
        if let Some(m) = view::<MedicationRequest>(&resource).filter(status::request_is_current) {
            let qualifier = if m.intent.as_deref() == Some("proposal") {
                Some("proposed".into())
            } else {
                paused(m.status.as_deref())
            };
            current.push(CurrentMedicine {
                dosage: m.dosage_instruction.first().and_then(display::dosage),
                qualifier,
                by: named_other_than_patient(&[&m.requester]),
                concept: m.medication_codeable_concept,
                reference: m.medication_reference,
                resource,
            });
        }
    }
    Ok(current)
}

fn medicines(record: &Record) -> Result<Vec<Medicine>, RecordError> {
    let current = current_medicines(record, Section::Summary)?;
    let mut by_name = BTreeMap::<String, Medicine>::new();
    for CurrentMedicine {
        concept,
        reference,
        dosage,
        qualifier,
        by,
        resource,
    } in current
    {
        let name = medicine_name(record, &resource, concept.as_ref(), reference.as_ref())?;
        // One line per medicine, with the first dosage and prescriber that say anything; taken
        // now if any record of it says so.
        let kept = by_name.entry(name.clone()).or_insert_with(|| Medicine {
            name,
            dosage: None,
            qualifier: qualifier.clone(),
            by: None,
        });
        if kept.dosage.is_none() {
            kept.dosage = dosage;
        }
        if kept.by.is_none() {
            kept.by = by;
        }
        if qualifier.is_none() {
            kept.qualifier = None;
        }
    }
    Ok(by_name.into_values().collect())
}

/// The display of the first of `references` that names someone other than the patient: who
/// recorded or prescribed an entry. A reference to a `Patient` (what the patient says of
/// themselves) names no one else.
pub(crate) fn named_other_than_patient(references: &[&Option<Reference>]) -> Option<String> {
    references.iter().find_map(|reference| {
        let reference = reference.as_ref()?;
        let of_patient = reference
            .reference
            .as_deref()
            .is_some_and(|r| r.starts_with("Patient/"));
        (!of_patient)
            .then(|| reference.display.clone())
            .flatten()
            .filter(|d| !d.trim().is_empty())
    })
}

/// A current medicine's status in words, when it is not being taken right now.
fn paused(status: Option<&str>) -> Option<String> {
    match status {
        Some("on-hold") => Some("on hold".into()),
        Some("intended") => Some("intended".into()),
        _ => None,
    }
}

/// What a current medicine is called: its concept's text, else the `Medication` it refers to
/// (contained or stored), else the reference's display.
pub(crate) fn medicine_name(
    record: &Record,
    resource: &Value,
    concept: Option<&CodeableConcept>,
    reference: Option<&Reference>,
) -> Result<String, RecordError> {
    if let Some(name) = text_of(concept) {
        return Ok(name);
    }
    let named =
        referenced_medication(record, resource, reference)?.and_then(|m| text_of(m.code.as_ref()));
    let shown = named.or_else(|| reference.and_then(|r| r.display.clone()));
    Ok(shown.unwrap_or_else(|| "Medicine not named".into()))
}

/// The `Medication` `reference` points to: contained in `resource` (`#id`) or stored in the
/// record (`Medication/id`).
pub(crate) fn referenced_medication(
    record: &Record,
    resource: &Value,
    reference: Option<&Reference>,
) -> Result<Option<Medication>, RecordError> {
    let target = match reference.and_then(|r| r.reference.as_deref()) {
        Some(local) if local.starts_with('#') => contained(resource, &local[1..]),
        Some(key) => match key.parse::<ResourceKey>() {
            Ok(key) => record.get(&key)?,
            Err(_) => None,
        },
        None => None,
    };
    Ok(target.as_ref().and_then(view::<Medication>))
}

fn contained(resource: &Value, id: &str) -> Option<Value> {
    let items = resource.get("contained")?.as_array()?;
    items
        .iter()
        .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
        .cloned()
}

fn recent_results(record: &Record) -> Result<Vec<TestResult>, RecordError> {
    let mut all = Vec::new();
    // The patient's own readings (their journal) count too, shown as home readings: the
    // latest blood pressure is theirs if they took it last.
    for section in [Section::Clinical, Section::Summary, Section::Journal] {
        for resource in record.resources_of_type(section, "Observation")? {
            let Some(o) = view::<Observation>(&resource).filter(status::observation_is_valid)
            else {
                continue;
            };
            if let Some(result) = test_result(&o, section == Section::Journal) {
                all.push((o.when().map(str::to_string), result));
            }
        }
    }
    all.sort_by(|a, b| b.0.cmp(&a.0));
    let mut seen = std::collections::BTreeSet::new();
    let latest = all
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| seen.insert(r.display.clone()));
    Ok(latest.take(RECENT_RESULTS_MAX).collect())
}

fn immunisations(record: &Record) -> Result<Vec<Immunisation>, RecordError> {
    let mut by_vaccine = BTreeMap::<String, Immunisation>::new();
    for i in typed::<Immunization>(record, "Immunization")?
        .iter()
        .filter(|i| status::immunization_was_given(i))
    {
        let vaccine =
            text_of(i.vaccine_code.as_ref()).unwrap_or_else(|| "Vaccine not named".into());
        let date =
            date_part(i.occurrence_date_time.as_deref()).or_else(|| i.occurrence_string.clone());
        let kept = by_vaccine.entry(vaccine.clone()).or_insert(Immunisation {
            vaccine,
            date: None,
            doses: 0,
        });
        kept.doses += 1;
        kept.date = kept.date.take().max(date);
    }
    let mut out: Vec<Immunisation> = by_vaccine.into_values().collect();
    out.sort_by(|a, b| b.date.cmp(&a.date));
    Ok(out)
}

fn group<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    heading: &str,
    empty: &str,
    bullet: &str,
    items: &[T],
) -> fmt::Result {
    writeln!(f, "{heading}")?;
    if items.is_empty() {
        return writeln!(f, "  {empty}");
    }
    items
        .iter()
        .try_for_each(|item| writeln!(f, "  {bullet} {item}"))
}

impl fmt::Display for Summary {
    /// The summary as a patient reads it; every line ends with a newline (print with `print!`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}\n", self.patient)?;
        group(
            f,
            "Allergies",
            "No allergies recorded.",
            "!",
            &self.allergies,
        )?;
        // Someone who has died takes no medicines now: the lists are as they stood at death.
        let (problems, medicines) = match self.patient.deceased {
            true => (
                "Problems recorded as active when they died",
                "Medicines recorded as current when they died",
            ),
            false => ("Active problems", "Current medicines"),
        };
        group(f, problems, "None recorded.", "•", &self.problems)?;
        group(f, medicines, "None recorded.", "•", &self.medicines)?;
        group(
            f,
            "Recent results (latest of each, newest first)",
            "None recorded.",
            "•",
            &self.results,
        )?;
        group(
            f,
            "Immunisations",
            "None recorded.",
            "•",
            &self.immunisations,
        )?;
        // What this view leaves out is said, never hidden in silence.
        match self.sensitive {
            0 => {}
            1 => writeln!(
                f,
                "\n1 entry in your sensitive section is not shown here: `phr show sensitive`."
            )?,
            n => writeln!(
                f,
                "\n{n} entries in your sensitive section are not shown here: `phr show sensitive`."
            )?,
        }
        match self.in_error {
            0 => {}
            1 => writeln!(
                f,
                "\n1 entry marked as entered in error is not shown here: `phr show summary` and \
                 `phr show clinical` list it, marked."
            )?,
            n => writeln!(
                f,
                "\n{n} entries marked as entered in error are not shown here: `phr show summary` \
                 and `phr show clinical` list them, marked."
            )?,
        }
        match self.conflicts {
            0 => Ok(()),
            1 => writeln!(
                f,
                "\n⚠ 1 resource has conflicting versions: run `phr conflicts`."
            ),
            n => writeln!(
                f,
                "\n⚠ {n} resources have conflicting versions: run `phr conflicts`."
            ),
        }
    }
}

impl fmt::Display for PatientHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![
            self.name
                .clone()
                .unwrap_or_else(|| "Name not recorded".into()),
        ];
        parts.push(match &self.nhs_number {
            Some(n) => format!("NHS {n}"),
            None => "no NHS number recorded".into(),
        });
        let age = self
            .age_years
            .map(|a| format!(" (age {a})"))
            .unwrap_or_default();
        match (&self.birth_date, &self.died) {
            (Some(born), Some(died)) => {
                parts.extend([format!("born {born}"), format!("died {died}{age}")])
            }
            (Some(born), None) => parts.push(format!("born {born}{age}")),
            (None, died) => {
                parts.push("date of birth not recorded".into());
                parts.extend(died.as_ref().map(|d| format!("died {d}")));
            }
        }
        if self.deceased && self.died.is_none() {
            parts.push("died (date not recorded)".into());
        }
        parts.extend(self.gender.clone());
        f.write_str(&parts.join(" · "))
    }
}

impl fmt::Display for Allergy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut notes = Vec::new();
        notes.extend(self.criticality.as_deref().map(|c| match c {
            "unable-to-assess" => "criticality not assessed".to_string(),
            other => format!("{other} criticality"),
        }));
        let reactions: Vec<String> = self
            .reactions
            .iter()
            .map(|r| {
                let severity = r
                    .severity
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default();
                format!(
                    "{}{severity}",
                    r.manifestations.join(" and ").to_lowercase()
                )
            })
            .collect();
        match reactions.len() {
            0 => {}
            1 => notes.push(format!("reaction: {}", reactions[0])),
            _ => notes.push(format!("reactions: {}", reactions.join(", "))),
        }
        match notes.is_empty() {
            true => write!(f, "{}", self.substance)?,
            false => write!(f, "{}: {}", self.substance, notes.join("; "))?,
        }
        if let Some(qualifier) = &self.qualifier {
            write!(f, " [{qualifier}]")?;
        }
        match &self.by {
            Some(by) => write!(f, " · recorded by {by}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.display)?;
        if let Some(severity) = &self.severity {
            write!(f, " ({})", severity.to_lowercase())?;
        }
        if let Some(since) = &self.since {
            write!(f, ", since {since}")?;
        }
        if let Some(qualifier) = &self.qualifier {
            write!(f, " [{qualifier}]")?;
        }
        match &self.by {
            Some(by) => write!(f, " · recorded by {by}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Medicine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dosage {
            Some(dosage) => write!(f, "{}: {dosage}", self.name)?,
            None => write!(f, "{}", self.name)?,
        }
        if let Some(qualifier) = &self.qualifier {
            write!(f, " [{qualifier}]")?;
        }
        match &self.by {
            Some(by) => write!(f, " · by {by}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Immunisation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.vaccine,
            self.date.as_deref().unwrap_or("date not recorded")
        )?;
        match self.doses {
            0 | 1 => Ok(()),
            n => write!(f, " ({n} doses)"),
        }
    }
}
