//! Keys and the identities made of them: the one place where key material is generated, parsed
//! and encoded.
//!
//! - [`SigningKey`] / [`PeerId`]: Ed25519 (RFC 8032, via ring). A node signs everything it writes
//!   with its signing key, and the public half *is* its libp2p identity: [`PeerId`] displays as the
//!   libp2p PeerId string (`12D3KooW...`), the base58btc identity multihash of the protobuf-encoded
//!   public key, so a PeerId names a device or an organisation and verifies its signatures.
//! - [`AgeIdentity`] / [`AgeRecipient`]: X25519 (age-encryption.org/v1). Section keys reach a node
//!   wrapped to its recipient.
//! - [`SectionKey`] / [`KeyId`]: the random ChaCha20-Poly1305 key of one (section, epoch).
//! - [`RecordId`]: derived from the record root key's public half.
//!
//! Secrets zeroize on drop and their `Debug` never prints them.

use std::{fmt, str::FromStr};

use age::secrecy::{ExposeSecret, SecretString};
use ring::{
    digest,
    rand::{SecureRandom, SystemRandom},
    signature::{self, Ed25519KeyPair, KeyPair},
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A key or id that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a libp2p Ed25519 PeerId.
    #[error("`{0}` is not a phr peer id (expected a libp2p Ed25519 PeerId such as 12D3KooW...)")]
    PeerId(String),
    /// Not an age X25519 recipient.
    #[error("`{0}` is not an age recipient (expected age1...)")]
    Recipient(String),
    /// Not an age X25519 identity (the text is never echoed: it may be a secret).
    #[error("the age identity is malformed")]
    Identity,
    /// Not a record id.
    #[error("`{0}` is not a record id (expected 32 hexadecimal digits)")]
    RecordId(String),
    /// Not a 64-digit hexadecimal blob or operation id.
    #[error("`{0}` is not an id (expected 64 hexadecimal digits)")]
    HashId(String),
    /// A signature did not verify.
    #[error("bad signature")]
    BadSignature,
}

fn random_bytes<const N: usize>() -> Zeroizing<[u8; N]> {
    let mut bytes = Zeroizing::new([0u8; N]);
    SystemRandom::new()
        .fill(bytes.as_mut())
        .expect("the operating system's random number generator works");
    bytes
}

/// Fills a fresh array with random bytes (nonces and ids; use the key types for secrets).
pub fn random_array<const N: usize>() -> [u8; N] {
    *random_bytes::<N>()
}

/// SHA-256 of `parts`, concatenated.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex(&self.0[..8]))
    }
}

/// An Ed25519 private key: a node's (or a record root's) signing key.
pub struct SigningKey {
    seed: Zeroizing<[u8; 32]>,
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.peer_id())
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self::from_seed(&random_bytes::<32>())
    }

    /// The key whose RFC 8032 private seed is `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let pair =
            Ed25519KeyPair::from_seed_unchecked(seed).expect("any 32 bytes are an Ed25519 seed");
        Self {
            seed: Zeroizing::new(*seed),
            pair,
        }
    }

    /// The private seed, for the keystore and backups only.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The public half.
    pub fn peer_id(&self) -> PeerId {
        PeerId(
            self.pair
                .public_key()
                .as_ref()
                .try_into()
                .expect("Ed25519 public keys are 32 bytes"),
        )
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(
            self.pair
                .sign(message)
                .as_ref()
                .try_into()
                .expect("Ed25519 signatures are 64 bytes"),
        )
    }
}

/// The protobuf prefix of a libp2p Ed25519 public key (`KeyType = Ed25519`, `Data` of 32 bytes),
/// preceded by the identity multihash code and length: a PeerId's bytes are this plus the key.
const PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// An Ed25519 public key, which is also a libp2p PeerId: the name of a device or organisation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub [u8; 32]);

impl PeerId {
    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.0
    }

    /// The PeerId's multihash bytes, as libp2p encodes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = PEER_ID_PREFIX.to_vec();
        bytes.extend_from_slice(&self.0);
        bytes
    }

    /// Checks that `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), KeyError> {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(message, &signature.0)
            .map_err(|_| KeyError::BadSignature)
    }

    /// The first characters of the PeerId after its fixed `12D3KooW` prefix, for display.
    pub fn short(&self) -> String {
        let full = self.to_string();
        full.chars().skip(8).take(8).collect()
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.to_bytes()).into_string())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

impl FromStr for PeerId {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::PeerId(text.chars().take(80).collect());
        let bytes = bs58::decode(text).into_vec().map_err(|_| bad())?;
        let key = bytes
            .strip_prefix(PEER_ID_PREFIX.as_slice())
            .ok_or_else(bad)?;
        Ok(PeerId(key.try_into().map_err(|_| bad())?))
    }
}

/// An age X25519 identity: the secret that unwraps section keys sent to this node.
pub struct AgeIdentity(age::x25519::Identity);

impl fmt::Debug for AgeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgeIdentity({})", self.recipient())
    }
}

impl AgeIdentity {
    /// A new random identity.
    pub fn generate() -> Self {
        Self(age::x25519::Identity::generate())
    }

    /// The `AGE-SECRET-KEY-1...` encoding, for the keystore and backups only.
    pub fn to_secret_string(&self) -> SecretString {
        self.0.to_string()
    }

    /// Parses the `AGE-SECRET-KEY-1...` encoding.
    pub fn parse(secret: &SecretString) -> Result<Self, KeyError> {
        secret
            .expose_secret()
            .parse()
            .map(Self)
            .map_err(|_| KeyError::Identity)
    }

    /// The public half.
    pub fn recipient(&self) -> AgeRecipient {
        AgeRecipient(self.0.to_public())
    }

    /// The age identity, for decrypting.
    pub fn as_age(&self) -> &age::x25519::Identity {
        &self.0
    }
}

/// An age X25519 recipient (`age1...`): whom section keys are wrapped to.
#[derive(Clone)]
pub struct AgeRecipient(age::x25519::Recipient);

impl AgeRecipient {
    /// The age recipient, for encrypting.
    pub fn as_age(&self) -> &age::x25519::Recipient {
        &self.0
    }
}

impl PartialEq for AgeRecipient {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for AgeRecipient {}

impl fmt::Display for AgeRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for AgeRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgeRecipient({self})")
    }
}

impl FromStr for AgeRecipient {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        text.parse()
            .map(Self)
            .map_err(|_| KeyError::Recipient(text.chars().take(80).collect()))
    }
}

impl Serialize for AgeRecipient {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for AgeRecipient {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The id of a section key: SHA-256 of a domain tag and the key, truncated. It names the key in
/// blob headers and envelopes without revealing anything about it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyId(pub [u8; 16]);

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", hex(&self.0))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

/// The random 256-bit ChaCha20-Poly1305 key of one (section, epoch).
#[derive(Clone, PartialEq, Eq)]
pub struct SectionKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for SectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SectionKey({})", self.id())
    }
}

impl SectionKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self(random_bytes::<32>())
    }

    /// A key from its bytes (as unwrapped from an envelope).
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(Zeroizing::new(*bytes))
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key's public id.
    pub fn id(&self) -> KeyId {
        let hash = sha256(&[b"phr section key id v1\0", self.0.as_ref()]);
        KeyId(hash[..16].try_into().expect("16 bytes"))
    }
}

/// A record's id: the first 16 bytes of SHA-256 of a domain tag and the record root's public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordId(pub [u8; 16]);

impl RecordId {
    /// The id of the record whose root key is `root`.
    pub fn of_root(root: &PeerId) -> Self {
        let hash = sha256(&[b"phr record id v1\0", root.public_key()]);
        RecordId(hash[..16].try_into().expect("16 bytes"))
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({self})")
    }
}

impl FromStr for RecordId {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::RecordId(text.chars().take(80).collect());
        let bytes = unhex(text).ok_or_else(bad)?;
        Ok(RecordId(bytes.try_into().map_err(|_| bad())?))
    }
}

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The first 12 hexadecimal digits, for display.
            pub fn short(&self) -> String {
                hex(&self.0[..6])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = KeyError;

            fn from_str(text: &str) -> Result<Self, KeyError> {
                let bad = || KeyError::HashId(text.chars().take(80).collect());
                let bytes = unhex(text).ok_or_else(bad)?;
                Ok($name(bytes.try_into().map_err(|_| bad())?))
            }
        }
    };
}

hash_id!(
    /// A consent-ledger operation's id: SHA-256 of its signed bytes.
    OpId
);
hash_id!(
    /// A sealed blob's id: SHA-256 of its bytes.
    BlobId
);

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses hexadecimal (either case).
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn peer_id_matches_libp2p() {
        let key = SigningKey::generate();
        let theirs = libp2p_identity::Keypair::ed25519_from_bytes(*key.seed()).unwrap();
        let theirs = libp2p_identity::PeerId::from(theirs.public());
        assert_eq!(key.peer_id().to_string(), theirs.to_string());
        assert_eq!(key.peer_id().to_bytes(), theirs.to_bytes());
        assert!(key.peer_id().to_string().starts_with("12D3KooW"));
    }

    #[test]
    fn signatures_verify_and_a_flipped_bit_does_not() {
        let key = SigningKey::generate();
        let sig = key.sign(b"grant summary to the GP");
        key.peer_id()
            .verify(b"grant summary to the GP", &sig)
            .unwrap();
        assert_eq!(
            key.peer_id().verify(b"grant summary to the GQ", &sig),
            Err(KeyError::BadSignature)
        );
        let other = SigningKey::generate();
        assert!(
            other
                .peer_id()
                .verify(b"grant summary to the GP", &sig)
                .is_err()
        );
    }

    #[test]
    fn debug_never_prints_secrets() {
        let key = SigningKey::generate();
        assert!(!format!("{key:?}").contains(&hex(key.seed())));
        let age = AgeIdentity::generate();
        let secret = age.to_secret_string();
        assert!(!format!("{age:?}").contains(secret.expose_secret()));
        let section = SectionKey::generate();
        assert!(!format!("{section:?}").contains(&hex(section.bytes())));
    }

    #[test]
    fn age_identity_round_trips() {
        let age = AgeIdentity::generate();
        let again = AgeIdentity::parse(&age.to_secret_string()).unwrap();
        assert_eq!(age.recipient(), again.recipient());
        let recipient: AgeRecipient = age.recipient().to_string().parse().unwrap();
        assert_eq!(recipient, age.recipient());
        assert!("age1nope".parse::<AgeRecipient>().is_err());
    }

    proptest! {
        #[test]
        fn peer_id_text_round_trips(seed in any::<[u8; 32]>()) {
            let peer = SigningKey::from_seed(&seed).peer_id();
            prop_assert_eq!(peer.to_string().parse::<PeerId>().unwrap(), peer);
        }

        #[test]
        fn record_id_text_round_trips(bytes in any::<[u8; 16]>()) {
            let id = RecordId(bytes);
            prop_assert_eq!(id.to_string().parse::<RecordId>().unwrap(), id);
        }

        #[test]
        fn garbage_is_not_a_peer_id(text in "[1-9A-HJ-NP-Za-km-z]{0,60}") {
            // Only exactly-prefixed 38-byte decodings are PeerIds; random base58 almost never is.
            if let Ok(peer) = text.parse::<PeerId>() {
                prop_assert_eq!(peer.to_string(), text);
            }
        }
    }
}
