//! Which resources are current: the status rules shared by the plain-language view and the
//! International Patient Summary, so both show the same allergies, problems and medicines.

use super::model::{
    AllergyIntolerance, CodeableConcept, Condition, Immunization, MedicationRequest,
    MedicationStatement, Observation,
};

/// Whether any resource is marked as recorded by mistake: its `status` (or a Goal's
/// `lifecycleStatus`) is `entered-in-error`, or its `verificationStatus` (a Condition's or an
/// AllergyIntolerance's) has that code.
pub fn is_entered_in_error(resource: &serde_json::Value) -> bool {
    const CODE: &str = "entered-in-error";
    let plain = |element: &str| resource.get(element).and_then(|v| v.as_str()) == Some(CODE);
    let coded = resource
        .get("verificationStatus")
        .and_then(|v| v.get("coding"))
        .and_then(|c| c.as_array())
        .is_some_and(|codings| {
            codings
                .iter()
                .any(|c| c.get("code").and_then(|v| v.as_str()) == Some(CODE))
        });
    plain("status") || plain("lifecycleStatus") || coded
}

fn status_is(concept: Option<&CodeableConcept>, codes: &[&str]) -> bool {
    concept.is_some_and(|c| codes.iter().any(|code| c.has_code(code)))
}

/// An allergy still to warn about: not refuted, not entered in error, not inactive or resolved.
pub fn allergy_is_current(a: &AllergyIntolerance) -> bool {
    !status_is(
        a.verification_status.as_ref(),
        &["refuted", "entered-in-error"],
    ) && !status_is(a.clinical_status.as_ref(), &["inactive", "resolved"])
}

/// A problem that is active: clinical status active, recurrence or relapse (or not stated),
/// no abatement, and not refuted or entered in error.
pub fn condition_is_active(c: &Condition) -> bool {
    let active = match &c.clinical_status {
        None => true,
        Some(status) => ["active", "recurrence", "relapse"]
            .iter()
            .any(|code| status.has_code(code)),
    };
    active
        && c.abatement_date_time.is_none()
        && !status_is(
            c.verification_status.as_ref(),
            &["refuted", "entered-in-error"],
        )
}

/// A medicine the patient takes now, by statement.
pub fn statement_is_current(m: &MedicationStatement) -> bool {
    matches!(m.status.as_deref(), Some("active" | "intended" | "on-hold"))
}

/// A medicine the patient takes now, by prescription.
pub fn request_is_current(m: &MedicationRequest) -> bool {
    matches!(m.status.as_deref(), Some("active" | "on-hold"))
}

/// An immunisation that was given.
pub fn immunization_was_given(i: &Immunization) -> bool {
    matches!(i.status.as_deref(), None | Some("completed"))
}

/// A result worth showing: not cancelled or entered in error.
pub fn observation_is_valid(o: &Observation) -> bool {
    !matches!(o.status.as_deref(), Some("cancelled" | "entered-in-error"))
}
