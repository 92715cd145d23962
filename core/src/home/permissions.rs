//! What opening a home checks of its permissions, and what it fixes.
//!
//! A home is the directory (0700) and the files phr keeps in it (0600, see [`HOME_FILES`]),
//! created so by [`crate::owner_only`]. Versions of phr before this check made the directory and
//! every file but the keystore under the umask, which on most systems gives 0755 and 0644 (or
//! 0775 and 0664 where each user has a group of their own). Opening a home judges the directory
//! and each of those files, all before changing anything:
//!
//! - **only its owner may use it** (no bit of 077): as it should be;
//! - **others may read it, but not change it** (some of 055, none of 022): tightened to 0700 or
//!   0600, and a warning says so. That is what an older phr left, nothing in it can have been
//!   replaced by another user, and what another could have read was ciphertext (the vault) and
//!   the node's log and peer addresses. A patient upgrading keeps their home without a step;
//! - **others may change it** (any of 022): refused, with the `chmod` that fixes it. Another
//!   user could have replaced a file (a keystore of keys they know, a vault of their making), so
//!   the owner must decide whether to trust it before phr uses it again;
//! - **the keystore**, which phr has always written 0600, is refused if others may read it at
//!   all, as before (the keystore's own check, [`crate::keystore`]): its secret keys may have
//!   been copied, which tightening now would hide.
//!
//! A mode phr cannot change (the file is another user's) is refused too. Only the files named
//! here are judged: a home's directory is what keeps others out of whatever else is in it.

use std::{
    fs::{self, Permissions},
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use super::{
    HomeError, LOCK_FILE, MEDICINES_TABLE_FILE, NODE_LOG_FILE, PEERS_FILE, PEERS_JOURNAL_FILE,
    Result,
};
use crate::{
    api::CONTROL_FILE,
    keystore::{KEYSTORE_FILE, KeystoreError},
    owner_only::{DIR_MODE, FILE_MODE},
    vault::VAULT_FILE,
};

/// Every file phr keeps in a home, besides temporary files (which live for one write, 0600).
pub const HOME_FILES: [&str; 8] = [
    KEYSTORE_FILE,
    VAULT_FILE,
    LOCK_FILE,
    CONTROL_FILE,
    NODE_LOG_FILE,
    PEERS_FILE,
    PEERS_JOURNAL_FILE,
    MEDICINES_TABLE_FILE,
];

/// The mode bits that let users other than the owner read, write or enter.
const OTHERS: u32 = 0o077;

/// The mode bits that let users other than the owner change a file or a directory's entries.
const OTHERS_WRITE: u32 = 0o022;

/// Judges `dir` and the files phr keeps in it, then tightens what an older phr left readable by
/// others. Returns a warning naming what was tightened (`None` if nothing was); refuses, having
/// changed nothing, if anything may be changed by others, if the keystore may be read by others,
/// or if a mode cannot be changed.
pub(super) fn secure(dir: &Path) -> Result<Option<String>> {
    let mut loosened: Vec<(PathBuf, u32, u32)> = Vec::new();
    for (path, wanted) in judged(dir) {
        let metadata = match fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == io::ErrorKind::NotFound && path != dir => continue,
            Err(source) => return Err(HomeError::Io { path, source }),
        };
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & OTHERS == 0 {
            continue;
        }
        if path.file_name().is_some_and(|name| name == KEYSTORE_FILE) {
            return Err(KeystoreError::InsecurePermissions { path, mode }.into());
        }
        if mode & OTHERS_WRITE != 0 {
            return Err(HomeError::WritableByOthers {
                path,
                mode,
                dir: dir.to_path_buf(),
            });
        }
        loosened.push((path, mode, wanted));
    }
    if loosened.is_empty() {
        return Ok(None);
    }
    for (path, mode, wanted) in &loosened {
        fs::set_permissions(path, Permissions::from_mode(*wanted)).map_err(|source| {
            HomeError::CannotRestrict {
                path: path.clone(),
                mode: *mode,
                dir: dir.to_path_buf(),
                source,
            }
        })?;
    }
    let names: Vec<String> = loosened
        .iter()
        .map(|(path, mode, _)| {
            let name = if path == dir {
                "the directory".to_string()
            } else {
                path.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            format!("{name} (was {mode:04o})")
        })
        .collect();
    Ok(Some(format!(
        "others could read parts of {}, as earlier versions of phr left homes; they are now \
         yours alone (directory 0700, files 0600): {}",
        dir.display(),
        names.join(", ")
    )))
}

/// The directory first, then each file phr keeps in it, with the mode each should have.
fn judged(dir: &Path) -> impl Iterator<Item = (PathBuf, u32)> + '_ {
    std::iter::once((dir.to_path_buf(), DIR_MODE)).chain(
        HOME_FILES
            .iter()
            .map(move |name| (dir.join(name), FILE_MODE)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::{Home, NewPatient};

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    /// A patient's home, closed, with the files a node adds (a log, peer addresses).
    fn home() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let patient = NewPatient {
            name: "Ada Lovelace".into(),
            nhs_number: None,
            birth_date: None,
            device_label: None,
        };
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        drop(Home::init_patient(dir.path(), &patient, None, now).unwrap());
        for name in [NODE_LOG_FILE, PEERS_FILE] {
            drop(crate::owner_only::create_new(&dir.path().join(name)).unwrap());
        }
        dir
    }

    /// The mode of the directory and of every file in it, by name ("." for the directory).
    fn modes(dir: &Path) -> Vec<(String, u32)> {
        let mut modes = vec![(".".to_string(), mode_of(dir))];
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            modes.push((name, mode_of(&entry.path())));
        }
        modes.sort();
        modes
    }

    /// The directory is 0700 and every file in it 0600.
    fn assert_private(dir: &Path) {
        let wrong: Vec<String> = modes(dir)
            .into_iter()
            .filter(|(name, mode)| *mode != if name == "." { 0o700 } else { 0o600 })
            .map(|(name, mode)| format!("{name} {mode:04o}"))
            .collect();
        assert!(wrong.is_empty(), "not private: {wrong:?}");
    }

    /// What an older phr left under umask 022: the directory 0755, every file but the
    /// keystore 0644.
    fn loosen_as_an_older_phr_did(dir: &Path) {
        set_mode(dir, 0o755);
        for name in [VAULT_FILE, LOCK_FILE, NODE_LOG_FILE, PEERS_FILE] {
            set_mode(&dir.join(name), 0o644);
        }
    }

    #[test]
    fn a_new_home_is_0700_and_every_file_in_it_0600() {
        let dir = home();
        let modes = modes(dir.path());
        assert_eq!(
            modes,
            [
                (".".to_string(), 0o700),
                (KEYSTORE_FILE.to_string(), 0o600),
                (LOCK_FILE.to_string(), 0o600),
                (NODE_LOG_FILE.to_string(), 0o600),
                (PEERS_FILE.to_string(), 0o600),
                (VAULT_FILE.to_string(), 0o600),
            ]
        );
    }

    #[test]
    fn a_home_an_older_phr_left_readable_is_made_private_on_opening_and_says_so() {
        let dir = home();
        loosen_as_an_older_phr_did(dir.path());
        let home = Home::open(dir.path()).unwrap();
        assert_private(dir.path());
        let warning = home.warnings().join("\n");
        assert!(
            warning.contains("the directory (was 0755)")
                && warning.contains("vault.redb (was 0644)")
                && warning.contains("node.log (was 0644)"),
            "{warning}"
        );
        drop(home);
        let again = Home::open(dir.path()).unwrap();
        assert!(again.warnings().is_empty(), "{:?}", again.warnings());
    }

    #[test]
    fn a_home_others_can_change_is_refused_and_nothing_in_it_is_changed() {
        for (name, mode) in [
            (".", 0o775),
            (".", 0o757),
            (VAULT_FILE, 0o664),
            (PEERS_FILE, 0o646),
        ] {
            let dir = home();
            loosen_as_an_older_phr_did(dir.path());
            let path = dir.path().join(name);
            set_mode(&path, mode);
            let before = modes(dir.path());
            let err = Home::open(dir.path()).unwrap_err();
            assert!(
                matches!(&err, HomeError::WritableByOthers { mode: m, .. } if *m == mode),
                "{name} {mode:o}: {err}"
            );
            let fix = format!(
                "chmod 700 {}; chmod 600 {}/*",
                dir.path().display(),
                dir.path().display()
            );
            assert!(err.to_string().contains(&fix), "{err}");
            assert_eq!(modes(dir.path()), before, "refusing changes nothing");
        }
    }

    #[test]
    fn a_keystore_others_can_read_is_refused_even_in_a_home_that_would_be_tightened() {
        let dir = home();
        loosen_as_an_older_phr_did(dir.path());
        set_mode(&dir.path().join(KEYSTORE_FILE), 0o640);
        let before = modes(dir.path());
        let err = Home::open(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                HomeError::Keystore(KeystoreError::InsecurePermissions { mode: 0o640, .. })
            ),
            "{err}"
        );
        assert_eq!(modes(dir.path()), before, "refusing changes nothing");
    }

    #[test]
    fn a_backup_restored_into_an_existing_open_directory_makes_it_private() {
        let from = home();
        let passphrase = age::secrecy::SecretString::from("a long backup passphrase");
        let backup = Home::open(from.path())
            .unwrap()
            .backup(&passphrase)
            .unwrap();
        let to = tempfile::tempdir().unwrap();
        set_mode(to.path(), 0o755);
        drop(Home::restore(to.path(), &backup, &passphrase, None).unwrap());
        assert_private(to.path());
    }
}
