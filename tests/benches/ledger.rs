//! What sealing the ledger's names costs (issue 13): a record's ledger with a `Create` and 100
//! grants, each to a provider with a name, an ODS code and a purpose, written twice in the same
//! run: with every party's details sealed (format version 2: what phr writes) and in clear
//! (version 1: the baseline, as before). For each: the ledger's bytes, and the time to open it
//! as each kind of holder does: decode and check every operation and compute the state (a relay,
//! or any node before it reveals), then open the sealed details an owner device can open (all
//! of them, with the `audit` key) or a grantee can (its own grant, with its age identity). Each
//! time is the median of 21.
//!
//! Run with `cargo bench -p phr-tests --bench ledger` (release build).

use std::{error::Error, time::Instant};

use phr_core::{
    Section,
    keys::{AgeIdentity, SectionKey, SigningKey},
    ledger::{Access, Ledger, OpBody, SignedOp},
    party::{Party, Role},
};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

const GRANTS: usize = 100;
const RUNS: usize = 21;

struct Built {
    ops: Vec<Vec<u8>>,
    record: phr_core::keys::RecordId,
}

fn build(
    sealed: bool,
    audit: &SectionKey,
    grantees: &[(SigningKey, AgeIdentity)],
) -> Result<Built> {
    let root = SigningKey::generate();
    let phone = SigningKey::generate();
    let device = Party {
        peer: phone.peer_id(),
        recipient: AgeIdentity::generate().recipient(),
        name: "Alex's phone".into(),
        role: Role::Patient,
        ods: None,
    };
    let mut ledger = if sealed {
        Ledger::create_sealed(&root, device, 0, audit)?
    } else {
        Ledger::create(&root, device, 0)?
    };
    for (i, (key, identity)) in grantees.iter().enumerate() {
        let body = OpBody::Grant {
            grantee: Party {
                peer: key.peer_id(),
                recipient: identity.recipient(),
                name: format!("Provider number {i} of the patient's care"),
                role: Role::Provider,
                ods: Some(format!("Y{i:05}")),
            },
            sections: vec![Section::Summary, Section::Clinical],
            access: Access::Read,
            expires_ms: None,
            purpose: Some("Ongoing care, shared by the patient for their appointments".into()),
        };
        let time = 1 + i as i64;
        if sealed {
            ledger.append_sealed(&phone, body, time, audit)?;
        } else {
            ledger.append(&phone, body, time)?;
        }
    }
    Ok(Built {
        record: ledger.record(),
        ops: ledger.ops().map(|op| op.bytes().to_vec()).collect(),
    })
}

fn decode(built: &Built) -> Result<Ledger> {
    let mut ledger = Ledger::new(built.record);
    for bytes in &built.ops {
        ledger.insert(SignedOp::decode(bytes)?)?;
    }
    ledger.state();
    Ok(ledger)
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The median time of `f`, in milliseconds.
fn time(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        f()?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(times))
}

fn main() -> Result<()> {
    let audit = SectionKey::generate();
    let grantees: Vec<(SigningKey, AgeIdentity)> = (0..GRANTS)
        .map(|_| (SigningKey::generate(), AgeIdentity::generate()))
        .collect();
    let sealed = build(true, &audit, &grantees)?;
    let clear = build(false, &audit, &grantees)?;
    let bytes = |b: &Built| b.ops.iter().map(Vec::len).sum::<usize>();
    let stranger = AgeIdentity::generate();
    let owner = SigningKey::generate().peer_id();
    let decode_sealed = time(|| decode(&sealed).map(drop))?;
    let decode_clear = time(|| decode(&clear).map(drop))?;
    let owner_reveal = time(|| {
        let mut ledger = decode(&sealed)?;
        let problems = ledger.reveal(
            |id| (*id == audit.id()).then_some(&audit),
            &stranger,
            &owner,
        );
        assert!(problems.is_empty());
        ledger.state();
        Ok(())
    })?;
    let (grantee_key, grantee_identity) = &grantees[GRANTS / 2];
    let grantee_reveal = time(|| {
        let mut ledger = decode(&sealed)?;
        ledger.reveal(|_| None, grantee_identity, &grantee_key.peer_id());
        ledger.state();
        Ok(())
    })?;
    println!(
        "| ledger of 1 device and {GRANTS} grants | sealed (version 2) | in clear (version 1, baseline) |"
    );
    println!("|---|---|---|");
    println!(
        "| bytes of every operation | {} | {} (+{:.0}%) |",
        bytes(&sealed),
        bytes(&clear),
        100.0 * (bytes(&sealed) as f64 / bytes(&clear) as f64 - 1.0)
    );
    println!(
        "| decode, check and compute the state (a relay) | {decode_sealed:.2} ms | {decode_clear:.2} ms |"
    );
    println!(
        "| the same, then reveal all {} as an owner device | {owner_reveal:.2} ms | {decode_clear:.2} ms |",
        GRANTS + 1
    );
    println!(
        "| the same, then reveal its own grant as a grantee | {grantee_reveal:.2} ms | {decode_clear:.2} ms |"
    );
    Ok(())
}
