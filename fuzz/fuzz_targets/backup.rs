//! A decrypted backup: what `Home::restore` decodes and checks before it writes anything (its
//! JSON, keystore, device, ledger operations and blobs). Decryption is the keystore target's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phr_core::fuzzing;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::backup_contents(data);
});
