//! The home directory: this node's keys, its vault, and the records it holds.
//!
//! This is the one persistence boundary of phr: the CLI opens a [`Home`], loads the [`Record`]
//! and hands it back to [`Home::save`]; it never touches files itself.
//!
//! ```text
//! HOME/          0700
//!   keystore     this node's secrets (Ed25519 signing key, age identity, record root key),
//!                optionally an age passphrase file
//!   vault.redb   sealed blobs, the consent ledger, and this node's settings sealed to it
//!   lock         held while a command uses the home
//!   control.json where the running node's control API listens, and its token (phr-node)
//!   node.log     the log of a node started with `phr node start`
//!   peers.json   addresses of peers the node dialled or met (phr-node)
//!   peers.log    addresses remembered since peers.json was last written, a line each (phr-node)
//!   medicines.csv  the medicines table the user imported (`phr medicines import`)
//! ```
//!
//! Every file is created 0600 ([`crate::owner_only`]); opening a home checks the directory and
//! these files, tightens what an older phr left readable by others, and refuses what others may
//! change (`permissions`).
//!
//! At rest there is only ciphertext and the keystore. Saving turns each section's new changes
//! into one sealed blob ([`crate::blob`]) under the section's current key, and commits them
//! durably before returning. Opening the record decrypts and applies every stored blob; a blob
//! that fails its checks is reported ([`Home::warnings`]) and skipped, and every other blob
//! still loads.

mod audit;
mod backup;
mod contacts;
mod emergency;
mod held;
mod intake;
mod medicines;
mod permissions;
mod provider;
mod read_marks;
mod schedule;
mod sharing;

use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
};

use age::secrecy::SecretString;
use automerge::ActorId;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub(crate) use backup::check_contents as check_backup_contents;
pub use contacts::Contact;
pub use held::HeldEntry;
pub use intake::{PENDING_RECORD_BYTES_MAX, PENDING_RECORDS_MAX};
pub use medicines::{ImportTableError, MEDICINES_TABLE_FILE};
pub use permissions::HOME_FILES;
pub use provider::{
    AccessEnded, InboxEntry, InboxItem, PatientPage, PatientQuery, PatientRecord, ProviderError,
    SharedRecord, Waiting,
};
pub use read_marks::READ_MARKS_MAX;
pub use schedule::Booking;
pub use sharing::Revoked;

use crate::{
    blob::BlobError,
    card::{Card, CardError},
    consent::{ConsentError, Keyring},
    keys::{KeyError, PeerId, RecordId, hex, random_array},
    keystore::{KEYSTORE_FILE, Keystore, KeystoreError},
    ledger::{Ledger, LedgerError},
    nhs::{NHS_NUMBER_SYSTEM, NhsNumber},
    owner_only,
    party::{Party, Role},
    record::{Author, Record, RecordError, RecordMeta, Stamp},
    replica::{Replica, ReplicaError, Welcome},
    vault::{Batch, LocalKey, VAULT_FILE, Vault, VaultError},
};

pub use crate::replica::{BLOBS_BEFORE_COMPACTION, COMPACT_SAVE_BYTES_MIN};

/// This node, as the record's versions and contact cards name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The PeerId, as text.
    pub id: String,
    /// Who writes from here: the patient's name or the organisation's.
    pub name: String,
    /// The name this node goes by in consent ledgers and on its card. A patient device uses a
    /// device label (not the patient's name), because relays can read the ledger.
    pub label: String,
    /// Patient device, provider or relay.
    pub role: Role,
    /// The provider's ODS organisation code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ods: Option<String>,
    /// The Automerge actor of this home's writes: the PeerId's first 16 bytes and 8 random ones,
    /// so a home restored from a backup never reuses the lost device's actor.
    pub actor: String,
}

impl Device {
    /// The author stamped on every write this device makes.
    pub fn author(&self) -> Author {
        Author {
            id: self.id.clone(),
            name: self.name.clone(),
        }
    }

    fn actor(&self) -> ActorId {
        ActorId::from(crate::keys::unhex(&self.actor).unwrap_or_else(|| self.actor.clone().into()))
    }
}

/// The patient details given to `phr init`.
#[derive(Clone, Debug)]
pub struct NewPatient {
    /// Full name, e.g. "Fletcher Hyatt".
    pub name: String,
    /// Validated NHS number.
    pub nhs_number: Option<NhsNumber>,
    /// Date of birth.
    pub birth_date: Option<jiff::civil::Date>,
    /// The label of this first device (default [`FIRST_DEVICE_LABEL`]).
    pub device_label: Option<String>,
}

/// The label a patient's first device gets unless one is given.
pub const FIRST_DEVICE_LABEL: &str = "first device";

/// The file a command holds locked (`flock`) while it uses the home.
pub const LOCK_FILE: &str = "lock";

/// The log of a node daemon started with `phr node start`.
pub const NODE_LOG_FILE: &str = "node.log";

/// The addresses of peers a node daemon dialled or met, to dial again after a restart.
pub const PEERS_FILE: &str = "peers.json";

/// The journal of [`PEERS_FILE`]: each address remembered since it was last written, one JSON
/// line each, merged into it when the node starts or the journal grows large.
pub const PEERS_JOURNAL_FILE: &str = "peers.log";

/// What can go wrong with a home directory.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// No identity in the directory.
    #[error(
        "no phr home at {0}: run `phr init --name NAME` (or `phr init --provider --name ORG`) first, or pass --home"
    )]
    NotInitialised(PathBuf),
    /// `init` on a directory that already has an identity.
    #[error("{0} already holds a phr identity; use another --home, or keep using this one")]
    AlreadyInitialised(PathBuf),
    /// Another phr command holds the home's lock.
    #[error("another phr command is using {0}; wait for it to finish and try again")]
    Busy(PathBuf),
    /// A provider home has no record of its own.
    #[error(
        "this home ({0}) holds no record of its own; record commands run on a patient's device"
    )]
    NoRecord(PathBuf),
    /// Users other than the owner may change the home directory or a file phr keeps in it, so
    /// what is there may not be what phr wrote.
    #[error(
        "{} can be changed by other users (mode {mode:04o}), so what is in this home may not be \
         what phr wrote: if nobody else could have changed it, run `chmod 700 {}; chmod 600 {}/*`; \
         if someone could, restore a backup into a new home instead \
         (`phr --home NEW_DIR backup restore FILE`)",
        .path.display(), .dir.display(), .dir.display()
    )]
    WritableByOthers {
        /// The directory or file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The home directory.
        dir: PathBuf,
    },
    /// Others may read the home directory or a file in it, and phr could not make it private
    /// (it belongs to another user).
    #[error(
        "{} may be read by other users (mode {mode:04o}) and phr cannot change that ({source}): \
         its owner should run `chmod 700 {}; chmod 600 {}/*`",
        .path.display(), .dir.display(), .dir.display()
    )]
    CannotRestrict {
        /// The directory or file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The home directory.
        dir: PathBuf,
        /// Why the mode could not be changed.
        source: io::Error,
    },
    /// A file could not be read or written.
    #[error("cannot read or write {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Something in the home is not what phr wrote.
    #[error("{what} is damaged: {reason}. Restore the home with `phr backup restore FILE`")]
    Damaged {
        /// What.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The keystore could not be opened.
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// The vault could not be read or written.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The record's stored changes could not be loaded or changed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The consent ledger refused an operation.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Keys could not be kept in step with consent.
    #[error(transparent)]
    Consent(#[from] ConsentError),
    /// A blob could not be sealed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// A contact card was refused.
    #[error(transparent)]
    Card(#[from] CardError),
    /// An id could not be parsed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Resources to import were refused.
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
    /// No contact matches.
    #[error(
        "no contact matches `{0}`; see `phr contacts list`, or add one with `phr contacts add CARD`"
    )]
    UnknownContact(String),
    /// Several contacts match.
    #[error("`{query}` matches several contacts ({matches}); use an alias or the full peer id")]
    AmbiguousContact {
        /// What was asked for.
        query: String,
        /// The names that match.
        matches: String,
    },
    /// The command needs the record root key, which this device does not hold.
    #[error(
        "only the device holding the record's root key (the patient's first device, or one restored \
         from its backup) can add or remove devices"
    )]
    NoRootKey,
    /// The command needs a device the record lists as an owner.
    #[error(
        "this device is not one of the record's owner devices, so it cannot change who may read the record"
    )]
    NotOwner,
    /// A card of the wrong kind of node for the command.
    #[error("{0}")]
    WrongRole(String),
    /// A patient's record cannot be opened, read or written from this node.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// Nothing matches a grant, device or contact to act on.
    #[error("{0}")]
    NothingToDo(String),
    /// The imported medicines table no longer reads (changed since it was imported).
    #[error(
        "the imported medicines table {} cannot be read: {problem}; import a good table over it \
         (`phr medicines import FILE`), or remove it (`phr medicines import --remove`)",
        .path.display()
    )]
    MedicinesTable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: crate::medicines::TableError,
    },
}

type Result<T, E = HomeError> = std::result::Result<T, E>;

/// A replica's errors, as the home's own: the CLI tells the user the same thing either way.
impl From<ReplicaError> for HomeError {
    fn from(error: ReplicaError) -> Self {
        match error {
            ReplicaError::Store(e) => HomeError::Vault(e),
            ReplicaError::Ledger(e) => HomeError::Ledger(e),
            ReplicaError::Consent(e) => HomeError::Consent(e),
            ReplicaError::Blob(e) => HomeError::Blob(e),
            ReplicaError::Record(e) => HomeError::Record(e),
            ReplicaError::NotOwner => HomeError::NotOwner,
            ReplicaError::Unreadable(why) => HomeError::NothingToDo(format!(
                "this write was not saved, because every reader would refuse it: {why}; split \
                 the import into smaller files"
            )),
            ReplicaError::NotHeld(id) => HomeError::NothingToDo(format!(
                "no held entry {id}; the list of held entries shows their ids"
            )),
            refused @ ReplicaError::Refused { .. } => HomeError::Damaged {
                what: "an item received from a peer".into(),
                reason: refused.to_string(),
            },
        }
    }
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> HomeError + '_ {
    move |source| HomeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The record a patient's home holds.
#[derive(Debug)]
struct Held {
    meta: RecordMeta,
    replica: Replica,
}

/// The vault's local entry naming the record a patient's further device joins.
const JOIN: &str = "join";

/// The settings stored (sealed) in the vault under "record".
#[derive(Debug, Serialize, Deserialize)]
struct RecordInfo {
    id: String,
    meta: RecordMeta,
}

/// An open home directory, locked against other phr commands while open.
#[derive(Debug)]
pub struct Home {
    dir: PathBuf,
    device: Device,
    keystore: Keystore,
    vault: Vault,
    held: Option<Held>,
    warnings: Vec<String>,
    _lock: File,
}

/// A home closed by [`Home::park`]: its keys in memory, its vault and lock released.
pub struct Parked {
    dir: PathBuf,
    /// Taken while reopening; put back if that fails.
    keystore: Option<Keystore>,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Parked {
    /// Opens the home again, reading everything another process stored meanwhile. If the home
    /// is still in use ([`HomeError::Busy`]) or cannot be opened, the parked home keeps its keys,
    /// to try again later.
    pub fn reopen(&mut self) -> Result<Home> {
        let lock = lock(&self.dir)?;
        let keystore = self
            .keystore
            .take()
            .expect("a parked home holds its keys until it is reopened");
        Home::open_unlocked(&self.dir, lock, keystore).map_err(|failed| {
            let (keystore, error) = *failed;
            self.keystore = Some(keystore);
            error
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Asks for the keystore's passphrase when it is encrypted.
pub type PassphrasePrompt<'a> = &'a mut dyn FnMut() -> Result<SecretString, KeystoreError>;

impl Home {
    /// Creates a patient's first device and their new record (with its Patient resource), owned
    /// by this device, whose keystore holds the record's root key.
    pub fn init_patient(
        dir: &Path,
        patient: &NewPatient,
        passphrase: Option<&SecretString>,
        now: Timestamp,
    ) -> Result<(Home, Record)> {
        let keystore = Keystore::generate(true);
        let label = patient
            .device_label
            .as_deref()
            .unwrap_or(FIRST_DEVICE_LABEL);
        let device = new_device(&keystore, &patient.name, label, Role::Patient, None);
        let mut home = Self::create(dir, keystore, device, None, passphrase)?;
        let root = home
            .keystore
            .root
            .as_ref()
            .expect("generated with a root key");
        let id = RecordId::of_root(&root.peer_id());
        // The first `audit` key, made now so that the first device's details are sealed under
        // it; the first save announces it to this device.
        let audit = crate::keys::SectionKey::generate();
        let ledger = Ledger::create_sealed(root, home.party(), now.as_millisecond(), &audit)?;
        let patient_id = uuid::Uuid::new_v4().to_string();
        let meta = RecordMeta {
            id: id.to_string(),
            subject: Some(format!("Patient/{patient_id}")),
            nhs_number: patient.nhs_number.as_ref().map(|n| n.as_str().to_string()),
        };
        let mut batch = Batch::new();
        for op in ledger.ops() {
            batch.ledger_op(id, op);
        }
        batch.local(
            "record",
            &RecordInfo {
                id: id.to_string(),
                meta: meta.clone(),
            },
        );
        home.vault.commit(batch)?;
        let mut replica = Replica::open(&home.vault, id, home.peer_id(), &home.keystore.age)?;
        replica.hold_key(crate::section::Section::Audit, 0, audit);
        replica.reveal(&home.keystore.age);
        home.held = Some(Held {
            meta: meta.clone(),
            replica,
        });
        let mut record = Record::create(meta, &home.device.actor());
        let author = home.device.author();
        let stamp = Stamp {
            author: &author,
            time: now,
        };
        record.put(stamp, &patient_resource(&patient_id, patient))?;
        record.commit(stamp, "create record");
        home.save(&mut record, now)?;
        Ok((home, record))
    }

    /// Creates a provider node's identity (it holds patients' records only once they share them).
    pub fn init_provider(
        dir: &Path,
        name: &str,
        ods: Option<String>,
        passphrase: Option<&SecretString>,
    ) -> Result<Home> {
        let keystore = Keystore::generate(false);
        let device = new_device(&keystore, name, name, Role::Provider, ods);
        Self::create(dir, keystore, device, None, passphrase)
    }

    /// Creates a relay's identity: a node that stores and forwards the sealed blobs of records
    /// that name it, and can read none of them.
    pub fn init_relay(dir: &Path, name: &str, passphrase: Option<&SecretString>) -> Result<Home> {
        let keystore = Keystore::generate(false);
        let device = new_device(&keystore, name, name, Role::Relay, None);
        Self::create(dir, keystore, device, None, passphrase)
    }

    /// Creates a further device of a patient, with no record yet, that joins the record `join`
    /// and no other: its card is added on the first device with `phr devices add`, and the
    /// record arrives when the two sync.
    pub fn init_device(
        dir: &Path,
        name: &str,
        label: &str,
        join: RecordId,
        passphrase: Option<&SecretString>,
    ) -> Result<Home> {
        let keystore = Keystore::generate(false);
        let device = new_device(&keystore, name, label, Role::Patient, None);
        Self::create(dir, keystore, device, Some(join), passphrase)
    }

    /// Which records not held this node takes in when a peer sends one whose ledger admits
    /// it: a patient's device only its own record (or the one it joins), a provider or relay
    /// any shared with it.
    pub fn welcome(&self) -> Welcome {
        if self.device.role != Role::Patient {
            return Welcome::Any;
        }
        if let Some(id) = self.record_id() {
            return Welcome::Only(id);
        }
        match self
            .vault
            .local::<String>(JOIN)
            .ok()
            .flatten()
            .map(|id| id.parse())
        {
            Some(Ok(id)) => Welcome::Only(id),
            _ => Welcome::Nothing,
        }
    }

    /// The record this device was made to join, until it holds it.
    pub fn joining(&self) -> Option<RecordId> {
        if self.held.is_some() {
            return None;
        }
        self.vault
            .local::<String>(JOIN)
            .ok()
            .flatten()?
            .parse()
            .ok()
    }

    fn create(
        dir: &Path,
        keystore: Keystore,
        device: Device,
        join: Option<RecordId>,
        passphrase: Option<&SecretString>,
    ) -> Result<Home> {
        let (lock, tightened) = prepare_new(dir)?;
        let vault = Vault::open(dir, LocalKey::derive(&keystore.device))?;
        let mut batch = Batch::new();
        batch.local("device", &device);
        if let Some(join) = join {
            batch.local(JOIN, &join.to_string());
        }
        vault.commit(batch)?;
        // The keystore is written last: its presence is what makes the directory a home.
        keystore.write(dir, passphrase)?;
        Ok(Home {
            dir: dir.to_path_buf(),
            device,
            keystore,
            vault,
            held: None,
            warnings: tightened.into_iter().collect(),
            _lock: lock,
        })
    }

    /// Opens an existing home whose keystore has no passphrase (or fails asking for one).
    pub fn open(dir: &Path) -> Result<Home> {
        Self::open_with(dir, &mut || Err(KeystoreError::PassphraseNeeded))
    }

    /// Opens an existing home, calling `passphrase` if its keystore is encrypted. A home that
    /// others may change, or whose keystore others may read, is refused; one an older phr left
    /// readable by others is made private first, and [`Home::warnings`] says so.
    pub fn open_with(dir: &Path, passphrase: PassphrasePrompt<'_>) -> Result<Home> {
        if !dir.join(KEYSTORE_FILE).exists() && !dir.join(VAULT_FILE).exists() {
            return Err(HomeError::NotInitialised(dir.to_path_buf()));
        }
        let tightened = permissions::secure(dir)?;
        let lock = lock(dir)?;
        let keystore = Keystore::read(dir, passphrase)?;
        let mut home = Self::open_unlocked(dir, lock, keystore).map_err(|failed| failed.1)?;
        if let Some(tightened) = tightened {
            home.warnings.insert(0, tightened);
        }
        Ok(home)
    }

    /// Closes the home for a while: the vault and the lock are released so that another process
    /// (a `phr` command run while the node daemon is up) can open it, and the keys stay in memory
    /// so that reopening asks for no passphrase. See [`Parked::reopen`].
    pub fn park(self) -> Parked {
        Parked {
            dir: self.dir,
            keystore: Some(self.keystore),
        }
    }

    /// Opens the vault and the record with keys already read. On failure the keystore comes
    /// back with the error, so a parked home can try again without asking for a passphrase.
    fn open_unlocked(
        dir: &Path,
        lock: File,
        keystore: Keystore,
    ) -> std::result::Result<Home, Box<(Keystore, HomeError)>> {
        let opened = (|| {
            let vault = Vault::open(dir, LocalKey::derive(&keystore.device))?;
            let device: Device = vault.local("device")?.ok_or_else(|| HomeError::Damaged {
                what: format!("the vault in {}", dir.display()),
                reason: "it has no device profile".into(),
            })?;
            if device.id != keystore.device.peer_id().to_string() {
                return Err(HomeError::Damaged {
                    what: format!("the keystore in {}", dir.display()),
                    reason: "it belongs to another node than the vault".into(),
                });
            }
            intake::migrate(&vault, device.role)?;
            let mut info = vault.local::<RecordInfo>("record")?;
            if info.is_none() && device.role == Role::Patient {
                info = adopt_record(&vault, &keystore)?;
            }
            Ok((vault, device, info))
        })();
        let (vault, device, info) = match opened {
            Ok(parts) => parts,
            Err(error) => return Err(Box::new((keystore, error))),
        };
        let mut home = Home {
            dir: dir.to_path_buf(),
            device,
            keystore,
            vault,
            held: None,
            warnings: Vec::new(),
            _lock: lock,
        };
        if let Some(info) = info {
            match home.load_held(info) {
                Ok(held) => home.held = Some(held),
                Err(error) => return Err(Box::new((home.keystore, error))),
            }
        }
        Ok(home)
    }

    fn load_held(&mut self, info: RecordInfo) -> Result<Held> {
        let id: RecordId = info.id.parse()?;
        let replica = Replica::open(&self.vault, id, self.peer_id(), &self.keystore.age)?;
        self.warnings.extend(replica.problems().iter().cloned());
        Ok(Held {
            meta: info.meta,
            replica,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This node's identity.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.keystore.device.peer_id()
    }

    /// This node as a consent ledger names it.
    pub fn party(&self) -> Party {
        Party {
            peer: self.keystore.device.peer_id(),
            recipient: self.keystore.age.recipient(),
            name: self.device.label.clone(),
            role: self.device.role,
            ods: self.device.ods.clone(),
        }
    }

    /// This node's contact card, signed, with the addresses given.
    pub fn card(&self, addrs: Vec<String>, now: Timestamp) -> Result<String> {
        let card = Card {
            party: self.party(),
            addrs,
            created_ms: now.as_millisecond(),
        };
        Ok(card.encode(&self.keystore.device)?)
    }

    /// Problems met while opening (damaged blobs skipped, envelopes that did not open), for the
    /// CLI to show. Nothing listed here stopped the command.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The id of the record this home holds, if it holds one.
    pub fn record_id(&self) -> Option<RecordId> {
        self.held.as_ref().map(|held| held.replica.id())
    }

    fn held(&self) -> Result<&Held> {
        self.held
            .as_ref()
            .ok_or_else(|| HomeError::NoRecord(self.dir.clone()))
    }

    /// Decrypts and loads this home's record, every section this node holds keys for.
    pub fn load_record(&mut self) -> Result<Record> {
        let actor = self.device.actor();
        let held = self
            .held
            .as_mut()
            .ok_or_else(|| HomeError::NoRecord(self.dir.clone()))?;
        let (record, warnings) =
            held.replica
                .materialise(&self.vault, held.meta.clone(), &actor, &self.keystore.age)?;
        self.warnings.extend(warnings);
        self.warnings.extend(removed_here(&held.replica));
        Ok(record)
    }

    /// Seals the record's unsaved changes, one blob per changed section, and writes them
    /// durably; returns once they are on disk. Compacts a section's blobs when enough have
    /// accumulated.
    pub fn save(&mut self, record: &mut Record, now: Timestamp) -> Result<()> {
        let held = self
            .held
            .as_mut()
            .ok_or_else(|| HomeError::NoRecord(self.dir.clone()))?;
        held.replica.save(
            &self.vault,
            &self.keystore.device,
            record,
            now.as_millisecond(),
        )?;
        Ok(())
    }

    /// Compacts every section this node can, and the vault file. For tests and maintenance.
    pub fn compact(&mut self, record: &mut Record, now: Timestamp) -> Result<()> {
        let owner = self
            .held()?
            .replica
            .ledger()
            .state()
            .is_owner(&self.peer_id());
        if !owner {
            return Err(HomeError::NotOwner);
        }
        let held = self.held.as_mut().expect("checked above");
        for section in held.replica.materialised_sections() {
            held.replica.compact_section(
                &self.vault,
                &self.keystore.device,
                record,
                section,
                now.as_millisecond(),
            )?;
        }
        Ok(self.vault.compact_file()?)
    }

    /// The consent ledger of this home's record.
    pub fn ledger(&self) -> Result<&Ledger> {
        Ok(self.held()?.replica.ledger())
    }

    /// The section keys this node holds under a record's ledger (its own record's, or a
    /// patient's record shared with this provider).
    pub fn unlock(&self, ledger: &Ledger) -> Keyring {
        Keyring::unlock(ledger, &self.keystore.device.peer_id(), &self.keystore.age)
    }

    /// What the sync engine of this node needs: the vault it stores through and the age
    /// identity that unwraps the keys sent to it.
    pub fn sync_parts(&self) -> (&Vault, &crate::keys::AgeIdentity) {
        (&self.vault, &self.keystore.age)
    }

    /// This node's device signing key (its libp2p identity), for the node daemon.
    pub fn device_key(&self) -> &crate::keys::SigningKey {
        &self.keystore.device
    }

    /// The vault, for tests that inspect or damage what is stored.
    #[doc(hidden)]
    pub fn vault_for_test(&self) -> &Vault {
        &self.vault
    }
}

fn new_device(
    keystore: &Keystore,
    name: &str,
    label: &str,
    role: Role,
    ods: Option<String>,
) -> Device {
    let peer = keystore.device.peer_id();
    let mut actor = peer.public_key()[..16].to_vec();
    actor.extend_from_slice(&random_array::<8>());
    Device {
        id: peer.to_string(),
        name: name.to_string(),
        label: label.to_string(),
        role,
        ods,
        actor: hex(&actor),
    }
}

fn patient_resource(id: &str, patient: &NewPatient) -> serde_json::Value {
    let mut words: Vec<&str> = patient.name.split_whitespace().collect();
    let family = if words.len() > 1 { words.pop() } else { None };
    let mut name = json!({"use": "official", "text": patient.name, "given": words});
    if let Some(family) = family {
        name["family"] = json!(family);
    }
    let mut resource = json!({"resourceType": "Patient", "id": id, "name": [name]});
    if let Some(nhs) = &patient.nhs_number {
        resource["identifier"] = json!([{"system": NHS_NUMBER_SYSTEM, "value": nhs.as_str()}]);
    }
    if let Some(birth_date) = patient.birth_date {
        resource["birthDate"] = json!(birth_date.to_string());
    }
    resource
}

impl Home {
    /// Syncs `record` with another home open in this process, this home starting the session:
    /// the same sessions two nodes run over the network, with the messages handed across in
    /// memory (two homes on one machine, and tests that need no network).
    pub fn sync_in_process(
        &self,
        to: &Home,
        record: RecordId,
        now_ms: i64,
    ) -> std::result::Result<crate::sync::SessionStats, crate::sync::SyncError> {
        use crate::sync::{Incoming, InitiatorSession, Local, ResponderSession};
        let ((from_vault, from_age), (to_vault, to_age)) = (self.sync_parts(), to.sync_parts());
        let open = |home: &Home, vault: &Vault, age| {
            let intake = home.intake()?;
            let records = vault.records()?;
            let pending = records.iter().filter(|id| intake.is_pending(id)).count();
            Ok::<_, crate::sync::SyncError>(intake.open(
                vault,
                record,
                home.peer_id(),
                age,
                pending,
            )?)
        };
        let mut ours = open(self, from_vault, from_age)?;
        let mut theirs = open(to, to_vault, to_age)?;
        let mut initiator_side = Local {
            replica: &mut ours,
            store: from_vault,
            age: from_age,
            device: Some(&self.keystore.device),
        };
        let mut responder_side = Local {
            replica: &mut theirs,
            store: to_vault,
            age: to_age,
            device: Some(&to.keystore.device),
        };
        let (mut initiator, request) =
            InitiatorSession::start(&initiator_side, to.peer_id(), 1, now_ms)?;
        let (mut responder, mut answer) = ResponderSession::open(
            &mut responder_side,
            self.peer_id(),
            Incoming::decode(&request)?,
            now_ms,
        )?;
        while let Some(bytes) = answer {
            let Some(request) =
                initiator.receive(&mut initiator_side, Incoming::decode(&bytes)?, now_ms)?
            else {
                break;
            };
            answer = responder.receive(&mut responder_side, Incoming::decode(&request)?, now_ms)?;
        }
        Ok(initiator.stats().clone())
    }
}

/// A patient's further device (`phr init --device --join RECORD`) has no record until that
/// record reaches it by sync with a ledger that lists this device as an owner. The first time
/// the home is opened after that, it becomes the home's own record (its metadata comes from the
/// record itself: the subject is the summary's `Patient`). No other record is ever adopted.
fn adopt_record(vault: &Vault, keystore: &Keystore) -> Result<Option<RecordInfo>> {
    let me = keystore.device.peer_id();
    let Some(join) = vault.local::<String>(JOIN)? else {
        return Ok(None);
    };
    let id: RecordId = join.parse()?;
    let replica = Replica::open(vault, id, me, &keystore.age)?;
    if !replica.is_held() || !replica.ledger().state().is_owner(&me) {
        return Ok(None);
    }
    let info = RecordInfo {
        id: id.to_string(),
        meta: RecordMeta {
            id: id.to_string(),
            subject: None,
            nhs_number: None,
        },
    };
    let mut batch = Batch::new();
    batch.local("record", &info);
    vault.commit(batch)?;
    Ok(Some(info))
}

/// Makes `dir` ready to become a new home: created (or made) 0700, locked, holding no identity
/// yet, and any file an earlier home left there (a log, a lock) judged as opening judges it.
/// Returns the lock and the warning of what was tightened.
fn prepare_new(dir: &Path) -> Result<(File, Option<String>)> {
    owner_only::create_dir(dir).map_err(io_err(dir))?;
    let lock = lock(dir)?;
    if dir.join(KEYSTORE_FILE).exists() || dir.join(VAULT_FILE).exists() {
        return Err(HomeError::AlreadyInitialised(dir.to_path_buf()));
    }
    let tightened = permissions::secure(dir)?;
    Ok((lock, tightened))
}

fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file =
        owner_only::open_or_create(&path, File::options().write(true)).map_err(io_err(&path))?;
    // Two commands writing one home at once would race; the second is told, not made to hang.
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(HomeError::Busy(dir.to_path_buf())),
        Err(fs::TryLockError::Error(source)) => Err(HomeError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod withdrawal_tests;

/// What to tell the user of a device the patient removed, once the removal has reached it: when,
/// how old its copy is, and that nothing written here goes anywhere.
fn removed_here(replica: &Replica) -> Option<String> {
    let me = replica.me();
    if replica.ledger().state().is_owner(&me) {
        return None;
    }
    let ended_ms = replica
        .withdrawal(&me)
        .iter()
        .filter(|op| matches!(op.op().body, crate::ledger::OpBody::RemoveDevice { .. }))
        .map(|op| op.op().time_ms)
        .max()?;
    let day = |ms: i64| {
        Timestamp::from_millisecond(ms)
            .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|_| "an unknown date".into())
    };
    let copy = replica
        .newest_blob_ms()
        .map(day)
        .unwrap_or_else(|| "(it holds no entries)".into());
    Some(format!(
        "this device was removed from the record on {}: what it shows is its copy as of {copy}, \
         and nothing written here reaches the patient's other devices or anyone they share \
         with. If that is wrong, add it again from one of the patient's devices (phr devices \
         add)",
        day(ended_ms)
    ))
}
