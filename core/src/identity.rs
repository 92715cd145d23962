//! One patient per record: who a record is about, whether an imported `Patient` is that person,
//! and merging one that is into the record's own.
//!
//! A record is about one person: its `Patient` (the one `phr init` made, or the first one a
//! record without one took in). An imported `Patient` is the same person when both carry an NHS
//! number and the numbers are equal, or, when either has none, when both carry a birth date and a
//! name and the birth dates and the family and first given names are equal (ignoring case). Two
//! NHS numbers that differ, or a birth date or name that differs, say it is someone else; too
//! little to tell is not a match either. Import refuses a `Patient` that does not match, naming
//! both identities, unless the user says it is the same person.
//!
//! A match is merged into the record's own `Patient` ([`merge`]): what the record's lacks is
//! taken from the imported one (birth date, sex, death, marital status ...), and lists
//! (identifiers, names, addresses, telecom, contacts ...) gain the imported items they do not
//! hold; where both have a single value, the record's stays. The merged `Patient` is written as
//! a new version of the record's own (its history keeps the one before), and every reference to
//! the imported `Patient` in the same file is pointed at the record's.

use serde_json::{Map, Value};

use crate::{
    fhir::reference::ResourceKey,
    nhs::{NHS_NUMBER_SYSTEM, NhsNumber},
    record::{Record, RecordError},
    section::Section,
};

/// Who a `Patient` says it is, as far as matching needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The name as people read it (the first name's text, or given and family).
    pub name: Option<String>,
    /// Every (family, first given) pair, lower case.
    names: Vec<(String, String)>,
    /// The birth date as written.
    pub birth_date: Option<String>,
    /// The NHS number, if it carries a valid one.
    pub nhs_number: Option<String>,
}

impl Identity {
    /// The identity a `Patient` resource carries.
    pub fn of(patient: &Value) -> Identity {
        let names = patient["name"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let display = names.first().and_then(|name| {
            name["text"].as_str().map(str::to_string).or_else(|| {
                let given: Vec<&str> = name["given"]
                    .as_array()
                    .map(|g| g.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let family = name["family"].as_str();
                let words: Vec<&str> = given.into_iter().chain(family).collect();
                (!words.is_empty()).then(|| words.join(" "))
            })
        });
        let pairs = names
            .iter()
            .filter_map(|name| {
                let family = name["family"].as_str()?.trim().to_lowercase();
                let given = name["given"][0].as_str()?.trim().to_lowercase();
                (!family.is_empty() && !given.is_empty()).then_some((family, given))
            })
            .collect();
        let nhs_number = patient["identifier"].as_array().and_then(|ids| {
            ids.iter()
                .filter(|i| i["system"].as_str() == Some(NHS_NUMBER_SYSTEM))
                .find_map(|i| NhsNumber::parse(i["value"].as_str()?).ok())
                .map(|n| n.as_str().to_string())
        });
        Identity {
            name: display,
            names: pairs,
            birth_date: patient["birthDate"].as_str().map(str::to_string),
            nhs_number,
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name.as_deref().unwrap_or("(no name)"))?;
        match &self.birth_date {
            Some(born) => write!(f, ", born {born}")?,
            None => f.write_str(", no birth date")?,
        }
        match self.nhs_number.as_deref().map(NhsNumber::parse) {
            Some(Ok(nhs)) => write!(f, ", NHS number {nhs}"),
            _ => f.write_str(", no NHS number"),
        }
    }
}

/// Whether an imported `Patient` is the record's patient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// The same person.
    Same,
    /// Someone else: what differs.
    Different(String),
    /// Too little to tell: what is missing.
    Unknown(String),
}

/// Matches `imported` against the record's `own` identity (see the module documentation).
pub fn matches(own: &Identity, imported: &Identity) -> Match {
    if let (Some(a), Some(b)) = (&own.nhs_number, &imported.nhs_number) {
        return if a == b {
            Match::Same
        } else {
            Match::Different("the NHS numbers differ".into())
        };
    }
    let (Some(a), Some(b)) = (&own.birth_date, &imported.birth_date) else {
        return Match::Unknown("one of them has no NHS number and no birth date".into());
    };
    if a != b {
        return Match::Different("the birth dates differ".into());
    }
    if own.names.is_empty() || imported.names.is_empty() {
        return Match::Unknown("one of them has no family and given name".into());
    }
    if own.names.iter().any(|name| imported.names.contains(name)) {
        Match::Same
    } else {
        Match::Different("the names differ".into())
    }
}

/// The record's own `Patient` merged with `imported` (see the module documentation): `own`'s
/// id and every value it has, with what it lacks taken from `imported`, and the items of
/// `imported`'s lists it does not hold added to its own.
pub fn merge(own: &Value, imported: &Value) -> Value {
    let mut merged = own.clone();
    let (Some(into), Some(from)) = (merged.as_object_mut(), imported.as_object()) else {
        return merged;
    };
    for (field, value) in from {
        // The resource's own id, metadata and narrative are the record's.
        if matches!(field.as_str(), "resourceType" | "id" | "meta" | "text") {
            continue;
        }
        // One death and one multiple-birth value: a choice type in two spellings.
        if let Some(stem) = choice_stem(field)
            && has_choice(into, stem)
        {
            continue;
        }
        match (into.get_mut(field), value) {
            (None, _) => {
                into.insert(field.clone(), value.clone());
            }
            (Some(Value::Array(have)), Value::Array(more)) => {
                for item in more {
                    if !have.contains(item) {
                        have.push(item.clone());
                    }
                }
            }
            (Some(_), _) => {}
        }
    }
    merged
}

fn choice_stem(field: &str) -> Option<&'static str> {
    ["deceased", "multipleBirth"]
        .into_iter()
        .find(|stem| field.starts_with(stem))
}

fn has_choice(resource: &Map<String, Value>, stem: &str) -> bool {
    resource.keys().any(|key| key.starts_with(stem))
}

/// The record's `Patient`: the one its metadata names as its subject if the record holds it,
/// else the first in `summary` (a record holds one; one made before a record held only one may
/// hold more, and then the first is shown).
pub fn record_patient(record: &Record) -> Result<Option<(ResourceKey, Value)>, RecordError> {
    if let Some(key) = record
        .meta()
        .subject
        .as_deref()
        .and_then(|s| s.parse::<ResourceKey>().ok())
        && let Some(resource) = record.get(&key)?
    {
        return Ok(Some((key, resource)));
    }
    Ok(record
        .resources_of_type(Section::Summary, "Patient")?
        .into_iter()
        .find_map(|resource| Some((ResourceKey::of(&resource)?, resource))))
}

/// Points every `reference` equal to `from` at `to`, anywhere in `value`.
pub fn repoint(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                match item {
                    Value::String(s) if key == "reference" && s == from => *s = to.to_string(),
                    other => repoint(other, from, to),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| repoint(item, from, to)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patient(family: &str, given: &str, born: Option<&str>, nhs: Option<&str>) -> Value {
        let mut p = json!({"resourceType": "Patient", "id": format!("{given}-{family}"),
            "name": [{"family": family, "given": [given]}]});
        if let Some(born) = born {
            p["birthDate"] = json!(born);
        }
        if let Some(nhs) = nhs {
            p["identifier"] = json!([{"system": NHS_NUMBER_SYSTEM, "value": nhs}]);
        }
        p
    }

    fn id(p: &Value) -> Identity {
        Identity::of(p)
    }

    #[test]
    fn the_nhs_number_decides_when_both_have_one() {
        let a = patient("Hyatt", "Fletcher", Some("1915-07-03"), Some("9434765919"));
        let b = patient("Other", "Name", Some("2000-01-01"), Some("9434765919"));
        assert_eq!(matches(&id(&a), &id(&b)), Match::Same);
        let c = patient("Hyatt", "Fletcher", Some("1915-07-03"), Some("9434765870"));
        assert_eq!(
            matches(&id(&a), &id(&c)),
            Match::Different("the NHS numbers differ".into())
        );
    }

    #[test]
    fn otherwise_name_and_birth_date_decide_and_too_little_is_no_match() {
        let own = patient("Hyatt", "Fletcher", Some("1915-07-03"), Some("9434765919"));
        let file = patient("HYATT", "fletcher", Some("1915-07-03"), None);
        assert_eq!(matches(&id(&own), &id(&file)), Match::Same);
        let born_later = patient("Hyatt", "Fletcher", Some("1916-07-03"), None);
        assert!(matches!(
            matches(&id(&own), &id(&born_later)),
            Match::Different(_)
        ));
        let other = patient("Ortiz", "Benedict", Some("1915-07-03"), None);
        assert!(matches!(
            matches(&id(&own), &id(&other)),
            Match::Different(_)
        ));
        let undated = patient("Hyatt", "Fletcher", None, None);
        assert!(matches!(
            matches(&id(&own), &id(&undated)),
            Match::Unknown(_)
        ));
    }

    #[test]
    fn a_merge_keeps_the_records_values_and_adds_what_it_lacks() {
        let own = patient("Hyatt", "Fletcher", Some("1915-07-03"), Some("9434765919"));
        let mut file = patient("Hyatt", "Fletcher", Some("1915-07-03"), None);
        file["identifier"] = json!([{"system": "https://example.org/mrn", "value": "42"}]);
        file["gender"] = json!("male");
        file["deceasedDateTime"] = json!("1990-01-01T00:00:00Z");
        file["name"] = json!([{"family": "Hyatt", "given": ["Fletcher"], "prefix": ["Mr."]}]);
        let merged = merge(&own, &file);
        assert_eq!(merged["id"], own["id"]);
        assert_eq!(merged["identifier"].as_array().unwrap().len(), 2);
        assert_eq!(merged["gender"], "male");
        assert_eq!(merged["deceasedDateTime"], "1990-01-01T00:00:00Z");
        assert_eq!(merged["name"].as_array().unwrap().len(), 2);
        // One death value: a record that says the patient is alive keeps saying so.
        let mut alive = own.clone();
        alive["deceasedBoolean"] = json!(false);
        assert!(merge(&alive, &file).get("deceasedDateTime").is_none());
    }
}
