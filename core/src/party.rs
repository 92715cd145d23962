//! Parties: the nodes a record names (the patient's devices, providers, relays).

use serde::{Deserialize, Serialize};

use crate::keys::{AgeRecipient, PeerId};

/// The longest display name a party may carry, in bytes.
pub const PARTY_NAME_BYTES_MAX: usize = 200;

/// What kind of node a party is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A patient's own device.
    Patient,
    /// A provider organisation's node (GP practice, pharmacy, hospital, social care).
    Provider,
    /// A store-and-forward relay: holds ciphertext, reads nothing.
    Relay,
}

impl Role {
    /// The role's name as shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient device",
            Role::Provider => "provider",
            Role::Relay => "relay",
        }
    }
}

/// A node as a record's consent ledger names it: who it is and how to send it keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// Its Ed25519 public key, which is also its libp2p PeerId.
    pub peer: PeerId,
    /// Its age X25519 recipient: section keys are wrapped to it.
    pub recipient: AgeRecipient,
    /// The display name: the patient's name, the organisation's or the relay operator's.
    pub name: String,
    /// Patient device, provider or relay.
    pub role: Role,
    /// The provider's ODS organisation code, if it has one.
    pub ods: Option<String>,
}

impl Party {
    /// Whether `query` names this party, as people type it: its full PeerId, its name (ignoring
    /// case), or at least 8 characters of its PeerId.
    pub fn answers_to(&self, query: &str) -> bool {
        let peer = self.peer.to_string();
        peer == query
            || self.name.eq_ignore_ascii_case(query)
            || (query.len() >= 8 && peer.contains(query))
    }
}
