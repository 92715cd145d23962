//! The vault: a node's redb database of sealed blobs, consent-ledger operations and its own
//! small encrypted settings.
//!
//! The vault stores bytes; it does not judge them. Blobs and ledger operations are checked by
//! their own modules before they reach [`Vault::commit`], and checked again when they are read
//! back, so a flipped bit on disk costs one blob, never the record. Everything the vault holds is
//! ciphertext: blobs are sealed with section keys, ledger operations carry only wrapped keys, and
//! the node's own settings (its device profile, record metadata, contacts) are sealed with a key
//! derived from the device's signing key ([`LocalKey`]).
//!
//! Tables (keys are byte strings; `record` is a [`RecordId`], `section` a [`Section::code`]):
//!
//! | table | key | value |
//! |---|---|---|
//! | `blobs` | record ‖ section ‖ blob id | the sealed blob |
//! | `replaced` | record ‖ section ‖ blob id | the id of the compaction blob that holds its content |
//! | `ledger` | record ‖ operation id | the signed operation |
//! | `local` | name | a value sealed with the [`LocalKey`] |
//! | `vouched` | record ‖ `o` ‖ operation id, or record ‖ `b` ‖ section ‖ blob id | this node's HMAC tag: it checked the item's signature when it stored it |
//! | `section_keys` | record ‖ key id | a section key this node unwrapped, sealed with the [`LocalKey`] |
//!
//! A [`Batch`] is written in one redb transaction and [`Vault::commit`] returns only once it is
//! durable, so a command reports success only for writes that survive a crash.

use std::{
    fmt,
    fs::OpenOptions,
    path::{Path, PathBuf},
};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, backends::FileBackend};
use ring::{aead, hkdf, hmac};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    blob::Blob,
    keys::{BlobId, KeyId, OpId, RecordId, SectionKey, SigningKey, random_array},
    ledger::SignedOp,
    owner_only,
    section::Section,
};

/// The vault's file name inside the home directory.
pub const VAULT_FILE: &str = "vault.redb";

/// The most memory redb keeps of the vault's pages (its default is 1 GiB): a node reads each
/// record once at start-up and then only the records in use, and the operating system caches
/// the file as well. Without a cap, a practice node's start-up kept about 6 KiB a record.
pub const VAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The largest local setting, in bytes (a contact list of a few thousand cards).
pub const LOCAL_VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;

const BLOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blobs");
const REPLACED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("replaced");
const LEDGER: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ledger");
const LOCAL: TableDefinition<&str, &[u8]> = TableDefinition::new("local");
/// Blobs held for the patient: written by a party after its access ended (record ‖ blob id ->
/// section code ‖ the sealed blob).
const HELD: TableDefinition<&[u8], &[u8]> = TableDefinition::new("held");
/// Per record, the sequence number of the last committed transaction that changed what is
/// stored of it (record id -> sequence): its generation, which moves whenever the record
/// changes ([`Vault::generations`]). A vault from before this table reads 0 for every record.
const GENERATIONS: TableDefinition<&[u8], u64> = TableDefinition::new("generations");
/// The same, the other way round (sequence -> record id), one row per record: what changed
/// after a given sequence is a range read ([`Vault::changed_since`]), so a node that lent the
/// home to a command finds what the command changed without reading every record. The row with
/// sequence 0 holds the last sequence given.
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
/// A provider's decisions on the records shared with it (record id -> 1 accepted, 2
/// declined): one row each, so whether one record is accepted is one lookup however many
/// patients the practice has ([`Vault::decision`]).
const DECISIONS: TableDefinition<&[u8], u8> = TableDefinition::new("decisions");
/// A provider's patient index: per record, who the patient is as the node last read it, sealed
/// like the local settings (AAD `patient-index/` and the record id), one row each, so that a
/// listing changes only the rows of the records that changed ([`Vault::patient_index`]).
const PATIENT_INDEX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("patient_index");
/// What this node checked when it stored it: per ledger operation (record ‖ `o` ‖ operation id)
/// and blob (record ‖ `b` ‖ section ‖ blob id), an HMAC-SHA256 tag of that key under a key
/// derived from the device's seed ([`LocalKey`]). Both ids are SHA-256 of the item's bytes, so
/// a tag vouches for exact bytes: a node opening its records skips the signature check of an
/// item whose bytes hash to a vouched id ([`Vault::ledger_ops_vouched`],
/// [`Vault::blobs_vouched`]), and checks everything else as bytes from a peer. Without the
/// keystore no tag can be made, so bytes changed on disk are checked in full.
const VOUCHED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("vouched");
/// Section keys this node unwrapped from the ledger's envelopes (record ‖ key id -> section
/// code ‖ epoch ‖ key, sealed like the local settings with AAD `section-key/` and the key):
/// opening a record does not repeat an age decryption per key ([`Vault::section_keys`]). A key
/// counts only where a valid `Keys` operation addressed to this node announces it.
const SECTION_KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("section_keys");
/// The records whose ledger operations are stored (record id -> nothing), kept with the ledger
/// in every commit: listing them is one pass over this table ([`Vault::records`]), where
/// finding each record's first ledger key cost a seek per record (38 ms at 10,000). A vault
/// from before this table gets it at its next opening, from one such scan.
const RECORDS: TableDefinition<&[u8], ()> = TableDefinition::new("records");

const VOUCHED_OP: u8 = b'o';
const VOUCHED_BLOB: u8 = b'b';

/// A table in a read transaction, or `None` if no write has made it yet (a vault from before
/// the table existed).
fn open_if_made<K: redb::Key + 'static, V: redb::Value + 'static>(
    tx: &redb::ReadTransaction,
    table: TableDefinition<K, V>,
    path: &Path,
) -> Result<Option<redb::ReadOnlyTable<K, V>>> {
    match tx.open_table(table) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(storage(path)(e.into())),
    }
}

/// The AAD of a record's row of the patient index: a row moved to another record's key does
/// not open.
fn index_name(record: &RecordId) -> String {
    format!("patient-index/{record}")
}

/// What a person at a provider decided about a record shared with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Taken on: listed by `phr patients`, readable within the grant.
    Accepted,
    /// Refused: deleted, and not taken in again.
    Declined,
}

impl Decision {
    fn code(self) -> u8 {
        match self {
            Decision::Accepted => 1,
            Decision::Declined => 2,
        }
    }

    fn of(code: u8) -> Option<Decision> {
        match code {
            1 => Some(Decision::Accepted),
            2 => Some(Decision::Declined),
            _ => None,
        }
    }
}

/// What can go wrong with the vault.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Another process has the database open.
    #[error("the vault {0} is in use by another phr process; wait for it to finish and try again")]
    InUse(PathBuf),
    /// redb reported a failure (I/O, a full disk, corruption).
    #[error("the vault {path} could not be read or written: {source}")]
    Storage {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: Box<redb::Error>,
    },
    /// A local setting did not decrypt or parse.
    #[error(
        "the vault's `{name}` setting is damaged ({reason}); restore the home with `phr backup restore FILE`"
    )]
    DamagedSetting {
        /// The setting.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

type Result<T, E = VaultError> = std::result::Result<T, E>;

/// A ChaCha20-Poly1305 (RFC 8439) key for the node's own settings and an HMAC-SHA256 key for
/// what it vouches for (the `vouched` table), both derived with HKDF-SHA256 (RFC 5869) from the
/// device's signing seed: whoever can open the keystore can read and make them, and nobody else.
pub struct LocalKey {
    aead: aead::LessSafeKey,
    mac: hmac::Key,
}

impl fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalKey(..)")
    }
}

impl LocalKey {
    /// The local key of the device whose signing key is `device`.
    pub fn derive(device: &SigningKey) -> Self {
        let prk =
            hkdf::Salt::new(hkdf::HKDF_SHA256, b"phr local settings v1").extract(device.seed());
        let okm = prk
            .expand(&[b"chacha20-poly1305"], &aead::CHACHA20_POLY1305)
            .expect("the output length is the key length");
        let mac = prk
            .expand(&[b"hmac-sha256 vouched"], hmac::HMAC_SHA256)
            .expect("the output length is the key length");
        Self {
            aead: aead::LessSafeKey::new(aead::UnboundKey::from(okm)),
            mac: hmac::Key::from(mac),
        }
    }

    fn tag(&self, key: &[u8]) -> hmac::Tag {
        hmac::sign(&self.mac, key)
    }

    fn vouches(&self, key: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.mac, key, tag).is_ok()
    }

    fn seal(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce = random_array::<12>();
        let mut out = nonce.to_vec();
        out.extend_from_slice(plaintext);
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(name.as_bytes()),
                &mut out[12..],
            )
            .expect("settings are far below the AEAD's length limit");
        out.extend_from_slice(tag.as_ref());
        out
    }

    fn open(&self, name: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, body) = sealed.split_first_chunk::<12>()?;
        let mut body = body.to_vec();
        let plain = self
            .aead
            .open_in_place(
                aead::Nonce::assume_unique_for_key(*nonce),
                aead::Aad::from(name.as_bytes()),
                &mut body,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

/// Writes that must land together, in one durable transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// Ledger operations, each with whether it was checked (a [`SignedOp`]) and so vouched for.
    ledger: Vec<(RecordId, OpId, Vec<u8>, bool)>,
    /// Blobs, each with whether it was checked (a [`Blob`]) and so vouched for.
    blobs: Vec<(RecordId, Section, BlobId, Vec<u8>, bool)>,
    replaced: Vec<(RecordId, Section, BlobId, BlobId)>,
    changes: Vec<Change>,
    local: Vec<(String, Vec<u8>)>,
    from_peer: bool,
}

/// A change to what is stored beyond adding: applied after the additions of the same batch.
#[derive(Debug)]
pub(crate) enum Change {
    /// Deletes a stored blob.
    RemoveBlob(RecordId, Section, BlobId),
    /// Forgets that a blob was replaced, so it may be fetched again.
    Unreplace(RecordId, Section, BlobId),
    /// Holds a blob for the patient.
    Hold(RecordId, Section, BlobId, Vec<u8>),
    /// Stops holding a blob.
    Release(RecordId, BlobId),
    /// Deletes a stored ledger operation (one that can never count).
    RemoveLedgerOp(RecordId, OpId),
    /// Deletes everything stored of a record: its ledger, blobs, replacements and held blobs.
    ForgetRecord(RecordId),
    /// Records a provider's decision on a record (not part of what is stored of the record).
    Decide(RecordId, Decision),
    /// Sets a record's row of the patient index (plaintext, sealed at commit).
    Index(RecordId, Vec<u8>),
    /// Vouches for an item stored before vouching existed, checked now (not a change to the
    /// record).
    Vouch(RecordId, Vouched),
    /// Keeps a section key this node unwrapped (not a change to the record).
    KeepKey(RecordId, Section, u32, SectionKey),
}

/// An item a node vouches for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Vouched {
    /// A ledger operation.
    Op(OpId),
    /// A blob of a section.
    Blob(Section, BlobId),
}

impl Vouched {
    fn key(self, record: &RecordId) -> Vec<u8> {
        let mut key = record.0.to_vec();
        match self {
            Vouched::Op(id) => {
                key.push(VOUCHED_OP);
                key.extend_from_slice(&id.0);
            }
            Vouched::Blob(section, id) => {
                key.push(VOUCHED_BLOB);
                key.push(section.code());
                key.extend_from_slice(&id.0);
            }
        }
        key
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the batch as holding bytes from another node: redb then commits it in two phases,
    /// so that a torn write can never be mistaken for a valid page (see redb's
    /// `set_two_phase_commit`).
    pub fn from_peer(mut self) -> Self {
        self.from_peer = true;
        self
    }

    /// Stores a signed ledger operation, vouched for: it was checked when it was decoded (or
    /// signed here).
    pub fn ledger_op(&mut self, record: RecordId, op: &SignedOp) {
        self.ledger
            .push((record, op.id(), op.bytes().to_vec(), true));
    }

    /// Stores bytes as a ledger operation without vouching for them: only for tests that
    /// store junk.
    #[doc(hidden)]
    pub fn unchecked_ledger_op(&mut self, record: RecordId, id: OpId, bytes: &[u8]) {
        self.ledger.push((record, id, bytes.to_vec(), false));
    }

    /// Vouches for a ledger operation stored before vouching existed, now checked: not a
    /// change to the record.
    pub fn vouch_op(&mut self, record: RecordId, op: &SignedOp) {
        self.changes
            .push(Change::Vouch(record, Vouched::Op(op.id())));
    }

    /// Vouches for a blob stored before vouching existed, now checked.
    pub fn vouch_blob(&mut self, record: RecordId, section: Section, blob: &Blob) {
        self.changes
            .push(Change::Vouch(record, Vouched::Blob(section, blob.id())));
    }

    /// Keeps a section key this node unwrapped from the record's ledger, sealed, so that
    /// opening the record again does not unwrap it again: not a change to the record.
    pub fn keep_key(&mut self, record: RecordId, section: Section, epoch: u32, key: &SectionKey) {
        self.changes
            .push(Change::KeepKey(record, section, epoch, key.clone()));
    }

    /// Deletes a stored ledger operation that can never count ([`crate::ledger::Ledger::admit`]).
    pub fn remove_ledger_op(&mut self, record: RecordId, id: OpId) {
        self.changes.push(Change::RemoveLedgerOp(record, id));
    }

    /// Deletes everything stored of a record (a provider declined it), after the additions of
    /// the same batch.
    pub fn forget_record(&mut self, record: RecordId) {
        self.changes.push(Change::ForgetRecord(record));
    }

    /// Stores a sealed blob of a section, vouched for: it was checked when it was decoded (or
    /// sealed here).
    pub fn blob(&mut self, record: RecordId, section: Section, blob: &Blob) {
        self.blobs
            .push((record, section, blob.id(), blob.bytes().to_vec(), true));
    }

    /// Stores bytes as a blob without vouching for them: only for tests that store junk.
    #[doc(hidden)]
    pub fn unchecked_blob(
        &mut self,
        record: RecordId,
        section: Section,
        id: BlobId,
        bytes: Vec<u8>,
    ) {
        self.blobs.push((record, section, id, bytes, false));
    }

    /// Removes a blob whose content the compaction blob `by` now holds, and remembers that it
    /// was replaced so it is not taken in again.
    pub fn replace(&mut self, record: RecordId, section: Section, old: BlobId, by: BlobId) {
        self.replaced.push((record, section, old, by));
    }

    /// Deletes a stored blob (one that turned out void, or that a verified compaction holds).
    pub fn remove_blob(&mut self, record: RecordId, section: Section, id: BlobId) {
        self.changes.push(Change::RemoveBlob(record, section, id));
    }

    /// Forgets that a blob was replaced (its compaction turned out void), so that a peer's
    /// copy is taken in again.
    pub fn unreplace(&mut self, record: RecordId, section: Section, id: BlobId) {
        self.changes.push(Change::Unreplace(record, section, id));
    }

    /// Holds a blob for the patient to accept or discard, outside the record's sections.
    pub fn hold(&mut self, record: RecordId, section: Section, id: BlobId, bytes: Vec<u8>) {
        self.changes.push(Change::Hold(record, section, id, bytes));
    }

    /// Stops holding a blob (accepted, or discarded).
    pub fn release(&mut self, record: RecordId, id: BlobId) {
        self.changes.push(Change::Release(record, id));
    }

    /// Records a provider's decision on a record shared with it.
    pub fn decide(&mut self, record: RecordId, decision: Decision) {
        self.changes.push(Change::Decide(record, decision));
    }

    /// Sets a record's row of the patient index: what it is does not change the record.
    pub fn index_patient<T: Serialize>(&mut self, record: RecordId, entry: &T) {
        let bytes = serde_json::to_vec(entry).expect("index entries serialise");
        self.changes.push(Change::Index(record, bytes));
    }

    /// Sets a local setting (sealed with the [`LocalKey`] when committed).
    pub fn local<T: Serialize>(&mut self, name: &str, value: &T) {
        let bytes = serde_json::to_vec(value).expect("settings serialise");
        self.local.push((name.to_string(), bytes));
    }

    /// The ledger operations, blobs, replacements and other changes, for stores other than the
    /// vault (local settings are the vault's alone and are dropped).
    #[allow(clippy::type_complexity)]
    pub(crate) fn into_parts(
        self,
    ) -> (
        Vec<(RecordId, OpId, Vec<u8>)>,
        Vec<(RecordId, Section, BlobId, Vec<u8>)>,
        Vec<(RecordId, Section, BlobId, BlobId)>,
        Vec<Change>,
    ) {
        (
            self.ledger
                .into_iter()
                .map(|(record, id, bytes, _)| (record, id, bytes))
                .collect(),
            self.blobs
                .into_iter()
                .map(|(record, section, id, bytes, _)| (record, section, id, bytes))
                .collect(),
            self.replaced,
            self.changes,
        )
    }

    /// Adds everything `other` writes to this batch (committed together, at once).
    pub fn extend(&mut self, other: Batch) {
        self.ledger.extend(other.ledger);
        self.blobs.extend(other.blobs);
        self.replaced.extend(other.replaced);
        self.changes.extend(other.changes);
        self.local.extend(other.local);
        self.from_peer |= other.from_peer;
    }

    /// The records whose stored ledger, blobs, replacements or held blobs the batch changes.
    pub fn records(&self) -> std::collections::BTreeSet<RecordId> {
        let mut records: std::collections::BTreeSet<RecordId> =
            self.ledger.iter().map(|(record, ..)| *record).collect();
        records.extend(self.blobs.iter().map(|(record, ..)| *record));
        records.extend(self.replaced.iter().map(|(record, ..)| *record));
        records.extend(self.changes.iter().filter_map(|change| match change {
            Change::RemoveBlob(record, ..)
            | Change::Unreplace(record, ..)
            | Change::Hold(record, ..)
            | Change::Release(record, ..)
            | Change::RemoveLedgerOp(record, ..)
            | Change::ForgetRecord(record) => Some(*record),
            Change::Decide(..) | Change::Index(..) | Change::Vouch(..) | Change::KeepKey(..) => {
                None
            }
        }));
        records
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ledger.is_empty()
            && self.blobs.is_empty()
            && self.replaced.is_empty()
            && self.changes.is_empty()
            && self.local.is_empty()
    }
}

/// An open vault.
pub struct Vault {
    db: Database,
    path: PathBuf,
    local: LocalKey,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault").field("path", &self.path).finish()
    }
}

fn blob_key(record: &RecordId, section: Section, id: &BlobId) -> Vec<u8> {
    let mut key = section_prefix(record, section);
    key.extend_from_slice(&id.0);
    key
}

fn section_prefix(record: &RecordId, section: Section) -> Vec<u8> {
    let mut key = record.0.to_vec();
    key.push(section.code());
    key
}

fn held_key(record: &RecordId, id: &BlobId) -> Vec<u8> {
    let mut key = record.0.to_vec();
    key.extend_from_slice(&id.0);
    key
}

fn ledger_key(record: &RecordId, id: &OpId) -> Vec<u8> {
    let mut key = record.0.to_vec();
    key.extend_from_slice(&id.0);
    key
}

fn section_key_key(record: &RecordId, id: &KeyId) -> Vec<u8> {
    let mut key = record.0.to_vec();
    key.extend_from_slice(&id.0);
    key
}

/// The AAD of a kept section key: a row moved under another record or key does not open.
fn section_key_name(record: &RecordId, id: &KeyId) -> String {
    format!("section-key/{record}/{id}")
}

/// The exclusive upper bound of every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

impl Vault {
    /// Opens the vault in `dir`, creating it if it does not exist.
    pub fn open(dir: &Path, local: LocalKey) -> Result<Vault> {
        let path = dir.join(VAULT_FILE);
        // Created 0600 before redb writes a byte into it (redb's own `create` would make it
        // 0644 under the usual umask); an existing vault is opened as it is.
        let file = owner_only::open_or_create(&path, OpenOptions::new().read(true).write(true))
            .map_err(|e| storage(&path)(redb::Error::Io(e)))?;
        let db = FileBackend::new(file)
            .and_then(|backend| {
                Database::builder()
                    .set_cache_size(VAULT_CACHE_BYTES)
                    .create_with_backend(backend)
            })
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => VaultError::InUse(path.clone()),
                other => storage(&path)(other.into()),
            })?;
        let vault = Vault { db, path, local };
        let listed = {
            let tx = vault
                .db
                .begin_read()
                .map_err(|e| storage(&vault.path)(e.into()))?;
            open_if_made(&tx, RECORDS, &vault.path)?.is_some()
        };
        // Create the tables up front so read transactions never meet a missing one.
        vault.commit(Batch::new())?;
        if !listed {
            vault.list_records()?;
        }
        Ok(vault)
    }

    /// Writes `batch` in one transaction; returns once it is durable.
    pub fn commit(&self, batch: Batch) -> Result<()> {
        let err = storage(&self.path);
        let mut tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        tx.set_two_phase_commit(batch.from_peer);
        {
            let mut generations = tx.open_table(GENERATIONS).map_err(|e| err(e.into()))?;
            let mut changes = tx.open_table(CHANGES).map_err(|e| err(e.into()))?;
            let touched = batch.records();
            if !touched.is_empty() {
                let last = changes
                    .get(0)
                    .map_err(|e| err(e.into()))?
                    .and_then(|row| <[u8; 8]>::try_from(row.value()).ok())
                    .map_or(0, u64::from_be_bytes);
                let sequence = last + 1;
                changes
                    .insert(0, sequence.to_be_bytes().as_slice())
                    .map_err(|e| err(e.into()))?;
                for record in touched {
                    let before = generations
                        .insert(record.0.as_slice(), sequence)
                        .map_err(|e| err(e.into()))?
                        .map(|g| g.value());
                    // Its row at the sequence before no longer names it.
                    if let Some(before) = before.filter(|b| *b != 0 && *b != sequence) {
                        let rest: Option<Vec<u8>> =
                            changes.get(before).map_err(|e| err(e.into()))?.map(|row| {
                                row.value()
                                    .chunks(16)
                                    .filter(|id| *id != record.0.as_slice())
                                    .flatten()
                                    .copied()
                                    .collect()
                            });
                        match rest {
                            Some(rest) if !rest.is_empty() => {
                                changes
                                    .insert(before, rest.as_slice())
                                    .map_err(|e| err(e.into()))?;
                            }
                            _ => {
                                changes.remove(before).map_err(|e| err(e.into()))?;
                            }
                        }
                    }
                }
                // Rows are per sequence; several records may share one, so they are kept in
                // one value: the record ids, 16 bytes each.
                let ids: Vec<u8> = batch.records().iter().flat_map(|r| r.0).collect();
                changes
                    .insert(sequence, ids.as_slice())
                    .map_err(|e| err(e.into()))?;
            }
        }
        {
            let mut vouched = tx.open_table(VOUCHED).map_err(|e| err(e.into()))?;
            let mut ledger = tx.open_table(LEDGER).map_err(|e| err(e.into()))?;
            let mut records = tx.open_table(RECORDS).map_err(|e| err(e.into()))?;
            for (record, id, bytes, checked) in &batch.ledger {
                ledger
                    .insert(ledger_key(record, id).as_slice(), bytes.as_slice())
                    .map_err(|e| err(e.into()))?;
                self.vouch(&mut vouched, record, Vouched::Op(*id), *checked)?;
            }
            let mut blobs = tx.open_table(BLOBS).map_err(|e| err(e.into()))?;
            let mut replaced = tx.open_table(REPLACED).map_err(|e| err(e.into()))?;
            for (record, section, id, bytes, checked) in &batch.blobs {
                let key = blob_key(record, *section, id);
                if replaced
                    .get(key.as_slice())
                    .map_err(|e| err(e.into()))?
                    .is_none()
                {
                    blobs
                        .insert(key.as_slice(), bytes.as_slice())
                        .map_err(|e| err(e.into()))?;
                    self.vouch(&mut vouched, record, Vouched::Blob(*section, *id), *checked)?;
                }
            }
            for (record, section, old, by) in &batch.replaced {
                let key = blob_key(record, *section, old);
                blobs.remove(key.as_slice()).map_err(|e| err(e.into()))?;
                self.vouch(&mut vouched, record, Vouched::Blob(*section, *old), false)?;
                replaced
                    .insert(key.as_slice(), by.0.as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            let mut section_keys = tx.open_table(SECTION_KEYS).map_err(|e| err(e.into()))?;
            let mut held = tx.open_table(HELD).map_err(|e| err(e.into()))?;
            let mut decisions = tx.open_table(DECISIONS).map_err(|e| err(e.into()))?;
            let mut index = tx.open_table(PATIENT_INDEX).map_err(|e| err(e.into()))?;
            for change in &batch.changes {
                match change {
                    Change::RemoveBlob(record, section, id) => {
                        blobs
                            .remove(blob_key(record, *section, id).as_slice())
                            .map_err(|e| err(e.into()))?;
                        self.vouch(&mut vouched, record, Vouched::Blob(*section, *id), false)?;
                    }
                    Change::Unreplace(record, section, id) => {
                        replaced
                            .remove(blob_key(record, *section, id).as_slice())
                            .map_err(|e| err(e.into()))?;
                    }
                    Change::Hold(record, section, id, bytes) => {
                        let value = [&[section.code()][..], bytes].concat();
                        held.insert(held_key(record, id).as_slice(), value.as_slice())
                            .map_err(|e| err(e.into()))?;
                    }
                    Change::Release(record, id) => {
                        held.remove(held_key(record, id).as_slice())
                            .map_err(|e| err(e.into()))?;
                    }
                    Change::RemoveLedgerOp(record, id) => {
                        ledger
                            .remove(ledger_key(record, id).as_slice())
                            .map_err(|e| err(e.into()))?;
                        self.vouch(&mut vouched, record, Vouched::Op(*id), false)?;
                    }
                    Change::Vouch(record, item) => self.vouch(&mut vouched, record, *item, true)?,
                    Change::KeepKey(record, section, epoch, key) => {
                        let name = section_key_name(record, &key.id());
                        let mut plain = vec![section.code()];
                        plain.extend_from_slice(&epoch.to_le_bytes());
                        plain.extend_from_slice(key.bytes());
                        let sealed = self.local.seal(&name, &plain);
                        plain.fill(0);
                        section_keys
                            .insert(
                                section_key_key(record, &key.id()).as_slice(),
                                sealed.as_slice(),
                            )
                            .map_err(|e| err(e.into()))?;
                    }
                    Change::Decide(record, decision) => {
                        decisions
                            .insert(record.0.as_slice(), decision.code())
                            .map_err(|e| err(e.into()))?;
                    }
                    Change::Index(record, plaintext) => {
                        let sealed = self.local.seal(&index_name(record), plaintext);
                        index
                            .insert(record.0.as_slice(), sealed.as_slice())
                            .map_err(|e| err(e.into()))?;
                    }
                    Change::ForgetRecord(record) => {
                        let end = prefix_end(&record.0);
                        let range = record.0.as_slice()..end.as_slice();
                        index
                            .remove(record.0.as_slice())
                            .map_err(|e| err(e.into()))?;
                        for table in [
                            &mut ledger,
                            &mut blobs,
                            &mut replaced,
                            &mut held,
                            &mut section_keys,
                            &mut vouched,
                        ] {
                            table
                                .retain_in(range.clone(), |_, _| false)
                                .map_err(|e| err(e.into()))?;
                        }
                    }
                }
            }
            // Whether each record whose ledger this batch changed still has any operation.
            let mut ledgers: std::collections::BTreeSet<RecordId> =
                batch.ledger.iter().map(|(record, ..)| *record).collect();
            ledgers.extend(batch.changes.iter().filter_map(|change| match change {
                Change::RemoveLedgerOp(record, _) | Change::ForgetRecord(record) => Some(*record),
                _ => None,
            }));
            for record in ledgers {
                let end = prefix_end(&record.0);
                let held = ledger
                    .range(record.0.as_slice()..end.as_slice())
                    .map_err(|e| err(e.into()))?
                    .next()
                    .is_some();
                if held {
                    records
                        .insert(record.0.as_slice(), ())
                        .map_err(|e| err(e.into()))?;
                } else {
                    records
                        .remove(record.0.as_slice())
                        .map_err(|e| err(e.into()))?;
                }
            }
            let mut local = tx.open_table(LOCAL).map_err(|e| err(e.into()))?;
            for (name, value) in &batch.local {
                let sealed = self.local.seal(name, value);
                local
                    .insert(name.as_str(), sealed.as_slice())
                    .map_err(|e| err(e.into()))?;
            }
        }
        tx.commit().map_err(|e| err(e.into()))
    }

    /// Vouches for an item (an HMAC tag of its key), or stops vouching for it.
    fn vouch(
        &self,
        table: &mut redb::Table<&[u8], &[u8]>,
        record: &RecordId,
        item: Vouched,
        yes: bool,
    ) -> Result<()> {
        let key = item.key(record);
        if yes {
            let tag = self.local.tag(&key);
            table.insert(key.as_slice(), tag.as_ref())
        } else {
            table.remove(key.as_slice())
        }
        .map(|_| ())
        .map_err(|e| storage(&self.path)(e.into()))
    }

    /// A local setting, if set.
    pub fn local<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let err = storage(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = tx.open_table(LOCAL).map_err(|e| err(e.into()))?;
        let Some(sealed) = table.get(name).map_err(|e| err(e.into()))? else {
            return Ok(None);
        };
        let damaged = |reason: &str| VaultError::DamagedSetting {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        if sealed.value().len() > LOCAL_VALUE_BYTES_MAX + 28 {
            return Err(damaged("too large"));
        }
        let plain = self
            .local
            .open(name, sealed.value())
            .ok_or_else(|| damaged("it does not decrypt with this device's key"))?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|e| damaged(&e.to_string()))
    }

    /// Every stored ledger operation of a record, as bytes (decode them before trusting them).
    pub fn ledger_ops(&self, record: &RecordId) -> Result<Vec<Vec<u8>>> {
        self.scan(LEDGER, &record.0)
            .map(|rows| rows.into_iter().map(|(_, bytes)| bytes).collect())
    }

    /// Every stored blob of a section, with the id it is stored under (decode before trusting).
    pub fn blobs(&self, record: &RecordId, section: Section) -> Result<Vec<(BlobId, Vec<u8>)>> {
        let rows = self.scan(BLOBS, &section_prefix(record, section))?;
        Ok(rows
            .into_iter()
            .map(|(key, bytes)| {
                let id: [u8; 32] = key[17..].try_into().expect("blob keys end in a 32-byte id");
                (BlobId(id), bytes)
            })
            .collect())
    }

    /// Every stored ledger operation of a record, with the id it is stored under if this node
    /// vouched for it (the `vouched` table): decode with [`SignedOp::decode_stored`], which trusts the
    /// signature only if the bytes hash to that id.
    pub fn ledger_ops_vouched(&self, record: &RecordId) -> Result<Vec<(Vec<u8>, Option<OpId>)>> {
        let err = storage(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = tx.open_table(LEDGER).map_err(|e| err(e.into()))?;
        let vouched = open_if_made(&tx, VOUCHED, &self.path)?;
        let end = prefix_end(&record.0);
        let mut out = Vec::new();
        for row in table
            .range(record.0.as_slice()..end.as_slice())
            .map_err(|e| err(e.into()))?
        {
            let (key, bytes) = row.map_err(|e| err(e.into()))?;
            let id = key.value()[16..]
                .try_into()
                .ok()
                .map(OpId)
                .filter(|id| self.vouched(vouched.as_ref(), record, Vouched::Op(*id)));
            out.push((bytes.value().to_vec(), id));
        }
        Ok(out)
    }

    /// Every stored blob of a section, with the id it is stored under and whether this node
    /// vouched for it (the `vouched` table): decode with [`Blob::decode_stored`], which trusts the
    /// signature only if the bytes hash to that id.
    pub fn blobs_vouched(
        &self,
        record: &RecordId,
        section: Section,
    ) -> Result<Vec<(BlobId, Vec<u8>, bool)>> {
        let err = storage(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = tx.open_table(BLOBS).map_err(|e| err(e.into()))?;
        let vouched = open_if_made(&tx, VOUCHED, &self.path)?;
        let prefix = section_prefix(record, section);
        let end = prefix_end(&prefix);
        let mut out = Vec::new();
        for row in table
            .range(prefix.as_slice()..end.as_slice())
            .map_err(|e| err(e.into()))?
        {
            let (key, bytes) = row.map_err(|e| err(e.into()))?;
            let id = BlobId(
                key.value()[17..]
                    .try_into()
                    .expect("blob keys end in a 32-byte id"),
            );
            let vouched = self.vouched(vouched.as_ref(), record, Vouched::Blob(section, id));
            out.push((id, bytes.value().to_vec(), vouched));
        }
        Ok(out)
    }

    /// Whether this node vouched for an item: its tag is stored and matches.
    fn vouched(
        &self,
        table: Option<&redb::ReadOnlyTable<&[u8], &[u8]>>,
        record: &RecordId,
        item: Vouched,
    ) -> bool {
        let key = item.key(record);
        table
            .and_then(|table| table.get(key.as_slice()).ok().flatten())
            .is_some_and(|tag| self.local.vouches(&key, tag.value()))
    }

    /// The section keys this node kept for a record ([`Batch::keep_key`]), by id. A row that
    /// does not open, or whose key does not have the id it is stored under, is left out (the
    /// key is unwrapped from the ledger again).
    pub fn section_keys(&self, record: &RecordId) -> Result<crate::consent::Kept> {
        let err = storage(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let Some(table) = open_if_made(&tx, SECTION_KEYS, &self.path)? else {
            return Ok(Default::default());
        };
        let end = prefix_end(&record.0);
        let mut out = std::collections::BTreeMap::new();
        for row in table
            .range(record.0.as_slice()..end.as_slice())
            .map_err(|e| err(e.into()))?
        {
            let (key, sealed) = row.map_err(|e| err(e.into()))?;
            let Ok(id) = <[u8; 16]>::try_from(&key.value()[16..]).map(KeyId) else {
                continue;
            };
            let Some(plain) = self
                .local
                .open(&section_key_name(record, &id), sealed.value())
                .map(zeroize::Zeroizing::new)
            else {
                continue;
            };
            let (Some(section), Some(epoch), Some(bytes)) = (
                plain.first().and_then(|code| Section::from_code(*code)),
                plain
                    .get(1..5)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(u32::from_le_bytes),
                plain.get(5..).and_then(|b| <&[u8; 32]>::try_from(b).ok()),
            ) else {
                continue;
            };
            let key = SectionKey::from_bytes(bytes);
            if key.id() == id {
                out.insert(id, (section, epoch, key));
            }
        }
        Ok(out)
    }

    /// One stored blob's bytes, if stored (decode before trusting).
    pub fn blob(
        &self,
        record: &RecordId,
        section: Section,
        id: &BlobId,
    ) -> Result<Option<Vec<u8>>> {
        let err = storage(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = tx.open_table(BLOBS).map_err(|e| err(e.into()))?;
        let key = blob_key(record, section, id);
        Ok(table
            .get(key.as_slice())
            .map_err(|e| err(e.into()))?
            .map(|bytes| bytes.value().to_vec()))
    }

    /// The patient index, every row opened: per record, its entry. A row that does not open
    /// (damaged, or sealed under another key) is left out, to be written again.
    pub fn patient_index<T: DeserializeOwned>(&self) -> Result<Vec<(RecordId, T)>> {
        let err = storage(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let Some(table) = open_if_made(&tx, PATIENT_INDEX, &self.path)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| err(e.into()))? {
            let (key, sealed) = row.map_err(|e| err(e.into()))?;
            let Ok(id) = <[u8; 16]>::try_from(key.value()).map(RecordId) else {
                continue;
            };
            let entry = self
                .local
                .open(&index_name(&id), sealed.value())
                .and_then(|plain| serde_json::from_slice(&plain).ok());
            if let Some(entry) = entry {
                out.push((id, entry));
            }
        }
        Ok(out)
    }

    /// A provider's decision on one record, if it made one: one lookup.
    pub fn decision(&self, record: &RecordId) -> Result<Option<Decision>> {
        let err = storage(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let Some(table) = open_if_made(&tx, DECISIONS, &self.path)? else {
            return Ok(None);
        };
        Ok(table
            .get(record.0.as_slice())
            .map_err(|e| err(e.into()))?
            .and_then(|code| Decision::of(code.value())))
    }

    /// Every decision a provider made, by record.
    pub fn decisions(&self) -> Result<Vec<(RecordId, Decision)>> {
        let err = storage(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let Some(table) = open_if_made(&tx, DECISIONS, &self.path)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| err(e.into()))? {
            let (key, code) = row.map_err(|e| err(e.into()))?;
            if let (Ok(id), Some(decision)) = (
                <[u8; 16]>::try_from(key.value()),
                Decision::of(code.value()),
            ) {
                out.push((RecordId(id), decision));
            }
        }
        Ok(out)
    }

    /// Per record, its generation: the sequence number of the last committed transaction that
    /// changed what is stored of it (a record absent: none since the vault had this count).
    pub fn generations(&self) -> Result<std::collections::BTreeMap<RecordId, u64>> {
        let err = storage(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let Some(table) = open_if_made(&tx, GENERATIONS, &self.path)? else {
            return Ok(Default::default());
        };
        let mut out = std::collections::BTreeMap::new();
        for row in table.iter().map_err(|e| err(e.into()))? {
            let (key, value) = row.map_err(|e| err(e.into()))?;
            if let Ok(id) = <[u8; 16]>::try_from(key.value()) {
                out.insert(RecordId(id), value.value());
            }
        }
        Ok(out)
    }

    /// The last sequence number given to a transaction, and the records whose stored content
    /// changed after sequence `after`: read from the changes table, so the cost follows what
    /// changed, not what is held.
    pub fn changed_since(&self, after: u64) -> Result<(u64, Vec<RecordId>)> {
        let err = storage(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let Some(table) = open_if_made(&tx, CHANGES, &self.path)? else {
            return Ok((0, Vec::new()));
        };
        let last = table
            .get(0)
            .map_err(|e| err(e.into()))?
            .and_then(|row| <[u8; 8]>::try_from(row.value()).ok())
            .map_or(0, u64::from_be_bytes);
        let mut changed = Vec::new();
        for row in table
            .range(after.saturating_add(1).max(1)..)
            .map_err(|e| err(e.into()))?
        {
            let (_, ids) = row.map_err(|e| err(e.into()))?;
            for id in ids.value().chunks(16) {
                if let Ok(id) = <[u8; 16]>::try_from(id) {
                    changed.push(RecordId(id));
                }
            }
        }
        Ok((last, changed))
    }

    /// The records whose ledger operations the vault holds.
    pub fn records(&self) -> Result<Vec<RecordId>> {
        let err = storage(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = tx.open_table(RECORDS).map_err(|e| err(e.into()))?;
        let mut records = Vec::new();
        for row in table.iter().map_err(|e| err(e.into()))? {
            let (key, _) = row.map_err(|e| err(e.into()))?;
            if let Ok(id) = <[u8; 16]>::try_from(key.value()) {
                records.push(RecordId(id));
            }
        }
        Ok(records)
    }

    /// Fills the table of records held from the ledger itself: once, for a vault from before
    /// that table.
    fn list_records(&self) -> Result<()> {
        let err = storage(&self.path);
        let held = self.records_in_ledger()?;
        let tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut records = tx.open_table(RECORDS).map_err(|e| err(e.into()))?;
            for record in held {
                records
                    .insert(record.0.as_slice(), ())
                    .map_err(|e| err(e.into()))?;
            }
        }
        tx.commit().map_err(|e| err(e.into()))
    }

    /// The records with ledger operations, found in the ledger table: a seek per record.
    fn records_in_ledger(&self) -> Result<Vec<RecordId>> {
        let err = storage(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = tx.open_table(LEDGER).map_err(|e| err(e.into()))?;
        let mut records = Vec::new();
        // Jump from one record's keys to the next instead of reading every operation.
        let mut from = Vec::new();
        while let Some(row) = table
            .range(from.as_slice()..)
            .map_err(|e| err(e.into()))?
            .next()
        {
            let (key, _) = row.map_err(|e| err(e.into()))?;
            let id: [u8; 16] = key.value()[..16]
                .try_into()
                .expect("ledger keys start with a 16-byte record id");
            records.push(RecordId(id));
            from = prefix_end(&id);
        }
        Ok(records)
    }

    /// Every blob held for the patient of a record, with its section. A row whose section code
    /// is unknown is skipped (the blob itself is checked again by whoever reads it).
    pub fn held(&self, record: &RecordId) -> Result<Vec<(Section, BlobId, Vec<u8>)>> {
        let rows = self.scan(HELD, &record.0)?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, value)| {
                let id: [u8; 32] = key[16..].try_into().ok()?;
                let (code, bytes) = value.split_first()?;
                Some((Section::from_code(*code)?, BlobId(id), bytes.to_vec()))
            })
            .collect())
    }

    /// Every blob of a section a compaction replaced.
    pub fn replaced(&self, record: &RecordId, section: Section) -> Result<Vec<BlobId>> {
        let rows = self.scan(REPLACED, &section_prefix(record, section))?;
        Ok(rows
            .into_iter()
            .map(|(key, _)| {
                let id: [u8; 32] = key[17..].try_into().expect("blob keys end in a 32-byte id");
                BlobId(id)
            })
            .collect())
    }

    /// Whether a blob was replaced by a compaction (and so must not be stored again).
    pub fn is_replaced(&self, record: &RecordId, section: Section, id: &BlobId) -> Result<bool> {
        Ok(self.replaced_by(record, section, id)?.is_some())
    }

    /// The compaction that last replaced a blob, if one did.
    pub fn replaced_by(
        &self,
        record: &RecordId,
        section: Section,
        id: &BlobId,
    ) -> Result<Option<BlobId>> {
        let err = storage(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = tx.open_table(REPLACED).map_err(|e| err(e.into()))?;
        let key = blob_key(record, section, id);
        Ok(table
            .get(key.as_slice())
            .map_err(|e| err(e.into()))?
            .and_then(|by| <[u8; 32]>::try_from(by.value()).ok().map(BlobId)))
    }

    /// Overwrites a stored blob's bytes as they are, without any check. Only for tests that
    /// simulate damage on disk.
    #[doc(hidden)]
    pub fn overwrite_blob_for_test(
        &self,
        record: &RecordId,
        section: Section,
        id: &BlobId,
        bytes: &[u8],
    ) -> Result<()> {
        self.write_raw_for_test(BLOBS, &blob_key(record, section, id), bytes)
    }

    /// Overwrites a stored ledger operation's bytes under the key it is stored under, without
    /// any check and leaving what the node vouched for as it is: only for tests of someone
    /// who can write the disk but has no keystore.
    #[doc(hidden)]
    pub fn overwrite_ledger_op_for_test(
        &self,
        record: &RecordId,
        id: &OpId,
        bytes: &[u8],
    ) -> Result<()> {
        self.write_raw_for_test(LEDGER, &ledger_key(record, id), bytes)
    }

    /// Copies the tag this node wrote for ledger operation `from` to the row of operation
    /// `to`, as someone who can write the disk but not make a tag would: only for tests.
    #[doc(hidden)]
    pub fn copy_vouch_for_test(&self, record: &RecordId, from: &OpId, to: &OpId) -> Result<()> {
        let err = storage(&self.path);
        let tag = {
            let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
            let table = tx.open_table(VOUCHED).map_err(|e| err(e.into()))?;
            table
                .get(Vouched::Op(*from).key(record).as_slice())
                .map_err(|e| err(e.into()))?
                .map(|tag| tag.value().to_vec())
                .unwrap_or_default()
        };
        self.write_raw_for_test(VOUCHED, &Vouched::Op(*to).key(record), &tag)
    }

    fn write_raw_for_test(
        &self,
        table: TableDefinition<&[u8], &[u8]>,
        key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        let err = storage(&self.path);
        let tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut table = tx.open_table(table).map_err(|e| err(e.into()))?;
            table.insert(key, value).map_err(|e| err(e.into()))?;
        }
        tx.commit().map_err(|e| err(e.into()))
    }

    /// Rewrites the database file without free pages (after a compaction).
    pub fn compact_file(&mut self) -> Result<()> {
        let path = self.path.clone();
        self.db
            .compact()
            .map(|_| ())
            .map_err(|e| storage(&path)(e.into()))
    }

    fn scan(
        &self,
        table: TableDefinition<&[u8], &[u8]>,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let err = storage(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = tx.open_table(table).map_err(|e| err(e.into()))?;
        let end = prefix_end(prefix);
        let mut rows = Vec::new();
        for row in table
            .range(prefix..end.as_slice())
            .map_err(|e| err(e.into()))?
        {
            let (key, value) = row.map_err(|e| err(e.into()))?;
            rows.push((key.value().to_vec(), value.value().to_vec()));
        }
        Ok(rows)
    }
}

fn storage(path: &Path) -> impl Fn(redb::Error) -> VaultError + '_ {
    move |source| VaultError::Storage {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(dir: &Path, key: &SigningKey) -> Vault {
        Vault::open(dir, LocalKey::derive(key)).unwrap()
    }

    #[test]
    fn batches_are_durable_and_scans_stay_within_their_section() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let record = RecordId([7; 16]);
        let other = RecordId([8; 16]);
        {
            let vault = vault(dir.path(), &key);
            let mut batch = Batch::new();
            batch.unchecked_blob(record, Section::Summary, BlobId([1; 32]), b"one".to_vec());
            batch.unchecked_blob(record, Section::Clinical, BlobId([2; 32]), b"two".to_vec());
            batch.unchecked_blob(other, Section::Summary, BlobId([3; 32]), b"three".to_vec());
            batch.unchecked_ledger_op(record, OpId([4; 32]), b"op");
            batch.local("profile", &serde_json::json!({"name": "Ada"}));
            vault.commit(batch).unwrap();
        }
        let vault = vault(dir.path(), &key);
        assert_eq!(
            vault.blobs(&record, Section::Summary).unwrap(),
            vec![(BlobId([1; 32]), b"one".to_vec())]
        );
        assert_eq!(vault.ledger_ops(&record).unwrap(), vec![b"op".to_vec()]);
        assert!(vault.ledger_ops(&other).unwrap().is_empty());
        let profile: serde_json::Value = vault.local("profile").unwrap().unwrap();
        assert_eq!(profile["name"], "Ada");
    }

    #[test]
    fn what_changed_since_a_generation_is_every_record_written_after_it_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let vault = vault(dir.path(), &key);
        let [a, b, c] = [RecordId([1; 16]), RecordId([2; 16]), RecordId([3; 16])];
        assert_eq!(vault.changed_since(0).unwrap(), (0, vec![]), "a new vault");
        let write = |records: &[RecordId], n: u8| {
            let mut batch = Batch::new();
            for record in records {
                batch.unchecked_blob(*record, Section::Summary, BlobId([n; 32]), vec![n]);
            }
            vault.commit(batch).unwrap();
        };
        write(&[a, b], 1);
        write(&[c], 2);
        let (seen, _) = vault.changed_since(u64::MAX).unwrap();
        assert_eq!(seen, 2);
        // a changes again: b, written in the same transaction as a before, must still count
        // as changed for a reader that last looked before both.
        write(&[a], 3);
        let (last, mut early) = vault.changed_since(0).unwrap();
        early.sort();
        assert_eq!((last, early), (3, vec![a, b, c]));
        assert_eq!(vault.changed_since(seen).unwrap(), (3, vec![a]));
        assert_eq!(vault.changed_since(3).unwrap(), (3, vec![]));
        // A setting alone changes no record; deleting one does.
        let mut batch = Batch::new();
        batch.local("x", &1);
        vault.commit(batch).unwrap();
        assert_eq!(vault.changed_since(3).unwrap(), (3, vec![]));
        let mut batch = Batch::new();
        batch.forget_record(c);
        vault.commit(batch).unwrap();
        assert_eq!(vault.changed_since(3).unwrap(), (4, vec![c]));
        let generations = vault.generations().unwrap();
        assert_eq!(generations[&a], 3);
        assert_eq!(generations[&b], 1);
        assert_eq!(generations[&c], 4);
    }

    #[test]
    fn the_records_held_follow_the_ledger_and_a_vault_from_before_their_table_lists_them() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let [a, b, c] = [RecordId([1; 16]), RecordId([2; 16]), RecordId([3; 16])];
        {
            let vault = vault(dir.path(), &key);
            let mut batch = Batch::new();
            for (record, n) in [(a, 1), (b, 2), (c, 3)] {
                batch.unchecked_ledger_op(record, OpId([n; 32]), b"op");
            }
            batch.unchecked_ledger_op(a, OpId([9; 32]), b"op");
            // Blobs alone do not make a record held.
            batch.unchecked_blob(
                RecordId([4; 16]),
                Section::Summary,
                BlobId([4; 32]),
                vec![4],
            );
            vault.commit(batch).unwrap();
            assert_eq!(vault.records().unwrap(), vec![a, b, c]);
            // One of a's two operations removed: still held; b's only one: no longer; c
            // forgotten.
            let mut batch = Batch::new();
            batch.remove_ledger_op(a, OpId([1; 32]));
            batch.remove_ledger_op(b, OpId([2; 32]));
            batch.forget_record(c);
            vault.commit(batch).unwrap();
            assert_eq!(vault.records().unwrap(), vec![a]);
            assert_eq!(vault.records().unwrap(), vault.records_in_ledger().unwrap());
            // As a vault written before the table existed.
            let tx = vault.db.begin_write().unwrap();
            tx.delete_table(RECORDS).unwrap();
            tx.commit().unwrap();
        }
        let vault = vault(dir.path(), &key);
        assert_eq!(vault.records().unwrap(), vec![a]);
    }

    #[test]
    fn a_replaced_blob_is_removed_and_never_stored_again() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let vault = vault(dir.path(), &key);
        let record = RecordId([1; 16]);
        let mut batch = Batch::new();
        batch.unchecked_blob(record, Section::Journal, BlobId([1; 32]), b"old".to_vec());
        vault.commit(batch).unwrap();
        let mut batch = Batch::new();
        batch.unchecked_blob(record, Section::Journal, BlobId([2; 32]), b"all".to_vec());
        batch.replace(record, Section::Journal, BlobId([1; 32]), BlobId([2; 32]));
        vault.commit(batch).unwrap();
        let mut batch = Batch::new().from_peer();
        batch.unchecked_blob(record, Section::Journal, BlobId([1; 32]), b"old".to_vec());
        vault.commit(batch).unwrap();
        let ids: Vec<_> = vault
            .blobs(&record, Section::Journal)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![BlobId([2; 32])]);
        assert!(
            vault
                .is_replaced(&record, Section::Journal, &BlobId([1; 32]))
                .unwrap()
        );
    }

    #[test]
    fn settings_are_sealed_to_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        {
            let vault = vault(dir.path(), &key);
            let mut batch = Batch::new();
            batch.local("contacts", &"Dr Canary Practice");
            vault.commit(batch).unwrap();
        }
        let bytes = std::fs::read(dir.path().join(VAULT_FILE)).unwrap();
        assert!(
            !bytes.windows(6).any(|w| w == b"Canary"),
            "settings are stored in plaintext"
        );
        let stranger = vault(dir.path(), &SigningKey::generate());
        let err = stranger.local::<String>("contacts").unwrap_err();
        assert!(err.to_string().contains("is damaged"), "{err}");
    }

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(&[1, 2]), vec![1, 3]);
        assert_eq!(prefix_end(&[1, 255]), vec![2]);
    }
}
