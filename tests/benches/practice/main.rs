//! A GP practice's list on one provider node: what one patient costs as the list grows.
//!
//! Builds N patients' records in process (each its own keys and ledger, granting the practice
//! `summary,clinical` write, with a `Patient`, an allergy, a condition and a medicine), stores
//! them in one provider home's vault as its node would have taken them in, and accepts them all.
//! One of the N is a real patient home (`Home::init_patient`, the same grant), whose node runs
//! beside the practice's for add-to-visible. Then, for each N, from one run, in the bench
//! process:
//!
//! - **engine first start-up, in process**: the node's sync engine reading every record from
//!   the vault (`Engine::open`) the first time, checking every signature and unwrapping every
//!   key, as a node's first start after an upgrade does;
//! - **engine start-up, in process**: `Engine::open` again, reading what the first one vouched
//!   for: the bulk of every later start;
//! - **`--patient show`**: opening one patient's record within the grant and reading it, its
//!   audit entry stored (`Home::open_patient` + `PatientRecord::read`), median of 9;
//! - **the engine taking its home back** after that command (`Engine::refresh`), median of 9;
//! - **one write and its audit entry** (`PatientRecord::add`), median of 9;
//! - **one change offered, per connected device**: the engine starting sessions for the one
//!   record a change reached, with the devices of 100 patients (all N if fewer; the change's own
//!   among them) connected (`Engine::start_for`, what the node does), beside the baseline of
//!   what it did before (`Engine::start` for each device, every record walked), medians of 9,
//!   divided by the devices;
//! - **`phr patients`**: the first page of 50, every name shown logged (`Home::patients_page`),
//!   once with its index cold and the median of 5 warm;
//!
//! and in a fresh process (the bench's own executable run again, see `nodes.rs`), the homes
//! closed in the bench process first:
//!
//! - **node start-up, fresh process**: from before `Home::open` of the practice's home, through
//!   `Node::new` (which opens the engine), to the running node's answer to its first command,
//!   listening on `127.0.0.1` TCP: what starting `phr-node` costs, one run (a later start: the
//!   engine's first start-up in the bench process vouched for everything already);
//! - **`/status` of the running node**: `Client::status`, what `phr node status` asks the
//!   control API for, median of 9;
//! - **add-to-visible**: the patient's node, connected and synced with the practice's over
//!   loopback, lends its home to a write as `phr add reading` has it (`Client::lease`,
//!   `Home::open`, the write saved, the home closed, `Client::release`); timed from the lease
//!   asked until the practice's node holds the new blob (`Client::held_like`, which the node
//!   answers as soon as it does), median of 9;
//! - **idle RSS of the node**: the fresh process's VmRSS once its node answered its first
//!   `/status`, before the patient's node starts; the practice's node alone, not the records
//!   built.
//!
//! Each figure beside its N = 10 value, and the ratio. N is 10 and 1,000 by default;
//! `PHR_PRACTICE_N=10,1000,10000` sets the list (10,000 takes a few minutes to build).
//!
//! Run with `cargo bench -p phr-tests --bench practice` (release build).

use std::{error::Error, path::Path, time::Duration, time::Instant};

use phr_core::{
    Section, Stamp,
    audit::Logged,
    home::{Home, NewPatient, PatientQuery},
    keys::RecordId,
    keystore::Keystore,
    ledger::{Access, OpBody},
    party::{Party, Role},
    record::{Author, RecordMeta},
    replica::Replica,
    store::Store,
    sync::Engine,
    vault::Batch,
};
use phr_tests::bench::{median, ms, record_in_memory};
use serde_json::json;

mod nodes;

use nodes::NodeFigures;

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

const NOW_MS: i64 = 1_800_000_000_000;

fn at(offset_ms: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(NOW_MS + offset_ms).expect("a valid time")
}

/// One patient's record, made on a patient device of its own (in memory), granting
/// `practice` write access to `summary` and `clinical`: its ledger operations and blobs.
/// One patient in this many has an appointment request waiting for the practice.
const INBOX_EVERY: usize = 100;

fn patient_record(n: usize, practice: &Party) -> Result<(RecordId, Batch)> {
    let keys = Keystore::generate(true);
    let peer = keys.device.peer_id();
    let party = Party {
        peer,
        recipient: keys.age.recipient(),
        name: format!("Patient {n}'s phone"),
        role: Role::Patient,
        ods: None,
    };
    let (store, mut replica) = record_in_memory(&keys, party, NOW_MS)?;
    let id = replica.id();
    let grant = OpBody::Grant {
        grantee: practice.clone(),
        sections: vec![Section::Summary, Section::Clinical, Section::Requests],
        access: Access::Write,
        expires_ms: None,
        purpose: None,
    };
    replica.change_consent(&store, &keys.device, &keys.device, grant, NOW_MS)?;
    let meta = RecordMeta {
        id: id.to_string(),
        subject: None,
        nhs_number: None,
    };
    let mut actor = peer.public_key()[..16].to_vec();
    actor.extend_from_slice(&[0; 8]);
    let (mut record, _) =
        replica.materialise(&store, meta, &automerge::ActorId::from(actor), &keys.age)?;
    let author = Author {
        id: peer.to_string(),
        name: format!("Patient {n}"),
    };
    let stamp = Stamp {
        author: &author,
        time: at(0),
    };
    for resource in [
        json!({"resourceType": "Patient", "id": "p", "name": [{"family": format!("Patient{n}"),
            "given": ["Test"]}], "birthDate": "1960-01-01", "gender": "female"}),
        json!({"resourceType": "AllergyIntolerance", "id": "a1",
            "code": {"text": "Penicillin"}, "criticality": "high"}),
        json!({"resourceType": "Condition", "id": "c1", "code": {"text": "Hypertension"},
            "onsetDateTime": "2015-03-01"}),
        json!({"resourceType": "MedicationStatement", "id": "m1", "status": "active",
            "medicationCodeableConcept": {"text": "Ramipril 5mg capsules"}}),
    ] {
        record.put(stamp, &resource)?;
    }
    // One patient in a hundred has asked for an appointment: what `phr inbox` shows.
    if n.is_multiple_of(INBOX_EVERY) {
        record.put(
            stamp,
            &json!({"resourceType": "Appointment", "id": "ask", "status": "proposed",
                "reasonCode": [{"text": "Review"}], "start": "2099-03-02T09:00:00Z",
                "end": "2099-03-02T09:10:00Z",
                "participant": [{"actor": {"display": "Patient"}, "status": "accepted"},
                    {"actor": {"display": "Riverside Surgery"}, "status": "needs-action"}]}),
        )?;
    }
    record.commit(stamp, "onboarding");
    replica.save(&store, &keys.device, &mut record, NOW_MS)?;
    Ok((id, stored(&store, id, |_| true)?))
}

/// What the practice's node stores of record `id` in `store`: every ledger operation, and the
/// blobs of the sections `keep` says it holds.
fn stored(store: &impl Store, id: RecordId, keep: impl Fn(Section) -> bool) -> Result<Batch> {
    let mut out = Batch::new();
    for bytes in store.ledger_ops(&id)? {
        let op = phr_core::ledger::SignedOp::decode(&bytes)?;
        out.ledger_op(id, &op);
    }
    for section in Section::ALL.into_iter().filter(|s| keep(*s)) {
        for (_, bytes) in store.blobs(&id, section)? {
            out.blob(id, section, &phr_core::blob::Blob::decode(bytes)?);
        }
    }
    Ok(out)
}

/// The one patient of the list with a home of its own (in `dir`), as `phr init` makes it,
/// granting `practice` write access to `summary` and `clinical` as the others do: its node
/// runs beside the practice's for the add-to-visible row. Returns what the practice's node
/// stores of it: its ledger and the sections it may hold.
fn patient_home(dir: &Path, practice: &Party) -> Result<(RecordId, Batch)> {
    let now = jiff::Timestamp::now();
    let patient = NewPatient {
        name: "Ada Lovelace".into(),
        nhs_number: None,
        birth_date: None,
        device_label: None,
    };
    let (mut home, _) = Home::init_patient(dir, &patient, None, now)?;
    home.grant(
        practice,
        &[Section::Summary, Section::Clinical, Section::Requests],
        Access::Write,
        None,
        None,
        now,
    )?;
    let id = home.record_id().expect("a patient's home holds its record");
    let (vault, age) = home.sync_parts();
    let replica = Replica::open(vault, id, home.peer_id(), age)?;
    let may_hold = |s| replica.may_hold(&practice.peer, s, now.as_millisecond());
    Ok((id, stored(vault, id, may_hold)?))
}

/// A row of the table: its name, and the figure of a run.
type Row = (&'static str, fn(&Figures) -> Duration);

struct Figures {
    n: usize,
    build: Duration,
    first_startup: Duration,
    startup: Duration,
    show: Duration,
    refresh: Duration,
    write: Duration,
    page_cold: Duration,
    page_warm: Duration,
    inbox_cold: Duration,
    inbox_warm: Duration,
    offer_now: Duration,
    offer_before: Duration,
    node: NodeFigures,
}

fn run(n: usize) -> Result<Figures> {
    assert!(n >= 1, "a list of one patient at least");
    let dir = tempfile::tempdir()?;
    let practice_dir = dir.path().join(nodes::PRACTICE_HOME);
    let built = Instant::now();
    let practice = Home::init_provider(
        &practice_dir,
        "Riverside Surgery",
        Some("Y12345".into()),
        None,
    )?;
    let party = practice.party();
    let mut ids = Vec::with_capacity(n);
    let mut batch = Batch::new();
    // The last patient is the one with a home of its own; the others exist only as the
    // practice holds them.
    for i in 0..n - 1 {
        let (id, stored) = patient_record(i, &party)?;
        ids.push(id);
        batch.extend(stored);
        if (i + 1) % 200 == 0 {
            practice.sync_parts().0.commit(std::mem::take(&mut batch))?;
        }
    }
    let (id, stored) = patient_home(&dir.path().join(nodes::PATIENT_HOME), &party)?;
    ids.push(id);
    batch.extend(stored);
    practice.sync_parts().0.commit(batch)?;
    let accepted = practice.accept_all_pending()?;
    assert_eq!(accepted.len(), n, "every record accepted");
    drop(practice);
    let practice = Home::open(&practice_dir)?;
    let build = built.elapsed();

    let (vault, age) = practice.sync_parts();
    // The first opening checks every signature and unwraps every key, as a node's first start
    // after an upgrade does, and keeps what it checked; every later start reads that.
    let started = Instant::now();
    let engine = Engine::open(vault, practice.peer_id(), age)?;
    let first_startup = started.elapsed();
    drop(engine);
    let started = Instant::now();
    let mut engine = Engine::open(vault, practice.peer_id(), age)?;
    let startup = started.elapsed();
    assert_eq!(engine.replicas().len(), n);

    let one = ids[n / 2].to_string();
    let mut shows = Vec::new();
    let mut refreshes = Vec::new();
    let mut writes = Vec::new();
    for run in 0..9 {
        let started = Instant::now();
        let mut open = practice.open_patient(&one, at(1_000 + run))?;
        let readable = open.readable(at(1_000 + run));
        let record = open.read(&Logged::read("show", &readable), at(1_000 + run))?;
        assert!(record.resources(Section::Summary)?.len() >= 4);
        drop(open);
        shows.push(started.elapsed());

        let started = Instant::now();
        let reopened = engine.refresh(vault, age)?;
        refreshes.push(started.elapsed());
        assert_eq!(reopened, 1, "only the record the command changed");

        let started = Instant::now();
        let mut open = practice.open_patient(&one, at(2_000 + run))?;
        let reading = json!({"resourceType": "Observation", "id": format!("bp{run}"),
            "status": "final", "code": {"text": "Blood pressure"},
            "valueString": format!("{}/80", 120 + run)});
        open.add(&reading, "add reading", at(2_000 + run))?;
        drop(open);
        writes.push(started.elapsed());
        engine.refresh(vault, age)?;
    }

    let (offer_now, offer_before) = offers(&mut engine, vault, age, &ids, ids[n / 2])?;

    let first_page = PatientQuery {
        search: None,
        page: 1,
        per_page: 50,
    };
    let started = Instant::now();
    let listed = practice.patients_page(at(5_000), &first_page)?;
    let page_cold = started.elapsed();
    assert_eq!(listed.total, n);
    assert_eq!(listed.items.len(), n.min(50));
    assert!(listed.items.iter().all(|p| p.patient.is_some()));
    let mut warm_pages = Vec::new();
    for run in 0..5 {
        let started = Instant::now();
        let listed = practice.patients_page(at(6_000 + run), &first_page)?;
        warm_pages.push(started.elapsed());
        assert_eq!(listed.items.len(), n.min(50));
    }
    let started = Instant::now();
    let inbox = practice.inbox(at(7_000))?;
    let inbox_cold = started.elapsed();
    assert_eq!(
        inbox.len(),
        (n - 1).div_ceil(INBOX_EVERY),
        "every waiting request listed"
    );
    let mut warm = Vec::new();
    for run in 0..5 {
        let started = Instant::now();
        let again = practice.inbox(at(8_000 + run))?;
        warm.push(started.elapsed());
        assert_eq!(again.len(), inbox.len());
    }
    let inbox_warm = median(warm);
    drop(engine);
    drop(practice);
    let node = nodes::measure(dir.path(), n)?;

    Ok(Figures {
        n,
        build,
        first_startup,
        startup,
        show: median(shows),
        refresh: median(refreshes),
        write: median(writes),
        page_cold,
        page_warm: median(warm_pages),
        inbox_cold,
        inbox_warm,
        offer_now,
        offer_before,
        node,
    })
}

/// How many patients' devices are connected when a change is offered.
const CONNECTED: usize = 100;

/// One change to `changed` offered to the devices of up to [`CONNECTED`] patients, connected
/// (all N if fewer), per device: as the node does now ([`Engine::start_for`]: the changed
/// record, to the devices it admits), and as it did before, the baseline ([`Engine::start`] for
/// every connected device: every record walked for each). Medians of 9; the sessions started
/// are dropped unanswered.
fn offers(
    engine: &mut Engine,
    vault: &dyn Store,
    age: &phr_core::keys::AgeIdentity,
    ids: &[RecordId],
    changed: RecordId,
) -> Result<(Duration, Duration)> {
    let devices: Vec<phr_core::keys::PeerId> = ids
        .iter()
        .take(CONNECTED.saturating_sub(1))
        .chain([&changed])
        .filter_map(|id| {
            let state = engine.replicas().get(id)?.ledger().state();
            state.owners.values().next().map(|party| party.peer)
        })
        .collect();
    let changed = std::collections::BTreeSet::from([changed]);
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let (mut now, mut before) = (Vec::new(), Vec::new());
    let mut session = 1 << 40;
    for _ in 0..9 {
        let started = Instant::now();
        let mut sessions = 0;
        for device in &devices {
            session += 1 << 16;
            sessions += engine
                .start_for(vault, age, *device, &changed, session, now_ms)
                .len();
        }
        now.push(started.elapsed());
        assert_eq!(sessions, 1, "only the changed record's own device");
        for device in &devices {
            engine.disconnected(device);
        }
        engine.take_ended();

        let started = Instant::now();
        for device in &devices {
            session += 1 << 16;
            engine.start(vault, age, *device, None, session, now_ms);
        }
        before.push(started.elapsed());
        for device in &devices {
            engine.disconnected(device);
        }
        engine.take_ended();
    }
    let devices = u32::try_from(devices.len()).unwrap_or(u32::MAX).max(1);
    Ok((median(now) / devices, median(before) / devices))
}

/// A time in milliseconds, or in microseconds under a tenth of a millisecond.
fn short(d: Duration) -> String {
    if d < Duration::from_micros(100) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        ms(d)
    }
}

/// This process's resident memory, in MiB (0 where `/proc` is not there).
pub(crate) fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> Result<()> {
    if let Some(dir) = std::env::var_os(nodes::NODES_DIR_ENV) {
        return nodes::child(Path::new(&dir));
    }
    let ns: Vec<usize> = std::env::var("PHR_PRACTICE_N")
        .ok()
        .map(|list| {
            list.split(',')
                .map(|n| {
                    n.trim()
                        .parse()
                        .expect("PHR_PRACTICE_N: numbers, comma separated")
                })
                .collect()
        })
        .unwrap_or_else(|| vec![10, 1_000]);
    let figures: Vec<Figures> = ns.iter().map(|n| run(*n)).collect::<Result<_>>()?;
    let base = &figures[0];
    println!(
        "phr practice benchmark: one provider node holding N patients' records (built in process)\n"
    );
    let mut header = String::from("| figure |");
    let mut rule = String::from("|---|");
    for f in &figures {
        header.push_str(&format!(" N = {} |", f.n));
        rule.push_str("---|");
        if f.n != base.n {
            header.push_str(&format!(" / N = {} |", base.n));
            rule.push_str("---|");
        }
    }
    println!("{header}\n{rule}");
    let rows: [Row; 15] = [
        ("building the list (not a target)", |f| f.build),
        (
            "engine first start-up, in process: every signature checked, every key unwrapped",
            |f| f.first_startup,
        ),
        ("engine start-up, in process: reads every record", |f| {
            f.startup
        }),
        (
            "node start-up, fresh process: `Home::open` to listening",
            |f| f.node.startup,
        ),
        ("`/status` of the running node", |f| f.node.status),
        ("one `--patient show`, its audit entry stored", |f| f.show),
        ("the engine taking the home back after it", |f| f.refresh),
        ("one write and its audit entry", |f| f.write),
        (
            "add-to-visible: a patient's write until the practice's node holds it",
            |f| f.node.visible,
        ),
        (
            "one change offered, per connected device (100, or N if fewer): `Engine::start_for`, the record changed",
            |f| f.offer_now,
        ),
        (
            "baseline, the same as before: `Engine::start`, every record walked for each device",
            |f| f.offer_before,
        ),
        ("`phr patients`, first page of 50, index cold", |f| {
            f.page_cold
        }),
        ("`phr patients`, first page of 50, index warm", |f| {
            f.page_warm
        }),
        (
            "`phr inbox`, index cold: every record's requests read (1 in 100 waiting, each logged)",
            |f| f.inbox_cold,
        ),
        (
            "`phr inbox`, index warm: no record read again (the same shown and logged)",
            |f| f.inbox_warm,
        ),
    ];
    for (name, of) in rows {
        let mut line = format!("| {name} |");
        for f in &figures {
            line.push_str(&format!(" {} |", short(of(f))));
            if f.n != base.n {
                let ratio = of(f).as_secs_f64() / of(base).as_secs_f64().max(1e-9);
                line.push_str(&format!(" {ratio:.2}x |"));
            }
        }
        println!("{line}");
    }
    let mut line = String::from("| idle RSS of the node, fresh process |");
    for f in &figures {
        line.push_str(&format!(" {:.1} MiB |", f.node.rss_mib));
        if f.n != base.n {
            let ratio = f.node.rss_mib / base.node.rss_mib.max(1e-9);
            line.push_str(&format!(" {ratio:.2}x |"));
        }
    }
    println!("{line}");
    Ok(())
}
