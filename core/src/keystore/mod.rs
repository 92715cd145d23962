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
//! The ASCII armor is age's own (`age::armor`); the test suite checks that the real `age` tool
//! decrypts what this module writes, and that this module decrypts what `age` writes.

use std::{
    fs::File,
    io::{self, Read, Write},
    iter,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use age::{
    armor::{ArmoredReader, ArmoredWriter, Format},
    secrecy::{ExposeSecret, SecretString},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{
    keys::{AgeIdentity, SigningKey},
    owner_only,
};

/// The keystore's file name inside a node's home directory.
pub const KEYSTORE_FILE: &str = "keystore";

/// The scrypt work factor (log2 N) of an encrypted keystore: 2^17, with age's r = 8 and p = 1
/// (128 MiB of memory), the minimum the OWASP Password Storage Cheat Sheet gives for scrypt.
///
/// Every `phr` command on a home with a passphrase opens the keystore, so this is a trade-off
/// between that wait and the cost to an attacker who copied the file and guesses passphrases
/// offline, who pays the same per guess on like hardware. Measured with `cargo bench -p
/// phr-tests --bench keystore` on the project's build machine (one shared AMD EPYC core):
/// 0.5 to 0.65 s to unlock at 2^17, against 0.2 to 0.3 s at 2^16 (the value before) and 0.9 to
/// 1.3 s at 2^18; docs/FORMAT.md has the table. 2^16 is under OWASP's floor; 2^18 would make
/// each command wait about a second. Keystores written before keep the factor they were written
/// with (reading accepts up to [`SCRYPT_LOG_N_MAX`]) until written again (`phr backup restore`).
pub const KEYSTORE_SCRYPT_LOG_N: u8 = 17;

/// The scrypt work factor (log2 N) of a backup: 2^18 (256 MiB), the Go `age` tool's own default
/// for passphrases. A backup is opened rarely and may be stored anywhere, so it gets about a
/// second of work per guess (measured 0.9 to 1.3 s, as above), twice the keystore's; more would
/// need 512 MiB or more to restore, which a small device may not have.
pub const BACKUP_SCRYPT_LOG_N: u8 = 18;

/// The largest scrypt work factor accepted when decrypting, the same cap as the Go `age` tool's
/// (2^22 is 4 GiB of memory and about 15 s). The Rust age library would otherwise accept whatever
/// it calibrates to the machine plus 16x; a file demanding 2^23 or more is refused before any
/// work instead of letting a hostile file stall or exhaust the machine.
pub const SCRYPT_LOG_N_MAX: u8 = 22;

/// The largest keystore file read, in bytes: a keystore is a few hundred bytes, so anything
/// much bigger is not one and is refused before it is read into memory.
pub const KEYSTORE_BYTES_MAX: u64 = 64 * 1024;

/// The longest passphrase handed to a node daemon through a pipe (`phr-node
/// --passphrase-stdin`), in bytes: far longer than any passphrase a person types, and inside the
/// smallest buffer a Linux pipe has (one 4 KiB page), so writing it never waits for the reader.
pub const PASSPHRASE_BYTES_MAX: usize = 1024;

/// The format name inside the keystore's JSON.
const KEYSTORE_FORMAT: &str = "phr-keystore/1";

/// Room for the keystore's JSON, reserved up front so that writing it never reallocates and
/// leaves a stray copy of the secrets in freed memory.
const KEYSTORE_JSON_CAPACITY: usize = 512;

/// How every age file starts (binary format, any version).
const AGE_MAGIC: &[u8] = b"age-encryption.org/";

/// The first line of an ASCII-armored age file.
const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";

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
        Keystore::from_file_bytes(&bytes, passphrase, SCRYPT_LOG_N_MAX).map_err(|e| e.at(&path))
    }

    /// A keystore file's bytes, plain or passphrase-encrypted, as [`Keystore::read`] takes them
    /// once the file is read: the one decoder of a keystore file, also called by the fuzz
    /// targets (with a lower `log_n_max`, so that a guessed work factor costs them little).
    pub(crate) fn from_file_bytes(
        bytes: &[u8],
        passphrase: &mut dyn FnMut() -> Result<SecretString, KeystoreError>,
        log_n_max: u8,
    ) -> Result<Keystore, KeystoreError> {
        match kind(bytes) {
            Some(Kind::Plain) => Keystore::from_bytes(bytes),
            Some(Kind::Armored | Kind::Binary) => {
                let secret = passphrase()?;
                decrypt_with_work_max(bytes, &secret, log_n_max)
                    .and_then(|plain| Keystore::from_bytes(&plain))
            }
            None => Err(damaged(
                "it is neither a phr keystore nor a passphrase-encrypted age file",
            )),
        }
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

/// Replaces `dir/name` with `bytes` through [`owner_only::write_atomically`]: a crash at any
/// point leaves the old file or the new one, and the temporary file is created with mode 0600
/// (never wider, whatever the umask), so the secrets are not readable by others even for a moment.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), KeystoreError> {
    let path = dir.join(name);
    owner_only::write_atomically(&path, bytes).map_err(|source| KeystoreError::Io { path, source })
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
    // Armored: about 4/3 of the binary form, which adds ~200 bytes and 16 per 64 KiB chunk.
    let mut file = Vec::with_capacity(plaintext.len() * 4 / 3 + 512);
    let armored = ArmoredWriter::wrap_output(&mut file, Format::AsciiArmor)
        .expect("writing to memory cannot fail");
    let mut writer = encryptor
        .wrap_output(armored)
        .expect("writing to memory cannot fail");
    writer
        .write_all(plaintext)
        .expect("writing to memory cannot fail");
    writer
        .finish()
        .and_then(|armored| armored.finish())
        .expect("writing to memory cannot fail");
    Ok(file)
}

/// Decrypts an age file encrypted to a passphrase, armored or binary. A passphrase that does
/// not match is `WrongPassphrase`; a file demanding more work than [`SCRYPT_LOG_N_MAX`] is
/// `ExcessiveWork`; anything that is not an age passphrase file, or was changed, is `Damaged`.
pub fn decrypt_with_passphrase(
    file: &[u8],
    passphrase: &SecretString,
) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    decrypt_with_work_max(file, passphrase, SCRYPT_LOG_N_MAX)
}

/// [`decrypt_with_passphrase`], refusing files that demand a scrypt work factor over `log_n_max`
/// (the fuzz targets pass a low one; everything else passes [`SCRYPT_LOG_N_MAX`]).
pub(crate) fn decrypt_with_work_max(
    file: &[u8],
    passphrase: &SecretString,
    log_n_max: u8,
) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    if !matches!(kind(file), Some(Kind::Armored | Kind::Binary)) {
        return Err(damaged("it is not an age file encrypted with a passphrase"));
    }
    // age's reader takes armored and binary files alike; whitespace a mail client or an editor
    // put before the armor is dropped here, as `kind` allowed it.
    let start = file
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    let decryptor =
        age::Decryptor::new_buffered(ArmoredReader::new(&file[start..])).map_err(decrypt_error)?;
    if !decryptor.is_scrypt() {
        return Err(damaged(
            "it is an age file encrypted to keys, not to a passphrase",
        ));
    }
    let mut identity = age::scrypt::Identity::new(passphrase.clone());
    identity.set_max_work_factor(log_n_max);
    let mut reader = decryptor
        .decrypt(iter::once(&identity as &dyn age::Identity))
        .map_err(decrypt_error)?;
    // The plaintext is shorter than the file, so this never reallocates (and leaves no copy).
    let mut plaintext = Zeroizing::new(Vec::with_capacity(file.len()));
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

#[cfg(test)]
mod tests;
