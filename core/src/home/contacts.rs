//! Contacts: the cards of providers, relays and devices this node has been given.
//!
//! They are kept in the vault sealed to this node (a list of one's GP, pharmacy and clinics is
//! itself sensitive), as the cards' own text, so their signatures can be checked again.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Home, HomeError, Result};
use crate::{card::Card, keys::PeerId};

/// How many contacts a node keeps.
pub const CONTACTS_MAX: usize = 4096;

/// A remembered contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// The card, as verified.
    pub card: Card,
    /// The name this node's user gave it, if any.
    pub alias: Option<String>,
}

impl Contact {
    /// The alias, or else the card's display name.
    pub fn display_name(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.card.party.name)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    card: String,
    alias: Option<String>,
    added_ms: i64,
}

impl Home {
    fn stored_contacts(&self) -> Result<Vec<Stored>> {
        Ok(self.vault.local("contacts")?.unwrap_or_default())
    }

    /// Every contact, in the order they were added. A stored card that no longer verifies is
    /// reported in [`Home::warnings`]-style text through the error, never silently used.
    pub fn contacts(&self) -> Result<Vec<Contact>> {
        self.stored_contacts()?
            .into_iter()
            .map(|stored| {
                Ok(Contact {
                    card: Card::parse(&stored.card)?,
                    alias: stored.alias,
                })
            })
            .collect()
    }

    /// Verifies a card and remembers it (replacing an older card of the same node).
    pub fn add_contact(
        &mut self,
        text: &str,
        alias: Option<String>,
        now: Timestamp,
    ) -> Result<Contact> {
        let card = Card::parse(text)?;
        if card.party.peer == self.peer_id() {
            return Err(HomeError::NothingToDo(
                "that is this node's own card; add the card of another node".into(),
            ));
        }
        let mut stored = self.stored_contacts()?;
        // Each stored card's PeerId, parsed once (a card that no longer parses matches nothing).
        let peers: Vec<Option<PeerId>> = stored
            .iter()
            .map(|s| Card::parse(&s.card).ok().map(|c| c.party.peer))
            .collect();
        let new = Some(card.party.peer);
        if let Some(alias) = &alias {
            let taken = stored
                .iter()
                .zip(&peers)
                .any(|(s, peer)| s.alias.as_deref() == Some(alias.as_str()) && *peer != new);
            if taken {
                return Err(HomeError::NothingToDo(format!(
                    "the alias `{alias}` is already used by another contact; choose another"
                )));
            }
        }
        let alias = match peers.iter().position(|peer| *peer == new) {
            Some(index) => {
                let old = stored.remove(index);
                alias.or(old.alias)
            }
            None => alias,
        };
        if stored.len() >= CONTACTS_MAX {
            return Err(HomeError::NothingToDo(format!(
                "this node already keeps {CONTACTS_MAX} contacts; that is the most it keeps"
            )));
        }
        stored.push(Stored {
            card: text.trim().to_string(),
            alias: alias.clone(),
            added_ms: now.as_millisecond(),
        });
        let mut batch = crate::vault::Batch::new();
        batch.local("contacts", &stored);
        self.vault.commit(batch)?;
        Ok(Contact { card, alias })
    }

    /// The one contact that `query` names: its alias, its PeerId (or at least 8 characters of
    /// it after `12D3KooW`), or its display name (ignoring case).
    pub fn find_contact(&self, query: &str) -> Result<Contact> {
        let contacts = self.contacts()?;
        let query = query.trim();
        if let Ok(peer) = query.parse::<PeerId>() {
            return contacts
                .into_iter()
                .find(|c| c.card.party.peer == peer)
                .ok_or_else(|| HomeError::UnknownContact(query.to_string()));
        }
        let by_alias: Vec<&Contact> = contacts
            .iter()
            .filter(|c| c.alias.as_deref() == Some(query))
            .collect();
        if let [one] = by_alias.as_slice() {
            return Ok((*one).clone());
        }
        let matches: Vec<&Contact> = contacts
            .iter()
            .filter(|c| c.card.party.answers_to(query))
            .collect();
        match matches.as_slice() {
            [] => Err(HomeError::UnknownContact(query.to_string())),
            [one] => Ok((*one).clone()),
            many => Err(HomeError::AmbiguousContact {
                query: query.to_string(),
                matches: many
                    .iter()
                    .map(|c| format!("{} {}", c.display_name(), c.card.party.peer.short()))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}
