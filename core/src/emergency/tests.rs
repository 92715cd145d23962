//! Tests of the emergency summary and card: what goes on it, the document, sealing and
//! opening, and fitting one QR code.

use jiff::civil::date;
use serde_json::json;

use super::*;
use crate::{fhir::validate, test_records::record_with};

fn now() -> Timestamp {
    "2026-03-01T09:00:00Z".parse().unwrap()
}

fn today() -> Date {
    date(2026, 3, 1)
}

fn patient() -> Value {
    json!({"resourceType": "Patient", "id": "p1",
    "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"}],
    "name": [{"given": ["Ada"], "family": "Lovelace"}], "birthDate": "1980-02-03",
    "text": {"status": "generated", "div": "<div>narrative</div>"},
    "photo": [{"contentType": "image/png", "data": "AAAA"}],
    "contact": [
        {"name": {"text": "Bob Friend"}, "telecom": [{"system": "phone", "value": "07700 900001"}]},
        {"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "C"}], "text": "Emergency contact (sister)"}],
         "name": {"given": ["Mary"], "family": "Lovelace"},
         "telecom": [{"system": "phone", "value": "07700 900002"}]}
    ]})
}

fn full_record() -> Record {
    record_with(&[
        patient(),
        json!({"resourceType": "AllergyIntolerance", "id": "a1", "code": {"text": "Penicillin"},
            "criticality": "high", "patient": {"reference": "Patient/p1"}}),
        json!({"resourceType": "AllergyIntolerance", "id": "a2", "code": {"text": "Latex"},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "resolved"}]}}),
        json!({"resourceType": "MedicationStatement", "id": "m1", "status": "active",
            "medicationCodeableConcept": {"text": "Warfarin 3mg tablets"}}),
        json!({"resourceType": "MedicationStatement", "id": "m2", "status": "stopped",
            "medicationCodeableConcept": {"text": "Amoxicillin"}}),
        json!({"resourceType": "Condition", "id": "c1", "code": {"text": "Atrial fibrillation"},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]}}),
        json!({"resourceType": "Condition", "id": "c2", "code": {"coding": [
            {"system": "http://snomed.info/sct", "code": "370143000", "display": "Major depressive disorder"}]},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]}}),
        json!({"resourceType": "Flag", "id": "f1", "status": "active", "code": {"coding": [
            {"system": "http://snomed.info/sct", "code": "304253006", "display": "Not for resuscitation"}]}}),
        json!({"resourceType": "Observation", "id": "bg", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "882-1", "display": "ABO and Rh group"}]},
            "valueCodeableConcept": {"text": "O negative"}, "effectiveDateTime": "2020-01-01"}),
    ])
}

#[test]
fn the_summary_carries_what_a_crew_needs_and_leaves_sensitive_entries_off_unless_chosen() {
    let record = full_record();
    let summary = gather(&record, &Choice::default(), today()).unwrap();
    assert_eq!(summary.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(summary.nhs_number.as_deref(), Some("943 476 5919"));
    assert_eq!(summary.birth_date.as_deref(), Some("1980-02-03"));
    let keys = |items: &[Item]| items.iter().map(|i| i.key.clone()).collect::<Vec<_>>();
    assert_eq!(
        keys(&summary.allergies),
        ["AllergyIntolerance/a1"],
        "resolved left off"
    );
    assert_eq!(
        keys(&summary.medicines),
        ["MedicationStatement/m1"],
        "stopped left off"
    );
    assert_eq!(keys(&summary.problems), ["Condition/c1"]);
    assert_eq!(keys(&summary.decisions), ["Flag/f1"]);
    assert_eq!(summary.blood_group.as_ref().unwrap().key, "Observation/bg");
    assert_eq!(summary.sensitive_left_off, ["Condition/c2"]);
    // The emergency contact first, with how to call them.
    assert_eq!(summary.contacts[0].name, "Mary Lovelace");
    assert_eq!(summary.contacts[0].phone.as_deref(), Some("07700 900002"));
    assert_eq!(summary.contacts[1].name, "Bob Friend");

    let chosen = Choice {
        include: vec!["Condition/c2".into()],
    };
    let summary = gather(&record, &chosen, today()).unwrap();
    assert_eq!(keys(&summary.problems), ["Condition/c1", "Condition/c2"]);
    assert!(summary.problems[1].sensitive);
    assert!(summary.sensitive_left_off.is_empty());
}

#[test]
fn the_document_is_a_minimal_ips_bundle_every_entry_valid_and_every_reference_resolving() {
    let summary = gather(&full_record(), &Choice::default(), today()).unwrap();
    let document = document(&summary, now());
    assert_eq!(document["type"], "document");
    let entries = document["entry"].as_array().unwrap();
    let composition = &entries[0]["resource"];
    assert_eq!(composition["type"]["coding"][0]["code"], "60591-5");
    let titles: Vec<&str> = composition["section"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "Allergies and Intolerances",
            "Medication Summary",
            "Problems",
            "Advance Directives",
            "Results"
        ]
    );
    let urls: Vec<&str> = entries
        .iter()
        .map(|e| e["fullUrl"].as_str().unwrap())
        .collect();
    for entry in entries {
        let resource = &entry["resource"];
        validate::check(resource).unwrap_or_else(|e| panic!("{e:?}: {resource}"));
        assert!(
            resource.get("text").is_none() && resource.get("meta").is_none(),
            "{resource}"
        );
        for reference in crate::fhir::reference::references(resource) {
            assert!(
                urls.contains(&reference),
                "{reference} does not resolve in {document}"
            );
        }
    }
    let patient = &entries[1]["resource"];
    assert_eq!(patient["resourceType"], "Patient");
    assert_eq!(patient["name"][0]["family"], "Lovelace");
    assert_eq!(patient["contact"][1]["telecom"][0]["value"], "07700 900002");
    assert!(patient.get("photo").is_none(), "the card carries no photo");
    assert!(
        !document.to_string().contains("depressive"),
        "sensitive left off"
    );
}

#[test]
fn a_card_opens_to_its_document_and_a_changed_or_foreign_one_does_not() {
    let summary = gather(&full_record(), &Choice::default(), today()).unwrap();
    let key = [7u8; 32];
    let fitted = fit(&summary, &key, now(), &|_| true).unwrap();
    assert!(fitted.dropped.is_empty());
    assert!(fitted.text.starts_with(CARD_PREFIX));
    assert!(fitted.text.len() <= QR_BYTES_MAX, "{}", fitted.text.len());
    let opened = open(&fitted.text).unwrap();
    assert_eq!(opened, document(&summary, now()).tap_ids(&opened));

    // One character of the ciphertext changed: it does not open.
    let mut changed: Vec<char> = fitted.text.chars().collect();
    let at = changed.len() - 30;
    changed[at] = if changed[at] == 'A' { 'B' } else { 'A' };
    let changed: String = changed.into_iter().collect();
    assert!(matches!(open(&changed), Err(CardError::Damaged(_))));
    assert_eq!(open("https://example.com"), Err(CardError::NotACard));
    assert!(matches!(open("PHRE1.a.b.c"), Err(CardError::Damaged(_))));
}

/// Compositions get a fresh id each time: compare the rest.
trait TapIds {
    fn tap_ids(self, like: &Value) -> Value;
}

impl TapIds for Value {
    fn tap_ids(mut self, like: &Value) -> Value {
        self["entry"][0]["fullUrl"] = like["entry"][0]["fullUrl"].clone();
        self["entry"][0]["resource"]["id"] = like["entry"][0]["resource"]["id"].clone();
        self
    }
}

#[test]
fn a_summary_too_big_for_one_code_drops_problems_and_medicines_never_allergies() {
    let mut resources = vec![patient()];
    for i in 0..300 {
        resources.push(json!({"resourceType": "Condition", "id": format!("c{i}"),
            "code": {"text": format!("Condition number {i} with a long descriptive name {}", i * 7919)},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]}}));
    }
    for i in 0..5 {
        resources.push(
            json!({"resourceType": "AllergyIntolerance", "id": format!("a{i}"),
            "code": {"text": format!("Allergen {i}")}}),
        );
    }
    let summary = gather(&record_with(&resources), &Choice::default(), today()).unwrap();
    let fitted = fit(&summary, &[1; 32], now(), &|_| true).unwrap();
    assert!(!fitted.dropped.is_empty());
    assert!(fitted.text.len() <= QR_BYTES_MAX);
    // An encoder that takes less than the byte-mode limit makes the card drop more.
    let tighter = fit(&summary, &[1; 32], now(), &|t| {
        t.len() <= QR_BYTES_MAX - 200
    })
    .unwrap();
    assert!(tighter.dropped.len() > fitted.dropped.len());
    assert!(tighter.text.len() <= QR_BYTES_MAX - 200);
    let opened = open(&fitted.text).unwrap();
    let allergies = opened["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "AllergyIntolerance")
        .count();
    assert_eq!(allergies, 5, "every allergy kept");
}

#[test]
fn a_code_that_inflates_past_the_bound_is_refused() {
    // A hand-made card whose compressed content inflates to megabytes of spaces.
    let bomb = format!(
        "{{\"resourceType\":\"Bundle\",\"type\":\"document\",\"x\":\"{}\"}}",
        " ".repeat(2 * 1024 * 1024)
    );
    let text = seal(&serde_json::from_str::<Value>(&bomb).unwrap(), &[3; 32]);
    assert!(matches!(open(&text), Err(CardError::Damaged(why)) if why.contains("inflates past")));
}

mod links {
    use super::*;
    use crate::emergency::link::*;

    fn made(passcode: Option<&str>) -> (Link, [u8; 32], Value) {
        let summary = gather(&full_record(), &Choice::default(), today()).unwrap();
        let document = document(&summary, now());
        let (link, key) = make(&document, "Emergency summary", 30, passcode, now()).unwrap();
        (link, key, document)
    }

    fn ask(recipient: &str, passcode: Option<&str>) -> ManifestRequest {
        ManifestRequest {
            recipient: recipient.into(),
            passcode: passcode.map(str::to_string),
        }
    }

    #[test]
    fn a_link_carries_its_key_alone_and_its_manifest_gives_the_file_that_key_opens() {
        let (mut link, key, document) = made(Some("472913"));
        assert_eq!(link.id.len(), 43);
        let text = shlink(&link, &key, "https://node.example/shl");
        let payload = parse(&text).unwrap();
        assert_eq!(payload.url, format!("https://node.example/shl/{}", link.id));
        assert_eq!(payload.flag, "P");
        assert_eq!(payload.exp, Some(link.expires_ms / 1000));
        assert!(parse(&format!("https://viewer.example/#{text}")).is_some());
        // What the node keeps does not hold the key, and the file does not open without it.
        let kept = serde_json::to_string(&link).unwrap();
        assert!(!kept.contains(&payload.key));
        assert!(open_jwe(&link.file, &[0; 32]).is_err());

        let Answer::Manifest(manifest) =
            answer(&mut link, &ask("Dr Jones, ambulance", Some("472913")), 0)
        else {
            panic!("refused");
        };
        let file = manifest["files"][0]["embedded"].as_str().unwrap();
        assert_eq!(manifest["files"][0]["contentType"], "application/fhir+json");
        let key: [u8; 32] = B64.decode(&payload.key).unwrap().try_into().unwrap();
        let opened = open_jwe(file, &key).unwrap();
        assert_eq!(opened["entry"][1], document["entry"][1]);
        assert_eq!(link.opened, 1);
    }

    #[test]
    fn wrong_passcodes_are_capped_for_the_links_life_and_revoked_or_lapsed_links_are_gone() {
        let (mut link, _, _) = made(Some("472913"));
        assert_eq!(
            answer(&mut link, &ask("someone", None), 0),
            Answer::WrongPasscode(PASSCODE_ATTEMPTS_MAX - 1)
        );
        for left in (1..PASSCODE_ATTEMPTS_MAX - 1).rev() {
            assert_eq!(
                answer(&mut link, &ask("someone", Some("000000")), 0),
                Answer::WrongPasscode(left)
            );
        }
        assert_eq!(
            answer(&mut link, &ask("someone", Some("000000")), 0),
            Answer::NotFound
        );
        // Disabled for good: even the right passcode.
        assert_eq!(
            answer(&mut link, &ask("someone", Some("472913")), 0),
            Answer::NotFound
        );

        let (mut link, _, _) = made(None);
        assert!(matches!(
            answer(&mut link, &ask(" ", None), 0),
            Answer::BadRequest(_)
        ));
        assert!(matches!(
            answer(&mut link, &ask("Dr Jones", None), 0),
            Answer::Manifest(_)
        ));
        let lapsed = link.expires_ms;
        assert_eq!(
            answer(&mut link, &ask("Dr Jones", None), lapsed),
            Answer::NotFound
        );
        link.revoked = true;
        assert_eq!(
            answer(&mut link, &ask("Dr Jones", None), 0),
            Answer::NotFound
        );

        assert_eq!(
            make(&json!({}), "x", 0, None, now()).unwrap_err(),
            LinkError::Lifetime
        );
        assert_eq!(
            make(&json!({}), "x", 1, Some("12345"), now()).unwrap_err(),
            LinkError::ShortPasscode
        );
    }

    #[test]
    fn an_access_is_an_audit_event_naming_the_recipient_as_claimed_and_where_from() {
        let (link, _, _) = made(None);
        let keys = crate::keystore::Keystore::generate(true);
        let server = crate::party::Party {
            peer: keys.device.peer_id(),
            recipient: keys.age.recipient(),
            name: "laptop".into(),
            role: crate::party::Role::Patient,
            ods: None,
        };
        let opened = Answer::Manifest(json!({}));
        let access = Access {
            recipient: "Dr Jones, ambulance",
            address: "127.0.0.1",
            outcome: &opened,
            at: now(),
        };
        let event = access_event("e1", &link, access, &server, crate::keys::RecordId([1; 16]));
        validate::check(&event).unwrap();
        assert_eq!(crate::section::place(&event), Section::Audit);
        assert_eq!(event["subtype"][0]["code"], EMERGENCY_ACCESS);
        assert_eq!(event["agent"][0]["network"]["address"], "127.0.0.1");
        assert_eq!(event["outcome"], "0");
    }

    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
}

mod break_glass_tests {
    use super::*;
    use crate::{
        card::Card,
        emergency::break_glass::{self, *},
        keystore::Keystore,
        party::{Party, Role},
    };

    const URL: &str = "https://node.example/shl/break-glass";

    fn provider(name: &str, role: Role) -> (Keystore, Party, String) {
        let keys = Keystore::generate(false);
        let party = Party {
            peer: keys.device.peer_id(),
            recipient: keys.age.recipient(),
            name: name.into(),
            role,
            ods: Some("RBN01".into()),
        };
        let card = Card {
            party: party.clone(),
            addrs: vec![],
            created_ms: 0,
        }
        .encode(&keys.device)
        .unwrap();
        (keys, party, card)
    }

    fn document_now() -> Value {
        let summary = gather(&full_record(), &Choice::default(), today()).unwrap();
        document(&summary, now())
    }

    #[test]
    fn a_named_provider_reads_the_summary_until_its_read_ends_and_only_it_can() {
        let (keys, party, card) = provider("St Helens A&E", Role::Provider);
        let at = now().as_millisecond();
        let request = request(&card, &keys.device, URL, "Unconscious after a fall", at);
        let granted_to = check(&request, URL, &[party.peer], at + 60_000).unwrap();
        assert_eq!(granted_to.peer, party.peer);
        let granted = grant(&document_now(), &granted_to, at);
        assert_eq!(granted.expires_ms, at + BREAK_GLASS_HOURS * 3_600_000);
        let opened = break_glass::open(&granted, &keys.age).unwrap();
        assert_eq!(opened["type"], "document");
        // Another node's identity does not open it.
        let (other, _, _) = provider("Elsewhere", Role::Provider);
        assert!(break_glass::open(&granted, &other.age).is_err());
        // The read ends by itself: time passed in, not slept.
        let kept = Kept {
            url: URL.into(),
            reason: "Unconscious after a fall".into(),
            document: opened,
            expires_ms: granted.expires_ms,
        };
        assert!(kept.readable(granted.expires_ms - 1).is_some());
        assert!(kept.readable(granted.expires_ms).is_none());
    }

    #[test]
    fn a_fake_provider_a_forged_signature_a_replay_or_no_reason_is_refused() {
        let (keys, party, card) = provider("St Helens A&E", Role::Provider);
        let at = now().as_millisecond();
        let ok = request(&card, &keys.device, URL, "Unconscious", at);
        // A provider the patient did not name: refused, and named for the audit.
        let (fake_keys, fake, fake_card) = provider("St Helens A&E", Role::Provider);
        let asked = request(&fake_card, &fake_keys.device, URL, "Unconscious", at);
        let (why, who) = check(&asked, URL, &[party.peer], at).unwrap_err();
        assert_eq!(why, Refusal::NotNamed);
        assert_eq!(who.unwrap().peer, fake.peer);
        // The named provider's card with another key's signature.
        let mut forged = request(&card, &fake_keys.device, URL, "Unconscious", at);
        forged.card = card.clone();
        assert_eq!(
            check(&forged, URL, &[party.peer], at).unwrap_err().0,
            Refusal::Unsigned
        );
        // Signed for another node's address, or its reason changed: the signature fails.
        assert_eq!(
            check(
                &ok,
                "https://other.example/shl/break-glass",
                &[party.peer],
                at
            )
            .unwrap_err()
            .0,
            Refusal::Unsigned
        );
        let mut changed = ok.clone();
        changed.reason = "Curious".into();
        assert_eq!(
            check(&changed, URL, &[party.peer], at).unwrap_err().0,
            Refusal::Unsigned
        );
        // Replayed an hour later.
        assert_eq!(
            check(&ok, URL, &[party.peer], at + 3_600_000)
                .unwrap_err()
                .0,
            Refusal::Stale
        );
        // No reason.
        let silent = request(&card, &keys.device, URL, "  ", at);
        assert_eq!(
            check(&silent, URL, &[party.peer], at).unwrap_err().0,
            Refusal::Reason
        );
        // A patient's device is never a provider, even if named.
        let (device_keys, device, device_card) = provider("Someone's phone", Role::Patient);
        let asked = request(&device_card, &device_keys.device, URL, "Curious", at);
        assert_eq!(
            check(&asked, URL, &[device.peer], at).unwrap_err().0,
            Refusal::NotNamed
        );
    }
}
