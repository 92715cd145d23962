//! `phr status`: this node, its records, unsynced blobs, conflicts and peers.

use anyhow::Result;
use phr_core::api::NodeStatus;
use serde_json::json;

use crate::{
    cmd::node::describe,
    context::{Context, print_out},
    node::NodeApi,
};

pub fn run(ctx: &Context) -> Result<()> {
    let mut home = ctx.open_home()?;
    let device = home.device().clone();
    let record = home.record_id();
    let joining = home.joining();
    let conflicts = match record {
        Some(_) => Some(home.load_record()?.conflicts()?.len()),
        None => None,
    };
    drop(home);
    let node: Option<NodeStatus> = match NodeApi::find(&ctx.home)? {
        Some(api) => Some(api.get("/status")?),
        None => None,
    };
    if ctx.json {
        return ctx.print_json(&json!({
            "peer": device.id,
            "name": device.name,
            "role": device.role,
            "record": record.map(|r| r.to_string()),
            "joining": joining.map(|r| r.to_string()),
            "conflicts": conflicts,
            "node": node,
        }));
    }
    let mut out = format!(
        "{} ({}), peer id {}\n",
        device.name,
        device.role.as_str(),
        device.id
    );
    match (record, conflicts) {
        (Some(record), Some(conflicts)) => {
            out += &format!("Record {record}: ");
            out += &match conflicts {
                0 => "no conflicts.\n".to_string(),
                n => format!("{n} resource(s) with concurrent versions: see `phr conflicts`.\n"),
            };
        }
        _ => match joining {
            Some(join) => {
                out += &format!(
                    "Joining record {join}: it arrives at the next sync once your first device \
                     has run `phr devices add` with this device's card (`phr card`).\n"
                )
            }
            None => out += "No record of its own (`phr patients` lists those shared with it).\n",
        },
    }
    match node {
        Some(status) => out += &describe(&status),
        None => out += "No node is running: records sync when one runs (`phr node start`).\n",
    }
    print_out(&out)
}
