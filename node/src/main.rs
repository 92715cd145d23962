//! `phr-node`: the daemon that syncs the records of a home with the peers their ledgers admit.
//!
//! This version listens on the given addresses and answers every peer that starts a sync: a
//! provider's node receives the records patients share with it, a patient's device receives its
//! other devices' changes. It prints each address it listens on, with its PeerId, one per line on
//! standard output, for peers to dial. Logs go to standard error, filtered by `RUST_LOG` (default
//! `info`). SIGINT or SIGTERM stop it cleanly; everything acknowledged is already on disk.
//!
//! Not built yet (issue 5): the control API the CLI drives (`phr node`, `phr peers add`,
//! `phr sync`), dialling out, mDNS, Kademlia, QUIC, the relay.

#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use libp2p::{Multiaddr, multiaddr::Protocol};
use phr_core::secrecy::SecretString;
use phr_core::{home::Home, keystore::KeystoreError};
use phr_node::net::Node;

/// The phr node daemon.
#[derive(Debug, Parser)]
#[command(name = "phr-node", version, about)]
struct Args {
    /// The home directory to serve
    #[arg(long, env = "PHR_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// Addresses to listen on, as multiaddrs (repeatable) [default: /ip4/0.0.0.0/tcp/0]
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Also act as a blind store-and-forward relay (not built yet)
    #[arg(long)]
    relay: bool,
    /// Do not discover peers on the local network
    #[arg(long)]
    no_mdns: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if args.relay {
        eprintln!(
            "error: phr-node --relay is not built yet: this node can hold and pass on the records \
             that grant it relay access only once the relay mode lands. Run it without --relay."
        );
        return ExitCode::from(2);
    }
    if !args.no_mdns {
        tracing::info!("local discovery (mDNS) is not built yet: peers dial this node's address");
    }
    let dir = args.home.unwrap_or_else(|| {
        dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("phr")
    });
    let home = match Home::open_with(&dir, &mut passphrase_from_env) {
        Ok(home) => home,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(serve(home, args.listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// Runs the node until SIGINT or SIGTERM.
async fn serve(home: Home, mut listen: Vec<Multiaddr>) -> Result<(), String> {
    let peer = home.peer_id();
    let (node, client) = Node::new(home).map_err(|e| e.to_string())?;
    let task = tokio::spawn(node.run());
    if listen.is_empty() {
        listen.push("/ip4/0.0.0.0/tcp/0".parse().expect("a valid multiaddr"));
    }
    for addr in listen {
        let bound = client
            .listen(addr.clone())
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let peer: libp2p::PeerId = peer.to_string().parse().expect("a libp2p PeerId");
        println!("{}", bound.with(Protocol::P2p(peer)));
    }
    shutdown_signal().await;
    tracing::info!("stopping");
    drop(client);
    task.await
        .map_err(|e| format!("the node stopped abnormally: {e}"))?;
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM can be handled");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// The keystore passphrase from `PHR_PASSPHRASE`: a daemon has no terminal to ask on.
fn passphrase_from_env() -> Result<SecretString, KeystoreError> {
    match std::env::var("PHR_PASSPHRASE") {
        Ok(passphrase) if !passphrase.is_empty() => Ok(SecretString::from(passphrase)),
        _ => Err(KeystoreError::PassphraseNeeded),
    }
}
