//! The figures of real nodes, measured in a fresh process: the bench runs its own executable
//! again with [`NODES_DIR_ENV`] naming the directory of the homes it built, and reads the one
//! JSON line that child prints ([`NodeFigures`]).
//!
//! The child does what `phr-node` does on start (`Home::open`, `Node::new`, listen on loopback
//! TCP, run the event loop on a multi-threaded tokio runtime), so its start-up and memory are a
//! daemon's, not those of the process that built N records. It then runs the real patient's
//! node beside the practice's, in the same process, the two talking over 127.0.0.1.

use std::{
    io::Read,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use phr_core::{Section, Stamp, home::Home, keys::RecordId};
use phr_node::net::{Client, Held, Node};
use serde_json::json;

use crate::{Result, median, rss_mib};

/// The environment variable that makes the bench executable the child: the directory holding
/// the homes [`PRACTICE_HOME`] and [`PATIENT_HOME`].
pub const NODES_DIR_ENV: &str = "PHR_PRACTICE_NODES_DIR";

/// The provider home holding the N records, in the directory the bench built.
pub const PRACTICE_HOME: &str = "practice";

/// The one patient of the N with a home of its own, in the directory the bench built.
pub const PATIENT_HOME: &str = "patient";

/// Every wait on a node (an answer, a dial, a sync) is bounded by this.
const WAIT: Duration = Duration::from_secs(120);

/// The longest the whole child may take before the bench kills it: a start-up of 10,000
/// records and every wait, with room.
const CHILD_MAX: Duration = Duration::from_secs(900);

/// Runs of `/status` and of add-to-visible, each figure their median.
const RUNS: usize = 9;

/// What the child measured, as the one JSON line it prints.
#[derive(Debug)]
pub struct NodeFigures {
    /// From before `Home::open` to the running node's first answer (its listen address).
    pub startup: Duration,
    /// The child's VmRSS once the node answered its first `/status`, in MiB.
    pub rss_mib: f64,
    /// One `/status` (`Client::status`), median of [`RUNS`].
    pub status: Duration,
    /// From the start of a patient's write to the practice's node holding its blob, median of
    /// [`RUNS`].
    pub visible: Duration,
}

/// Runs this executable again as the child for the homes in `dir`, expecting a practice node
/// holding `records` records; returns what it measured. The child is killed if it outlives
/// [`CHILD_MAX`].
pub fn measure(dir: &Path, records: usize) -> Result<NodeFigures> {
    let mut child = Command::new(std::env::current_exe()?)
        .env(NODES_DIR_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped");
    // One message: everything the child printed, once it closes its standard output.
    let (done, printed) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = done.send(stdout.read_to_string(&mut out).map(|_| out));
    });
    let out = match printed.recv_timeout(CHILD_MAX) {
        Ok(out) => out?,
        Err(_) => {
            child.kill()?;
            child.wait()?;
            return Err(format!("the node child took over {CHILD_MAX:?}").into());
        }
    };
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("the node child failed ({status})").into());
    }
    let line: serde_json::Value = serde_json::from_str(out.trim())?;
    let us = |key: &str| -> Result<Duration> {
        let us = line[key].as_u64().ok_or(format!("no {key} in {line}"))?;
        Ok(Duration::from_micros(us))
    };
    assert_eq!(
        line["records"],
        json!(records),
        "the node holds every record"
    );
    Ok(NodeFigures {
        startup: us("startup_us")?,
        rss_mib: line["rss_mib"].as_f64().ok_or("no rss_mib")?,
        status: us("status_us")?,
        visible: us("visible_us")?,
    })
}

/// The child: measures the nodes of the homes in `dir` and prints the figures as one JSON line.
pub fn child(dir: &Path) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    // Everything below runs on this thread (`block_on`); the nodes run on the runtime's
    // workers, as a daemon's event loop does, so the patient's blocking write stalls neither.
    let line = runtime.block_on(async {
        let started = Instant::now();
        let home = Home::open(&dir.join(PRACTICE_HOME))?;
        let practice = home.peer_id();
        let (node, client) = Node::new(home)?;
        let task = tokio::spawn(node.run());
        let bound = bounded(client.listen("/ip4/127.0.0.1/tcp/0".parse()?)).await?;
        let startup = started.elapsed();
        let records = bounded(client.status()).await?.records.len();
        let rss_mib = rss_mib();
        let mut statuses = Vec::new();
        for _ in 0..RUNS {
            let started = Instant::now();
            bounded(client.status()).await?;
            statuses.push(started.elapsed());
        }
        let visible = add_to_visible(&client, &dir.join(PATIENT_HOME), practice, &bound).await?;
        drop(client);
        bounded(task)
            .await?
            .ok_or("the practice's node gives its home back")?;
        Ok::<_, Box<dyn std::error::Error>>(json!({
            "records": records,
            "startup_us": micros(startup),
            "rss_mib": rss_mib,
            "status_us": micros(median(statuses)),
            "visible_us": micros(visible),
        }))
    })?;
    println!("{line}");
    Ok(())
}

/// Runs the patient's node, dialling the practice's at `bound` and syncing until the practice
/// holds the record as the patient has it; then times [`RUNS`] writes, each from its start (a
/// `phr` command asking the node for the home) to the practice's node holding the new blob, and
/// returns the median.
async fn add_to_visible(
    practice: &Client,
    dir: &Path,
    practice_peer: phr_core::keys::PeerId,
    bound: &impl std::fmt::Display,
) -> Result<Duration> {
    let home = Home::open(dir)?;
    let record = home
        .record_id()
        .ok_or("the patient's home holds a record")?;
    let (node, patient) = Node::new(home)?;
    let task = tokio::spawn(node.run());
    bounded(patient.dial(format!("{bound}/p2p/{practice_peer}").parse()?)).await?;
    let synced = bounded(patient.sync(practice_peer)).await?;
    if let Some(Err(error)) = synced.iter().find(|s| s.is_err()) {
        return Err(format!("the patient's first sync failed: {error}").into());
    }
    let mine = bounded(patient.held_record(record))
        .await?
        .ok_or("no record")?;
    holds(practice, record, &mine).await?;
    let mut runs = Vec::new();
    for run in 0..RUNS {
        let started = Instant::now();
        // As `phr add` does while the node runs: the node lends the home, the command opens it,
        // writes, closes it and gives it back; the node then offers the change to its peers.
        let lease = bounded(patient.lease(std::process::id())).await?;
        write_reading(dir, run)?;
        bounded(patient.release(lease)).await?;
        let mine = bounded(patient.held_record(record))
            .await?
            .ok_or("no record")?;
        holds(practice, record, &mine).await?;
        runs.push(started.elapsed());
    }
    drop(patient);
    bounded(task)
        .await?
        .ok_or("the patient's node gives its home back")?;
    Ok(median(runs))
}

/// One blood pressure reading, written to the patient's home as `phr add reading` writes it.
fn write_reading(dir: &Path, run: usize) -> Result<()> {
    let mut home = Home::open(dir)?;
    let mut record = home.load_record()?;
    let author = home.device().author();
    let now = jiff::Timestamp::now();
    let stamp = Stamp {
        author: &author,
        time: now,
    };
    let reading = json!({"resourceType": "Observation", "id": format!("home-bp{run}"),
        "status": "final", "code": {"text": "Blood pressure"},
        "valueString": format!("{}/80", 120 + run)});
    record.put(stamp, &reading)?;
    record.commit(stamp, "add reading");
    home.save(&mut record, now)?;
    Ok(())
}

/// Waits until the practice's node holds `record` as `patient` has it (its ledger, and every
/// blob of the sections the practice was granted): the node answers as soon as it does, within
/// [`WAIT`].
async fn holds(practice: &Client, record: RecordId, patient: &Held) -> Result<()> {
    let granted = [Section::Summary, Section::Clinical];
    let like = Held {
        record,
        blobs: granted
            .into_iter()
            .map(|s| (s, patient.blobs.get(&s).copied().unwrap_or(0)))
            .collect(),
        ledger_ops: patient.ledger_ops,
    };
    bounded(practice.held_like(record, like)).await?;
    Ok(())
}

/// `future`, failing after [`WAIT`].
async fn bounded<T, E: std::error::Error + 'static>(
    future: impl Future<Output = Result<T, E>>,
) -> Result<T> {
    Ok(tokio::time::timeout(WAIT, future).await??)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
