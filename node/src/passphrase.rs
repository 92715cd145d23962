//! How the daemon gets its keystore's passphrase without keeping it in its environment.
//!
//! A daemon has no terminal to ask on. `phr node start` asks on its own terminal (or takes
//! `PHR_PASSPHRASE`), starts `phr-node --passphrase-stdin` without `PHR_PASSPHRASE` in its
//! environment, writes the passphrase as one line into the daemon's standard input, a pipe, and
//! closes it; the daemon reads that line ([`read_line`]) before anything else.
//!
//! Started by hand with `PHR_PASSPHRASE` set, the daemon moves the passphrase the same way, first
//! thing in `main` ([`leave_environment`]): it writes it into a pipe of its own and replaces
//! itself (`execve`, same process id, before any thread is started) with a fresh image of the same
//! program, whose standard input is that pipe, with `--passphrase-stdin` added and
//! `PHR_PASSPHRASE` removed. Removing the variable in place would not do: the environment a
//! program was started with stays readable in `/proc/PID/environ` (to its owner and root) for the
//! life of that image whatever it removes later (`std::env::remove_var`, unsafe in Rust 2024
//! besides, only changes the process's own copy). What `exec` cannot undo: for the moment
//! before it, the first image's environment held the passphrase, and the shell or service
//! manager that set the variable holds it still. The pipe, `phr node start`'s way, is the one
//! that never puts it in any environment.

use std::{
    ffi::OsString,
    io::{self, Read, Write},
    os::unix::{ffi::OsStringExt, process::CommandExt},
    process::Command,
};

use phr_core::{keystore::PASSPHRASE_BYTES_MAX, secrecy::SecretString};
use zeroize::Zeroizing;

/// The environment variable a passphrase may come in (moved out at once, see the module doc).
pub const PASSPHRASE_ENV: &str = "PHR_PASSPHRASE";

/// The option that makes the daemon read its passphrase from standard input.
pub const PASSPHRASE_STDIN: &str = "--passphrase-stdin";

/// Why the passphrase could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum PassphraseError {
    /// Both ways at once: which is meant is not clear.
    #[error("{PASSPHRASE_ENV} is set and {PASSPHRASE_STDIN} given: give the passphrase one way")]
    TwoWays,
    /// Longer than [`PASSPHRASE_BYTES_MAX`].
    #[error("the passphrase is longer than {PASSPHRASE_BYTES_MAX} bytes; choose a shorter one")]
    TooLong,
    /// Not UTF-8 text.
    #[error("the passphrase is not UTF-8 text")]
    NotText,
    /// A line break inside: it is handed over as one line, so it would arrive cut short.
    #[error("the passphrase holds a line break, and the node reads it as one line")]
    LineBreak,
    /// Reading standard input, or replacing the program, failed.
    #[error("cannot hand the passphrase over: {0}")]
    Io(#[from] io::Error),
}

/// If `PHR_PASSPHRASE` is set, runs this program again in this process without it (see the
/// module doc) and does not return; returns `Ok` at once if it is not set, and an error if it
/// could not be done (nothing has started then, and the caller should stop).
///
/// Call it first in `main`, before any thread starts: `exec` replaces the whole process.
pub fn leave_environment() -> Result<(), PassphraseError> {
    let Some(value) = std::env::var_os(PASSPHRASE_ENV) else {
        return Ok(());
    };
    let value = Zeroizing::new(value.into_vec());
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("phr-node"));
    let rest: Vec<OsString> = args.collect();
    if rest.iter().any(|arg| arg == PASSPHRASE_STDIN) {
        return Err(PassphraseError::TwoWays);
    }
    if value.len() > PASSPHRASE_BYTES_MAX {
        return Err(PassphraseError::TooLong);
    }
    if value.contains(&b'\n') {
        return Err(PassphraseError::LineBreak);
    }
    // The whole line fits in the pipe's buffer (PASSPHRASE_BYTES_MAX), so these writes return
    // before anyone reads.
    let (reader, mut writer) = io::pipe()?;
    writer.write_all(&value)?;
    writer.write_all(b"\n")?;
    drop(writer);
    let error = Command::new(std::env::current_exe()?)
        .arg0(arg0)
        .args(rest)
        .arg(PASSPHRASE_STDIN)
        .env_remove(PASSPHRASE_ENV)
        .stdin(reader)
        .exec();
    Err(error.into())
}

/// Reads the passphrase: one line of at most [`PASSPHRASE_BYTES_MAX`] bytes, its line end
/// (`\n` or `\r\n`) dropped. It stops at the first line end, so it waits for no more than one
/// line; the end of input ends the line too. An empty line is no passphrase (`None`).
pub fn read_line(mut input: impl Read) -> Result<Option<SecretString>, PassphraseError> {
    // Reserved up front so that reading never reallocates and leaves a copy of the secret.
    let mut line = Zeroizing::new(Vec::with_capacity(PASSPHRASE_BYTES_MAX + 2));
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() > PASSPHRASE_BYTES_MAX => return Err(PassphraseError::TooLong),
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.len() > PASSPHRASE_BYTES_MAX {
        return Err(PassphraseError::TooLong);
    }
    if line.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(&line).map_err(|_| PassphraseError::NotText)?;
    Ok(Some(SecretString::from(text)))
}

#[cfg(test)]
mod tests {
    use phr_core::secrecy::ExposeSecret;

    use super::*;

    fn read(bytes: &[u8]) -> Result<Option<String>, PassphraseError> {
        read_line(bytes).map(|secret| secret.map(|s| s.expose_secret().to_owned()))
    }

    #[test]
    fn one_line_is_read_without_its_line_end_and_nothing_after_it() {
        assert_eq!(read(b"correct horse\n").unwrap().unwrap(), "correct horse");
        assert_eq!(read(b"crlf\r\nmore").unwrap().unwrap(), "crlf");
        assert_eq!(read(b"no line end").unwrap().unwrap(), "no line end");
        assert_eq!(
            read(b"  spaces kept  \n").unwrap().unwrap(),
            "  spaces kept  "
        );
    }

    #[test]
    fn an_empty_line_is_no_passphrase() {
        assert!(read(b"").unwrap().is_none());
        assert!(read(b"\n").unwrap().is_none());
    }

    #[test]
    fn a_passphrase_longer_than_the_limit_or_not_text_is_refused() {
        let longest = vec![b'a'; PASSPHRASE_BYTES_MAX];
        assert_eq!(read(&longest).unwrap().unwrap().len(), PASSPHRASE_BYTES_MAX);
        let mut with_crlf = longest.clone();
        with_crlf.extend_from_slice(b"\r\n");
        assert_eq!(
            read(&with_crlf).unwrap().unwrap().len(),
            PASSPHRASE_BYTES_MAX
        );
        let too_long = vec![b'a'; PASSPHRASE_BYTES_MAX + 1];
        assert!(matches!(read(&too_long), Err(PassphraseError::TooLong)));
        assert!(matches!(
            read(&vec![b'a'; 100_000]),
            Err(PassphraseError::TooLong)
        ));
        assert!(matches!(read(b"\xff\xfe\n"), Err(PassphraseError::NotText)));
    }
}
