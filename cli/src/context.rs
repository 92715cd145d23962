//! What every command needs: where the home is, how to print, what time it is.

use std::path::PathBuf;

use std::io::IsTerminal;

use anyhow::Result;
use phr_core::secrecy::{ExposeSecret, SecretString};
use phr_core::{Author, Record, home::Home, keystore::KeystoreError, record::Stamp};
use serde::Serialize;

use crate::exit::UserError;

/// The environment variable that supplies a passphrase where no terminal can be asked.
pub const PASSPHRASE_ENV: &str = "PHR_PASSPHRASE";

/// The options every command shares.
#[derive(Debug)]
pub struct Context {
    /// The home directory.
    pub home: PathBuf,
    /// Print JSON instead of text.
    pub json: bool,
    /// `--patient RECORD`: on a provider node, the patient's record the command is about.
    pub patient: Option<String>,
    /// The home, lent by the node running for it (if one runs) until this context is dropped,
    /// which happens after the command has closed the home.
    lease: std::cell::RefCell<Option<crate::node::Lease>>,
}

impl Context {
    pub fn new(home: Option<PathBuf>, json: bool) -> Self {
        let home = home.unwrap_or_else(|| {
            dirs::data_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("phr")
        });
        Self {
            home,
            json,
            patient: None,
            lease: std::cell::RefCell::new(None),
        }
    }

    /// Gives the home back to the node before the command ends, so that the node syncs again
    /// while the command waits on the network. The caller must have closed the home.
    pub fn give_back(&self) {
        self.lease.borrow_mut().take();
    }

    /// Borrows the home from the node running for it, if one runs and it is not borrowed yet.
    fn borrow_home(&self) -> Result<()> {
        if self.lease.borrow().is_some() {
            return Ok(());
        }
        if let Some(node) = crate::node::NodeApi::find(&self.home)? {
            match node.lease() {
                Ok(lease) => *self.lease.borrow_mut() = Some(lease),
                // A node that does not answer at all holds nothing: opening the home says
                // whether it is in use.
                Err(e) if e.is::<crate::node::Unreachable>() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Opens the home, asking for the keystore's passphrase if it has one.
    pub fn open_home(&self) -> Result<Home> {
        self.borrow_home()?;
        let home = Home::open_with(&self.home, &mut keystore_passphrase)?;
        warn(&home);
        Ok(home)
    }

    /// Opens the home and loads its record.
    pub fn open_record(&self) -> Result<(Home, Record)> {
        self.borrow_home()?;
        let mut home = Home::open_with(&self.home, &mut keystore_passphrase)?;
        let mut record = home.load_record()?;
        warn(&home);
        // This device's entries that had built on a withdrawn party's change were written
        // again while loading: keep them now, so that they reach the other devices.
        if record.has_unsaved()
            && let Err(e) = home.save(&mut record, now())
        {
            tell(&format!(
                "warning: could not save entries written again: {e}"
            ));
        }
        Ok((home, record))
    }

    /// Prints a value as pretty JSON on stdout (JSON escapes the controls a terminal obeys).
    pub fn print_json<T: Serialize>(&self, value: &T) -> Result<()> {
        print_raw(&(serde_json::to_string_pretty(value)? + "\n"))
    }
}

/// Writes human-readable text to stdout, every control character and bidirectional override
/// in it shown rather than obeyed (`phr_core::screen::visible`): much of it was written by
/// others. Long lines are wrapped at the terminal's width ([`crate::wrap`]). The one way text reaches the screen, with [`say`] and [`tell`]. A reader that went
/// away (`phr show | head`) is not an error.
pub fn print_out(text: &str) -> Result<()> {
    let shown = phr_core::screen::visible(text);
    match crate::wrap::width() {
        Some(width) => print_raw(&crate::wrap::wrap(&shown, width)),
        None => print_raw(&shown),
    }
}

/// Writes text to stdout as it is: only for machine-readable output (JSON, an exported FHIR
/// file), never for text a person reads on a terminal.
pub fn print_raw(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Prints one line of human-readable text on stdout, as [`print_out`] does. A write that fails
/// is dropped, as a closed pipe is.
pub fn say(line: &str) {
    let _ = print_out(&format!("{line}\n"));
}

/// Prints one line of human-readable text on stderr (errors, warnings, progress), controls
/// shown rather than obeyed.
pub fn tell(line: &str) {
    use std::io::Write;
    let text = format!("{}\n", phr_core::screen::visible(line));
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// The current time; the core never reads a clock, the CLI passes it in.
pub fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// A stamp for writes made by this device now.
pub fn stamp(author: &Author) -> Stamp<'_> {
    Stamp {
        author,
        time: now(),
    }
}

/// Tells the user, on stderr, about anything skipped while opening (damaged blobs and the like).
fn warn(home: &Home) {
    for warning in home.warnings() {
        tell(&format!("warning: {warning}"));
    }
}

/// The keystore's passphrase: from PHR_PASSPHRASE, or asked on the terminal.
pub fn keystore_passphrase() -> Result<SecretString, KeystoreError> {
    if let Ok(value) = std::env::var(PASSPHRASE_ENV) {
        return Ok(SecretString::from(value));
    }
    if !std::io::stdin().is_terminal() {
        return Err(KeystoreError::PassphraseNeeded);
    }
    rpassword::prompt_password("Passphrase for this node's keystore: ")
        .map(SecretString::from)
        .map_err(|_| KeystoreError::PassphraseNeeded)
}

/// A new passphrase (for a keystore or a backup): from PHR_PASSPHRASE, or asked twice on the
/// terminal.
pub fn new_passphrase(what: &str) -> Result<SecretString> {
    if let Ok(value) = std::env::var(PASSPHRASE_ENV) {
        if value.is_empty() {
            return Err(UserError(format!("{PASSPHRASE_ENV} is empty; set a passphrase")).into());
        }
        return Ok(SecretString::from(value));
    }
    if !std::io::stdin().is_terminal() {
        return Err(UserError(format!(
            "{what} needs a passphrase: run in a terminal, or set {PASSPHRASE_ENV}"
        ))
        .into());
    }
    let first = SecretString::from(rpassword::prompt_password(format!(
        "Passphrase for {what}: "
    ))?);
    let second = SecretString::from(rpassword::prompt_password("Repeat the passphrase: ")?);
    if first.expose_secret() != second.expose_secret() {
        return Err(UserError("the passphrases do not match; nothing was changed".into()).into());
    }
    if first.expose_secret().is_empty() {
        return Err(UserError("an empty passphrase protects nothing; choose one".into()).into());
    }
    Ok(first)
}

/// The passphrase of an existing file (a backup): from PHR_PASSPHRASE, or asked once.
pub fn existing_passphrase(what: &str) -> Result<SecretString> {
    if let Ok(value) = std::env::var(PASSPHRASE_ENV) {
        return Ok(SecretString::from(value));
    }
    if !std::io::stdin().is_terminal() {
        return Err(UserError(format!(
            "{what} is protected by a passphrase: run in a terminal, or set {PASSPHRASE_ENV}"
        ))
        .into());
    }
    Ok(SecretString::from(rpassword::prompt_password(format!(
        "Passphrase for {what}: "
    ))?))
}
