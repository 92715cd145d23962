//! The random events of a step: syncs, writes (honest and hostile), the IPS import,
//! compactions, consent changes, cut links, crashes and the passing of time. Each returns the
//! line it adds to the trace, or what went wrong.

use std::collections::BTreeSet;

use phr_core::{
    fhir::reference::ResourceKey,
    import,
    ledger::{Access, OpBody, RevokeTarget},
    section::{SECTION_TAG_SYSTEM, Section},
};
use rand::Rng;
use serde_json::{Value, json};

use super::{Bug, GP, LAPTOP, OUTSIDER, PHARMACY, PHONE, Sim, TABLET, grant};

/// How many blobs a hostile withdrawn party writes at once.
const HOSTILE_BURST: usize = 4;

/// How many bytes a bomb's text inflates to: past the limit on an audit entry (64 KiB), in a
/// compressed change of a few hundred bytes.
const BOMB_BYTES: usize = 256 * 1024;

impl Sim {
    /// A random node starts syncing with a random other node.
    pub(super) fn sync_random(&mut self) -> String {
        let from = self.rng.gen_range(0..self.nodes.len());
        let mut to = self.rng.gen_range(0..self.nodes.len() - 1);
        if to >= from {
            to += 1;
        }
        self.sync_pair(from, to)
    }

    pub(super) fn sync_pair(&mut self, from: usize, to: usize) -> String {
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
    pub(super) fn write_random(&mut self) -> Result<String, String> {
        // With the hostile participants, the pharmacy (a reader) logs audit entries too, not
        // all of them honest.
        let writers: &[usize] = if self.config.hostile {
            &[LAPTOP, PHONE, TABLET, GP, PHARMACY]
        } else {
            &[LAPTOP, PHONE, TABLET, GP]
        };
        let node = writers[self.rng.gen_range(0..writers.len())];
        if node == PHARMACY {
            return self.pharmacy_logs();
        }
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

    /// The pharmacy, which may read `summary` and so append to `audit`, logs an audit entry:
    /// an honest one, a bomb (an entry whose compressed change inflates past the limit), or an
    /// injection (under the key of one of the patient's entries, which it first tries to write
    /// outright). None may change what any node shows but the honest entry in `audit`.
    fn pharmacy_logs(&mut self) -> Result<String, String> {
        let node = PHARMACY;
        if !self.nodes[node].up || !self.nodes[node].replicas().contains_key(&self.record) {
            return Ok("pharmacy cannot log now".into());
        }
        let record = self.record;
        let now = self.now_ms;
        let at = jiff::Timestamp::from_millisecond(now).expect("sim time");
        let pharmacy = self.nodes[node].party();
        let read = phr_core::audit::Logged::read("show", &[Section::Summary]);
        let mut event = phr_core::audit::audit_event(
            &format!("{}", self.rng.r#gen::<u64>()),
            &read,
            &pharmacy,
            record,
            at,
        );
        let (what, resource, compressed) = match self.rng.gen_range(0..3) {
            0 => ("an audit entry", event, false),
            1 => {
                event["entity"][0]["description"] = "a".repeat(BOMB_BYTES).into();
                ("a bomb", event, true)
            }
            _ => {
                let section = [Section::Summary, Section::Clinical][self.rng.gen_range(0..2)];
                let id = format!("{section}-{}", self.rng.gen_range(0..5));
                let marker = format!(
                    "i{} by pharmacy (injected)",
                    self.withdrawals.injected.len()
                );
                self.withdrawals.injected.insert(marker.clone());
                let resource = json!({
                    "resourceType": "Observation",
                    "id": id,
                    "status": "final",
                    "meta": {"tag": [{"system": SECTION_TAG_SYSTEM, "code": section.as_str()}]},
                    "code": {"text": "Blood pressure"},
                    "valueString": marker,
                });
                // A reader holds no key to write with: refused, so it goes in an audit entry.
                match self.nodes[node].write(record, std::slice::from_ref(&resource), now) {
                    Ok(true) => {
                        self.touched.push(node);
                        return Ok(format!("pharmacy wrote {section}: {marker}"));
                    }
                    Ok(false) => {}
                    Err(e) => return Err(format!("pharmacy failed to write: {e}")),
                }
                (
                    "an entry filed under another resource's key",
                    resource,
                    false,
                )
            }
        };
        match self.nodes[node].log_audit(record, &resource, compressed, now) {
            Ok(true) => {
                *self.report.logged.entry(what.to_string()).or_default() += 1;
                Ok(format!("pharmacy logged {what}"))
            }
            Ok(false) => Ok(format!("pharmacy could not log {what}")),
            Err(e) => Err(format!("pharmacy failed to log: {e}")),
        }
    }

    /// The laptop or the phone imports the HL7 IPS example bundle.
    pub(super) fn import(&mut self) -> Result<String, String> {
        let (node, name) = match self.laptop_or_phone() {
            Ok(picked) => picked,
            Err(name) => return Ok(format!("{name} cannot import now")),
        };
        let resources = ips_resources();
        let now = self.now_ms;
        self.touched.push(node);
        match self.nodes[node].write(self.record, &resources, now) {
            Ok(true) => {
                let peer = self.nodes[node].peer();
                self.withdrawals
                    .author_of
                    .insert(import_marker(now, &peer.to_string()), peer);
                Ok(format!("{name} imported {} resources", resources.len()))
            }
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

    pub(super) fn compact_random(&mut self) -> Result<String, String> {
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
    pub(super) fn consent_event(&mut self) -> Result<String, String> {
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
            if self.config.hostile {
                // It accepted nothing of the pharmacy's: it only ever logs, and its entries
                // made after this are void. The pharmacy takes no ledger operation any more.
                let peer = self.nodes[PHARMACY].peer();
                self.withdrawals.accepted.insert(peer, BTreeSet::new());
                self.nodes[PHARMACY].hostile = true;
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
        // Its imports the laptop showed.
        let shown: BTreeSet<String> = Section::ALL
            .into_iter()
            .flat_map(|section| markers(&doc, section))
            .collect();
        for (marker, author) in &self.withdrawals.author_of {
            if *author == peer && marker.starts_with("import@") && shown.contains(marker) {
                accepted.insert(marker.clone());
            }
        }
        self.withdrawals.accepted.insert(peer, accepted);
        self.nodes[node].hostile = true;
        Ok(format!("laptop withdrew the {}", self.nodes[node].name))
    }

    pub(super) fn cut_link(&mut self) -> String {
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

    pub(super) fn crash_random(&mut self) -> Result<String, String> {
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
    pub(super) fn pass_time(&mut self) -> Result<String, String> {
        let ms = self.rng.gen_range(100..5_000);
        self.now_ms += ms;
        self.tick_all()?;
        Ok(format!("{ms} ms passed"))
    }
}

/// Every marker a section of a record shows, in any version.
fn markers(doc: &phr_core::Record, section: Section) -> Vec<String> {
    let mut out = Vec::new();
    for (key, _, _) in doc.resources(section).unwrap_or_default() {
        for version in doc.history(&key).unwrap_or_default() {
            match version.resource["valueString"].as_str() {
                Some(marker) => out.push(marker.to_string()),
                None => out.push(import_marker(
                    version.time.as_millisecond(),
                    &version.author.id,
                )),
            }
        }
    }
    out
}

/// What stands for an import's versions among the markers: each resource imported at `ms`
/// by `author` (a peer id), so that what is built on an import is judged like what is built
/// on a write.
fn import_marker(ms: i64, author: &str) -> String {
    format!("import@{ms} by {author}")
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
