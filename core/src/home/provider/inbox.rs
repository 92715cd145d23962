//! A practice's inbox: across every patient it has accepted, what waits for it in `requests`
//! (appointment requests, repeat orders, unread messages).
//!
//! As the patient list does ([`Home::patients_page`]), it keeps an index: per record, what
//! waits there and the store generation it was read at, so that a record is read again only
//! when it changed. Each record the inbox shows is logged to its patient as a read of
//! `requests`, every entry in one durable transaction with the index rows that changed.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::*;
use crate::{appointments, messages, repeats};

/// What kind of work waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Waiting {
    /// An appointment request to book or decline.
    Appointment,
    /// A repeat order to issue or refuse.
    Order,
    /// A message not read here.
    Message,
}

/// One thing waiting for the practice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxItem {
    /// What kind.
    pub kind: Waiting,
    /// The resource's id (an `Appointment`, a `Task` or a `Communication`).
    pub id: String,
    /// In a few words: the reason, the medicine, the message's first line.
    pub what: String,
    /// When it was asked or sent, as written.
    pub when: Option<String>,
}

/// What waits in one patient's record.
#[derive(Clone, Debug, Serialize)]
pub struct InboxEntry {
    /// The record.
    #[serde(serialize_with = "as_text")]
    pub record: RecordId,
    /// The patient's name, if this node may read `summary`.
    pub patient: Option<String>,
    /// What waits, oldest first.
    pub items: Vec<InboxItem>,
}

/// A record's row of the inbox index: what waited at `generation`. Messages are kept with
/// their signer, so that those read since (a local mark) or written here drop out without
/// reading the record again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Row {
    generation: u64,
    patient: Option<String>,
    items: Vec<InboxItem>,
    /// For each message item, its signer's key.
    signers: Vec<(String, String)>,
}

fn as_text<S: serde::Serializer>(record: &RecordId, to: S) -> std::result::Result<S::Ok, S::Error> {
    to.serialize_str(&record.to_string())
}

fn setting(record: RecordId) -> String {
    format!("inbox/{record}")
}

impl Home {
    /// What waits for this practice across the patients it accepted, those with something
    /// waiting only, ordered by their oldest item. Records changed since they were last read
    /// are read again; every record shown is logged to its patient (a read of `requests`).
    pub fn inbox(&self, now: Timestamp) -> Result<Vec<InboxEntry>> {
        let now_ms = now.as_millisecond();
        let me = self.peer_id();
        let mine = me.to_string();
        let intake = self.intake()?;
        let generations = self.vault.generations()?;
        let held: Vec<RecordId> = self
            .vault
            .records()?
            .into_iter()
            .filter(|id| Some(*id) != self.record_id() && !intake.is_pending(id))
            .collect();
        let mut batch = crate::vault::Batch::new();
        let mut rows = Vec::new();
        for id in held {
            let generation = generations.get(&id).copied().unwrap_or(0);
            let stored: Option<Row> = self.vault.local(&setting(id))?;
            let row = match stored {
                Some(row) if row.generation == generation => row,
                _ => {
                    let row = self.read_waiting(id, generation, now)?;
                    batch.local(&setting(id), &row);
                    row
                }
            };
            rows.push((id, row));
        }
        let mut out = Vec::new();
        let mut entries = Vec::new();
        let mut shown = Vec::new();
        for (id, row) in rows {
            let read = self.messages_read(id)?;
            let items: Vec<InboxItem> = row
                .items
                .iter()
                .filter(|item| {
                    item.kind != Waiting::Message
                        || (!read.contains(&item.id)
                            && row
                                .signers
                                .iter()
                                .any(|(m, signer)| *m == item.id && *signer != mine))
                })
                .cloned()
                .collect();
            if items.is_empty() {
                continue;
            }
            // Shown only if it may still read `requests`, and only once the read is logged.
            let replica = Replica::open(&self.vault, id, me, &self.keystore.age)?;
            if !replica
                .ledger()
                .state()
                .can_read(&me, Section::Requests, now_ms)
            {
                continue;
            }
            let logged = Logged::read("inbox", &[Section::Requests]);
            entries.push(self.audit_entry(&replica, &logged, now)?);
            shown.push((id, row.clone()));
            out.push(InboxEntry {
                record: id,
                patient: row.patient.clone(),
                items,
            });
        }
        // The entries change their records' generations: the rows follow, so the next inbox
        // does not read those records again for that.
        let next = self.vault.changed_since(u64::MAX)?.0 + 1;
        for entry in &entries {
            let header = entry.header();
            batch.blob(header.record, header.section, entry);
        }
        for (id, mut row) in shown {
            row.generation = next;
            batch.local(&setting(id), &row);
        }
        if !batch.is_empty() {
            self.vault.commit(batch)?;
        }
        out.sort_by(|a, b| {
            let oldest = |e: &InboxEntry| e.items.iter().filter_map(|i| i.when.clone()).min();
            (oldest(a), a.record).cmp(&(oldest(b), b.record))
        });
        Ok(out)
    }

    /// Reads what waits in `record`'s `requests` (and the repeats and name in `summary`, if
    /// this node may read it).
    fn read_waiting(&self, id: RecordId, generation: u64, now: Timestamp) -> Result<Row> {
        let me = self.peer_id();
        let now_ms = now.as_millisecond();
        let mut replica = Replica::open(&self.vault, id, me, &self.keystore.age)?;
        let state = replica.ledger().state().clone();
        let mut row = Row {
            generation,
            patient: None,
            items: Vec::new(),
            signers: Vec::new(),
        };
        if !state.can_read(&me, Section::Requests, now_ms) {
            return Ok(row);
        }
        let mut sections = vec![Section::Requests];
        if state.can_read(&me, Section::Summary, now_ms) {
            sections.push(Section::Summary);
        }
        let (record, _) = replica.materialise_sections(
            &self.vault,
            meta_of(id),
            &self.device.actor(),
            &self.keystore.age,
            &sections,
        )?;
        let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
        if let Some((_, resource)) = crate::identity::record_patient(&record)? {
            row.patient = crate::view::header_of(&resource, None, today).name;
        }
        for a in appointments::appointments(&record, &state)? {
            if matches!(a.status.as_str(), "proposed" | "pending") && !a.conflict {
                row.items.push(InboxItem {
                    kind: Waiting::Appointment,
                    what: a.reason.clone().unwrap_or_else(|| "an appointment".into()),
                    when: a.start.clone(),
                    id: a.id,
                });
            }
        }
        for repeat in repeats::repeats(&record, &state)? {
            for order in repeat.orders.iter().filter(|o| o.status == "requested") {
                row.items.push(InboxItem {
                    kind: Waiting::Order,
                    id: order.id.clone(),
                    what: repeat.medicine.clone(),
                    when: order.ordered.clone(),
                });
            }
        }
        for thread in messages::threads(&record, &state)? {
            for message in thread.messages {
                row.signers
                    .push((message.id.clone(), message.signer_id.clone()));
                row.items.push(InboxItem {
                    kind: Waiting::Message,
                    what: message
                        .text
                        .lines()
                        .next()
                        .unwrap_or("(a file)")
                        .chars()
                        .take(80)
                        .collect(),
                    when: message.sent,
                    id: message.id,
                });
            }
        }
        Ok(row)
    }
}
