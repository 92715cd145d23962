//! Lending the home to a `phr` command, and taking it back (see `phr_core::api`).

use super::*;

impl Node {
    /// Lends the home to the first command waiting, if the home is free.
    pub(super) fn grant_lease(&mut self) {
        if !matches!(self.home, Slot::Open(_)) {
            return;
        }
        let Some((pid, reply)) = self.leases.pop_front() else {
            return;
        };
        if reply.is_closed() {
            return self.grant_lease();
        }
        let Slot::Open(home) = std::mem::replace(&mut self.home, Slot::Switching) else {
            unreachable!("checked above");
        };
        let lease = self.next_lease;
        self.next_lease += 1;
        self.home = Slot::Parked {
            parked: Box::new(home.park()),
            lease,
            pid,
            since_ms: Self::now(),
            released: false,
        };
        tracing::debug!(lease, pid, "home lent to a phr command");
        if reply.send(Ok(lease)).is_err() {
            // The command went away before hearing the answer.
            self.resume();
        }
    }

    /// Takes the home back from a lease: reopens it, reads what changed, answers the messages
    /// that waited and offers the changes to connected peers.
    pub(super) fn resume(&mut self) {
        let Slot::Parked {
            parked,
            lease,
            pid,
            since_ms,
            released,
        } = std::mem::replace(&mut self.home, Slot::Switching)
        else {
            return;
        };
        let mut parked = parked;
        let ledgers = self.engine.ledger_changes();
        match parked.reopen() {
            Ok(home) => {
                let (vault, age) = home.sync_parts();
                match self.engine.refresh(vault, age) {
                    Ok(reopened) => tracing::debug!(reopened, "records a phr command changed"),
                    Err(error) => {
                        tracing::error!(%error, "cannot read the records a phr command changed")
                    }
                }
                match home.intake() {
                    Ok(intake) => self.engine.set_intake(intake),
                    Err(error) => {
                        tracing::error!(%error, "cannot read which records this node accepted")
                    }
                }
                for warning in home.warnings() {
                    tracing::warn!(%warning, "reopening the home");
                }
                self.home = Slot::Open(Box::new(home));
                // A `phr slots` command may have changed the schedule.
                self.load_schedule();
                tracing::debug!(lease, "home back from a phr command");
            }
            Err(error) => {
                tracing::warn!(%error, "cannot reopen the home yet; trying again");
                self.home = Slot::Parked {
                    parked,
                    lease,
                    pid,
                    since_ms,
                    released,
                };
                return;
            }
        }
        self.learn_from_home();
        self.update_gate();
        self.queued_bytes = 0;
        for queued in std::mem::take(&mut self.queue) {
            match queued {
                Queued::Request {
                    peer,
                    bytes,
                    channel,
                } => self.on_request(peer, bytes, channel),
                Queued::Response { peer, bytes } => self.on_response(peer, bytes),
            }
        }
        for command in std::mem::take(&mut self.deferred) {
            self.on_command(command);
        }
        // What the command changed goes to the peers its records admit; if it changed who is
        // admitted (a grant, a patient accepted), everything goes to every connected peer.
        if self.engine.ledger_changes() == ledgers {
            self.offer_changed();
        } else {
            self.offer_all();
        }
    }
}
