//! `phr-node`: the daemon that syncs the records of a home with the peers their ledgers admit.
//!
//! It listens on the given addresses (TCP and QUIC on all interfaces by default), prints each
//! with its PeerId, one per line on standard output, for peers to dial, and serves the control
//! API the `phr` command drives (`HOME/control.json`; see `phr_node::control`). It syncs with
//! every peer a held record admits: at once when a peer connects or something changes, and
//! redials peers out of reach with backoff. With `--relay` it is also a circuit relay for other
//! nodes; a relay home (`phr init --relay`) stores and forwards the sealed blobs of the records
//! that grant it relay access, reading none of them.
//!
//! Logs go to standard error, filtered by `RUST_LOG` (default `info`). SIGINT, SIGTERM or
//! `phr node stop` stop it cleanly; everything acknowledged is already on disk.
//!
//! A keystore's passphrase comes as one line on standard input with `--passphrase-stdin` (how
//! `phr node start` passes it), or in `PHR_PASSPHRASE`, which the daemon moves out of its
//! environment before doing anything else (`phr_node::passphrase`).

#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use libp2p::{Multiaddr, multiaddr::Protocol};
use phr_core::{home::Home, keystore::KeystoreError};
use phr_node::{control, net::Node, passphrase};

/// The phr node daemon.
#[derive(Debug, Parser)]
#[command(name = "phr-node", version, about)]
struct Args {
    /// The home directory to serve
    #[arg(long, env = "PHR_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// Addresses to listen on, as multiaddrs (repeatable) [default: /ip4/0.0.0.0/tcp/0 and /ip4/0.0.0.0/udp/0/quic-v1]
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Also serve as a circuit relay for other nodes (a relay home also stores and forwards
    /// the sealed blobs of records that grant it relay access)
    #[arg(long)]
    relay: bool,
    /// Discover peers on the local network with mDNS, which tells everyone on it that a node
    /// with this PeerId is here [default: on for a provider's node; off on a patient's device
    /// and a relay]
    #[arg(long, conflicts_with = "no_mdns")]
    mdns: bool,
    /// Do not discover peers on the local network
    #[arg(long)]
    no_mdns: bool,
    /// Read the keystore's passphrase from standard input (one line), as `phr node start`
    /// gives it; `PHR_PASSPHRASE` works too, and is moved out of the environment at once
    #[arg(long)]
    passphrase_stdin: bool,
    /// Serve the patient's emergency links (SMART Health Links) over HTTP at this address,
    /// e.g. 127.0.0.1:8443 (put a TLS reverse proxy in front to reach it from outside)
    #[arg(long, value_name = "HOST:PORT")]
    emergency_listen: Option<std::net::SocketAddr>,
    /// The address links name, as the outside world reaches this server (e.g.
    /// `https://phr.example.org/shl`) [default: `http://HOST:PORT/shl` of --emergency-listen]
    #[arg(long, value_name = "URL", requires = "emergency_listen")]
    emergency_url: Option<String>,
}

fn main() -> ExitCode {
    // First, before any thread: with PHR_PASSPHRASE set this does not return, but runs the
    // program again in this process without it.
    if let Err(error) = passphrase::leave_environment() {
        eprintln!("error: {error}");
        return ExitCode::from(1);
    }
    let args = Args::parse();
    // Read at once, so `phr node start`, writing it, is never kept waiting.
    let given = if args.passphrase_stdin {
        match passphrase::read_line(std::io::stdin().lock()) {
            Ok(given) => given,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let dir = args.home.unwrap_or_else(|| {
        dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("phr")
    });
    let home = match Home::open_with(&dir, &mut || {
        given.clone().ok_or(KeystoreError::PassphraseNeeded)
    }) {
        Ok(home) => home,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(1);
        }
    };
    for warning in home.warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let options = phr_node::swarm::Options {
        mdns: phr_node::swarm::mdns_by_default(home.party().role, args.mdns, args.no_mdns),
        relay_server: args.relay,
    };
    let emergency = args
        .emergency_listen
        .map(|addr| (addr, args.emergency_url.clone()));
    match runtime.block_on(serve(home, args.listen, options, emergency)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// Runs the node until SIGINT, SIGTERM or `phr node stop`.
async fn serve(
    home: Home,
    mut listen: Vec<Multiaddr>,
    options: phr_node::swarm::Options,
    emergency: Option<(std::net::SocketAddr, Option<String>)>,
) -> Result<(), String> {
    let peer = home.peer_id();
    let dir = home.dir().to_path_buf();
    let (node, client) = Node::with_options(home, &options).map_err(|e| e.to_string())?;
    let task = tokio::spawn(node.run());
    if listen.is_empty() {
        listen.push("/ip4/0.0.0.0/tcp/0".parse().expect("a valid multiaddr"));
        listen.push(
            "/ip4/0.0.0.0/udp/0/quic-v1"
                .parse()
                .expect("a valid multiaddr"),
        );
    }
    let libp2p_peer: libp2p::PeerId = peer.to_string().parse().expect("a libp2p PeerId");
    let mut bound = Vec::new();
    for addr in listen {
        bound.push(
            client
                .listen(addr.clone())
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?,
        );
    }
    let emergency = match emergency {
        None => None,
        Some((addr, url)) => Some(
            phr_node::emergency::serve(client.clone(), addr, url)
                .await
                .map_err(|e| e.to_string())?,
        ),
    };
    let emergency_url = emergency.as_ref().map(|served| served.base.clone());
    let control = control::serve(client.clone(), &dir, peer.to_string(), emergency_url)
        .await
        .map_err(|e| e.to_string())?;
    // Printed once the control API answers too: whoever reads the first line can use both.
    for addr in bound {
        println!("{}", addr.with(Protocol::P2p(libp2p_peer)));
    }
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = control.stopped() => {}
    }
    tracing::info!("stopping");
    control.close();
    if let Some(emergency) = emergency {
        emergency.close();
    }
    // Stopped outright: a connection the control API or the emergency server was still
    // answering would otherwise hold a client, and the node would run on.
    client.stop().await;
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
