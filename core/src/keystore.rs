//! The keystore: a node's secrets in one file, `keystore`, in its home directory.
//!
//! It holds the node's Ed25519 signing key (its identity), its age X25519 identity (which unwraps
//! the section keys sent to it) and, on the patient's first device or one restored from a backup,
//! the record root key. Inside is a small JSON document (`phr-keystore/1`, see
//! [`Keystore::to_bytes`]); the file is that JSON as it is, or, when the node has a passphrase,
//! an ASCII-armored age file encrypted to the passphrase with scrypt (age-encryption.org/v1), so
//! the standard `age -d` tool opens it too and nothing phr-specific is needed to recover the keys.
//!
//! The file is written atomically with mode 0600 and refused on reading if other users may access
//! it, as ssh does with private keys. Backups use the same passphrase encryption
//! ([`encrypt_with_passphrase`], [`decrypt_with_passphrase`]) with a stronger work factor.
//!
//! The ASCII armor (RFC 7468 strict PEM, type `AGE ENCRYPTED FILE`, 64-column lines, as the age
//! specification defines it) is written and read here rather than by age's `armor` module, which
//! sits behind a cargo feature this workspace does not enable; the test suite checks that the
//! real `age` tool decrypts what this module writes, and that this module decrypts what `age`
//! writes.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    iter,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use age::secrecy::{ExposeSecret, SecretString};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::keys::{AgeIdentity, SigningKey, hex, random_array};

/// The keystore's file name inside a node's home directory.
pub const KEYSTORE_FILE: &str = "keystore";

/// The scrypt work factor (log2 N) of an encrypted keystore.
///
/// Every `phr` command opens the keystore, so this is a trade-off between the wait on each
/// command and the cost to an attacker who has copied the file and guesses passphrases offline:
/// 2^16 costs about 64 MiB of memory and roughly 0.1 s per guess on a laptop, four times cheaper
/// than a backup's (the file also needs access to the device, where a backup may travel).
pub const KEYSTORE_SCRYPT_LOG_N: u8 = 16;

/// The scrypt work factor (log2 N) of a backup, which is opened rarely and may be stored
/// anywhere, so it gets about a second of work per guess (age's own default is calibrated to a
/// second too).
pub const BACKUP_SCRYPT_LOG_N: u8 = 18;

/// The largest scrypt work factor accepted when decrypting, the same cap as the Go `age` tool's
/// (2^22 is 4 GiB of memory and about 15 s). The Rust age library would otherwise accept whatever
/// it calibrates to the machine plus 16x; a file demanding 2^23 or more is refused before any
/// work instead of letting a hostile file stall or exhaust the machine.
pub const SCRYPT_LOG_N_MAX: u8 = 22;

/// The largest keystore file read, in bytes: a keystore is a few hundred bytes, so anything
/// much bigger is not one and is refused before it is read into memory.
pub const KEYSTORE_BYTES_MAX: u64 = 64 * 1024;

/// The format name inside the keystore's JSON.
const KEYSTORE_FORMAT: &str = "phr-keystore/1";

/// Room for the keystore's JSON, reserved up front so that writing it never reallocates and
/// leaves a stray copy of the secrets in freed memory.
const KEYSTORE_JSON_CAPACITY: usize = 512;

/// How every age file starts (binary format, any version).
const AGE_MAGIC: &[u8] = b"age-encryption.org/";

/// The first and last line of an ASCII-armored age file.
const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";
const ARMOR_END: &str = "-----END AGE ENCRYPTED FILE-----";

/// Columns of base64 per armored line (the last line may be shorter), as age requires.
const ARMOR_COLUMNS: usize = 64;

/// Why a keystore, or a passphrase-encrypted file, could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// The home directory (the path held) has no keystore.
    #[error(
        "no keystore in {}: restore one with `phr backup restore FILE`, or run `phr init`",
        .0.display()
    )]
    Missing(PathBuf),
    /// The passphrase does not open the file. age cannot tell a wrong passphrase from a changed
    /// passphrase stanza, so the message mentions both.
    #[error(
        "wrong passphrase: it does not open this file; try again (if you are sure it is right, \
         the file was changed: restore it from a backup)"
    )]
    WrongPassphrase,
    /// The file is encrypted and no passphrase was given (returned by the caller's prompt).
    #[error(
        "this keystore is protected by a passphrase and none was given: enter it when asked, \
         or set PHR_PASSPHRASE"
    )]
    PassphraseNeeded,
    /// An empty passphrase was given to encrypt with: it protects nothing, and the `age` tool
    /// refuses to decrypt with one.
    #[error("an empty passphrase protects nothing; choose one")]
    EmptyPassphrase,
    /// The file demands more scrypt work than [`SCRYPT_LOG_N_MAX`]: not made by phr, and
    /// possibly made to exhaust this machine.
    #[error(
        "the file asks for scrypt work factor 2^{log_n}, more than the 2^{SCRYPT_LOG_N_MAX} phr \
         accepts: phr did not make it; if you trust it, decrypt it with `age -d`"
    )]
    ExcessiveWork {
        /// The work factor the file asks for.
        log_n: u8,
    },
    /// The bytes are not a keystore or a passphrase-encrypted age file, or were changed. The
    /// reason never quotes the file's contents, which may be secret.
    #[error("{}", damaged_message(.path.as_deref(), .reason))]
    Damaged {
        /// The keystore file, when the bytes came from one (`None` for a backup's contents).
        path: Option<PathBuf>,
        /// What is wrong.
        reason: String,
    },
    /// The file could not be read or written.
    #[error("could not read or write {}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Users other than the owner may access the keystore, which holds this node's secret keys.
    #[error(
        "{} may be accessed by other users (mode {mode:04o}), and it holds this node's secret \
         keys: run `chmod 600 {}`",
        .path.display(),
        .path.display()
    )]
    InsecurePermissions {
        /// The keystore file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

fn damaged_message(path: Option<&Path>, reason: &str) -> String {
    match path {
        Some(path) => format!(
            "the keystore {} is damaged: {reason}; restore it with `phr backup restore FILE`",
            path.display()
        ),
        None => format!("the file is damaged or not what was expected: {reason}"),
    }
}

fn damaged(reason: impl Into<String>) -> KeystoreError {
    KeystoreError::Damaged {
        path: None,
        reason: reason.into(),
    }
}

impl KeystoreError {
    /// Names the keystore file in a `Damaged` error that came from its bytes.
    fn at(self, file: &Path) -> Self {
        match self {
            KeystoreError::Damaged { path: None, reason } => KeystoreError::Damaged {
                path: Some(file.to_path_buf()),
                reason,
            },
            other => other,
        }
    }
}

/// A node's secrets. `Debug` prints only the public halves.
#[derive(Debug)]
pub struct Keystore {
    /// The node's Ed25519 signing key: it signs what the node writes and is its libp2p identity.
    pub device: SigningKey,
    /// The node's age X25519 identity: section keys reach the node wrapped to its recipient.
    pub age: AgeIdentity,
    /// The record root key, on the patient's first device or one restored from a backup: it
    /// admits further owner devices.
    pub root: Option<SigningKey>,
}

/// The keystore's plaintext serialisation. Every field is wiped when it is dropped.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct KeystoreJson {
    format: String,
    device: String,
    age: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    root: Option<String>,
}

/// Just the format name of a keystore's JSON (other fields are skipped unread).
#[derive(Deserialize)]
struct FormatOnly {
    format: String,
}

impl Keystore {
    /// New random keys, with a record root key if this node is to create a record.
    pub fn generate(with_root: bool) -> Keystore {
        Keystore {
            device: SigningKey::generate(),
            age: AgeIdentity::generate(),
            root: with_root.then(SigningKey::generate),
        }
    }

    /// The plaintext serialisation, used as the keystore file and inside backups: one line of
    /// JSON, `{"format":"phr-keystore/1","device":"<base64 seed>","age":"AGE-SECRET-KEY-1...",
    /// "root":"<base64 seed>"}` (`root` absent when the node holds no root key), where a seed
    /// is the 32-byte RFC 8032 Ed25519 private key in standard base64 with padding.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let json = KeystoreJson {
            format: KEYSTORE_FORMAT.into(),
            device: STANDARD.encode(self.device.seed()),
            age: self.age.to_secret_string().expose_secret().to_owned(),
            root: self.root.as_ref().map(|root| STANDARD.encode(root.seed())),
        };
        let mut bytes = Zeroizing::new(Vec::with_capacity(KEYSTORE_JSON_CAPACITY));
        serde_json::to_writer(&mut *bytes, &json).expect("strings serialise to JSON");
        bytes.push(b'\n');
        bytes
    }

    /// Parses the plaintext serialisation. Any problem is `Damaged`, with a reason that never
    /// quotes the input (it may hold secrets).
    pub fn from_bytes(bytes: &[u8]) -> Result<Keystore, KeystoreError> {
        // The format first, so a newer keystore (with fields this version does not know) is
        // reported as newer rather than as having unknown fields.
        let format: FormatOnly =
            serde_json::from_slice(bytes).map_err(|e| damaged(json_reason(&e)))?;
        if format.format != KEYSTORE_FORMAT {
            return Err(damaged(if format.format.starts_with("phr-keystore/") {
                format!(
                    "it is in format `{}`, newer than this version of phr reads (`{KEYSTORE_FORMAT}`); upgrade phr",
                    format.format.chars().take(40).collect::<String>()
                )
            } else {
                format!("it is not in the `{KEYSTORE_FORMAT}` format")
            }));
        }
        let json: KeystoreJson =
            serde_json::from_slice(bytes).map_err(|e| damaged(json_reason(&e)))?;
        let age = AgeIdentity::parse(&SecretString::from(json.age.as_str()))
            .map_err(|_| damaged("its `age` field is not an age identity (AGE-SECRET-KEY-1...)"))?;
        Ok(Keystore {
            device: seed(&json.device, "device")?,
            age,
            root: json
                .root
                .as_deref()
                .map(|text| seed(text, "root"))
                .transpose()?,
        })
    }

    /// Writes `dir/keystore` atomically: a temporary file created with mode 0600, written,
    /// flushed to disk, renamed over the keystore, and the directory flushed, so a crash leaves
    /// either the old keystore or the new one, never a mixture. With a passphrase the file is an
    /// ASCII-armored age file (scrypt, work factor [`KEYSTORE_SCRYPT_LOG_N`]); without, it is the
    /// plaintext JSON of [`Keystore::to_bytes`].
    pub fn write(
        &self,
        dir: &Path,
        passphrase: Option<&SecretString>,
    ) -> Result<(), KeystoreError> {
        let plain = self.to_bytes();
        match passphrase {
            Some(passphrase) => {
                let file = encrypt_with_passphrase(&plain, passphrase, KEYSTORE_SCRYPT_LOG_N)?;
                write_atomically(dir, KEYSTORE_FILE, &file)
            }
            None => write_atomically(dir, KEYSTORE_FILE, &plain),
        }
    }

    /// Reads `dir/keystore`, calling `passphrase` (once) only if the file is encrypted. A
    /// keystore that other users may access is refused, as is one that is damaged; nothing is
    /// ever written here, so a failed read leaves the file as it was.
    pub fn read(
        dir: &Path,
        passphrase: &mut dyn FnMut() -> Result<SecretString, KeystoreError>,
    ) -> Result<Keystore, KeystoreError> {
        let (path, bytes) = read_keystore_file(dir)?;
        let keystore = match kind(&bytes) {
            Some(Kind::Plain) => Keystore::from_bytes(&bytes),
            Some(Kind::Armored | Kind::Binary) => {
                let secret = passphrase()?;
                decrypt_with_passphrase(&bytes, &secret)
                    .and_then(|plain| Keystore::from_bytes(&plain))
            }
            None => Err(damaged(
                "it is neither a phr keystore nor a passphrase-encrypted age file",
            )),
        };
        keystore.map_err(|e| e.at(&path))
    }

    /// Whether `dir/keystore` is passphrase-encrypted, so a caller knows to ask for the
    /// passphrase before opening it. The same checks as [`Keystore::read`] apply.
    pub fn is_encrypted(dir: &Path) -> Result<bool, KeystoreError> {
        let (path, bytes) = read_keystore_file(dir)?;
        match kind(&bytes) {
            Some(Kind::Plain) => Ok(false),
            Some(Kind::Armored | Kind::Binary) => Ok(true),
            None => Err(damaged(
                "it is neither a phr keystore nor a passphrase-encrypted age file",
            )
            .at(&path)),
        }
    }
}

/// An Ed25519 seed from the keystore's base64.
fn seed(text: &str, which: &str) -> Result<SigningKey, KeystoreError> {
    let bytes = Zeroizing::new(
        STANDARD
            .decode(text)
            .map_err(|_| damaged(format!("its `{which}` key is not base64")))?,
    );
    let seed: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        damaged(format!(
            "its `{which}` key is {} bytes long, not 32",
            bytes.len()
        ))
    })?;
    Ok(SigningKey::from_seed(seed))
}

/// Says what is wrong with the keystore's JSON without quoting it: serde's messages for a value
/// of the wrong type include the value, which here may be a secret key.
fn json_reason(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match error.classify() {
        Category::Eof => "it ends too early".into(),
        Category::Syntax | Category::Io => format!(
            "it is not valid JSON (line {}, column {})",
            error.line(),
            error.column()
        ),
        Category::Data => {
            let message = error.to_string();
            let safe = ["missing field", "unknown field", "duplicate field"];
            match message.split(" at line ").next() {
                Some(head) if safe.iter().any(|s| head.starts_with(s)) => {
                    format!("its JSON has a {}", head.replacen("field", "field:", 1))
                }
                _ => "its JSON is not a keystore's (a field has the wrong type)".into(),
            }
        }
    }
}

/// What a keystore or backup file's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The keystore's plaintext JSON.
    Plain,
    /// An ASCII-armored age file.
    Armored,
    /// A binary age file.
    Binary,
}

fn kind(bytes: &[u8]) -> Option<Kind> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let bytes = &bytes[start..];
    if bytes.starts_with(ARMOR_BEGIN.as_bytes()) {
        Some(Kind::Armored)
    } else if start == 0 && bytes.starts_with(AGE_MAGIC) {
        Some(Kind::Binary)
    } else if bytes.starts_with(b"{") {
        Some(Kind::Plain)
    } else {
        None
    }
}

/// Opens `dir/keystore`, checks its permissions and reads it (bounded) into wiped memory.
fn read_keystore_file(dir: &Path) -> Result<(PathBuf, Zeroizing<Vec<u8>>), KeystoreError> {
    let path = dir.join(KEYSTORE_FILE);
    let io_error = |source| KeystoreError::Io {
        path: path.clone(),
        source,
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(KeystoreError::Missing(dir.to_path_buf()));
        }
        Err(e) => return Err(io_error(e)),
    };
    // The permissions of the file actually opened, not of whatever the path names later.
    let metadata = file.metadata().map_err(io_error)?;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeystoreError::InsecurePermissions { path, mode });
    }
    if metadata.len() > KEYSTORE_BYTES_MAX {
        return Err(damaged(format!(
            "it is {} bytes long, and a keystore is at most {KEYSTORE_BYTES_MAX}",
            metadata.len()
        ))
        .at(&path));
    }
    // Reserved up front so that reading never reallocates and leaves a copy of the secrets.
    let mut bytes = Zeroizing::new(Vec::with_capacity(metadata.len() as usize + 1));
    file.take(KEYSTORE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > KEYSTORE_BYTES_MAX {
        return Err(damaged("it grew past the size of a keystore while being read").at(&path));
    }
    Ok((path, bytes))
}

/// Replaces `dir/name` with `bytes` so that a crash at any point leaves the old file or the new
/// one. The temporary file is created with mode 0600 (never wider, whatever the umask), so the
/// secrets are not readable by others even for a moment.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), KeystoreError> {
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.{}.tmp", hex(&random_array::<8>())));
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeystoreError::Io { path, source }
    };
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io_error(&temp))?;
        file.write_all(bytes).map_err(io_error(&temp))?;
        file.sync_all().map_err(io_error(&temp))?;
        drop(file);
        fs::rename(&temp, &path).map_err(io_error(&path))?;
        // The rename is durable only once the directory entry is.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))
    })();
    if result.is_err() {
        // Best effort: the temporary file may already have been renamed, or never created.
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Encrypts `plaintext` to `passphrase` as an ASCII-armored age file (age-encryption.org/v1,
/// one scrypt recipient with work factor `log_n`). Used for the keystore and for backups;
/// the standard `age -d FILE` (or `rage -d`) decrypts it.
///
/// An empty passphrase is refused (`EmptyPassphrase`): the `age` tool could not decrypt the file.
///
/// # Panics
///
/// If `log_n` is 0 or above [`SCRYPT_LOG_N_MAX`]: phr would refuse to decrypt such a file, and
/// callers pass the constants of this module.
pub fn encrypt_with_passphrase(
    plaintext: &[u8],
    passphrase: &SecretString,
    log_n: u8,
) -> Result<Vec<u8>, KeystoreError> {
    assert!(
        (1..=SCRYPT_LOG_N_MAX).contains(&log_n),
        "scrypt work factor {log_n} is outside 1..={SCRYPT_LOG_N_MAX}"
    );
    if passphrase.expose_secret().is_empty() {
        return Err(KeystoreError::EmptyPassphrase);
    }
    let mut recipient = age::scrypt::Recipient::new(passphrase.clone());
    recipient.set_work_factor(log_n);
    let encryptor = age::Encryptor::with_recipients(iter::once(&recipient as &dyn age::Recipient))
        .expect("one scrypt recipient is a valid recipient set");
    // age's binary form is about 200 bytes of header and 16 bytes of tag per 64 KiB chunk.
    let mut binary = Vec::with_capacity(plaintext.len() + 256 + plaintext.len() / 4096);
    let mut writer = encryptor
        .wrap_output(&mut binary)
        .expect("writing to memory cannot fail");
    writer
        .write_all(plaintext)
        .expect("writing to memory cannot fail");
    writer.finish().expect("writing to memory cannot fail");
    Ok(armor(&binary))
}

/// Decrypts an age file encrypted to a passphrase, armored or binary. A passphrase that does
/// not match is `WrongPassphrase`; a file demanding more work than [`SCRYPT_LOG_N_MAX`] is
/// `ExcessiveWork`; anything that is not an age passphrase file, or was changed, is `Damaged`.
pub fn decrypt_with_passphrase(
    file: &[u8],
    passphrase: &SecretString,
) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    let dearmored;
    let binary = match kind(file) {
        Some(Kind::Armored) => {
            dearmored = dearmor(file).map_err(damaged)?;
            dearmored.as_slice()
        }
        Some(Kind::Binary) => file,
        _ => return Err(damaged("it is not an age file encrypted with a passphrase")),
    };
    let decryptor = age::Decryptor::new_buffered(binary).map_err(decrypt_error)?;
    if !decryptor.is_scrypt() {
        return Err(damaged(
            "it is an age file encrypted to keys, not to a passphrase",
        ));
    }
    let mut identity = age::scrypt::Identity::new(passphrase.clone());
    identity.set_max_work_factor(SCRYPT_LOG_N_MAX);
    let mut reader = decryptor
        .decrypt(iter::once(&identity as &dyn age::Identity))
        .map_err(decrypt_error)?;
    // The plaintext is shorter than the file, so this never reallocates (and leaves no copy).
    let mut plaintext = Zeroizing::new(Vec::with_capacity(binary.len()));
    reader
        .read_to_end(&mut plaintext)
        .map_err(|_| damaged("its encrypted contents were changed or cut short"))?;
    Ok(plaintext)
}

fn decrypt_error(error: age::DecryptError) -> KeystoreError {
    use age::DecryptError as E;
    match error {
        // The passphrase's key did not open the file key: a wrong passphrase, or a changed stanza.
        E::DecryptionFailed | E::KeyDecryptionFailed | E::NoMatchingKeys => {
            KeystoreError::WrongPassphrase
        }
        E::ExcessiveWork { required, .. } => KeystoreError::ExcessiveWork { log_n: required },
        E::InvalidMac => damaged("its header was changed after it was encrypted"),
        E::InvalidHeader => damaged("its age header is malformed"),
        E::UnknownFormat => damaged("it is in an age format this version does not read"),
        E::Io(_) => damaged("it is cut short or malformed"),
        // The enum is non-exhaustive: plugin errors, and whatever later versions add.
        _ => damaged("age could not decrypt it"),
    }
}

/// The ASCII armor of an age file: strict PEM, 64 columns of padded standard base64 a line.
fn armor(binary: &[u8]) -> Vec<u8> {
    let lines = binary.len().div_ceil(ARMOR_COLUMNS / 4 * 3);
    let mut text = String::with_capacity(ARMOR_BEGIN.len() + ARMOR_END.len() + lines * 65 + 2);
    text.push_str(ARMOR_BEGIN);
    text.push('\n');
    for chunk in binary.chunks(ARMOR_COLUMNS / 4 * 3) {
        STANDARD.encode_string(chunk, &mut text);
        text.push('\n');
    }
    text.push_str(ARMOR_END);
    text.push('\n');
    text.into_bytes()
}

/// Reads the ASCII armor as age does: LF or CRLF line ends, every line of 64 columns but a
/// shorter last one, canonical padding. Whitespace around the armor is ignored.
fn dearmor(text: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(text)
        .map_err(|_| "its armor is not text".to_string())?
        .trim_matches(|c: char| c.is_ascii_whitespace());
    let mut lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    if lines.next() != Some(ARMOR_BEGIN) {
        return Err("its armor does not begin with the age marker line".into());
    }
    let lines: Vec<&str> = lines.collect();
    let Some((&last, body)) = lines.split_last() else {
        return Err("its armor is cut short".into());
    };
    if last != ARMOR_END {
        return Err("its armor is cut short (no end marker)".into());
    }
    let mut base64 = String::with_capacity(body.len() * ARMOR_COLUMNS);
    for (i, line) in body.iter().enumerate() {
        let is_last = i + 1 == body.len();
        let good_length = line.len() == ARMOR_COLUMNS
            || (is_last && !line.is_empty() && line.len() < ARMOR_COLUMNS && line.len() % 4 == 0);
        if !good_length {
            return Err(format!(
                "line {} of its armor is not a line of 64 base64 characters",
                i + 2
            ));
        }
        base64.push_str(line);
    }
    STANDARD
        .decode(&base64)
        .map_err(|_| "its armor is not valid base64".into())
}

#[cfg(test)]
mod tests {
    use std::{
        process::{Command, Stdio},
        time::{Duration, Instant},
    };

    use proptest::prelude::*;

    use super::*;

    /// A work factor low enough to run many decryptions in a test.
    const CHEAP_LOG_N: u8 = 10;

    fn secret(text: &str) -> SecretString {
        SecretString::from(text)
    }

    fn no_passphrase() -> impl FnMut() -> Result<SecretString, KeystoreError> {
        || panic!("a plaintext keystore never asks for a passphrase")
    }

    fn assert_same(a: &Keystore, b: &Keystore) {
        assert_eq!(a.device.seed(), b.device.seed());
        assert_eq!(a.age.recipient(), b.age.recipient());
        assert_eq!(
            a.root.as_ref().map(|k| *k.seed()),
            b.root.as_ref().map(|k| *k.seed())
        );
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Writes `bytes` as the keystore of `dir`, with safe permissions.
    fn plant(dir: &Path, bytes: &[u8]) {
        let path = dir.join(KEYSTORE_FILE);
        fs::write(&path, bytes).unwrap();
        set_mode(&path, 0o600);
    }

    /// The secret texts a keystore file must never show in clear.
    fn secret_texts(keystore: &Keystore) -> Vec<String> {
        let mut texts = vec![
            STANDARD.encode(keystore.device.seed()),
            keystore.age.to_secret_string().expose_secret().to_owned(),
        ];
        texts.extend(
            keystore
                .root
                .as_ref()
                .map(|root| STANDARD.encode(root.seed())),
        );
        texts
    }

    #[test]
    fn plain_keystore_round_trips() {
        for with_root in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let keystore = Keystore::generate(with_root);
            keystore.write(dir.path(), None).unwrap();
            assert!(!Keystore::is_encrypted(dir.path()).unwrap());
            let again = Keystore::read(dir.path(), &mut no_passphrase()).unwrap();
            assert_same(&keystore, &again);
            assert_eq!(again.root.is_some(), with_root);
            let text = fs::read_to_string(dir.path().join(KEYSTORE_FILE)).unwrap();
            assert!(
                text.starts_with(r#"{"format":"phr-keystore/1","device":""#),
                "{text}"
            );
            assert_eq!(text.contains(r#""root":"#), with_root, "{text}");
        }
    }

    #[test]
    fn encrypted_keystore_round_trips_and_asks_once() {
        let dir = tempfile::tempdir().unwrap();
        let keystore = Keystore::generate(true);
        keystore
            .write(dir.path(), Some(&secret("correct horse")))
            .unwrap();
        assert!(Keystore::is_encrypted(dir.path()).unwrap());
        let mut asked = 0;
        let again = Keystore::read(dir.path(), &mut || {
            asked += 1;
            Ok(secret("correct horse"))
        })
        .unwrap();
        assert_eq!(asked, 1);
        assert_same(&keystore, &again);
        let file = fs::read_to_string(dir.path().join(KEYSTORE_FILE)).unwrap();
        assert!(
            file.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"),
            "{file}"
        );
        assert!(
            file.ends_with("-----END AGE ENCRYPTED FILE-----\n"),
            "{file}"
        );
    }

    #[test]
    fn encrypted_keystore_hides_the_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let keystore = Keystore::generate(true);
        keystore.write(dir.path(), Some(&secret("pass"))).unwrap();
        let file = fs::read_to_string(dir.path().join(KEYSTORE_FILE)).unwrap();
        for text in secret_texts(&keystore) {
            assert!(
                !file.contains(&text),
                "the encrypted keystore shows a secret"
            );
        }
    }

    #[test]
    fn wrong_passphrase_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        Keystore::generate(true)
            .write(dir.path(), Some(&secret("right")))
            .unwrap();
        let path = dir.path().join(KEYSTORE_FILE);
        let before = fs::read(&path).unwrap();
        let err = Keystore::read(dir.path(), &mut || Ok(secret("wrong"))).unwrap_err();
        assert!(matches!(err, KeystoreError::WrongPassphrase), "{err}");
        assert!(err.to_string().contains("try again"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no stray files"
        );
    }

    #[test]
    fn an_empty_passphrase_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = Keystore::generate(false)
            .write(dir.path(), Some(&secret("")))
            .unwrap_err();
        assert!(matches!(err, KeystoreError::EmptyPassphrase), "{err}");
        assert!(!dir.path().join(KEYSTORE_FILE).exists());
    }

    #[test]
    fn a_declined_prompt_is_passed_through() {
        let dir = tempfile::tempdir().unwrap();
        Keystore::generate(false)
            .write(dir.path(), Some(&secret("right")))
            .unwrap();
        let err =
            Keystore::read(dir.path(), &mut || Err(KeystoreError::PassphraseNeeded)).unwrap_err();
        assert!(matches!(err, KeystoreError::PassphraseNeeded), "{err}");
    }

    #[test]
    fn missing_keystore_says_how_to_get_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = Keystore::read(dir.path(), &mut no_passphrase()).unwrap_err();
        assert!(
            matches!(&err, KeystoreError::Missing(d) if d == dir.path()),
            "{err}"
        );
        let message = err.to_string();
        assert!(message.contains("phr backup restore FILE") && message.contains("phr init"));
        assert!(matches!(
            Keystore::is_encrypted(dir.path()),
            Err(KeystoreError::Missing(_))
        ));
    }

    #[test]
    fn permissions_are_0600_after_write_even_over_a_wider_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYSTORE_FILE);
        Keystore::generate(false).write(dir.path(), None).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        set_mode(&path, 0o644);
        Keystore::generate(false)
            .write(dir.path(), Some(&secret("p")))
            .unwrap();
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn a_keystore_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Keystore::generate(false).write(dir.path(), None).unwrap();
        let path = dir.path().join(KEYSTORE_FILE);
        for mode in [0o640, 0o604, 0o620] {
            set_mode(&path, mode);
            let err = Keystore::read(dir.path(), &mut no_passphrase()).unwrap_err();
            assert!(
                matches!(&err, KeystoreError::InsecurePermissions { mode: m, .. } if *m == mode),
                "{err}"
            );
            assert!(
                err.to_string()
                    .contains(&format!("chmod 600 {}", path.display())),
                "{err}"
            );
        }
        set_mode(&path, 0o400);
        Keystore::read(dir.path(), &mut no_passphrase()).unwrap();
    }

    #[test]
    fn damaged_plain_keystores_are_reported_without_their_secrets() {
        let keystore = Keystore::generate(true);
        let good = keystore.to_bytes();
        let text = std::str::from_utf8(&good).unwrap();
        let age = keystore.age.to_secret_string().expose_secret().to_owned();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() / 2].to_vec()),
            ("garbage", b"\x00\x9f not a keystore".to_vec()),
            ("empty", Vec::new()),
            ("a bare age identity", age.clone().into_bytes()),
            ("a string", format!("\"{age}\"").into_bytes()),
            (
                "wrong type",
                text.replacen("\"phr-keystore/1\"", "7", 1).into_bytes(),
            ),
            (
                "newer format",
                text.replace("phr-keystore/1", "phr-keystore/2")
                    .into_bytes(),
            ),
            (
                "other format",
                text.replace("phr-keystore/1", "something").into_bytes(),
            ),
            (
                "short seed",
                text.replacen("\"device\":\"", "\"device\":\"AAAA", 1)
                    .into_bytes(),
            ),
            (
                "bad age",
                text.replace("AGE-SECRET-KEY-1", "AGE-SECRET-KEY-2")
                    .into_bytes(),
            ),
            (
                "extra field",
                text.replacen('{', "{\"extra\":1,", 1).into_bytes(),
            ),
            (
                "no device",
                text.replacen("\"device\"", "\"devise\"", 1).into_bytes(),
            ),
        ];
        for (what, bytes) in cases {
            let dir = tempfile::tempdir().unwrap();
            plant(dir.path(), &bytes);
            let err = Keystore::read(dir.path(), &mut no_passphrase()).unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(&err, KeystoreError::Damaged { path: Some(p), .. } if p.ends_with(KEYSTORE_FILE)),
                "{what}: {message}"
            );
            assert!(
                message.contains("damaged") && message.contains("phr backup restore"),
                "{what}: {message}"
            );
            for secret in secret_texts(&keystore) {
                assert!(
                    !message.contains(&secret),
                    "{what}: the error shows a secret: {message}"
                );
            }
        }
    }

    #[test]
    fn a_newer_keystore_format_says_to_upgrade() {
        let text = String::from_utf8(Keystore::generate(false).to_bytes().to_vec()).unwrap();
        let newer = text
            .replace("/1", "/2")
            .replacen('{', "{\"recovery\":\"new\",", 1);
        let err = Keystore::from_bytes(newer.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("upgrade phr"), "{err}");
    }

    #[test]
    fn truncated_or_garbled_encrypted_keystores_are_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let keystore = Keystore::generate(false);
        let file =
            encrypt_with_passphrase(&keystore.to_bytes(), &secret("p"), CHEAP_LOG_N).unwrap();
        let lines: Vec<&[u8]> = file.split(|&b| b == b'\n').collect();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("half", file[..file.len() / 2].to_vec()),
            (
                "no end marker",
                file[..file.len() - ARMOR_END.len() - 1].to_vec(),
            ),
            (
                "a line dropped",
                [lines[..2].concat(), lines[3..].join(&b'\n')].join(&b'\n'),
            ),
            (
                "garbage after the armor",
                [file.as_slice(), b"junk\n"].concat(),
            ),
            ("binary cut short", {
                let binary = dearmor(&file).unwrap();
                binary[..binary.len() - 10].to_vec()
            }),
        ];
        for (what, bytes) in cases {
            plant(dir.path(), &bytes);
            let err = Keystore::read(dir.path(), &mut || Ok(secret("p"))).unwrap_err();
            assert!(
                matches!(err, KeystoreError::Damaged { .. }),
                "{what}: {err}"
            );
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_in_the_armored_body_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keystore = Keystore::generate(true);
        let file =
            encrypt_with_passphrase(&keystore.to_bytes(), &secret("p"), CHEAP_LOG_N).unwrap();
        let body = ARMOR_BEGIN.len() + 1..file.len() - ARMOR_END.len() - 1;
        for i in body.filter(|&i| file[i] != b'\n') {
            let mut bytes = file.clone();
            bytes[i] ^= 0x01;
            plant(dir.path(), &bytes);
            let err = Keystore::read(dir.path(), &mut || Ok(secret("p"))).unwrap_err();
            assert!(
                matches!(
                    err,
                    KeystoreError::Damaged { .. } | KeystoreError::WrongPassphrase
                ),
                "byte {i}: {err}"
            );
        }
    }

    #[test]
    fn a_file_demanding_too_much_work_is_refused_before_the_work() {
        let file = encrypt_with_passphrase(b"x", &secret("p"), CHEAP_LOG_N).unwrap();
        let binary = dearmor(&file).unwrap();
        let header_end = binary.windows(4).position(|w| w == b"\n---").unwrap();
        let header = std::str::from_utf8(&binary[..header_end]).unwrap();
        let greedy = header.replacen(" 10\n", " 30\n", 1);
        assert_ne!(greedy, header);
        let binary = [greedy.as_bytes(), &binary[header_end..]].concat();
        let started = Instant::now();
        let err = decrypt_with_passphrase(&binary, &secret("p")).unwrap_err();
        assert!(
            matches!(err, KeystoreError::ExcessiveWork { log_n: 30 }),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the work was not refused up front"
        );
    }

    #[test]
    fn files_that_are_not_passphrase_age_files_are_damaged() {
        let to_key = {
            let recipient = AgeIdentity::generate().recipient();
            let encryptor = age::Encryptor::with_recipients(iter::once(
                recipient.as_age() as &dyn age::Recipient
            ))
            .unwrap();
            let mut out = Vec::new();
            let mut writer = encryptor.wrap_output(&mut out).unwrap();
            writer.write_all(b"secret").unwrap();
            writer.finish().unwrap();
            out
        };
        for (what, bytes) in [
            ("encrypted to a key", to_key),
            ("plain text", b"hello".to_vec()),
            (
                "a keystore's JSON",
                Keystore::generate(false).to_bytes().to_vec(),
            ),
        ] {
            let err = decrypt_with_passphrase(&bytes, &secret("p")).unwrap_err();
            assert!(
                matches!(err, KeystoreError::Damaged { path: None, .. }),
                "{what}: {err}"
            );
        }
    }

    #[test]
    fn armor_is_read_as_age_reads_it() {
        let file = encrypt_with_passphrase(&[7; 500], &secret("p"), CHEAP_LOG_N).unwrap();
        let text = std::str::from_utf8(&file).unwrap();
        assert!(text.lines().skip(1).all(|line| line.len() <= 64));
        let crlf = text.replace('\n', "\r\n");
        let padded = format!("\n  {text}\n\n");
        for variant in [crlf.as_str(), padded.as_str()] {
            let plain = decrypt_with_passphrase(variant.as_bytes(), &secret("p")).unwrap();
            assert_eq!(*plain, vec![7; 500]);
        }
        // Rewrapped at 76 columns: valid base64, but not the armor age writes or accepts.
        let base64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        let rewrapped: Vec<&str> = base64
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let rewrapped = format!("{ARMOR_BEGIN}\n{}\n{ARMOR_END}\n", rewrapped.join("\n"));
        let err = decrypt_with_passphrase(rewrapped.as_bytes(), &secret("p")).unwrap_err();
        assert!(err.to_string().contains("64 base64 characters"), "{err}");
    }

    #[test]
    fn debug_never_prints_secrets() {
        let keystore = Keystore::generate(true);
        let debug = format!("{keystore:?}");
        for text in secret_texts(&keystore) {
            assert!(!debug.contains(&text), "{debug}");
        }
    }

    proptest! {
        #[test]
        fn keystore_bytes_round_trip(device in any::<[u8; 32]>(), root in any::<Option<[u8; 32]>>()) {
            let keystore = Keystore {
                device: SigningKey::from_seed(&device),
                age: AgeIdentity::generate(),
                root: root.map(|seed| SigningKey::from_seed(&seed)),
            };
            let again = Keystore::from_bytes(&keystore.to_bytes()).unwrap();
            assert_same(&keystore, &again);
        }

        #[test]
        fn armor_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let armored = armor(&bytes);
            prop_assert_eq!(dearmor(&armored).unwrap(), bytes);
        }
    }

    // --- The standard `age` tool ---------------------------------------------------------------

    /// How long the `age` tool may take before a test gives up on it.
    const AGE_TOOL_TIMEOUT_MS: u64 = 20_000;

    /// Fails the test, saying how to fix it, if the `age` tool is not installed.
    fn require_age_tool() {
        let found = Command::new("age")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if found.is_err() {
            panic!(
                "the `age` command is not on PATH: install Debian's `age` package \
                 (`apt-get install age`); CI installs it"
            );
        }
    }

    /// Runs `command` in a pseudo-terminal made by util-linux `script` (age reads passphrases
    /// only from a terminal), typing `input` into it, and waits at most AGE_TOOL_TIMEOUT_MS.
    fn run_in_terminal(command: &str, input: &str) {
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", command, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("util-linux `script` runs");
        // Dropping stdin after the input tells `script` there is nothing more to type.
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(AGE_TOOL_TIMEOUT_MS);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{command}` did not finish within {AGE_TOOL_TIMEOUT_MS} ms");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = child.wait_with_output().unwrap();
        assert!(
            status.success(),
            "`{command}` failed ({status}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn the_age_tool_decrypts_what_we_encrypt() {
        require_age_tool();
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("in.age"), dir.path().join("out"));
        let file =
            encrypt_with_passphrase(b"phr keystore test\n", &secret("tool words"), 14).unwrap();
        fs::write(&input, file).unwrap();
        let command = format!("age -d -o '{}' '{}'", output.display(), input.display());
        run_in_terminal(&command, "tool words\n");
        assert_eq!(fs::read(&output).unwrap(), b"phr keystore test\n");
    }

    #[test]
    fn we_decrypt_what_the_age_tool_encrypts() {
        require_age_tool();
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, b"from age\n").unwrap();
        for armor_flag in ["-a", ""] {
            let output = dir.path().join(format!("out{armor_flag}.age"));
            let command = format!(
                "age -p {armor_flag} -o '{}' '{}'",
                output.display(),
                plain.display()
            );
            run_in_terminal(&command, "tool words\ntool words\n");
            let file = fs::read(&output).unwrap();
            assert_eq!(file.starts_with(ARMOR_BEGIN.as_bytes()), armor_flag == "-a");
            let decrypted = decrypt_with_passphrase(&file, &secret("tool words")).unwrap();
            assert_eq!(*decrypted, b"from age\n");
        }
        let file = fs::read(dir.path().join("out-a.age")).unwrap();
        let err = decrypt_with_passphrase(&file, &secret("other words")).unwrap_err();
        assert!(matches!(err, KeystoreError::WrongPassphrase), "{err}");
    }
}
