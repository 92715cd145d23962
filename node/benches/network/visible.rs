//! Part 2 of the network benchmark: add-to-visible over two daemons driven through `phr`.

use super::*;

/// Add-to-visible over two daemons, per `phr add`: from its start to the GP holding the blob,
/// and the process alone.
pub(crate) struct Visible {
    pub(crate) to_visible: Vec<Duration>,
    pub(crate) add_process: Vec<Duration>,
}

/// The `phr` CLI beside this benchmark's `phr-node`, and the daemons it started: dropping it
/// stops them (`phr node stop`), on success and on panic alike.
pub(crate) struct Phr {
    binary: PathBuf,
    started: Vec<PathBuf>,
}

/// The `phr` binary beside this benchmark's `phr-node`.
pub(crate) fn phr_binary() -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_phr-node")).with_file_name("phr");
    assert!(
        binary.exists(),
        "build the CLI first: cargo build --release -p phr-cli"
    );
    binary
}

impl Phr {
    /// Runs `phr --home HOME ARGS` (`args` split at whitespace); its stdout, or an error with
    /// its stderr.
    fn run(&self, home: &Path, args: &str) -> Result<String> {
        let out = Command::new(&self.binary)
            .arg("--home")
            .arg(home)
            .args(args.split_whitespace())
            .env_remove("PHR_PASSPHRASE")
            .output()?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!("phr {args} failed ({}): {stderr}", out.status).into());
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Starts the node of `home` on loopback; returns the addresses it listens on.
    fn start_node(&mut self, home: &Path) -> Result<Vec<String>> {
        let out = self.run(
            home,
            "node start --listen /ip4/127.0.0.1/tcp/0 --no-mdns --json",
        )?;
        self.started.push(home.to_path_buf());
        let status: Value = serde_json::from_str(&out)?;
        let listening = status["node"]["listening"]
            .as_array()
            .ok_or_else(|| format!("no addresses in {out}"))?;
        Ok(listening
            .iter()
            .filter_map(|a| a.as_str().map(String::from))
            .collect())
    }
}

impl Drop for Phr {
    fn drop(&mut self) {
        for home in std::mem::take(&mut self.started).iter().rev() {
            if let Err(e) = self.run(home, "node stop") {
                eprintln!("could not stop the node of {}: {e}", home.display());
            }
        }
    }
}

/// The GP node's control API, read from its home's control file.
pub(crate) struct Api {
    agent: ureq::Agent,
    url: String,
    authorization: String,
}

impl Api {
    fn of(home: &Path) -> Result<Api> {
        let control: Value =
            serde_json::from_str(&std::fs::read_to_string(home.join("control.json"))?)?;
        let field = |name: &str| {
            control[name]
                .as_str()
                .map(String::from)
                .ok_or_else(|| format!("control.json has no {name}"))
        };
        Ok(Api {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
            url: format!("http://{}/status", field("api")?),
            authorization: format!("Bearer {}", field("token")?),
        })
    }

    /// Summary blobs the node holds of its first record, if it holds one.
    fn summary_blobs(&self) -> Result<Option<u64>> {
        let mut response = self
            .agent
            .get(&self.url)
            .header("authorization", &self.authorization)
            .call()?;
        if !response.status().is_success() {
            return Err(format!("GET {}: {}", self.url, response.status()).into());
        }
        let status: Value = response.body_mut().read_json()?;
        Ok(status["records"][0]["blobs"]["summary"].as_u64())
    }

    /// Polls until the node holds more than `before` summary blobs; returns the new count.
    fn wait_for_more(&self, before: u64) -> Result<u64> {
        let deadline = Instant::now() + Duration::from_millis(VISIBLE_MS_MAX);
        loop {
            if let Some(now) = self.summary_blobs()?
                && now > before
            {
                return Ok(now);
            }
            if Instant::now() > deadline {
                return Err(format!("the GP held no new blob after {VISIBLE_MS_MAX} ms").into());
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
    }
}

pub(crate) fn add_to_visible(binary: PathBuf) -> Result<Visible> {
    let dir = tempfile::tempdir()?;
    let (patient, gp) = (dir.path().join("patient"), dir.path().join("gp"));
    // Declared after `dir`, so it stops the daemons before the homes are deleted.
    let mut phr = Phr {
        binary,
        started: Vec::new(),
    };
    phr.run(&patient, "init --name Ada")?;
    phr.run(&gp, "init --provider --name Grace")?;
    let gp_addrs = phr.start_node(&gp)?;
    phr.start_node(&patient)?;
    let gp_addr = gp_addrs.first().ok_or("the GP's node listens nowhere")?;
    let card = phr.run(&gp, "card")?;
    phr.run(
        &patient,
        &format!("contacts add {} --alias gp", card.trim()),
    )?;
    phr.run(&patient, "share grant gp --sections summary --access read")?;
    phr.run(&patient, &format!("peers add {gp_addr}"))?;
    phr.run(&patient, "sync --wait")?;

    let api = Api::of(&gp)?;
    let mut held = api
        .summary_blobs()?
        .ok_or("after `phr sync --wait` the GP holds no summary")?;
    let mut visible = Visible {
        to_visible: Vec::new(),
        add_process: Vec::new(),
    };
    for i in 0..ADD_RUNS {
        let start = Instant::now();
        phr.run(&patient, &format!("add allergy item{i} --reaction rash"))?;
        visible.add_process.push(start.elapsed());
        held = api.wait_for_more(held)?;
        visible.to_visible.push(start.elapsed());
    }
    drop(phr);
    Ok(visible)
}
