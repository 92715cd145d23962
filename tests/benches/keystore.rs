//! The keystore's passphrase work factor: how long scrypt (age's passphrase recipient) takes to
//! unlock a keystore at each work factor on this machine, which is what every `phr` command on a
//! passphrase-protected home waits for, and what an attacker who copied the file pays per guess
//! (on hardware like this; a GPU or an ASIC pays less per guess, scrypt's memory makes it less
//! so than for PBKDF2).
//!
//! - `Keystore::read` of a real keystore file at the keystore's work factor
//!   (`KEYSTORE_SCRYPT_LOG_N`), the whole cost of opening it;
//! - `decrypt_with_passphrase` of the same plaintext at work factors 14 to 20, with the memory
//!   scrypt takes at each (128 × r × N bytes, r = 8): the table the choice is made from;
//! - encryption at the backup's work factor (`BACKUP_SCRYPT_LOG_N`), what `phr backup export`
//!   waits for.
//!
//! Run with `cargo bench -p phr-tests --bench keystore` (release build). Figures are medians.

use phr_core::{
    keystore::{
        BACKUP_SCRYPT_LOG_N, KEYSTORE_SCRYPT_LOG_N, Keystore, decrypt_with_passphrase,
        encrypt_with_passphrase,
    },
    secrecy::SecretString,
};
use phr_tests::bench::{ms, time};

fn main() {
    let passphrase = SecretString::from("correct horse battery staple");
    let keystore = Keystore::generate(true);
    let plain = keystore.to_bytes();

    let dir = tempfile::tempdir().unwrap();
    keystore.write(dir.path(), Some(&passphrase)).unwrap();
    let read = time(7, || {
        Keystore::read(dir.path(), &mut || Ok(passphrase.clone())).unwrap()
    });
    println!(
        "Keystore::read at the keystore's work factor 2^{KEYSTORE_SCRYPT_LOG_N}: {}",
        ms(read)
    );

    println!("unlock (decrypt) time by scrypt work factor:");
    for log_n in 14u8..=20 {
        let file = encrypt_with_passphrase(&plain, &passphrase, log_n).unwrap();
        let runs = if log_n >= 19 { 3 } else { 5 };
        let unlock = time(runs, || {
            decrypt_with_passphrase(&file, &passphrase).unwrap()
        });
        let memory_mib = 128u64 * 8 * (1u64 << log_n) / (1024 * 1024);
        println!("  2^{log_n}: {:>9}  ({memory_mib} MiB)", ms(unlock));
    }

    let export = time(3, || {
        encrypt_with_passphrase(&plain, &passphrase, BACKUP_SCRYPT_LOG_N).unwrap()
    });
    println!(
        "encrypt at the backup's work factor 2^{BACKUP_SCRYPT_LOG_N}: {}",
        ms(export)
    );
}
