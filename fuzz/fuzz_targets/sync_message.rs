//! A sync message from a peer: `Incoming::decode`, then the engine a node hands every message to.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use phr_core::fuzzing::{NOW_MS, identity, signer};
use phr_core::{
    keys::{AgeIdentity, SigningKey},
    store::MemoryStore,
    sync::{
        Engine, Incoming,
        message::Message,
        reconcile::{Initiator, Responder},
    },
};

/// A few ids for the reconciliation sides to hold, so that messages are compared with a set.
const IDS: [[u8; 32]; 3] = [[1; 32], [0x80; 32], [0xfe; 32]];

static IDENTITY: LazyLock<AgeIdentity> = LazyLock::new(identity);

fuzz_target!(|data: &[u8]| {
    if let Ok(incoming) = Incoming::decode(data) {
        // Decode, encode, decode: the same message.
        let again =
            Incoming::decode(&incoming.message.encode()).expect("an encoded message decodes");
        assert_eq!(again.message, incoming.message);
        let reconcile = match &incoming.message {
            Message::Request(request) => &request.reconcile,
            Message::Response(response) => &response.reconcile,
        };
        // Each reconciliation payload, as either side would read it.
        for (_, payload) in reconcile {
            let _ = Responder::new(IDS).expect("a set of ids").answer(payload);
            let (mut initiator, _) = Initiator::start(IDS).expect("a set of ids");
            let _ = initiator.receive(payload);
        }
    }
    // What the node does with every message: its engine takes it, here a node holding no record.
    let store = MemoryStore::new();
    let me = signer().peer_id();
    let mut engine = Engine::open(&store, me, &IDENTITY).expect("an empty store opens");
    let peer = SigningKey::from_seed(&[0x52; 32]).peer_id();
    let _ = engine.receive(&store, &IDENTITY, peer, data, NOW_MS);
    let _ = engine.take_ended();
});
