//! Withdrawal is final: which blobs are void once an owner closed a party's writing, and which
//! parties an owner device must close. The ledger rule is docs/FORMAT.md, "Validity rules" 7.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    blob::Blob,
    keys::{OpId, PeerId},
    ledger::{Access, CloseState, Ledger, OpBody},
    section::Section,
};

/// Whether a blob is void because its author's write access to its section ended before it:
/// a `Close` of the author covers the section, no `Close` of the author accepts the blob, and
/// no grant (or, for a device, re-admission) that follows that close and that the blob's ledger
/// heads know of lets the author write there again. A void blob changes nothing an honest node
/// shows: owner devices hold it for the patient to accept or discard, other nodes drop it.
///
/// Judged by the set of operations held, so nodes that hold the same ledger agree; the blob's
/// own heads only ever lift a close, never impose one, so a back-dated blob gains nothing.
pub fn withdrawn(blob: &Blob, ledger: &Ledger) -> bool {
    let header = blob.header();
    let state = ledger.state();
    let Some(closes) = state.closes.get(&header.author) else {
        return false;
    };
    if closes
        .iter()
        .any(|close| close.accepted.contains(&blob.id()))
    {
        return false;
    }
    let mut covering = closes
        .iter()
        .filter(|close| close.sections.contains(&header.section))
        .peekable();
    if covering.peek().is_none() {
        return false;
    }
    let known = ledger.past_of(&header.ledger_heads);
    covering.any(|close| {
        !reopened_after(ledger, &header.author, header.section, close, |id| {
            known.contains(id)
        })
    })
}

/// Whether a valid operation that `within` accepts, and that follows `close`, lets `party`
/// write `section` again: a grant to it covering the section, or its re-admission as a device.
fn reopened_after(
    ledger: &Ledger,
    party: &PeerId,
    section: Section,
    close: &CloseState,
    within: impl Fn(&OpId) -> bool,
) -> bool {
    let state = ledger.state();
    ledger
        .ops()
        .filter(|op| state.valid.contains(&op.id()) && within(&op.id()))
        .filter(|op| match &op.op().body {
            OpBody::Grant {
                grantee,
                sections,
                access,
                ..
            } => grantee.peer == *party && grant_writes(sections, *access, section),
            OpBody::AddDevice { device } => device.peer == *party,
            _ => false,
        })
        .any(|op| ledger.past_of(&op.op().parents).contains(&close.id))
}

/// Whether a grant of `sections` with `access` lets its grantee write `section` (appending to
/// `audit` comes with any read or write grant).
fn grant_writes(sections: &[Section], access: Access, section: Section) -> bool {
    match section {
        Section::Audit => matches!(access, Access::Read | Access::Write),
        _ => access == Access::Write && sections.contains(&section),
    }
}

/// The parties whose write access ended without a `Close` pinning it yet, with the sections to
/// close: a party that could once write a section (under any grant, or as a device) and cannot
/// now, unless a close of that section is already in force (no later grant reopened it). An
/// owner device writes these closes (`close_withdrawn` in `replica/write.rs`).
pub fn closes_needed(ledger: &Ledger, now_ms: i64) -> BTreeMap<PeerId, Vec<Section>> {
    let state = ledger.state();
    let mut could: BTreeMap<PeerId, BTreeSet<Section>> = BTreeMap::new();
    for grant in state.grants.iter().chain(&state.revoked) {
        for section in Section::ALL {
            if grant_writes(&grant.sections, grant.access, section) {
                could.entry(grant.grantee.peer).or_default().insert(section);
            }
        }
    }
    for device in &state.removed_devices {
        could.entry(*device).or_default().extend(Section::ALL);
    }
    let mut needed = BTreeMap::new();
    for (party, sections) in could {
        if state.is_owner(&party) {
            continue;
        }
        let closes = state.closes.get(&party).map(Vec::as_slice).unwrap_or(&[]);
        let open: Vec<Section> = sections
            .into_iter()
            .filter(|section| !state.can_write(&party, *section, now_ms))
            .filter(|section| {
                !closes.iter().any(|close| {
                    close.sections.contains(section)
                        && !reopened_after(ledger, &party, *section, close, |_| true)
                })
            })
            .collect();
        if !open.is_empty() {
            needed.insert(party, open);
        }
    }
    needed
}

/// The parties whose changes in `section` are judged one by one, with the change heads the
/// owners accepted of each there: a party with a `Close` covering the section that no later
/// grant reopened, and with at least one `Pin` (ledgers written before pins were judge blobs
/// alone). A change of such a party that did not come in a blob of its own that the ledger
/// accepts, and that lies in the past of none of these heads, is void wherever it is found:
/// inside an owner's compaction that folded it in before the withdrawal reached that owner.
pub fn change_pins(
    ledger: &Ledger,
    section: Section,
) -> BTreeMap<PeerId, BTreeSet<automerge::ChangeHash>> {
    let state = ledger.state();
    let mut out = BTreeMap::new();
    for (party, pins) in &state.pins {
        let Some(closes) = state.closes.get(party) else {
            continue;
        };
        let closed = closes.iter().any(|close| {
            close.sections.contains(&section)
                && !reopened_after(ledger, party, section, close, |_| true)
        });
        if !closed {
            continue;
        }
        let heads = pins
            .get(&section)
            .map(|heads| heads.iter().map(|h| automerge::ChangeHash(*h)).collect())
            .unwrap_or_default();
        out.insert(*party, heads);
    }
    out
}
