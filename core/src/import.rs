//! Import: FHIR R4 JSON files into a record, all or nothing, idempotently.
//!
//! A file holds a Bundle of any type (document, message, transaction, batch, collection,
//! searchset, history, and their responses) or a single resource. Import runs in two steps:
//!
//! 1. [`parse`] checks the whole file and returns the resources to store, with references
//!    rewritten (see [`crate::fhir::reference`]). Nothing is written yet, so a file that fails
//!    any check leaves the record exactly as it was.
//! 2. [`apply`] puts each resource into the record. A resource equal to the stored one writes
//!    nothing, so importing the same file twice changes nothing.
//!
//! Errors name the file and where in it the problem is: a line and column for malformed JSON,
//! an entry index and JSON path for FHIR problems.

use std::{collections::BTreeMap, fmt};

use serde_json::Value;

use crate::{
    fhir::{
        is_r4_resource_type, is_valid_id,
        model::{Bundle, Patient, view},
        reference::{ResourceKey, full_url_targets, rewrite_references},
    },
    identity::{Identity, Match},
    nhs::{NHS_NUMBER_SYSTEM, NhsNumber},
    record::{PutOutcome, Record, RecordError, Stamp},
    section::{Section, place},
};

/// The largest file import accepts. The largest lifetime record in the fixtures is 3.9 MB; a
/// file sixteen times that is not a health record but a mistake (or an attack on memory).
pub const IMPORT_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// How deeply Bundles may nest inside Bundles.
const BUNDLE_DEPTH_MAX: usize = 4;

/// Where in a file something is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    /// The file's name as given.
    pub file: String,
    /// Where inside it, e.g. `line 3, column 7` or `entry 12 (Observation/abc), subject.reference`.
    pub at: Option<String>,
}

impl Location {
    /// The same place, narrowed to an element's path inside it.
    fn within(&self, path: String) -> Location {
        Location {
            file: self.file.clone(),
            at: Some(match &self.at {
                Some(at) => format!("{at}, {path}"),
                None => path,
            }),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{}: {at}", self.file),
            None => f.write_str(&self.file),
        }
    }
}

/// Why a file cannot be imported. Each message says what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file has no bytes.
    #[error("{0}: the file is empty; expected FHIR R4 JSON (a Bundle or a single resource)")]
    Empty(Location),
    /// The file is larger than [`IMPORT_FILE_BYTES_MAX`].
    #[error(
        "{location}: the file is {bytes} bytes, more than the {max} bytes phr imports at once; split it into smaller Bundles"
    )]
    TooLarge {
        /// The file.
        location: Location,
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The bytes are not JSON.
    #[error("{location}: not valid JSON: {message}")]
    Malformed {
        /// The file, line and column.
        location: Location,
        /// serde_json's description.
        message: String,
    },
    /// Valid JSON that is not a FHIR resource.
    #[error("{location}: not a FHIR resource: {reason}")]
    NotFhir {
        /// Where.
        location: Location,
        /// What is missing.
        reason: String,
    },
    /// A `resourceType` that FHIR R4 does not define.
    #[error(
        "{location}: unknown resource type '{resource_type}' (not a FHIR R4 resource type; check the spelling and the FHIR version)"
    )]
    UnknownType {
        /// Where.
        location: Location,
        /// The type as written.
        resource_type: String,
    },
    /// A resource id that FHIR does not allow.
    #[error(
        "{location}: invalid id '{id}': FHIR ids are 1-64 characters of A-Z, a-z, 0-9, '-' and '.'"
    )]
    InvalidId {
        /// Where.
        location: Location,
        /// The id as written.
        id: String,
    },
    /// Two entries of one Bundle with the same type and id: which one is meant is unknowable.
    #[error(
        "{location}: {key} is in this Bundle twice (also as entry {first}); a Bundle holds each resource once, so phr cannot tell which one is meant"
    )]
    DuplicateEntry {
        /// Where the second one is.
        location: Location,
        /// The type and id both have.
        key: String,
        /// The index of the first.
        first: usize,
    },
    /// An element FHIR R4 does not allow (see [`crate::fhir::validate`]).
    #[error("{location}: {reason}")]
    Invalid {
        /// Where, including the element's path.
        location: Location,
        /// What is wrong and what FHIR expects.
        reason: String,
    },
    /// A bundle-local reference that names no entry of the bundle.
    #[error("{location}: broken reference '{reference}': no entry of this bundle has that fullUrl")]
    BrokenReference {
        /// Where, including the JSON path of the reference.
        location: Location,
        /// The reference as written.
        reference: String,
    },
    /// An NHS number that fails validation.
    #[error("{location}: invalid NHS number")]
    InvalidNhsNumber {
        /// Where.
        location: Location,
        /// The validation failure.
        source: crate::nhs::NhsNumberError,
    },
    /// A Patient with another NHS number than the record's.
    #[error(
        "{location}: this Patient has NHS number {found}, but this record belongs to NHS number {expected}; import it into that patient's record instead"
    )]
    OtherPatient {
        /// Where.
        location: Location,
        /// The file's NHS number.
        found: String,
        /// The record's.
        expected: String,
    },
    /// The file's `Patient` is not the record's patient, or nothing says it is.
    #[error(
        "{location}: this file is about {found}, but this record is about {expected} ({why}); \
         import it into that person's own record, or, if it is the same person, import it \
         again with --same-person"
    )]
    NotThisPatient {
        /// Where.
        location: Location,
        /// Who the file's `Patient` is.
        found: String,
        /// Who the record's is.
        expected: String,
        /// What differs, or what is missing to tell.
        why: String,
    },
    /// A transaction or batch entry that deletes or patches instead of carrying a resource.
    #[error(
        "{location}: a {method} request; phr imports resources and never deletes or patches from a file"
    )]
    UnsupportedRequest {
        /// Where.
        location: Location,
        /// The HTTP method.
        method: String,
    },
    /// Writing into the record failed.
    #[error("{location}: cannot write this resource")]
    Record {
        /// The resource being written.
        location: Location,
        /// The record's error (boxed: it is large and rare).
        source: Box<RecordError>,
    },
}

/// A resource ready to store, with where it came from.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The resource, references rewritten.
    pub resource: Value,
    /// Its place in the file, for error messages.
    pub location: Location,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    /// Resources new to the record.
    pub added: usize,
    /// Resources that replaced a different stored version.
    pub updated: usize,
    /// Resources already stored exactly so.
    pub unchanged: usize,
    /// Entries with nothing to store (search outcomes, responses without a resource).
    pub skipped: usize,
    /// Resources added or updated, per section.
    pub written: BTreeMap<Section, usize>,
    /// The file's `Patient`s merged into the record's own (see [`crate::identity`]): who each
    /// said it was.
    pub merged: Vec<String>,
    /// The import's id, on every version it wrote: `phr imports undo ID` takes it back.
    pub import: String,
}

/// How [`apply_as`] treats a `Patient` that is not the record's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// The user says the file's `Patient` is the record's patient although its name or birth
    /// date differ, or are missing: merge it. Two NHS numbers that differ are refused all the
    /// same: they are two people.
    pub same_person: bool,
}

/// Checks a whole file and returns its resources, references rewritten. Writes nothing.
pub fn parse(file: &str, bytes: &[u8]) -> Result<(Vec<Parsed>, usize), ImportError> {
    let whole = Location {
        file: file.to_string(),
        at: None,
    };
    if bytes.is_empty() || bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ImportError::Empty(whole));
    }
    let size = bytes.len() as u64;
    if size > IMPORT_FILE_BYTES_MAX {
        return Err(ImportError::TooLarge {
            location: whole,
            bytes: size,
            max: IMPORT_FILE_BYTES_MAX,
        });
    }
    // A UTF-8 byte order mark, as some Windows tools write: JSON has none, but the text after it
    // is what the file means.
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let malformed = |e: serde_json::Error| ImportError::Malformed {
        location: Location {
            file: file.to_string(),
            at: Some(format!("line {}, column {}", e.line(), e.column())),
        },
        message: strip_position(&e.to_string()),
    };
    let value: Value = serde_json::from_slice(bytes).map_err(malformed)?;
    crate::fhir::validate::check_unique_keys(bytes).map_err(|e| ImportError::Invalid {
        location: Location {
            file: file.to_string(),
            at: Some(format!("line {}, column {}", e.line(), e.column())),
        },
        reason: strip_position(&e.to_string()),
    })?;
    let mut out = Vec::new();
    let mut skipped = 0;
    collect(file, value, None, 0, &mut out, &mut skipped)?;
    Ok((out, skipped))
}

/// serde_json appends "at line L column C"; the location already says so.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn check_resource<'a>(value: &'a Value, location: &Location) -> Result<&'a str, ImportError> {
    let Some(object) = value.as_object() else {
        return Err(ImportError::NotFhir {
            location: location.clone(),
            reason: "expected a JSON object".into(),
        });
    };
    let Some(resource_type) = object.get("resourceType").and_then(Value::as_str) else {
        return Err(ImportError::NotFhir {
            location: location.clone(),
            reason: "it has no \"resourceType\"".into(),
        });
    };
    if !is_r4_resource_type(resource_type) {
        return Err(ImportError::UnknownType {
            location: location.clone(),
            resource_type: resource_type.to_string(),
        });
    }
    if let Some(id) = object.get("id") {
        match id.as_str() {
            Some(id) if is_valid_id(id) => {}
            _ => {
                return Err(ImportError::InvalidId {
                    location: location.clone(),
                    id: id.to_string().trim_matches('"').to_string(),
                });
            }
        }
    }
    Ok(resource_type)
}

fn collect(
    file: &str,
    mut value: Value,
    at: Option<String>,
    depth: usize,
    out: &mut Vec<Parsed>,
    skipped: &mut usize,
) -> Result<(), ImportError> {
    let location = Location {
        file: file.to_string(),
        at,
    };
    let resource_type = check_resource(&value, &location)?;
    if resource_type != "Bundle" || depth >= BUNDLE_DEPTH_MAX {
        check_elements(&value, &location)?;
        ensure_id(&mut value);
        let targets = full_url_targets(&[]);
        if let Some(broken) = rewrite_references(&mut value, &targets).into_iter().next() {
            return Err(broken_at(&location, &value, broken));
        }
        check_patient(&value, &location)?;
        out.push(Parsed {
            resource: value,
            location,
        });
        return Ok(());
    }
    let bundle: Bundle = serde_json::from_value(value).map_err(|e| ImportError::NotFhir {
        location: location.clone(),
        reason: format!("its Bundle structure is invalid: {e}"),
    })?;
    // First pass: name every entry, so references between entries can be resolved.
    let mut entries = Vec::new();
    let mut full_urls = Vec::new();
    for (index, entry) in bundle.entry.into_iter().enumerate() {
        let entry_location = Location {
            file: file.to_string(),
            at: Some(entry_label(&location, index, None)),
        };
        let method = entry
            .request
            .as_ref()
            .and_then(|r| r.method.as_deref())
            .unwrap_or("");
        if matches!(method, "DELETE" | "PATCH") {
            return Err(ImportError::UnsupportedRequest {
                location: entry_location,
                method: method.to_string(),
            });
        }
        let is_outcome = entry.search.as_ref().and_then(|s| s.mode.as_deref()) == Some("outcome");
        let Some(mut resource) = entry.resource.filter(|_| !is_outcome) else {
            *skipped += 1;
            continue;
        };
        check_resource(&resource, &entry_location)?;
        if resource["resourceType"] != "Bundle" {
            let key = ResourceKey::of(&resource);
            let labelled = Location {
                file: file.to_string(),
                at: Some(entry_label(&location, index, key.as_ref())),
            };
            check_elements(&resource, &labelled)?;
        }
        if resource.get("id").is_none()
            && let Some(uuid) = entry
                .full_url
                .as_deref()
                .and_then(|u| u.strip_prefix("urn:uuid:"))
            && is_valid_id(uuid)
        {
            resource["id"] = Value::String(uuid.to_string());
        }
        ensure_id(&mut resource);
        let key = ResourceKey::of(&resource).expect("type and id checked above");
        if let Some((first, _, _)) = entries.iter().find(|(_, other, _)| *other == key) {
            return Err(ImportError::DuplicateEntry {
                location: Location {
                    file: file.to_string(),
                    at: Some(entry_label(&location, index, Some(&key))),
                },
                key: key.to_string(),
                first: *first,
            });
        }
        if let Some(url) = entry.full_url {
            full_urls.push((url, key.clone()));
        }
        entries.push((index, key, resource));
    }
    let targets = full_url_targets(&full_urls);
    for (index, key, mut resource) in entries {
        let at = entry_label(&location, index, Some(&key));
        if key.resource_type == "Bundle" {
            collect(file, resource, Some(at), depth + 1, out, skipped)?;
            continue;
        }
        let entry_location = Location {
            file: file.to_string(),
            at: Some(at),
        };
        if let Some(broken) = rewrite_references(&mut resource, &targets)
            .into_iter()
            .next()
        {
            return Err(broken_at(&entry_location, &resource, broken));
        }
        check_patient(&resource, &entry_location)?;
        out.push(Parsed {
            resource,
            location: entry_location,
        });
    }
    Ok(())
}

/// The resource's elements, as FHIR R4 allows them ([`crate::fhir::validate::check`], then the
/// shapes phr types and the codes of required value sets).
fn check_elements(resource: &Value, location: &Location) -> Result<(), ImportError> {
    use crate::fhir::validate;
    validate::check(resource)
        .and_then(|()| validate::check_typed(resource))
        .and_then(|()| validate::check_codes(resource))
        .map_err(|invalid| ImportError::Invalid {
            location: location.within(invalid.path),
            reason: invalid.reason,
        })
}

fn entry_label(bundle: &Location, index: usize, key: Option<&ResourceKey>) -> String {
    let prefix = bundle
        .at
        .as_ref()
        .map(|at| format!("{at}, "))
        .unwrap_or_default();
    match key {
        Some(key) => format!("{prefix}entry {index} ({key})"),
        None => format!("{prefix}entry {index}"),
    }
}

fn broken_at(
    location: &Location,
    _resource: &Value,
    broken: crate::fhir::reference::BrokenReference,
) -> ImportError {
    ImportError::BrokenReference {
        location: location.within(broken.path),
        reference: broken.reference,
    }
}

/// A resource without an id gets one derived from its content, so that importing the same file
/// again finds the same resource instead of adding a copy.
fn ensure_id(resource: &mut Value) {
    if resource.get("id").is_some() {
        return;
    }
    let json = serde_json::to_vec(resource).expect("a JSON value always serialises");
    let id = uuid::Uuid::new_v5(&PHR_ID_NAMESPACE, &json);
    resource["id"] = Value::String(id.to_string());
}

/// The UUID v5 namespace for ids phr derives from content (a random, fixed UUID).
const PHR_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5d1e_4c1b_8e0f_4b7a_9c55_2f0e_3a61_d7c4);

fn check_patient(resource: &Value, location: &Location) -> Result<(), ImportError> {
    if resource.get("resourceType").and_then(Value::as_str) != Some("Patient") {
        return Ok(());
    }
    let patient: Patient = view(resource).unwrap_or_default();
    for identifier in patient
        .identifier
        .iter()
        .filter(|i| i.system.as_deref() == Some(NHS_NUMBER_SYSTEM))
    {
        NhsNumber::parse(identifier.value.as_deref().unwrap_or("")).map_err(|source| {
            ImportError::InvalidNhsNumber {
                location: location.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

/// The NHS number a Patient resource carries, if any (already validated by [`parse`]).
pub fn nhs_number_of(resource: &Value) -> Option<NhsNumber> {
    let patient: Patient = view(resource)?;
    patient
        .identifier
        .iter()
        .filter(|i| i.system.as_deref() == Some(NHS_NUMBER_SYSTEM))
        .find_map(|i| NhsNumber::parse(i.value.as_deref()?).ok())
}

/// Puts parsed resources into the record as one change, refusing a `Patient` that is not the
/// record's patient. On any error the record is rolled back to what it was before the call.
pub fn apply(
    record: &mut Record,
    stamp: Stamp<'_>,
    parsed: &[Parsed],
    skipped: usize,
) -> Result<ImportReport, ImportError> {
    apply_as(record, stamp, parsed, skipped, ImportOptions::default())
}

/// [`apply`], with `options`.
pub fn apply_as(
    record: &mut Record,
    stamp: Stamp<'_>,
    parsed: &[Parsed],
    skipped: usize,
    options: ImportOptions,
) -> Result<ImportReport, ImportError> {
    let result = apply_all(record, stamp, parsed, skipped, options);
    match &result {
        Ok(report) if report.added + report.updated > 0 => {
            record.commit(
                stamp,
                &format!(
                    "import {}: {} resources",
                    report.import,
                    report.added + report.updated
                ),
            );
        }
        Ok(_) => {}
        Err(_) => record.rollback(),
    }
    result
}

/// What the file's `Patient`s become: the record's own (merged with those that match), and
/// the references to point at it.
struct Patients {
    own: Option<(ResourceKey, Value)>,
    /// Whether `own` changed by a merge.
    merged: bool,
    /// `Patient/id` of each merged `Patient`.
    gone: Vec<String>,
    report: Vec<String>,
}

fn sort_patients(
    record: &Record,
    parsed: &[Parsed],
    options: ImportOptions,
) -> Result<Patients, ImportError> {
    let own = crate::identity::record_patient(record).map_err(|source| ImportError::Record {
        location: Location {
            file: parsed
                .first()
                .map(|p| p.location.file.clone())
                .unwrap_or_default(),
            at: None,
        },
        source: Box::new(source),
    })?;
    let mut patients = Patients {
        own,
        merged: false,
        gone: Vec::new(),
        report: Vec::new(),
    };
    // A record made before its Patient carried the NHS number may hold it in its settings.
    let known_nhs = record.meta().nhs_number.clone();
    for item in parsed
        .iter()
        .filter(|p| p.resource["resourceType"] == "Patient")
    {
        let Some(key) = ResourceKey::of(&item.resource) else {
            continue;
        };
        let found = Identity::of(&item.resource);
        let Some((own_key, own_value)) = &patients.own else {
            // A record with no Patient yet takes the file's as its own.
            patients.own = Some((key, item.resource.clone()));
            continue;
        };
        let mut own = Identity::of(own_value);
        if own.nhs_number.is_none() {
            own.nhs_number.clone_from(&known_nhs);
        }
        if let (Some(expected), Some(found)) = (&own.nhs_number, &found.nhs_number)
            && expected != found
        {
            let show = |n: &str| NhsNumber::parse(n).map_or(n.to_string(), |n| n.to_string());
            return Err(ImportError::OtherPatient {
                location: item.location.clone(),
                found: show(found),
                expected: show(expected),
            });
        }
        // The record's own Patient, exported and imported again: an update of itself.
        if *own_key == key {
            continue;
        }
        match crate::identity::matches(&own, &found) {
            Match::Same => {}
            _ if options.same_person => {}
            Match::Different(why) | Match::Unknown(why) => {
                return Err(ImportError::NotThisPatient {
                    location: item.location.clone(),
                    found: found.to_string(),
                    expected: own.to_string(),
                    why,
                });
            }
        }
        let merged = crate::identity::merge(own_value, &item.resource);
        // Imported again: nothing new to merge, and nothing to say.
        if merged != *own_value {
            patients.report.push(found.to_string());
        }
        patients.own = Some((own_key.clone(), merged));
        patients.merged = true;
        patients.gone.push(key.to_string());
    }
    Ok(patients)
}

fn apply_all(
    record: &mut Record,
    stamp: Stamp<'_>,
    parsed: &[Parsed],
    skipped: usize,
    options: ImportOptions,
) -> Result<ImportReport, ImportError> {
    // A birth, an onset or a result cannot be later than today where the import is made (a
    // day of grace for the time zones ahead of UTC).
    let today = stamp.time.to_zoned(jiff::tz::TimeZone::UTC).date();
    for item in parsed {
        if let Some(invalid) = crate::fhir::validate::future_date(&item.resource, today) {
            return Err(ImportError::Invalid {
                location: item.location.within(invalid.path),
                reason: invalid.reason,
            });
        }
    }
    let patients = sort_patients(record, parsed, options)?;
    let import: String = crate::keys::random_array::<4>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut report = ImportReport {
        skipped,
        merged: patients.report.clone(),
        import: import.clone(),
        ..ImportReport::default()
    };
    let own_key = patients.own.as_ref().map(|(key, _)| key.to_string());
    let mut put = |resource: &Value, location: &Location| -> Result<(), ImportError> {
        let outcome = record
            .put_marked(stamp, resource, &[("import", &import)])
            .map_err(|source| ImportError::Record {
                location: location.clone(),
                source: Box::new(source),
            })?;
        match outcome {
            PutOutcome::Added => report.added += 1,
            PutOutcome::Updated => report.updated += 1,
            PutOutcome::Unchanged => report.unchanged += 1,
        }
        if outcome != PutOutcome::Unchanged {
            *report.written.entry(place(resource)).or_default() += 1;
        }
        Ok(())
    };
    let mut own_written = false;
    for item in parsed {
        let key = ResourceKey::of(&item.resource).map(|k| k.to_string());
        if key.as_ref().is_some_and(|k| patients.gone.contains(k)) {
            continue;
        }
        if patients.merged && key.is_some() && key == own_key {
            let (_, merged) = patients.own.as_ref().expect("merged into the record's own");
            put(merged, &item.location)?;
            own_written = true;
            continue;
        }
        if patients.gone.is_empty() {
            put(&item.resource, &item.location)?;
            continue;
        }
        let mut resource = item.resource.clone();
        if let Some(own_key) = &own_key {
            for gone in &patients.gone {
                crate::identity::repoint(&mut resource, gone, own_key);
            }
        }
        put(&resource, &item.location)?;
    }
    if patients.merged && !own_written {
        let (_, merged) = patients.own.as_ref().expect("merged into the record's own");
        let location = parsed
            .iter()
            .find(|p| p.resource["resourceType"] == "Patient")
            .map_or_else(Location::default, |p| p.location.clone());
        put(merged, &location)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_value(value: Value) -> Result<Vec<Parsed>, ImportError> {
        parse("test.json", value.to_string().as_bytes()).map(|(p, _)| p)
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let err = parse(
            "bad.json",
            b"{\n  \"resourceType\": \"Patient\",\n  oops\n}",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad.json: line 3, column 3: not valid JSON: key must be a string"
        );
    }

    #[test]
    fn empty_and_whitespace_files_are_refused() {
        for bytes in [&b""[..], b"  \n"] {
            assert!(matches!(parse("e.json", bytes), Err(ImportError::Empty(_))));
        }
    }

    #[test]
    fn json_that_is_not_fhir_is_refused() {
        let err = parse_value(json!({"name": "x"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.json: not a FHIR resource: it has no \"resourceType\""
        );
        let err = parse_value(json!({"resourceType": "Patinet"})).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("test.json: unknown resource type 'Patinet'"),
            "{err}"
        );
    }

    #[test]
    fn broken_references_are_located() {
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "id": "p"}},
            {"fullUrl": "urn:uuid:o", "resource": {"resourceType": "Observation", "id": "o",
                "subject": {"reference": "urn:uuid:nobody"}}}]});
        let err = parse_value(bundle).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.json: entry 1 (Observation/o), subject.reference: broken reference 'urn:uuid:nobody': no entry of this bundle has that fullUrl"
        );
    }

    #[test]
    fn bundle_references_become_relative_and_ids_come_from_urns() {
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:2b1c1d9e-0000-4000-8000-000000000001", "resource": {"resourceType": "Patient"}},
            {"fullUrl": "https://example.org/fhir/Observation/o", "resource": {"resourceType": "Observation", "id": "o",
                "subject": {"reference": "urn:uuid:2b1c1d9e-0000-4000-8000-000000000001"},
                "hasMember": [{"reference": "https://example.org/fhir/Observation/o"}]}}]});
        let parsed = parse_value(bundle).unwrap();
        assert_eq!(
            parsed[0].resource["id"],
            "2b1c1d9e-0000-4000-8000-000000000001"
        );
        assert_eq!(
            parsed[1].resource["subject"]["reference"],
            "Patient/2b1c1d9e-0000-4000-8000-000000000001"
        );
        assert_eq!(
            parsed[1].resource["hasMember"][0]["reference"],
            "Observation/o"
        );
    }

    #[test]
    fn invalid_nhs_number_is_refused() {
        let patient = json!({"resourceType": "Patient", "id": "p", "identifier": [
            {"system": NHS_NUMBER_SYSTEM, "value": "9434765918"}]});
        let err = parse_value(patient).unwrap_err();
        assert!(
            std::error::Error::source(&err)
                .unwrap()
                .to_string()
                .contains("fails the modulus 11 check"),
            "{err}"
        );
    }

    #[test]
    fn ids_without_urn_are_derived_from_content_deterministically() {
        let a = parse_value(json!({"resourceType": "Basic", "code": {"text": "x"}})).unwrap();
        let b = parse_value(json!({"resourceType": "Basic", "code": {"text": "x"}})).unwrap();
        assert_eq!(a[0].resource["id"], b[0].resource["id"]);
    }

    #[test]
    fn deletes_and_search_outcomes() {
        let delete = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "DELETE", "url": "Patient/p"}}]});
        assert!(matches!(
            parse_value(delete),
            Err(ImportError::UnsupportedRequest { .. })
        ));
        let search = json!({"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": {"resourceType": "OperationOutcome", "id": "w"}, "search": {"mode": "outcome"}},
            {"resource": {"resourceType": "Condition", "id": "c"}, "search": {"mode": "match"}}]});
        let (parsed, skipped) = parse("s.json", search.to_string().as_bytes()).unwrap();
        assert_eq!((parsed.len(), skipped), (1, 1));
    }

    #[test]
    fn a_byte_order_mark_is_read_past_and_a_resource_twice_in_one_bundle_is_refused() {
        let resource = br#"{"resourceType": "Patient", "id": "p"}"#;
        let with_bom = [&b"\xef\xbb\xbf"[..], resource].concat();
        let (parsed, _) = parse("bom.json", &with_bom).unwrap();
        assert_eq!(parsed.len(), 1);
        let twice = json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "Condition", "id": "c", "code": {"text": "Gout"}}},
            {"resource": {"resourceType": "Observation", "id": "c", "status": "final"}},
            {"resource": {"resourceType": "Condition", "id": "c", "code": {"text": "Asthma"}}}]});
        let err = parse_value(twice).unwrap_err();
        assert!(
            matches!(err, ImportError::DuplicateEntry { first: 0, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("Condition/c is in this Bundle twice"),
            "{err}"
        );
    }
}
