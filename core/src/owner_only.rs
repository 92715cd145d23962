//! Files and directories only their owner may use: how phr creates the home directory, every
//! file in it, and the backups and exports it writes elsewhere.
//!
//! A home directory is made with mode 0700 ([`DIR_MODE`]) and every file phr creates with mode
//! 0600 ([`FILE_MODE`]). The mode is given to `open(2)` when the file is created, so the file is
//! never readable by others even for a moment, and then set once more on the open file: the
//! umask can only remove bits from a mode given at creation, so a umask of 077 changes nothing,
//! but one such as 0277 would leave a file its owner cannot write to again. A file that existed
//! already keeps its mode here; what opening a home checks and fixes is in `home::permissions`
//! (docs/ARCHITECTURE.md, "Local files").
//!
//! These helpers are the only way the node and the CLI write files: one atomic 0600 write
//! ([`write_atomically`]), one new file that never replaces another ([`create_new`]), one file
//! opened or created ([`open_or_create`]).

use std::{
    fs::{self, DirBuilder, File, OpenOptions, Permissions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

use crate::keys::{hex, random_array};

/// The mode of a home directory: its owner alone may list, enter or change it.
pub const DIR_MODE: u32 = 0o700;

/// The mode of every file phr creates: its owner alone may read or write it.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and any missing parents, with mode 0700 under the umask) and sets `dir`
/// itself to exactly 0700, whether it was made now or existed already: it is about to become a
/// home.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

/// Creates a new file with mode 0600, open for writing; fails if `path` exists (it never
/// replaces a file).
pub fn create_new(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Opens `path` as `options` say (which must allow writing or appending, and need not say
/// `create`); if it does not exist, creates it with mode 0600 first. An existing file keeps its
/// mode and contents unless `options` truncate it.
pub fn open_or_create(path: &Path, options: &OpenOptions) -> io::Result<File> {
    let mut create = options.clone();
    create.create_new(true).mode(FILE_MODE);
    match create.open(path) {
        Ok(file) => {
            file.set_permissions(Permissions::from_mode(FILE_MODE))?;
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => options.open(path),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `bytes` so that a crash at any point leaves the old file or the new
/// one: a temporary file beside it (`.NAME.RANDOM.tmp`, created 0600), written, flushed to disk,
/// renamed over `path`, and the directory flushed so the rename is durable too. The new file is
/// 0600 whatever the old one's mode was. On failure the temporary file is removed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file path",
        ));
    };
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        hex(&random_array::<8>())
    ));
    let result = (|| {
        let mut file = create_new(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)?;
        // `path.parent()` of a bare file name is "", which is the current directory.
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        // Best effort: the temporary file may already have been renamed, or never created.
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_directory_is_0700_and_an_existing_one_is_made_0700() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("a/b/home");
        create_dir(&home).unwrap();
        assert_eq!(mode_of(&home), 0o700);
        fs::set_permissions(&home, Permissions::from_mode(0o755)).unwrap();
        create_dir(&home).unwrap();
        assert_eq!(mode_of(&home), 0o700);
    }

    #[test]
    fn new_files_are_0600_and_existing_ones_keep_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new");
        drop(create_new(&path).unwrap());
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(
            create_new(&path).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists,
            "create_new never replaces a file"
        );

        let log = dir.path().join("log");
        let mut append = OpenOptions::new();
        append.append(true);
        open_or_create(&log, &append)
            .unwrap()
            .write_all(b"one\n")
            .unwrap();
        assert_eq!(mode_of(&log), 0o600);
        fs::set_permissions(&log, Permissions::from_mode(0o640)).unwrap();
        open_or_create(&log, &append)
            .unwrap()
            .write_all(b"two\n")
            .unwrap();
        assert_eq!(mode_of(&log), 0o640, "an existing file keeps its mode");
        assert_eq!(fs::read_to_string(&log).unwrap(), "one\ntwo\n");
    }

    #[test]
    fn an_atomic_write_replaces_a_wider_file_with_a_0600_one_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(mode_of(&path), 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["peers.json"]);
    }
}
