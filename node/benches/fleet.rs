//! The fleet benchmark: the honest patient's sync with a GP's node, without and under a fleet of
//! hostile clients (each syncing a record of its own that grants the GP, then flooding it with
//! openings about records nobody holds, as many in flight as the GP takes streams), and the
//! memory of the process meanwhile.
//!
//! The fleet runs in a process of its own (this binary again, with `PHR_FLEET` set), so that
//! the figures measure the GP's work and not the attacker's CPU; where `taskset` is found, the
//! GP and laptop are pinned to CPU 0 and the fleet to CPU 1, one core each, for the baseline as
//! well. The RSS figures are of the process holding the GP and the laptop, an upper bound on the
//! attacked node's. Run with `cargo bench -p phr-node --bench fleet`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    Running, WAIT,
    fleet::{FLEET, hostile},
    running_and_synced, stop,
};
use phr_node::net::Client;

/// Honest syncs timed in each phase.
const SYNCS: usize = 100;

/// Openings each hostile client sends.
const FLOOD: usize = 3_000;

/// The process's resident memory, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

async fn timed_syncs(client: &Client, gp: phr_core::keys::PeerId) -> Vec<Duration> {
    let mut times = Vec::new();
    for _ in 0..SYNCS {
        let started = Instant::now();
        let synced = tokio::time::timeout(WAIT, client.sync(gp))
            .await
            .expect("a sync within the wait")
            .expect("the node answers");
        assert!(matches!(synced.as_slice(), [Ok(_)]), "{synced:?}");
        times.push(started.elapsed());
    }
    times.sort();
    times
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The environment variable that makes this binary the fleet: the GP's address and party, as
/// JSON.
const FLEET_ENV: &str = "PHR_FLEET";

/// What the fleet process reports on its last line: answers and identities.
#[derive(serde::Serialize, serde::Deserialize)]
struct FleetReport {
    answered: usize,
    identities: usize,
}

/// Pins process `pid` to `cpu` with `taskset`, if it is installed; whether it did.
fn pin(pid: u32, cpu: usize) -> bool {
    std::process::Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The fleet's process: every hostile client against the GP, then one line of JSON.
async fn fleet_process(spec: String) {
    let (addr, gp_party): (String, phr_core::party::Party) =
        serde_json::from_str(&spec).expect("the parent's spec");
    let addr: libp2p::Multiaddr = addr.parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fleet: Vec<_> = (0..FLEET)
        .map(|n| {
            let dir = dir.path().join(format!("hostile-{n}"));
            tokio::spawn(hostile(dir, n, addr.clone(), gp_party.clone(), FLOOD))
        })
        .collect();
    let mut report = FleetReport {
        answered: 0,
        identities: 0,
    };
    for hostile in fleet {
        let (answers, ids) = hostile.await.unwrap();
        report.answered += answers;
        report.identities += ids;
    }
    println!("{}", serde_json::to_string(&report).unwrap());
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Ok(spec) = std::env::var(FLEET_ENV) {
        return fleet_process(spec).await;
    }
    let pinned = pin(std::process::id(), 0);
    let dir = tempfile::tempdir().unwrap();
    let Running {
        gp_client,
        gp_task,
        gp_addr,
        gp_party,
        laptop_client,
        laptop_task,
        ..
    } = running_and_synced(dir.path()).await;

    let rss_before = rss_kib();
    let quiet = timed_syncs(&laptop_client, gp_party.peer).await;

    let peak = Arc::new(AtomicU64::new(rss_kib()));
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, running) = (peak.clone(), running.clone());
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let spec = serde_json::to_string(&(gp_addr.to_string(), &gp_party)).unwrap();
    let fleet = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(FLEET_ENV, spec)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the fleet's process starts");
    if let Some(pid) = fleet.id() {
        pin(pid, 1);
    }
    // Once the fleet is at it: its first answers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attacked = timed_syncs(&laptop_client, gp_party.peer).await;
    let output = fleet.wait_with_output().await.unwrap();
    let report: FleetReport = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .expect("the fleet's report");
    let (answered, identities) = (report.answered, report.identities);
    let fleet_time = started.elapsed();
    running.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    stop(laptop_client, laptop_task).await;
    let gp = stop(gp_client, gp_task).await;
    let waiting = gp.pending_records().unwrap().len();

    let median = |t: &[Duration]| t[t.len() / 2];
    let max = |t: &[Duration]| t[t.len() - 1];
    let ratio = |a: Duration, b: Duration| format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64());
    println!(
        "## Fleet: {FLEET} hostile clients x ({FLOOD} openings + 1 record of their own), 127.0.0.1 TCP\n"
    );
    println!(
        "The fleet runs in its own process; {}.\n",
        match pinned {
            true => "GP and laptop pinned to CPU 0, the fleet to CPU 1",
            false => "taskset not found: nothing pinned",
        }
    );
    println!("| figure | without attack (baseline) | under the fleet | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| honest sync, median of {SYNCS} | {} | {} | {} |",
        ms(median(&quiet)),
        ms(median(&attacked)),
        ratio(median(&attacked), median(&quiet))
    );
    let p90 = |t: &[Duration]| t[t.len() * 9 / 10];
    println!(
        "| honest sync, 90th percentile of {SYNCS} | {} | {} | {} |",
        ms(p90(&quiet)),
        ms(p90(&attacked)),
        ratio(p90(&attacked), p90(&quiet))
    );
    println!(
        "| honest sync, slowest of {SYNCS} | {} | {} | {} |",
        ms(max(&quiet)),
        ms(max(&attacked)),
        ratio(max(&attacked), max(&quiet))
    );
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "| process RSS (GP and laptop) | {:.1} MiB | {:.1} MiB peak | {:.2}x |",
        rss_before as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak as f64 / rss_before.max(1) as f64
    );
    println!(
        "\nThe fleet got {answered} answers in {:.1} s, using {identities} identities (each \
         time it was cut off, or refused at the door, it came back as a new one); {waiting} of its records wait at the GP \
         (room for {}), none listed.",
        fleet_time.as_secs_f64(),
        phr_core::home::PENDING_RECORDS_MAX
    );
}
