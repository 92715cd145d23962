//! A keystore file (plain JSON, or age-encrypted to a passphrase, as backups are too): what
//! `Keystore::read` does with the file's bytes, with a low scrypt work factor cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phr_core::fuzzing;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::keystore_file(data);
});
