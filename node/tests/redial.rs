//! A node restarted finds its peers again from what it remembered: the addresses in
//! `HOME/peers.json`, with no mDNS, no contact card and no Kademlia to say where they are.
//!
//! Before the fix, a redial named only the PeerId, and libp2p asked its behaviours for
//! addresses: of those the node gave it, only the sync behaviour keeps any, for the last 100
//! peers (libp2p's `PeerAddresses` cache), so a practice's node restarted with thousands of
//! patients' devices remembered could reach few of them ("no addresses for peer").

mod common;

use common::{Running, WAIT, running_and_synced, stop, sync_run_to_end, write};
use libp2p::{identity::Keypair, multiaddr::Protocol};
use phr_core::{
    Section,
    home::{PEERS_FILE, PEERS_JOURNAL_FILE},
};
use phr_node::net::Node;
use serde_json::json;

/// Other peers the laptop remembers, each told to libp2p after the GP: more than the 100 peers
/// whose addresses libp2p's sync behaviour keeps, so none of the GP's is left there.
const OTHER_PEERS: usize = 150;

/// `OTHER_PEERS` devices' PeerIds that sort after `peer`: the node takes remembered peers in
/// order. (Ed25519 keys, like `peer`'s: PeerIds of other lengths sort apart.)
fn peers_after(peer: libp2p::PeerId) -> Vec<libp2p::PeerId> {
    std::iter::repeat_with(|| Keypair::generate_ed25519().public().to_peer_id())
        .filter(|p| *p > peer)
        .take(OTHER_PEERS)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_a_peer_only_in_peers_json_redials_it_and_syncs() {
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
    let mut laptop = stop(laptop_client, laptop_task).await;
    let summary_before = gp_client.held().await.unwrap()[0].blobs[&Section::Summary];

    // While the laptop's node is down the patient adds an allergy the GP has not seen.
    let now = jiff::Timestamp::now();
    let mut record = laptop.load_record().unwrap();
    write(
        &mut laptop,
        &mut record,
        &[json!({"resourceType": "AllergyIntolerance", "id": "latex",
            "code": {"text": "Latex allergy"}})],
        now,
    );

    // Only peers.json says where the GP listens (no journal, no card, and the laptop's node
    // listens nowhere, so the GP cannot dial it either), among other peers the laptop met.
    let mut bare = gp_addr.clone();
    let Some(Protocol::P2p(gp_peer)) = bare.pop() else {
        panic!("{gp_addr} ends in the GP's PeerId");
    };
    let mut peers = serde_json::Map::new();
    peers.insert(gp_peer.to_string(), json!([bare.to_string()]));
    for (n, peer) in peers_after(gp_peer).into_iter().enumerate() {
        peers.insert(
            peer.to_string(),
            json!([format!("/ip4/127.0.0.1/tcp/{}", n + 1)]),
        );
    }
    std::fs::write(
        laptop.dir().join(PEERS_FILE),
        serde_json::to_vec(&peers).unwrap(),
    )
    .unwrap();
    let _ = std::fs::remove_file(laptop.dir().join(PEERS_JOURNAL_FILE));
    assert!(laptop.contacts().unwrap().is_empty());

    let (node, laptop_client) = Node::new(laptop).unwrap();
    let laptop_task = tokio::spawn(node.run());
    let progress = sync_run_to_end(&laptop_client).await;
    let gp = progress
        .peers
        .iter()
        .find(|p| p.peer == gp_party.peer.to_string())
        .unwrap_or_else(|| panic!("the run has no GP: {progress:?}"));
    assert_eq!(gp.state, "in-sync", "{progress:?}");
    assert!(gp.sent > 0, "{progress:?}");

    let held = tokio::time::timeout(WAIT, gp_client.held())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held[0].record, record_id);
    assert!(
        held[0].blobs[&Section::Summary] > summary_before,
        "the GP did not receive the new allergy: {held:?}"
    );

    stop(laptop_client, laptop_task).await;
    stop(gp_client, gp_task).await;
}
