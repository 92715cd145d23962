//! Text written by others never drives the terminal: a FHIR file and a provider's entries
//! carrying escape sequences, carriage returns, bells, C1 controls and bidirectional overrides
//! go through every command that shows them, and what each prints holds none of them, only
//! their visible forms (`phr_core::screen::visible`).

mod common;

use common::{Phr, accept_pending, grant_gp_write, sync::sync_homes};
use serde_json::json;

/// Erases the line, moves to its start, sets the window title, hides what follows, a C1 CSI,
/// and a right-to-left override: what an allergy's text held to hide "PENICILLIN".
const HOSTILE: &str =
    "\u{1b}[2K\r\u{1b}]0;owned\u{7}\u{1b}[8mPENICILLIN - ANAPHYLAXIS\u{9b}0m \u{202e}txet\u{2066}";

/// Whether `text` holds anything a terminal would obey or reorder.
fn obeyed(text: &str) -> Option<char> {
    text.chars().find(|c| {
        (c.is_control() && *c != '\n')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

/// Runs `args` and checks both streams.
fn clean(phr: &Phr, args: &[&str]) -> String {
    let (code, stdout, stderr, _) = phr.run(args);
    for (stream, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        if let Some(c) = obeyed(text) {
            panic!(
                "phr {args:?} (exit {code}) printed U+{:04X} on {stream}:\n{text:?}",
                c as u32
            );
        }
    }
    stdout + &stderr
}

#[test]
fn hostile_text_from_a_file_and_a_provider_is_shown_not_obeyed_by_every_command() {
    let patient = Phr::patient();
    let file = patient.dir.path().join("hostile.json");
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "AllergyIntolerance", "id": "penicillin",
            "clinicalStatus": {"coding": [{"code": "active"}]}, "criticality": "high",
            "code": {"text": HOSTILE}}},
        {"resource": {"resourceType": "Condition", "id": "c1",
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "code": {"text": HOSTILE}, "note": [{"text": HOSTILE}]}},
        {"resource": {"resourceType": "MedicationStatement", "id": "m1", "status": "active",
            "medicationCodeableConcept": {"text": HOSTILE}}},
        {"resource": {"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"text": HOSTILE}, "valueString": HOSTILE,
            "effectiveDateTime": "2026-01-02"}}
    ]});
    std::fs::write(&file, serde_json::to_vec(&bundle).unwrap()).unwrap();
    clean(&patient, &["import", file.to_str().unwrap()]);

    // A GP the patient shares with writes an entry of its own with the same text.
    let gp = grant_gp_write(&patient);
    sync_homes(&patient.home(), &gp.home());
    accept_pending(&gp);
    let id = common::record_id(&patient);
    clean(&gp, &["--patient", &id, "add", "condition", HOSTILE]);
    sync_homes(&gp.home(), &patient.home());

    let shown = clean(&patient, &["show"]);
    assert!(shown.contains("␛[8mPENICILLIN - ANAPHYLAXIS"), "{shown}");
    assert!(shown.contains("<U+202E>"), "{shown}");
    for args in [
        &["show", "summary"][..],
        &["show", "clinical"],
        &["show", "journal"],
        &["history", "AllergyIntolerance/penicillin"],
        &["history", "Condition/c1"],
        &["conflicts"],
        &["audit"],
        &["share", "list"],
        &["status"],
        &["devices", "list"],
        &["contacts", "list"],
        &["held"],
        &["damaged"],
        // An error that quotes what the user typed.
        &["history", HOSTILE],
    ] {
        clean(&patient, args);
    }
    for args in [
        &["patients"][..],
        &["--patient", &id, "show"],
        &["--patient", &id, "show", "clinical"],
        &["--patient", &id, "history", "AllergyIntolerance/penicillin"],
    ] {
        let out = clean(&gp, args);
        assert!(!out.is_empty());
    }
}

/// `phr show` of the largest fixture in a real terminal (tmux) of `columns` columns: the lines
/// as the terminal shows them.
fn shown_in_tmux(phr: &Phr, columns: u16) -> Vec<String> {
    let socket = format!("phr-test-{}-{columns}", std::process::id());
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .arg("-L")
            .arg(&socket)
            .args(args)
            .output()
            .expect("tmux runs")
    };
    let command = format!(
        "env -u COLUMNS {} --home {} show; tmux -L {socket} wait-for -S shown; read wait",
        env!("CARGO_BIN_EXE_phr"),
        phr.home().display()
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        "show",
        "-x",
        &columns.to_string(),
        "-y",
        "300",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    // Waits for the command to finish, bounded.
    let waited = std::process::Command::new("timeout")
        .args(["30", "tmux", "-L", &socket, "wait-for", "shown"])
        .status()
        .unwrap();
    // -J joins what the terminal wrapped itself: such a line comes back longer than the width.
    let captured = tmux(&["capture-pane", "-p", "-J", "-t", "show"]);
    tmux(&["kill-server"]);
    assert!(waited.success(), "phr show did not finish in tmux");
    String::from_utf8(captured.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn show_wraps_at_the_terminals_width_with_a_hanging_indent_and_never_splits_a_value() {
    let phr = Phr::fletcher();
    phr.ok(&["import", &common::largest()]);
    for columns in [80, 120] {
        let lines = shown_in_tmux(&phr, columns);
        let text = lines.join("\n");
        assert!(text.contains("Recent results"), "{text}");
        // The terminal never had to wrap a line itself: each fits, so none was cut anywhere.
        for line in &lines {
            let width = line.trim_end().chars().count();
            assert!(width <= usize::from(columns), "{width} columns: {line:?}");
        }
        // A value and its unit stay together, and a continuation hangs under the bullet's text.
        assert!(text.contains("59.64 U/L"), "{text}");
        assert!(text.contains("121.06 U/L"), "{text}");
        let continued: Vec<&String> = lines
            .iter()
            .skip_while(|l| !l.starts_with("Recent results"))
            .filter(|l| l.starts_with("    ") && !l.trim().is_empty())
            .collect();
        if columns == 80 {
            assert!(!continued.is_empty(), "something wraps at 80: {text}");
        }
        assert!(
            continued.iter().all(|l| !l.starts_with("     ")),
            "{continued:?}"
        );
    }
}

#[test]
fn show_at_80_columns() {
    let phr = Phr::fletcher();
    phr.ok(&["import", &common::largest()]);
    let mut transcript = common::Transcript::default();
    transcript.run_env(&phr, &["show"], &[("COLUMNS", "80")]);
    transcript.run_env(
        &phr,
        &["history", "Condition/missing"],
        &[("COLUMNS", "80")],
    );
    assert_eq!(transcript.finish("show_at_80_columns"), vec![0, 1]);
}
