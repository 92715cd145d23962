use super::*;
use crate::keys::{AgeIdentity, SigningKey};

fn party(name: &str, ods: Option<&str>) -> Party {
    Party {
        peer: SigningKey::generate().peer_id(),
        recipient: AgeIdentity::generate().recipient(),
        name: name.into(),
        role: Role::Provider,
        ods: ods.map(str::to_string),
    }
}

#[test]
fn an_audit_event_is_fhir_r4_and_names_its_agent_record_and_sections() {
    let gp = party("Leeds GP", Some("B86001"));
    let logged = Logged::read("history", &[Section::Summary, Section::Clinical])
        .of("Condition/asthma".parse().unwrap());
    let at = Timestamp::from_second(1_800_000_000).unwrap();
    let event = audit_event("e1", &logged, &gp, RecordId([7; 16]), at);
    assert_eq!(event["resourceType"], "AuditEvent");
    assert_eq!(crate::section::place(&event), Section::Audit);
    assert_eq!(event["type"]["code"], "rest");
    assert_eq!(event["subtype"][0]["code"], "read");
    assert_eq!(event["action"], "R");
    assert_eq!(event["outcome"], "0");
    assert_eq!(event["recorded"], "2027-01-15T08:00:00Z");
    let agent = &event["agent"][0];
    assert_eq!(agent["requestor"], true);
    assert_eq!(agent["who"]["identifier"]["value"], "B86001");
    assert_eq!(agent["altId"], gp.peer.to_string());
    assert_eq!(
        event["entity"][0]["what"]["identifier"]["value"],
        RecordId([7; 16]).to_string()
    );
    assert_eq!(event["entity"][1]["what"]["reference"], "Condition/asthma");
    assert!(event["source"]["observer"].is_object(), "required in R4");
    assert_eq!(
        event_words(&event),
        "read Condition/asthma in summary, clinical (history)"
    );
}

#[test]
fn an_agent_is_the_signer_only_by_name_and_peer_id() {
    let gp = party("Leeds GP", None);
    let pharmacy = party("Pharmacy", None);
    let signer = Who::of(&gp);
    let logged = Logged::read("show", &[Section::Summary]);
    let at = Timestamp::UNIX_EPOCH;
    let honest = audit_event("a", &logged, &gp, RecordId([1; 16]), at);
    let (name, peer) = claimed_agent(&honest).unwrap();
    assert!(agent_is(&signer, &name, peer.as_deref()));
    let forged = audit_event("b", &logged, &pharmacy, RecordId([1; 16]), at);
    let (name, peer) = claimed_agent(&forged).unwrap();
    assert!(!agent_is(&signer, &name, peer.as_deref()));
    // The signer's PeerId under another name is still not the signer as the ledger names it.
    let mut renamed = honest.clone();
    renamed["agent"][0]["name"] = json!("Dr Somebody Else");
    let (name, peer) = claimed_agent(&renamed).unwrap();
    assert!(!agent_is(&signer, &name, peer.as_deref()));
}

#[test]
fn entry_actors_are_fresh_and_carry_the_signers_key() {
    let peer = SigningKey::generate().peer_id();
    let (a, b) = (entry_actor(&peer), entry_actor(&peer));
    assert_ne!(a, b);
    assert!(crate::changes::actor_of(&peer, &a));
    assert_eq!(a.to_bytes().len(), 32);
}
