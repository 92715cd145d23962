//! `phr backup`: the record root key, this device's keys and the sealed record, in one file
//! encrypted with a passphrase (the standard `age -d` decrypts it too).

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use clap::Subcommand;
use phr_core::home::Home;
use serde_json::json;

use crate::{
    context::{Context, existing_passphrase, new_passphrase, print_out},
    exit::UserError,
};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a passphrase-encrypted backup of this home
    Export {
        /// The backup file to write (it must not exist)
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// Restore a backup into this (empty) home: same record, same device identity
    Restore {
        /// The backup file
        file: PathBuf,
        /// Protect the restored keystore with the same passphrase
        #[arg(long)]
        passphrase: bool,
    },
}

pub fn run(ctx: &Context, command: Command) -> Result<()> {
    match command {
        Command::Export { output } => {
            let home = ctx.open_home()?;
            if output.exists() {
                return Err(UserError(format!(
                    "{} already exists; choose a new file name so no backup is overwritten",
                    output.display()
                ))
                .into());
            }
            let passphrase = new_passphrase("the backup")?;
            let bytes = home.backup(&passphrase)?;
            write_new(&output, &bytes)?;
            if ctx.json {
                return ctx.print_json(&json!({"backup": output, "bytes": bytes.len()}));
            }
            print_out(&format!(
                "Wrote {} ({} bytes). Keep it and its passphrase apart; `age -d` decrypts it too.\n",
                output.display(),
                bytes.len()
            ))
        }
        Command::Restore { file, passphrase } => {
            let bytes = fs::read(&file).map_err(|e| {
                UserError(format!(
                    "cannot read {}: {e}; check the path",
                    file.display()
                ))
            })?;
            let secret = existing_passphrase("the backup")?;
            let keystore = passphrase.then(|| secret.clone());
            let restored = Home::restore(&ctx.home, &bytes, &secret, keystore.as_ref())?;
            let home = &restored.home;
            if ctx.json {
                return ctx.print_json(&json!({
                    "home": ctx.home,
                    "peer_id": home.peer_id().to_string(),
                    "record": home.record_id().map(|id| id.to_string()),
                    "blobs": restored.blobs,
                    "ledger_ops": restored.ledger_ops,
                }));
            }
            let record = home
                .record_id()
                .map(|id| format!(" and record {id}"))
                .unwrap_or_default();
            print_out(&format!(
                "Restored device {}{record} into {} ({} blobs, {} consent operations).\n",
                home.peer_id(),
                ctx.home.display(),
                restored.blobs,
                restored.ledger_ops
            ))
        }
    }
}

/// Writes a new file (never replacing one), 0600 wherever it goes, synced before returning.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = phr_core::owner_only::create_new(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
