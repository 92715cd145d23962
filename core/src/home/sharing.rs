//! Changing consent from this home: grants, revocations, owner devices and relays.
//!
//! Every change is a signed ledger operation followed by [`consent::repair`], which wraps the
//! keys a new reader needs and starts new key epochs where a reader was removed; all of it is
//! committed in one durable transaction. Consent works offline and takes effect on the network
//! when the node next syncs.

use jiff::Timestamp;

use super::{Home, HomeError, Result};
use crate::{
    card::Card,
    keys::PeerId,
    ledger::{Access, GrantState, LedgerState, OpBody, RevokeTarget, SignedOp},
    party::{Party, Role},
    section::Section,
};

/// What a revocation did.
#[derive(Debug, Clone)]
pub struct Revoked {
    /// The grants that no longer give access.
    pub grants: Vec<GrantState>,
    /// The sections that got a new key epoch: nothing written there from now on can be read
    /// by the revoked party.
    pub rotated: Vec<Section>,
}

impl Home {
    /// The record's consent as it stands.
    pub fn ledger_state(&self) -> Result<&LedgerState> {
        Ok(self.held()?.replica.ledger().state())
    }

    /// Signs `body` (with the device key, or the root key when `root`), brings the keys in step
    /// and stores it all durably. Returns the operations appended, the requested one first.
    fn change_consent(
        &mut self,
        body: OpBody,
        root: bool,
        now: Timestamp,
    ) -> Result<Vec<SignedOp>> {
        let now_ms = now.as_millisecond();
        let me = self.keystore.device.peer_id();
        let signer = if root {
            self.keystore.root.as_ref().ok_or(HomeError::NoRootKey)?
        } else {
            &self.keystore.device
        };
        let held = self
            .held
            .as_mut()
            .ok_or_else(|| HomeError::NoRecord(self.dir.clone()))?;
        if !root && !held.replica.ledger().state().is_owner(&me) {
            return Err(HomeError::NotOwner);
        }
        let appended = held.replica.change_consent(
            &self.vault,
            signer,
            &self.keystore.device,
            body,
            now_ms,
        )?;
        Ok(appended)
    }

    /// Gives a contact access to sections of the record. Its keys are wrapped to the contact at
    /// once, for every epoch, so it reads the whole history of those sections.
    pub fn grant(
        &mut self,
        grantee: &Party,
        sections: &[Section],
        access: Access,
        expires: Option<Timestamp>,
        purpose: Option<String>,
        now: Timestamp,
    ) -> Result<GrantState> {
        if grantee.role == Role::Patient {
            return Err(HomeError::WrongRole(
                "that card is a patient's device; add your own devices with `phr devices add CARD`"
                    .into(),
            ));
        }
        if grantee.role == Role::Relay && access != Access::Relay {
            return Err(HomeError::WrongRole(
                "that card is a relay, which stores ciphertext only; add it with `phr relays add CARD`".into(),
            ));
        }
        let body = OpBody::Grant {
            grantee: grantee.clone(),
            sections: sections.to_vec(),
            access,
            expires_ms: expires.map(|t| t.as_millisecond()),
            purpose,
        };
        let appended = self.change_consent(body, false, now)?;
        let id = appended[0].id();
        let state = self.ledger_state()?;
        state
            .grants
            .iter()
            .find(|g| g.id == id)
            .cloned()
            .ok_or_else(|| HomeError::NothingToDo("the grant did not take effect".into()))
    }

    /// Adds a store-and-forward relay for this record: it may hold and pass on every section's
    /// ciphertext, and never receives a key.
    pub fn add_relay(&mut self, card: &Card, now: Timestamp) -> Result<GrantState> {
        if card.party.role != Role::Relay {
            return Err(HomeError::WrongRole(format!(
                "that card is a {}, not a relay; relays are started with `phr-node --relay`",
                card.party.role.as_str()
            )));
        }
        let sections: Vec<Section> = Section::ALL
            .into_iter()
            .filter(|s| *s != Section::Audit)
            .collect();
        self.grant(&card.party, &sections, Access::Relay, None, None, now)
    }

    /// Withdraws consent: `query` is a grant id (at least 6 hex digits of it) or a contact (alias,
    /// name or PeerId), whose every grant is revoked. The sections involved get new keys.
    pub fn revoke(&mut self, query: &str, now: Timestamp) -> Result<Revoked> {
        let state = self.ledger_state()?;
        let query = query.trim();
        let by_id: Vec<&GrantState> =
            if query.len() >= 6 && query.chars().all(|c| c.is_ascii_hexdigit()) {
                state
                    .grants
                    .iter()
                    .filter(|g| g.id.to_string().starts_with(&query.to_ascii_lowercase()))
                    .collect()
            } else {
                Vec::new()
            };
        let (target, grants) = match by_id.as_slice() {
            [one] => (RevokeTarget::Grant(one.id), vec![(*one).clone()]),
            [_, _, ..] => {
                return Err(HomeError::NothingToDo(format!(
                    "`{query}` matches several grants; give more digits of the grant id"
                )));
            }
            [] => {
                let peer = self.peer_for(query)?;
                let grants: Vec<GrantState> = state.grants_to(&peer).into_iter().cloned().collect();
                if grants.is_empty() {
                    return Err(HomeError::NothingToDo(format!(
                        "`{query}` has no access to revoke; see `phr share list`"
                    )));
                }
                (RevokeTarget::Party(peer), grants)
            }
        };
        let newest_epoch = |home: &Self, section: Section| -> Result<Option<u32>> {
            let keys = home.ledger_state()?.keys.get(&section);
            Ok(keys.and_then(|k| k.iter().map(|e| e.epoch).max()))
        };
        let before: Vec<Option<u32>> = Section::ALL
            .into_iter()
            .map(|s| newest_epoch(self, s))
            .collect::<Result<_>>()?;
        self.change_consent(OpBody::Revoke { target }, false, now)?;
        let mut rotated = Vec::new();
        for (section, before) in Section::ALL.into_iter().zip(before) {
            if newest_epoch(self, section)? > before {
                rotated.push(section);
            }
        }
        Ok(Revoked { grants, rotated })
    }

    /// The PeerId `query` names: a contact, or a party the ledger names (by PeerId or name).
    fn peer_for(&self, query: &str) -> Result<PeerId> {
        match self.find_contact(query) {
            Ok(contact) => Ok(contact.card.party.peer),
            Err(HomeError::UnknownContact(_)) => {
                let state = self.ledger_state()?;
                let parties = state
                    .grants
                    .iter()
                    .map(|g| &g.grantee)
                    .chain(state.owners.values());
                let matches: Vec<PeerId> = parties
                    .filter(|p| p.answers_to(query))
                    .map(|p| p.peer)
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                match matches.as_slice() {
                    [one] => Ok(*one),
                    [] => Err(HomeError::UnknownContact(query.to_string())),
                    _ => Err(HomeError::AmbiguousContact {
                        query: query.to_string(),
                        matches: format!("{} parties", matches.len()),
                    }),
                }
            }
            Err(other) => Err(other),
        }
    }

    /// Admits another of the patient's devices as an owner (needs the record root key). The new
    /// device gets every key of every section.
    pub fn add_device(&mut self, card: &Card, now: Timestamp) -> Result<Party> {
        if card.party.role != Role::Patient {
            return Err(HomeError::WrongRole(format!(
                "that card is a {}; share with providers with `phr share grant`",
                card.party.role.as_str()
            )));
        }
        if self.ledger_state()?.is_owner(&card.party.peer) {
            return Err(HomeError::NothingToDo(
                "that device is already one of this record's devices".into(),
            ));
        }
        self.change_consent(
            OpBody::AddDevice {
                device: card.party.clone(),
            },
            true,
            now,
        )?;
        Ok(card.party.clone())
    }

    /// Removes one of the patient's devices (needs the record root key). Every section gets a
    /// new key epoch the removed device never receives.
    pub fn remove_device(&mut self, query: &str, now: Timestamp) -> Result<Party> {
        let state = self.ledger_state()?;
        let matches: Vec<&Party> = state
            .owners
            .values()
            .filter(|p| p.answers_to(query))
            .collect();
        let party = match matches.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(HomeError::NothingToDo(format!(
                    "no device of this record matches `{query}`; see `phr devices list`"
                )));
            }
            _ => {
                return Err(HomeError::NothingToDo(format!(
                    "`{query}` matches several devices; use the full peer id from `phr devices list`"
                )));
            }
        };
        if party.peer == self.peer_id() {
            return Err(HomeError::NothingToDo(
                "this is the device you are using; remove it from another of your devices".into(),
            ));
        }
        self.change_consent(OpBody::RemoveDevice { device: party.peer }, true, now)?;
        Ok(party)
    }

    /// Whether this device holds the record root key.
    pub fn holds_root_key(&self) -> bool {
        self.keystore.root.is_some()
    }
}
