//! `phr card`: this node's contact card, to give to a provider, a relay or another device.

use anyhow::Result;
use qrcode::{QrCode, render::unicode};
use serde_json::json;

use phr_core::api::NodeStatus;

use crate::{
    context::{Context, now, print_out, print_raw},
    node::NodeApi,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Draw the card as a QR code in the terminal
    #[arg(long)]
    qr: bool,
    /// An address where this node can be reached, e.g. /ip4/192.0.2.7/tcp/4001 (repeatable)
    /// [default: where this home's running node listens, if one runs]
    #[arg(long = "addr", value_name = "MULTIADDR")]
    addrs: Vec<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let addrs = if args.addrs.is_empty() {
        node_addrs(ctx)?
    } else {
        args.addrs
    };
    let home = ctx.open_home()?;
    let card = home.card(addrs, now())?;
    let party = home.party();
    if ctx.json {
        return ctx.print_json(&json!({
            "card": card,
            "peer_id": party.peer.to_string(),
            "age_recipient": party.recipient.to_string(),
            "name": party.name,
            "role": party.role,
            "ods": party.ods,
        }));
    }
    if args.qr {
        let code = QrCode::new(card.as_bytes())?;
        let drawn = code
            .render::<unicode::Dense1x2>()
            .dark_color(unicode::Dense1x2::Light)
            .light_color(unicode::Dense1x2::Dark)
            .build();
        // Drawn here, no one else's text, and wrapping would break the code.
        return print_raw(&format!("{drawn}\n"));
    }
    print_out(&format!("{card}\n"))
}

/// Where this home's running node listens (without the trailing `/p2p/<peer id>`, which the
/// card carries already), or nothing if no node runs.
fn node_addrs(ctx: &Context) -> Result<Vec<String>> {
    let Some(node) = NodeApi::find(&ctx.home)? else {
        return Ok(Vec::new());
    };
    let status: NodeStatus = node.get("/status")?;
    Ok(status
        .listening
        .iter()
        .map(|addr| match addr.rsplit_once("/p2p/") {
            Some((bare, _)) => bare.to_string(),
            None => addr.clone(),
        })
        .take(phr_core::card::CARD_ADDRS_MAX)
        .collect())
}
