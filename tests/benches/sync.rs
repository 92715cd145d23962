//! Sync of one section, beside Automerge's own sync protocol on the same documents in the same
//! run.
//!
//! A record's `clinical` section holds N changes, each sealed as its own Changes blob by patient
//! device A. A second patient device B (the initiator) lacks the d most recent of them; A (the
//! responder) holds all N. For each (N, d) the table gives the bytes on the wire both ways and the
//! round trips phr's sync session needs to bring B into step, beside Automerge's sync protocol
//! run from a fresh `sync::State` on both sides (a reconnect) between the section's document
//! without its last d changes (B) and the whole document (A).
//!
//! phr's session reconciles every topic either side may hold (the ledger and the six sections);
//! only `clinical` differs, the other topics are equal (empty sections, the same ledger) and their
//! cost is counted too. A (an owner device) packs the changes blobs of its own that B lacks into
//! one run compaction before it lists them (`Replica::form_run`), as a node does; A is built
//! afresh for each (N, d).
//!
//! Targets: d = 10, N = 10,000: phr's bytes <= 0.3 of Automerge's (the practice issue's) and
//! <= 3 round trips; d = 0: one round trip. The first sync issue aimed at 1/10, which is
//! printed too.
//!
//! Run with `cargo bench -p phr-tests --bench sync` (release build). Each figure is one run.

use std::{
    collections::BTreeSet,
    error::Error,
    time::{Duration, Instant},
};

use automerge::{
    ActorId, AutoCommit, Change,
    sync::{Message, State, SyncDoc},
};
use jiff::Timestamp;
use phr_core::{
    Author, Record, RecordMeta, Section, Stamp,
    keys::{BlobId, OpId, RecordId},
    keystore::Keystore,
    ledger::OpBody,
    party::{Party, Role},
    replica::Replica,
    section::place,
    store::{MemoryStore, Store},
    sync::{Incoming, InitiatorSession, Local, ResponderSession},
    vault::Batch,
};
use phr_tests::{
    bench::{ms, record_in_memory},
    test_time,
};
use serde_json::{Value, json};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// The most requests one phr session may take before the benchmark calls it stuck.
const SESSION_REQUESTS_MAX: usize = 100;

/// The most messages one Automerge sync may take before the benchmark calls it stuck.
const AUTOMERGE_MESSAGES_MAX: usize = 1000;

/// The i-th change: one home blood-pressure reading.
fn observation(i: usize) -> Value {
    json!({
        "resourceType": "Observation",
        "id": format!("obs-{i}"),
        "status": "final",
        "code": {"text": "Blood pressure"},
        "valueQuantity": {"value": 120 + (i % 40), "unit": "mmHg"},
    })
}

fn party(keys: &Keystore, name: &str) -> Party {
    Party {
        peer: keys.device.peer_id(),
        recipient: keys.age.recipient(),
        name: name.into(),
        role: Role::Patient,
        ods: None,
    }
}

/// An Automerge actor the authorship rule accepts for `keys`' device: the first 16 bytes of its
/// public key, then any 8.
fn actor(keys: &Keystore) -> ActorId {
    let mut bytes = keys.device.peer_id().public_key()[..16].to_vec();
    bytes.extend_from_slice(&[0, 1, 2, 3, 4, 5, 6, 7]);
    ActorId::from(bytes)
}

fn meta(id: RecordId) -> RecordMeta {
    RecordMeta {
        id: phr_core::keys::hex(&id.0),
        subject: None,
        nhs_number: None,
    }
}

/// One record with N changes in one section, as device A wrote it.
struct Built {
    keys_a: Keystore,
    keys_b: Keystore,
    id: RecordId,
    section: Section,
    /// Every ledger operation (the record's creation, B's admission, the section keys).
    ops: Vec<(OpId, Vec<u8>)>,
    /// The section's Changes blobs, oldest first.
    blobs: Vec<(BlobId, Vec<u8>)>,
    /// A's record, with every change.
    record: Record,
    /// The writing time of the last change.
    end_ms: i64,
}

/// A memory store holding `ops` and `blobs`.
fn store_with(built: &Built, blobs: &[(BlobId, Vec<u8>)]) -> Result<MemoryStore> {
    let store = MemoryStore::new();
    let mut batch = Batch::new();
    for (id, bytes) in &built.ops {
        batch.unchecked_ledger_op(built.id, *id, bytes);
    }
    for (id, bytes) in blobs {
        batch.unchecked_blob(built.id, built.section, *id, bytes.clone());
    }
    store.commit(batch)?;
    Ok(store)
}

/// A memory store holding only a replica's ledger, and the replica reopened on it: its list of
/// materialised blobs is empty, so its next saves do not compact.
fn fresh_writer(replica: &Replica, keys: &Keystore) -> Result<(MemoryStore, Replica)> {
    let store = MemoryStore::new();
    let mut batch = Batch::new();
    for op in replica.ledger().ops() {
        batch.ledger_op(replica.id(), op);
    }
    store.commit(batch)?;
    let replica = Replica::open(&store, replica.id(), keys.device.peer_id(), &keys.age)?;
    Ok((store, replica))
}

/// Device A creates the record, admits device B, then writes `n` changes, one saved blob each.
///
/// An owner device compacts a section once the blobs it wrote since the replica was opened (or
/// materialised) pass `BLOBS_BEFORE_COMPACTION` or a few KiB. To keep n separate Changes
/// blobs, the writer saves each into a scratch store it reopens, ledger only, before every
/// save; the blobs are collected as they are written.
fn build(n: usize) -> Result<Built> {
    let t0_ms = test_time().as_millisecond();
    let keys_a = Keystore::generate(true);
    let keys_b = Keystore::generate(false);
    let root = keys_a.root.as_ref().ok_or("device A holds the root key")?;
    let (store, mut replica) = record_in_memory(&keys_a, party(&keys_a, "laptop"), t0_ms)?;
    let id = replica.id();
    replica.change_consent(
        &store,
        root,
        &keys_a.device,
        OpBody::AddDevice {
            device: party(&keys_b, "phone"),
        },
        t0_ms,
    )?;

    let section = place(&observation(0));
    let author = Author {
        id: keys_a.device.peer_id().to_string(),
        name: "laptop".into(),
    };
    let mut record = Record::create(meta(id), &actor(&keys_a));
    let (mut store, mut replica) = fresh_writer(&replica, &keys_a)?;
    let mut blobs = Vec::with_capacity(n);
    let mut end_ms = t0_ms;
    for i in 0..n {
        if i > 0 {
            (store, replica) = fresh_writer(&replica, &keys_a)?;
        }
        let time_ms = t0_ms + 1000 * (i as i64 + 1);
        let stamp = Stamp {
            author: &author,
            time: Timestamp::from_millisecond(time_ms)?,
        };
        record.put(stamp, &observation(i))?;
        record.commit(stamp, "reading");
        let written = replica.save(&store, &keys_a.device, &mut record, time_ms)?;
        let [blob] = written[..] else {
            return Err(format!("save {i} wrote {} blobs, not one", written.len()).into());
        };
        let bytes = store
            .blob(&id, section, &blob)?
            .ok_or("the saved blob is stored in the observation's section")?;
        blobs.push((blob, bytes));
        end_ms = time_ms;
    }
    let ops = replica
        .ledger()
        .ops()
        .map(|op| (op.id(), op.bytes().to_vec()))
        .collect();
    Ok(Built {
        keys_a,
        keys_b,
        id,
        section,
        ops,
        blobs,
        record,
        end_ms,
    })
}

/// What one sync cost.
struct Cost {
    bytes: usize,
    round_trips: usize,
    wall: Duration,
}

/// phr's sync: B (holding the first `n - d` blobs) starts a session with A (holding all).
fn phr_sync(
    built: &Built,
    store_a: &MemoryStore,
    replica_a: &mut Replica,
    a_heads: &[automerge::ChangeHash],
    d: usize,
    session: u64,
) -> Result<Cost> {
    let n = built.blobs.len();
    let store_b = store_with(built, &built.blobs[..n - d])?;
    let peer_a = built.keys_a.device.peer_id();
    let peer_b = built.keys_b.device.peer_id();
    let mut replica_b = Replica::open(&store_b, built.id, peer_b, &built.keys_b.age)?;
    assert_eq!(replica_b.blob_ids(built.section).count(), n - d);
    let now = built.end_ms + 60_000;

    let mut local_a = Local {
        replica: replica_a,
        store: store_a,
        age: &built.keys_a.age,
        device: Some(&built.keys_a.device),
    };
    let mut local_b = Local {
        replica: &mut replica_b,
        store: &store_b,
        age: &built.keys_b.age,
        device: Some(&built.keys_b.device),
    };
    let start = Instant::now();
    let (mut initiator, opening) = InitiatorSession::start(&local_b, peer_a, session, now)?;
    let (mut responder, mut answer) =
        ResponderSession::open(&mut local_a, peer_b, Incoming::decode(&opening)?, now)?;
    let mut requests = 1;
    while !initiator.is_done() {
        if requests >= SESSION_REQUESTS_MAX {
            return Err(format!(
                "N = {n}, d = {d}: phr's session did not close after {requests} requests"
            )
            .into());
        }
        let response = answer.ok_or("the responder left a request unanswered")?;
        let request = initiator
            .receive(&mut local_b, Incoming::decode(&response)?, now)?
            .ok_or("the initiator took a fresh answer for a repeat")?;
        requests += 1;
        answer = responder.receive(&mut local_a, Incoming::decode(&request)?, now)?;
    }
    let wall = start.elapsed();
    if answer.is_some() || !responder.is_closed() {
        return Err("the responder answered the closing request".into());
    }

    // B now holds every blob A holds (A may have packed the writes B lacked into one run
    // compaction, which replaced them on both)...
    let held: BTreeSet<BlobId> = replica_b.blob_ids(built.section).collect();
    let all: BTreeSet<BlobId> = local_a.replica.blob_ids(built.section).collect();
    if held != all {
        return Err(format!(
            "N = {n}, d = {d}: after phr's sync B holds {} of A's {} blobs ({} missing)",
            held.len(),
            all.len(),
            all.difference(&held).count()
        )
        .into());
    }
    // ... and reads the section A wrote.
    let (mut record, warnings) = replica_b.materialise(
        &store_b,
        meta(built.id),
        &actor(&built.keys_b),
        &built.keys_b.age,
    )?;
    if !warnings.is_empty() {
        return Err(format!("N = {n}, d = {d}: materialising B: {warnings:?}").into());
    }
    if record.heads().remove(&built.section).unwrap_or_default() != a_heads {
        return Err(format!("N = {n}, d = {d}: B's section differs from A's after sync").into());
    }
    let stats = initiator.stats();
    Ok(Cost {
        bytes: stats.bytes_sent + stats.bytes_received,
        round_trips: stats.round_trips,
        wall,
    })
}

/// Automerge's sync protocol between B's document (the first `n - d` changes) and A's (all),
/// both starting from a fresh `sync::State`. Messages go through `encode` and `decode`, as on a
/// wire; B sends first and the two alternate until neither has anything to send.
///
/// Round trips: one message each way is one round trip, so `ceil(messages / 2)`, the final
/// message included even when it only acknowledges.
fn automerge_sync(a_bytes: &[u8], changes: &[Change], d: usize) -> Result<Cost> {
    let mut a = AutoCommit::load(a_bytes)?;
    let mut b = AutoCommit::new();
    b.apply_changes(changes[..changes.len() - d].iter().cloned())?;
    let mut state_a = State::new();
    let mut state_b = State::new();
    let mut bytes = 0;
    let mut messages = 0;
    let start = Instant::now();
    loop {
        if messages >= AUTOMERGE_MESSAGES_MAX {
            return Err("Automerge's sync did not settle".into());
        }
        let b_to_a = b.sync().generate_sync_message(&mut state_b);
        let sent_b = b_to_a.is_some();
        if let Some(message) = b_to_a {
            let wire = message.encode();
            bytes += wire.len();
            messages += 1;
            a.sync()
                .receive_sync_message(&mut state_a, Message::decode(&wire)?)?;
        }
        let a_to_b = a.sync().generate_sync_message(&mut state_a);
        let sent_a = a_to_b.is_some();
        if let Some(message) = a_to_b {
            let wire = message.encode();
            bytes += wire.len();
            messages += 1;
            b.sync()
                .receive_sync_message(&mut state_b, Message::decode(&wire)?)?;
        }
        if !sent_a && !sent_b {
            break;
        }
    }
    let wall = start.elapsed();
    if a.get_heads() != b.get_heads() {
        return Err(format!("Automerge's sync did not converge (d = {d})").into());
    }
    Ok(Cost {
        bytes,
        round_trips: messages.div_ceil(2),
        wall,
    })
}

fn main() -> Result<()> {
    println!("## Sync of one section of N changes when the initiator lacks the d most recent\n");
    println!(
        "| N | d | phr bytes | phr round trips | Automerge bytes | Automerge round trips | phr / Automerge | phr wall | Automerge wall |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut verdicts = Vec::new();
    let mut session = 1;
    for n in [100, 10_000] {
        let mut built = build(n)?;
        let a_heads = built
            .record
            .heads()
            .remove(&built.section)
            .unwrap_or_default();
        let a_bytes = built.record.save_section(built.section);
        let changes = AutoCommit::load(&a_bytes)?.get_changes(&[]);
        assert_eq!(changes.len(), n, "one Automerge change per write");

        for d in [0, 1, 10, n] {
            // A afresh for each d: a session may pack the writes B lacks into a run on A.
            let store_a = store_with(&built, &built.blobs)?;
            let mut replica_a = Replica::open(
                &store_a,
                built.id,
                built.keys_a.device.peer_id(),
                &built.keys_a.age,
            )?;
            assert_eq!(replica_a.blob_ids(built.section).count(), n);
            let phr = phr_sync(&built, &store_a, &mut replica_a, &a_heads, d, session)?;
            session += 1;
            let am = automerge_sync(&a_bytes, &changes, d)?;
            let ratio = phr.bytes as f64 / am.bytes as f64;
            println!(
                "| {n} | {d} | {} | {} | {} | {} | {ratio:.3} | {} | {} |",
                phr.bytes,
                phr.round_trips,
                am.bytes,
                am.round_trips,
                ms(phr.wall),
                ms(am.wall),
            );
            if d == 0 {
                verdicts.push(format!(
                    "N = {n}, d = 0: {} round trip(s), target 1 ({})",
                    phr.round_trips,
                    met(phr.round_trips == 1)
                ));
            }
            if n == 10_000 && d == 10 {
                verdicts.push(format!(
                    "N = 10,000, d = 10: phr / Automerge bytes {ratio:.3}, target <= 0.3 ({}), \
                     first aim <= 0.1 ({}); {} round trips, target <= 3 ({})",
                    met(ratio <= 0.3),
                    met(ratio <= 0.1),
                    phr.round_trips,
                    met(phr.round_trips <= 3)
                ));
            }
        }
    }
    println!(
        "\nTargets: d = 10, N = 10,000: phr <= 0.3 of Automerge's bytes (first aim 1/10) and <= 3 \
         round trips; d = 0: one round trip.\n"
    );
    for verdict in verdicts {
        println!("- {verdict}");
    }
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}
