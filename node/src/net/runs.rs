//! `phr sync` runs: every admitted peer, until each is in step, failed or out of reach.

use super::*;

impl Node {
    pub(super) fn start_run(&mut self) -> u64 {
        let id = self.next_run;
        self.next_run += 1;
        let now = Self::now();
        let mut run = Run {
            started_ms: now,
            peers: BTreeMap::new(),
        };
        for peer in self.engine.admitted_peers(now) {
            let lp = to_libp2p(&peer);
            let state = if self.swarm.is_connected(&lp) {
                self.offer(lp);
                RunState::Syncing
            } else if self.peers.get(&lp).is_some_and(|p| !p.addrs.is_empty()) {
                match self.redial(lp) {
                    // A dial already under way (a redial) settles the run's state too.
                    Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => RunState::Dialing,
                    Err(error) => RunState::Unreachable(error.to_string()),
                }
            } else if self.relay_addrs().is_empty() {
                // Kademlia may still find it, and the node keeps trying; this run says so now
                // rather than waiting out its time.
                self.lookup(lp);
                RunState::Unreachable(
                    "no address known for it: add one with `phr peers add MULTIADDR`, or add \
                     its card with `phr contacts add`"
                        .into(),
                )
            } else {
                self.lookup(lp);
                RunState::Dialing
            };
            run.peers.insert(
                peer,
                RunPeer {
                    state,
                    results: Vec::new(),
                },
            );
        }
        self.runs.insert(id, run);
        // Runs nobody asks about any more are forgotten after a while.
        self.runs
            .retain(|_, r| now - r.started_ms < 10 * SYNC_RUN_MS || !r.done());
        id
    }

    pub(super) fn progress(&self, run: &Run) -> api::SyncProgress {
        let peers = run
            .peers
            .iter()
            .map(|(peer, p)| {
                let (state, error) = match &p.state {
                    RunState::Dialing => ("dialing", None),
                    RunState::Syncing => ("syncing", None),
                    RunState::InSync => ("in-sync", None),
                    RunState::Failed(e) => ("failed", Some(e.clone())),
                    RunState::Unreachable(e) => ("unreachable", Some(e.clone())),
                };
                let ok = p.results.iter().filter_map(|r| r.as_ref().ok());
                let mut sync = api::PeerSync {
                    peer: peer.to_string(),
                    name: self.name_of(peer),
                    state: state.into(),
                    error,
                    bytes_sent: 0,
                    bytes_received: 0,
                    stored: 0,
                    sent: 0,
                };
                for stats in ok {
                    sync.bytes_sent += stats.bytes_sent;
                    sync.bytes_received += stats.bytes_received;
                    sync.stored += stats.ingested.ops + stats.ingested.blobs;
                    sync.sent += stats.items_sent;
                }
                sync
            })
            .collect();
        api::SyncProgress {
            done: run.done(),
            peers,
        }
    }
}
