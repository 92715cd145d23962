//! The emergency link over a real daemon: the patient's node serves the manifest of a SMART
//! Health Link on 127.0.0.1; a clinician with no record opens it through `phr`; the patient's
//! `phr audit` shows the access; wrong passcodes are counted; a revoked link is gone (404); a
//! link whose key was changed does not open.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use common::homes::Homes;

mod common;

fn fails(net: &Homes, home: &str, args: &[&str]) -> String {
    let out = net.run(home, args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "phr {args:?} should be refused: {stderr}"
    );
    stderr
}

#[test]
fn a_clinician_opens_the_patients_link_the_patient_sees_it_and_a_revoked_link_is_gone() {
    let net = Homes::new();
    net.ok(
        "laptop",
        &[
            "init",
            "--name",
            "Martha DeLarosa",
            "--birth-date",
            "1972-05-01",
        ],
    );
    net.ok(
        "laptop",
        &[
            "add",
            "allergy",
            "penicillin",
            "--reaction",
            "anaphylaxis",
            "--criticality",
            "high",
        ],
    );
    net.ok("laptop", &["add", "medication", "Warfarin 3mg tablets"]);
    net.start("laptop", &["--emergency-listen", "127.0.0.1:0"]);
    let made = net.json(
        "laptop",
        &["emergency", "link", "--passcode", "472913", "--days", "7"],
    );
    let link = made["link"].as_str().unwrap().to_string();
    assert!(link.starts_with("shlink:/"), "{made}");

    // A clinician with a home of their own but no record of the patient.
    net.ok(
        "paramedic",
        &[
            "init",
            "--provider",
            "--name",
            "North West Ambulance Service",
        ],
    );
    let refused = fails(
        &net,
        "paramedic",
        &[
            "emergency",
            "open",
            &link,
            "--recipient",
            "Paramedic J. Smith",
        ],
    );
    assert!(refused.contains("asks for a passcode"), "{refused}");
    let refused = fails(
        &net,
        "paramedic",
        &[
            "emergency",
            "open",
            &link,
            "--recipient",
            "Paramedic J. Smith",
            "--passcode",
            "000000",
        ],
    );
    assert!(
        refused.contains("wrong passcode: 9 attempts left"),
        "{refused}"
    );
    let read = net.ok(
        "paramedic",
        &[
            "emergency",
            "open",
            &link,
            "--recipient",
            "Paramedic J. Smith",
            "--passcode",
            "472913",
        ],
    );
    assert!(
        read.contains("penicillin") || read.contains("Penicillin"),
        "{read}"
    );
    assert!(read.contains("Warfarin 3mg tablets"), "{read}");

    // The patient sees both accesses, marked as emergency accesses, with who said they were.
    let audit = net.ok("laptop", &["audit"]);
    assert!(
        audit.contains("EMERGENCY ACCESS: Paramedic J. Smith opened the emergency link"),
        "{audit}"
    );
    assert!(audit.contains("gave a wrong passcode"), "{audit}");
    let links = net.json("laptop", &["emergency", "links"]);
    assert_eq!(links[0]["opened"], 1, "{links}");
    assert_eq!(links[0]["attempts_left"], 9, "{links}");

    // A link whose key was changed does not open.
    let payload = link.trim_start_matches("shlink:/");
    let decoded = String::from_utf8(B64.decode(payload).unwrap()).unwrap();
    let mut fields: serde_json::Value = serde_json::from_str(&decoded).unwrap();
    fields["key"] = serde_json::json!("A".repeat(43));
    let forged = format!("shlink:/{}", B64.encode(fields.to_string()));
    let refused = fails(
        &net,
        "paramedic",
        &[
            "emergency",
            "open",
            &forged,
            "--recipient",
            "Paramedic J. Smith",
            "--passcode",
            "472913",
        ],
    );
    assert!(refused.contains("damaged or was changed"), "{refused}");

    // Revoked: gone.
    let id = made["id"].as_str().unwrap();
    net.ok("laptop", &["emergency", "revoke", &id[..8]]);
    let refused = fails(
        &net,
        "paramedic",
        &[
            "emergency",
            "open",
            &link,
            "--recipient",
            "Paramedic J. Smith",
            "--passcode",
            "472913",
        ],
    );
    assert!(refused.contains("the link is gone"), "{refused}");
}
