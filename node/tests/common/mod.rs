//! What the node tests share: a patient who granted a GP `summary`, and the checks.

#![allow(dead_code)] // Each test binary uses part of it.

pub mod fleet;
pub mod homes;

use std::{path::Path, time::Duration};

use libp2p::{Multiaddr, multiaddr::Protocol};
use phr_core::{
    Section, Stamp,
    home::{Home, NewPatient},
    keys::{PeerId, RecordId},
    ledger::Access,
    party::Party,
    record::RecordMeta,
    replica::Replica,
};
use phr_node::net::{Client, Node, Synced};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(30);

/// A patient's laptop holding an allergy (`summary`) and a blood pressure (`clinical`), and a GP
/// it granted `summary` read.
pub struct Setup {
    pub laptop: Home,
    pub gp: Home,
    pub gp_party: Party,
    pub record_id: RecordId,
}

/// Writes `resources` into `record` as the home's device, in one commit, and saves it.
pub fn write(
    home: &mut Home,
    record: &mut phr_core::Record,
    resources: &[Value],
    now: jiff::Timestamp,
) {
    let author = home.device().author();
    let stamp = Stamp {
        author: &author,
        time: now,
    };
    for resource in resources {
        record.put(stamp, resource).unwrap();
    }
    record.commit(stamp, "test entries");
    home.save(record, now).unwrap();
}

pub fn setup(dir: &Path) -> Setup {
    // RUST_LOG=phr_node=debug shows the nodes' logs with a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let now = jiff::Timestamp::now();
    let patient = NewPatient {
        name: "Ada Lovelace".into(),
        nhs_number: None,
        birth_date: None,
        device_label: None,
    };
    let (mut laptop, mut record) =
        Home::init_patient(&dir.join("laptop"), &patient, None, now).unwrap();
    let gp = Home::init_provider(&dir.join("gp"), "Dr Grace", Some("A81001".into()), None).unwrap();
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
    write(
        &mut laptop,
        &mut record,
        &[
            json!({"resourceType": "AllergyIntolerance", "id": "peanut",
                "code": {"text": "Peanut allergy"}}),
            json!({"resourceType": "Observation", "id": "bp", "status": "final",
                "code": {"text": "Blood pressure"}}),
        ],
        now,
    );
    let record_id = laptop.record_id().unwrap();
    Setup {
        laptop,
        gp,
        gp_party,
        record_id,
    }
}

/// The GP's own vault holds the patient's allergy, readable, and nothing of `clinical`.
pub fn assert_gp_reads_only_the_summary(gp: &Home, record_id: RecordId) {
    let (vault, age) = gp.sync_parts();
    let mut replica = Replica::open(vault, record_id, gp.peer_id(), age).unwrap();
    assert_eq!(replica.blob_ids(Section::Clinical).count(), 0);
    let meta = RecordMeta {
        id: record_id.to_string(),
        subject: None,
        nhs_number: None,
    };
    let actor = automerge::ActorId::from(gp.peer_id().public_key()[..16].to_vec());
    let (read, warnings) = replica.materialise(vault, meta, &actor, age).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let allergies = read
        .resources_of_type(Section::Summary, "AllergyIntolerance")
        .unwrap();
    assert_eq!(allergies.len(), 1);
    assert!(read.resources(Section::Clinical).unwrap().is_empty());
}

/// Starts a node for `home` listening on loopback (with `request_limit` as its flood limit, if
/// given); returns its handle, its task and the address
/// to dial it at (with its PeerId).
pub async fn start_listening(
    home: Home,
    request_limit: Option<u32>,
) -> (Client, JoinHandle<Option<Home>>, Multiaddr) {
    let peer: libp2p::PeerId = home.peer_id().to_string().parse().unwrap();
    let (mut node, client) = Node::new(home).unwrap();
    if let Some(limit) = request_limit {
        node.limit_requests(limit);
    }
    let task = tokio::spawn(node.run());
    let listening =
        tokio::time::timeout(WAIT, client.listen("/ip4/127.0.0.1/tcp/0".parse().unwrap()))
            .await
            .unwrap()
            .unwrap();
    (client, task, listening.with(Protocol::P2p(peer)))
}

/// Dials `addr` (the node of `peer`) from `client`, then syncs with it; both bounded.
pub async fn dial_and_sync(client: &Client, addr: Multiaddr, peer: PeerId) -> Synced {
    let dialled = tokio::time::timeout(WAIT, client.dial(addr))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dialled, peer);
    tokio::time::timeout(WAIT, client.sync(peer))
        .await
        .unwrap()
        .unwrap()
}

/// Stops a node (by dropping its last handle) and returns its home, bounded.
pub async fn stop(client: Client, task: JoinHandle<Option<Home>>) -> Home {
    drop(client);
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .expect("the node gives its home back")
}

/// Runs `phr sync` on `client`'s node (every admitted peer, dialled if not connected) and
/// returns the run's end: the node answers once every peer is in step, failed or out of reach,
/// within [`WAIT`].
pub async fn sync_run_to_end(client: &Client) -> phr_core::api::SyncProgress {
    let id = client.sync_all().await.unwrap();
    tokio::time::timeout(WAIT, client.sync_run_end(id))
        .await
        .expect("the sync run ends in time")
        .unwrap()
        .expect("the run exists")
}

/// The GP's node listening on loopback and the laptop's node running, after the laptop's first
/// sync with it (the GP accepted the patient first: a waiting record admits no one).
pub struct Running {
    pub gp_client: Client,
    pub gp_task: JoinHandle<Option<Home>>,
    pub gp_addr: Multiaddr,
    pub gp_party: Party,
    pub laptop_client: Client,
    pub laptop_task: JoinHandle<Option<Home>>,
    pub record_id: RecordId,
}

/// [`setup`], the patient accepted at the GP, both nodes running, and the laptop's first sync
/// with the GP done.
pub async fn running_and_synced(dir: &Path) -> Running {
    let Setup {
        laptop,
        gp,
        gp_party,
        record_id,
    } = setup(dir);
    gp.accept_patient(&record_id.to_string()).unwrap();
    let (gp_client, gp_task, gp_addr) = start_listening(gp, None).await;
    let (laptop_node, laptop_client) = Node::new(laptop).unwrap();
    let laptop_task = tokio::spawn(laptop_node.run());
    let synced = dial_and_sync(&laptop_client, gp_addr.clone(), gp_party.peer).await;
    assert!(matches!(synced.as_slice(), [Ok(_)]), "{synced:?}");
    Running {
        gp_client,
        gp_task,
        gp_addr,
        gp_party,
        laptop_client,
        laptop_task,
        record_id,
    }
}
