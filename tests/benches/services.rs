//! Patient services between two real nodes on 127.0.0.1 (in this process, each with its own
//! home and event loop, as `phr-node` runs): the round trip of asking a practice's node for its
//! free slots, and the time from a patient asking for an appointment to the practice's node
//! holding the request. Each beside a baseline measured in the same run on the same two nodes:
//! a sync session with nothing to send (one request and its answer), and a home reading written
//! the same way (the add-to-visible of `cargo bench --bench practice`).
//!
//! Target (issue 16): both <= 1 s.
//!
//! Run with `cargo bench -p phr-tests --bench services` (release build).

use std::{
    error::Error,
    path::Path,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use phr_core::{
    Section, Stamp,
    appointments::{self, SlotsQuery},
    home::{Home, NewPatient},
    keys::{PeerId, RecordId},
    ledger::Access,
};
use phr_node::net::{Client, Held, Node};
use phr_tests::bench::{median, ms};

use serde_json::{Value, json};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// Every wait on a node is bounded by this.
const WAIT: Duration = Duration::from_secs(60);
/// Runs of each figure; the table gives their median.
const RUNS: usize = 15;

async fn bounded<T, E: Error + 'static>(future: impl Future<Output = Result<T, E>>) -> Result<T> {
    Ok(tokio::time::timeout(WAIT, future).await??)
}

/// Writes `resource` into the patient's record as a `phr` command does while the node runs:
/// the node lends the home, the command writes and gives it back, the node offers the change.
async fn write(node: &Client, dir: &Path, resource: &Value) -> Result<()> {
    let lease = bounded(node.lease(std::process::id())).await?;
    {
        let mut home = Home::open(dir)?;
        let mut record = home.load_record()?;
        let author = home.device().author();
        let now = Timestamp::now();
        let stamp = Stamp {
            author: &author,
            time: now,
        };
        record.put(stamp, resource)?;
        record.commit(stamp, "bench");
        home.save(&mut record, now)?;
    }
    bounded(node.release(lease)).await?;
    Ok(())
}

/// Waits until the practice holds the patient's `section` blobs as the patient does.
async fn visible(
    patient: &Client,
    practice: &Client,
    record: RecordId,
    section: Section,
) -> Result<()> {
    let mine = bounded(patient.held_record(record))
        .await?
        .ok_or("no record")?;
    let like = Held {
        record,
        blobs: [(section, mine.blobs.get(&section).copied().unwrap_or(0))].into(),
        ledger_ops: mine.ledger_ops,
    };
    bounded(practice.held_like(record, like)).await?;
    Ok(())
}

struct Figures {
    query: Duration,
    empty_sync: Duration,
    request: Duration,
    reading: Duration,
    slots: usize,
}

async fn measure(dir: &Path) -> Result<Figures> {
    let now = Timestamp::now();
    let practice_dir = dir.join("practice");
    let patient_dir = dir.join("patient");
    let practice_home = Home::init_provider(
        &practice_dir,
        "Riverside Surgery",
        Some("A81001".into()),
        None,
    )?;
    let practice_party = practice_home.party();
    let practice_peer: PeerId = practice_home.peer_id();
    let tomorrow = now
        .checked_add(jiff::SignedDuration::from_hours(24))?
        .round(jiff::TimestampRound::new().smallest(jiff::Unit::Hour))?;
    let slots = appointments::make_slots(tomorrow, 10, 60, "GP appointment", now, || {
        phr_core::new_id()
    })?;
    practice_home.add_slots(slots, now)?;
    let (mut patient_home, _) = Home::init_patient(
        &patient_dir,
        &NewPatient {
            name: "Ada Lovelace".into(),
            nhs_number: None,
            birth_date: None,
            device_label: None,
        },
        None,
        now,
    )?;
    patient_home.grant(
        &practice_party,
        &[Section::Summary, Section::Journal, Section::Requests],
        Access::Write,
        None,
        None,
        now,
    )?;
    let record = patient_home.record_id().ok_or("a patient's record")?;

    let (node, practice) = Node::new(practice_home)?;
    let practice_task = tokio::spawn(node.run());
    let bound = bounded(practice.listen("/ip4/127.0.0.1/tcp/0".parse()?)).await?;
    let (node, patient) = Node::new(patient_home)?;
    let patient_task = tokio::spawn(node.run());
    bounded(patient.listen("/ip4/127.0.0.1/tcp/0".parse()?)).await?;
    bounded(patient.dial(format!("{bound}/p2p/{practice_peer}").parse()?)).await?;
    bounded(patient.sync(practice_peer)).await?;
    // A person at the practice accepts the new patient, as `phr patients accept` does.
    let lease = bounded(practice.lease(std::process::id())).await?;
    Home::open(&practice_dir)?.accept_patient(&record.to_string())?;
    bounded(practice.release(lease)).await?;
    bounded(patient.sync(practice_peer)).await?;
    visible(&patient, &practice, record, Section::Summary).await?;

    let query = SlotsQuery {
        from_ms: now.as_millisecond(),
        until_ms: now.as_millisecond() + 7 * 86_400_000,
    };
    let (mut queries, mut empties, mut requests, mut readings) = (vec![], vec![], vec![], vec![]);
    let mut offered = Vec::new();
    for run in 0..RUNS {
        let started = Instant::now();
        offered = bounded(patient.slots(practice_peer, query.clone())).await?;
        queries.push(started.elapsed());

        let started = Instant::now();
        let synced = bounded(patient.sync(practice_peer)).await?;
        empties.push(started.elapsed());
        if let Some(Err(error)) = synced.iter().find(|s| s.is_err()) {
            return Err(format!("an empty sync failed: {error}").into());
        }

        let slot = offered.get(run).ok_or("fewer free slots than runs")?;
        let asked = appointments::request(
            slot,
            &json!({"display": "Riverside Surgery"}),
            &json!({"display": "Ada Lovelace"}),
            "Cough for three weeks",
            &phr_core::new_id(),
            Timestamp::now(),
        )?;
        let started = Instant::now();
        write(&patient, &patient_dir, &asked).await?;
        visible(&patient, &practice, record, Section::Requests).await?;
        requests.push(started.elapsed());

        let reading = json!({"resourceType": "Observation", "id": format!("bp{run}"),
            "status": "final", "code": {"text": "Blood pressure"},
            "meta": {"tag": [{"system": phr_core::section::SECTION_TAG_SYSTEM, "code": "journal"}]},
            "valueString": format!("{}/80", 120 + run)});
        let started = Instant::now();
        write(&patient, &patient_dir, &reading).await?;
        visible(&patient, &practice, record, Section::Journal).await?;
        readings.push(started.elapsed());
    }
    drop(patient);
    drop(practice);
    bounded(patient_task)
        .await?
        .ok_or("the patient's home back")?;
    bounded(practice_task)
        .await?
        .ok_or("the practice's home back")?;
    Ok(Figures {
        query: median(queries),
        empty_sync: median(empties),
        request: median(requests),
        reading: median(readings),
        slots: offered.len(),
    })
}

fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let f = runtime.block_on(measure(dir.path()))?;
    let met = |d: Duration| {
        if d <= Duration::from_secs(1) {
            "met"
        } else {
            "missed"
        }
    };
    println!("## Patient services between two nodes on 127.0.0.1 (median of {RUNS})\n");
    println!("| figure | time | baseline (same run, same nodes) | baseline time | target <= 1 s |");
    println!("|---|---|---|---|---|");
    println!(
        "| slot query round trip ({} free slots answered) | {} | a sync session with nothing to send | {} | {} |",
        f.slots,
        ms(f.query),
        ms(f.empty_sync),
        met(f.query)
    );
    println!(
        "| appointment request to visible at the practice | {} | a home reading, written the same way | {} | {} |",
        ms(f.request),
        ms(f.reading),
        met(f.request)
    );
    Ok(())
}
