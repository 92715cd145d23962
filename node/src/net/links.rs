//! Emergency links served by this node (see `phr_core::emergency::link` and
//! [`crate::emergency`]): every manifest request is answered from the home's kept links, and
//! logged to the patient's own record, durably, before the answer goes out. While a `phr`
//! command holds the home, a request waits for it (as every command that needs the home does).

use phr_core::emergency::{
    self, break_glass,
    link::{self, Answer, ManifestRequest},
};

use phr_core::home::HomeError;

use super::*;

/// The most requests for one link, or break-glass requests from one provider, that the node
/// logs to the patient's record in an hour. Past it, requests are refused (429) with nothing
/// given and nothing logged, so a leaked or revoked link, or a fake provider, cannot fill the
/// patient's audit or keep the node writing.
pub const ACCESSES_LOGGED_PER_KEY_PER_HOUR: u32 = 20;
/// The most such requests logged in an hour in all.
pub const ACCESSES_LOGGED_PER_HOUR: u32 = 200;
/// What a refused break-glass request answers when the hour's budget is spent.
pub const TOO_MANY: &str = "too many requests this hour; try again later";

const HOUR_MS: i64 = 3_600_000;

/// How many requests were logged in the current hour, in all and per link or provider.
#[derive(Debug, Default)]
pub(super) struct LogBudget {
    window_ms: i64,
    total: u32,
    per_key: BTreeMap<String, u32>,
}

impl LogBudget {
    /// Takes one from the budget for `key` at `now_ms`; `false` if spent.
    fn take(&mut self, key: &str, now_ms: i64) -> bool {
        if now_ms - self.window_ms >= HOUR_MS {
            self.window_ms = now_ms;
            self.total = 0;
            self.per_key.clear();
        }
        let used = self.per_key.get(key).copied().unwrap_or(0);
        if self.total >= ACCESSES_LOGGED_PER_HOUR || used >= ACCESSES_LOGGED_PER_KEY_PER_HOUR {
            return false;
        }
        self.total += 1;
        self.per_key.insert(key.to_string(), used + 1);
        true
    }
}

impl Node {
    /// Answers a manifest request for link `id` from `address`.
    pub(super) fn on_link_manifest(
        &mut self,
        id: String,
        request: ManifestRequest,
        address: String,
        reply: Reply<Result<Answer, String>>,
    ) {
        let Slot::Open(home) = &mut self.home else {
            let _ = reply.send(Err("the home is not open".into()));
            return;
        };
        let budget = &mut self.log_budget;
        let now = jiff::Timestamp::now();
        let answered = (|| -> Result<Answer, HomeError> {
            let Some(mut kept) = home.emergency_links()?.into_iter().find(|l| l.id == id) else {
                // Nothing to log against: an id nobody was given.
                return Ok(Answer::NotFound);
            };
            let Some(record) = home.record_id() else {
                return Ok(Answer::NotFound);
            };
            if !budget.take(&kept.id, now.as_millisecond()) {
                return Ok(Answer::TooMany);
            }
            let before = kept.clone();
            let answer = link::answer(&mut kept, &request, now.as_millisecond());
            // The access reaches the patient's audit first; if it cannot, nothing is given.
            let access = link::Access {
                recipient: &request.recipient,
                address: &address,
                outcome: &answer,
                at: now,
            };
            let event =
                link::access_event(&phr_core::new_id(), &kept, access, &home.party(), record);
            home.log_to_own_record(&event, now)?;
            if kept != before {
                home.update_emergency_link(&kept)?;
            }
            Ok(answer)
        })();
        let answered = answered.map_err(|error| {
            tracing::error!(%error, "cannot answer or log an emergency link request");
            format!("the access could not be logged, so nothing was given: {error}")
        });
        self.after_logging();
        let _ = reply.send(answered);
    }
}

impl Node {
    /// Answers a break-glass request from `address` (see
    /// `phr_core::emergency::break_glass`): checked against the providers the patient named on
    /// this node, logged to the record first, granted or not, within the hour's budget.
    pub(super) fn on_break_glass(
        &mut self,
        request: break_glass::Request,
        url: String,
        address: String,
        reply: Reply<Result<Result<break_glass::Granted, String>, String>>,
    ) {
        let Slot::Open(home) = &mut self.home else {
            let _ = reply.send(Err("the home is not open".into()));
            return;
        };
        let budget = &mut self.log_budget;
        let now = jiff::Timestamp::now();
        let answered = (|| -> Result<Result<break_glass::Granted, String>, HomeError> {
            let Some(record_id) = home.record_id() else {
                return Ok(Err("this node serves no record".into()));
            };
            let allowed: Vec<_> = home.break_glass_allowed()?.iter().map(|p| p.peer).collect();
            let checked = break_glass::check(&request, &url, &allowed, now.as_millisecond());
            let (provider, outcome) = match &checked {
                Ok(party) => (Some(party), Ok(())),
                Err((why, party)) => (party.as_deref(), Err(why)),
            };
            // A request whose card does not verify names nobody: it is refused unlogged, as a
            // stranger's noise. Every other is logged, granted or not, while the provider's
            // budget for the hour lasts; past it, nothing is given or logged.
            let Some(provider) = provider else {
                return Ok(Err(checked
                    .err()
                    .map_or_else(String::new, |(why, _)| why.to_string())));
            };
            if !budget.take(&provider.peer.to_string(), now.as_millisecond()) {
                return Ok(Err(TOO_MANY.into()));
            }
            let event = break_glass::event(
                &phr_core::new_id(),
                Some(provider),
                &request,
                outcome,
                (&address, now),
                &home.party(),
                record_id,
            );
            // The record as the log entry left it: the summary is read from it.
            let record = home.log_to_own_record(&event, now)?;
            let party = match checked {
                Ok(party) => party,
                Err((why, _)) => return Ok(Err(why.to_string())),
            };
            let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
            let summary = emergency::gather(&record, &home.emergency_choice()?, today)?;
            let document = emergency::document(&summary, now);
            Ok(Ok(break_glass::grant(
                &document,
                &party,
                now.as_millisecond(),
            )))
        })();
        let answered = answered.map_err(|error| {
            tracing::error!(%error, "cannot answer or log a break-glass request");
            format!("the request could not be logged, so nothing was given: {error}")
        });
        self.after_logging();
        let _ = reply.send(answered);
    }

    /// After this node wrote to its own record (an access logged): the engine reads the record
    /// again and the change is offered to connected peers, as after a `phr` command.
    fn after_logging(&mut self) {
        if let Slot::Open(home) = &self.home {
            let (vault, age) = home.sync_parts();
            if let Err(error) = self.engine.refresh(vault, age) {
                tracing::error!(%error, "cannot read the record after logging an access");
            }
        }
        self.offer_changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_per_key_and_in_all_and_comes_back_after_the_hour() {
        let mut budget = LogBudget::default();
        let at = 10 * HOUR_MS;
        for _ in 0..ACCESSES_LOGGED_PER_KEY_PER_HOUR {
            assert!(budget.take("link", at));
        }
        assert!(!budget.take("link", at), "spent for this key");
        assert!(budget.take("another", at), "not for another");
        assert!(budget.take("link", at + HOUR_MS), "back after the hour");
        let mut budget = LogBudget::default();
        for i in 0..ACCESSES_LOGGED_PER_HOUR {
            assert!(budget.take(&format!("key{i}"), at));
        }
        assert!(!budget.take("fresh", at), "spent in all");
    }
}
