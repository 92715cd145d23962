//! The `phr-node` daemon as a separate process: a GP's node listens on loopback, a patient's
//! node (in this process) syncs with it, and SIGTERM stops it cleanly with the record stored.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
};

use common::{Setup, WAIT, assert_gp_reads_only_the_summary, dial_and_sync, setup};
use libp2p::Multiaddr;
use phr_core::home::Home;
use phr_node::net::Node;

/// Kills the daemon if the test ends before it stopped it (a failed assertion), so no process
/// outlives the test.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gp_daemon_receives_the_summary_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        laptop,
        gp,
        gp_party,
        record_id,
    } = setup(dir.path());
    let gp_dir = gp.dir().to_path_buf();
    drop(gp);

    let mut daemon = Command::new(env!("CARGO_BIN_EXE_phr-node"))
        .arg("--home")
        .arg(&gp_dir)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = KillOnDrop(Some(daemon.id()));
    // The daemon prints the address it listens on; wait for it, bounded.
    let stdout = daemon.stdout.take().unwrap();
    let (lines, line) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = lines.send(first);
    });
    let address = line
        .recv_timeout(WAIT)
        .expect("the daemon prints its address");
    let address: Multiaddr = address.trim().parse().unwrap();
    assert!(
        address.to_string().ends_with(&gp_party.peer.to_string()),
        "{address}"
    );

    let (laptop_node, laptop_client) = Node::new(laptop).unwrap();
    let laptop_task = tokio::spawn(laptop_node.run());
    let synced = dial_and_sync(&laptop_client, address, gp_party.peer).await;
    assert!(
        matches!(synced.as_slice(), [Ok((record, _))] if *record == record_id),
        "{synced:?}"
    );
    drop(laptop_client);
    tokio::time::timeout(WAIT, laptop_task)
        .await
        .unwrap()
        .unwrap();

    // SIGTERM, then wait for the exit (bounded).
    let killed = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (exits, exit) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let _ = exits.send(daemon.wait());
    });
    let status = exit.recv_timeout(WAIT).expect("the daemon stops").unwrap();
    guard.0 = None;
    assert!(status.success(), "{status:?}");

    let gp = Home::open(&gp_dir).unwrap();
    assert_gp_reads_only_the_summary(&gp, record_id);
}
