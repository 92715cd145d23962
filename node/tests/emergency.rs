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

/// `phr emergency open LINK` on the paramedic's home, as Paramedic J. Smith, with `passcode`:
/// what it printed if it opened, what it said if it was refused (exit 1).
fn paramedic_opens(net: &Homes, link: &str, passcode: Option<&str>) -> Result<String, String> {
    let mut args = vec![
        "emergency",
        "open",
        link,
        "--recipient",
        "Paramedic J. Smith",
    ];
    if let Some(passcode) = passcode {
        args.extend(["--passcode", passcode]);
    }
    let out = net.run("paramedic", &args);
    match out.status.code() {
        Some(0) => Ok(String::from_utf8_lossy(&out.stdout).to_string()),
        Some(1) => Err(String::from_utf8_lossy(&out.stderr).to_string()),
        code => panic!("phr {args:?} ended with {code:?}"),
    }
}

/// The patient whose links these tests serve, in `home`.
fn init_patient(net: &Homes, home: &str) {
    net.ok(
        home,
        &[
            "init",
            "--name",
            "Martha DeLarosa",
            "--birth-date",
            "1972-05-01",
        ],
    );
}

/// A severe penicillin allergy, for the emergency summary to carry.
fn add_allergy(net: &Homes, home: &str) {
    net.ok(
        home,
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
}

#[test]
fn a_clinician_opens_the_patients_link_the_patient_sees_it_and_a_revoked_link_is_gone() {
    let net = Homes::new();
    init_patient(&net, "laptop");
    add_allergy(&net, "laptop");
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
    let refused = paramedic_opens(&net, &link, None).unwrap_err();
    assert!(refused.contains("asks for a passcode"), "{refused}");
    let refused = paramedic_opens(&net, &link, Some("000000")).unwrap_err();
    assert!(
        refused.contains("wrong passcode: 9 attempts left"),
        "{refused}"
    );
    let read = paramedic_opens(&net, &link, Some("472913")).unwrap();
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
    let refused = paramedic_opens(&net, &forged, Some("472913")).unwrap_err();
    assert!(refused.contains("damaged or was changed"), "{refused}");

    // Revoked: gone.
    let id = made["id"].as_str().unwrap();
    net.ok("laptop", &["emergency", "revoke", &id[..8]]);
    let refused = paramedic_opens(&net, &link, Some("472913")).unwrap_err();
    assert!(refused.contains("the link is gone"), "{refused}");

    // The node stops when asked: the emergency server held a handle on it, and a node serving
    // links ran on after `phr node stop` (which waits for the process to end, and fails if it
    // does not).
    net.stop("laptop");
}

#[test]
fn a_named_provider_breaks_the_glass_with_a_reason_and_an_unnamed_one_is_refused_both_logged() {
    let net = Homes::new();
    init_patient(&net, "server");
    add_allergy(&net, "server");
    net.start("server", &["--emergency-listen", "127.0.0.1:0"]);
    net.ok(
        "ae",
        &[
            "init",
            "--provider",
            "--name",
            "St Helens A&E",
            "--ods",
            "RBN01",
        ],
    );
    net.ok(
        "stranger",
        &["init", "--provider", "--name", "St Helens A&E"],
    );
    let card = net.card("ae");
    net.ok("server", &["contacts", "add", &card, "--alias", "ae"]);
    net.ok("server", &["emergency", "break-glass", "allow", "ae"]);
    let allowed = net.json("server", &["emergency", "break-glass", "allowed"]);
    let url = allowed["url"].as_str().unwrap().to_string();
    assert!(url.ends_with("/shl/break-glass"), "{allowed}");

    // A node with the same name but not named by the patient: refused, and the patient sees it.
    let refused = fails(
        &net,
        "stranger",
        &[
            "emergency",
            "break-glass",
            "request",
            &url,
            "--reason",
            "Just looking",
        ],
    );
    assert!(refused.contains("has not named this provider"), "{refused}");

    // The named provider, with a reason: it reads the summary, and keeps it until it ends.
    let read = net.ok(
        "ae",
        &[
            "emergency",
            "break-glass",
            "request",
            &url,
            "--reason",
            "Unconscious after a fall",
        ],
    );
    assert!(read.to_lowercase().contains("penicillin"), "{read}");
    let kept = net.json("ae", &["emergency", "break-glass", "kept"]);
    assert_eq!(kept.as_array().map(Vec::len), Some(1), "{kept}");
    let hours = (kept[0]["expires_ms"].as_i64().unwrap() - jiff::Timestamp::now().as_millisecond())
        / 3_600_000;
    assert_eq!(hours, 23, "a read of 24 hours: {kept}");

    let audit = net.ok("server", &["audit"]);
    assert!(
        audit.contains("BREAK-GLASS: St Helens A&E read your emergency summary for 24 h: \"Unconscious after a fall\""),
        "{audit}"
    );
    assert!(
        audit.contains("BREAK-GLASS: St Helens A&E was refused your emergency summary"),
        "{audit}"
    );
    // Two requests, two entries: one granted, one refused (each names its node by its key).
    assert_eq!(audit.matches("BREAK-GLASS").count(), 2, "{audit}");
}

#[test]
fn requests_past_the_hours_budget_for_a_link_are_refused_unlogged() {
    let net = Homes::new();
    init_patient(&net, "laptop");
    net.start("laptop", &["--emergency-listen", "127.0.0.1:0"]);
    let made = net.json("laptop", &["emergency", "link"]);
    let link = made["link"].as_str().unwrap().to_string();
    net.ok(
        "laptop",
        &["emergency", "revoke", &made["id"].as_str().unwrap()[..8]],
    );
    net.ok("clinician", &["init", "--provider", "--name", "Someone"]);
    // Whoever holds a revoked link asks again and again: each answer until the budget is spent
    // is logged to the patient; after it, nothing is logged and the node says so.
    let budget = phr_node::net::links::ACCESSES_LOGGED_PER_KEY_PER_HOUR as usize;
    for _ in 0..budget {
        let refused = fails(
            &net,
            "clinician",
            &["emergency", "open", &link, "--recipient", "Spam"],
        );
        assert!(refused.contains("the link is gone"), "{refused}");
    }
    let refused = fails(
        &net,
        "clinician",
        &["emergency", "open", &link, "--recipient", "Spam"],
    );
    assert!(
        refused.contains("no more requests for this link this hour"),
        "{refused}"
    );
    let audit = net.ok("laptop", &["audit"]);
    assert_eq!(
        audit.matches("Spam was refused").count(),
        budget,
        "every request within the budget logged, none after: {audit}"
    );
}

#[test]
fn a_fake_providers_break_glass_requests_past_the_hours_budget_are_refused_unlogged() {
    let net = Homes::new();
    init_patient(&net, "server");
    net.start("server", &["--emergency-listen", "127.0.0.1:0"]);
    let url = net.json("server", &["emergency", "break-glass", "allowed"])["url"]
        .as_str()
        .unwrap()
        .to_string();
    net.ok("fake", &["init", "--provider", "--name", "Fake Clinic"]);
    let budget = phr_node::net::links::ACCESSES_LOGGED_PER_KEY_PER_HOUR as usize;
    let ask = [
        "emergency",
        "break-glass",
        "request",
        &url,
        "--reason",
        "Spam",
    ];
    for _ in 0..budget {
        let refused = fails(&net, "fake", &ask);
        assert!(refused.contains("has not named this provider"), "{refused}");
    }
    let refused = fails(&net, "fake", &ask);
    assert!(refused.contains("too many requests this hour"), "{refused}");
    let audit = net.ok("server", &["audit"]);
    assert_eq!(
        audit.matches("Fake Clinic was refused").count(),
        budget,
        "every request within the budget logged, none after: {audit}"
    );
}
