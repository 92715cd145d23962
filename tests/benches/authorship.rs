//! What authorship proofs cost: the bytes a compaction carries for them and the time a reader
//! spends checking them, beside the same figures without them, measured in the same run.
//!
//! Two workloads, each a patient's laptop whose `clinical` section holds a large save, then 20
//! observations written by the GP on its own node (one blob each, one proof each), then 31
//! small saves of the laptop's; the laptop then compacts `clinical`:
//!
//! - the largest fixture (a lifetime record of about 1,100 resources), imported;
//! - a 10,000-change section: 9,690 home readings in one save, then the rest.
//!
//! For the compaction: its size with its proofs (what is synced) and without them (the same
//! blob less the proof bytes: the layout before proofs), and how many proofs it carries after
//! pruning. For reading: the laptop's cold open (open the home, load every section, check every
//! compacted change against the proofs), the part of it that is the authorship check
//! (`ChangeGraph::of` and `unproven` on the loaded section), and Automerge loading the
//! compaction's document alone (the floor of any open). Each time is the median of 5.
//!
//! Run with `cargo bench -p phr-tests --bench authorship` (release build).

use std::{collections::HashSet, error::Error};

use automerge::AutoCommit;
use phr_core::{
    Record, Section, blob::Blob, changes::provenance::ChangeGraph, home::Home, keys::BlobId,
    ledger::Access, replica::Replica,
};
use phr_tests::{
    bench::{self, reading, readings, t},
    import_file, largest_fixture, patient_home,
};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

struct Figures {
    name: &'static str,
    changes: usize,
    with_proofs_bytes: usize,
    proof_bytes: usize,
    proofs: usize,
    open_ms: f64,
    check_ms: f64,
    automerge_load_ms: f64,
}

fn run(name: &'static str, fill: &dyn Fn(&mut Home, &mut Record) -> Result<()>) -> Result<Figures> {
    let dirs: Vec<tempfile::TempDir> = (0..2)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let (mut laptop, mut record) = patient_home(dirs[0].path());
    let gp = Home::init_provider(
        dirs[1].path(),
        "Riverside Surgery",
        Some("Y12345".into()),
        None,
    )?;
    laptop.grant(
        &gp.party(),
        &[Section::Summary, Section::Clinical],
        Access::Write,
        None,
        None,
        t(1),
    )?;
    fill(&mut laptop, &mut record)?;
    let id = laptop.record_id().ok_or("no record")?;
    laptop.sync_in_process(&gp, id, t(2).as_millisecond())?;
    gp.accept_patient(&id.to_string())?;
    laptop.sync_in_process(&gp, id, t(2).as_millisecond())?;
    {
        let mut open = gp.open_patient(&id.to_string(), t(3))?;
        for i in 0..20 {
            open.add(&reading(200_000 + i), "clinic reading", t(3))?;
        }
    }
    gp.sync_in_process(&laptop, id, t(4).as_millisecond())?;
    let mut record = laptop.load_record()?;
    for i in 0..31 {
        readings(
            &mut laptop,
            &mut record,
            100_000 + i * 10,
            10,
            t(10 + i as i64),
        )?;
    }
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
    let header = compaction.header();
    // The count (4 bytes) is all a blob without proofs would not have had either.
    let proof_bytes: usize = header
        .proofs
        .iter()
        .map(|p| 32 + 2 + 32 * p.heads.len() + 64)
        .sum();
    let proofs = header.proofs.clone();
    let (vault, age) = laptop.sync_parts();
    let replica = Replica::open(vault, id, laptop.peer_id(), age)?;
    let key = replica.keyring().get(&header.key_id).ok_or("no key")?;
    let document = compaction.open(key)?;
    let automerge = bench::time(5, || AutoCommit::load(&document).expect("loads"));

    let dir = dirs[0].path().to_path_buf();
    drop(laptop);
    let open = bench::time(5, || {
        let mut home = Home::open(&dir).expect("opens");
        let record = home.load_record().expect("loads");
        assert!(
            record.unproven(Section::Clinical).is_empty(),
            "every change proven"
        );
    });
    let mut home = Home::open(&dir)?;
    let mut loaded = home.load_record()?;
    let changes = ChangeGraph::of(loaded.doc_for_provenance(Section::Clinical)).len();
    let check = bench::time(5, || {
        let graph = ChangeGraph::of(loaded.doc_for_provenance(Section::Clinical));
        assert!(graph.unproven(&HashSet::new(), &proofs).is_empty());
    });
    Ok(Figures {
        name,
        changes,
        with_proofs_bytes: bytes.len(),
        proof_bytes,
        proofs: proofs.len(),
        open_ms: open.as_secs_f64() * 1000.0,
        check_ms: check.as_secs_f64() * 1000.0,
        automerge_load_ms: automerge.as_secs_f64() * 1000.0,
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
        "| workload | changes | compaction with proofs | without proofs (baseline) | proofs carried | cold open | of which the authorship check | Automerge load alone (baseline) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for f in [largest, many] {
        println!(
            "| {} | {} | {} bytes | {} bytes (+{:.3}%) | {} | {:.1} ms | {:.1} ms ({:.0}%) | {:.1} ms |",
            f.name,
            f.changes,
            f.with_proofs_bytes,
            f.with_proofs_bytes - f.proof_bytes,
            100.0 * f.proof_bytes as f64 / (f.with_proofs_bytes - f.proof_bytes) as f64,
            f.proofs,
            f.open_ms,
            f.check_ms,
            100.0 * f.check_ms / f.open_ms,
            f.automerge_load_ms,
        );
    }
    Ok(())
}
