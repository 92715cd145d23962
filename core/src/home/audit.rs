//! The patient's audit view, on an owner device: who read or changed what, and when.

use super::{Home, HomeError, Result};
use crate::audit::{self, AuditEntry};

impl Home {
    /// Every entry of the record's audit, newest first ([`audit::entries`]): the `AuditEvent`s
    /// providers sealed to the patient's devices, the consent-ledger operations, and the writes
    /// of anyone but the patient's own devices. Only an owner device reads the audit section.
    pub fn audit(&mut self) -> Result<Vec<AuditEntry>> {
        let me = self.peer_id();
        if !self.held()?.replica.ledger().state().is_owner(&me) {
            return Err(HomeError::WrongRole(
                "only the record's owner devices read its audit, and this device is not one of \
                 them (any more); run `phr audit` on one of the patient's devices"
                    .into(),
            ));
        }
        let record = self.load_record()?;
        Ok(audit::entries(&record, self.held()?.replica.ledger())?)
    }
}
