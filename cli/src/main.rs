//! `phr`: a patient's health record on the command line.
//!
//! Each subcommand lives in its own module under `cmd/`. Errors are typed inside phr-core and
//! turned into a message and an exit code here: 0 success, 1 a user error (bad input, something
//! refused), 2 anything else.

#![forbid(unsafe_code)]

mod cmd;
mod context;
mod exit;
mod node;
mod wrap;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// A patient-owned health record: FHIR R4, offline first, yours.
#[derive(Debug, Parser)]
#[command(name = "phr", version, about, max_term_width = 100)]
struct Cli {
    /// Where this device keeps its identity and records [default: the platform data directory, e.g. ~/.local/share/phr]
    #[arg(long, global = true, env = "PHR_HOME", value_name = "DIR")]
    home: Option<PathBuf>,

    /// Machine-readable output on stdout: one JSON document
    #[arg(long, global = true)]
    json: bool,

    /// On a provider node: run show, add, amend, stop, recovered, entered-in-error, history, export, import, conflicts, messages, repeats, appointments or medicines check on this patient's record (its id, the start of it, or the patient's NHS number; see `phr patients`)
    #[arg(long, global = true, value_name = "RECORD")]
    patient: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create this device's identity and a new patient record (or a provider node with --provider)
    Init(cmd::init::Args),
    /// Import FHIR R4 JSON files: Bundles of any type or single resources (idempotent, all or nothing)
    Import(cmd::import::Args),
    /// The imports in the record; `imports undo ID` takes one back
    Imports(cmd::imports::Args),
    /// Export the record as a FHIR R4 Bundle, or an International Patient Summary with --ips
    Export(cmd::export::Args),
    /// Show the record in plain language (default: the summary)
    Show(cmd::show::Args),
    /// Add an entry: symptom, reading, allergy, condition, medication or note
    Add(cmd::add::Args),
    /// Correct an entry: set or remove its elements (a new version; history keeps the old)
    Amend(cmd::correct::AmendArgs),
    /// The medicines check: current medicines against each other and against allergies
    #[command(subcommand)]
    Medicines(cmd::medicines::Command),
    /// Mark a medicine as stopped (no longer taken), from today or --date
    Stop(cmd::correct::StopArgs),
    /// Mark a condition or allergy as resolved: the patient has recovered from it
    Recovered(cmd::correct::RecoveredArgs),
    /// Mark an entry as recorded by mistake: views leave it out, history keeps it
    EnteredInError(cmd::correct::EnteredInErrorArgs),
    /// Every version of one resource, with author and time
    History(cmd::history::Args),
    /// Resources with concurrent versions waiting for a person to choose
    Conflicts,
    /// Settle a conflict by keeping one version
    Resolve(cmd::resolve::Args),
    /// Print this node's contact card (one line, or a QR code with --qr)
    Card(cmd::card::Args),
    /// Remember providers, relays and devices from their cards
    #[command(subcommand)]
    Contacts(cmd::contacts::Command),
    /// Consent: grant, list and revoke access to sections of your record
    #[command(subcommand)]
    Share(cmd::share::Command),
    /// Your own devices: add, list, remove
    #[command(subcommand)]
    Devices(cmd::devices::Command),
    /// Store-and-forward relays for your record (ciphertext only)
    #[command(subcommand)]
    Relays(cmd::relays::Command),
    /// Back up or restore this home's keys and record (passphrase-encrypted)
    #[command(subcommand)]
    Backup(cmd::backup::Command),
    /// Stored entries that could not be read, and removing one for good
    Damaged(cmd::damaged::Args),
    /// Entries written after the writer's access ended, held for you: list, accept, discard
    Held(cmd::held::Args),
    /// On a provider node: the records patients share with it; --pending, accept, decline for new ones
    Patients(cmd::patients::Args),
    /// Who read or changed what in your record, and when (every provider access)
    Audit,
    /// Messages between you and your practice: list, show, send, reply, save a file
    Messages(cmd::messages::Args),
    /// Repeat prescriptions: see them and order one; on a practice's node, set up, issue, refuse
    Repeats(cmd::repeats::Args),
    /// Appointments: free slots asked live, request, cancel; on a practice's node, book or decline
    Appointments(cmd::appointments::Args),
    /// On a practice's node: its free times, offered live to its patients' nodes
    Slots(cmd::slots::Args),
    /// On a practice's node: what waits across its patients (requests, orders, unread messages)
    Inbox,
    /// The emergency summary: preview it, make the offline card, read a card
    Emergency(cmd::emergency::Args),
    /// Run this home's node daemon in the background: start, stop, status
    #[command(subcommand)]
    Node(cmd::node::Command),
    /// Peers the running node knows; `peers add MULTIADDR` dials one
    Peers(cmd::peers::Args),
    /// Sync now with every peer the records admit (--wait to wait for them)
    Sync(cmd::sync::Args),
    /// This node, its records, unsynced blobs, conflicts and peers
    Status,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Usage errors are user errors (exit 1); --help and --version print and succeed.
            // The message may quote what was typed (pasted from anywhere): shown, not obeyed.
            let text = error.render().to_string();
            if error.use_stderr() {
                context::tell(text.trim_end_matches('\n'));
            } else {
                let _ = context::print_out(&text);
            }
            return if error.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let mut ctx = context::Context::new(cli.home, cli.json);
    let honours_patient = matches!(
        cli.command,
        Command::Show(_)
            | Command::Add(_)
            | Command::Amend(_)
            | Command::Stop(_)
            | Command::Recovered(_)
            | Command::EnteredInError(_)
            | Command::History(_)
            | Command::Export(_)
            | Command::Import(_)
            | Command::Imports(_)
            | Command::Conflicts
            | Command::Messages(_)
            | Command::Repeats(_)
            | Command::Appointments(_)
    ) || matches!(&cli.command, Command::Medicines(command) if cmd::medicines::honours_patient(command));
    if let Err(error) = cmd::patients::take_flag(&mut ctx, cli.patient, honours_patient) {
        return exit::report(&error);
    }
    let result = match cli.command {
        Command::Init(args) => cmd::init::run(&ctx, args),
        Command::Import(args) => cmd::import::run(&ctx, args),
        Command::Imports(args) => cmd::imports::run(&ctx, args),
        Command::Export(args) => cmd::export::run(&ctx, args),
        Command::Show(args) => cmd::show::run(&ctx, args),
        Command::Add(args) => cmd::add::run(&ctx, args),
        Command::Amend(args) => cmd::correct::amend(&ctx, args),
        Command::Medicines(command) => cmd::medicines::run(&ctx, command),
        Command::Stop(args) => cmd::correct::stop(&ctx, args),
        Command::Recovered(args) => cmd::correct::recovered(&ctx, args),
        Command::EnteredInError(args) => cmd::correct::entered_in_error(&ctx, args),
        Command::History(args) => cmd::history::run(&ctx, args),
        Command::Conflicts => cmd::conflicts::run(&ctx),
        Command::Resolve(args) => cmd::resolve::run(&ctx, args),
        Command::Card(args) => cmd::card::run(&ctx, args),
        Command::Contacts(command) => cmd::contacts::run(&ctx, command),
        Command::Share(command) => cmd::share::run(&ctx, command),
        Command::Devices(command) => cmd::devices::run(&ctx, command),
        Command::Relays(command) => cmd::relays::run(&ctx, command),
        Command::Backup(command) => cmd::backup::run(&ctx, command),
        Command::Held(args) => cmd::held::run(&ctx, args),
        Command::Damaged(args) => cmd::damaged::run(&ctx, args),
        Command::Patients(args) => cmd::patients::run(&ctx, args),
        Command::Audit => cmd::audit::run(&ctx),
        Command::Messages(args) => cmd::messages::run(&ctx, args),
        Command::Repeats(args) => cmd::repeats::run(&ctx, args),
        Command::Appointments(args) => cmd::appointments::run(&ctx, args),
        Command::Slots(args) => cmd::slots::run(&ctx, args),
        Command::Inbox => cmd::inbox::run(&ctx),
        Command::Emergency(args) => cmd::emergency::run(&ctx, args),
        Command::Node(command) => cmd::node::run(&ctx, command),
        Command::Peers(args) => cmd::peers::run(&ctx, args),
        Command::Sync(args) => cmd::sync::run(&ctx, args),
        Command::Status => cmd::status::run(&ctx),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => exit::report(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link id is base64url, so one in 64 starts with `-`: it is still an id, not an option.
    #[test]
    fn a_link_id_that_starts_with_a_hyphen_is_taken_as_the_id() {
        let cli = Cli::try_parse_from(["phr", "emergency", "revoke", "-vcWbU1g"]).unwrap();
        let Command::Emergency(args) = cli.command else {
            panic!("not the emergency command: {cli:?}");
        };
        assert!(format!("{args:?}").contains("\"-vcWbU1g\""), "{args:?}");
    }
}
