//! The home directory: this device's identity and its copy of the record.
//!
//! This is the one persistence boundary of phr: the CLI opens a [`Home`], loads the [`Record`]
//! and hands it back to [`Home::save`]; it never touches files itself. The storage behind it is
//! plaintext for now and becomes encrypted, sealed blobs in a vault without the CLI changing.
//!
//! Layout (format version 1):
//!
//! ```text
//! HOME/
//!   device.json        this device: id, Automerge actor, display name, role
//!   record.json        the record's id, subject and NHS number (patient homes only)
//!   commits/           one file per save: the Automerge changes of each section
//!     0000000001-<uuid>.phrc
//!   lock               held while a command uses the home
//! ```
//!
//! A commit file is written to a temporary name, synced, renamed into place and the directory
//! synced, so a save is either wholly on disk or not at all, and a crash loses only the save in
//! flight. Loading concatenates every commit file per section; Automerge ignores changes it has
//! seen, so a repeated or overlapping file is harmless. After [`COMMITS_BEFORE_COMPACTION`] files
//! the sections are rewritten as one compacted file and the older files removed.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
};

use automerge::ActorId;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    nhs::{NHS_NUMBER_SYSTEM, NhsNumber, ODS_CODE_SYSTEM},
    record::{Author, Record, RecordError, RecordMeta, Stamp},
    section::Section,
};

/// How many commit files accumulate before they are compacted into one.
pub const COMMITS_BEFORE_COMPACTION: usize = 32;

/// The magic bytes and format version at the start of a commit file.
const COMMIT_MAGIC: &[u8; 5] = b"PHRC1";

/// The largest section payload a commit file may declare (guards against a corrupt length).
const COMMIT_SECTION_BYTES_MAX: u32 = 512 * 1024 * 1024;

/// What this device is to the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A patient's own device, holding their record.
    Patient,
    /// A provider organisation's node (GP practice, pharmacy, hospital).
    Provider,
}

/// This device's identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// A random id, hex; also the Automerge actor id of every write made here.
    pub id: String,
    /// The display name: the patient's name or the organisation's.
    pub name: String,
    /// Patient device or provider node.
    pub role: Role,
    /// The provider's ODS organisation code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ods: Option<String>,
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
        ActorId::from(hex_decode(&self.id).unwrap_or_else(|| self.id.as_bytes().to_vec()))
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
}

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
        "this home ({0}) is a provider node with no record of its own; record commands run on a patient's device"
    )]
    NoRecord(PathBuf),
    /// A file could not be read or written.
    #[error("cannot read or write {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file holds something phr did not write.
    #[error("{path} is damaged: {reason}. Restore the home from a backup")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The record's stored changes could not be loaded.
    #[error(transparent)]
    Record(#[from] RecordError),
}

type Result<T, E = HomeError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl Fn(io::Error) -> HomeError + '_ {
    move |source| HomeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An open home directory, locked against other phr commands while open.
#[derive(Debug)]
pub struct Home {
    dir: PathBuf,
    device: Device,
    _lock: File,
}

impl Home {
    /// Creates a patient's device identity and their new record, with the Patient resource.
    pub fn init_patient(
        dir: &Path,
        patient: &NewPatient,
        now: Timestamp,
    ) -> Result<(Home, Record)> {
        let device = Device {
            id: random_hex(),
            name: patient.name.clone(),
            role: Role::Patient,
            ods: None,
        };
        let home = Self::create(dir, &device)?;
        let patient_id = uuid::Uuid::new_v4().to_string();
        let meta = RecordMeta {
            id: random_hex(),
            subject: Some(format!("Patient/{patient_id}")),
            nhs_number: patient.nhs_number.as_ref().map(|n| n.as_str().to_string()),
        };
        let mut record = Record::create(meta.clone(), &device.actor());
        let author = device.author();
        let stamp = Stamp {
            author: &author,
            time: now,
        };
        record.put(stamp, &patient_resource(&patient_id, patient))?;
        record.commit(stamp, "create record");
        write_atomically(
            &home.dir.join("record.json"),
            &serde_json::to_vec_pretty(&meta).expect("serialisable"),
        )?;
        let mut home = home;
        home.save(&mut record)?;
        Ok((home, record))
    }

    /// Creates a provider node's identity (it holds patients' records only once they share them).
    pub fn init_provider(dir: &Path, name: &str, ods: Option<String>) -> Result<Home> {
        let device = Device {
            id: random_hex(),
            name: name.to_string(),
            role: Role::Provider,
            ods,
        };
        Self::create(dir, &device)
    }

    fn create(dir: &Path, device: &Device) -> Result<Home> {
        fs::create_dir_all(dir.join("commits")).map_err(io_err(dir))?;
        let lock = lock(dir)?;
        let device_path = dir.join("device.json");
        if device_path.exists() {
            return Err(HomeError::AlreadyInitialised(dir.to_path_buf()));
        }
        write_atomically(
            &device_path,
            &serde_json::to_vec_pretty(device).expect("serialisable"),
        )?;
        Ok(Home {
            dir: dir.to_path_buf(),
            device: device.clone(),
            _lock: lock,
        })
    }

    /// Opens an existing home.
    pub fn open(dir: &Path) -> Result<Home> {
        let device_path = dir.join("device.json");
        if !device_path.exists() {
            return Err(HomeError::NotInitialised(dir.to_path_buf()));
        }
        let lock = lock(dir)?;
        let device = read_json(&device_path)?;
        Ok(Home {
            dir: dir.to_path_buf(),
            device,
            _lock: lock,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This device's identity.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Loads this home's record, every section.
    pub fn load_record(&self) -> Result<Record> {
        let meta_path = self.dir.join("record.json");
        if !meta_path.exists() {
            return Err(HomeError::NoRecord(self.dir.clone()));
        }
        let meta: RecordMeta = read_json(&meta_path)?;
        let mut stored = BTreeMap::<Section, Vec<u8>>::new();
        for path in self.commit_files()? {
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            for (section, payload) in decode_commit(&path, &bytes)? {
                stored
                    .entry(section)
                    .or_default()
                    .extend_from_slice(payload);
            }
        }
        Ok(Record::load(meta, &stored, &self.device.actor())?)
    }

    /// Writes the record's unsaved changes durably; returns once they are on disk. Compacts the
    /// stored changes when enough files have accumulated.
    pub fn save(&mut self, record: &mut Record) -> Result<()> {
        let changes = record.take_unsaved();
        if changes.is_empty() {
            return Ok(());
        }
        let existing = self.commit_files()?;
        self.write_commit(existing.len() + 1, &changes)?;
        if existing.len() + 1 >= COMMITS_BEFORE_COMPACTION {
            self.compact(record, existing.len() + 2)?;
        }
        Ok(())
    }

    fn compact(&mut self, record: &mut Record, sequence: usize) -> Result<()> {
        let older = self.commit_files()?;
        self.write_commit(sequence, &record.save_compacted())?;
        // The compacted file holds everything the older ones did; removing them loses nothing,
        // and a crash part-way leaves duplicates that loading ignores.
        for path in older {
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
        sync_dir(&self.dir.join("commits"))
    }

    fn write_commit(&self, sequence: usize, changes: &[(Section, Vec<u8>)]) -> Result<()> {
        let mut bytes = COMMIT_MAGIC.to_vec();
        for (section, payload) in changes {
            bytes.push(section.code());
            let len = u32::try_from(payload.len()).expect("a section's changes fit in 4 GiB");
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(payload);
        }
        let name = format!("{sequence:010}-{}.phrc", uuid::Uuid::new_v4().simple());
        write_atomically(&self.dir.join("commits").join(name), &bytes)
    }

    fn commit_files(&self) -> Result<Vec<PathBuf>> {
        let dir = self.dir.join("commits");
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            if path.extension().is_some_and(|e| e == "phrc") {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }
}

fn decode_commit<'a>(path: &Path, bytes: &'a [u8]) -> Result<Vec<(Section, &'a [u8])>> {
    let damaged = |reason: &str| HomeError::Damaged {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut rest = bytes
        .strip_prefix(COMMIT_MAGIC.as_slice())
        .ok_or_else(|| damaged("not a phr commit file"))?;
    let mut out = Vec::new();
    while let [code, tail @ ..] = rest {
        let section = Section::from_code(*code).ok_or_else(|| damaged("unknown section code"))?;
        let (len, tail) = tail
            .split_first_chunk::<4>()
            .ok_or_else(|| damaged("truncated length"))?;
        let len = u32::from_le_bytes(*len);
        if len > COMMIT_SECTION_BYTES_MAX || len as usize > tail.len() {
            return Err(damaged("truncated section"));
        }
        let (payload, tail) = tail.split_at(len as usize);
        out.push((section, payload));
        rest = tail;
    }
    Ok(out)
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

/// The FHIR Organization a provider node stands for.
pub fn organization_resource(device: &Device) -> serde_json::Value {
    let mut resource =
        json!({"resourceType": "Organization", "id": device.id, "name": device.name});
    if let Some(ods) = &device.ods {
        resource["identifier"] = json!([{"system": ODS_CODE_SYSTEM, "value": ods}]);
    }
    resource
}

fn lock(dir: &Path) -> Result<File> {
    let path = dir.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    // Two commands writing one home at once would race; the second is told, not made to hang.
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(HomeError::Busy(dir.to_path_buf())),
        Err(fs::TryLockError::Error(source)) => Err(HomeError::Io { path, source }),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|e| HomeError::Damaged {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("home files live in a directory");
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(HomeError::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    text.len().is_multiple_of(2).then_some(())?;
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::PutOutcome;

    fn patient() -> NewPatient {
        NewPatient {
            name: "Ada Lovelace".into(),
            nhs_number: Some(NhsNumber::parse("9434765919").unwrap()),
            birth_date: None,
        }
    }

    #[test]
    fn init_save_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let (home, record) = Home::init_patient(dir.path(), &patient(), now).unwrap();
        let subject = record.meta().subject.clone().unwrap();
        assert!(
            matches!(Home::open(dir.path()), Err(HomeError::Busy(_))),
            "the home is locked while open"
        );
        drop(home);
        let home = Home::open(dir.path()).unwrap();
        let record = home.load_record().unwrap();
        let patient = record.get(&subject.parse().unwrap()).unwrap().unwrap();
        assert_eq!(patient["name"][0]["family"], "Lovelace");
        assert_eq!(patient["identifier"][0]["value"], "9434765919");
        drop(home);
        assert!(matches!(
            Home::init_provider(dir.path(), "x", None),
            Err(HomeError::AlreadyInitialised(_))
        ));
    }

    #[test]
    fn many_saves_compact_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let (mut home, mut record) = Home::init_patient(dir.path(), &patient(), now).unwrap();
        let author = home.device().author();
        for i in 0..(COMMITS_BEFORE_COMPACTION + 5) {
            let resource = json!({"resourceType": "Condition", "id": format!("c{i}")});
            let stamp = Stamp {
                author: &author,
                time: now,
            };
            assert_eq!(record.put(stamp, &resource).unwrap(), PutOutcome::Added);
            record.commit(stamp, "add");
            home.save(&mut record).unwrap();
        }
        assert!(home.commit_files().unwrap().len() < COMMITS_BEFORE_COMPACTION);
        drop(home);
        let record = Home::open(dir.path()).unwrap().load_record().unwrap();
        assert_eq!(
            record.len(Section::Summary),
            COMMITS_BEFORE_COMPACTION + 5 + 1
        );
    }

    #[test]
    fn damaged_commit_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let (home, _) = Home::init_patient(dir.path(), &patient(), Timestamp::UNIX_EPOCH).unwrap();
        let file = home.commit_files().unwrap().remove(0);
        fs::write(&file, b"PHRC1\x00\xff\xff").unwrap();
        let err = home.load_record().unwrap_err();
        assert!(
            err.to_string().contains("is damaged: truncated length"),
            "{err}"
        );
    }

    #[test]
    fn opening_an_empty_directory_says_how_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let err = Home::open(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("run `phr init --name NAME`"),
            "{err}"
        );
    }
}
