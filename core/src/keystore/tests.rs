use std::{
    fs,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use proptest::prelude::*;

use super::*;

/// The last line of an ASCII-armored age file.
const ARMOR_END: &str = "-----END AGE ENCRYPTED FILE-----";

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
    let err = Keystore::read(dir.path(), &mut || Err(KeystoreError::PassphraseNeeded)).unwrap_err();
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
    let file = encrypt_with_passphrase(&keystore.to_bytes(), &secret("p"), CHEAP_LOG_N).unwrap();
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
    let file = encrypt_with_passphrase(&keystore.to_bytes(), &secret("p"), CHEAP_LOG_N).unwrap();
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
        let encryptor =
            age::Encryptor::with_recipients(iter::once(recipient.as_age() as &dyn age::Recipient))
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
    assert!(matches!(err, KeystoreError::Damaged { .. }), "{err}");
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

/// Waits for a child to exit (on a thread, so the wait is on the event itself), killing it if it
/// takes longer than `timeout`; None then.
fn wait_bounded(child: std::process::Child, timeout: Duration) -> Option<std::process::Output> {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => Some(output.expect("waiting for a child works")),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            None
        }
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
    let output = wait_bounded(child, Duration::from_millis(AGE_TOOL_TIMEOUT_MS))
        .unwrap_or_else(|| panic!("`{command}` did not finish within {AGE_TOOL_TIMEOUT_MS} ms"));
    let status = output.status;
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
    let file = encrypt_with_passphrase(b"phr keystore test\n", &secret("tool words"), 14).unwrap();
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

/// The binary age file inside an armored one, as age's reader gives it.
fn dearmor(file: &[u8]) -> Result<Vec<u8>, String> {
    let mut binary = Vec::new();
    ArmoredReader::new(file)
        .read_to_end(&mut binary)
        .map_err(|e| e.to_string())?;
    Ok(binary)
}
