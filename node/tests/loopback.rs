//! Two nodes over real libp2p on 127.0.0.1: a patient's laptop syncs with a GP it granted
//! `summary`, and the GP receives `summary` and nothing else.

mod common;

use common::{
    Setup, assert_gp_reads_only_the_summary, dial_and_sync, setup, start_listening, stop,
};
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

    let (gp_client, gp_task, gp_addr) = start_listening(gp, None).await;
    let (laptop_node, laptop_client) = Node::new(laptop).unwrap();
    let laptop_task = tokio::spawn(laptop_node.run());
    let synced = dial_and_sync(&laptop_client, gp_addr, gp_party.peer).await;
    assert_eq!(synced.len(), 1, "{synced:?}");
    let (synced_record, stats) = synced[0].as_ref().unwrap();
    assert_eq!(*synced_record, record_id);
    assert!(stats.items_sent > 0, "{stats:?}");

    let held = gp_client.held().await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].record, record_id);
    assert!(held[0].blobs.contains_key(&Section::Summary), "{held:?}");
    assert!(!held[0].blobs.contains_key(&Section::Clinical), "{held:?}");
    // Asked of one record, the node says the same of it.
    let one = gp_client.held_record(record_id).await.unwrap();
    assert_eq!(one.as_ref(), Some(&held[0]));
    // Waiting for it to be held as it is answers at once; waiting for one more summary blob
    // than it holds is still waiting when the bound runs out.
    let like = gp_client
        .held_like(record_id, held[0].clone())
        .await
        .unwrap();
    assert_eq!(like, held[0]);
    let mut more = held[0].clone();
    *more.blobs.get_mut(&Section::Summary).unwrap() += 1;
    let waiting = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        gp_client.held_like(record_id, more),
    )
    .await;
    assert!(
        waiting.is_err(),
        "answered before it held the blob: {waiting:?}"
    );

    // Stop both nodes; the GP reads the allergy from its own vault.
    stop(laptop_client, laptop_task).await;
    let gp = stop(gp_client, gp_task).await;
    assert_gp_reads_only_the_summary(&gp, record_id);
}
