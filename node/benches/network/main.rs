//! The network benchmark: phr's sync between real nodes, each figure beside a baseline measured
//! in the same run.
//!
//! 1. **Full sync of the largest fixture's record.** A patient home imports the largest Synthea
//!    fixture and grants a new GP `summary` and `clinical` (read). Both run as in-process nodes
//!    (`phr_node::net::Node`) on 127.0.0.1 TCP; the patient dials the GP and syncs. Beside it:
//!    Automerge's own sync protocol, in memory, bringing an empty document up to each of the same
//!    two section documents; and a plain copy of as many bytes as phr's sync moved over a loopback
//!    TCP socket. Each is the median of [`SYNC_RUNS`] runs, every phr run with a fresh copy of the
//!    patient's home and a fresh GP home.
//! 2. **Add to visible.** Two real daemons (`phr node start`, which runs `phr-node`), the patient
//!    sharing `summary` with the GP: the time from starting `phr add allergy` on the patient's
//!    home to the GP's node holding the new blob, as its control API reports it. Beside it: how
//!    long the `phr add` process itself took.
//!
//! Run with `cargo build --release -p phr-cli && cargo bench -p phr-node --bench network`.
//! Each figure is from one run of this benchmark. Part 2 is in `visible.rs`, the table in
//! `report.rs`.

use std::{
    collections::BTreeMap,
    error::Error,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Barrier,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use automerge::{
    ActorId, AutoCommit, ChangeHash,
    sync::{Message, State, SyncDoc},
};
use libp2p::{Multiaddr, multiaddr::Protocol};
use phr_core::{
    RecordMeta, Section, Stamp,
    home::{Home, NewPatient},
    import,
    keys::RecordId,
    ledger::Access,
    replica::Replica,
    sync::SessionStats,
};
use phr_node::net::Node;

mod report;
mod visible;

use report::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use visible::*;

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// phr syncs, Automerge syncs and socket copies timed; each figure is their median.
const SYNC_RUNS: usize = 5;

/// `phr add` runs timed for add-to-visible.
const ADD_RUNS: usize = 10;

/// Every wait on a node in part 1 is bounded by this.
const WAIT: Duration = Duration::from_secs(120);

/// How often the GP's node is asked what it holds, in part 2.
const POLL_MS: u64 = 2;

/// How long an added allergy may take to reach the GP before the benchmark gives up.
const VISIBLE_MS_MAX: u64 = 10_000;

/// How long after a counted sync ends the relay's count is read.
const WIRE_SETTLE_MS: u64 = 250;

/// The most messages one Automerge sync may take before the benchmark calls it stuck.
const AUTOMERGE_MESSAGES_MAX: usize = 1_000;

/// The sections the GP is granted, and the Automerge baseline syncs.
const GRANTED: [Section; 2] = [Section::Summary, Section::Clinical];

/// The targets: full sync within 2x Automerge's in-memory sync; add to visible within 1 s.
const SYNC_RATIO_MAX: f64 = 2.0;
const VISIBLE_TARGET: Duration = Duration::from_secs(1);

fn main() -> Result<()> {
    let phr = phr_binary();
    let dir = tempfile::tempdir()?;
    let fixture = largest_fixture()?;
    let patient = prepare_patient(&dir.path().join("pristine"), &fixture)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    for run in 0..SYNC_RUNS {
        let run_dir = dir.path().join(format!("run-{run}"));
        runs.push(runtime.block_on(phr_sync(&patient, &run_dir, false))?);
    }
    let counted = runtime.block_on(phr_sync(&patient, &dir.path().join("counted"), true))?;
    drop(runtime);

    // Byte counts differ by some dozens between runs (new keys, ids and session numbers, some in
    // variable-length encodings): the copy moves the median.
    let bytes = median(runs.iter().map(SyncRun::bytes).collect());
    let automerge: Vec<AutomergeSync> = (0..SYNC_RUNS)
        .map(|_| automerge_sync(&patient.docs))
        .collect::<Result<_>>()?;
    let copy = median(
        (0..SYNC_RUNS)
            .map(|_| tcp_copy(bytes))
            .collect::<Result<_>>()?,
    );
    let visible = add_to_visible(phr)?;

    print_report(&Report {
        fixture: &fixture,
        patient: &patient,
        runs: &runs,
        counted: &counted,
        automerge: &automerge,
        copy,
        visible: &visible,
    });
    Ok(())
}

/// The largest file of the Synthea fixtures, found by size.
fn largest_fixture() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/fhir/synthea");
    let mut largest: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let size = std::fs::metadata(&path)?.len();
            if largest.as_ref().is_none_or(|(s, _)| size > *s) {
                largest = Some((size, path));
            }
        }
    }
    Ok(largest
        .ok_or_else(|| format!("no JSON fixture in {}", dir.display()))?
        .1)
}

/// The patient's home after import, closed, to be copied for every run; and the two granted
/// section documents as the patient holds them (Automerge's `save()`).
struct Patient {
    home: PathBuf,
    resources: usize,
    docs: Vec<(Section, Vec<u8>)>,
    /// The heads of every section, which the GP's copy of the granted ones must match.
    heads: BTreeMap<Section, Vec<ChangeHash>>,
}

/// Creates a patient home and imports `fixture` into it, as `phr import` does.
fn prepare_patient(dir: &Path, fixture: &Path) -> Result<Patient> {
    let now = jiff::Timestamp::now();
    let new = NewPatient {
        name: "Fletcher Hyatt".into(),
        nhs_number: None,
        birth_date: None,
        device_label: None,
    };
    let (mut home, mut record) = Home::init_patient(dir, &new, None, now)?;
    let bytes = std::fs::read(fixture)?;
    let (parsed, skipped) = import::parse(&fixture.display().to_string(), &bytes)?;
    let author = home.device().author();
    let stamp = Stamp {
        author: &author,
        time: now,
    };
    let report = import::apply(&mut record, stamp, &parsed, skipped)?;
    home.save(&mut record, now)?;
    // The documents as they come back from the vault, which is what the node serves.
    let mut loaded = home.load_record()?;
    let docs = GRANTED
        .iter()
        .map(|s| (*s, loaded.save_section(*s)))
        .collect();
    Ok(Patient {
        home: dir.to_path_buf(),
        resources: report.added,
        docs,
        heads: loaded.heads(),
    })
}

/// One phr sync from the patient's node to a new GP's node.
struct SyncRun {
    /// From the patient's dial to its sync command returning.
    dial_to_synced: Duration,
    /// From the connection being up (the patient's node starts its session then) to the same end.
    synced_alone: Duration,
    /// After the nodes stopped: the GP opening what it received (ledger, keys, both sections).
    gp_open: Duration,
    stats: SessionStats,
    /// Blobs the GP holds afterwards, per section.
    gp_blobs: Vec<(Section, usize)>,
    /// With a counting relay: TCP payload bytes both ways from dial to synced.
    wire_bytes: Option<u64>,
}

impl SyncRun {
    fn bytes(&self) -> usize {
        self.stats.bytes_sent + self.stats.bytes_received
    }
}

/// Copies the patient's home, grants a new GP, starts both nodes and syncs; checks that the GP
/// then reads the granted sections exactly as the patient wrote them, and holds nothing else. With `count_wire`, the
/// patient dials the GP through a relay on 127.0.0.1 that counts the bytes it forwards.
async fn phr_sync(pristine: &Patient, dir: &Path, count_wire: bool) -> Result<SyncRun> {
    let now = jiff::Timestamp::now();
    copy_dir(&pristine.home, &dir.join("patient"))?;
    let mut patient = Home::open(&dir.join("patient"))?;
    let record = patient
        .record_id()
        .ok_or("the patient's home holds no record")?;
    let gp = Home::init_provider(&dir.join("gp"), "Dr Grace", Some("A81001".into()), None)?;
    let gp_party = gp.party();
    patient.grant(&gp_party, &GRANTED, Access::Read, None, None, now)?;

    let gp_peer = gp_party.peer;
    let (gp_node, gp_client) = Node::new(gp)?;
    let gp_task = tokio::spawn(gp_node.run());
    let gp_listening =
        tokio::time::timeout(WAIT, gp_client.listen("/ip4/127.0.0.1/tcp/0".parse()?)).await??;
    let (patient_node, patient_client) = Node::new(patient)?;
    let patient_task = tokio::spawn(patient_node.run());

    let wire = if count_wire {
        Some(counting_relay(tcp_port(&gp_listening)?).await?)
    } else {
        None
    };
    let dial_to = match &wire {
        Some((relay, _)) => format!("/ip4/127.0.0.1/tcp/{}", relay.port()).parse::<Multiaddr>()?,
        None => gp_listening,
    };
    let dial_to = dial_to.with(Protocol::P2p(gp_peer.to_string().parse()?));

    let start = Instant::now();
    let dialled = tokio::time::timeout(WAIT, patient_client.dial(dial_to)).await??;
    let connected = Instant::now();
    let synced = tokio::time::timeout(WAIT, patient_client.sync(gp_peer)).await??;
    let end = Instant::now();
    let wire_bytes = match wire {
        // The closing request and its empty answer may still be on their way: let them arrive.
        Some((_, counter)) => {
            tokio::time::sleep(Duration::from_millis(WIRE_SETTLE_MS)).await;
            Some(counter.load(Ordering::SeqCst))
        }
        None => None,
    };
    if dialled != gp_peer {
        return Err(format!("dialled {dialled}, not the GP").into());
    }
    let [Ok((_, stats))] = &synced[..] else {
        return Err(format!("expected one successful session, got {synced:?}").into());
    };
    let stats = stats.clone();

    // What the GP holds is checked below, when it opens the record; here, that it holds no
    // blob of a section it was not granted.
    let gp_blobs: Vec<(Section, usize)> = match &gp_client.held().await?[..] {
        [held] => held.blobs.iter().map(|(s, n)| (*s, *n)).collect(),
        other => return Err(format!("the GP holds {} records, not one", other.len()).into()),
    };
    if let Some((section, _)) = gp_blobs
        .iter()
        .find(|(s, n)| !GRANTED.contains(s) && *n > 0)
    {
        return Err(format!("the GP holds blobs of {section}, which it was not granted").into());
    }

    drop((patient_client, gp_client));
    tokio::time::timeout(WAIT, patient_task).await??;
    let gp = tokio::time::timeout(WAIT, gp_task)
        .await??
        .ok_or("the GP's node kept its home")?;
    let gp_open = gp_reads(&gp, record, &pristine.heads)?;
    Ok(SyncRun {
        dial_to_synced: end - start,
        synced_alone: end - connected,
        gp_open,
        stats,
        gp_blobs,
        wire_bytes,
    })
}

/// Times the GP opening the record from its own vault, as its `phr show --patient` would; checks
/// that it reads the patient's documents of the granted sections, and only those.
fn gp_reads(
    gp: &Home,
    record: RecordId,
    patient_heads: &BTreeMap<Section, Vec<ChangeHash>>,
) -> Result<Duration> {
    let start = Instant::now();
    let (vault, age) = gp.sync_parts();
    let mut replica = Replica::open(vault, record, gp.peer_id(), age)?;
    let meta = RecordMeta {
        id: record.to_string(),
        subject: None,
        nhs_number: None,
    };
    let actor = ActorId::from(gp.peer_id().public_key()[..16].to_vec());
    let (mut read, warnings) = replica.materialise(vault, meta, &actor, age)?;
    let wall = start.elapsed();
    if !warnings.is_empty() {
        return Err(format!("the GP's copy has problems: {warnings:?}").into());
    }
    let heads = read.heads();
    for section in Section::ALL {
        let expected = match GRANTED.contains(&section) {
            true => patient_heads.get(&section).cloned().unwrap_or_default(),
            false => Vec::new(),
        };
        if heads.get(&section).cloned().unwrap_or_default() != expected {
            return Err(format!("the GP's {section} differs from what it may read").into());
        }
    }
    Ok(wall)
}

fn tcp_port(addr: &Multiaddr) -> Result<u16> {
    addr.iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .ok_or_else(|| format!("{addr} is not a TCP address").into())
}

/// A TCP relay on 127.0.0.1 to `port` that counts every byte it forwards, both ways.
async fn counting_relay(port: u16) -> Result<(SocketAddr, Arc<AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counter = Arc::new(AtomicU64::new(0));
    let total = counter.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await
            else {
                continue;
            };
            let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
            let (from_dialer, to_dialer) = inbound.into_split();
            let (from_target, to_target) = outbound.into_split();
            tokio::spawn(pump(from_dialer, to_target, total.clone()));
            tokio::spawn(pump(from_target, to_dialer, total.clone()));
        }
    });
    Ok((addr, counter))
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: Arc<AtomicU64>,
) {
    let mut buf = vec![0; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        // Counted before it is passed on, so a reader that sees it has seen the count grow.
        counter.fetch_add(n as u64, Ordering::SeqCst);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Automerge's sync of the granted sections: for each, an empty document and the whole one,
/// both from a fresh `sync::State`, messages through `encode` and `decode` as on a wire.
struct AutomergeSync {
    wall: Duration,
    bytes: usize,
    messages: usize,
}

impl AutomergeSync {
    /// One message from `from` to `to`, through its wire encoding; whether there was one.
    fn pass(
        &mut self,
        from: &mut AutoCommit,
        from_state: &mut State,
        to: &mut AutoCommit,
        to_state: &mut State,
    ) -> Result<bool> {
        let Some(message) = from.sync().generate_sync_message(from_state) else {
            return Ok(false);
        };
        let wire = message.encode();
        self.bytes += wire.len();
        self.messages += 1;
        to.sync()
            .receive_sync_message(to_state, Message::decode(&wire)?)?;
        Ok(true)
    }
}

fn automerge_sync(docs: &[(Section, Vec<u8>)]) -> Result<AutomergeSync> {
    let mut total = AutomergeSync {
        wall: Duration::ZERO,
        bytes: 0,
        messages: 0,
    };
    for (section, saved) in docs {
        let mut full = AutoCommit::load(saved)?;
        let mut empty = AutoCommit::new();
        let (mut state_full, mut state_empty) = (State::new(), State::new());
        let start = Instant::now();
        loop {
            if total.messages >= AUTOMERGE_MESSAGES_MAX {
                return Err(format!("Automerge's sync of {section} did not settle").into());
            }
            let sent_full = total.pass(&mut full, &mut state_full, &mut empty, &mut state_empty)?;
            let sent_empty =
                total.pass(&mut empty, &mut state_empty, &mut full, &mut state_full)?;
            if !sent_full && !sent_empty {
                break;
            }
        }
        total.wall += start.elapsed();
        if full.get_heads() != empty.get_heads() {
            return Err(format!("Automerge's sync of {section} did not converge").into());
        }
    }
    Ok(total)
}

/// Writes `bytes` bytes into a connected loopback TCP socket and reads them all on the other
/// side; the time from the first write to the last byte read.
fn tcp_copy(bytes: usize) -> Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let ready = Arc::new(Barrier::new(2));
    let go = ready.clone();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut socket, _) = listener.accept()?;
        let payload = vec![0x5a_u8; bytes];
        go.wait();
        socket.write_all(&payload)?;
        socket.shutdown(std::net::Shutdown::Write)
    });
    let mut socket = TcpStream::connect(addr)?;
    let mut buf = vec![0; 64 * 1024];
    let mut read = 0;
    ready.wait();
    let start = Instant::now();
    while read < bytes {
        match socket.read(&mut buf)? {
            0 => return Err(format!("the copy ended after {read} of {bytes} bytes").into()),
            n => read += n,
        }
    }
    let wall = start.elapsed();
    writer.join().map_err(|_| "the writer thread panicked")??;
    Ok(wall)
}
