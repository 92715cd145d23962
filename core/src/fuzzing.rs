//! Entry points for the fuzz targets in `fuzz/` (see docs/FUZZING.md). Not part of the API.
//!
//! Most decoders of untrusted bytes are public already (`Blob::decode`, `SignedOp::decode`,
//! `Incoming::decode`, `Card::parse`, `envelope::unwrap`, `import::parse`, the `changes`
//! checks). A few are reached only behind a key, a passphrase or a file on disk; each is exposed
//! here as one function that calls the very code the node and the CLI run, never a copy of it.

use age::secrecy::SecretString;
use automerge::ActorId;

use crate::{
    envelope::{self, Damage},
    home::{self, HomeError},
    keys::{AgeIdentity, SigningKey},
    keystore::{Keystore, KeystoreError},
};

/// The device key that signs the fuzz seeds; its changes are written as [`actor`]. It protects
/// nothing: it exists so that seeds made by `examples/fuzz_seeds.rs` pass the targets' checks.
pub fn signer() -> SigningKey {
    SigningKey::from_seed(&[0x51; 32])
}

/// The Automerge actor [`signer`]'s device writes as: its public key's first 16 bytes, then 8.
pub fn actor() -> ActorId {
    let mut bytes = signer().peer_id().public_key()[..crate::changes::ACTOR_KEY_BYTES].to_vec();
    bytes.extend_from_slice(&[0xf0; 8]);
    ActorId::from(bytes)
}

/// The age identity the envelope seeds are wrapped to, and the envelope target unwraps with.
/// Like [`signer`], a fixture that protects nothing.
pub fn identity() -> AgeIdentity {
    AgeIdentity::parse(&SecretString::from(
        "AGE-SECRET-KEY-18M55FZECRC6FXXHVGVSD329Z47YNFTYHH868LEXKQKCNN7HXDLSQXWHJ4X",
    ))
    .expect("a valid age identity")
}

/// The one time the targets and seeds use (2023-11-14), in unix milliseconds.
pub const NOW_MS: i64 = 1_700_000_000_000;

/// [`NOW_MS`] as a timestamp.
pub fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(NOW_MS).expect("a valid time")
}

/// The largest scrypt work factor (log2 N) the fuzz targets let a file ask for: 2^10 costs about
/// a millisecond, where the real bound ([`crate::keystore::SCRYPT_LOG_N_MAX`]) costs 4 GiB.
pub const FUZZ_SCRYPT_LOG_N_MAX: u8 = 10;

/// The passphrase every fuzz seed is encrypted with.
pub const FUZZ_PASSPHRASE: &str = "fuzz passphrase";

/// Decodes the plaintext of a key envelope (what [`envelope::unwrap`] decrypts) and returns how
/// many keys it holds. The fuzzer cannot forge an age payload, so this reaches the decoder
/// directly.
pub fn envelope_plaintext(plaintext: &[u8]) -> Result<usize, Damage> {
    envelope::decode_keys(plaintext).map(|keys| keys.len())
}

/// Reads a keystore file's bytes as [`Keystore::read`] does (plain JSON, or an age file
/// decrypted with [`FUZZ_PASSPHRASE`] as [`crate::keystore::decrypt_with_passphrase`] decrypts backups
/// too), refusing work factors over [`FUZZ_SCRYPT_LOG_N_MAX`].
pub fn keystore_file(bytes: &[u8]) -> Result<Keystore, KeystoreError> {
    Keystore::from_file_bytes(
        bytes,
        &mut || Ok(SecretString::from(FUZZ_PASSPHRASE)),
        FUZZ_SCRYPT_LOG_N_MAX,
    )
}

/// Decodes and checks a decrypted backup as [`home::Home::restore`] does before it writes
/// anything: its JSON, keystore, device, ledger operations and blobs.
pub fn backup_contents(plain: &[u8]) -> Result<(), HomeError> {
    home::check_backup_contents(plain)
}
