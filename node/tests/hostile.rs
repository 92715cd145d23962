//! A hostile peer that sends garbage is disconnected, and the node goes on serving others.

mod common;

use common::{
    Setup, WAIT, assert_gp_reads_only_the_summary, dial_and_sync, setup, start_listening,
};
use libp2p::{
    SwarmBuilder,
    futures::StreamExt,
    noise,
    request_response::{self, ProtocolSupport, cbor},
    swarm::SwarmEvent,
    tcp, yamux,
};
use phr_node::{
    net::Node,
    swarm::{Frame, SYNC_PROTOCOL},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_garbage_is_disconnected_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        laptop,
        gp,
        gp_party,
        record_id,
    } = setup(dir.path());
    let (gp_client, gp_task, gp_addr) = start_listening(gp).await;
    let gp_peer: libp2p::PeerId = gp_party.peer.to_string().parse().unwrap();

    // The hostile peer speaks the sync protocol's transport, then sends garbage.
    let mut hostile = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            cbor::Behaviour::<Frame, Frame>::new(
                [(SYNC_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default(),
            )
        })
        .unwrap()
        // Keep the connection open on this side: only the node may close it.
        .with_swarm_config(|config| {
            config.with_idle_connection_timeout(std::time::Duration::from_secs(300))
        })
        .build();
    hostile.dial(gp_addr.clone()).unwrap();
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match hostile.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    hostile
                        .behaviour_mut()
                        .send_request(&peer_id, Frame(b"\\xff not a sync message".to_vec()));
                }
                SwarmEvent::ConnectionClosed { peer_id, .. } => break peer_id,
                _ => {}
            }
        }
    })
    .await
    .expect("the node disconnects the hostile peer");
    assert_eq!(closed, gp_peer);

    // An honest patient node is still served.
    let (laptop_node, laptop_client) = Node::new(laptop).unwrap();
    let laptop_task = tokio::spawn(laptop_node.run());
    let synced = dial_and_sync(&laptop_client, gp_addr, gp_party.peer).await;
    assert!(
        matches!(synced.as_slice(), [Ok((record, _))] if *record == record_id),
        "{synced:?}"
    );

    drop((laptop_client, gp_client));
    tokio::time::timeout(WAIT, laptop_task)
        .await
        .unwrap()
        .unwrap();
    let gp = tokio::time::timeout(WAIT, gp_task).await.unwrap().unwrap();
    assert_gp_reads_only_the_summary(&gp, record_id);
}
