//! Two nodes over real libp2p on 127.0.0.1: a patient's laptop syncs with a GP it granted
//! `summary`, and the GP receives `summary` and nothing else.

mod common;

use common::{Setup, WAIT, assert_gp_reads_only_the_summary, setup};
use libp2p::{Multiaddr, multiaddr::Protocol};
use phr_core::Section;
use phr_node::net::Node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_gp_receives_the_summary_and_nothing_else_over_loopback_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        laptop,
        gp,
        gp_party,
        record_id,
    } = setup(dir.path());

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
    assert_gp_reads_only_the_summary(&gp, record_id);
}
