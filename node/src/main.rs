//! `phr-node`: the daemon that will sync every record this node holds with the peers the consent
//! ledger admits.
//!
//! This first version is deliberately small and honest: it accepts the command line the daemon
//! will have (so scripts and docs can be written against it), checks the home, and then says
//! that networking is not built yet and exits with status 2. The sync protocol, libp2p transport
//! and control API come in later issues (see docs/ARCHITECTURE.md).

#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use phr_core::home::Home;

/// The phr node daemon.
#[derive(Debug, Parser)]
#[command(name = "phr-node", version, about)]
struct Args {
    /// The home directory to serve
    #[arg(long, env = "PHR_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// Addresses to listen on, as multiaddrs (repeatable)
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Also act as a blind store-and-forward relay
    #[arg(long)]
    relay: bool,
    /// Do not discover peers on the local network
    #[arg(long)]
    no_mdns: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let home = args.home.unwrap_or_else(|| {
        dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("phr")
    });
    if let Err(error) = Home::open(&home) {
        eprintln!("error: {error}");
        return ExitCode::from(1);
    }
    eprintln!(
        "error: phr-node cannot sync yet: this build has the record, import and export but not the network. \
         Record commands work offline with `phr`; syncing arrives with the sync protocol and libp2p node."
    );
    ExitCode::from(2)
}
