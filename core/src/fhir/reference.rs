//! Resource keys (`Type/id`) and the rewriting of references on import.
//!
//! Inside a Bundle, resources often point at each other by the entry's `fullUrl`
//! (`urn:uuid:...`, or an absolute URL). Those names mean nothing outside the bundle, so on
//! import every `reference` equal to a `fullUrl` of the same bundle becomes the relative
//! `Type/id` of that entry's resource. No other reference is changed: relative references,
//! contained references (`#id`), conditional references (`Type?query`) and absolute URLs that
//! name no entry are kept as written. A `urn:uuid:` or `urn:oid:` reference that names no entry
//! is broken (it can only ever mean an entry of the same bundle) and the import is refused.

use std::{collections::HashMap, fmt, str::FromStr};

use serde_json::Value;

use super::{is_r4_resource_type, is_valid_id};

/// A resource's key within a record: its type and logical id, written `Type/id`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    /// The FHIR resource type, e.g. `Condition`.
    pub resource_type: String,
    /// The logical id.
    pub id: String,
}

impl ResourceKey {
    /// A key from its parts; the caller has validated them.
    pub fn new(resource_type: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            resource_type: resource_type.into(),
            id: id.into(),
        }
    }

    /// The key of a resource value, if it has a known type and a valid id.
    pub fn of(resource: &Value) -> Option<Self> {
        let resource_type = resource.get("resourceType")?.as_str()?;
        let id = resource.get("id")?.as_str()?;
        (is_r4_resource_type(resource_type) && is_valid_id(id))
            .then(|| Self::new(resource_type, id))
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.resource_type, self.id)
    }
}

/// A string that is not `Type/id` with an R4 type and a valid id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a resource reference: expected Type/id, e.g. Condition/3f2a")]
pub struct BadResourceKey(pub String);

impl FromStr for ResourceKey {
    type Err = BadResourceKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadResourceKey(s.to_string());
        let (resource_type, id) = s.split_once('/').ok_or_else(bad)?;
        if !is_r4_resource_type(resource_type) || !is_valid_id(id) {
            return Err(bad());
        }
        Ok(Self::new(resource_type, id))
    }
}

/// A reference that names no entry of its bundle although it can only mean one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenReference {
    /// Where it is, as a JSON path inside the resource, e.g. `subject.reference`.
    pub path: String,
    /// The reference as written.
    pub reference: String,
}

/// The `Type/id` a `fullUrl` stands for, whatever its form: `urn:uuid:`, an absolute RESTful
/// URL ending in `Type/id`, or a relative `Type/id` (seen in the wild although the spec forbids it).
pub fn full_url_targets(full_urls: &[(String, ResourceKey)]) -> HashMap<&str, &ResourceKey> {
    full_urls
        .iter()
        .map(|(url, key)| (url.as_str(), key))
        .collect()
}

/// Rewrites, in place, every `reference` of `resource` that names an entry of the bundle; returns
/// the references that are bundle-local (`urn:uuid:`, `urn:oid:`) but name no entry.
pub fn rewrite_references(
    resource: &mut Value,
    targets: &HashMap<&str, &ResourceKey>,
) -> Vec<BrokenReference> {
    let mut broken = Vec::new();
    let mut path = Vec::new();
    walk(resource, targets, &mut path, &mut broken);
    broken
}

fn walk(
    value: &mut Value,
    targets: &HashMap<&str, &ResourceKey>,
    path: &mut Vec<String>,
    broken: &mut Vec<BrokenReference>,
) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                path.push(key.clone());
                match child {
                    Value::String(reference) if key == "reference" => {
                        if let Some(target) = targets.get(reference.as_str()) {
                            *reference = target.to_string();
                        } else if is_bundle_local(reference) {
                            broken.push(BrokenReference {
                                path: path.join("."),
                                reference: reference.clone(),
                            });
                        }
                    }
                    _ => walk(child, targets, path, broken),
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                if let Some(last) = path.last_mut() {
                    let saved = last.clone();
                    *last = format!("{saved}[{index}]");
                    walk(item, targets, path, broken);
                    *path.last_mut().expect("pushed above") = saved;
                } else {
                    walk(item, targets, path, broken);
                }
            }
        }
        _ => {}
    }
}

fn is_bundle_local(reference: &str) -> bool {
    reference.starts_with("urn:uuid:") || reference.starts_with("urn:oid:")
}

/// Every `reference` string in a resource, for following links (e.g. to include a
/// `Medication` in an export of a `MedicationStatement`).
pub fn references(resource: &Value) -> Vec<&str> {
    fn collect<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match child {
                        Value::String(s) if key == "reference" => out.push(s),
                        _ => collect(child, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| collect(item, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    collect(resource, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrites_bundle_urls_and_keeps_the_rest() {
        let patient = ResourceKey::new("Patient", "p1");
        let urls = vec![("urn:uuid:aaaa".to_string(), patient.clone())];
        let targets = full_url_targets(&urls);
        let mut obs = json!({
            "resourceType": "Observation",
            "subject": {"reference": "urn:uuid:aaaa"},
            "performer": [{"reference": "Practitioner/x"}, {"reference": "#contained"}],
            "basedOn": [{"reference": "ServiceRequest?identifier=a|b"}]
        });
        let broken = rewrite_references(&mut obs, &targets);
        assert!(broken.is_empty());
        assert_eq!(obs["subject"]["reference"], "Patient/p1");
        assert_eq!(obs["performer"][0]["reference"], "Practitioner/x");
        assert_eq!(obs["performer"][1]["reference"], "#contained");
        assert_eq!(
            obs["basedOn"][0]["reference"],
            "ServiceRequest?identifier=a|b"
        );
    }

    #[test]
    fn reports_broken_bundle_local_references_with_their_path() {
        let mut obs = json!({"performer": [{"a": 1}, {"reference": "urn:uuid:missing"}]});
        let broken = rewrite_references(&mut obs, &HashMap::new());
        assert_eq!(
            broken,
            vec![BrokenReference {
                path: "performer[1].reference".into(),
                reference: "urn:uuid:missing".into()
            }]
        );
    }

    #[test]
    fn keys_parse_and_print() {
        let key: ResourceKey = "Condition/abc-1".parse().unwrap();
        assert_eq!(key.to_string(), "Condition/abc-1");
        assert!("Condition".parse::<ResourceKey>().is_err());
        assert!("Nonsense/abc".parse::<ResourceKey>().is_err());
        assert!("Condition/a b".parse::<ResourceKey>().is_err());
    }
}
