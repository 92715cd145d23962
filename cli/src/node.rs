//! Talking to this home's running node, over its control API on 127.0.0.1.
//!
//! A running `phr-node` leaves `HOME/control.json` (mode 0600) with its port and a token; see
//! `phr_core::api`. Commands that need the home while the node runs take a [`Lease`]: the node
//! releases the home, the command opens it as usual, and dropping the lease (after the home is
//! closed) gives it back, at which point the node offers any change to its peers.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use phr_core::api::{self, ControlFile};
use serde::{Serialize, de::DeserializeOwned};

use crate::exit::UserError;

use crate::context::tell;

/// How long an ordinary control request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a lease request may wait (for another command's lease to end).
const LEASE_TIMEOUT: Duration = Duration::from_secs(120);

/// The control API did not answer at all (the node is stopping, or its control file is stale).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(String);

/// A connection to the node running for a home.
#[derive(Debug, Clone)]
pub struct NodeApi {
    base: String,
    token: String,
    /// The daemon's process id.
    pub pid: u32,
    /// Where it serves emergency links' manifests, if it does.
    pub emergency_url: Option<String>,
}

impl NodeApi {
    /// The node running for `home`, if there is one. A control file left by a node that died
    /// (its process is gone) counts as none.
    pub fn find(home: &Path) -> Result<Option<NodeApi>> {
        let path = home.join(api::CONTROL_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let file: ControlFile = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged; stop the node and start it again",
                path.display()
            )
        })?;
        if !process_alive(file.pid) {
            return Ok(None);
        }
        Ok(Some(NodeApi {
            base: format!("http://{}", file.api),
            token: file.token,
            pid: file.pid,
            emergency_url: file.emergency_url,
        }))
    }

    /// The node running for `home`, or a user error saying how to start one.
    pub fn require(home: &Path) -> Result<NodeApi> {
        NodeApi::find(home)?.ok_or_else(|| {
            UserError(format!(
                "no node is running for {}: start one with `phr node start`",
                home.display()
            ))
            .into()
        })
    }

    fn agent(timeout: Duration) -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into()
    }

    fn finish<T: DeserializeOwned>(
        mut response: ureq::http::Response<ureq::Body>,
        route: &str,
    ) -> Result<T> {
        let status = response.status();
        if status.is_success() {
            return response
                .body_mut()
                .read_json()
                .with_context(|| format!("the node's answer to {route} is not what phr expects"));
        }
        let message = response
            .body_mut()
            .read_json::<api::ApiError>()
            .map(|e| e.error)
            .unwrap_or_else(|_| status.to_string());
        if status.is_client_error() {
            Err(UserError(message).into())
        } else {
            Err(anyhow::anyhow!("the node failed: {message}"))
        }
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        Unreachable(format!(
            "cannot reach the node's control API at {} ({e}); is it stopping? Check `phr node status`",
            self.base
        ))
        .into()
    }

    /// `GET route`.
    pub fn get<T: DeserializeOwned>(&self, route: &str) -> Result<T> {
        let response = Self::agent(REQUEST_TIMEOUT)
            .get(format!("{}{route}", self.base))
            .header(api::AUTHORIZATION, format!("Bearer {}", self.token))
            .call()
            .map_err(|e| self.unreachable(e))?;
        Self::finish(response, route)
    }

    /// `POST route` with a JSON body.
    pub fn post<B: Serialize, T: DeserializeOwned>(&self, route: &str, body: &B) -> Result<T> {
        self.post_with(route, body, REQUEST_TIMEOUT)
    }

    fn post_with<B: Serialize, T: DeserializeOwned>(
        &self,
        route: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T> {
        let response = Self::agent(timeout)
            .post(format!("{}{route}", self.base))
            .header(api::AUTHORIZATION, format!("Bearer {}", self.token))
            .send_json(body)
            .map_err(|e| self.unreachable(e))?;
        Self::finish(response, route)
    }

    /// `POST route` whose answer has no body.
    pub fn post_empty<B: Serialize>(&self, route: &str, body: &B) -> Result<()> {
        let mut response = Self::agent(REQUEST_TIMEOUT)
            .post(format!("{}{route}", self.base))
            .header(api::AUTHORIZATION, format!("Bearer {}", self.token))
            .send_json(body)
            .map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            return Ok(());
        }
        let message = response
            .body_mut()
            .read_json::<api::ApiError>()
            .map(|e| e.error)
            .unwrap_or_else(|_| response.status().to_string());
        Err(anyhow::anyhow!("the node refused {route}: {message}"))
    }

    /// Asks the node for the home; it answers once the home is free.
    pub fn lease(&self) -> Result<Lease> {
        let lease: api::Lease = self
            .post_with(
                "/lease",
                &api::LeaseRequest {
                    pid: std::process::id(),
                },
                LEASE_TIMEOUT,
            )
            .context("the node did not lend this command the home")?;
        Ok(Lease {
            api: self.clone(),
            lease: lease.lease,
        })
    }

    /// Waits until the daemon's process has exited, up to `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !process_alive(self.pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        !process_alive(self.pid)
    }
}

/// The home, lent by the running node; given back when dropped.
#[derive(Debug)]
pub struct Lease {
    api: NodeApi,
    lease: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Err(error) = self
            .api
            .post_empty("/release", &api::Lease { lease: self.lease })
        {
            // The node takes the home back by itself once this process is gone.
            tell(&format!("warning: {error:#}"));
        }
    }
}

/// Whether process `pid` is running (on Linux, by /proc; elsewhere assumed).
pub fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    if !proc.exists() {
        return true;
    }
    match std::fs::read_to_string(proc.join(pid.to_string()).join("stat")) {
        // A zombie (state Z) has exited and waits for its parent.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
