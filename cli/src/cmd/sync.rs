//! `phr sync [--wait]`: sync now with every peer the records admit.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use phr_core::api::{PeerSync, SyncProgress, SyncStarted};
use serde_json::json;

use crate::{
    context::{Context, print_out},
    exit::UserError,
    node::NodeApi,
};

/// How long `--wait` waits at most (the node gives up on silent peers sooner).
const WAIT_MAX: Duration = Duration::from_secs(120);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Return when every reachable admitted peer is in sync, or say which is not
    #[arg(long)]
    wait: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let node = NodeApi::require(&ctx.home)?;
    let started: SyncStarted = node.post("/sync", &json!({}))?;
    let route = format!("/sync/{}", started.id);
    let mut progress: SyncProgress = node.get(&route)?;
    if !args.wait {
        if ctx.json {
            return ctx.print_json(&json!({ "id": started.id, "progress": progress }));
        }
        return print_out(&format!(
            "Syncing with {} peer(s) in the background; `phr sync --wait` waits for them, \
             `phr peers` shows them.\n",
            progress.peers.len()
        ));
    }
    let bar = if !ctx.json && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(progress.peers.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} syncing [{bar:30}] {pos}/{len} peers {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let deadline = Instant::now() + WAIT_MAX;
    while !progress.done && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        progress = node.get(&route)?;
        let finished = progress.peers.iter().filter(|p| finished(p)).count();
        let bytes: usize = progress
            .peers
            .iter()
            .map(|p| p.bytes_sent + p.bytes_received)
            .sum();
        bar.set_position(finished as u64);
        bar.set_message(format!("{} KiB", bytes / 1024));
        bar.tick();
    }
    bar.finish_and_clear();
    let failed: Vec<&PeerSync> = progress
        .peers
        .iter()
        .filter(|p| p.state == "failed" || !finished(p))
        .collect();
    let in_sync = progress
        .peers
        .iter()
        .filter(|p| p.state == "in-sync")
        .count();
    if ctx.json {
        ctx.print_json(&progress)?;
    } else {
        let mut out = String::new();
        if progress.peers.is_empty() {
            out += "No peer shares a record with this node yet.\n";
        }
        for p in &progress.peers {
            let name = p.name.as_deref().unwrap_or("(unknown)");
            out += &match p.state.as_str() {
                "in-sync" => format!(
                    "in sync with {name} ({}): sent {}, stored {} new\n",
                    short(&p.peer),
                    p.sent,
                    p.stored
                ),
                state => format!(
                    "{state}: {name} ({}){}\n",
                    short(&p.peer),
                    p.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            };
        }
        print_out(&out)?;
    }
    if !failed.is_empty() {
        let names: Vec<String> = failed
            .iter()
            .map(|p| p.name.clone().unwrap_or_else(|| short(&p.peer)))
            .collect();
        return Err(UserError(format!("not in sync with: {}", names.join(", "))).into());
    }
    if in_sync == 0 && !progress.peers.is_empty() {
        return Err(UserError(
            "no peer that shares a record with this node could be reached; the node keeps trying"
                .into(),
        )
        .into());
    }
    Ok(())
}

fn finished(p: &PeerSync) -> bool {
    matches!(p.state.as_str(), "in-sync" | "failed" | "unreachable")
}

fn short(peer: &str) -> String {
    peer.chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}
