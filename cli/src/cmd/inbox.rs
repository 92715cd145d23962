//! `phr inbox`: on a practice's node, what waits for it across its patients: appointment
//! requests, repeat orders and unread messages (see `phr_core::home::Home::inbox`).

use anyhow::Result;
use phr_core::home::{InboxEntry, Waiting};

use crate::{
    context::{Context, now, print_out},
    exit::UserError,
};

pub fn run(ctx: &Context) -> Result<()> {
    let home = ctx.open_home()?;
    if home.record_id().is_some() {
        return Err(UserError(
            "the inbox is a practice's, on its node; on your own record, `phr messages`, `phr \
             appointments` and `phr repeats` show where each thing stands"
                .into(),
        )
        .into());
    }
    let inbox = home.inbox(now())?;
    if ctx.json {
        return ctx.print_json(&inbox);
    }
    if inbox.is_empty() {
        return print_out(
            "Nothing waits: no appointment requests, repeat orders or unread messages.\n",
        );
    }
    print_out(&render(&inbox))
}

fn render(inbox: &[InboxEntry]) -> String {
    let mut out = String::new();
    for entry in inbox {
        let record = entry.record.to_string();
        let short = &record[..12];
        out.push_str(&format!(
            "{} ({short})\n",
            entry.patient.as_deref().unwrap_or("a patient")
        ));
        for item in &entry.items {
            let id = &item.id[..item.id.len().min(8)];
            let (what, then) = match item.kind {
                Waiting::Appointment => (
                    format!("appointment request: {}", item.what),
                    format!("phr --patient {short} appointments book {id}"),
                ),
                Waiting::Order => (
                    format!("repeat order: {}", item.what),
                    format!("phr --patient {short} repeats issue {id}"),
                ),
                Waiting::Message => (
                    format!("message: \"{}\"", item.what),
                    format!("phr --patient {short} messages show {id}"),
                ),
            };
            out.push_str(&format!("  {what}\n    {then}\n"));
        }
    }
    out
}
