//! A hostile fleet over real libp2p: while strangers push records of their own at a GP's node
//! and flood it with openings about records nobody holds, the patient's laptop keeps syncing
//! with it, and what the strangers make the GP hold stays within its bounds.

mod common;

use common::{
    Running, Setup, WAIT, dial_and_sync,
    fleet::{FLEET, hostile},
    running_and_synced, setup, start_listening, stop,
};
use phr_core::home::PENDING_RECORDS_MAX;
use phr_node::net::{Node, STRANGER_REQUESTS_BURST_MAX, STRANGER_REQUESTS_PER_SECOND_MAX};

/// Openings about unknown records each hostile client sends.
const OPENINGS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patient_keeps_syncing_while_a_fleet_of_strangers_pushes_records_and_floods() {
    let dir = tempfile::tempdir().unwrap();
    let Running {
        gp_client,
        gp_task,
        gp_addr,
        gp_party,
        laptop_client,
        laptop_task,
        record_id,
    } = running_and_synced(dir.path()).await;

    let started = std::time::Instant::now();
    let fleet: Vec<_> = (0..FLEET)
        .map(|n| {
            let dir = dir.path().join(format!("hostile-{n}"));
            tokio::spawn(hostile(dir, n, gp_addr.clone(), gp_party.clone(), OPENINGS))
        })
        .collect();
    // The patient syncs again and again while the fleet runs: every sync goes through.
    for round in 0..5 {
        let synced = tokio::time::timeout(WAIT, laptop_client.sync(gp_party.peer))
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(synced.as_slice(), [Ok((record, _))] if *record == record_id),
            "round {round}: {synced:?}"
        );
    }
    let mut answered = 0;
    let mut identities = 0;
    for hostile in fleet {
        let (answers, ids) = hostile.await.unwrap();
        answered += answers;
        identities += ids;
    }
    let took = started.elapsed().as_secs_f64();
    stop(laptop_client, laptop_task).await;
    let gp = stop(gp_client, gp_task).await;

    // All the strangers together were served within their budget (a bucket full at the start,
    // then the rate), not as fast as they asked.
    let budget =
        f64::from(STRANGER_REQUESTS_BURST_MAX) + f64::from(STRANGER_REQUESTS_PER_SECOND_MAX) * took;
    assert!(
        answered as f64 <= budget * 1.1,
        "{answered} strangers' requests answered in {took:.1} s (budget {budget:.0})"
    );

    // The fleet was served (it is not cut off for pushing within the limits), and what it made
    // the GP hold waits in the bounded room, none of it listed or readable.
    assert!(answered > 0 && identities >= FLEET);
    let waiting = gp.pending_records().unwrap();
    assert!(
        !waiting.is_empty() && waiting.len() <= PENDING_RECORDS_MAX,
        "{} records wait",
        waiting.len()
    );
    assert!(!waiting.contains(&record_id));
    let listed = gp.patients(jiff::Timestamp::now()).unwrap();
    assert_eq!(
        listed.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![record_id]
    );
}

/// Anyone can make a record that grants a provider: until a person accepts it, its devices are
/// strangers to the provider's node (no room kept for them, small frames, the strangers' flood
/// limit), and the provider does not dial them. Once accepted, they are admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_waiting_for_acceptance_admits_no_one_until_it_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        laptop,
        gp,
        gp_party,
        record_id,
    } = setup(dir.path());
    let laptop_peer = laptop.peer_id();
    let (gp_client, gp_task, gp_addr) = start_listening(gp, None).await;
    let (laptop_node, laptop_client) = Node::new(laptop).unwrap();
    let laptop_task = tokio::spawn(laptop_node.run());
    let synced = dial_and_sync(&laptop_client, gp_addr, gp_party.peer).await;
    assert!(matches!(synced.as_slice(), [Ok(_)]), "{synced:?}");
    stop(laptop_client, laptop_task).await;
    let gp = stop(gp_client, gp_task).await;

    let admitted = |gp: &phr_core::home::Home| {
        let (vault, age) = gp.sync_parts();
        let mut engine = phr_core::sync::Engine::open(vault, gp.peer_id(), age).unwrap();
        engine.set_intake(gp.intake().unwrap());
        engine.admitted_peers(jiff::Timestamp::now().as_millisecond())
    };
    assert_eq!(gp.pending_records().unwrap(), vec![record_id]);
    assert!(
        !admitted(&gp).contains(&laptop_peer),
        "a waiting record admitted its device"
    );
    gp.accept_patient(&record_id.to_string()).unwrap();
    assert!(admitted(&gp).contains(&laptop_peer));
}
