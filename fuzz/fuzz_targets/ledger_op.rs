//! A signed consent-ledger operation from a peer, the disk or a backup: `SignedOp::decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phr_core::ledger::{Ledger, SignedOp};

fuzz_target!(|data: &[u8]| {
    let Ok(op) = SignedOp::decode(data) else {
        return;
    };
    // One operation has one encoding: the bytes that decoded are the bytes it is stored as.
    assert_eq!(op.bytes(), data);
    // What a replica does next with an operation it took in: add it to its ledger, which
    // checks it against the state (and refuses most operations of a record it did not start).
    let mut ledger = Ledger::new(op.op().record);
    let _ = ledger.insert(op);
});
