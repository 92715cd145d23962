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
