//! The deterministic network simulation: the real sync core of `phr-core` on simulated nodes, a
//! simulated network and a virtual clock, all driven by one `u64` seed.
//!
//! Nodes: the patient's laptop (it holds the record root key), phone and tablet (admitted during
//! the run), a GP with `summary,clinical` write (and `journal` read, granted during the run), a
//! pharmacy with `summary` read (revoked during the run), a relay, and an outsider who knows the
//! record id and is granted nothing. With the hostile participants the pharmacy also logs audit
//! entries, honest ones, bombs and entries filed under the key of the patient's entries, and once
//! revoked takes no ledger operation any more. Every step the seeded generator picks one event: deliver a
//! message (the earliest due; delays reorder them),
//! start a sync, write on a node that may write, import the IPS example, compact, change consent,
//! cut a link (one way or both), crash a node or bring it back, or let time pass. Messages are
//! lost, duplicated and delayed at random. The checkers of [`check`](crate::sim::check) run after every step; at the
//! end the network heals, every node syncs with every other until nothing changes, and every
//! admitted replica of each section must hold the same blobs and read the same document, with no
//! acknowledged write missing.
//!
//! Cryptographic randomness (keys, nonces, age's ephemeral keys) comes from the operating system,
//! because the simulator runs the real crypto: ids differ from run to run, but no decision of the
//! simulator or of the protocol depends on an id's value, so a seed replays the same schedule.

pub mod check;
mod events;
mod finish;
pub mod node;

use std::collections::BTreeMap;

use phr_core::{
    fhir::reference::ResourceKey,
    keys::RecordId,
    ledger::{Access, OpBody},
    party::Role,
    section::Section,
    store::Store,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use check::{Checker, Withdrawals};
use node::SimNode;

/// Deliberate bugs, to show that the checkers can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The laptop sends its ledger to the outsider, skipping the authorisation check.
    LeakToOutsider,
    /// The relay is granted `read` of `summary` instead of `relay`: it gets keys.
    RelayGetsKeys,
    /// Revoking the pharmacy is followed by wrapping the new epoch's key to it as well.
    KeyToRevoked,
    /// A crash loses a blob the store had acknowledged.
    ForgetOnCrash,
    /// The GP never sends anything of `clinical`.
    GpWithholdsClinical,
    /// The phone reports a write as done without saving it.
    AckWithoutSave,
    /// A node panics when it takes a message about a revocation.
    PanicOnRevocation,
    /// The laptop takes in every entry it holds for the patient, without asking: writes the
    /// patient never accepted show again.
    AcceptHeldUnasked,
    /// Opening the record does not keep the entries written again because they had built on a
    /// withdrawn party's change: the honest write is lost.
    DropRewritten,
    /// The laptop holds for the patient every blob it is sent, past the bounds per author.
    HoldPastBounds,
    /// The laptop writes an entry in the GP's name, as the GP's actor, and compacts it.
    ForgedVersion,
    /// Once the pharmacy is revoked, the laptop sends it its whole ledger, not only what tells
    /// it that its access ended.
    LedgerToWithdrawn,
    /// The pharmacy is granted `write` of `summary` instead of `read`: what it means to inject
    /// through an audit entry becomes a version of the patient's entry.
    PharmacyMayWrite,
    /// The pharmacy drops its audit entries when the relay says it stored them, as if a relay
    /// were an owner device: entries the patient never got are lost.
    DropOnRelaysWord,
}

/// How a run is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Random steps before the network heals.
    pub steps: usize,
    /// A bug to plant, if any.
    pub bug: Option<Bug>,
    /// Whether the patient withdraws the GP and the phone during the run, which then turn
    /// hostile, and the pharmacy logs bombs and injections (hostile too once revoked) (`every_seed_with_hostile_participants_keeps_every_invariant` sweeps with it).
    pub hostile: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            steps: 300,
            bug: None,
            hostile: false,
        }
    }
}

/// What a run did, for the sweep's summary.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Messages sent, delivered, lost and duplicated.
    pub sent: usize,
    /// Delivered.
    pub delivered: usize,
    /// Lost (at random, to a cut link, or to a node that was down).
    pub lost: usize,
    /// Duplicated.
    pub duplicated: usize,
    /// Writes acknowledged.
    pub writes: usize,
    /// Crashes.
    pub crashes: usize,
    /// What the pharmacy logged with the hostile participants, by kind (an audit entry, a
    /// bomb, an injection).
    pub logged: BTreeMap<String, usize>,
    /// Sessions that ended with an error, by kind.
    pub errors: BTreeMap<String, usize>,
    /// Quiet rounds the end needed to settle.
    pub settle_rounds: usize,
    /// Steps, to compare two runs of one seed.
    pub trace: Vec<String>,
}

/// A failed run: what broke, the recent events, and the seed.
#[derive(Debug)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// The step it broke at (`None`: at the end).
    pub step: Option<usize>,
    /// What broke.
    pub what: String,
    /// The last events before it.
    pub recent: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.step {
            Some(step) => writeln!(f, "invariant broken at step {step}: {}", self.what)?,
            None => writeln!(f, "broken at the end: {}", self.what)?,
        }
        writeln!(f, "last events:")?;
        for event in &self.recent {
            writeln!(f, "  {event}")?;
        }
        write!(f, "reproduce with SIM_SEED={}", self.seed)
    }
}

const LAPTOP: usize = 0;
const PHONE: usize = 1;
const TABLET: usize = 2;
const GP: usize = 3;
const PHARMACY: usize = 4;
const RELAY: usize = 5;
const OUTSIDER: usize = 6;

/// Loss, duplication and delay of the network, per message.
const LOSS_PERCENT: u32 = 8;
const DUPLICATE_PERCENT: u32 = 5;
const DELAY_MS_MAX: i64 = 3_000;

/// A message on the wire.
#[derive(Debug)]
struct Envelope {
    from: usize,
    to: usize,
    bytes: Vec<u8>,
    due_ms: i64,
    /// Order of sending, to break ties the same way every run.
    seq: u64,
}

struct Sim {
    seed: u64,
    config: Config,
    rng: ChaCha8Rng,
    now_ms: i64,
    nodes: Vec<SimNode>,
    record: RecordId,
    wire: Vec<Envelope>,
    sent: u64,
    /// Links cut, one way: (from, to) until when.
    cut: BTreeMap<(usize, usize), i64>,
    /// Crashed nodes and when they come back.
    down_until: BTreeMap<usize, i64>,
    checker: Checker,
    /// Acknowledged writes: section, resource, the marker written.
    writes: Vec<(Section, ResourceKey, String)>,
    /// Who wrote what, and what the laptop accepted of each party it withdrew.
    withdrawals: Withdrawals,
    /// Per write, the markers its section showed on its writer when it was made: the writes it
    /// depends on (an Automerge change follows everything its document held).
    built_on: BTreeMap<String, Vec<String>>,
    /// The nodes the last step changed, whose views are checked after it.
    touched: Vec<usize>,
    tablet_added: bool,
    gp_granted_journal: bool,
    pharmacy_revoked: bool,
    gp_revoked: bool,
    phone_removed: bool,
    /// The network has healed: no loss, no duplication.
    quiet: bool,
    report: Report,
}

/// Runs one seed; `Ok` with a report if every invariant held.
pub fn run(seed: u64, config: Config) -> Result<Report, Failure> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut sim = Sim::new(seed, config);
        sim.run().map(|()| sim.report)
    }));
    match outcome {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            Err(Failure {
                seed,
                step: None,
                what: format!("panic: {what}"),
                recent: Vec::new(),
            })
        }
    }
}

impl Sim {
    fn new(seed: u64, config: Config) -> Sim {
        let mut nodes = vec![
            SimNode::new("laptop", Role::Patient, true),
            SimNode::new("phone", Role::Patient, false),
            SimNode::new("tablet", Role::Patient, false),
            SimNode::new("gp", Role::Provider, false),
            SimNode::new("pharmacy", Role::Provider, false),
            SimNode::new("relay", Role::Relay, false),
            SimNode::new("outsider", Role::Provider, false),
        ];
        let now_ms = 1_763_700_000_000;
        let record = nodes[LAPTOP].create_record(now_ms);
        let count = nodes.len();
        let mut sim = Sim {
            seed,
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now_ms,
            nodes,
            record,
            wire: Vec::new(),
            sent: 0,
            cut: BTreeMap::new(),
            down_until: BTreeMap::new(),
            checker: Checker::new(record, count),
            writes: Vec::new(),
            withdrawals: Withdrawals::default(),
            built_on: BTreeMap::new(),
            touched: Vec::new(),
            tablet_added: false,
            gp_granted_journal: false,
            pharmacy_revoked: false,
            gp_revoked: false,
            phone_removed: false,
            quiet: false,
            report: Report::default(),
        };
        sim.setup();
        sim
    }

    /// The consent the run starts from, given on the laptop.
    fn setup(&mut self) {
        let now = self.now_ms;
        let phone = self.nodes[PHONE].party();
        let gp = self.nodes[GP].party();
        let pharmacy = self.nodes[PHARMACY].party();
        let relay = self.nodes[RELAY].party();
        let relay_access = if self.config.bug == Some(Bug::RelayGetsKeys) {
            Access::Read
        } else {
            Access::Relay
        };
        let pharmacy_access = if self.config.bug == Some(Bug::PharmacyMayWrite) {
            Access::Write
        } else {
            Access::Read
        };
        let not_audit: Vec<Section> = Section::ALL
            .into_iter()
            .filter(|s| *s != Section::Audit)
            .collect();
        let laptop = &mut self.nodes[LAPTOP];
        let record = self.record;
        let grants = [
            (OpBody::AddDevice { device: phone }, true),
            (
                grant(gp, &[Section::Summary, Section::Clinical], Access::Write),
                false,
            ),
            (grant(pharmacy, &[Section::Summary], pharmacy_access), false),
            (grant(relay, &not_audit, relay_access), false),
        ];
        for (body, root) in grants {
            laptop
                .consent(record, body, root, now)
                .expect("setup consent");
        }
    }

    fn run(&mut self) -> Result<(), Failure> {
        for step in 0..self.config.steps {
            self.touched.clear();
            let event = self.step().map_err(|what| self.failure(Some(step), what))?;
            self.trace(event);
            self.checker
                .step(&self.nodes)
                .map_err(|what| self.failure(Some(step), what))?;
            let touched = std::mem::take(&mut self.touched);
            for node in touched {
                self.check_view(node)
                    .map_err(|what| self.failure(Some(step), what))?;
            }
        }
        self.settle().map_err(|what| self.failure(None, what))?;
        self.finish().map_err(|what| {
            let errors: Vec<String> = self
                .nodes
                .iter()
                .map(|n| format!("{} ({}): {:?}", n.name, n.peer().short(), n.errors))
                .collect();
            self.failure(
                None,
                format!("{what}\nsessions ended early: {}", errors.join("; ")),
            )
        })?;
        for node in &self.nodes {
            for (kind, n) in &node.errors {
                *self.report.errors.entry(kind.clone()).or_default() += n;
            }
        }
        Ok(())
    }

    /// What an honest node that holds the record shows (see [`Checker::view`]).
    fn check_view(&mut self, index: usize) -> Result<(), String> {
        let node = &self.nodes[index];
        if !node.up || node.hostile || !node.replicas().contains_key(&self.record) {
            return Ok(());
        }
        let Some(doc) = self.nodes[index].materialise(self.record) else {
            return Ok(());
        };
        let node = &self.nodes[index];
        let replica = &node.replicas()[&self.record];
        self.checker.view(node, replica, &doc, &self.withdrawals)
    }

    /// A node's name, for reports.
    fn name_of(&self, peer: &phr_core::keys::PeerId) -> &str {
        self.nodes
            .iter()
            .find(|n| n.peer() == *peer)
            .map_or("?", |n| n.name.as_str())
    }

    fn failure(&self, step: Option<usize>, what: String) -> Failure {
        let recent = self
            .report
            .trace
            .iter()
            .rev()
            .take(if std::env::var("SIM_TRACE_ALL").is_ok() {
                usize::MAX
            } else {
                25
            })
            .rev()
            .cloned()
            .collect();
        Failure {
            seed: self.seed,
            step,
            what,
            recent,
        }
    }

    fn trace(&mut self, event: String) {
        self.report.trace.push(event);
    }

    /// One random event.
    fn step(&mut self) -> Result<String, String> {
        self.wake();
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..=39 => self.deliver_next(),
            40..=54 => Ok(self.sync_random()),
            55..=71 => self.write_random(),
            72..=73 => self.import(),
            74..=76 => self.compact_random(),
            77..=79 => self.consent_event(),
            80..=84 => Ok(self.cut_link()),
            85..=87 => self.crash_random(),
            _ => self.pass_time(),
        }
    }

    /// Brings back crashed nodes whose time has come, and heals links.
    fn wake(&mut self) {
        let now = self.now_ms;
        self.cut.retain(|_, until| *until > now);
        let back: Vec<usize> = self
            .down_until
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(node, _)| *node)
            .collect();
        for node in back {
            self.down_until.remove(&node);
            self.nodes[node].restart();
        }
    }

    /// Puts what a node sent on the wire, with the network's faults.
    fn send(&mut self, from: usize, outbox: node::Outbox) -> Result<(), String> {
        // In the order of the nodes, not of their PeerIds (random keys): the random draws
        // below then fall on the same messages whatever the keys, and a seed replays.
        let mut outbox: Vec<(usize, Vec<u8>)> = outbox
            .into_iter()
            .map(|(peer, bytes)| {
                let to = self.nodes.iter().position(|n| n.peer() == peer);
                (to.expect("peers are nodes"), bytes)
            })
            .collect();
        outbox.sort_by_key(|(to, _)| *to);
        for (to, bytes) in outbox {
            self.checker
                .emission(&self.nodes[from], &self.nodes[to], &bytes, self.now_ms)?;
            self.report.sent += 1;
            if !self.quiet && self.rng.gen_ratio(LOSS_PERCENT, 100) {
                self.report.lost += 1;
                continue;
            }
            let copies = if !self.quiet && self.rng.gen_ratio(DUPLICATE_PERCENT, 100) {
                self.report.duplicated += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                let due_ms = self.now_ms + self.rng.gen_range(1..=DELAY_MS_MAX);
                self.sent += 1;
                self.wire.push(Envelope {
                    from,
                    to,
                    bytes: bytes.clone(),
                    due_ms,
                    seq: self.sent,
                });
            }
        }
        Ok(())
    }

    /// Delivers the message due first (later-sent messages with shorter delays overtake).
    fn deliver_next(&mut self) -> Result<String, String> {
        match self.take_due() {
            Some(envelope) => self.deliver(envelope),
            None => self.pass_time(),
        }
    }

    /// Takes the message due first off the wire, and moves the clock to when it arrives.
    fn take_due(&mut self) -> Option<Envelope> {
        let index =
            (0..self.wire.len()).min_by_key(|&i| (self.wire[i].due_ms, self.wire[i].seq))?;
        let envelope = self.wire.swap_remove(index);
        self.now_ms = self.now_ms.max(envelope.due_ms);
        Some(envelope)
    }

    fn deliver(&mut self, envelope: Envelope) -> Result<String, String> {
        let (from, to) = (envelope.from, envelope.to);
        let names = format!("{} -> {}", self.nodes[from].name, self.nodes[to].name);
        if self.cut.contains_key(&(from, to)) || !self.nodes[to].up {
            self.report.lost += 1;
            return Ok(format!("lost {names}"));
        }
        self.report.delivered += 1;
        self.touched.push(to);
        if self.config.bug == Some(Bug::HoldPastBounds) && to == LAPTOP {
            self.hold_everything(&envelope.bytes);
        }
        if self.config.bug == Some(Bug::DropOnRelaysWord) && from == RELAY && to == PHARMACY {
            let relay = &self.nodes[RELAY];
            let held = relay.store.blob_ids(&self.record, Section::Audit);
            self.nodes[PHARMACY].forget_audit(self.record, &held);
        }
        if self.config.bug == Some(Bug::AcceptHeldUnasked) && to == LAPTOP {
            let now = self.now_ms;
            self.nodes[LAPTOP].accept_all_held(self.record, now);
        }
        let peer = self.nodes[from].peer();
        let now = self.now_ms;
        if self.config.bug == Some(Bug::PanicOnRevocation) && self.pharmacy_revoked && to == PHONE {
            panic!("planted: the phone panics after the revocation");
        }
        let mut outbox = self.nodes[to].receive(peer, &envelope.bytes, now);
        if self.config.bug == Some(Bug::GpWithholdsClinical) && to == GP {
            outbox.retain(|(_, bytes)| !carries_clinical(bytes));
        }
        self.send(to, outbox)?;
        if self.config.bug == Some(Bug::LeakToOutsider) && to == LAPTOP {
            self.leak_ledger(OUTSIDER)?;
        }
        if self.config.bug == Some(Bug::LedgerToWithdrawn) && self.pharmacy_revoked && to == LAPTOP
        {
            self.leak_ledger(PHARMACY)?;
        }
        Ok(format!(
            "delivered {names} ({} bytes)",
            envelope.bytes.len()
        ))
    }

    /// The planted bug: the laptop's store holds the first blob of every message for the
    /// patient, many times over (under made-up ids).
    fn hold_everything(&mut self, bytes: &[u8]) {
        use phr_core::{
            replica::Topic,
            sync::{Incoming, message::Message},
            vault::Batch,
        };
        let Ok(incoming) = Incoming::decode(bytes) else {
            return;
        };
        let items = match &incoming.message {
            Message::Request(r) => &r.items,
            Message::Response(r) => &r.items,
        };
        let mut batch = Batch::new();
        let first = items.iter().find_map(|(topic, item)| match topic {
            Topic::Section(section) => Some((*section, item)),
            Topic::Ledger => None,
        });
        if let Some((section, item)) = first {
            for copy in 0..=phr_core::replica::HELD_BLOBS_PER_AUTHOR_MAX as u8 {
                let id = phr_core::keys::BlobId([copy; 32]);
                batch.hold(self.record, section, id, item.clone());
            }
        }
        let _ = self.nodes[LAPTOP].store.commit(batch);
    }

    /// The planted bugs: the laptop sends its whole ledger to `to` (the outsider, or the
    /// revoked pharmacy) as if it were admitted.
    fn leak_ledger(&mut self, to: usize) -> Result<(), String> {
        let outsider = self.nodes[to].peer();
        let replica = &self.nodes[LAPTOP].replicas()[&self.record];
        let items = replica
            .ledger()
            .ops()
            .map(|op| (phr_core::replica::Topic::Ledger, op.bytes().to_vec()))
            .collect();
        let message =
            phr_core::sync::message::Message::Response(phr_core::sync::message::Response {
                session: 0,
                seq: 0,
                reconcile: Vec::new(),
                items,
                stored: Vec::new(),
                newer: Vec::new(),
            });
        self.send(LAPTOP, vec![(outsider, message.encode())])
    }

    fn tick_all(&mut self) -> Result<(), String> {
        let now = self.now_ms;
        for index in 0..self.nodes.len() {
            if self.nodes[index].up {
                let outbox = self.nodes[index].tick(now);
                self.send(index, outbox)?;
            }
        }
        Ok(())
    }

    /// Heals the network and brings every node back, then lets every node sync with every
    /// other, with no faults, until a whole round stores nothing new.
    fn settle(&mut self) -> Result<(), String> {
        self.quiet = true;
        self.cut.clear();
        for (node, _) in std::mem::take(&mut self.down_until) {
            self.nodes[node].restart();
        }
        for round in 0..12 {
            // Let sessions from the noisy phase time out first.
            self.now_ms += 120_000;
            self.tick_all()?;
            self.drain()?;
            // Every device opens the record, as `phr` would, and keeps what it wrote again.
            if self.config.bug != Some(Bug::DropRewritten) {
                let now = self.now_ms;
                for node in &mut self.nodes {
                    if !node.hostile {
                        node.open(self.record, now)
                            .map_err(|e| format!("{} could not open the record: {e}", node.name))?;
                    }
                }
            }
            let before: u64 = self.nodes.iter().map(|n| n.store.commits()).sum();
            for from in 0..self.nodes.len() {
                for to in 0..self.nodes.len() {
                    if from != to {
                        let _ = self.sync_pair(from, to);
                        self.drain()?;
                    }
                }
            }
            self.checker
                .step(&self.nodes)
                .map_err(|what| format!("while settling: {what}"))?;
            let after: u64 = self.nodes.iter().map(|n| n.store.commits()).sum();
            // A session from the noisy phase whose responder forgot it (idle) is retried once a
            // round until it times out, and a node starts no other with that peer meanwhile:
            // quiet means no such session is left, as well as nothing stored.
            let under_way: usize = self.nodes.iter().map(SimNode::initiating).sum();
            if after == before && round > 0 && under_way == 0 {
                self.report.settle_rounds = round + 1;
                return Ok(());
            }
        }
        Err("the replicas did not settle after 12 quiet rounds".into())
    }

    /// Delivers everything on the wire, with no faults (bounded).
    fn drain(&mut self) -> Result<(), String> {
        for _ in 0..100_000 {
            let Some(envelope) = self.take_due() else {
                return Ok(());
            };
            self.deliver(envelope)?;
        }
        Err("the network did not go quiet".into())
    }
}

fn grant(party: phr_core::party::Party, sections: &[Section], access: Access) -> OpBody {
    OpBody::Grant {
        grantee: party,
        sections: sections.to_vec(),
        access,
        expires_ms: None,
        purpose: None,
    }
}

/// Whether a sync message carries a `clinical` blob (for the planted bug).
fn carries_clinical(bytes: &[u8]) -> bool {
    use phr_core::replica::Topic;
    use phr_core::sync::{Incoming, message::Message};
    let Ok(incoming) = Incoming::decode(bytes) else {
        return false;
    };
    let items = match &incoming.message {
        Message::Request(r) => &r.items,
        Message::Response(r) => &r.items,
    };
    items
        .iter()
        .any(|(topic, _)| *topic == Topic::Section(Section::Clinical))
}
