//! Who a node treats as admitted, shared by the behaviours that ask.
//!
//! A peer is admitted while a record the node holds, and has accepted, lists it: an owner
//! device, an unexpired grantee, a relay. The engine says who ([`crate::net::Node`] passes it on
//! through [`crate::gate::Gate::set_admitted`]); records waiting for a provider's acceptance
//! admit no one, since anyone can make one. Three behaviours read the answer:
//!
//! - the gate, which keeps connection slots for admitted peers ([`crate::gate`]);
//! - the frame codec, which reads frames of at most [`STRANGER_FRAME_BYTES_MAX`] from anyone
//!   else, and at most [`STRANGERS_READING_BYTES_MAX`] of such frames at once in all
//!   ([`crate::codec`]);
//! - a relay server, which takes reservations only from admitted peers (`AdmittedOnly`).
//!
//! libp2p makes a connection's handlers at once, in the behaviours' order, when the connection
//! is established; the gate, which comes before the sync protocol, notes whose connection it is
//! (`Admission::connecting`), and the codec made for that connection takes the note when it is
//! cloned for it. So every codec knows its peer, and asks again at every frame: a peer admitted
//! later (a patient accepted) gets the larger frames on the connection it already has.

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use libp2p::{Multiaddr, PeerId, relay};
use phr_core::sync::{
    message::{BATCH_BYTES_MAX, TOPICS_MAX},
    reconcile::RECONCILE_MESSAGE_BYTES_MAX,
};

/// The largest frame read from a peer that is not admitted: a full batch of items with the
/// reconciliation of every topic, so an honest message carries no single item larger than a
/// batch. (Such an item, a large attachment, waits until the peer is admitted: a record waiting
/// for acceptance is stored only up to `phr_core::replica::PENDING_RECORD_BYTES_MAX` anyway.)
pub const STRANGER_FRAME_BYTES_MAX: u64 =
    (BATCH_BYTES_MAX + TOPICS_MAX * RECONCILE_MESSAGE_BYTES_MAX + 64 * 1024) as u64;

/// Bytes of frames from peers that are not admitted being read at once, in all: each frame
/// reserves its declared length before its first byte is read. Over it a frame is refused
/// unread ([`crate::codec::BUSY`]) and the peer may try again; it is not cut off for it.
pub const STRANGERS_READING_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Admission {
    admitted: RwLock<BTreeSet<PeerId>>,
    /// The peer whose connection's handlers are being made (set by the gate, taken by the
    /// codec).
    connecting: Mutex<Option<PeerId>>,
    /// Bytes reserved by frames of peers not admitted that are being read.
    strangers_reading: AtomicU64,
}

impl Admission {
    /// Whether `peer` is admitted.
    pub fn is_admitted(&self, peer: &PeerId) -> bool {
        self.admitted
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(peer)
    }

    /// Sets the admitted peers.
    pub(crate) fn set(&self, admitted: BTreeSet<PeerId>) {
        *self
            .admitted
            .write()
            .unwrap_or_else(PoisonError::into_inner) = admitted;
    }

    /// Bytes of strangers' frames being read now.
    pub fn strangers_reading(&self) -> u64 {
        self.strangers_reading.load(Ordering::Relaxed)
    }

    /// Notes that the handlers about to be made are for `peer`'s connection.
    pub(crate) fn connecting(&self, peer: PeerId) {
        *self
            .connecting
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(peer);
    }

    /// The peer noted by [`Admission::connecting`], once.
    pub(crate) fn take_connecting(&self) -> Option<PeerId> {
        self.connecting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Reserves `bytes` of the strangers' reading budget, if there is room; the reservation
    /// ends when the returned value is dropped.
    pub(crate) fn reserve(self: &Arc<Self>, bytes: u64) -> Option<Reserved> {
        self.strangers_reading
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |reading| {
                reading
                    .checked_add(bytes)
                    .filter(|&total| total <= STRANGERS_READING_BYTES_MAX)
            })
            .ok()?;
        Some(Reserved {
            admission: self.clone(),
            bytes,
        })
    }
}

/// Part of the strangers' reading budget, held while a frame is read.
#[derive(Debug)]
pub(crate) struct Reserved {
    admission: Arc<Admission>,
    bytes: u64,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.admission
            .strangers_reading
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A relay server's rule that only admitted peers get a reservation: a relay carries the
/// devices of the records it holds, not anyone's. libp2p asks it as a rate limiter, before its
/// own limits per peer and per address.
pub(crate) struct AdmittedOnly(pub Arc<Admission>);

impl relay::RateLimiter for AdmittedOnly {
    fn try_next(&mut self, peer: PeerId, _: &Multiaddr, _: Instant) -> bool {
        self.0.is_admitted(&peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strangers_budget_is_shared_and_given_back() {
        let admission = Arc::new(Admission::default());
        let half = STRANGERS_READING_BYTES_MAX / 2;
        let a = admission.reserve(half).unwrap();
        let b = admission.reserve(half).unwrap();
        assert!(admission.reserve(1).is_none(), "the budget is spent");
        drop(a);
        assert_eq!(admission.strangers_reading(), half);
        let c = admission.reserve(half).unwrap();
        drop((b, c));
        assert_eq!(admission.strangers_reading(), 0);
        assert!(admission.reserve(u64::MAX).is_none());
    }

    #[test]
    fn the_note_of_whose_connection_it_is_is_taken_once() {
        let admission = Admission::default();
        let peer = PeerId::random();
        admission.connecting(peer);
        assert_eq!(admission.take_connecting(), Some(peer));
        assert_eq!(admission.take_connecting(), None);
    }
}
