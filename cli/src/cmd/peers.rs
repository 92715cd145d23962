//! `phr peers` and `phr peers add MULTIADDR`: the peers the running node knows, and dialling one.

use anyhow::Result;
use phr_core::api::{AddPeer, NodeStatus, PeerAdded, PeerStatus};
use serde_json::json;

use crate::{
    context::{Context, print_out},
    node::NodeApi,
};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Dial a peer at MULTIADDR (ending in `/p2p/<peer id>`) and remember the address
    Add {
        /// e.g. /ip4/192.0.2.7/tcp/4001/p2p/12D3KooW...
        multiaddr: String,
    },
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let node = NodeApi::require(&ctx.home)?;
    match args.command {
        None => list(ctx, &node),
        Some(Command::Add { multiaddr }) => add(ctx, &node, multiaddr),
    }
}

fn list(ctx: &Context, node: &NodeApi) -> Result<()> {
    let status: NodeStatus = node.get("/status")?;
    if ctx.json {
        return ctx.print_json(&status.peers);
    }
    if status.peers.is_empty() {
        return print_out(
            "No peers known yet. Dial one with `phr peers add MULTIADDR`, or share the record \
             with someone whose card has an address.\n",
        );
    }
    let mut out = String::new();
    for peer in &status.peers {
        out += &describe(peer);
    }
    print_out(&out)
}

fn describe(peer: &PeerStatus) -> String {
    let name = peer.name.as_deref().unwrap_or("(unknown)");
    let mut out = format!(
        "{name}  {}  {}\n",
        peer.peer,
        if peer.connected {
            "connected"
        } else {
            "not connected"
        }
    );
    if !peer.records.is_empty() {
        out += &format!("  shares: {}\n", peer.records.join(", "));
    }
    for withdrawn in &peer.withdrawn {
        let what = match withdrawn.how.as_str() {
            "removed" => "removed from the devices of",
            _ => "access revoked by",
        };
        out += &format!(
            "  {what} record {}: it is sent only the news of that, nothing else\n",
            withdrawn.record
        );
    }
    if let Some(at) = &peer.last_sync {
        out += &format!("  last in sync: {at}\n");
    }
    if let Some(error) = &peer.last_error {
        out += &format!("  last problem: {error}\n");
    }
    for addr in &peer.addrs {
        out += &format!("  at {addr}\n");
    }
    out
}

fn add(ctx: &Context, node: &NodeApi, addr: String) -> Result<()> {
    let added: PeerAdded = node.post("/peers", &AddPeer { addr: addr.clone() })?;
    if ctx.json {
        return ctx.print_json(&json!({ "peer": added.peer, "addr": addr }));
    }
    print_out(&format!(
        "Connected to {}; the node will dial {addr} again whenever it is out of reach.\n",
        added.peer
    ))
}
