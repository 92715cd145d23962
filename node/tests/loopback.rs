//! Two nodes over real libp2p on 127.0.0.1: a patient's laptop syncs with a GP it granted
//! `summary`, and the GP receives `summary` and nothing else.

use std::time::Duration;

use libp2p::{Multiaddr, multiaddr::Protocol};
use phr_core::{
    Section, Stamp,
    home::{Home, NewPatient},
    ledger::Access,
    record::RecordMeta,
    replica::Replica,
};
use phr_node::net::Node;
use serde_json::json;

/// Every wait in this test is bounded by this.
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_gp_receives_the_summary_and_nothing_else_over_loopback_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let now = jiff::Timestamp::now();
    let patient = NewPatient {
        name: "Ada Lovelace".into(),
        nhs_number: None,
        birth_date: None,
        device_label: None,
    };
    let (mut laptop, mut record) =
        Home::init_patient(&dir.path().join("laptop"), &patient, None, now).unwrap();
    let gp = Home::init_provider(
        &dir.path().join("gp"),
        "Dr Grace",
        Some("A81001".into()),
        None,
    )
    .unwrap();
    let gp_party = gp.party();
    laptop
        .grant(
            &gp_party,
            &[Section::Summary],
            Access::Read,
            None,
            None,
            now,
        )
        .unwrap();
    let author = laptop.device().author();
    let stamp = Stamp {
        author: &author,
        time: now,
    };
    record
        .put(
            stamp,
            &json!({"resourceType": "AllergyIntolerance", "id": "peanut",
            "code": {"text": "Peanut allergy"}}),
        )
        .unwrap();
    record
        .put(
            stamp,
            &json!({"resourceType": "Observation", "id": "bp", "status": "final",
            "code": {"text": "Blood pressure"}}),
        )
        .unwrap();
    record.commit(stamp, "two entries");
    laptop.save(&mut record, now).unwrap();
    let record_id = laptop.record_id().unwrap();

    let (laptop_node, laptop_client) = Node::new(laptop).unwrap();
    let (gp_node, gp_client) = Node::new(gp).unwrap();
    let laptop_task = tokio::spawn(laptop_node.run());
    let gp_task = tokio::spawn(gp_node.run());

    let listening = tokio::time::timeout(
        WAIT,
        gp_client.listen("/ip4/127.0.0.1/tcp/0".parse().unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let gp_addr: Multiaddr =
        listening.with(Protocol::P2p(gp_party.peer.to_string().parse().unwrap()));
    let dialled = tokio::time::timeout(WAIT, laptop_client.dial(gp_addr))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dialled, gp_party.peer);

    let synced = tokio::time::timeout(WAIT, laptop_client.sync(gp_party.peer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(synced.len(), 1, "{synced:?}");
    let (synced_record, stats) = synced[0].as_ref().unwrap();
    assert_eq!(*synced_record, record_id);
    assert!(stats.items_sent > 0, "{stats:?}");

    let held = gp_client.held().await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].record, record_id);
    assert!(held[0].blobs.contains_key(&Section::Summary), "{held:?}");
    assert!(!held[0].blobs.contains_key(&Section::Clinical), "{held:?}");

    // Stop both nodes; the GP reads the allergy from its own vault.
    drop((laptop_client, gp_client));
    let _laptop = tokio::time::timeout(WAIT, laptop_task)
        .await
        .unwrap()
        .unwrap();
    let gp = tokio::time::timeout(WAIT, gp_task).await.unwrap().unwrap();
    let (vault, age) = gp.sync_parts();
    let mut replica = Replica::open(vault, record_id, gp.peer_id(), age).unwrap();
    let meta = RecordMeta {
        id: record_id.to_string(),
        subject: None,
        nhs_number: None,
    };
    let actor = automerge::ActorId::from(gp.peer_id().public_key()[..16].to_vec());
    let (read, warnings) = replica.materialise(vault, meta, &actor).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let allergies = read
        .resources_of_type(Section::Summary, "AllergyIntolerance")
        .unwrap();
    assert_eq!(allergies.len(), 1);
    assert!(read.resources(Section::Clinical).unwrap().is_empty());
}
