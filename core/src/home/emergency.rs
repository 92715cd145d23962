//! The patient's choice of what their emergency summary carries beyond the defaults: a sealed
//! local setting of this device (see [`crate::emergency`]).

use super::{Home, Result};
use crate::{emergency::Choice, vault::Batch};

const EMERGENCY: &str = "emergency";

impl Home {
    /// What this device's emergency summary carries beyond the defaults.
    pub fn emergency_choice(&self) -> Result<Choice> {
        Ok(self.vault.local(EMERGENCY)?.unwrap_or_default())
    }

    /// Keeps `choice`.
    pub fn set_emergency_choice(&self, choice: &Choice) -> Result<()> {
        let mut batch = Batch::new();
        batch.local(EMERGENCY, choice);
        self.vault.commit(batch)?;
        Ok(())
    }
}

const LINKS: &str = "emergency-links";

impl Home {
    /// The emergency links this node serves for its record, newest first.
    pub fn emergency_links(&self) -> Result<Vec<crate::emergency::link::Link>> {
        let mut links: Vec<crate::emergency::link::Link> =
            self.vault.local(LINKS)?.unwrap_or_default();
        links.sort_by_key(|l| std::cmp::Reverse(l.created_ms));
        Ok(links)
    }

    fn set_emergency_links(&self, links: &[crate::emergency::link::Link]) -> Result<()> {
        let mut batch = Batch::new();
        batch.local(LINKS, &links);
        self.vault.commit(batch)?;
        Ok(())
    }

    /// Keeps a new link, refused past [`crate::emergency::link::LINKS_MAX`] links not revoked.
    pub fn add_emergency_link(&self, link: crate::emergency::link::Link) -> Result<()> {
        let mut links = self.emergency_links()?;
        // Lapsed and revoked links are kept for `phr emergency links`, but make room.
        if links.len() >= crate::emergency::link::LINKS_MAX {
            let now_ms = jiff::Timestamp::now().as_millisecond();
            links.retain(|l| !l.revoked && l.expires_ms > now_ms);
        }
        if links.len() >= crate::emergency::link::LINKS_MAX {
            return Err(super::HomeError::NothingToDo(
                crate::emergency::link::LinkError::TooMany.to_string(),
            ));
        }
        links.push(link);
        self.set_emergency_links(&links)
    }

    /// Replaces the kept link with `link`'s id by `link` (after an access changed it).
    pub fn update_emergency_link(&self, link: &crate::emergency::link::Link) -> Result<()> {
        let mut links = self.emergency_links()?;
        if let Some(kept) = links.iter_mut().find(|l| l.id == link.id) {
            *kept = link.clone();
        }
        self.set_emergency_links(&links)
    }

    /// Revokes the link whose id starts with `query` (at least 6 characters): its manifest is
    /// gone (404) from now on.
    pub fn revoke_emergency_link(&self, query: &str) -> Result<crate::emergency::link::Link> {
        let query = query.trim();
        let mut links = self.emergency_links()?;
        let matching: Vec<usize> = links
            .iter()
            .enumerate()
            .filter(|(_, l)| query.len() >= 6 && l.id.starts_with(query))
            .map(|(i, _)| i)
            .collect();
        let [one] = matching[..] else {
            return Err(super::HomeError::NothingToDo(format!(
                "no single link's id starts with '{query}' (give at least 6 characters); `phr \
                 emergency links` lists them"
            )));
        };
        links[one].revoked = true;
        let revoked = links[one].clone();
        self.set_emergency_links(&links)?;
        Ok(revoked)
    }
}

impl Home {
    /// Writes `event` (an `AuditEvent` this node made, say of an emergency access) into this
    /// home's own record, as its owner device: durably, before the caller answers anyone.
    /// Returns the record as saved, for a caller that reads it next.
    pub fn log_to_own_record(
        &mut self,
        event: &serde_json::Value,
        now: jiff::Timestamp,
    ) -> Result<crate::Record> {
        let mut record = self.load_record()?;
        let author = self.device().author();
        let stamp = crate::Stamp {
            author: &author,
            time: now,
        };
        record.put(stamp, event)?;
        record.commit(stamp, "emergency access");
        self.save(&mut record, now)?;
        Ok(record)
    }
}

const BREAK_GLASS_ALLOWED: &str = "break-glass-allowed";
const BREAK_GLASS_KEPT: &str = "break-glass-kept";

impl Home {
    /// The providers the patient named for break-glass on this node (see
    /// [`crate::emergency::break_glass`]).
    pub fn break_glass_allowed(&self) -> Result<Vec<crate::party::Party>> {
        Ok(self.vault.local(BREAK_GLASS_ALLOWED)?.unwrap_or_default())
    }

    /// Names `provider` for break-glass (or, with `allow` false, stops naming it).
    pub fn allow_break_glass(&self, provider: &crate::party::Party, allow: bool) -> Result<()> {
        let mut allowed = self.break_glass_allowed()?;
        allowed.retain(|p| p.peer != provider.peer);
        if allow {
            allowed.push(provider.clone());
        }
        let mut batch = Batch::new();
        batch.local(BREAK_GLASS_ALLOWED, &allowed);
        self.vault.commit(batch)?;
        Ok(())
    }

    /// The break-glass reads this provider's node was granted, those lapsed included.
    pub fn break_glass_kept(&self) -> Result<Vec<crate::emergency::break_glass::Kept>> {
        Ok(self.vault.local(BREAK_GLASS_KEPT)?.unwrap_or_default())
    }

    /// Keeps a granted read until it ends; reads that ended are dropped (their documents go).
    pub fn keep_break_glass(
        &self,
        kept: crate::emergency::break_glass::Kept,
        now_ms: i64,
    ) -> Result<()> {
        let mut all = self.break_glass_kept()?;
        all.retain(|k| k.readable(now_ms).is_some());
        all.push(kept);
        let mut batch = Batch::new();
        batch.local(BREAK_GLASS_KEPT, &all);
        self.vault.commit(batch)?;
        Ok(())
    }
}
