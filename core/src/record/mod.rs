//! The record: one patient's FHIR resources in six Automerge documents, one per [`Section`].
//!
//! # Layout of a section document
//!
//! The root map of each section's document maps a resource key, `Type/id`, to a *version*: a
//! map object written whole, never edited afterwards:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `resource` | string | the FHIR resource, compact JSON |
//! | `author` | string | id of the device or node that wrote it |
//! | `author_name` | string | that writer's display name when it wrote it |
//! | `time` | timestamp | when it was written (ms since the Unix epoch) |
//! | `replaces` | list of strings | the versions it supersedes (`section:opid`) |
//! | `kept` | string, optional | set when the write settled a conflict: the version kept |
//!
//! Keys are flat (`Condition/3f2a`) rather than nested type -> id maps on purpose: two replicas
//! that each create a nested `Condition` map offline would make two competing maps, and one
//! replica's resources would be hidden behind the other's. The root map always exists, so a
//! flat key can only ever conflict with writes of the same resource.
//!
//! The `audit` document holds `AuditEvent`s only, and no other document holds one. A key on the
//! wrong side (an audit entry filed under another resource's key, say) is ignored wherever the
//! record is read, so that it can never become a version of a resource of another section.
//!
//! A resource is written whole: two concurrent writes of one key leave two versions, which
//! Automerge keeps (`get_all`) and phr lists as a conflict until a person picks one with
//! [`Record::resolve`]. Nothing is merged field by field and nothing is dropped silently.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use automerge::{
    ActorId, AutoCommit, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value as AmValue,
    transaction::{CommitOptions, Transactable},
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::changes::provenance::Unproven;
use crate::{
    changes::catch_automerge_panic,
    fhir::reference::ResourceKey,
    section::{Section, place},
};

/// Who writes, and when: every write carries one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Author {
    /// A stable id of the writing device or node.
    pub id: String,
    /// A display name, e.g. the patient's name or the practice's.
    pub name: String,
}

/// The author and time of a write. Time is passed in: the record never reads a clock.
#[derive(Clone, Copy, Debug)]
pub struct Stamp<'a> {
    /// Who writes.
    pub author: &'a Author,
    /// When.
    pub time: Timestamp,
}

/// What identifies a record and its patient; kept beside the sections by the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// The record's id.
    pub id: String,
    /// The `Patient/id` this record is about.
    pub subject: Option<String>,
    /// The patient's NHS number, if known (ten digits).
    pub nhs_number: Option<String>,
}

/// One version of a resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    /// The section whose document holds it.
    pub section: Section,
    /// Automerge's id of the version object (`counter@actor`), unique within the section.
    pub id: String,
    /// The resource as written.
    pub resource: Value,
    /// Who wrote it.
    pub author: Author,
    /// When.
    pub time: Timestamp,
    /// Versions this one superseded, as `section:id`.
    pub replaces: Vec<String>,
    /// When this version settled a conflict: the version that was kept.
    pub kept: Option<String>,
    /// The import that wrote it (`phr imports`), if an import did.
    pub import: Option<String>,
    /// Set on a version that removes the resource (an undone import's addition): why. The
    /// resource is what it was, for history; every view leaves it out.
    pub removed: Option<String>,
    /// Set on a version written to undo an import: that import's id.
    pub undoes: Option<String>,
    /// Whether its writer's own signature proves it: every field was written by the actor that
    /// made the version, in changes that came in a blob that actor's device signed or that an
    /// authorship proof of that device covers (`changes::provenance`). A version another writer
    /// changed in place, or whose changes only a compacting device vouches for, is not.
    pub proven: bool,
}

impl Version {
    /// A short, still unique in practice, name for the version: `counter@` and 8 hex digits of
    /// the writer's actor id. `phr resolve --keep` accepts it.
    pub fn short_id(&self) -> String {
        match self.id.split_once('@') {
            Some((counter, actor)) => format!("{counter}@{}", &actor[..actor.len().min(8)]),
            None => self.id.clone(),
        }
    }

    fn reference(&self) -> String {
        format!("{}:{}", self.section, self.id)
    }

    /// Whether a provider with write access to `section` wrote this version, in changes its own
    /// signature proves (see [`crate::ledger::LedgerState::is_provider_writer_of`]).
    pub fn by_provider_writing(
        &self,
        ledger: &crate::ledger::LedgerState,
        section: Section,
    ) -> bool {
        self.author_is_writer()
            && self.proven
            && self
                .author
                .id
                .parse::<crate::keys::PeerId>()
                .is_ok_and(|signer| ledger.is_provider_writer_of(&signer, section))
    }

    /// Whether the author this version names is the device whose Automerge actor made it. The
    /// actor is proven (a blob's changes are all by its signer's actors, checked on loading);
    /// the author fields are what the writer typed, so a mismatch is shown to the reader.
    pub fn author_is_writer(&self) -> bool {
        let Ok(peer) = self.author.id.parse::<crate::keys::PeerId>() else {
            return false;
        };
        let Some((_, actor)) = self.id.split_once('@') else {
            return false;
        };
        let prefix = crate::keys::hex(&peer.public_key()[..crate::changes::ACTOR_KEY_BYTES]);
        actor.starts_with(&prefix)
    }
}

/// What is stored under one key now.
// A short-lived answer, moved out of at once: boxing the common `One` would cost an
// allocation on every read to save stack bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Current {
    /// One version: the normal case.
    One(Version),
    /// Concurrent versions waiting for a person to choose.
    Conflict(Vec<Version>),
}

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The resource was new.
    Added,
    /// A different version existed and was superseded.
    Updated,
    /// The same resource was already there: nothing written.
    Unchanged,
}

/// A key whose versions conflict.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    /// The resource.
    pub key: ResourceKey,
    /// Its concurrent versions, oldest first.
    pub versions: Vec<Version>,
}

/// What can go wrong reading or writing a record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Automerge refused an operation or could not load stored bytes.
    #[error("record storage error in section {section}")]
    Automerge {
        /// The section concerned.
        section: Section,
        /// Automerge's error (boxed: it is large and rare).
        source: Box<automerge::AutomergeError>,
    },
    /// Automerge panicked on changes written by others (`changes::catch_automerge_panic`).
    #[error("Automerge failed on changes in section {section} (it panicked: {message})")]
    AutomergePanicked {
        /// The section concerned.
        section: Section,
        /// The panic's message.
        message: String,
    },
    /// A stored version object is missing a field or holds invalid JSON.
    #[error("section {section} holds a damaged version of {key}: {reason}")]
    Damaged {
        /// The section.
        section: Section,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The resource has no valid `resourceType` and `id`.
    #[error("resource has no valid resourceType and id")]
    NoKey,
    /// A write to a resource whose versions conflict.
    #[error(
        "{0} has conflicting versions; settle them first with `phr conflicts` and `phr resolve {0} --keep VERSION`"
    )]
    Conflicted(ResourceKey),
    /// No such resource in this record.
    #[error("{0} is not in this record (see `phr show --json` or `phr export` for what is)")]
    NotFound(ResourceKey),
    /// No version of the record names this import.
    #[error("no import {0} in this record: `phr imports` lists the imports it holds")]
    UnknownImport(String),
    /// `resolve` on a resource that is not in conflict.
    #[error("{0} has no conflicting versions to resolve")]
    NotInConflict(ResourceKey),
    /// `resolve --keep` named no current version, or more than one.
    #[error(
        "{key} has no single version '{given}'; its versions are {available} (see `phr conflicts`)"
    )]
    UnknownVersion {
        /// The resource.
        key: ResourceKey,
        /// What was asked for.
        given: String,
        /// The versions that exist.
        available: String,
    },
}

type Result<T, E = RecordError> = std::result::Result<T, E>;

/// One patient's record: six sections, each an Automerge document.
#[derive(Debug)]
pub struct Record {
    meta: RecordMeta,
    docs: BTreeMap<Section, AutoCommit>,
    /// Per section, the heads already handed to storage: [`Record::take_unsaved`] returns the
    /// changes after them. (Automerge's own save cursor starts empty after a load.)
    saved: BTreeMap<Section, Vec<automerge::ChangeHash>>,
    /// Per section, the operations no signature of their author proves (set on loading by
    /// [`Record::set_unproven`]); versions made or changed by them are not [`Version::proven`].
    unproven: BTreeMap<Section, Vec<Unproven>>,
    /// Per section, this device's own changes to hand to storage again with the next save
    /// ([`Record::reissue`]).
    reissue: BTreeMap<Section, Vec<u8>>,
}

fn am(section: Section) -> impl Fn(automerge::AutomergeError) -> RecordError {
    move |source| RecordError::Automerge {
        section,
        source: Box::new(source),
    }
}

impl Record {
    /// A new, empty record whose writes are made as `actor`.
    pub fn create(meta: RecordMeta, actor: &ActorId) -> Self {
        let docs = Section::ALL
            .into_iter()
            .map(|section| (section, AutoCommit::new().with_actor(actor.clone())))
            .collect();
        Self {
            meta,
            docs,
            saved: BTreeMap::new(),
            unproven: BTreeMap::new(),
            reissue: BTreeMap::new(),
        }
    }

    /// A record from the stored bytes of each section (any mix of `save` and `save_incremental`
    /// output, concatenated per section), whose new writes are made as `actor`.
    pub fn load(
        meta: RecordMeta,
        stored: &BTreeMap<Section, Vec<u8>>,
        actor: &ActorId,
    ) -> Result<Self> {
        let mut record = Self::create(meta, actor);
        for (section, bytes) in stored {
            if bytes.is_empty() {
                continue;
            }
            let mut doc = AutoCommit::load(bytes)
                .map_err(am(*section))?
                .with_actor(actor.clone());
            record.saved.insert(*section, doc.get_heads());
            record.docs.insert(*section, doc);
        }
        Ok(record)
    }

    /// A record from stored pieces of each section (each a `save` or `save_incremental` output,
    /// in any order). A piece Automerge cannot read is left out and its index returned, so that
    /// one bad piece costs that piece, not the section.
    pub fn load_parts(
        meta: RecordMeta,
        parts: &BTreeMap<Section, Vec<Vec<u8>>>,
        actor: &ActorId,
    ) -> (Self, Vec<(Section, usize, RecordError)>) {
        let mut record = Self::create(meta, actor);
        let mut bad = Vec::new();
        for (section, pieces) in parts {
            if pieces.is_empty() {
                continue;
            }
            let doc = match catch_automerge_panic(|| AutoCommit::load(&pieces.concat())) {
                Ok(Ok(doc)) => doc,
                _ => {
                    // Find the culprits one piece at a time; the rest still load.
                    let mut doc = AutoCommit::new();
                    let mut loaded: Vec<&[u8]> = Vec::new();
                    for (index, piece) in pieces.iter().enumerate() {
                        match catch_automerge_panic(|| doc.load_incremental(piece)) {
                            Ok(Ok(_)) => loaded.push(piece),
                            Ok(Err(e)) => bad.push((*section, index, am(*section)(e))),
                            Err(message) => {
                                let section = *section;
                                let panicked = RecordError::AutomergePanicked { section, message };
                                bad.push((section, index, panicked));
                                // A panic may leave the document half-changed: load again
                                // what loaded before it, in the same order.
                                doc = AutoCommit::new();
                                for piece in &loaded {
                                    let _ = doc.load_incremental(piece);
                                }
                            }
                        }
                    }
                    doc
                }
            };
            // Changes waiting for others that are missing (built on a change that was left
            // out) may be this device's: a new change under its actor could reuse one of their
            // sequence numbers, so it writes as a fresh actor of its own.
            let actor = if doc.get_missing_deps(&[]).is_empty() {
                actor.clone()
            } else {
                exclude::fresh_actor(actor)
            };
            let mut doc = doc.with_actor(actor);
            record.saved.insert(*section, doc.get_heads());
            record.docs.insert(*section, doc);
        }
        (record, bad)
    }

    /// The document of a section, for [`crate::changes::provenance::ChangeGraph::of`].
    pub fn doc_for_provenance(&mut self, section: Section) -> &mut AutoCommit {
        self.doc_mut(section)
    }

    /// Records which operations of a section no signature of their author proves.
    pub fn set_unproven(&mut self, section: Section, unproven: Vec<Unproven>) {
        if unproven.is_empty() {
            self.unproven.remove(&section);
        } else {
            self.unproven.insert(section, unproven);
        }
    }

    /// The operations of a section no signature of their author proves.
    pub fn unproven(&self, section: Section) -> &[Unproven] {
        self.unproven
            .get(&section)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The record's identity.
    pub fn meta(&self) -> &RecordMeta {
        &self.meta
    }

    /// Sets who the record is about (the subject `Patient`).
    pub fn set_meta(&mut self, meta: RecordMeta) {
        self.meta = meta;
    }

    fn doc(&self, section: Section) -> &AutoCommit {
        &self.docs[&section]
    }

    fn doc_mut(&mut self, section: Section) -> &mut AutoCommit {
        self.docs
            .get_mut(&section)
            .expect("every section has a document")
    }

    /// The current version(s) of a key, across all sections (a resource normally lives in one).
    /// A version that removed the resource is not current: a key with only such versions has
    /// none, and one beside a concurrent edit leaves the edit as the one version.
    pub fn current(&self, key: &ResourceKey) -> Result<Option<Current>> {
        let mut versions = self.all_current(key)?;
        versions.retain(|v| v.removed.is_none());
        Ok(Self::as_current(versions))
    }

    /// Every current version of a key, removals included, sorted.
    fn all_current(&self, key: &ResourceKey) -> Result<Vec<Version>> {
        let mut versions = Vec::new();
        for section in Section::ALL {
            versions.extend(self.versions_in(section, &key.to_string())?);
        }
        versions.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        Ok(versions)
    }

    fn as_current(mut versions: Vec<Version>) -> Option<Current> {
        match versions.len() {
            0 => None,
            1 => versions.pop().map(Current::One),
            _ => Some(Current::Conflict(versions)),
        }
    }

    fn versions_in(&self, section: Section, key: &str) -> Result<Vec<Version>> {
        if !belongs(section, key) {
            return Ok(Vec::new());
        }
        let doc = self.doc(section);
        let values = doc.get_all(ROOT, key).map_err(am(section))?;
        values
            .into_iter()
            .map(|(_, obj)| read_version(doc, section, key, &obj, self.unproven(section)))
            .collect()
    }

    /// The resource under `key`: its only version, or Automerge's deterministic pick among
    /// conflicting ones (check [`Record::conflicts`] before trusting it).
    pub fn get(&self, key: &ResourceKey) -> Result<Option<Value>> {
        Ok(self.current(key)?.map(|current| match current {
            Current::One(v) => v.resource,
            Current::Conflict(mut vs) => vs.remove(0).resource,
        }))
    }

    /// Whether a key has conflicting versions.
    pub fn conflicts_on(&self, key: &ResourceKey) -> Result<bool> {
        Ok(matches!(self.current(key)?, Some(Current::Conflict(_))))
    }

    /// Every resource of a section in key order, with whether it is in conflict; conflicted keys
    /// give Automerge's deterministic pick.
    pub fn resources(&self, section: Section) -> Result<Vec<(ResourceKey, Value, bool)>> {
        self.resources_in_range(section, None)
    }

    /// The resources of one type in a section, in id order.
    pub fn resources_of_type(&self, section: Section, resource_type: &str) -> Result<Vec<Value>> {
        Ok(self
            .resources_in_range(section, Some(resource_type))?
            .into_iter()
            .map(|(_, v, _)| v)
            .collect())
    }

    fn resources_in_range(
        &self,
        section: Section,
        resource_type: Option<&str>,
    ) -> Result<Vec<(ResourceKey, Value, bool)>> {
        let doc = self.doc(section);
        let range = match resource_type {
            // Keys sort as strings, so `Type/` up to `Type0` ('0' follows '/') is exactly one type.
            Some(t) => doc.map_range(ROOT, format!("{t}/")..format!("{t}0")),
            None => doc.map_range(ROOT, ..),
        };
        let mut out = Vec::new();
        for item in range {
            let key_text = item.key.to_string();
            if !belongs(section, &key_text) {
                continue;
            }
            let key: ResourceKey = key_text.parse().map_err(|_| RecordError::Damaged {
                section,
                key: key_text.clone(),
                reason: "not a Type/id key".into(),
            })?;
            let mut value = item.id();
            let mut conflict = item.conflict;
            if conflict || is_removal(doc, &value) {
                // Removals are not resources: the first live value, if any, stands.
                let live: Vec<ObjId> = doc
                    .get_all(ROOT, key_text.as_str())
                    .map_err(am(section))?
                    .into_iter()
                    .map(|(_, obj)| obj)
                    .filter(|obj| !is_removal(doc, obj))
                    .collect();
                let Some(first) = live.first() else {
                    continue;
                };
                value = first.clone();
                conflict = live.len() > 1;
            }
            let json = version_field_str(doc, section, &key_text, &value, "resource")?;
            let resource = parse_resource(section, &key_text, &json)?;
            out.push((key, resource, conflict));
        }
        Ok(out)
    }

    /// How many resources a section holds.
    pub fn len(&self, section: Section) -> usize {
        let doc = self.doc(section);
        doc.keys(ROOT)
            .filter(|key| belongs(section, key))
            .filter(|key| {
                doc.get_all(ROOT, key.as_str())
                    .is_ok_and(|values| values.iter().any(|(_, obj)| !is_removal(doc, obj)))
            })
            .count()
    }

    /// Whether the record holds no resource at all.
    pub fn is_empty(&self) -> bool {
        Section::ALL.iter().all(|s| self.len(*s) == 0)
    }

    /// Writes a resource into the section [`place`] chooses, unless the same resource is already
    /// there. The write joins the open change; call [`Record::commit`] to close it.
    ///
    /// Refuses to write over conflicting versions: a person must choose between them first.
    pub fn put(&mut self, stamp: Stamp<'_>, resource: &Value) -> Result<PutOutcome> {
        self.put_marked(stamp, resource, &[])
    }

    /// [`Record::put`], with string fields on the version (`import`: the import writing it).
    pub fn put_marked(
        &mut self,
        stamp: Stamp<'_>,
        resource: &Value,
        marks: &[(&str, &str)],
    ) -> Result<PutOutcome> {
        let key = ResourceKey::of(resource).ok_or(RecordError::NoKey)?;
        let key_text = key.to_string();
        let section = place(resource);
        let json = serde_json::to_string(resource).expect("a JSON value always serialises");
        let mut existing = Vec::new();
        for s in Section::ALL.into_iter().filter(|s| belongs(*s, &key_text)) {
            let doc = self.doc(s);
            for (_, obj) in doc.get_all(ROOT, key_text.as_str()).map_err(am(s))? {
                let stored = version_field_str(doc, s, &key_text, &obj, "resource")?;
                let removal = is_removal(doc, &obj);
                existing.push((s, obj, stored, removal));
            }
        }
        // A removal is superseded like any version, but is no conflict and never "the same".
        let live: Vec<_> = existing.iter().filter(|e| !e.3).collect();
        match live.as_slice() {
            [] => {}
            [(s, _, stored, _)] if *s == section && *stored == json && existing.len() == 1 => {
                return Ok(PutOutcome::Unchanged);
            }
            [_] => {}
            _ => return Err(RecordError::Conflicted(key)),
        }
        let added = live.is_empty();
        let replaces: Vec<String> = existing
            .iter()
            .map(|(s, obj, _, _)| format!("{s}:{obj}"))
            .collect();
        for (s, _, _, _) in &existing {
            if *s != section {
                // The resource moved section (e.g. newly labelled sensitive): it lives in one only.
                self.doc_mut(*s)
                    .delete(ROOT, key_text.as_str())
                    .map_err(am(*s))?;
            }
        }
        write_version(
            self.doc_mut(section),
            section,
            &key_text,
            &json,
            stamp,
            &replaces,
            marks,
        )?;
        Ok(if added {
            PutOutcome::Added
        } else {
            PutOutcome::Updated
        })
    }

    /// Removes a resource by a new version that says so (`removed`: why), superseding its one
    /// current version; history keeps everything. Refused if the resource is not here or its
    /// versions conflict. The write joins the open change, like [`Record::put`].
    pub fn remove(
        &mut self,
        stamp: Stamp<'_>,
        key: &ResourceKey,
        why: &str,
        marks: &[(&str, &str)],
    ) -> Result<()> {
        let version = match self.current(key)? {
            None => return Err(RecordError::NotFound(key.clone())),
            Some(Current::Conflict(_)) => return Err(RecordError::Conflicted(key.clone())),
            Some(Current::One(version)) => version,
        };
        let json =
            serde_json::to_string(&version.resource).expect("a JSON value always serialises");
        let mut marks = marks.to_vec();
        marks.push(("removed", why));
        write_version(
            self.doc_mut(version.section),
            version.section,
            &key.to_string(),
            &json,
            stamp,
            &[version.reference()],
            &marks,
        )?;
        Ok(())
    }

    /// Closes the open change of every section written to since the last commit, stamped with
    /// the time and a message.
    pub fn commit(&mut self, stamp: Stamp<'_>, message: &str) {
        for doc in self.docs.values_mut() {
            if doc.pending_ops() > 0 {
                doc.commit_with(
                    CommitOptions::default()
                        .with_time(stamp.time.as_second())
                        .with_message(message.to_string()),
                );
            }
        }
    }

    /// Drops every write since the last commit.
    pub fn rollback(&mut self) {
        for doc in self.docs.values_mut() {
            doc.rollback();
        }
    }

    /// Every resource with concurrent versions, in key order.
    pub fn conflicts(&self) -> Result<Vec<Conflict>> {
        let mut keys = BTreeSet::new();
        let mut seen_in = BTreeMap::<String, usize>::new();
        for section in Section::ALL {
            for item in self.doc(section).map_range(ROOT, ..) {
                let key = item.key.to_string();
                if !belongs(section, &key) {
                    continue;
                }
                let count = seen_in.entry(key.clone()).or_default();
                *count += 1;
                if item.conflict || *count > 1 {
                    keys.insert(key);
                }
            }
        }
        let mut out = Vec::new();
        for key in keys {
            let Ok(key) = key.parse::<ResourceKey>() else {
                continue;
            };
            if let Some(Current::Conflict(versions)) = self.current(&key)? {
                out.push(Conflict { key, versions });
            }
        }
        Ok(out)
    }

    /// Settles a conflict by keeping one version (by [`Version::id`], [`Version::short_id`] or
    /// its 1-based position in the conflict's list). The kept resource is written again as a new
    /// version that replaces all of them and records which was kept; history keeps the others.
    pub fn resolve(&mut self, stamp: Stamp<'_>, key: &ResourceKey, keep: &str) -> Result<Version> {
        let versions = match self.current(key)? {
            None => return Err(RecordError::NotFound(key.clone())),
            Some(Current::One(_)) => return Err(RecordError::NotInConflict(key.clone())),
            Some(Current::Conflict(versions)) => versions,
        };
        let position = keep
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=versions.len()).contains(n));
        let matches: Vec<&Version> = versions
            .iter()
            .enumerate()
            .filter(|(i, v)| position == Some(i + 1) || v.id == keep || v.short_id() == keep)
            .map(|(_, v)| v)
            .collect();
        let [chosen] = matches.as_slice() else {
            return Err(RecordError::UnknownVersion {
                key: key.clone(),
                given: keep.to_string(),
                available: versions
                    .iter()
                    .map(|v| v.id.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let chosen = (*chosen).clone();
        let key_text = key.to_string();
        let section = place(&chosen.resource);
        for v in &versions {
            if v.section != section {
                self.doc_mut(v.section)
                    .delete(ROOT, key_text.as_str())
                    .map_err(am(v.section))?;
            }
        }
        let json = serde_json::to_string(&chosen.resource).expect("a JSON value always serialises");
        let replaces: Vec<String> = versions.iter().map(Version::reference).collect();
        let id = write_version(
            self.doc_mut(section),
            section,
            &key_text,
            &json,
            stamp,
            &replaces,
            &[("kept", &chosen.reference())],
        )?;
        self.commit(
            stamp,
            &format!("resolve {key_text}: keep {}", chosen.short_id()),
        );
        read_version(
            self.doc(section),
            section,
            &key_text,
            &id,
            self.unproven(section),
        )
    }

    /// Every version of a resource that this replica knows, oldest first: the current ones and,
    /// transitively, the versions they replaced.
    pub fn history(&self, key: &ResourceKey) -> Result<Vec<Version>> {
        // A removed resource keeps its history: the removal is its last version.
        let mut queue: VecDeque<Version> = self.all_current(key)?.into();
        if queue.is_empty() {
            return Err(RecordError::NotFound(key.clone()));
        }
        let key_text = key.to_string();
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        while let Some(version) = queue.pop_front() {
            if !seen.insert(version.reference()) {
                continue;
            }
            for reference in &version.replaces {
                if let Some(older) = self.version_by_reference(&key_text, reference)? {
                    queue.push_back(older);
                }
            }
            out.push(version);
        }
        out.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        Ok(out)
    }

    fn version_by_reference(&self, key: &str, reference: &str) -> Result<Option<Version>> {
        let Some((section, id)) = reference.split_once(':') else {
            return Ok(None);
        };
        let Ok(section) = section.parse::<Section>() else {
            return Ok(None);
        };
        if !belongs(section, key) {
            return Ok(None);
        }
        let doc = self.doc(section);
        // A version written on a replica we have not merged yet is unknown here: skip it.
        let Ok(obj) = doc.import_obj(id) else {
            return Ok(None);
        };
        read_version(doc, section, key, &obj, self.unproven(section)).map(Some)
    }

    /// Merges another replica of the same record into this one (both keep their own writes).
    pub fn merge(&mut self, other: &mut Record) -> Result<()> {
        for section in Section::ALL {
            let theirs = other
                .docs
                .get_mut(&section)
                .expect("every section has a document");
            self.docs
                .get_mut(&section)
                .expect("every section has a document")
                .merge(theirs)
                .map_err(am(section))?;
        }
        Ok(())
    }

    /// The changes made since the last call (or since load), per section, as bytes that
    /// [`Record::load`] accepts after what was stored before. Sections with no change are absent.
    pub fn take_unsaved(&mut self) -> Vec<(Section, Vec<u8>)> {
        let mut out = Vec::new();
        for (section, doc) in &mut self.docs {
            let saved = self.saved.entry(*section).or_default();
            let mut bytes = doc.save_after(saved);
            if !bytes.is_empty() {
                *saved = doc.get_heads();
            }
            bytes.extend(self.reissue.remove(section).unwrap_or_default());
            if !bytes.is_empty() {
                out.push((*section, bytes));
            }
        }
        out
    }

    /// One section's whole document, compacted, for rewriting its storage as one piece. Counts
    /// as saved: [`Record::take_unsaved`] will not return these changes again.
    pub fn save_section(&mut self, section: Section) -> Vec<u8> {
        let doc = self.doc_mut(section);
        let bytes = doc.save();
        let heads = doc.get_heads();
        self.saved.insert(section, heads);
        bytes
    }

    /// Every section's whole document, compacted (see [`Record::save_section`]).
    pub fn save_compacted(&mut self) -> Vec<(Section, Vec<u8>)> {
        Section::ALL
            .into_iter()
            .map(|section| (section, self.save_section(section)))
            .collect()
    }

    /// The heads of each section, which change exactly when content changes.
    pub fn heads(&mut self) -> BTreeMap<Section, Vec<automerge::ChangeHash>> {
        self.docs
            .iter_mut()
            .map(|(section, doc)| (*section, doc.get_heads()))
            .collect()
    }
}

/// One new resource as a change of its own, made as `actor` in an empty document: how a writer
/// that cannot read a section appends to it (a grantee's audit entry, sealed to the owners).
/// The version has the layout [`Record::put`] writes, under the flat key `Type/id`, so the
/// change merges into the section's document like any other write; it depends on nothing.
///
/// `actor` must never have written before (a fresh random one per change), or an
/// (actor, sequence number) pair would be used twice. Returns the section the resource belongs
/// to, with the change's bytes.
pub fn lone_change(
    stamp: Stamp<'_>,
    resource: &Value,
    actor: ActorId,
    message: &str,
) -> Result<(Section, Vec<u8>)> {
    let key = ResourceKey::of(resource).ok_or(RecordError::NoKey)?;
    let section = place(resource);
    let json = serde_json::to_string(resource).expect("a JSON value always serialises");
    let mut doc = AutoCommit::new().with_actor(actor);
    write_version(&mut doc, section, &key.to_string(), &json, stamp, &[], &[])?;
    doc.commit_with(
        CommitOptions::default()
            .with_time(stamp.time.as_second())
            .with_message(message.to_string()),
    );
    Ok((section, doc.save_after(&[])))
}

/// The fields of a version as [`lone_change`] writes it: a lone change supersedes nothing, so
/// it has no `replaces`, and settles no conflict, so no `kept`.
const LONE_VERSION_FIELDS: [&str; 4] = ["resource", "author", "author_name", "time"];

/// The one version in a document made of one [`lone_change`], with its key: how an owner checks
/// a grantee's audit entry before it joins the section. Anything `lone_change` would not have
/// written is refused, with a sentence for the user: more or fewer than one key at the root, a
/// key that is not `Type/id` or not the resource's own, more than one value under it, or a value
/// that is not a version map of exactly [`LONE_VERSION_FIELDS`], each of its type.
pub(crate) fn lone_version(
    doc: &AutoCommit,
    section: Section,
) -> Result<(ResourceKey, Version), String> {
    let keys: Vec<String> = doc.keys(ROOT).collect();
    let [key_text] = keys.as_slice() else {
        return Err(format!(
            "it holds {} resources, where an entry holds exactly one",
            keys.len()
        ));
    };
    let key: ResourceKey = key_text
        .parse()
        .map_err(|_| format!("it holds the key {key_text:?}, which is not Type/id"))?;
    let values = doc
        .get_all(ROOT, key_text.as_str())
        .map_err(|e| e.to_string())?;
    let [(AmValue::Object(ObjType::Map), obj)] = values.as_slice() else {
        return Err(format!("it holds {key_text}, but not as one version"));
    };
    for field in doc.keys(obj) {
        if !LONE_VERSION_FIELDS.contains(&field.as_str()) {
            return Err(format!(
                "its version of {key_text} has a field '{field}' that a new entry does not have"
            ));
        }
        if doc
            .get_all(obj, field.as_str())
            .map_err(|e| e.to_string())?
            .len()
            != 1
        {
            return Err(format!(
                "its version of {key_text} has conflicting values of '{field}'"
            ));
        }
    }
    let version = read_version(doc, section, key_text, obj, &[]).map_err(|e| e.to_string())?;
    match ResourceKey::of(&version.resource) {
        Some(own) if own == key => Ok((key, version)),
        Some(own) => Err(format!("it holds {own} under the key {key_text}")),
        None => Err(format!(
            "it holds, under {key_text}, a resource without a valid resourceType and id"
        )),
    }
}

fn write_version(
    doc: &mut AutoCommit,
    section: Section,
    key: &str,
    json: &str,
    stamp: Stamp<'_>,
    replaces: &[String],
    marks: &[(&str, &str)],
) -> Result<ObjId> {
    let err = am(section);
    let obj = doc.put_object(ROOT, key, ObjType::Map).map_err(&err)?;
    doc.put(&obj, "resource", json).map_err(&err)?;
    doc.put(&obj, "author", stamp.author.id.as_str())
        .map_err(&err)?;
    doc.put(&obj, "author_name", stamp.author.name.as_str())
        .map_err(&err)?;
    doc.put(
        &obj,
        "time",
        ScalarValue::Timestamp(stamp.time.as_millisecond()),
    )
    .map_err(&err)?;
    if !replaces.is_empty() {
        let list = doc
            .put_object(&obj, "replaces", ObjType::List)
            .map_err(&err)?;
        for (index, reference) in replaces.iter().enumerate() {
            doc.insert(&list, index, reference.as_str()).map_err(&err)?;
        }
    }
    // `kept`, `import`, `removed`: string fields a version carries when they apply.
    for (field, value) in marks {
        doc.put(&obj, *field, *value).map_err(&err)?;
    }
    Ok(obj)
}

/// Whether the version object `obj` removes its resource (it has a `removed` field).
fn is_removal(doc: &AutoCommit, obj: &ObjId) -> bool {
    doc.get(obj, "removed").is_ok_and(|v| v.is_some())
}

/// Whether a key can belong to a section's document: `AuditEvent`s live in `audit`, and nothing
/// else does. A key on the wrong side is ignored wherever the record is read: an audit entry
/// under another resource's key (which, before entries were checked on opening, could reach a
/// compaction) must not become a version of that resource. Automerge keeps it; phr never shows
/// it. Deliberately not [`place`]: its sensitivity rules may change between versions, and
/// reading by them would hide resources written under older rules.
fn belongs(section: Section, key: &str) -> bool {
    let audit_event = key
        .split_once('/')
        .is_some_and(|(resource_type, _)| resource_type == "AuditEvent");
    (section == Section::Audit) == audit_event
}

fn damaged(section: Section, key: &str, reason: impl Into<String>) -> RecordError {
    RecordError::Damaged {
        section,
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn version_field<'a>(
    doc: &'a AutoCommit,
    section: Section,
    key: &str,
    obj: &ObjId,
    field: &str,
) -> Result<AmValue<'a>> {
    doc.get(obj, field)
        .map_err(am(section))?
        .map(|(value, _)| value)
        .ok_or_else(|| damaged(section, key, format!("version has no '{field}'")))
}

fn version_field_str(
    doc: &AutoCommit,
    section: Section,
    key: &str,
    obj: &ObjId,
    field: &str,
) -> Result<String> {
    match version_field(doc, section, key, obj, field)? {
        AmValue::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(text) => Ok(text.to_string()),
            _ => Err(damaged(section, key, format!("'{field}' is not a string"))),
        },
        AmValue::Object(_) => Err(damaged(section, key, format!("'{field}' is not a string"))),
    }
}

fn parse_resource(section: Section, key: &str, json: &str) -> Result<Value> {
    serde_json::from_str(json)
        .map_err(|e| damaged(section, key, format!("stored JSON is invalid: {e}")))
}

fn read_version(
    doc: &AutoCommit,
    section: Section,
    key: &str,
    obj: &ObjId,
    unproven: &[Unproven],
) -> Result<Version> {
    let resource = parse_resource(
        section,
        key,
        &version_field_str(doc, section, key, obj, "resource")?,
    )?;
    let author = Author {
        id: version_field_str(doc, section, key, obj, "author")?,
        name: version_field_str(doc, section, key, obj, "author_name")?,
    };
    let time = match version_field(doc, section, key, obj, "time")? {
        AmValue::Scalar(s) => match s.as_ref() {
            ScalarValue::Timestamp(ms) => Timestamp::from_millisecond(*ms).ok(),
            _ => None,
        },
        AmValue::Object(_) => None,
    }
    .ok_or_else(|| damaged(section, key, "'time' is not a valid timestamp"))?;
    let mut replaces = Vec::new();
    if let Some((AmValue::Object(ObjType::List), list)) =
        doc.get(obj, "replaces").map_err(am(section))?
    {
        for index in 0..doc.length(&list) {
            if let Some((AmValue::Scalar(s), _)) = doc.get(&list, index).map_err(am(section))?
                && let ScalarValue::Str(text) = s.as_ref()
            {
                replaces.push(text.to_string());
            }
        }
    }
    let text = |field: &str| -> Result<Option<String>> {
        Ok(doc
            .get(obj, field)
            .map_err(am(section))?
            .and_then(|(value, _)| match value {
                AmValue::Scalar(s) => s.as_str().map(str::to_string),
                AmValue::Object(_) => None,
            }))
    };
    Ok(Version {
        section,
        id: obj.to_string(),
        resource,
        author,
        time,
        replaces,
        kept: text("kept")?,
        import: text("import")?,
        removed: text("removed")?,
        undoes: text("undoes")?,
        proven: proven_whole(doc, obj, unproven),
    })
}

/// Whether the version object `obj` and every value in it were written by the actor that made
/// it, in operations no entry of `unproven` names.
fn proven_whole(doc: &AutoCommit, obj: &ObjId, unproven: &[Unproven]) -> bool {
    let ObjId::Id(_, maker, _) = obj else {
        return false;
    };
    let named = |id: &ObjId| match id {
        ObjId::Id(counter, actor, _) => unproven
            .iter()
            .any(|u| u.actor == *actor && u.ops.contains(counter)),
        ObjId::Root => false,
    };
    if named(obj) {
        return false;
    }
    doc.keys(obj).all(|field| {
        doc.get_all(obj, field.as_str()).is_ok_and(|values| {
            values.iter().all(|(_, id)| match id {
                ObjId::Id(_, actor, _) => actor == maker && !named(id),
                ObjId::Root => false,
            })
        })
    })
}

mod exclude;
mod imports;
mod preview;

pub use exclude::Stranded;
pub use imports::{ImportSummary, Undone};
#[cfg(test)]
mod tests;
