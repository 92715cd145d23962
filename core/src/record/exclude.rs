//! Taking void changes out of a loaded section, and the reader's own writes that built on them.
//!
//! A change can turn void after it was loaded and built on: a withdrawn party's change that an
//! owner device took in before the withdrawal reached it (held for the patient since), or one
//! folded into an owner's compaction (`consent::change_pins`). Automerge cannot apply a change
//! whose dependencies it lacks, so every change built on a void one goes with it. The reader's
//! own versions among those are not lost: [`Record::exclude`] returns the current ones, and the
//! replica writes them again, as new changes that do not depend on the void ones.

use std::collections::{HashMap, HashSet};

use automerge::{
    ActorId, AutoCommit, Change, ChangeHash, ExpandedChange, ObjId, ObjType, ROOT, ReadDoc,
    ScalarValue,
    legacy::{Key, ObjectId, OpId, OpType},
};
use jiff::Timestamp;
use serde_json::Value;

use super::{Author, Record, Stamp, belongs};
use crate::{
    changes::{
        catch_automerge_panic,
        provenance::{ChangeGraph, same_device},
    },
    fhir::reference::ResourceKey,
    section::Section,
};

/// A current version of the reader's own that an excluded change made: written again by
/// [`Record::write_again`].
#[derive(Clone, Debug, PartialEq)]
pub struct Stranded {
    /// The resource's key.
    pub key: ResourceKey,
    /// The resource as the reader wrote it.
    pub resource: Value,
    /// Who the version says wrote it (the reader's device).
    pub author: Author,
    /// When.
    pub time: Timestamp,
    /// The heads of the state its change was built on, less the void changes: written again
    /// there, it supersedes what the original superseded and nothing else, so a version
    /// written concurrently stays beside it as a conflict. `None` when that past is not known
    /// (a change that waited on a dependency this node dropped): written over the current
    /// version instead, unless that is in conflict.
    pub past: Option<Vec<ChangeHash>>,
    /// The versions it superseded (`section:object`), as it recorded them: for a waiting
    /// change, whose past is not known, the rewrite supersedes those of them still present
    /// and nothing else.
    pub replaces: Vec<String>,
    /// The original version (`section:object`): a later stranded version that superseded it
    /// is written again on its rewrite, so the history keeps both in order.
    pub made: Option<String>,
}

impl Record {
    /// Loads more of a section's changes (a held blob's, to see what was built on it). A piece
    /// Automerge cannot read, or panics on, is left out and `false` returned; the document is
    /// then loaded again from what it held.
    pub fn load_more(&mut self, section: Section, piece: &[u8]) -> bool {
        let doc = self.doc_mut(section);
        let before = doc.save();
        let loaded = catch_automerge_panic(|| doc.load_incremental(piece)).is_ok_and(|r| r.is_ok());
        if !loaded && let Ok(restored) = AutoCommit::load(&before) {
            let actor = doc.get_actor().clone();
            *doc = restored.with_actor(actor);
        }
        loaded
    }

    /// Rebuilds `section` without the changes `excluded` names (the `void` changes and
    /// everything built on them: [`ChangeGraph::with_descendants`]); returns the versions that
    /// `own`, the reader's device, made in excluded changes and that are to be written again,
    /// oldest first: each version nothing outlives, as `own_versions_to_write_again` says.
    pub fn exclude(
        &mut self,
        section: Section,
        void: &HashSet<ChangeHash>,
        excluded: &HashSet<ChangeHash>,
        graph: &ChangeGraph,
        own: &ActorId,
    ) -> Vec<Stranded> {
        let mine = graph.ops_by(own, excluded);
        let doc = self.doc_mut(section);
        let stranded = if mine.is_empty() {
            Vec::new()
        } else {
            own_versions_to_write_again(doc, section, void, excluded, graph, own)
        };
        // The excluded changes keep their actor's sequence numbers on every node that holds
        // them: a new change under the same actor would reuse one. Write as a fresh actor of
        // the same device instead (its first 16 bytes still name the device).
        let actor = if mine.is_empty() {
            doc.get_actor().clone()
        } else {
            fresh_actor(own)
        };
        // Changes waiting for a missing dependency are not among the applied ones: they stay,
        // waiting, or a compaction made after this would stand for blobs whose changes it lacks.
        let waiting = if doc.get_missing_deps(&[]).is_empty() {
            Vec::new()
        } else {
            crate::changes::waiting_changes(&doc.save())
        };
        let kept: Vec<_> = doc
            .get_changes(&[])
            .into_iter()
            .chain(waiting)
            .filter(|change| !excluded.contains(&change.hash()))
            .collect();
        let mut rebuilt = AutoCommit::new().with_actor(actor);
        // These changes loaded once already, in this very document.
        let _ = catch_automerge_panic(|| rebuilt.apply_changes(kept));
        let heads = rebuilt.get_heads();
        *doc = rebuilt;
        self.saved.insert(section, heads);
        stranded
    }

    /// Writes the reader's stranded versions again ([`Record::exclude`]), as its own new
    /// changes, unless the record now holds the same resource, or was written again already:
    /// its history holds the same version (resource, author and time); returns how many were
    /// written. Save the record to keep them.
    ///
    /// A version whose past is known is written on that past (a fork of the section at those
    /// heads, under a fresh actor of this device, merged back): it supersedes exactly what the
    /// original did, and a version written concurrently by another party, which the original
    /// did not see, is in conflict with it, shown to a person, as it would have been had
    /// nothing been void. One whose past is not known is written over the current version,
    /// unless that is in conflict.
    ///
    /// A stranded version stays current in the document it came from, whatever was written
    /// again since (a new change cannot supersede an excluded one), so each load finds it
    /// stranded again: the history check keeps it from being written again each time.
    pub fn write_again(&mut self, stranded: &[Stranded]) -> usize {
        let mut written = 0;
        // Original version (`section:object`) -> the version that stands for it now.
        let mut rewritten: HashMap<String, String> = HashMap::new();
        for version in stranded {
            let superseded = version
                .made
                .as_ref()
                .is_some_and(|made| stranded.iter().any(|later| later.replaces.contains(made)));
            if !superseded
                && self.get(&version.key).ok().flatten().as_ref() == Some(&version.resource)
            {
                continue;
            }
            let again = self.history(&version.key).ok().and_then(|history| {
                history.into_iter().find(|v| {
                    v.resource == version.resource
                        && v.author == version.author
                        && v.time == version.time
                })
            });
            if let Some(again) = again {
                if let Some(made) = &version.made {
                    rewritten.insert(made.clone(), again.reference());
                }
                continue;
            }
            let stamp = Stamp {
                author: &version.author,
                time: version.time,
            };
            let message = "written again: it had built on a withdrawn party's change";
            let done = match &version.past {
                Some(past) => {
                    // On the rewrite of the version of its own it superseded, if any.
                    let mut past = past.clone();
                    past.extend(
                        version
                            .replaces
                            .iter()
                            .filter_map(|replaced| rewritten.get(replaced))
                            .filter_map(|reference| self.change_of_version(reference)),
                    );
                    self.write_on(stamp, &version.resource, &past, message)
                }
                None => {
                    let put = self.put(stamp, &version.resource).is_ok();
                    if put {
                        self.commit(stamp, message);
                    }
                    put.then(|| self.reference_of_current(&version.key, &version.author))
                        .flatten()
                }
            };
            if let Some(reference) = done {
                written += 1;
                if let Some(made) = &version.made {
                    rewritten.insert(made.clone(), reference);
                }
            }
        }
        written
    }

    /// The change that made the version `reference` (`section:counter@actor`), if held.
    fn change_of_version(&mut self, reference: &str) -> Option<ChangeHash> {
        let (section, obj) = reference.split_once(':')?;
        let section: Section = section.parse().ok()?;
        let (counter, actor) = obj.split_once('@')?;
        let actor = ActorId::from(crate::keys::unhex(actor)?);
        ChangeGraph::of(self.doc_mut(section)).change_of_op(&actor, counter.parse().ok()?)
    }

    /// The reference of the current version of `key` by `author`, if there is one.
    fn reference_of_current(&self, key: &ResourceKey, author: &Author) -> Option<String> {
        let versions = self.all_current(key).ok()?;
        versions
            .into_iter()
            .find(|v| v.author == *author)
            .map(|v| v.reference())
    }

    /// Writes `resource` as a new version made on the state at `past` (a fork of its section
    /// at those heads, under a fresh actor of this device), and merges that change in: it
    /// supersedes only the versions visible at `past`. Returns the new version's reference
    /// (`section:object`); `None` if the section cannot fork there or the write fails.
    fn write_on(
        &mut self,
        stamp: Stamp<'_>,
        resource: &Value,
        past: &[ChangeHash],
        message: &str,
    ) -> Option<String> {
        let key = ResourceKey::of(resource)?;
        let key_text = key.to_string();
        let section = super::place(resource);
        let doc = self.doc_mut(section);
        let actor = fresh_actor(doc.get_actor());
        let mut fork = catch_automerge_panic(|| doc.fork_at(past))
            .ok()?
            .ok()?
            .with_actor(actor.clone());
        let replaces: Vec<String> = fork
            .get_all(ROOT, key_text.as_str())
            .ok()?
            .into_iter()
            .map(|(_, obj)| format!("{section}:{obj}"))
            .collect();
        let json = serde_json::to_string(resource).expect("a JSON value always serialises");
        super::write_version(&mut fork, section, &key_text, &json, stamp, &replaces, &[]).ok()?;
        fork.commit_with(
            automerge::transaction::CommitOptions::default()
                .with_time(stamp.time.as_second())
                .with_message(message.to_string()),
        );
        let change = fork.get_last_local_change()?;
        let made = fork
            .get_all(ROOT, key_text.as_str())
            .ok()?
            .into_iter()
            .find_map(|(_, obj)| match &obj {
                ObjId::Id(_, by, _) if *by == actor => Some(format!("{section}:{obj}")),
                _ => None,
            })?;
        catch_automerge_panic(|| doc.apply_changes([change]))
            .is_ok_and(|r| r.is_ok())
            .then_some(made)
    }

    /// The changes of `section` that wait, unapplied, for a dependency this document does not
    /// hold (empty if none does).
    pub fn queued(&mut self, section: Section) -> Vec<Change> {
        let doc = self.doc_mut(section);
        if doc.get_missing_deps(&[]).is_empty() {
            return Vec::new();
        }
        crate::changes::queued_changes(doc)
    }

    /// The reader's current versions made in `waiting` (changes of `section` that will not
    /// apply here: built on a void change this node held once and dropped since, when a
    /// `Close` made its blob void), to be written again like those [`Record::exclude`] returns.
    /// Automerge keeps such changes in its queue for good, so without this the versions would
    /// be neither shown nor written again. A version is one map object under the resource's
    /// key, made whole in one change; one that another change in `waiting` replaced is not
    /// current. If the reader made any of `waiting`, it writes as a fresh actor from now on:
    /// those changes keep their sequence numbers wherever they are held.
    pub fn strand_queued(
        &mut self,
        section: Section,
        own: &ActorId,
        waiting: &[Change],
    ) -> Vec<Stranded> {
        let waiting: Vec<ExpandedChange> = causal_order(waiting)
            .into_iter()
            .map(Change::decode)
            .collect();
        if !waiting.iter().any(|c| same_device(&c.actor_id, own)) {
            return Vec::new();
        }
        let replaced: HashSet<OpId> = waiting
            .iter()
            .flat_map(|change| &change.operations)
            .filter(|op| op.obj == ObjectId::Root)
            .flat_map(|op| op.pred.iter().cloned())
            .collect();
        let mut stranded = Vec::new();
        let mut current = HashSet::new();
        for change in waiting.iter().filter(|c| same_device(&c.actor_id, own)) {
            for (index, op) in change.operations.iter().enumerate() {
                let (OpType::Make(ObjType::Map), ObjectId::Root, Key::Map(key)) =
                    (&op.action, &op.obj, &op.key)
                else {
                    continue;
                };
                let counter = change.start_op.get() + index as u64;
                let id = OpId(counter, change.actor_id.clone());
                if !belongs(section, key) {
                    continue;
                }
                if let Some(mut version) = version_made(change, key, &id) {
                    let made = format!("{section}:{counter}@{}", change.actor_id);
                    if !replaced.contains(&id) {
                        current.insert(made.clone());
                    }
                    version.made = Some(made);
                    stranded.push(version);
                }
            }
        }
        keep_current_and_their_own_past(&mut stranded, current);
        // Its past is not known (it waits on a change this node dropped): written again on the
        // changes that made the versions it superseded and are still here, so it supersedes
        // those and stands beside anything else, in conflict for a person to resolve, rather
        // than over it.
        let doc = self.doc_mut(section);
        let graph = ChangeGraph::of(doc);
        for version in &mut stranded {
            let past = version
                .replaces
                .iter()
                .filter_map(|reference| {
                    let (in_section, obj) = reference.split_once(':')?;
                    if in_section != section.as_str() {
                        return None;
                    }
                    let (counter, actor) = obj.split_once('@')?;
                    let actor = ActorId::from(crate::keys::unhex(actor)?);
                    graph.change_of_op(&actor, counter.parse().ok()?)
                })
                .collect();
            version.past = Some(past);
        }
        doc.set_actor(fresh_actor(own));
        stranded
    }

    /// Hands this device's own changes `hashes` (found only in a compaction whose author was
    /// removed since) to storage again with the next save, as a blob of its own: the compaction
    /// may have replaced the blob they first came in everywhere, and others refuse it now.
    pub fn reissue(&mut self, section: Section, hashes: &[ChangeHash]) {
        let doc = self.doc_mut(section);
        let mut bytes = Vec::new();
        for hash in hashes {
            if let Some(change) = doc.get_change_by_hash(hash) {
                bytes.extend_from_slice(change.raw_bytes());
            }
        }
        if !bytes.is_empty() {
            self.reissue.entry(section).or_default().extend(bytes);
        }
    }

    /// Whether the record holds changes not handed to storage yet.
    pub fn has_unsaved(&mut self) -> bool {
        if self.reissue.values().any(|bytes| !bytes.is_empty()) {
            return true;
        }
        let saved = &self.saved;
        self.docs.iter_mut().any(|(section, doc)| {
            let heads = doc.get_heads();
            saved.get(section).map(Vec::as_slice).unwrap_or(&[]) != heads.as_slice()
        })
    }
}

/// An actor of the same device as `own` (its first 16 bytes) that no change has used yet.
pub(super) fn fresh_actor(own: &ActorId) -> ActorId {
    let mut bytes = own.to_bytes().to_vec();
    bytes.truncate(crate::changes::ACTOR_KEY_BYTES);
    bytes.extend_from_slice(&crate::keys::random_array::<8>());
    ActorId::from(bytes)
}

/// The version made as the map object `id` under `key` in `change`, read from its operations.
fn version_made(change: &ExpandedChange, key: &str, id: &OpId) -> Option<Stranded> {
    let field = |name: &str| {
        change
            .operations
            .iter()
            .rev()
            .find_map(|op| match (&op.obj, &op.key, &op.action) {
                (ObjectId::Id(obj), Key::Map(field), OpType::Put(value))
                    if obj == id && field.as_str() == name =>
                {
                    Some(value.clone())
                }
                _ => None,
            })
    };
    let text = |name: &str| match field(name) {
        Some(ScalarValue::Str(text)) => Some(text.to_string()),
        _ => None,
    };
    let Some(ScalarValue::Timestamp(ms)) = field("time") else {
        return None;
    };
    // The versions it superseded: the items of its `replaces` list, made in the same change.
    let list = change
        .operations
        .iter()
        .enumerate()
        .find_map(|(index, op)| match (&op.obj, &op.key, &op.action) {
            (ObjectId::Id(obj), Key::Map(field), OpType::Make(ObjType::List))
                if obj == id && field.as_str() == "replaces" =>
            {
                Some(OpId(
                    change.start_op.get() + index as u64,
                    change.actor_id.clone(),
                ))
            }
            _ => None,
        });
    let replaces: Vec<String> = list
        .map(|list| {
            change
                .operations
                .iter()
                .filter(|op| op.obj == ObjectId::Id(list.clone()))
                .filter_map(|op| match &op.action {
                    OpType::Put(ScalarValue::Str(text)) => Some(text.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Stranded {
        key: key.parse().ok()?,
        resource: serde_json::from_str(&text("resource")?).ok()?,
        author: Author {
            id: text("author")?,
            name: text("author_name")?,
        },
        time: Timestamp::from_millisecond(ms).ok()?,
        past: None,
        replaces,
        made: None,
    })
}

/// The versions the reader's device (`own`) made in the `excluded` changes of `section` that
/// are to be written again, oldest first: each one that nothing outlives it. A version of
/// another's that supersedes it blocks it unless that version is itself `void` (a withdrawn
/// party's, which goes for good: the version it superseded is the last honest one again); one of
/// its own blocks it unless that one is written again too (so the history keeps the whole chain,
/// each on the rewrite of the one before). A version that another party's honest version
/// superseded, built on a void change as well, is not written again: that party writes its own
/// again, on a past without it.
fn own_versions_to_write_again(
    doc: &mut AutoCommit,
    section: Section,
    void: &HashSet<ChangeHash>,
    excluded: &HashSet<ChangeHash>,
    graph: &ChangeGraph,
    own: &ActorId,
) -> Vec<Stranded> {
    // Every version made in an excluded change, by anyone, in causal order (Automerge returns
    // a document's changes so), with whether its change is void and whether it is the reader's.
    let mut versions: Vec<(Stranded, bool, bool)> = Vec::new();
    for change in doc.get_changes(&[]) {
        if !excluded.contains(&change.hash()) {
            continue;
        }
        let is_void = void.contains(&change.hash());
        let mine = same_device(change.actor_id(), own);
        let change = change.decode();
        for (index, op) in change.operations.iter().enumerate() {
            let (OpType::Make(ObjType::Map), ObjectId::Root, Key::Map(key)) =
                (&op.action, &op.obj, &op.key)
            else {
                continue;
            };
            if !belongs(section, key) {
                continue;
            }
            let counter = change.start_op.get() + index as u64;
            let id = OpId(counter, change.actor_id.clone());
            let Some(mut version) = version_made(&change, key, &id) else {
                continue;
            };
            if mine {
                version.past = graph.kept_past_of_op(&change.actor_id, counter, excluded);
            }
            version.made = Some(format!("{section}:{counter}@{}", change.actor_id));
            versions.push((version, is_void, mine));
        }
    }
    // Newest first, so that whether a superseding version is written again is known when the
    // versions it superseded are judged.
    let mut kept: HashSet<String> = HashSet::new();
    let mut blocked: HashSet<String> = HashSet::new();
    for (version, is_void, mine) in versions.iter().rev() {
        let made = version.made.clone().unwrap_or_default();
        let outlived = blocked.contains(&made);
        if *mine && !outlived {
            kept.insert(made.clone());
        }
        // What this version superseded: outlived by it, unless it goes (void), or unless it
        // is the reader's and written again (then the chain is written again with it).
        let goes = *is_void && !*mine;
        let rewritten = *mine && kept.contains(&made);
        for replaced in &version.replaces {
            if !goes && !rewritten {
                blocked.insert(replaced.clone());
            }
        }
    }
    versions
        .into_iter()
        .filter(|(version, _, mine)| {
            *mine && version.made.as_ref().is_some_and(|m| kept.contains(m))
        })
        .map(|(version, _, _)| version)
        .collect()
}

/// Keeps, of `versions` (oldest first), those whose version is `current`, and each one that a
/// kept one superseded: the reader's own chain of versions under each current one.
fn keep_current_and_their_own_past(versions: &mut Vec<Stranded>, current: HashSet<String>) {
    let mut kept: HashSet<String> = versions
        .iter()
        .filter_map(|version| version.made.clone())
        .filter(|made| current.contains(made))
        .collect();
    // Newest first, so a kept version's predecessors are reached in one pass.
    for version in versions.iter().rev() {
        if version
            .made
            .as_ref()
            .is_some_and(|made| kept.contains(made))
        {
            kept.extend(version.replaces.iter().cloned());
        }
    }
    versions.retain(|version| {
        version
            .made
            .as_ref()
            .is_some_and(|made| kept.contains(made))
    });
}

/// `changes` ordered so that each comes after those of its dependencies among them.
fn causal_order(changes: &[Change]) -> Vec<&Change> {
    let among: HashSet<ChangeHash> = changes.iter().map(Change::hash).collect();
    let mut done: HashSet<ChangeHash> = HashSet::new();
    let mut out = Vec::with_capacity(changes.len());
    while out.len() < changes.len() {
        let before = out.len();
        for change in changes {
            if !done.contains(&change.hash())
                && change
                    .deps()
                    .iter()
                    .all(|dep| done.contains(dep) || !among.contains(dep))
            {
                done.insert(change.hash());
                out.push(change);
            }
        }
        // A cycle cannot happen between hashes; stop rather than spin if it did.
        if out.len() == before {
            out.extend(changes.iter().filter(|c| !done.contains(&c.hash())));
            break;
        }
    }
    out
}
