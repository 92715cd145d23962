//! The network scenario: six nodes, each a `phr-node` process on 127.0.0.1, driven through the
//! `phr` command line as their users would drive them.
//!
//! A patient's laptop and phone, a GP, a pharmacy, a relay and an outsider. The patient imports
//! the HL7 IPS example and shares `summary,clinical` (write) with the GP and `summary` (read)
//! with the pharmacy. Then: the GP reads and adds a diagnosis that reaches the patient; the
//! pharmacy reads the medicines and nothing of `clinical`; the outsider gets nothing; revoking
//! the pharmacy keeps later entries from it; the phone edits while the laptop is off and both
//! converge through the relay; concurrent edits of one resource on the laptop and at the GP show
//! up in `phr conflicts` on both; the patient's `phr audit` lists the GP's and the pharmacy's
//! reads; a node killed with SIGKILL in the middle of a sync loses nothing it had stored.
//!
//! Every wait is on an event with a deadline: a command's exit (`common::homes::COMMAND_MAX`), or
//! `phr sync --wait`, which returns once the sessions with every reachable peer are over, after
//! which each check is made at once. None sleeps hoping the network has done its part.

use std::{
    path::{Path, PathBuf},
    process::Child,
    time::Duration,
};

use common::homes::Homes;
use serde_json::Value;

mod common;

/// The longest any one wait may take.
const WAIT: Duration = Duration::from_secs(60);

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/fhir/ips/Bundle-IPS-examples-Bundle-01.json")
}

/// The IPS example's penicillin allergy, with a note: an edit of one resource.
fn edited_allergy(note: &str) -> Value {
    let bundle: Value = serde_json::from_slice(&std::fs::read(fixture()).unwrap()).unwrap();
    let mut allergy = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].clone())
        .find(|r| r["resourceType"] == "AllergyIntolerance")
        .unwrap();
    allergy["note"] = serde_json::json!([{ "text": note }]);
    allergy
}

#[test]
fn six_nodes_share_a_record_under_consent() {
    let net = Homes::new();
    net.ok(
        "laptop",
        &[
            "init",
            "--name",
            "Martha DeLarosa",
            "--birth-date",
            "1972-05-01",
            "--label",
            "laptop",
        ],
    );
    let record = net.json("laptop", &["status"])["record"]
        .as_str()
        .unwrap()
        .to_string();
    net.ok(
        "phone",
        &[
            "init",
            "--device",
            "--join",
            &record,
            "--name",
            "Martha DeLarosa",
            "--label",
            "phone",
        ],
    );
    net.ok(
        "gp",
        &[
            "init",
            "--provider",
            "--name",
            "Riverside Surgery",
            "--ods",
            "A81001",
        ],
    );
    net.ok(
        "pharmacy",
        &["init", "--provider", "--name", "High Street Pharmacy"],
    );
    net.ok("relay", &["init", "--relay", "--name", "Community Relay"]);
    net.ok("outsider", &["init", "--provider", "--name", "Nosy Clinic"]);
    let laptop_addr = net.start("laptop", &[]);
    net.start("phone", &[]);
    net.start("gp", &[]);
    net.start("pharmacy", &[]);
    let relay_addr = net.start("relay", &["--relay"]);
    net.start("outsider", &[]);

    // The patient imports a record and shares it. Cards carry the running nodes' addresses.
    net.ok("laptop", &["import", fixture().to_str().unwrap()]);
    let record = net.json("laptop", &["status"])["record"]
        .as_str()
        .unwrap()
        .to_string();
    for (home, alias) in [("gp", "gp"), ("pharmacy", "pharmacy")] {
        let card = net.card(home);
        net.ok("laptop", &["contacts", "add", &card, "--alias", alias]);
    }
    net.ok(
        "laptop",
        &[
            "share",
            "grant",
            "gp",
            "--sections",
            "summary,clinical",
            "--access",
            "write",
        ],
    );
    net.ok(
        "laptop",
        &[
            "share",
            "grant",
            "pharmacy",
            "--sections",
            "summary",
            "--access",
            "read",
        ],
    );
    let relay_card = net.card("relay");
    net.ok("laptop", &["relays", "add", &relay_card]);
    let phone_card = net.card("phone");
    net.ok("laptop", &["devices", "add", &phone_card]);
    net.ok("laptop", &["sync", "--wait"]);

    // Each provider's node holds the record waiting for a person there to accept it.
    let waiting = net.json("gp", &["patients", "--pending"]);
    assert!(waiting.to_string().contains(&record), "{waiting}");
    assert_eq!(net.json("gp", &["patients"]), serde_json::json!([]));
    net.ok("gp", &["patients", "accept", &record]);
    net.ok("pharmacy", &["patients", "accept", &record]);
    net.ok("laptop", &["sync", "--wait"]);

    // The GP sees the record and adds a diagnosis, which reaches the patient.
    let patients = net.json("gp", &["patients"]);
    assert!(patients.to_string().contains(&record), "{patients}");
    let seen = net.ok("gp", &["--patient", &record, "show"]);
    assert!(seen.contains("Penicillin"), "{seen}");
    net.ok(
        "gp",
        &[
            "--patient",
            &record,
            "add",
            "condition",
            "Type 2 diabetes mellitus",
        ],
    );
    // The GP's node offers the entry as the command ends; `sync --wait` returns once its
    // sessions are over, so by then the laptop has stored it.
    net.ok("gp", &["sync", "--wait"]);
    let laptop = net.ok("laptop", &["show"]);
    assert!(laptop.contains("Type 2 diabetes"), "{laptop}");

    // The pharmacy sees the medicines and nothing of `clinical`.
    let seen = net.ok("pharmacy", &["--patient", &record, "show"]);
    assert!(seen.contains("Anastrozole"), "{seen}");
    let export = net.ok("pharmacy", &["--patient", &record, "export"]);
    assert!(
        !export.contains("Hemoglobin A1c"),
        "the pharmacy exported clinical data"
    );
    let held = net.blobs("pharmacy");
    assert!(held.get("summary").is_some(), "{held}");
    assert!(
        held.get("clinical").is_none(),
        "the pharmacy holds clinical blobs: {held}"
    );

    // The outsider, which knows the laptop's address, gets nothing.
    net.ok("outsider", &["peers", "add", &laptop_addr]);
    net.ok("laptop", &["sync", "--wait"]);
    let outsider = net.json("outsider", &["node", "status"]);
    assert_eq!(
        outsider["node"]["records"],
        serde_json::json!([]),
        "{outsider}"
    );
    assert_eq!(net.json("outsider", &["patients"]), serde_json::json!([]));

    // The patient sees who read the record.
    let audit = net.ok("laptop", &["audit"]);
    assert!(audit.contains("Riverside Surgery"), "{audit}");
    assert!(audit.contains("High Street Pharmacy"), "{audit}");

    // Revoking the pharmacy keeps what is added afterwards from it.
    net.ok("laptop", &["share", "revoke", "pharmacy"]);
    net.ok(
        "laptop",
        &["add", "allergy", "latex", "--reaction", "hives"],
    );
    net.ok("laptop", &["sync", "--wait"]);
    let gp = net.ok("gp", &["--patient", &record, "show"]);
    assert!(gp.contains("latex"), "{gp}");
    let after = net.run("pharmacy", &["--patient", &record, "show"]);
    assert!(
        !String::from_utf8_lossy(&after.stdout).contains("latex"),
        "a revoked pharmacy read an entry added after its revocation"
    );
    // The laptop's peers list shows the pharmacy as revoked.
    let peers = net.ok("laptop", &["peers"]);
    assert!(peers.contains("access revoked by record"), "{peers}");

    // The phone edits while the laptop is off; both converge through the relay.
    net.ok("phone", &["peers", "add", &relay_addr]);
    net.ok("phone", &["sync", "--wait"]);
    net.stop("laptop");
    net.ok(
        "phone",
        &["add", "symptom", "dizziness", "--severity", "mild"],
    );
    net.ok("phone", &["sync", "--wait"]);
    net.stop("phone");
    net.start("laptop", &[]);
    net.ok("laptop", &["sync", "--wait"]);
    let journal = net.ok("laptop", &["show", "journal"]);
    assert!(
        journal.contains("dizziness"),
        "not through the relay: {journal}"
    );
    let relay_held = net.blobs("relay");
    assert!(
        relay_held.get("journal").is_some(),
        "the relay forwarded nothing: {relay_held}"
    );

    // Concurrent edits of one resource, at the laptop and at the GP, both offline.
    net.stop("laptop");
    net.stop("gp");
    let mine = net.file("mine.json", &edited_allergy("rash within hours"));
    let theirs = net.file("theirs.json", &edited_allergy("anaphylaxis in 2019"));
    net.ok("laptop", &["import", &mine]);
    net.ok("gp", &["--patient", &record, "import", &theirs]);
    net.start("laptop", &[]);
    // Both restarted on new ports, so neither knows where the other is now: the patient dials
    // the practice at the address its node prints, as a user would.
    let gp_addr = net.start("gp", &[]);
    net.ok("laptop", &["peers", "add", &gp_addr]);
    net.ok("laptop", &["sync", "--wait"]);
    net.ok("gp", &["sync", "--wait"]);
    let allergy = "AllergyIntolerance/IPS-examples-AllergyIntolerance-01";
    let mine = net.ok("laptop", &["conflicts"]);
    assert!(mine.contains(allergy), "{mine}");
    let theirs = net.ok("gp", &["--patient", &record, "conflicts"]);
    assert!(theirs.contains(allergy), "{theirs}");
}

/// Kills a daemon with SIGKILL and waits for its exit.
fn kill(mut daemon: Child) {
    daemon.kill().unwrap();
    let (done, exited) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let _ = done.send(daemon.wait());
    });
    let status = exited
        .recv_timeout(WAIT)
        .expect("the killed daemon exits")
        .unwrap();
    assert!(!status.success(), "{status:?}");
}

fn total(blobs: &Value) -> u64 {
    blobs
        .as_object()
        .map(|o| o.values().map(|n| n.as_u64().unwrap()).sum())
        .unwrap_or(0)
}

/// SIGKILL in the middle of a sync, on either side, loses nothing acknowledged: the receiving
/// GP is killed the moment the patient's node has connected to it (the sync starts on
/// connection), the sending laptop the moment a `phr add` has returned (its node offers the
/// change as the command ends). Each restarts on a new port, opens its store, keeps every write
/// its user was told was saved, and the two converge; the laptop's retransmissions of the
/// session the GP lost do not get it cut off.
#[test]
fn a_node_killed_mid_sync_loses_nothing_acknowledged() {
    let net = Homes::new();
    net.ok(
        "laptop",
        &[
            "init",
            "--name",
            "Fletcher Hyatt",
            "--birth-date",
            "1915-07-03",
        ],
    );
    net.ok("gp", &["init", "--provider", "--name", "Riverside Surgery"]);
    let synthea = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/fhir/synthea")
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap();
    net.ok("laptop", &["import", synthea.to_str().unwrap()]);
    let (gp_daemon, gp_addr) = net.spawn_daemon("gp");
    let gp_card = net.card("gp");
    net.ok("laptop", &["contacts", "add", &gp_card, "--alias", "gp"]);
    net.ok(
        "laptop",
        &[
            "share",
            "grant",
            "gp",
            "--sections",
            "summary,clinical",
            "--access",
            "read",
        ],
    );
    let (laptop_daemon, _) = net.spawn_daemon("laptop");
    let record = net.json("laptop", &["status"])["record"]
        .as_str()
        .unwrap()
        .to_string();

    // The practice was told the record's id at registration, and accepts it before it arrives.
    net.ok("gp", &["patients", "accept", &record]);
    // The receiver dies as the sync starts.
    net.ok("laptop", &["peers", "add", &gp_addr]);
    kill(gp_daemon);
    let gp_addr = net.start("gp", &[]);
    let after_kill = total(&net.blobs("gp"));
    // Restarted on a new port, and perhaps holding nothing of the record yet (so not knowing
    // the patient): the patient dials it again.
    net.ok("laptop", &["peers", "add", &gp_addr]);
    net.ok("laptop", &["sync", "--wait"]);
    let laptop = net.blobs("laptop");
    let gp = net.blobs("gp");
    for section in ["summary", "clinical"] {
        assert_eq!(
            gp.get(section),
            laptop.get(section),
            "{section}: {gp} / {laptop}"
        );
    }
    eprintln!(
        "the GP held {after_kill} blobs after the kill and restart, {} once caught up",
        total(&net.blobs("gp"))
    );

    // The sender dies as it offers an acknowledged write.
    net.ok(
        "laptop",
        &["add", "allergy", "latex", "--reaction", "hives"],
    );
    kill(laptop_daemon);
    net.start("laptop", &[]);
    assert!(
        net.ok("laptop", &["show"]).contains("latex"),
        "the laptop lost an acknowledged write"
    );
    net.ok("laptop", &["sync", "--wait"]);
    let gp = net.ok("gp", &["--patient", &record, "show"]);
    assert!(
        gp.contains("latex"),
        "the write made as the laptop was killed: {gp}"
    );
}
