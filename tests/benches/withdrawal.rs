//! What "withdrawn access is final" costs, beside baselines measured in the same run.
//!
//! Two workloads, each a patient's laptop whose `clinical` section holds a big compaction and
//! then 31 small saves, all synced to a GP (who reads `clinical`) and a relay; the laptop then
//! compacts again, and the new compaction (which replaces the old one and the 31 blobs) reaches
//! the others:
//!
//! - the largest fixture (a lifetime record of about 1,100 resources), imported;
//! - a 10,000-change section: 9,690 home readings in one save, then 31 saves of 10.
//!
//! For each, the table gives the time for the GP to take the compaction in (it can read
//! `clinical`, so it first checks that the compaction holds every change of each blob it
//! deletes), beside the relay taking the same compaction in (it cannot read, so it checks
//! nothing: the cost before this check existed) and Automerge loading the compaction's document
//! alone (the floor of any check). Then the laptop's cold open (open the home, load every
//! section) before and after revoking the GP (which adds a `Close` that every blob is judged
//! against), and the size of that `Close` operation. Blob formats did not change, so sync bytes
//! are the same as before apart from the ledger operations.
//!
//! Run with `cargo bench -p phr-tests --bench withdrawal` (release build). Each ingest figure is
//! one run (it changes the store); each open figure is the median of 5.

use std::{error::Error, time::Instant};

use automerge::AutoCommit;
use phr_core::{
    Record, Section,
    blob::Blob,
    card::Card,
    home::Home,
    keys::BlobId,
    ledger::{Access, OpBody},
    replica::{Replica, Topic},
};
use phr_tests::{
    bench::{self, readings, t},
    import_file, largest_fixture, patient_home,
};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

struct Figures {
    name: &'static str,
    gp_ingest_ms: f64,
    relay_ingest_ms: f64,
    automerge_load_ms: f64,
    replaced: usize,
    open_before_ms: f64,
    open_after_ms: f64,
    close_bytes: usize,
}

fn run(name: &'static str, fill: &dyn Fn(&mut Home, &mut Record) -> Result<()>) -> Result<Figures> {
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let (mut laptop, mut record) = patient_home(dirs[0].path());
    let gp = Home::init_provider(
        dirs[1].path(),
        "Riverside Surgery",
        Some("Y12345".into()),
        None,
    )?;
    let relay = Home::init_relay(dirs[2].path(), "Relay", None)?;
    laptop.grant(
        &gp.party(),
        &[Section::Summary, Section::Clinical],
        Access::Read,
        None,
        None,
        t(1),
    )?;
    let relay_card = Card::parse(&relay.card(vec![], t(1))?)?;
    laptop.add_relay(&relay_card, t(1))?;
    fill(&mut laptop, &mut record)?;
    for i in 0..31 {
        readings(
            &mut laptop,
            &mut record,
            100_000 + i * 10,
            10,
            t(10 + i as i64),
        )?;
    }
    let id = laptop.record_id().ok_or("no record")?;
    let now_ms = t(100).as_millisecond();
    laptop.sync_in_process(&gp, id, now_ms)?;
    laptop.sync_in_process(&relay, id, now_ms)?;

    // The laptop compacts; the compaction is taken from its vault.
    let before: Vec<BlobId> = laptop
        .vault_for_test()
        .blobs(&id, Section::Clinical)?
        .into_iter()
        .map(|(b, _)| b)
        .collect();
    let mut record = laptop.load_record()?;
    laptop.compact(&mut record, t(200))?;
    let (_, bytes) = laptop
        .vault_for_test()
        .blobs(&id, Section::Clinical)?
        .into_iter()
        .find(|(b, _)| !before.contains(b))
        .ok_or("no new compaction")?;
    let compaction = Blob::decode(bytes.clone())?;
    let replaced = compaction.header().replaces.len();
    let (vault, age) = laptop.sync_parts();
    let replica = Replica::open(vault, id, laptop.peer_id(), age)?;
    let key = replica
        .keyring()
        .get(&compaction.header().key_id)
        .ok_or("no key")?;
    let document = compaction.open(key)?;

    let automerge = bench::time(5, || AutoCommit::load(&document).expect("loads"));
    let ingest = |home: &Home| -> Result<f64> {
        let (vault, age) = home.sync_parts();
        let mut replica = Replica::open(vault, id, home.peer_id(), age)?;
        let start = Instant::now();
        let report = replica.ingest(
            vault,
            age,
            vec![(Topic::Section(Section::Clinical), bytes.clone())],
            t(300).as_millisecond(),
        )?;
        let elapsed = start.elapsed();
        assert_eq!(report.blobs, 1, "{report:?}");
        Ok(elapsed.as_secs_f64() * 1000.0)
    };
    let gp_ingest_ms = ingest(&gp)?;
    let relay_ingest_ms = ingest(&relay)?;
    let deleted = gp.vault_for_test().blobs(&id, Section::Clinical)?.len();
    assert_eq!(deleted, 1, "the GP keeps only the compaction");

    let dir = dirs[0].path().to_path_buf();
    drop(laptop);
    let open = || {
        let mut home = Home::open(&dir).expect("opens");
        home.load_record().expect("loads");
    };
    let open_before = bench::time(5, open);
    let mut laptop = Home::open(&dir)?;
    laptop.revoke("Riverside Surgery", t(400))?;
    let close_bytes = laptop
        .ledger()?
        .ops()
        .filter(|op| matches!(op.op().body, OpBody::Close { .. }))
        .map(|op| op.bytes().len())
        .sum();
    drop(laptop);
    let open_after = bench::time(5, open);
    Ok(Figures {
        name,
        gp_ingest_ms,
        relay_ingest_ms,
        automerge_load_ms: automerge.as_secs_f64() * 1000.0,
        replaced,
        open_before_ms: open_before.as_secs_f64() * 1000.0,
        open_after_ms: open_after.as_secs_f64() * 1000.0,
        close_bytes,
    })
}

fn main() -> Result<()> {
    let largest = run("largest fixture", &|home, record| {
        import_file(home, record, &largest_fixture())?;
        Ok(())
    })?;
    let many = run("10,000-change section", &|home, record| {
        readings(home, record, 0, 9_690, t(5))
    })?;
    println!(
        "| workload | compaction replaces | GP takes it in (checks) | relay takes it in (no check) | Automerge load alone | cold open, no close | cold open, GP closed | Close op bytes |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for f in [largest, many] {
        println!(
            "| {} | {} blobs | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            f.name,
            f.replaced,
            f.gp_ingest_ms,
            f.relay_ingest_ms,
            f.automerge_load_ms,
            f.open_before_ms,
            f.open_after_ms,
            f.close_bytes
        );
    }
    Ok(())
}
