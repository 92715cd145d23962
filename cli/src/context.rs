//! What every command needs: where the home is, how to print, what time it is.

use std::path::PathBuf;

use anyhow::Result;
use phr_core::{Author, Record, home::Home, record::Stamp};
use serde::Serialize;

/// The options every command shares.
#[derive(Debug)]
pub struct Context {
    /// The home directory.
    pub home: PathBuf,
    /// Print JSON instead of text.
    pub json: bool,
}

impl Context {
    pub fn new(home: Option<PathBuf>, json: bool) -> Self {
        let home = home.unwrap_or_else(|| {
            dirs::data_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("phr")
        });
        Self { home, json }
    }

    /// Opens the home and loads its record.
    pub fn open_record(&self) -> Result<(Home, Record)> {
        let home = Home::open(&self.home)?;
        let record = home.load_record()?;
        Ok((home, record))
    }

    /// Prints a value as pretty JSON on stdout.
    pub fn print_json<T: Serialize>(&self, value: &T) -> Result<()> {
        print_out(&(serde_json::to_string_pretty(value)? + "\n"))
    }
}

/// Writes text to stdout; a reader that went away (`phr show | head`) is not an error.
pub fn print_out(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
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
