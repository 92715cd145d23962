//! The people-and-consent commands end to end: cards, contacts, grants, devices, relays,
//! backups and passphrases, with their errors, pinned as snapshots.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use common::{Phr, Transcript, card, device_of, provider};

const PASS: (&str, &str) = ("PHR_PASSPHRASE", "a long and memorable passphrase");

#[test]
fn share_with_a_gp_and_a_pharmacy_then_revoke() {
    let patient = Phr::patient();
    let gp = provider("Leeds Road Surgery", "B86001");
    let pharmacy = provider("High Street Pharmacy", "FA123");
    let gp_card = card(&gp);
    let pharmacy_card = card(&pharmacy);
    let mut tampered = pharmacy_card.clone();
    let flip = tampered.len() - 10;
    let original = tampered.as_bytes()[flip];
    tampered.replace_range(flip..flip + 1, if original == b'A' { "B" } else { "A" });

    let mut t = Transcript::default();
    t.note("the patient's device");
    t.run(&patient, &["contacts", "list"]);
    t.run(&patient, &["contacts", "add", &gp_card, "--alias", "gp"]);
    t.run(&patient, &["contacts", "add", &tampered]);
    t.run(&patient, &["contacts", "add", "hello"]);
    t.run(&patient, &["contacts", "list"]);
    t.run(
        &patient,
        &[
            "share",
            "grant",
            "gp",
            "--sections",
            "summary,clinical",
            "--access",
            "write",
            "--purpose",
            "ongoing care",
        ],
    );
    t.run(
        &patient,
        &[
            "share",
            "grant",
            &pharmacy_card,
            "--sections",
            "summary",
            "--access",
            "read",
            "--expires",
            "90d",
        ],
    );
    t.run(
        &patient,
        &[
            "share",
            "grant",
            "dentist",
            "--sections",
            "summary",
            "--access",
            "read",
        ],
    );
    t.run(
        &patient,
        &[
            "share",
            "grant",
            "gp",
            "--sections",
            "audit",
            "--access",
            "read",
        ],
    );
    t.run(
        &patient,
        &[
            "share",
            "grant",
            "gp",
            "--sections",
            "summary",
            "--access",
            "read",
            "--expires",
            "soon",
        ],
    );
    t.run(&patient, &["share", "list"]);
    t.run(&patient, &["share", "revoke", "High Street Pharmacy"]);
    t.run(&patient, &["share", "revoke", "High Street Pharmacy"]);
    t.run(&patient, &["share", "list"]);
    t.note("a provider has no record to share");
    t.run(&gp, &["share", "list"]);
    let codes = t.finish("share");
    assert_eq!(codes, [0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1]);

    let grants = patient.ok(&["share", "list", "--json"]);
    let grants: serde_json::Value = serde_json::from_str(&grants).unwrap();
    assert_eq!(grants["grants"].as_array().unwrap().len(), 1);
    assert_eq!(grants["revoked"].as_array().unwrap().len(), 1);
}

#[test]
fn devices_and_relays() {
    let laptop = Phr::patient();
    let phone = device_of(&laptop, "phone");
    let relay = Phr::new();
    relay.ok(&["init", "--relay", "--name", "Community relay"]);
    let gp = provider("Leeds Road Surgery", "B86001");

    let mut t = Transcript::default();
    t.run(&laptop, &["devices", "add", &card(&phone)]);
    t.run(&laptop, &["devices", "add", &card(&phone)]);
    t.run(&laptop, &["devices", "add", &card(&gp)]);
    t.run(&laptop, &["relays", "add", &card(&relay)]);
    t.run(&laptop, &["relays", "add", &card(&gp)]);
    t.run(&laptop, &["devices", "list"]);
    t.run(&laptop, &["share", "list"]);
    t.run(&laptop, &["devices", "remove", "phone"]);
    t.run(&laptop, &["devices", "remove", "first device"]);
    t.run(&laptop, &["devices", "list"]);
    t.note("the phone holds no record until it syncs");
    t.run(&phone, &["show"]);
    t.run(&phone, &["devices", "add", &card(&relay)]);
    let codes = t.finish("devices");
    assert_eq!(codes, [0, 1, 1, 0, 1, 0, 0, 0, 1, 0, 1, 1]);
}

#[test]
fn a_passphrase_protected_home() {
    let phr = Phr::new();
    let mut t = Transcript::default();
    t.run(&phr, &["init", "--name", "Ada Lovelace", "--passphrase"]);
    t.run_env(
        &phr,
        &["init", "--name", "Ada Lovelace", "--passphrase"],
        &[PASS],
    );
    t.run(&phr, &["show"]);
    t.run_env(&phr, &["show"], &[("PHR_PASSPHRASE", "not it")]);
    t.run_env(&phr, &["add", "note", "slept well"], &[PASS]);
    let codes = t.finish("passphrase");
    assert_eq!(codes, [1, 0, 1, 1, 0]);
    let keystore = std::fs::read_to_string(phr.home().join("keystore")).unwrap();
    assert!(
        keystore.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
        "{keystore}"
    );
}

#[test]
fn keystore_trouble_is_explained() {
    let phr = Phr::patient();
    let keystore = phr.home().join("keystore");
    let good = std::fs::read(&keystore).unwrap();
    let mut t = Transcript::default();
    std::fs::write(&keystore, b"not a keystore").unwrap();
    t.run(&phr, &["show"]);
    std::fs::remove_file(&keystore).unwrap();
    t.run(&phr, &["show"]);
    std::fs::write(&keystore, &good).unwrap();
    let mut perms = std::fs::metadata(&keystore).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&keystore, perms.clone()).unwrap();
    t.run(&phr, &["show"]);
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&keystore, perms).unwrap();
    t.run(&phr, &["show"]);
    let codes = t.finish("keystore");
    assert_eq!(
        codes[..3],
        [2, 1, 1],
        "damaged is not the user's doing; missing and 0644 are"
    );
    assert_eq!(codes[3], 0);
}

/// Decrypts an age passphrase file with the standard `age` tool. age reads passphrases only from
/// a terminal, so it runs under `script`, which gives it one and forwards our stdin to it.
fn age_decrypt(file: &std::path::Path, out: &std::path::Path, passphrase: &str) -> bool {
    let age = Command::new("age").arg("--version").output();
    assert!(
        age.is_ok_and(|o| o.status.success()),
        "the `age` command is needed for this test: install Debian's `age` package"
    );
    let command = format!("age -d -o '{}' '{}'", out.display(), file.display());
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("`script` (util-linux) runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{passphrase}\n").as_bytes())
        .unwrap();
    // Wait on the exit itself (on a thread), bounded; kill the child if it hangs.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(status) => status.unwrap().success() && out.exists(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("age did not finish within 60 s");
        }
    }
}

#[test]
fn backup_is_readable_by_age_and_restores_the_same_identity() {
    let phr = Phr::patient();
    phr.ok(&["add", "note", "backup canary"]);
    let backup = phr.dir.path().join("phr.backup");
    let backup_arg = backup.display().to_string();
    let mut t = Transcript::default();
    t.run(&phr, &["backup", "export", "-o", &backup_arg]);
    t.run_env(&phr, &["backup", "export", "-o", &backup_arg], &[PASS]);
    t.run_env(&phr, &["backup", "export", "-o", &backup_arg], &[PASS]);

    let fresh = Phr::new();
    t.note("a fresh home");
    t.run_env(
        &fresh,
        &["backup", "restore", &backup_arg],
        &[("PHR_PASSPHRASE", "wrong")],
    );
    t.run(&fresh, &["show"]);
    t.run_env(&fresh, &["backup", "restore", &backup_arg], &[PASS]);
    t.run_env(&fresh, &["backup", "restore", &backup_arg], &[PASS]);
    let codes = t.finish("backup");
    assert_eq!(codes, [1, 0, 1, 1, 1, 0, 1]);

    let original: serde_json::Value = serde_json::from_str(&phr.ok(&["card", "--json"])).unwrap();
    let restored: serde_json::Value = serde_json::from_str(&fresh.ok(&["card", "--json"])).unwrap();
    assert_eq!(original["peer_id"], restored["peer_id"]);
    assert_eq!(original["age_recipient"], restored["age_recipient"]);
    let record = |p: &Phr| -> serde_json::Value {
        serde_json::from_str(&p.ok(&["export", "--section", "journal"])).unwrap()
    };
    assert_eq!(record(&phr)["entry"], record(&fresh)["entry"]);
    assert!(fresh.ok(&["show", "journal"]).contains("backup canary"));

    let decrypted = phr.dir.path().join("backup.json");
    assert!(
        age_decrypt(&backup, &decrypted, PASS.1),
        "the standard age tool could not decrypt the backup"
    );
    let inside: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&decrypted).unwrap()).unwrap();
    assert_eq!(inside["format"], "phr-backup/1");
    let wrong = phr.dir.path().join("wrong.json");
    assert!(!age_decrypt(&backup, &wrong, "not the passphrase"));
}

#[test]
fn card_qr_and_json() {
    let phr = Phr::patient();
    let qr = phr.ok(&["card", "--qr"]);
    assert!(qr.lines().count() > 20, "{qr}");
    assert!(qr.contains('█') || qr.contains('▀') || qr.contains('▄'));
    let json: serde_json::Value =
        serde_json::from_str(&phr.ok(&["card", "--json", "--addr", "/ip4/127.0.0.1/tcp/4001"]))
            .unwrap();
    assert!(json["card"].as_str().unwrap().starts_with("phr-card:v1:"));
    assert!(json["peer_id"].as_str().unwrap().starts_with("12D3KooW"));
    assert_eq!(json["role"], "patient");
    let (code, _, stderr, _) = phr.run(&["card", "--addr", "not an address"]);
    assert_eq!(code, 1, "{stderr}");
}
