//! `phr node start|stop|status`: run this home's node daemon in the background.

use std::{
    fs::OpenOptions,
    io::Write,
    path::PathBuf,
    process::{ChildStdin, Command as Process, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use phr_core::{
    api::NodeStatus,
    home::NODE_LOG_FILE,
    keystore::{Keystore, PASSPHRASE_BYTES_MAX},
    secrecy::{ExposeSecret, SecretString},
};
use serde_json::json;

use crate::{
    context::{Context, PASSPHRASE_ENV, keystore_passphrase, print_out},
    exit::UserError,
    node::NodeApi,
};

/// How long `start` and `stop` wait for the daemon.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Start the node daemon for this home in the background (logs go to HOME/node.log)
    Start(StartArgs),
    /// Stop the node daemon cleanly
    Stop,
    /// Whether the node runs, where it listens, what it holds
    Status,
}

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// Addresses to listen on (repeatable) [default: TCP and QUIC on every interface]
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Also serve as a circuit relay for other nodes
    #[arg(long)]
    relay: bool,
    /// Discover peers on the local network with mDNS [default: on for a provider's node; off
    /// on a patient's device and a relay]
    #[arg(long, conflicts_with = "no_mdns")]
    mdns: bool,
    /// Do not discover peers on the local network
    #[arg(long)]
    no_mdns: bool,
    /// Serve your emergency links over HTTP at this address, e.g. 127.0.0.1:8443
    #[arg(long, value_name = "HOST:PORT")]
    emergency_listen: Option<String>,
    /// The address your links name, as others reach this server (behind TLS), e.g.
    /// `https://phr.example.org/shl`
    #[arg(long, value_name = "URL", requires = "emergency_listen")]
    emergency_url: Option<String>,
}

pub fn run(ctx: &Context, command: Command) -> Result<()> {
    match command {
        Command::Start(args) => start(ctx, args),
        Command::Stop => stop(ctx),
        Command::Status => status(ctx),
    }
}

/// The `phr-node` beside this `phr`, or else the one on the PATH.
fn daemon() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("phr-node"))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("phr-node"))
}

fn start(ctx: &Context, args: StartArgs) -> Result<()> {
    if let Some(node) = NodeApi::find(&ctx.home)? {
        let status: NodeStatus = node.get("/status")?;
        return report_started(ctx, &status, true);
    }
    if !ctx.home.join(phr_core::keystore::KEYSTORE_FILE).exists() {
        return Err(phr_core::home::HomeError::NotInitialised(ctx.home.clone()).into());
    }
    // Asked for here, where there is a terminal, and handed over through a pipe: see
    // `hand_over`.
    let passphrase = if Keystore::is_encrypted(&ctx.home)? {
        Some(keystore_passphrase()?)
    } else {
        None
    };
    if let Some(passphrase) = &passphrase {
        let secret = passphrase.expose_secret();
        if secret.len() > PASSPHRASE_BYTES_MAX || secret.contains('\n') {
            return Err(UserError(format!(
                "the node daemon takes its passphrase as one line of at most \
                 {PASSPHRASE_BYTES_MAX} bytes, and this one is not: back the home up under a new \
                 passphrase (`phr backup export -o FILE`) and restore it into a new home with \
                 `phr --home NEW_DIR backup restore FILE --passphrase`"
            ))
            .into());
        }
    }
    let log_path = ctx.home.join(NODE_LOG_FILE);
    let log = phr_core::owner_only::open_or_create(&log_path, OpenOptions::new().append(true))
        .with_context(|| format!("cannot write {}", log_path.display()))?;
    let mut command = Process::new(daemon());
    command.arg("--home").arg(&ctx.home);
    // Never in the daemon's environment, which stays readable (`/proc/PID/environ`) as long as
    // it runs and passes to whatever it starts.
    command.env_remove(PASSPHRASE_ENV);
    if passphrase.is_some() {
        command.arg("--passphrase-stdin");
    }
    for addr in &args.listen {
        command.arg("--listen").arg(addr);
    }
    if let Some(addr) = &args.emergency_listen {
        command.arg("--emergency-listen").arg(addr);
    }
    if let Some(url) = &args.emergency_url {
        command.arg("--emergency-url").arg(url);
    }
    if args.relay {
        command.arg("--relay");
    }
    if args.mdns {
        command.arg("--mdns");
    }
    if args.no_mdns {
        command.arg("--no-mdns");
    }
    // Its own process group: a Ctrl-C in this terminal later does not stop it.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .stdin(if passphrase.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot run {}", daemon().display()))?;
    if let (Some(passphrase), Some(stdin)) = (passphrase, child.stdin.take()) {
        hand_over(&passphrase, stdin);
    }
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(exit) = child.try_wait()? {
            return Err(UserError(format!(
                "the node stopped at once ({exit}); its log, {}, ends:\n{}",
                log_path.display(),
                tail(&log_path)
            ))
            .into());
        }
        if let Some(node) = NodeApi::find(&ctx.home)?
            && node.pid == child.id()
            && let Ok(status) = node.get::<NodeStatus>("/status")
        {
            return report_started(ctx, &status, false);
        }
        if Instant::now() > deadline {
            return Err(anyhow::anyhow!(
                "the node did not answer within {} s; see {}",
                WAIT.as_secs(),
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes the keystore's passphrase, one line, into the daemon's standard input and closes it.
/// A daemon that stopped before reading it says why in its log, which `start` shows; so a
/// failed write is not reported here.
fn hand_over(passphrase: &SecretString, mut stdin: ChildStdin) {
    // Two writes rather than one joined copy, which would leave the secret in freed memory.
    let _ = stdin
        .write_all(passphrase.expose_secret().as_bytes())
        .and_then(|()| stdin.write_all(b"\n"));
}

fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn report_started(ctx: &Context, status: &NodeStatus, already: bool) -> Result<()> {
    if ctx.json {
        return ctx.print_json(&json!({ "running": true, "already": already, "node": status }));
    }
    let mut out = if already {
        format!(
            "The node for this home is already running (pid {}).\n",
            status.pid
        )
    } else {
        format!("Node started (pid {}).\n", status.pid)
    };
    out += &format!("Peer id: {}\nListening on:\n", status.peer);
    for addr in &status.listening {
        out += &format!("  {addr}\n");
    }
    print_out(&out)
}

fn stop(ctx: &Context) -> Result<()> {
    let node = NodeApi::require(&ctx.home)?;
    node.post_empty("/stop", &json!({}))?;
    if !node.wait_exit(WAIT) {
        return Err(anyhow::anyhow!(
            "the node (pid {}) has not stopped after {} s; see {}",
            node.pid,
            WAIT.as_secs(),
            ctx.home.join(NODE_LOG_FILE).display()
        ));
    }
    if ctx.json {
        return ctx.print_json(&json!({ "stopped": true, "pid": node.pid }));
    }
    print_out(&format!("Node stopped (pid {}).\n", node.pid))
}

fn status(ctx: &Context) -> Result<()> {
    let Some(node) = NodeApi::find(&ctx.home)? else {
        if ctx.json {
            return ctx.print_json(&json!({ "running": false }));
        }
        return print_out("No node is running for this home. Start one with `phr node start`.\n");
    };
    let status: NodeStatus = node.get("/status")?;
    if ctx.json {
        return ctx.print_json(&json!({ "running": true, "node": status }));
    }
    print_out(&describe(&status))
}

/// The node's status, in plain words.
pub fn describe(status: &NodeStatus) -> String {
    let mut out = format!(
        "Node running (pid {}){}{}.\nPeer id: {}\n",
        status.pid,
        if status.relay {
            ", a circuit relay"
        } else {
            ""
        },
        if status.leased {
            ", lending the home to a phr command"
        } else {
            ""
        },
        status.peer
    );
    out += "Listening on:\n";
    for addr in &status.listening {
        out += &format!("  {addr}\n");
    }
    out += &format!("Records held: {}\n", status.records.len());
    for record in &status.records {
        let blobs: usize = record.blobs.values().sum();
        out += &format!(
            "  {}: {} blobs, {} consent operations, {} not yet confirmed on any peer\n",
            record.record, blobs, record.ledger_ops, record.unsynced
        );
    }
    let connected = status.peers.iter().filter(|p| p.connected).count();
    out += &format!(
        "Peers: {} known, {} connected (see `phr peers`)\n",
        status.peers.len(),
        connected
    );
    out
}
