//! The deterministic network simulation: the real sync core of `phr-core` on simulated nodes, a
//! simulated network and a virtual clock, all driven by one `u64` seed.
//!
//! Nodes: the patient's laptop (it holds the record root key), phone and tablet (admitted during
//! the run), a GP with `summary,clinical` write (and `journal` read, granted during the run), a
//! pharmacy with `summary` read (revoked during the run), a relay, and an outsider who knows the
//! record id and is granted nothing. Every step the seeded generator picks one event: deliver a
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
pub mod node;

use std::collections::{BTreeMap, BTreeSet};

use phr_core::{
    fhir::reference::ResourceKey,
    import,
    keys::RecordId,
    ledger::{Access, OpBody, RevokeTarget},
    party::Role,
    section::{SECTION_TAG_SYSTEM, Section},
    store::Store,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

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
}

/// How a run is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Random steps before the network heals.
    pub steps: usize,
    /// A bug to plant, if any.
    pub bug: Option<Bug>,
    /// Whether the patient withdraws the GP and the phone during the run, which then turn
    /// hostile (`SIM_HOSTILE=1` for the sweep; see docs/ARCHITECTURE.md for what it still finds).
    pub hostile: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            steps: 300,
            bug: None,
            hostile: std::env::var("SIM_HOSTILE").is_ok_and(|v| v != "0"),
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

/// How many blobs a hostile withdrawn party writes at once.
const HOSTILE_BURST: usize = 4;

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
            (grant(pharmacy, &[Section::Summary], Access::Read), false),
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
            .take(25)
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
        for (peer, bytes) in outbox {
            let to = self
                .nodes
                .iter()
                .position(|n| n.peer() == peer)
                .expect("peers are nodes");
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
            self.leak_to_outsider()?;
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

    /// The planted bug: the laptop answers the outsider as if it were admitted.
    fn leak_to_outsider(&mut self) -> Result<(), String> {
        let outsider = self.nodes[OUTSIDER].peer();
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
            });
        self.send(LAPTOP, vec![(outsider, message.encode())])
    }

    /// A random node starts syncing with a random other node.
    fn sync_random(&mut self) -> String {
        let from = self.rng.gen_range(0..self.nodes.len());
        let mut to = self.rng.gen_range(0..self.nodes.len() - 1);
        if to >= from {
            to += 1;
        }
        self.sync_pair(from, to)
    }

    fn sync_pair(&mut self, from: usize, to: usize) -> String {
        let names = format!(
            "{} syncs with {}",
            self.nodes[from].name, self.nodes[to].name
        );
        if !self.nodes[from].up {
            return format!("{names}: down");
        }
        let peer = self.nodes[to].peer();
        let session = self.rng.r#gen::<u64>();
        let probe = (from == OUTSIDER).then_some(self.record);
        let now = self.now_ms;
        let outbox = self.nodes[from].start_sync(peer, probe, session, now);
        let n = outbox.len();
        match self.send(from, outbox) {
            Ok(()) => format!("{names}: {n} sessions"),
            Err(e) => e,
        }
    }

    /// A node that may write writes one resource (sometimes one another node writes too, so
    /// concurrent versions happen).
    fn write_random(&mut self) -> Result<String, String> {
        let writers = [LAPTOP, PHONE, TABLET, GP];
        let node = writers[self.rng.gen_range(0..writers.len())];
        let sections = if node == GP {
            vec![Section::Summary, Section::Clinical]
        } else {
            vec![
                Section::Summary,
                Section::Clinical,
                Section::Sensitive,
                Section::Journal,
            ]
        };
        let section = sections[self.rng.gen_range(0..sections.len())];
        let id = format!("{section}-{}", self.rng.gen_range(0..5));
        let marker = format!(
            "w{} by {}",
            self.report.writes + self.writes.len(),
            self.nodes[node].name
        );
        let resource = json!({
            "resourceType": "Observation",
            "id": id,
            "status": "final",
            "meta": {"tag": [{"system": SECTION_TAG_SYSTEM, "code": section.as_str()}]},
            "code": {"text": "Blood pressure"},
            "valueString": marker,
        });
        let name = self.nodes[node].name.clone();
        if !self.nodes[node].up || !self.nodes[node].replicas().contains_key(&self.record) {
            return Ok(format!("{name} cannot write now"));
        }
        if self.nodes[node].hostile {
            return self.write_hostile(node, section, &id);
        }
        self.touched.push(node);
        let seen: Vec<String> = self.nodes[node]
            .materialise(self.record)
            .map(|doc| markers(&doc, section))
            .unwrap_or_default();
        if self.config.bug == Some(Bug::AckWithoutSave) && node == PHONE {
            self.writes
                .push((section, ResourceKey::new("Observation", id), marker));
            return Ok(format!("{name} acknowledged a write it never saved"));
        }
        let now = self.now_ms;
        match self.nodes[node].write(self.record, std::slice::from_ref(&resource), now) {
            Ok(true) => {
                self.report.writes += 1;
                self.built_on.insert(marker.clone(), seen);
                self.withdrawals
                    .author_of
                    .insert(marker.clone(), self.nodes[node].peer());
                self.writes
                    .push((section, ResourceKey::new("Observation", id), marker.clone()));
                Ok(format!("{name} wrote {section}: {marker}"))
            }
            Ok(false) => Ok(format!("{name} could not write {section}")),
            Err(e) => Err(format!("{name} failed to write: {e}")),
        }
    }

    /// A withdrawn party that turned hostile writes a burst of blobs, each its own save, with
    /// its stale view of the ledger: each is void wherever the withdrawal is known.
    fn write_hostile(&mut self, node: usize, section: Section, id: &str) -> Result<String, String> {
        let name = self.nodes[node].name.clone();
        let now = self.now_ms;
        let mut written = 0;
        for _ in 0..HOSTILE_BURST {
            let marker = format!(
                "w{} by {name} (withdrawn)",
                self.report.writes + self.writes.len()
            );
            let resource = json!({
                "resourceType": "Observation",
                "id": id,
                "status": "final",
                "meta": {"tag": [{"system": SECTION_TAG_SYSTEM, "code": section.as_str()}]},
                "code": {"text": "Blood pressure"},
                "valueString": marker,
            });
            match self.nodes[node].write(self.record, std::slice::from_ref(&resource), now) {
                Ok(true) => {
                    written += 1;
                    self.withdrawals
                        .author_of
                        .insert(marker.clone(), self.nodes[node].peer());
                    self.writes
                        .push((section, ResourceKey::new("Observation", id), marker));
                }
                Ok(false) => break,
                Err(e) => return Err(format!("{name} failed to write: {e}")),
            }
        }
        Ok(format!(
            "{name} (withdrawn) wrote {written} blobs in {section}"
        ))
    }

    /// The laptop or the phone imports the HL7 IPS example bundle.
    fn import(&mut self) -> Result<String, String> {
        let (node, name) = match self.laptop_or_phone() {
            Ok(picked) => picked,
            Err(name) => return Ok(format!("{name} cannot import now")),
        };
        let resources = ips_resources();
        let now = self.now_ms;
        self.touched.push(node);
        match self.nodes[node].write(self.record, &resources, now) {
            Ok(true) => Ok(format!("{name} imported {} resources", resources.len())),
            Ok(false) => Ok(format!("{name} could not import (a conflict)")),
            Err(e) => Err(format!("{name} failed to import: {e}")),
        }
    }

    /// The laptop or the phone, at random, if it is up and holds the record; else its name.
    fn laptop_or_phone(&mut self) -> Result<(usize, String), String> {
        let node = if self.rng.gen_bool(0.5) {
            LAPTOP
        } else {
            PHONE
        };
        let name = self.nodes[node].name.clone();
        if !self.nodes[node].up || !self.nodes[node].replicas().contains_key(&self.record) {
            return Err(name);
        }
        Ok((node, name))
    }

    fn compact_random(&mut self) -> Result<String, String> {
        let (node, name) = match self.laptop_or_phone() {
            Ok(picked) => picked,
            Err(name) => return Ok(format!("{name} cannot compact now")),
        };
        let now = self.now_ms;
        self.touched.push(node);
        if self.config.bug == Some(Bug::ForgedVersion) && node == LAPTOP {
            let gp = self.nodes[GP].peer();
            self.nodes[LAPTOP].forge_as(self.record, gp, now);
        }
        match self.nodes[node].compact(self.record, now) {
            Ok(()) => Ok(format!("{name} compacted")),
            Err(e) => Ok(format!("{name} did not compact: {e}")),
        }
    }

    /// Admits the tablet, grants the GP the journal, revokes the pharmacy, revokes the GP or
    /// removes the phone: each once, the first three in that order, the withdrawals at random
    /// among what is left.
    fn consent_event(&mut self) -> Result<String, String> {
        let record = self.record;
        let now = self.now_ms;
        if !self.nodes[LAPTOP].up {
            return Ok("laptop down: no consent change".into());
        }
        self.touched.push(LAPTOP);
        // The GP withholding clinical shows only while it is admitted.
        let gp_may_go = self.config.bug != Some(Bug::GpWithholdsClinical);
        let hostile = self.config.hostile;
        let withdrawals = [
            (hostile && !self.gp_revoked && gp_may_go, GP),
            (hostile && !self.phone_removed, PHONE),
        ];
        let left: Vec<usize> = withdrawals
            .iter()
            .filter(|(open, _)| *open)
            .map(|(_, node)| *node)
            .collect();
        if !left.is_empty() && self.rng.gen_bool(0.4) {
            let node = left[self.rng.gen_range(0..left.len())];
            return self.withdraw(node);
        }
        if !self.tablet_added {
            self.tablet_added = true;
            let tablet = self.nodes[TABLET].party();
            self.nodes[LAPTOP]
                .consent(record, OpBody::AddDevice { device: tablet }, true, now)
                .map_err(|e| format!("adding the tablet failed: {e}"))?;
            return Ok("laptop admitted the tablet".into());
        }
        // A revoked GP stays revoked: a grant after the revocation would re-admit it.
        if !self.gp_granted_journal && !self.gp_revoked {
            self.gp_granted_journal = true;
            let gp = self.nodes[GP].party();
            self.nodes[LAPTOP]
                .consent(
                    record,
                    grant(gp, &[Section::Journal], Access::Read),
                    false,
                    now,
                )
                .map_err(|e| format!("granting the GP the journal failed: {e}"))?;
            return Ok("laptop let the gp read the journal".into());
        }
        if !self.pharmacy_revoked {
            self.pharmacy_revoked = true;
            let pharmacy = self.nodes[PHARMACY].party();
            self.nodes[LAPTOP]
                .consent(
                    record,
                    OpBody::Revoke {
                        target: RevokeTarget::Party(pharmacy.peer),
                    },
                    false,
                    now,
                )
                .map_err(|e| format!("revoking the pharmacy failed: {e}"))?;
            if self.config.bug == Some(Bug::KeyToRevoked) {
                // Wrong on purpose: grant again, which wraps the new epoch to it.
                self.nodes[LAPTOP]
                    .consent(
                        record,
                        grant(pharmacy, &[Section::Summary], Access::Read),
                        false,
                        now,
                    )
                    .map_err(|e| format!("the planted re-grant failed: {e}"))?;
            }
            return Ok("laptop revoked the pharmacy".into());
        }
        self.pass_time()
    }

    /// The laptop withdraws the GP (revokes it) or the phone (removes it), noting which of the
    /// party's writes it shows then: what it accepts. The party turns hostile.
    fn withdraw(&mut self, node: usize) -> Result<String, String> {
        let record = self.record;
        let now = self.now_ms;
        let peer = self.nodes[node].peer();
        let (body, root) = if node == GP {
            self.gp_revoked = true;
            let body = OpBody::Revoke {
                target: RevokeTarget::Party(peer),
            };
            (body, false)
        } else {
            self.phone_removed = true;
            (OpBody::RemoveDevice { device: peer }, true)
        };
        self.nodes[LAPTOP]
            .consent(record, body, root, now)
            .map_err(|e| format!("withdrawing {} failed: {e}", self.nodes[node].name))?;
        let doc = self.nodes[LAPTOP]
            .materialise(record)
            .ok_or("the laptop holds the record")?;
        let mut accepted = BTreeSet::new();
        for (_, key, marker) in &self.writes {
            if self.withdrawals.author_of.get(marker) != Some(&peer) {
                continue;
            }
            let shown = doc.history(key).is_ok_and(|versions| {
                versions
                    .iter()
                    .any(|v| v.resource["valueString"] == marker.as_str())
            });
            if shown {
                accepted.insert(marker.clone());
            }
        }
        self.withdrawals.accepted.insert(peer, accepted);
        self.nodes[node].hostile = true;
        Ok(format!("laptop withdrew the {}", self.nodes[node].name))
    }

    fn cut_link(&mut self) -> String {
        let a = self.rng.gen_range(0..self.nodes.len());
        let b = (a + self.rng.gen_range(1..self.nodes.len())) % self.nodes.len();
        let until = self.now_ms + self.rng.gen_range(1_000..60_000);
        self.cut.insert((a, b), until);
        let both = self.rng.gen_bool(0.5);
        if both {
            self.cut.insert((b, a), until);
        }
        format!(
            "cut {} {} {} until {until}",
            self.nodes[a].name,
            if both { "<->" } else { "->" },
            self.nodes[b].name
        )
    }

    fn crash_random(&mut self) -> Result<String, String> {
        let node = self.rng.gen_range(0..OUTSIDER);
        if !self.nodes[node].up {
            return self.pass_time();
        }
        if self.config.bug == Some(Bug::ForgetOnCrash) {
            let store = &self.nodes[node].store;
            let lost = Section::ALL.into_iter().find_map(|s| {
                store
                    .blob_ids(&self.record, s)
                    .into_iter()
                    .next()
                    .map(|id| (s, id))
            });
            if let Some((section, id)) = lost {
                store.lose_blob_for_test(&self.record, section, &id);
            }
        }
        self.nodes[node].crash();
        self.report.crashes += 1;
        let until = self.now_ms + self.rng.gen_range(1_000..30_000);
        self.down_until.insert(node, until);
        Ok(format!("{} crashed until {until}", self.nodes[node].name))
    }

    /// Time passes: requests overdue are sent again, idle sessions dropped.
    fn pass_time(&mut self) -> Result<String, String> {
        let ms = self.rng.gen_range(100..5_000);
        self.now_ms += ms;
        self.tick_all()?;
        Ok(format!("{ms} ms passed"))
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
            if after == before && round > 0 {
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

    /// The end state: every admitted replica of a section holds the same blobs and reads the
    /// same document; no acknowledged write is missing.
    fn finish(&mut self) -> Result<(), String> {
        let now = self.now_ms;
        let state = self.checker.global().state().clone();
        let ledger_ids = |node: &SimNode| -> BTreeSet<_> {
            node.replicas()
                .get(&self.record)
                .map(|r| r.ledger().ops().map(|op| op.id()).collect())
                .unwrap_or_default()
        };
        let admitted: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| state.admitted(&self.nodes[i].peer(), now))
            .collect();
        for &i in &admitted {
            if ledger_ids(&self.nodes[i]) != ledger_ids(&self.nodes[admitted[0]]) {
                let (a, b) = (
                    ledger_ids(&self.nodes[i]),
                    ledger_ids(&self.nodes[admitted[0]]),
                );
                let kinds = |ids: Vec<&phr_core::keys::OpId>| -> Vec<String> {
                    ids.into_iter()
                        .filter_map(|id| self.checker.global().get(id))
                        .map(|op| format!("{:?}", op.op().body).chars().take(40).collect())
                        .collect()
                };
                return Err(format!(
                    "{} and {} hold different ledgers: only the first {:?}, only the second {:?}",
                    self.nodes[i].name,
                    self.nodes[admitted[0]].name,
                    kinds(a.difference(&b).collect()),
                    kinds(b.difference(&a).collect()),
                ));
            }
        }
        let mut documents = BTreeMap::new();
        for i in 0..self.nodes.len() {
            let readable: Vec<Section> = Section::ALL
                .into_iter()
                .filter(|s| state.can_read(&self.nodes[i].peer(), *s, now))
                .collect();
            if !readable.is_empty() {
                let doc = self.nodes[i].materialise(self.record).ok_or_else(|| {
                    format!(
                        "{} may read the record but does not hold it",
                        self.nodes[i].name
                    )
                })?;
                documents.insert(i, (doc, readable));
            }
        }
        for section in Section::ALL {
            let holders: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| {
                    let peer = self.nodes[i].peer();
                    state.can_read(&peer, section, now) || state.is_relay(&peer, now)
                })
                .collect();
            // Void blobs aside: a compaction whose author was removed after it arrived stays,
            // restricted, where it arrived before the news, and is refused where it came after.
            let global = self.checker.global();
            let blobs = |i: usize| -> BTreeSet<phr_core::keys::BlobId> {
                let store = &self.nodes[i].store;
                store
                    .blob_ids(&self.record, section)
                    .into_iter()
                    .filter(|id| {
                        let bytes = store.blob(&self.record, section, id).ok().flatten();
                        !bytes
                            .and_then(|b| phr_core::blob::Blob::decode(b).ok())
                            .is_some_and(|blob| phr_core::consent::withdrawn(&blob, global))
                    })
                    .collect()
            };
            for &i in &holders {
                if blobs(i) != blobs(holders[0]) {
                    let describe = |node: usize, others: usize| -> Vec<String> {
                        blobs(node)
                            .difference(&blobs(others))
                            .map(|id| {
                                let bytes = self.nodes[node]
                                    .store
                                    .blob(&self.record, section, id)
                                    .ok()
                                    .flatten()
                                    .unwrap_or_default();
                                let kind = phr_core::blob::Blob::decode(bytes)
                                    .map(|b| {
                                        let by = self.name_of(&b.header().author);
                                        format!("{:?} by {by}", b.header().kind)
                                    })
                                    .unwrap_or_default();
                                let replacer = self.nodes[others]
                                    .store
                                    .replaced_by(&self.record, section, id)
                                    .ok()
                                    .flatten()
                                    .and_then(|c| {
                                        self.nodes[others]
                                            .store
                                            .blob(&self.record, section, &c)
                                            .ok()
                                            .flatten()
                                    })
                                    .and_then(|b| phr_core::blob::Blob::decode(b).ok())
                                    .map(|b| {
                                        let by = self.name_of(&b.header().author);
                                        format!("by a {:?} of {by}", b.header().kind)
                                    })
                                    .unwrap_or_default();
                                let replacer_id = self.nodes[others]
                                    .store
                                    .replaced_by(&self.record, section, id)
                                    .ok()
                                    .flatten();
                                let here_has = replacer_id.is_some_and(|c| {
                                    self.nodes[node].store.blob(&self.record, section, &c).ok().flatten().is_some()
                                });
                                let here_held = replacer_id.is_some_and(|c| {
                                    self.nodes[node].store.held(&self.record).unwrap_or_default().iter().any(|(_, h, _)| *h == c)
                                });
                                let kind = format!("{kind} ({replacer}; replacer {:?} stored here {here_has}, held here {here_held})", replacer_id.map(|c| c.short()));
                                let replaced = self.nodes[others]
                                    .store
                                    .is_replaced(&self.record, section, id)
                                    .unwrap_or(false);
                                let in_memory = self.nodes[node]
                                    .replicas()
                                    .get(&self.record)
                                    .is_some_and(|r| r.blob_ids(section).any(|b| b == *id));
                                let there = self.nodes[others]
                                    .replicas()
                                    .get(&self.record)
                                    .is_some_and(|r| r.blob_ids(section).any(|b| b == *id));
                                let items = |n: usize| {
                                    self.nodes[n]
                                        .replicas()
                                        .get(&self.record)
                                        .map(|r| {
                                            r.reconcile_items(phr_core::replica::Topic::Section(
                                                section,
                                            ))
                                        })
                                        .unwrap_or_default()
                                };
                                format!(
                                    "{} {kind} (replaced there: {replaced}; held in memory here: \
                                     {in_memory}, there: {there}; items here {:?} there {:?})",
                                    id.short(),
                                    items(node)
                                        .iter()
                                        .map(|(t, i)| (t, i[0]))
                                        .collect::<Vec<_>>(),
                                    items(others)
                                        .iter()
                                        .map(|(t, i)| (t, i[0]))
                                        .collect::<Vec<_>>(),
                                )
                            })
                            .collect()
                    };
                    return Err(format!(
                        "{} and {} hold different {section} blobs ({} and {}): only the first {:?}, only the second {:?}",
                        self.nodes[i].name,
                        self.nodes[holders[0]].name,
                        blobs(i).len(),
                        blobs(holders[0]).len(),
                        describe(i, holders[0]),
                        describe(holders[0], i),
                    ));
                }
            }
            let listing: BTreeMap<usize, Vec<String>> = documents
                .iter()
                .map(|(i, (doc, _))| {
                    let lines = doc
                        .resources(section)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|(_, value, _)| !value["valueString"].is_null())
                        .map(|(key, value, conflict)| {
                            if !conflict {
                                let history = doc
                                    .history(&key)
                                    .unwrap_or_default()
                                    .iter()
                                    .map(|v| format!("{}<-{:?}", v.id, v.replaces))
                                    .collect::<Vec<_>>()
                                    .join(", ");
                                return format!("{key}={} history {history}", value["valueString"]);
                            }
                            let versions = match doc.current(&key) {
                                Ok(Some(phr_core::record::Current::Conflict(vs))) => vs
                                    .iter()
                                    .map(|v| format!("{} ({})", v.resource["valueString"], v.id))
                                    .collect::<Vec<_>>()
                                    .join(" | "),
                                _ => String::new(),
                            };
                            let history = doc
                                .history(&key)
                                .unwrap_or_default()
                                .iter()
                                .map(|v| format!("{}<-{:?}", v.id, v.replaces))
                                .collect::<Vec<_>>()
                                .join(", ");
                            format!("{key}= conflict: {versions}; history {history}")
                        })
                        .collect();
                    (*i, lines)
                })
                .collect();
            let changes: BTreeMap<usize, BTreeMap<automerge::ChangeHash, String>> = documents
                .iter_mut()
                .map(|(i, (doc, _))| {
                    let metas = doc
                        .doc_for_provenance(section)
                        .get_changes_meta(&[])
                        .into_iter()
                        .map(|m| {
                            let actor = m.actor.to_hex_string();
                            (m.hash, format!("{}:{}", &actor[..8], m.seq))
                        })
                        .collect();
                    (*i, metas)
                })
                .collect();
            let mut heads = None;
            for (i, (doc, readable)) in &mut documents {
                if !readable.contains(&section) {
                    continue;
                }
                let these = doc.heads().remove(&section);
                match &heads {
                    None => heads = Some((these, *i)),
                    Some((first, j)) if *first != these => {
                        let only = |a: usize, b: usize| -> Vec<String> {
                            let (Some(x), Some(y)) = (changes.get(&a), changes.get(&b)) else {
                                return Vec::new();
                            };
                            x.iter()
                                .filter(|(h, _)| !y.contains_key(h))
                                .map(|(_, d)| d.clone())
                                .collect()
                        };
                        let names: Vec<String> = self
                            .nodes
                            .iter()
                            .map(|n| {
                                format!(
                                    "{}={}",
                                    n.name,
                                    phr_core::keys::hex(&n.peer().public_key()[..4])
                                )
                            })
                            .collect();
                        let (a, b) = (*i, *j);
                        let fate: Vec<String> = self.nodes[a]
                            .store
                            .blobs(&self.record, section)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(id, _)| {
                                let st = &self.nodes[b].store;
                                let stored =
                                    st.blob(&self.record, section, &id).ok().flatten().is_some();
                                let by = st.replaced_by(&self.record, section, &id).ok().flatten();
                                let by_desc = by
                                    .and_then(|c| st.blob(&self.record, section, &c).ok().flatten())
                                    .and_then(|x| phr_core::blob::Blob::decode(x).ok())
                                    .map(|x| {
                                        format!(
                                            "{:?} by {} void {}",
                                            x.header().kind,
                                            phr_core::keys::hex(
                                                &x.header().author.public_key()[..4]
                                            ),
                                            phr_core::consent::withdrawn(&x, self.checker.global())
                                        )
                                    });
                                format!(
                                    "{}: stored there {stored}, replaced there by {:?} {:?}",
                                    id.short(),
                                    by.map(|c| c.short()),
                                    by_desc
                                )
                            })
                            .collect();
                        return Err(format!(
                            "fates {fate:?}; {} and {} read different {section} documents: {:?} against {:?}; changes only in the first {:?}, only in the second {:?}; actors {names:?}",
                            self.nodes[*i].name,
                            self.nodes[*j].name,
                            listing.get(i),
                            listing.get(j),
                            only(*i, *j),
                            only(*j, *i),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        for (i, (doc, _)) in &documents {
            if !self.nodes[*i].hostile {
                let replica = &self.nodes[*i].replicas()[&self.record];
                self.checker
                    .view(&self.nodes[*i], replica, doc, &self.withdrawals)?;
            }
        }
        for (index, (section, key, marker)) in self.writes.iter().enumerate() {
            // A void write must be nowhere (checked above); an accepted one everywhere.
            if self.withdrawals.void(marker).is_some() {
                continue;
            }
            // A write built on a void one is left out with it, and its writer writes it again
            // if it is still its current version there: so the last write of each resource
            // must be everywhere, an earlier one built on a void write may be gone.
            let on_void = self
                .built_on
                .get(marker)
                .is_some_and(|seen| seen.iter().any(|m| self.withdrawals.void(m).is_some()));
            let last = !self.writes[index + 1..]
                .iter()
                .any(|(s, k, _)| s == section && k == key);
            if on_void && !last {
                continue;
            }
            for (i, (doc, readable)) in &documents {
                if !readable.contains(section) || self.nodes[*i].hostile {
                    continue;
                }
                let history = doc.history(key).map_err(|e| {
                    format!(
                        "{} lost {key} written as `{marker}`: {e}",
                        self.nodes[*i].name
                    )
                })?;
                if !history.iter().any(|v| v.resource["valueString"] == *marker) {
                    let held: Vec<usize> = self
                        .nodes
                        .iter()
                        .map(|n| n.store.held(&self.record).map(|h| h.len()).unwrap_or(0))
                        .collect();
                    return Err(format!(
                        "{} lost the version `{marker}` of {key} (held per node {held:?})",
                        self.nodes[*i].name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Every marker a section of a record shows, in any version.
fn markers(doc: &phr_core::Record, section: Section) -> Vec<String> {
    let mut out = Vec::new();
    for (key, _, _) in doc.resources(section).unwrap_or_default() {
        for version in doc.history(&key).unwrap_or_default() {
            if let Some(marker) = version.resource["valueString"].as_str() {
                out.push(marker.to_string());
            }
        }
    }
    out
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

/// The HL7 IPS example's resources, as phr imports them (parsed once).
fn ips_resources() -> Vec<Value> {
    static IPS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    IPS.get_or_init(|| {
        let path = crate::fixtures_dir().join("ips/Bundle-IPS-examples-Bundle-01.json");
        let bytes = std::fs::read(&path).expect("the IPS fixture");
        let (parsed, _) = import::parse(&path.display().to_string(), &bytes).expect("IPS parses");
        parsed.into_iter().map(|p| p.resource).collect()
    })
    .clone()
}
