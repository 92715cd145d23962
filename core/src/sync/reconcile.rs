//! Range-based set reconciliation of id sets: which ids only one of two peers holds.
//!
//! Two peers each hold a set of 32-byte ids (the blob ids of one record section, or the consent
//! ledger's operation ids) and want to learn the difference while sending bytes in proportion to
//! the difference, not to the sets. This module wraps the negentropy protocol (version 1, the
//! `negentropy` crate) in two small state machines that take and return byte messages; the node
//! carries the messages over libp2p and the simulator over its simulated network.
//!
//! # The protocol
//!
//! 1. The peer that dialled is the [`Initiator`]. [`Initiator::start`] sorts its ids and makes the
//!    first message: the whole id range cut into 16 buckets, each sent as a 16-byte fingerprint of
//!    the ids in it (a set of fewer than 32 ids is sent as a plain list instead).
//! 2. The other peer is the [`Responder`]. [`Responder::answer`] compares every range of the
//!    message with its own ids. A range whose fingerprint matches is settled and costs nothing
//!    more; a range that differs is cut into 16 buckets again or, once it is small, answered with
//!    the list of ids the responder holds in it.
//! 3. [`Initiator::receive`] does the same with the answer. Where the answer lists ids, the
//!    initiator works out which ids of that range only it holds ([`Initiator::have`]: offer them)
//!    and which only the responder holds ([`Initiator::need`]: fetch them). It returns the next
//!    message, or `None` once no range is left open.
//!
//! Each round trip cuts the open ranges sixteen ways, so `d` differences among `n` ids take about
//! log16(n) round trips and `d · log16(n)` fingerprints; identical sets settle in one round trip.
//! Only the initiator learns the difference: the sync protocol above this module acts on it.
//!
//! Each id may carry a timestamp ([`Item`]): ranges are ranges of (timestamp, id), so when the
//! timestamp is the time an item was written, the differences between two replicas (the recent
//! writes one of them missed) sit together at the end of the order and are found with fewer
//! fingerprints. The sync layer uses the author's time from the signed blob header or ledger
//! operation, which both peers read the same from the same bytes. A lying clock only makes its
//! own items costlier to find. [`Initiator::start`] and [`Responder::new`] put every id at 0.
//!
//! A fingerprint is a hash of the count and the sum (mod 2^256) of the ids in a range, so two
//! different ranges with equal counts and sums look settled. For SHA-256 ids that happens by
//! chance with negligible odds; ids that are not hashes (`[n; 32]`, counters) collide readily.
//!
//! # Bounds and hostile peers
//!
//! - An incoming message longer than [`RECONCILE_MESSAGE_BYTES_MAX`] is refused before it is read.
//! - Every incoming message is checked against the wire format before negentropy reads it: a
//!   message cut short, an unknown mode, an id bound longer than 32 bytes or a number that does
//!   not fit in 64 bits is [`ReconcileError::Malformed`].
//! - Each side's messages are at most [`RECONCILE_FRAME_BYTES_MAX`] long; ranges that do not fit
//!   wait for the next round.
//! - Each side takes at most [`RECONCILE_ROUNDS_MAX`] messages from its peer, so a peer that
//!   replays messages or keeps ranges open cannot keep a session going. Refused messages count too.
//!   An honest session hits the limit only when the initiator lacks more than about 30,000 ids
//!   (one frame carries about 2,000): what it found by then is true, so fetch that and reconcile
//!   again.
//!
//! A refused message leaves the state as it was, but a peer that sends one is broken or hostile:
//! end the session. Message boundaries are the transport's job, which frames each message whole: a
//! message cut between two ranges is well formed, and reads as if the rest were settled.
//!
//! # Example
//!
//! ```
//! use std::collections::BTreeSet;
//!
//! use phr_core::keys::sha256;
//! use phr_core::sync::reconcile::{Id, Initiator, ReconcileError, Responder};
//!
//! // Two devices share blobs 0 to 99; the phone alone holds 100 and 101, the laptop alone 102.
//! let id = |n: u8| -> Id { sha256(&[b"blob", &[n]]) };
//! let phone: Vec<Id> = (0..102).map(id).collect();
//! let laptop: Vec<Id> = (0..100).chain([102]).map(id).collect();
//!
//! // The phone dialled, so it starts. The loop ends: `receive` refuses to go on for ever.
//! let (mut phone, mut to_laptop) = Initiator::start(phone)?;
//! let mut laptop = Responder::new(laptop)?;
//! loop {
//!     let to_phone = laptop.answer(&to_laptop)?;
//!     match phone.receive(&to_phone)? {
//!         Some(next) => to_laptop = next,
//!         None => break,
//!     }
//! }
//!
//! assert!(phone.is_done());
//! assert_eq!(phone.have(), &BTreeSet::from([id(100), id(101)]));
//! assert_eq!(phone.need(), &BTreeSet::from([id(102)]));
//! # Ok::<(), ReconcileError>(())
//! ```

use std::collections::BTreeSet;
use std::fmt;

use negentropy::{Negentropy, NegentropyStorageVector};

/// Ids reconciled: blob ids and ledger operation ids are both 32-byte SHA-256 hashes.
pub type Id = [u8; 32];

/// An id with the timestamp it sorts by (see the module documentation).
pub type Item = (u64, Id);

/// The most bytes one message of ours may take: negentropy leaves ranges for the next round
/// rather than go past it. The crate refuses limits under 4096 bytes.
pub const RECONCILE_FRAME_BYTES_MAX: usize = 64 * 1024;

/// The most messages one side takes from its peer in a session; a session that needs more is
/// refused as hostile. Honest peers need about log16 of the set size, plus a round for every
/// frame of ids when the sets differ by thousands: 15 rounds when the initiator lacks 30,000.
pub const RECONCILE_ROUNDS_MAX: usize = 16;

/// The most bytes an incoming message may take; a longer one is refused before it is read.
pub const RECONCILE_MESSAGE_BYTES_MAX: usize = 256 * 1024;

const _: () = assert!(RECONCILE_FRAME_BYTES_MAX >= NEGENTROPY_FRAME_BYTES_MIN);
const _: () = assert!(RECONCILE_FRAME_BYTES_MAX <= RECONCILE_MESSAGE_BYTES_MAX);

/// negentropy refuses a frame size limit under this (other than 0, which means no limit).
const NEGENTROPY_FRAME_BYTES_MIN: usize = 4096;

/// The timestamp of ids given without one.
const ID_TIMESTAMP: u64 = 0;

/// The negentropy protocol version this module speaks, the first byte of every message.
const PROTOCOL_VERSION: u8 = 0x61;

/// Bytes in a negentropy range fingerprint.
const FINGERPRINT_BYTES: usize = 16;

/// Why a reconciliation message was refused or a session could not go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    /// An incoming message was longer than [`RECONCILE_MESSAGE_BYTES_MAX`]; it was not read.
    #[error(
        "reconciliation message of {bytes} bytes refused: the limit is {max} bytes; the peer is \
         broken or hostile, end the session"
    )]
    TooLarge {
        /// The message's length, in bytes.
        bytes: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The peer sent more than [`RECONCILE_ROUNDS_MAX`] messages, or the session would need
    /// more rounds than that to finish.
    #[error(
        "reconciliation did not finish within {max} rounds; the peer is broken or hostile, end \
         the session"
    )]
    TooManyRounds {
        /// The limit, in rounds.
        max: usize,
    },
    /// An incoming message is not a well-formed negentropy message as this module sends them.
    #[error("malformed reconciliation message: {0}")]
    Malformed(String),
    /// An incoming message speaks another negentropy protocol version.
    #[error(
        "reconciliation message in negentropy protocol version {version:#04x}; this node speaks \
         {PROTOCOL_VERSION:#04x}"
    )]
    UnsupportedVersion {
        /// The version byte the message starts with.
        version: u8,
    },
    /// The negentropy crate refused a message or its state.
    #[error("reconciliation protocol error: {0}")]
    Protocol(String),
    /// [`Initiator::receive`] was called after reconciliation was complete.
    #[error("reconciliation is already complete; start a new session to reconcile again")]
    Finished,
}

/// The side that starts (the node that dialled).
pub struct Initiator {
    negentropy: Negentropy<'static, NegentropyStorageVector>,
    have: BTreeSet<Id>,
    need: BTreeSet<Id>,
    rounds: usize,
    done: bool,
}

impl Initiator {
    /// `ids`: this node's set (any order, duplicates allowed). Returns the first message.
    pub fn start(
        ids: impl IntoIterator<Item = Id>,
    ) -> Result<(Initiator, Vec<u8>), ReconcileError> {
        Self::start_items(ids.into_iter().map(|id| (ID_TIMESTAMP, id)))
    }

    /// [`Initiator::start`] with a timestamp for each id.
    pub fn start_items(
        items: impl IntoIterator<Item = Item>,
    ) -> Result<(Initiator, Vec<u8>), ReconcileError> {
        let mut negentropy = negentropy_over(items)?;
        let message = negentropy.initiate().map_err(protocol)?;
        debug_assert!(message.len() <= RECONCILE_FRAME_BYTES_MAX);
        let initiator = Initiator {
            negentropy,
            have: BTreeSet::new(),
            need: BTreeSet::new(),
            rounds: 0,
            done: false,
        };
        Ok((initiator, message))
    }

    /// Takes the responder's message; returns the next message to send, or `None` when
    /// reconciliation is complete. Accumulates [`have`](Self::have) (ids only this side holds)
    /// and [`need`](Self::need) (ids only the peer holds).
    ///
    /// A refused message changes nothing but the round count. After
    /// [`TooManyRounds`](ReconcileError::TooManyRounds), `have` and `need` hold the differences
    /// found so far: all true, but perhaps not all.
    pub fn receive(&mut self, message: &[u8]) -> Result<Option<Vec<u8>>, ReconcileError> {
        if self.done {
            return Err(ReconcileError::Finished);
        }
        count_round(&mut self.rounds)?;
        check_message(message)?;

        // negentropy may push ids and then fail further on: keep them only if the whole
        // message was good.
        let (mut have, mut need) = (Vec::new(), Vec::new());
        let next = self
            .negentropy
            .reconcile_with_ids(message, &mut have, &mut need)
            .map_err(protocol)?;
        self.have
            .extend(have.into_iter().map(negentropy::Id::to_bytes));
        self.need
            .extend(need.into_iter().map(negentropy::Id::to_bytes));

        match next {
            None => {
                self.done = true;
                Ok(None)
            }
            // The responder would refuse the next message: do not send it.
            Some(_) if self.rounds >= RECONCILE_ROUNDS_MAX => Err(ReconcileError::TooManyRounds {
                max: RECONCILE_ROUNDS_MAX,
            }),
            Some(next) => {
                debug_assert!(next.len() <= RECONCILE_FRAME_BYTES_MAX);
                Ok(Some(next))
            }
        }
    }

    /// Ids only this side holds, found so far (all of them once [`is_done`](Self::is_done)).
    pub fn have(&self) -> &BTreeSet<Id> {
        &self.have
    }

    /// Ids only the peer holds, found so far (all of them once [`is_done`](Self::is_done)).
    pub fn need(&self) -> &BTreeSet<Id> {
        &self.need
    }

    /// Whether reconciliation is complete: [`have`](Self::have) and [`need`](Self::need) are final.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Messages received from the responder so far, refused ones included: the round trips made.
    pub fn rounds(&self) -> usize {
        self.rounds
    }
}

impl fmt::Debug for Initiator {
    // The sets may hold many thousands of ids: show their sizes only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("have", &self.have.len())
            .field("need", &self.need.len())
            .field("rounds", &self.rounds)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// The side that answers.
pub struct Responder {
    negentropy: Negentropy<'static, NegentropyStorageVector>,
    rounds: usize,
}

impl Responder {
    /// `ids`: this node's set (any order, duplicates allowed).
    pub fn new(ids: impl IntoIterator<Item = Id>) -> Result<Responder, ReconcileError> {
        Self::with_items(ids.into_iter().map(|id| (ID_TIMESTAMP, id)))
    }

    /// [`Responder::new`] with a timestamp for each id.
    pub fn with_items(items: impl IntoIterator<Item = Item>) -> Result<Responder, ReconcileError> {
        Ok(Responder {
            negentropy: negentropy_over(items)?,
            rounds: 0,
        })
    }

    /// Answers one message of the initiator (stateless between messages apart from its set and a
    /// round counter). The initiator's last message is answered too: the responder cannot tell
    /// when the session is over, and need not.
    pub fn answer(&mut self, message: &[u8]) -> Result<Vec<u8>, ReconcileError> {
        count_round(&mut self.rounds)?;
        check_message(message)?;
        let answer = self.negentropy.reconcile(message).map_err(protocol)?;
        debug_assert!(answer.len() <= RECONCILE_FRAME_BYTES_MAX);
        Ok(answer)
    }

    /// Messages received from the initiator so far, refused ones included.
    pub fn rounds(&self) -> usize {
        self.rounds
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("rounds", &self.rounds)
            .finish_non_exhaustive()
    }
}

/// A negentropy instance over `ids`, sorted and deduplicated, with our frame size limit.
fn negentropy_over(
    items: impl IntoIterator<Item = Item>,
) -> Result<Negentropy<'static, NegentropyStorageVector>, ReconcileError> {
    let items = items.into_iter();
    let mut storage = NegentropyStorageVector::with_capacity(items.size_hint().0);
    for (timestamp, id) in items {
        let id = negentropy::Id::from_byte_array(id);
        storage.insert(timestamp, id).map_err(protocol)?;
    }
    // Sorting also drops duplicates, which negentropy relies on.
    storage.seal().map_err(protocol)?;
    Negentropy::owned(storage, RECONCILE_FRAME_BYTES_MAX as u64).map_err(protocol)
}

/// Counts one more incoming message, refusing it past [`RECONCILE_ROUNDS_MAX`].
fn count_round(rounds: &mut usize) -> Result<(), ReconcileError> {
    if *rounds >= RECONCILE_ROUNDS_MAX {
        return Err(ReconcileError::TooManyRounds {
            max: RECONCILE_ROUNDS_MAX,
        });
    }
    *rounds += 1;
    Ok(())
}

fn protocol(error: negentropy::Error) -> ReconcileError {
    ReconcileError::Protocol(error.to_string())
}

fn malformed(why: impl Into<String>) -> ReconcileError {
    ReconcileError::Malformed(why.into())
}

/// Checks an incoming message against negentropy's wire format, as this module uses it, before
/// negentropy reads it: the crate reads past the end of a message as zeros, and we would rather
/// refuse a damaged message than guess.
///
/// A message is the version byte, then ranges, each an upper bound, a mode and the mode's payload:
///
/// ```text
/// bound       = timestamp:varint  id-length:varint  id-prefix:bytes(id-length <= 32)
/// Skip        = mode 0
/// Fingerprint = mode 1  fingerprint:bytes(16)
/// IdList      = mode 2  count:varint  ids:bytes(32 * count)
/// ```
///
/// A timestamp is 0 for infinity, else one more than the change from the previous bound.
fn check_message(message: &[u8]) -> Result<(), ReconcileError> {
    if message.len() > RECONCILE_MESSAGE_BYTES_MAX {
        return Err(ReconcileError::TooLarge {
            bytes: message.len(),
            max: RECONCILE_MESSAGE_BYTES_MAX,
        });
    }
    let (&version, mut rest) = message
        .split_first()
        .ok_or_else(|| malformed("the message is empty"))?;
    if version != PROTOCOL_VERSION {
        return Err(ReconcileError::UnsupportedVersion { version });
    }
    while !rest.is_empty() {
        // Any 64-bit timestamp is well formed; negentropy adds them up saturating.
        read_varint(&mut rest, "a bound's timestamp")?;
        let id_len = read_varint(&mut rest, "a bound's id length")?;
        if id_len > negentropy::ID_SIZE as u64 {
            return Err(malformed(format!(
                "a bound has an id prefix of {id_len} bytes, longer than an id"
            )));
        }
        take(&mut rest, id_len as usize, "a bound's id prefix")?;
        match read_varint(&mut rest, "a range's mode")? {
            0 => {}
            1 => take(&mut rest, FINGERPRINT_BYTES, "a fingerprint")?,
            2 => {
                let count = read_varint(&mut rest, "an id list's length")?;
                if count > (rest.len() / negentropy::ID_SIZE) as u64 {
                    return Err(malformed(format!(
                        "an id list of {count} ids runs past the end of the message"
                    )));
                }
                take(
                    &mut rest,
                    count as usize * negentropy::ID_SIZE,
                    "an id list",
                )?;
            }
            mode => return Err(malformed(format!("a range has unknown mode {mode}"))),
        }
    }
    Ok(())
}

/// Reads a negentropy varint: base 128, most significant group first, high bit set on every byte
/// but the last.
fn read_varint(rest: &mut &[u8], what: &str) -> Result<u64, ReconcileError> {
    let mut value: u64 = 0;
    loop {
        let (&byte, tail) = rest
            .split_first()
            .ok_or_else(|| malformed(format!("the message ends inside {what}")))?;
        *rest = tail;
        if value > u64::MAX >> 7 {
            return Err(malformed(format!("{what} does not fit in 64 bits")));
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// Skips `len` bytes, which must be there.
fn take(rest: &mut &[u8], len: usize, what: &str) -> Result<(), ReconcileError> {
    let (_, tail) = rest
        .split_at_checked(len)
        .ok_or_else(|| malformed(format!("the message ends inside {what}")))?;
    *rest = tail;
    Ok(())
}

#[cfg(test)]
mod tests;
