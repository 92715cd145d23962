//! Where peers are: addresses from the home, the network and `phr peers add`, kept across
//! restarts (`remembered.rs`); dials at the addresses known; relays, reservations and lookups.

use super::*;

impl Node {
    /// Takes addresses and names from the home's contacts and the records' ledgers. What comes
    /// from the ledgers (names, the remembered addresses of admitted peers, relays to reserve
    /// on) is worked out again only if a ledger changed since the last time: taking the home
    /// back after a command, or a message, costs the same at any number of records.
    pub(super) fn learn_from_home(&mut self) {
        let Some(home) = self.open_home() else {
            return;
        };
        let ledgers = self.engine.ledger_changes();
        let full = self.learnt_at != Some(ledgers);
        let mut found: Vec<(libp2p::PeerId, Vec<Multiaddr>)> = Vec::new();
        let mut names = BTreeMap::new();
        match home.contacts() {
            Ok(contacts) => {
                for contact in contacts {
                    let peer = to_libp2p(&contact.card.party.peer);
                    if contact.card.party.role == phr_core::party::Role::Relay {
                        self.relay_contacts.insert(peer);
                    }
                    names.insert(contact.card.party.peer, contact.display_name().to_string());
                    let addrs = contact
                        .card
                        .addrs
                        .iter()
                        .filter_map(|a| a.parse::<Multiaddr>().ok())
                        .collect();
                    found.push((peer, addrs));
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read this home's contacts"),
        }
        self.names = names;
        for (peer, addrs) in found {
            self.add_addrs(peer, addrs);
        }
        if !full {
            return;
        }
        self.learnt_at = Some(ledgers);
        let mut ledger_names = BTreeMap::new();
        for replica in self.engine.replicas().values() {
            let state = replica.ledger().state();
            for party in state.owners.values() {
                ledger_names
                    .entry(party.peer)
                    .or_insert_with(|| party.name.clone());
            }
            for grant in &state.grants {
                ledger_names
                    .entry(grant.grantee.peer)
                    .or_insert_with(|| grant.grantee.name.clone());
            }
        }
        self.ledger_names = ledger_names;
        let remembered: Vec<_> = self
            .remembered
            .peers()
            .iter()
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        for (peer, addrs) in remembered {
            self.add_addrs(peer, addrs);
        }
        // A peer a ledger admits now may have been met before: keep its addresses too.
        self.remember_admitted();
        self.reserve_on_relays();
    }

    /// What this node calls `peer`: its contact's name, else the name a ledger gives it.
    pub(super) fn name_of(&self, peer: &PeerId) -> Option<String> {
        self.names
            .get(peer)
            .or_else(|| self.ledger_names.get(peer))
            .cloned()
    }

    /// Adds addresses to what this node knows of `peer`: up to [`ADDRS_PER_PEER_MAX`], and for
    /// [`PEERS_MAX`] peers at most unless a held record admits it.
    pub(super) fn add_addrs(&mut self, peer: libp2p::PeerId, addrs: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        if !self.peers.contains_key(&peer)
            && self.peers.len() >= PEERS_MAX
            && !self.is_admitted(&peer)
        {
            return;
        }
        let entry = self.peers.entry(peer).or_default();
        for addr in addrs {
            let addr = without_peer(addr);
            if !entry.addrs.contains(&addr) && entry.addrs.len() < ADDRS_PER_PEER_MAX {
                self.swarm.add_peer_address(peer, addr.clone());
                entry.addrs.push(addr);
            }
        }
    }

    pub(super) fn dial(
        &mut self,
        addr: Multiaddr,
        remember: bool,
        reply: Reply<Result<PeerId, String>>,
    ) {
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            let _ = reply.send(Err(format!(
                "{addr} does not end in /p2p/<peer id>: give the whole address a node prints"
            )));
            return;
        };
        let Some(phr_peer) = from_libp2p(&peer) else {
            let _ = reply.send(Err(format!(
                "{peer} is not a phr node (not an Ed25519 key)"
            )));
            return;
        };
        if peer == *self.swarm.local_peer_id() {
            let _ = reply.send(Err("that address is this node's own".into()));
            return;
        }
        self.add_addrs(peer, vec![addr.clone()]);
        if remember {
            let admission = self.swarm.behaviour().gate.admission().clone();
            self.remembered.remember(
                [(peer, without_peer(addr.clone()))],
                &|p: &libp2p::PeerId| admission.is_admitted(p),
            );
        }
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(phr_peer));
            return;
        }
        match self.swarm.dial(addr) {
            Ok(()) => self.dialing.entry(peer).or_default().push(reply),
            Err(e) => {
                let _ = reply.send(Err(e.to_string()));
            }
        }
    }

    /// Dials `peer` at every address this node knows for it, and at those a behaviour knows
    /// (Kademlia's routing table, identify's cache). A dial by PeerId alone gets only the
    /// latter: `Swarm::add_peer_address` tells the behaviours of an address, and of them only
    /// the sync behaviour keeps it, for the last 100 peers told; a practice's node restarted
    /// with 3,000 devices remembered found no address for 2,900 of them.
    pub(super) fn redial(&mut self, peer: libp2p::PeerId) -> Result<(), DialError> {
        let known = self
            .peers
            .get(&peer)
            .map(|p| p.addrs.clone())
            .unwrap_or_default();
        self.swarm.dial(
            DialOpts::peer_id(peer)
                .addresses(known)
                .extend_addresses_through_behaviour()
                .build(),
        )
    }

    /// Whether a held record admits `peer` (as the gate was last told).
    pub(super) fn is_admitted(&self, peer: &libp2p::PeerId) -> bool {
        self.swarm.behaviour().gate.admission().is_admitted(peer)
    }

    /// Looks for a peer whose address is unknown: asks Kademlia, and dials it through every
    /// relay this node knows (a device behind NAT listens through its relay).
    pub(super) fn lookup(&mut self, peer: libp2p::PeerId) {
        swarm::find_peer(&mut self.swarm, peer);
        for relay in self.relay_addrs() {
            if relay.iter().last() == Some(Protocol::P2p(peer)) {
                continue;
            }
            let circuit = swarm::circuit_addr(&relay, peer);
            if let Err(error) = self.swarm.dial(circuit) {
                tracing::debug!(%peer, %error, "cannot dial through a relay");
            }
        }
    }

    /// The relays this node knows (contacts with the relay role, and relays a held record's
    /// ledger names), each at every address known for it, ending in `/p2p/<relay>`.
    pub(super) fn relay_addrs(&self) -> Vec<Multiaddr> {
        let now = Self::now();
        let mut relays: BTreeSet<libp2p::PeerId> = self.relay_contacts.clone();
        for replica in self.engine.replicas().values().filter(|r| r.is_held()) {
            for grant in &replica.ledger().state().grants {
                if grant.access == phr_core::ledger::Access::Relay && grant.unexpired(now) {
                    relays.insert(to_libp2p(&grant.grantee.peer));
                }
            }
        }
        relays.remove(self.swarm.local_peer_id());
        relays
            .into_iter()
            .flat_map(|relay| {
                self.peers
                    .get(&relay)
                    .map(|p| p.addrs.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|a| !a.iter().any(|p| p == Protocol::P2pCircuit))
                    .map(move |a| a.with(Protocol::P2p(relay)))
            })
            .collect()
    }

    /// Takes a reservation on every known relay not yet reserved on, so that peers can reach
    /// this node through it. A relay itself reserves nowhere.
    pub(super) fn reserve_on_relays(&mut self) {
        if self.relay || self.listen_addrs.is_empty() {
            return;
        }
        self.reservations_asked_ms = Self::now();
        for relay in self.relay_addrs() {
            let Some(Protocol::P2p(peer)) = relay.iter().last() else {
                continue;
            };
            if self.reserved.contains_key(&peer) {
                continue;
            }
            match swarm::listen_via_relay(&mut self.swarm, &relay) {
                Ok(listener) => {
                    tracing::info!(%relay, "asking a relay for a reservation");
                    self.reserved.insert(peer, listener);
                }
                Err(error) => tracing::debug!(%relay, %error, "cannot listen through a relay"),
            }
        }
    }

    /// Tells the gate which peers the held records admit: they keep their room.
    pub(super) fn update_gate(&mut self) {
        let admitted = self.engine.admitted_peers(Self::now());
        if admitted == self.gate_admitted {
            return;
        }
        let libp2p = admitted.iter().map(to_libp2p).collect();
        self.swarm.behaviour_mut().gate.set_admitted(libp2p);
        self.gate_admitted = admitted;
    }

    /// Keeps the addresses of every peer a held record admits across restarts (in the peers
    /// file), so that a node restarted, on a new port say, is found again by dialling out from
    /// either side. Relayed addresses are left out: they go stale with the reservation.
    /// Written down as one line each in the peers file's journal, not by rewriting the file.
    pub(super) fn remember_admitted(&mut self) {
        let admitted = self.engine.admitted_peers(Self::now());
        self.remember_addrs_of(admitted);
    }

    /// [`Node::remember_admitted`] for `peers` alone (each admitted).
    fn remember_addrs_of(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        let mut new = Vec::new();
        for peer in peers {
            let lp = to_libp2p(&peer);
            let Some(known) = self.peers.get(&lp) else {
                continue;
            };
            let kept = self.remembered.addrs(&lp);
            for addr in &known.addrs {
                let relayed = addr.iter().any(|p| p == Protocol::P2pCircuit);
                if !relayed && !kept.contains(addr) {
                    new.push((lp, addr.clone()));
                }
            }
        }
        // Every one of them is admitted.
        self.remembered.remember(new, &|_| true);
    }

    /// Remembers where a peer can be reached, and dials it if it is wanted.
    pub(super) fn on_learnt(&mut self, learnt: swarm::Learnt) {
        tracing::debug!(peer = %learnt.peer, addrs = ?learnt.addrs, how = learnt.how, "learnt addresses");
        self.add_addrs(learnt.peer, learnt.addrs.clone());
        // Only this peer's addresses are new: the others were kept when they were learnt.
        let admitted = from_libp2p(&learnt.peer).filter(|p| self.engine.admits(p, Self::now()));
        self.remember_addrs_of(admitted);
        let wanted = from_libp2p(&learnt.peer).is_some_and(|p| {
            admitted.is_some()
                || self.runs.values().any(|r| {
                    r.peers
                        .get(&p)
                        .is_some_and(|x| x.state == RunState::Dialing)
                })
        });
        if wanted
            && !self.swarm.is_connected(&learnt.peer)
            && let Err(error) = self.redial(learnt.peer)
        {
            tracing::debug!(peer = %learnt.peer, %error, "cannot dial");
        }
    }
}

/// `addr` without a trailing `/p2p/<peer>`.
pub(super) fn without_peer(mut addr: Multiaddr) -> Multiaddr {
    if let Some(Protocol::P2p(_)) = addr.iter().last() {
        addr.pop();
    }
    addr
}
