//! Homes in a temporary directory, each driven through `phr` as its user drives it, its node
//! started with `phr node start` or as a child of the test. Used by the scenario and the
//! local-files tests.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use serde_json::Value;

/// The longest a node may take to print its address.
const WAIT: Duration = Duration::from_secs(60);

/// How long one `phr` command may take.
pub const COMMAND_MAX: Duration = Duration::from_secs(120);

/// Homes in one temporary directory, and the `phr` beside this `phr-node`. Every node still
/// running is stopped when it is dropped, even when the test failed; on a failure, the end of
/// each node's log is printed first.
pub struct Homes {
    pub dir: tempfile::TempDir,
    phr: PathBuf,
}

impl Homes {
    pub fn new() -> Homes {
        let node = Path::new(env!("CARGO_BIN_EXE_phr-node"));
        let phr = node.with_file_name("phr");
        assert!(
            phr.exists(),
            "{} is missing: build it with `cargo build -p phr-cli` (cargo test --workspace does)",
            phr.display()
        );
        Homes {
            dir: tempfile::tempdir().unwrap(),
            phr,
        }
    }

    pub fn home(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `phr --home <home> args...`, killed if it outlives [`COMMAND_MAX`].
    pub fn run(&self, home: &str, args: &[&str]) -> Output {
        self.run_env(home, args, &[])
    }

    /// Runs `phr --home <home> args...` with `env` added, stdin closed, killed if it outlives
    /// [`COMMAND_MAX`].
    pub fn run_env(&self, home: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let child = Command::new(&self.phr)
            .arg("--home")
            .arg(self.home(home))
            .args(args)
            .env_remove("PHR_HOME")
            .env_remove("PHR_PASSPHRASE")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // One message: the exit.
        let (done, output) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let _ = done.send(child.wait_with_output());
        });
        match output.recv_timeout(COMMAND_MAX) {
            Ok(output) => output.unwrap(),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!(
                    "`phr {}` on {home} took over {COMMAND_MAX:?}",
                    args.join(" ")
                );
            }
        }
    }

    /// Runs a command that must succeed; returns its standard output.
    pub fn ok(&self, home: &str, args: &[&str]) -> String {
        let out = self.run(home, args);
        assert!(
            out.status.success(),
            "`phr {}` on {home} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command with `--json` that must succeed; returns its document.
    pub fn json(&self, home: &str, args: &[&str]) -> Value {
        self.json_env(home, args, &[])
    }

    /// Runs a command with `--json` and `env` added that must succeed; returns its document.
    pub fn json_env(&self, home: &str, args: &[&str], env: &[(&str, &str)]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run_env(home, &all, env);
        assert!(
            out.status.success(),
            "`phr {}` on {home} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Starts `home`'s node on a loopback port; returns the address it listens on.
    pub fn start(&self, home: &str, extra: &[&str]) -> String {
        self.start_env(home, extra, &[]).1
    }

    /// Starts `home`'s node with `phr node start` on a loopback port, with `env` added; returns
    /// its pid and the address it listens on.
    pub fn start_env(&self, home: &str, extra: &[&str], env: &[(&str, &str)]) -> (u32, String) {
        let mut args = vec![
            "node",
            "start",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ];
        args.extend_from_slice(extra);
        let status = self.json_env(home, &args, env);
        let pid = status["node"]["pid"].as_u64().unwrap() as u32;
        let addr = status["node"]["listening"][0].as_str().unwrap().to_string();
        (pid, addr)
    }

    pub fn stop(&self, home: &str) {
        self.ok(home, &["node", "stop"]);
    }

    /// The record's blobs per section as `home`'s node holds them (empty if it holds none).
    pub fn blobs(&self, home: &str) -> Value {
        let status = self.json(home, &["node", "status"]);
        status["node"]["records"]
            .get(0)
            .map(|r| r["blobs"].clone())
            .unwrap_or(Value::Null)
    }

    pub fn card(&self, home: &str) -> String {
        self.ok(home, &["card"]).trim().to_string()
    }

    /// Starts `home`'s daemon as a child of this test (not through `phr node start`), so that
    /// the test can kill it and wait for its exit; returns it and the address it listens on,
    /// printed once its control API answers.
    pub fn spawn_daemon(&self, home: &str) -> (Child, String) {
        let log = std::fs::File::create(self.home(home).join("node.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_phr-node"))
            .arg("--home")
            .arg(self.home(home))
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // One message: the first line.
        let (lines, line) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let mut first = String::new();
            let _ = BufReader::new(stdout).read_line(&mut first);
            let _ = lines.send(first);
        });
        let addr = line
            .recv_timeout(WAIT)
            .expect("the daemon prints its address");
        (child, addr.trim().to_string())
    }

    /// Writes a JSON file in the test directory; returns its path as text.
    pub fn file(&self, name: &str, value: &Value) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec(value).unwrap()).unwrap();
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Homes {
    /// Stops every node still running, even when the test failed; on a failure, prints the end
    /// of each node's log first.
    fn drop(&mut self) {
        let homes = std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten();
        for home in homes.filter_map(|entry| entry.file_name().into_string().ok()) {
            let home = home.as_str();
            if std::thread::panicking()
                && let Ok(log) = std::fs::read_to_string(self.home(home).join("node.log"))
            {
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("--- {home}/node.log (end) ---");
                for line in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{line}");
                }
            }
            let control = self.home(home).join("control.json");
            if let Ok(text) = std::fs::read_to_string(control)
                && let Ok(file) = serde_json::from_str::<Value>(&text)
                && let Some(pid) = file["pid"].as_u64()
            {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
    }
}
