//! Backups: the record root key, this device's keys and everything the vault holds, in one age
//! passphrase-encrypted file that the standard `age` tool can also decrypt.
//!
//! Inside is a JSON document (`phr-backup/1`): the keystore, the device profile, the record's
//! metadata, the signed ledger operations and the sealed blobs (still sealed: the backup adds
//! no second way to read them). Restoring on a fresh home gives back the same record id and the
//! same device identity, and the record as it was when the backup was made.

use std::{collections::BTreeMap, path::Path};

use age::secrecy::SecretString;
use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Device, Home, HomeError, RecordInfo, Result, new_device, prepare_new};
use crate::{
    blob::Blob,
    keys::RecordId,
    keystore::{self, BACKUP_SCRYPT_LOG_N, Keystore},
    ledger::SignedOp,
    section::Section,
    vault::{Batch, LocalKey, Vault},
};

/// The format name inside a backup.
const BACKUP_FORMAT: &str = "phr-backup/1";

#[derive(Serialize, Deserialize)]
struct BackupFile {
    format: String,
    /// The keystore's plaintext serialisation, base64.
    keystore: String,
    device: Device,
    record: Option<RecordInfo>,
    /// Signed ledger operations, base64.
    ledger: Vec<String>,
    /// Sealed blobs per section, base64.
    blobs: BTreeMap<Section, Vec<String>>,
}

/// What a restore brought back.
#[derive(Debug)]
pub struct Restored {
    /// The restored home.
    pub home: Home,
    /// How many blobs and ledger operations came back.
    pub blobs: usize,
    /// How many ledger operations came back.
    pub ledger_ops: usize,
}

/// A backup's contents, decoded and checked, before anything is written.
struct Contents {
    keystore: Keystore,
    device: Device,
    record: Option<(RecordId, RecordInfo)>,
    ledger: Vec<SignedOp>,
    blobs: Vec<(Section, Blob)>,
}

impl Contents {
    /// Decodes a decrypted backup: its JSON, its keystore (which must be the device's), and
    /// every ledger operation and blob it holds, each through its own decoder. Writes nothing.
    fn parse(plain: &[u8]) -> Result<Contents> {
        let damaged = |reason: String| HomeError::Damaged {
            what: "the backup".into(),
            reason,
        };
        let backup: BackupFile =
            serde_json::from_slice(plain).map_err(|e| damaged(e.to_string()))?;
        if backup.format != BACKUP_FORMAT {
            return Err(damaged(format!("unknown format `{}`", backup.format)));
        }
        let keystore_bytes = Zeroizing::new(
            STANDARD
                .decode(&backup.keystore)
                .map_err(|e| damaged(e.to_string()))?,
        );
        let keystore = Keystore::from_bytes(&keystore_bytes)?;
        if backup.device.id != keystore.device.peer_id().to_string() {
            return Err(damaged("its keystore and device do not match".into()));
        }
        let mut contents = Contents {
            keystore,
            device: backup.device,
            record: None,
            ledger: Vec::new(),
            blobs: Vec::new(),
        };
        // Operations and blobs belong to a record: without one, a restore writes none of them.
        let Some(info) = backup.record else {
            return Ok(contents);
        };
        let id: RecordId = info.id.parse()?;
        contents.record = Some((id, info));
        for text in &backup.ledger {
            let bytes = STANDARD.decode(text).map_err(|e| damaged(e.to_string()))?;
            contents.ledger.push(SignedOp::decode(&bytes)?);
        }
        for (section, blobs) in backup.blobs {
            for text in &blobs {
                let bytes = STANDARD.decode(text).map_err(|e| damaged(e.to_string()))?;
                contents.blobs.push((section, Blob::decode(bytes)?));
            }
        }
        Ok(contents)
    }
}

/// Decodes and checks a decrypted backup as [`Home::restore`] does before it writes anything:
/// for the fuzz targets (`crate::fuzzing`).
pub(crate) fn check_contents(plain: &[u8]) -> Result<()> {
    Contents::parse(plain).map(drop)
}

impl Home {
    /// The backup file's bytes (ASCII-armored age, scrypt), encrypted with `passphrase`.
    pub fn backup(&self, passphrase: &SecretString) -> Result<Vec<u8>> {
        let mut file = BackupFile {
            format: BACKUP_FORMAT.into(),
            keystore: STANDARD.encode(&*self.keystore.to_bytes()),
            device: self.device.clone(),
            record: None,
            ledger: Vec::new(),
            blobs: BTreeMap::new(),
        };
        if let Some(held) = &self.held {
            file.record = Some(RecordInfo {
                id: held.replica.id().to_string(),
                meta: held.meta.clone(),
            });
            file.ledger = held
                .replica
                .ledger()
                .ops()
                .map(|op| STANDARD.encode(op.bytes()))
                .collect();
            for section in Section::ALL {
                let blobs = self.vault.blobs(&held.replica.id(), section)?;
                file.blobs.insert(
                    section,
                    blobs
                        .iter()
                        .map(|(_, bytes)| STANDARD.encode(bytes))
                        .collect(),
                );
            }
        }
        let json = Zeroizing::new(serde_json::to_vec_pretty(&file).expect("serialisable"));
        Ok(keystore::encrypt_with_passphrase(
            &json,
            passphrase,
            BACKUP_SCRYPT_LOG_N,
        )?)
    }

    /// Restores a backup into `dir`, which must not hold a home yet. The keystore is protected
    /// with `keystore_passphrase` if given.
    pub fn restore(
        dir: &Path,
        file: &[u8],
        passphrase: &SecretString,
        keystore_passphrase: Option<&SecretString>,
    ) -> Result<Restored> {
        let plain = keystore::decrypt_with_passphrase(file, passphrase)?;
        let backup = Contents::parse(&plain)?;
        let keystore = backup.keystore;
        let (lock, tightened) = prepare_new(dir)?;
        // Same identity, new Automerge actor: the lost device's actor must never write again.
        let fresh = new_device(
            &keystore,
            &backup.device.name,
            &backup.device.label,
            backup.device.role,
            backup.device.ods.clone(),
        );
        let device = Device {
            actor: fresh.actor,
            ..backup.device
        };
        let vault = Vault::open(dir, LocalKey::derive(&keystore.device))?;
        let mut batch = Batch::new();
        batch.local("device", &device);
        let counts = (backup.blobs.len(), backup.ledger.len());
        if let Some((id, info)) = &backup.record {
            batch.local("record", info);
            for op in &backup.ledger {
                batch.ledger_op(*id, op);
            }
            for (section, blob) in backup.blobs {
                batch.blob(*id, section, &blob);
            }
        }
        vault.commit(batch)?;
        keystore.write(dir, keystore_passphrase)?;
        drop(vault);
        drop(lock);
        let mut home = Home::open_with(dir, &mut || {
            keystore_passphrase
                .cloned()
                .ok_or(crate::keystore::KeystoreError::PassphraseNeeded)
        })?;
        if let Some(tightened) = tightened {
            home.warnings.insert(0, tightened);
        }
        Ok(Restored {
            home,
            blobs: counts.0,
            ledger_ops: counts.1,
        })
    }
}
