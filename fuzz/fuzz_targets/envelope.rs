//! A key envelope from the ledger: `envelope::unwrap` with this node's age identity, and the
//! decoder of the plaintext inside (which the fuzzer cannot reach through an age payload).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use phr_core::{envelope, fuzzing, keys::AgeIdentity};

static IDENTITY: LazyLock<AgeIdentity> = LazyLock::new(fuzzing::identity);

fuzz_target!(|data: &[u8]| {
    let _ = envelope::unwrap(data, &IDENTITY);
    let _ = fuzzing::envelope_plaintext(data);
});
