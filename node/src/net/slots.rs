//! Free slots asked for live ([`crate::swarm::SLOTS_PROTOCOL`]; see
//! [`phr_core::appointments`]).
//!
//! A practice's node answers from its schedule, kept in memory and read again from the home
//! whenever a `phr` command gives it back (so it answers while a command holds the home). It
//! answers only the owner devices of a record it holds that grants it access now; anyone else
//! is refused (a record that waits for a person to accept it too), and counted against the
//! flood window like any request. A patient's node asks only a practice that one of its
//! records admits.

use libp2p::request_response::{Event, Message, OutboundRequestId};
use phr_core::appointments::{self, OfferedSlot, Slot, SlotsAnswer, SlotsQuery};

use super::*;

/// What the node keeps for the slots protocol.
#[derive(Debug, Default)]
pub(super) struct Slots {
    /// This node's schedule, as last read from the home.
    schedule: Vec<Slot>,
    /// Questions asked of practices' nodes, and who waits for each answer.
    asked: BTreeMap<OutboundRequestId, Reply<Result<Vec<OfferedSlot>, String>>>,
}

impl Node {
    /// Reads the schedule from the home, if it is open.
    pub(super) fn load_schedule(&mut self) {
        let Some(home) = self.open_home() else {
            return;
        };
        match home.schedule() {
            Ok(schedule) => self.slots.schedule = schedule,
            Err(error) => tracing::warn!(%error, "cannot read this node's schedule"),
        }
    }

    /// Asks `provider` for its free slots (`phr appointments slots`).
    pub(super) fn ask_slots(
        &mut self,
        peer: PeerId,
        query: SlotsQuery,
        reply: Reply<Result<Vec<OfferedSlot>, String>>,
    ) {
        let provider = to_libp2p(&peer);
        if !self.engine.admits(&peer, Self::now()) {
            let _ = reply.send(Err(format!(
                "no record on this node shares anything with {provider}; only a practice you \
                 share your record with can be asked for appointments"
            )));
            return;
        }
        if !self.swarm.is_connected(&provider)
            && let Err(error) = self.redial(provider)
        {
            tracing::debug!(peer = %provider, %error, "cannot dial to ask for slots");
        }
        let id = self
            .swarm
            .behaviour_mut()
            .slots
            .send_request(&provider, query);
        self.slots.asked.insert(id, reply);
    }

    pub(super) fn on_slots_event(&mut self, event: Event<SlotsQuery, SlotsAnswer>) {
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                if self.flooding(peer) {
                    return;
                }
                let answer = if self.may_ask_slots(&peer) {
                    appointments::answer(&self.slots.schedule, &request, Self::now())
                } else {
                    tracing::info!(%peer, "refused a slot query from a peer that is no patient here");
                    SlotsAnswer::Refused(
                        "this node answers only the devices of patients who share their record \
                         with it"
                            .into(),
                    )
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .slots
                    .send_response(channel, answer);
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.slots.asked.remove(&request_id) {
                    let _ = reply.send(match response {
                        SlotsAnswer::Free(mut slots) => {
                            // Whatever it sent, the caller sees a bounded list of slots a
                            // request can name: a FHIR id, a start before the end, a service
                            // within bounds.
                            slots.truncate(appointments::SLOTS_ANSWER_MAX);
                            slots.retain(appointments::is_offerable);
                            Ok(slots)
                        }
                        SlotsAnswer::Refused(why) => Err(format!(
                            "the practice's node {peer} refused: {}",
                            phr_core::screen::visible(&why)
                        )),
                    });
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.slots.asked.remove(&request_id) {
                    let _ = reply.send(Err(format!(
                        "cannot ask {peer} for its free slots: {error}. Check that the \
                         practice's node is running and reachable (`phr peers`)"
                    )));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "a slot query failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    /// Whether `peer` is an owner device of a record this node holds, a person here accepted,
    /// and that grants this node access now. Anyone can make a record that names a practice;
    /// one nobody accepted asks nothing.
    fn may_ask_slots(&self, peer: &libp2p::PeerId) -> bool {
        let Some(peer) = from_libp2p(peer) else {
            return false;
        };
        let now_ms = Self::now();
        self.engine.admits(&peer, now_ms)
            && self.engine.replicas().iter().any(|(id, replica)| {
                if self.engine.is_pending(id) {
                    return false;
                }
                let state = replica.ledger().state();
                state.is_owner(&peer)
                    && state
                        .grants_to(&self.me)
                        .iter()
                        .any(|grant| grant.unexpired(now_ms))
            })
    }
}
