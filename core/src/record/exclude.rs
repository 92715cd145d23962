//! Taking void changes out of a loaded section, and the reader's own writes that built on them.
//!
//! A change can turn void after it was loaded and built on: a withdrawn party's change that an
//! owner device took in before the withdrawal reached it (held for the patient since), or one
//! folded into an owner's compaction (`consent::change_pins`). Automerge cannot apply a change
//! whose dependencies it lacks, so every change built on a void one goes with it. The reader's
//! own versions among those are not lost: [`Record::exclude`] returns the current ones, and the
//! replica writes them again, as new changes that do not depend on the void ones.

use std::collections::HashSet;

use automerge::{
    ActorId, AutoCommit, Change, ChangeHash, ExpandedChange, ObjId, ObjType, ROOT, ReadDoc,
    ScalarValue,
    legacy::{Key, ObjectId, OpId, OpType},
};
use jiff::Timestamp;
use serde_json::Value;

use super::{Author, Record, Stamp, belongs, read_version};
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

    /// Rebuilds `section` without the changes `excluded` names (a void change and everything
    /// built on it: [`ChangeGraph::with_descendants`]); returns the current versions that
    /// `own`, the reader's actor, made in excluded changes, to be written again.
    pub fn exclude(
        &mut self,
        section: Section,
        excluded: &HashSet<ChangeHash>,
        graph: &ChangeGraph,
        own: &ActorId,
    ) -> Vec<Stranded> {
        let mine = graph.ops_by(own, excluded);
        let doc = self.doc_mut(section);
        let mut stranded = Vec::new();
        if !mine.is_empty() {
            let keys: Vec<String> = doc
                .map_range(ROOT, ..)
                .map(|item| item.key.to_string())
                .collect();
            for key in keys.iter().filter(|key| belongs(section, key)) {
                let Ok(values) = doc.get_all(ROOT, key.as_str()) else {
                    continue;
                };
                for (_, obj) in values {
                    let ObjId::Id(counter, actor, _) = &obj else {
                        continue;
                    };
                    let made = |(by, ops): &(ActorId, std::ops::RangeInclusive<u64>)| {
                        by == actor && ops.contains(counter)
                    };
                    if !mine.iter().any(made) {
                        continue;
                    }
                    let (Ok(version), Ok(parsed)) =
                        (read_version(doc, section, key, &obj, &[]), key.parse())
                    else {
                        continue;
                    };
                    stranded.push(Stranded {
                        key: parsed,
                        resource: version.resource,
                        author: version.author,
                        time: version.time,
                        past: graph.kept_past_of_op(actor, *counter, excluded),
                        replaces: Vec::new(),
                    });
                }
            }
        }
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
        for version in stranded {
            if self.get(&version.key).ok().flatten().as_ref() == Some(&version.resource) {
                continue;
            }
            let again = self.history(&version.key).is_ok_and(|history| {
                history.iter().any(|v| {
                    v.resource == version.resource
                        && v.author == version.author
                        && v.time == version.time
                })
            });
            if again {
                continue;
            }
            let stamp = Stamp {
                author: &version.author,
                time: version.time,
            };
            let message = "written again: it had built on a withdrawn party's change";
            let done = match &version.past {
                Some(past) => self.write_on(stamp, &version.resource, past, message),
                None => {
                    let put = self.put(stamp, &version.resource).is_ok();
                    if put {
                        self.commit(stamp, message);
                    }
                    put
                }
            };
            written += usize::from(done);
        }
        written
    }

    /// Writes `resource` as a new version made on the state at `past` (a fork of its section
    /// at those heads, under a fresh actor of this device), and merges that change in: it
    /// supersedes only the versions visible at `past`. `false` if the section cannot fork
    /// there or the write fails.
    fn write_on(
        &mut self,
        stamp: Stamp<'_>,
        resource: &Value,
        past: &[ChangeHash],
        message: &str,
    ) -> bool {
        let Some(key) = ResourceKey::of(resource) else {
            return false;
        };
        let key_text = key.to_string();
        let section = super::place(resource);
        let doc = self.doc_mut(section);
        let actor = fresh_actor(doc.get_actor());
        let Ok(fork) = catch_automerge_panic(|| doc.fork_at(past)) else {
            return false;
        };
        let Ok(fork) = fork else {
            return false;
        };
        let mut fork = fork.with_actor(actor);
        let Ok(replaces) = fork.get_all(ROOT, key_text.as_str()).map(|values| {
            values
                .into_iter()
                .map(|(_, obj)| format!("{section}:{obj}"))
                .collect::<Vec<String>>()
        }) else {
            return false;
        };
        let json = serde_json::to_string(resource).expect("a JSON value always serialises");
        if super::write_version(&mut fork, section, &key_text, &json, stamp, &replaces, &[])
            .is_err()
        {
            return false;
        }
        fork.commit_with(
            automerge::transaction::CommitOptions::default()
                .with_time(stamp.time.as_second())
                .with_message(message.to_string()),
        );
        let Some(change) = fork.get_last_local_change() else {
            return false;
        };
        catch_automerge_panic(|| doc.apply_changes([change])).is_ok_and(|r| r.is_ok())
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
        let waiting: Vec<ExpandedChange> = waiting.iter().map(Change::decode).collect();
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
        for change in waiting.iter().filter(|c| same_device(&c.actor_id, own)) {
            for (index, op) in change.operations.iter().enumerate() {
                let (OpType::Make(ObjType::Map), ObjectId::Root, Key::Map(key)) =
                    (&op.action, &op.obj, &op.key)
                else {
                    continue;
                };
                let id = OpId(
                    change.start_op.get() + index as u64,
                    change.actor_id.clone(),
                );
                if !belongs(section, key) || replaced.contains(&id) {
                    continue;
                }
                if let Some(version) = version_made(change, key, &id) {
                    stranded.push(version);
                }
            }
        }
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
    })
}
