//! What a running node leaves on this machine: its passphrase in no environment, whether it was
//! started by `phr node start` or by hand with `PHR_PASSPHRASE`, and its files (the control file,
//! its log, the peers it remembers) private to its owner, in a home that stays 0700.

use std::{
    fs,
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::homes::Homes;

mod common;

/// The longest any one wait may take.
const WAIT: Duration = Duration::from_secs(60);

/// The keystore passphrase of the patient's home.
const PASSPHRASE: &str = "a long and memorable passphrase";

/// The environment a process was started with, as the kernel keeps it for anyone allowed to read
/// `/proc/PID/environ`.
fn environ(pid: u32) -> String {
    let bytes = fs::read(format!("/proc/{pid}/environ")).unwrap();
    String::from_utf8_lossy(&bytes).replace('\0', "\n")
}

fn assert_no_passphrase_in_environ(pid: u32) {
    let environ = environ(pid);
    assert!(
        !environ.contains("PHR_PASSPHRASE") && !environ.contains(PASSPHRASE),
        "the passphrase is in /proc/{pid}/environ"
    );
    assert!(
        environ.contains("PATH="),
        "the environment was read: {environ}"
    );
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The home is 0700 and every file in it 0600.
fn assert_private(home: &Path, expected: &[&str]) {
    assert_eq!(mode_of(home), 0o700, "{}", home.display());
    let mut names = Vec::new();
    for entry in fs::read_dir(home).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(mode_of(&path), 0o600, "{name} is {:04o}", mode_of(&path));
        names.push(name);
    }
    for name in expected {
        assert!(names.iter().any(|n| n == name), "no {name} in {names:?}");
    }
}

#[test]
fn a_node_started_by_phr_node_start_has_no_passphrase_in_its_environment_and_private_files() {
    let homes = Homes::new();
    homes.json_env(
        "patient",
        &["init", "--name", "Ada Lovelace", "--passphrase"],
        &[("PHR_PASSPHRASE", PASSPHRASE)],
    );
    homes.json_env("gp", &["init", "--provider", "--name", "Dr Grace"], &[]);

    // The passphrase is needed, and a wrong one is told apart, before anything runs.
    let none = homes.run_env("patient", &["node", "start", "--no-mdns"], &[]);
    assert_eq!(none.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("protected by a passphrase"),
        "{none:?}"
    );
    let wrong = homes.run_env(
        "patient",
        &[
            "node",
            "start",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ],
        &[("PHR_PASSPHRASE", "not it")],
    );
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"),
        "{wrong:?}"
    );

    let (pid, _) = homes.start_env("patient", &[], &[("PHR_PASSPHRASE", PASSPHRASE)]);
    assert_no_passphrase_in_environ(pid);
    let (_, gp_addr) = homes.start_env("gp", &[], &[]);
    // Dialling a peer by address makes the node remember it, in peers.json.
    homes.json_env("patient", &["peers", "add", &gp_addr], &[]);
    assert_private(
        &homes.home("patient"),
        &[
            "keystore",
            "vault.redb",
            "lock",
            "control.json",
            "node.log",
            "peers.json",
        ],
    );
    for home in ["patient", "gp"] {
        homes.json_env(home, &["node", "stop"], &[]);
    }
    assert_private(
        &homes.home("patient"),
        &["keystore", "vault.redb", "lock", "node.log", "peers.json"],
    );
}

#[test]
fn a_node_started_by_hand_with_phr_passphrase_moves_it_out_of_its_environment() {
    let homes = Homes::new();
    homes.json_env(
        "patient",
        &["init", "--name", "Ada Lovelace", "--passphrase"],
        &[("PHR_PASSPHRASE", PASSPHRASE)],
    );
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_phr-node"))
        .arg("--home")
        .arg(homes.home("patient"))
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .env_remove("PHR_HOME")
        .env("PHR_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = daemon.id();
    let stdout = daemon.stdout.take().unwrap();
    // One message: the first line, printed once the keystore is open and the node listens.
    let (lines, line) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = lines.send(first);
    });
    let listening = line.recv_timeout(WAIT);
    let environ_checked = std::panic::catch_unwind(|| assert_no_passphrase_in_environ(pid));
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    // SIGTERM, so that it stops cleanly and removes its control file.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = daemon.wait();
    assert!(
        listening.is_ok_and(|line| line.contains("/p2p/")),
        "the daemon opened the encrypted keystore and listens"
    );
    environ_checked.unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("--passphrase-stdin"),
        "the same process now runs with the passphrase on its standard input"
    );
}
