//! The files phr leaves on this machine: the home is 0700 and every file in it 0600 whatever the
//! umask, and so are backups and exports wherever they go; a home an older phr left readable by
//! others is made private on opening (with a warning), and one others may change is refused
//! with the `chmod` that fixes it.

mod common;

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Stdio},
};

use common::{Phr, Transcript};

const PASS: (&str, &str) = ("PHR_PASSPHRASE", "a long and memorable passphrase");

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every entry of the home that is not 0700 (the directory) or 0600 (a file), with its mode.
fn not_private(home: &Path) -> Vec<String> {
    let mut wrong = Vec::new();
    if mode_of(home) != 0o700 {
        wrong.push(format!(". {:04o}", mode_of(home)));
    }
    for entry in fs::read_dir(home).unwrap() {
        let path = entry.unwrap().path();
        if mode_of(&path) != 0o600 {
            wrong.push(format!(
                "{} {:04o}",
                path.file_name().unwrap().to_string_lossy(),
                mode_of(&path)
            ));
        }
    }
    wrong
}

/// Runs `phr --home HOME args...` under `umask`, through the shell (a process sets its own).
fn run_with_umask(phr: &Phr, umask: &str, args: &[&str]) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_phr"))
        .arg("--home")
        .arg(phr.home())
        .args(args)
        .env_remove("PHR_HOME")
        .env_remove("PHR_PASSPHRASE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn the_home_and_its_files_are_private_whatever_the_umask() {
    for umask in ["000", "022", "277"] {
        let phr = Phr::new();
        let init = run_with_umask(&phr, umask, &["init", "--name", "Ada Lovelace"]);
        assert!(init.status.success(), "umask {umask}: {init:?}");
        let names: Vec<String> = fs::read_dir(phr.home())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        for name in ["keystore", "vault.redb", "lock"] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        assert_eq!(
            not_private(&phr.home()),
            Vec::<String>::new(),
            "umask {umask}"
        );
        // Even under umask 277 the owner can still write what phr made.
        let add = run_with_umask(&phr, umask, &["add", "note", "still writable"]);
        assert!(add.status.success(), "umask {umask}: {add:?}");
        assert_eq!(
            not_private(&phr.home()),
            Vec::<String>::new(),
            "umask {umask}"
        );
    }
}

#[test]
fn backups_and_exports_are_written_0600_wherever_they_go() {
    let phr = Phr::patient();
    let backup = phr.dir.path().join("backup.age");
    let export = phr.dir.path().join("record.json");
    let (code, _, stderr, _) = phr.run_env(
        &["backup", "export", "-o", &backup.display().to_string()],
        &[PASS],
    );
    assert_eq!(code, 0, "{stderr}");
    phr.ok(&["export", "-o", &export.display().to_string()]);
    assert_eq!(mode_of(&backup), 0o600);
    assert_eq!(mode_of(&export), 0o600);
    // An export over a file that exists replaces its contents and keeps its mode: the user
    // chose it.
    set_mode(&export, 0o644);
    phr.ok(&["export", "--ips", "-o", &export.display().to_string()]);
    assert_eq!(mode_of(&export), 0o644);
    assert!(
        fs::read_to_string(&export)
            .unwrap()
            .contains("\"document\"")
    );
}

#[test]
fn a_home_an_older_phr_left_readable_is_made_private_and_one_others_can_change_is_refused() {
    let phr = Phr::patient();
    let home = phr.home();
    let mut t = Transcript::default();

    t.note(
        "as an older phr left it under umask 022: the directory 0755, files but the keystore 0644",
    );
    set_mode(&home, 0o755);
    for name in ["vault.redb", "lock"] {
        set_mode(&home.join(name), 0o644);
    }
    t.run(&phr, &["show"]);
    assert_eq!(not_private(&home), Vec::<String>::new());
    t.run(&phr, &["show"]);

    t.note("others may change the directory, then the vault");
    set_mode(&home, 0o777);
    t.run(&phr, &["show"]);
    assert_eq!(mode_of(&home), 0o777, "refusing changes nothing");
    set_mode(&home, 0o700);
    set_mode(&home.join("vault.redb"), 0o664);
    t.run(&phr, &["show"]);
    assert_eq!(mode_of(&home.join("vault.redb")), 0o664);

    t.note("the fix the message gives");
    let fix = Command::new("sh")
        .arg("-c")
        .arg(format!("chmod 700 {0}; chmod 600 {0}/*", home.display()))
        .status()
        .unwrap();
    assert!(fix.success());
    t.run(&phr, &["show"]);

    let codes = t.finish("local_files");
    assert_eq!(codes, [0, 0, 1, 1, 0]);
}
