//! Patient services between two `phr-node` processes on 127.0.0.1, driven through `phr` as the
//! patient and the practice drive it.
//!
//! Messages: a thread between a patient's laptop and their GP survives a restart of both nodes.
//!
//! Every wait is on an event with a deadline: a command's exit, or `phr sync --wait`, which
//! returns once the sessions with every reachable peer are over.

use common::homes::Homes;
use serde_json::Value;

mod common;

/// Makes `home` a practice's node named `name` (ODS code `ods`), running.
fn practice(net: &Homes, home: &str, name: &str, ods: &str) -> String {
    net.ok(home, &["init", "--provider", "--name", name, "--ods", ods]);
    net.start(home, &[])
}

/// Makes `home` a patient's running node that shares `summary,requests` (write) with the
/// practice `gp` (its contact "gp"), synced and accepted there; returns the record id.
fn patient_of(net: &Homes, home: &str, name: &str, gp: &str) -> String {
    net.ok(
        home,
        &["init", "--name", name, "--birth-date", "1980-01-01"],
    );
    net.start(home, &[]);
    let card = net.card(gp);
    net.ok(home, &["contacts", "add", &card, "--alias", "gp"]);
    let grant = ["share", "grant", "gp", "--sections", "summary,requests"];
    net.ok(home, &[&grant[..], &["--access", "write"]].concat());
    net.ok(home, &["sync", "--wait"]);
    let record = net.json(home, &["status"])["record"]
        .as_str()
        .unwrap()
        .to_string();
    net.ok(gp, &["patients", "accept", &record]);
    net.ok(home, &["sync", "--wait"]);
    record
}

/// `phr --json [--patient RECORD] COMMAND` on `home`.
fn listed(net: &Homes, home: &str, patient: Option<&str>, command: &str) -> Value {
    let mut args = vec![];
    if let Some(record) = patient {
        args.extend(["--patient", record]);
    }
    args.push(command);
    net.json(home, &args)
}

/// The one item `phr [--patient RECORD] COMMAND` lists on `home`.
fn only(net: &Homes, home: &str, patient: Option<&str>, command: &str) -> Value {
    let all = listed(net, home, patient, command);
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");
    all[0].clone()
}

/// The first thread `phr messages` lists.
fn first_thread(net: &Homes, home: &str, patient: Option<&str>) -> Value {
    listed(net, home, patient, "messages")["threads"][0].clone()
}

fn texts(thread: &Value) -> Vec<String> {
    thread["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_message_thread_between_patient_and_practice_survives_a_restart_of_both_nodes() {
    let net = Homes::new();
    practice(&net, "gp", "Riverside Surgery", "A81001");
    let record = patient_of(&net, "laptop", "Martha DeLarosa", "gp");
    net.ok("laptop", &["messages", "send", "My inhaler is running out"]);
    net.ok("laptop", &["sync", "--wait"]);

    let thread = first_thread(&net, "gp", Some(&record));
    assert_eq!(texts(&thread), ["My inhaler is running out"], "{thread}");
    assert_eq!(thread["unread"], 1);
    let first = thread["thread"].as_str().unwrap().to_string();
    net.ok(
        "gp",
        &[
            "--patient",
            &record,
            "messages",
            "reply",
            &first,
            "Order it as a repeat, please",
        ],
    );
    net.ok("gp", &["sync", "--wait"]);

    // Both nodes stop and start again (on new ports); the patient's node is told the GP's new
    // address, as mDNS or a card would tell it.
    net.stop("gp");
    net.stop("laptop");
    let gp_addr = net.start("gp", &[]);
    net.start("laptop", &[]);
    net.ok("laptop", &["peers", "add", &gp_addr]);

    let thread = first_thread(&net, "laptop", None);
    assert_eq!(
        texts(&thread),
        ["My inhaler is running out", "Order it as a repeat, please"],
        "{thread}"
    );
    assert_eq!(
        thread["unread"], 1,
        "the practice's answer is new: {thread}"
    );
    let answer = thread["messages"][1]["id"].as_str().unwrap().to_string();
    net.ok("laptop", &["messages", "reply", &answer, "Thank you, done"]);
    net.ok("laptop", &["sync", "--wait"]);

    let thread = first_thread(&net, "gp", Some(&record));
    assert_eq!(
        texts(&thread),
        [
            "My inhaler is running out",
            "Order it as a repeat, please",
            "Thank you, done"
        ],
        "{thread}"
    );
    assert_eq!(
        thread["unread"], 1,
        "only the patient's new reply is new: {thread}"
    );
    assert!(
        thread["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["sender_matches"] == true),
        "{thread}"
    );
    // The practice's reads reached the patient's audit.
    net.ok("gp", &["sync", "--wait"]);
    let audit = net.ok("laptop", &["audit"]);
    assert!(audit.contains("Riverside Surgery"), "{audit}");
    assert!(audit.contains("messages"), "{audit}");
}

#[test]
fn the_patient_orders_a_repeat_the_gp_issues_it_and_the_pharmacy_sees_it_over_real_daemons() {
    let net = Homes::new();
    practice(&net, "gp", "Riverside Surgery", "A81001");
    practice(&net, "pharmacy", "High Street Pharmacy", "FA123");
    let record = patient_of(&net, "laptop", "Martha DeLarosa", "gp");
    let card = net.card("pharmacy");
    net.ok("laptop", &["contacts", "add", &card, "--alias", "pharmacy"]);
    for (sections, access) in [("summary", "read"), ("requests", "write")] {
        let grant = [
            "share",
            "grant",
            "pharmacy",
            "--sections",
            sections,
            "--access",
            access,
        ];
        net.ok("laptop", &grant);
    }
    net.ok("laptop", &["sync", "--wait"]);
    net.ok("pharmacy", &["patients", "accept", &record]);
    net.ok("laptop", &["sync", "--wait"]);

    net.ok(
        "gp",
        &[
            "--patient",
            &record,
            "repeats",
            "add",
            "Sertraline 50mg tablets",
            "--issues",
            "6",
            "--review",
            "2099-01-01",
        ],
    );
    net.ok("gp", &["sync", "--wait"]);
    let plan = only(&net, "laptop", None, "repeats")["id"]
        .as_str()
        .unwrap()
        .to_string();
    net.ok(
        "laptop",
        &["repeats", "order", &plan, "--pharmacy", "FA123"],
    );
    net.ok("laptop", &["sync", "--wait"]);

    let at_gp = only(&net, "gp", Some(&record), "repeats");
    assert_eq!(at_gp["orders"][0]["status"], "requested", "{at_gp}");
    let order = at_gp["orders"][0]["id"].as_str().unwrap().to_string();
    net.ok("gp", &["--patient", &record, "repeats", "issue", &order]);
    net.ok("gp", &["sync", "--wait"]);
    net.ok("laptop", &["sync", "--wait"]);

    let at_pharmacy = only(&net, "pharmacy", Some(&record), "repeats");
    let seen = &at_pharmacy["orders"][0];
    assert_eq!(seen["status"], "completed", "{at_pharmacy}");
    assert_eq!(seen["pharmacy"], "FA123");
    assert!(seen["prescription"].is_string(), "{at_pharmacy}");
    net.ok(
        "pharmacy",
        &["--patient", &record, "repeats", "dispensed", &order],
    );
    net.ok("pharmacy", &["sync", "--wait"]);

    let mine = only(&net, "laptop", None, "repeats");
    assert_eq!(mine["issued"], 1, "{mine}");
    assert_eq!(
        mine["orders"][0]["dispensed"][1], "High Street Pharmacy",
        "{mine}"
    );
}

#[test]
fn two_patients_ask_for_one_slot_the_practice_books_one_and_the_other_is_told() {
    let net = Homes::new();
    practice(&net, "gp", "Riverside Surgery", "A81001");
    net.ok(
        "gp",
        &[
            "slots",
            "add",
            "--start",
            "2099-03-02T09:00:00Z",
            "--minutes",
            "10",
            "--count",
            "3",
        ],
    );
    let ada = patient_of(&net, "ada", "Ada Lovelace", "gp");
    let bob = patient_of(&net, "bob", "Bob Marley", "gp");

    // Both see the three free slots, asked live of the practice's node.
    let free = net.json(
        "ada",
        &[
            "appointments",
            "slots",
            "--from",
            "2099-03-02",
            "--days",
            "1",
        ],
    );
    let slots = free["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 3, "{free}");
    let first = slots[0]["id"].as_str().unwrap().to_string();
    for (home, reason) in [("ada", "Cough for three weeks"), ("bob", "Sore knee")] {
        net.ok(
            home,
            &[
                "appointments",
                "request",
                &first,
                "--reason",
                reason,
                "--from",
                "2099-03-02",
            ],
        );
        net.ok(home, &["sync", "--wait"]);
    }

    // The practice books Ada's; booking Bob's finds the slot taken and declines it.
    let asked = only(&net, "gp", Some(&ada), "appointments");
    assert_eq!(asked["status"], "proposed", "{asked}");
    assert_eq!(asked["reason"], "Cough for three weeks");
    let booked = net.ok(
        "gp",
        &[
            "--patient",
            &ada,
            "appointments",
            "book",
            asked["id"].as_str().unwrap(),
        ],
    );
    assert!(booked.contains("Booked"), "{booked}");
    let bobs = only(&net, "gp", Some(&bob), "appointments");
    let declined = net.ok(
        "gp",
        &[
            "--patient",
            &bob,
            "appointments",
            "book",
            bobs["id"].as_str().unwrap(),
        ],
    );
    assert!(
        declined.contains("already booked for another patient"),
        "{declined}"
    );
    net.ok("gp", &["sync", "--wait"]);

    let booked = only(&net, "ada", None, "appointments");
    assert_eq!(booked["status"], "booked", "{booked}");
    assert_eq!(booked["decided_by_practice"], true, "{booked}");
    let told = only(&net, "bob", None, "appointments");
    assert_eq!(told["status"], "cancelled", "{told}");
    assert!(
        told["cancelled_because"]
            .as_str()
            .unwrap()
            .contains("just been booked by someone else"),
        "{told}"
    );
    // The slot is no longer offered; the other two are.
    let free = net.json(
        "bob",
        &[
            "appointments",
            "slots",
            "--from",
            "2099-03-02",
            "--days",
            "1",
        ],
    );
    let ids: Vec<&str> = free["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{free}");
    assert!(!ids.contains(&first.as_str()), "{free}");

    // Ada cancels; once the practice reads her appointments, the slot is free again.
    net.ok(
        "ada",
        &[
            "appointments",
            "cancel",
            asked["id"].as_str().unwrap(),
            "--reason",
            "Better now",
        ],
    );
    net.ok("ada", &["sync", "--wait"]);
    assert_eq!(
        only(&net, "gp", Some(&ada), "appointments")["status"],
        "cancelled"
    );
    let free = net.json(
        "bob",
        &[
            "appointments",
            "slots",
            "--from",
            "2099-03-02",
            "--days",
            "1",
        ],
    );
    assert_eq!(free["slots"].as_array().unwrap().len(), 3, "{free}");
}

#[test]
fn a_node_no_accepted_record_of_the_practice_admits_is_refused_its_slots() {
    let net = Homes::new();
    let gp_addr = practice(&net, "gp", "Riverside Surgery", "A81001");
    net.ok(
        "gp",
        &[
            "slots",
            "add",
            "--start",
            "2099-03-02T09:00:00Z",
            "--count",
            "2",
        ],
    );
    net.ok(
        "eve",
        &["init", "--name", "Eve Nosy", "--birth-date", "1980-01-01"],
    );
    net.start("eve", &[]);
    let card = net.card("gp");
    net.ok("eve", &["contacts", "add", &card, "--alias", "gp"]);
    net.ok("eve", &["peers", "add", &gp_addr]);
    let refused = |net: &Homes, expected: &str| {
        let out = net.run("eve", &["appointments", "slots", "--from", "2099-03-02"]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    };
    // Sharing nothing with the practice, her own node refuses to ask.
    refused(&net, "can read your requests section");

    // Anyone can make a record that names a practice: while nobody there has accepted it, the
    // practice's node refuses the question her node now sends.
    net.ok(
        "eve",
        &[
            "share",
            "grant",
            "gp",
            "--sections",
            "requests",
            "--access",
            "write",
        ],
    );
    net.ok("eve", &["sync", "--wait"]);
    let pending = net.json("gp", &["patients", "--pending"]);
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    refused(
        &net,
        "answers only the devices of patients who share their record",
    );

    // Once accepted, she is a patient there and sees the free slots.
    let record = net.json("eve", &["status"])["record"]
        .as_str()
        .unwrap()
        .to_string();
    net.ok("gp", &["patients", "accept", &record]);
    let free = net.json("eve", &["appointments", "slots", "--from", "2099-03-02"]);
    assert_eq!(free["slots"].as_array().map(Vec::len), Some(2), "{free}");
}
