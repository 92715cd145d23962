//! A practice's free times: its schedule of slots, a sealed local setting of its node, never
//! in a patient's record (see [`crate::appointments`]).

use jiff::Timestamp;

use super::{Home, HomeError, Result};
use crate::{
    appointments::{self, Slot},
    vault::Batch,
};

const SCHEDULE: &str = "schedule";

/// What booking a slot found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Booking {
    /// The slot is now this appointment's.
    Booked,
    /// It already was (booking again changes nothing).
    AlreadyThis,
    /// Another appointment holds it: (record, appointment).
    Taken(String, String),
}

impl Home {
    /// The schedule: every slot kept, earliest first.
    pub fn schedule(&self) -> Result<Vec<Slot>> {
        Ok(self.vault.local(SCHEDULE)?.unwrap_or_default())
    }

    fn set_schedule(&self, schedule: &[Slot]) -> Result<()> {
        let mut batch = Batch::new();
        batch.local(SCHEDULE, &schedule);
        self.vault.commit(batch)?;
        Ok(())
    }

    /// Adds `slots` (made by [`appointments::make_slots`]) to the schedule.
    pub fn add_slots(&self, slots: Vec<Slot>, now: Timestamp) -> Result<()> {
        let schedule = appointments::add_to_schedule(&self.schedule()?, slots, now)
            .map_err(|e| HomeError::NothingToDo(e.to_string()))?;
        self.set_schedule(&schedule)
    }

    /// Removes the free slot whose id is `query` or starts with it; a booked slot is refused
    /// (cancel its appointment first).
    pub fn remove_slot(&self, query: &str) -> Result<Slot> {
        let mut schedule = self.schedule()?;
        let index = one_slot(&schedule, query)?;
        if let Some((record, appointment)) = &schedule[index].booked {
            return Err(HomeError::NothingToDo(format!(
                "slot {} is booked (appointment {appointment} of record {record}); cancel the \
                 appointment first",
                schedule[index].id
            )));
        }
        let removed = schedule.remove(index);
        self.set_schedule(&schedule)?;
        Ok(removed)
    }

    /// Books slot `id` for `appointment` of `record`, if it is free.
    pub fn book_slot(&self, id: &str, record: &str, appointment: &str) -> Result<Booking> {
        let mut schedule = self.schedule()?;
        let Some(slot) = schedule.iter_mut().find(|s| s.id == id) else {
            return Err(HomeError::NothingToDo(format!(
                "slot {id} is not in this node's schedule (removed, or never offered here); \
                 decline the request with a reason"
            )));
        };
        match &slot.booked {
            Some((r, a)) if r == record && a == appointment => return Ok(Booking::AlreadyThis),
            Some((r, a)) => return Ok(Booking::Taken(r.clone(), a.clone())),
            None => {}
        }
        slot.booked = Some((record.to_string(), appointment.to_string()));
        self.set_schedule(&schedule)?;
        Ok(Booking::Booked)
    }

    /// Frees slot `id` if `appointment` of `record` holds it; returns whether it did.
    pub fn free_slot(&self, id: &str, record: &str, appointment: &str) -> Result<bool> {
        let mut schedule = self.schedule()?;
        let Some(slot) = schedule.iter_mut().find(|s| {
            s.id == id
                && s.booked
                    .as_ref()
                    .is_some_and(|(r, a)| r == record && a == appointment)
        }) else {
            return Ok(false);
        };
        slot.booked = None;
        self.set_schedule(&schedule)?;
        Ok(true)
    }
}

fn one_slot(schedule: &[Slot], query: &str) -> Result<usize> {
    let query = query.trim();
    let matches: Vec<usize> = schedule
        .iter()
        .enumerate()
        .filter(|(_, s)| !query.is_empty() && s.id.starts_with(query))
        .map(|(i, _)| i)
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(HomeError::NothingToDo(format!(
            "no slot's id starts with '{query}'; `phr slots` lists them"
        ))),
        _ => Err(HomeError::NothingToDo(format!(
            "'{query}' starts several slots' ids; type more of it"
        ))),
    }
}
