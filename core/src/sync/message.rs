//! The sync protocol's messages, their encoding and their limits.
//!
//! Two messages exist: the initiator's [`Request`] and the responder's [`Response`], encoded with
//! postcard. Every incoming message is checked against the limits below before a session acts on
//! it: too long, not decodable, trailing bytes, repeated topics, too many ids wanted or too many
//! items is a [`SyncError`] and ends the session with that peer.

use serde::{Deserialize, Serialize};

use crate::{
    blob::BLOB_BYTES_MAX,
    keys::{RecordId, sha256},
    replica::{ReplicaError, Topic},
    section::Section,
    sync::reconcile::{Id, RECONCILE_MESSAGE_BYTES_MAX, ReconcileError},
    vault::VaultError,
};

/// Bytes of items (blobs, ledger operations) one message carries at most, unless a single item
/// is larger on its own; then it travels alone.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Items one message carries at most.
pub const BATCH_ITEMS_MAX: usize = 1024;

/// Ids one request may ask for.
pub const WANT_IDS_MAX: usize = 1024;

/// Topics one message may reconcile: the ledger and every section.
pub const TOPICS_MAX: usize = 1 + Section::ALL.len();

/// Ids the responder lists, per topic, as newer than anything the initiator holds
/// ([`Response::newer`]). Past it, the topic is reconciled whole instead.
pub const NEWER_IDS_MAX: usize = 1024;

/// The longest message accepted: one blob of the largest size with room for the rest.
pub const SYNC_MESSAGE_BYTES_MAX: usize = BLOB_BYTES_MAX
    + TOPICS_MAX * RECONCILE_MESSAGE_BYTES_MAX
    + TOPICS_MAX * NEWER_IDS_MAX * 32
    + 64 * 1024;

/// A message of the initiator (the node that started the session).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The session, a random number the initiator picked.
    pub session: u64,
    /// 0 for the opening request, then one more for each request.
    pub seq: u32,
    /// The record synced.
    pub record: RecordId,
    /// Reconciliation messages, per topic: in the opening request one for every topic the
    /// initiator wants to sync, then one for each topic still open.
    pub reconcile: Vec<(Topic, Vec<u8>)>,
    /// Ids the initiator asks for.
    pub want: Vec<(Topic, Vec<Id>)>,
    /// Items the initiator found the responder lacks: signed ledger operations and sealed blobs.
    pub items: Vec<(Topic, Vec<u8>)>,
    /// The last message of the session: nothing is answered.
    pub close: bool,
    /// The audit entries of the last response that this node now holds (stored durably, or
    /// held already): their author, if it is not an owner device, may drop its copies.
    pub stored: Vec<Id>,
    /// In the opening request only: for each topic reconciled, the latest time among the items
    /// the initiator reconciles (`None`: it has none). The responder reconciles only its items
    /// up to that time, and lists the ids of its later ones outright ([`Response::newer`]): the
    /// writes the initiator missed are mostly the latest, and are then found in one round trip.
    pub newest: Vec<(Topic, Option<u64>)>,
}

/// A message of the responder, answering the request with the same `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The session.
    pub session: u64,
    /// The `seq` of the request answered.
    pub seq: u32,
    /// Answers to the request's reconciliation messages, per topic.
    pub reconcile: Vec<(Topic, Vec<u8>)>,
    /// Items asked for and held (all of them, or as many as fit in one batch).
    pub items: Vec<(Topic, Vec<u8>)>,
    /// The audit entries of the request answered that this node now holds.
    pub stored: Vec<Id>,
    /// In the answer to the opening request only: per topic, the ids of the items the responder
    /// may send that are later than the initiator's latest ([`Request::newest`]), at most
    /// [`NEWER_IDS_MAX`]; the topic's reconciliation covers the rest.
    pub newer: Vec<(Topic, Vec<Id>)>,
}

/// Either message, as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// From the initiator.
    Request(Request),
    /// From the responder.
    Response(Response),
}

/// Why a message was refused or a session ended. Any of these ends the session with that peer;
/// none of them changes what was stored.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The message is longer than [`SYNC_MESSAGE_BYTES_MAX`]; it was not read.
    #[error("a sync message of {bytes} bytes is over the limit of {max}")]
    TooLarge {
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The message does not decode, or breaks a limit.
    #[error("a malformed sync message: {0}")]
    Malformed(String),
    /// A request where a response was due, or the other way round.
    #[error("a sync message of the wrong kind for this side of the session")]
    WrongKind,
    /// The message belongs to another session.
    #[error("a sync message of session {found:016x}, not {expected:016x}")]
    WrongSession {
        /// This session.
        expected: u64,
        /// The message's.
        found: u64,
    },
    /// The message is about another record than the session's.
    #[error("a sync message about another record")]
    WrongRecord,
    /// An earlier message came again, changed or out of turn.
    #[error("sync message {found} came after message {last}: replayed")]
    Replayed {
        /// The last message taken.
        last: u32,
        /// The one that came.
        found: u32,
    },
    /// A message skipped ahead.
    #[error("sync message {found} came when {expected} was due")]
    OutOfOrder {
        /// The message due.
        expected: u32,
        /// The one that came.
        found: u32,
    },
    /// A reconciliation message was refused.
    #[error("the {topic} reconciliation failed: {source}")]
    Reconcile {
        /// Its topic.
        topic: Topic,
        /// Why.
        source: ReconcileError,
    },
    /// The peer sent an item nobody asked for.
    #[error("the peer sent a {topic} item that was not asked for")]
    Unrequested {
        /// Its topic.
        topic: Topic,
    },
    /// The peer sent an item that failed its checks, or the store failed.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// This node's store could not be read.
    #[error(transparent)]
    Store(#[from] VaultError),
    /// The peer did not answer in time, after every retry.
    #[error("the peer did not answer")]
    TimedOut,
    /// The connection to the peer closed before the session ended (the peer may have
    /// restarted and lost its side of it); the next session starts afresh.
    #[error("the connection closed before the session ended")]
    Disconnected,
    /// The session is over; it takes no more messages.
    #[error("the session is over")]
    Finished,
}

impl SyncError {
    /// Whether the peer is to blame (a broken or hostile peer) rather than this node, the
    /// network, or a restart. A message out of turn (`OutOfOrder`, `Replayed`, `WrongSession`,
    /// `Finished`) is what an honest peer sends when one side lost a session in a restart or a
    /// timeout: the session ends, and the next one starts afresh.
    pub fn is_peers_fault(&self) -> bool {
        match self {
            SyncError::Replica(ReplicaError::Refused { .. }) => true,
            SyncError::Replica(_)
            | SyncError::Store(_)
            | SyncError::TimedOut
            | SyncError::Disconnected
            | SyncError::OutOfOrder { .. }
            | SyncError::Replayed { .. }
            | SyncError::WrongSession { .. }
            | SyncError::Finished => false,
            SyncError::TooLarge { .. }
            | SyncError::Malformed(_)
            | SyncError::WrongKind
            | SyncError::WrongRecord
            | SyncError::Reconcile { .. }
            | SyncError::Unrequested { .. } => true,
        }
    }
}

/// A message received, decoded and checked against the limits, with its size and digest.
#[derive(Debug)]
pub struct Incoming {
    /// The message.
    pub message: Message,
    /// Its encoded length.
    pub bytes: usize,
    /// SHA-256 of its bytes: an exact repeat is recognised and not acted on twice.
    pub digest: [u8; 32],
}

impl Incoming {
    /// Decodes a message and checks it against the protocol's limits.
    pub fn decode(bytes: &[u8]) -> Result<Incoming, SyncError> {
        if bytes.len() > SYNC_MESSAGE_BYTES_MAX {
            return Err(SyncError::TooLarge {
                bytes: bytes.len(),
                max: SYNC_MESSAGE_BYTES_MAX,
            });
        }
        let (message, rest): (Message, _) =
            postcard::take_from_bytes(bytes).map_err(|e| SyncError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(SyncError::Malformed(format!(
                "{} bytes after the end of the message",
                rest.len()
            )));
        }
        let (reconcile, want, items, stored) = match &message {
            Message::Request(r) => (&r.reconcile, r.want.as_slice(), &r.items, &r.stored),
            Message::Response(r) => (&r.reconcile, &[][..], &r.items, &r.stored),
        };
        check_topics(reconcile.iter().map(|(topic, _)| *topic))?;
        check_topics(want.iter().map(|(topic, _)| *topic))?;
        match &message {
            Message::Request(r) => check_topics(r.newest.iter().map(|(topic, _)| *topic))?,
            Message::Response(r) => {
                check_topics(r.newer.iter().map(|(topic, _)| *topic))?;
                if let Some((topic, ids)) =
                    r.newer.iter().find(|(_, ids)| ids.len() > NEWER_IDS_MAX)
                {
                    return Err(SyncError::Malformed(format!(
                        "{} {topic} ids listed as newer, over the limit of {NEWER_IDS_MAX}",
                        ids.len()
                    )));
                }
            }
        }
        let wanted: usize = want.iter().map(|(_, ids)| ids.len()).sum();
        if wanted > WANT_IDS_MAX {
            return Err(SyncError::Malformed(format!(
                "{wanted} ids asked for, over the limit of {WANT_IDS_MAX}"
            )));
        }
        if items.len() > BATCH_ITEMS_MAX {
            return Err(SyncError::Malformed(format!(
                "{} items, over the limit of {BATCH_ITEMS_MAX}",
                items.len()
            )));
        }
        // Only items of the message before can be confirmed: at most one batch of them.
        if stored.len() > BATCH_ITEMS_MAX {
            return Err(SyncError::Malformed(format!(
                "{} items confirmed, over the limit of {BATCH_ITEMS_MAX}",
                stored.len()
            )));
        }
        Ok(Incoming {
            message,
            bytes: bytes.len(),
            digest: sha256(&[bytes]),
        })
    }
}

/// Each topic at most once.
fn check_topics(topics: impl Iterator<Item = Topic>) -> Result<(), SyncError> {
    let mut seen = std::collections::BTreeSet::new();
    for topic in topics {
        if !seen.insert(topic) {
            return Err(SyncError::Malformed(format!("topic {topic} appears twice")));
        }
    }
    Ok(())
}

impl Message {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("sync messages serialise")
    }
}
