//! How large a compaction's document may grow once Automerge inflates it.
//!
//! A compaction holds a section saved whole: one Automerge document chunk (type 0), perhaps
//! followed by change chunks. Automerge compresses a document column by column: each column's
//! spec has a DEFLATE bit, and `Automerge::load` inflates every such column whole into memory,
//! without a bound, before it checks anything else. A removed device's compaction stays stored
//! (restricted to what proofs prove), so its bytes reach every reader: a megabyte of one
//! repeated byte would inflate to a gigabyte at every load. So, as for changes, this module
//! walks the chunk's layout first, inflates each compressed column into a sink, counting, and
//! stops one byte past [`DOCUMENT_INFLATED_BYTES_MAX`] in all; only a document within it reaches
//! Automerge.
//!
//! The layout of a document chunk's body (Automerge's binary format): actors (a count, then
//! each a length and bytes), heads (a count, then 32 bytes each), the change columns' metadata
//! and the operation columns' metadata (each a count, then per column a spec and a length), the
//! change columns' data and the operation columns' data in that order, and head indices to the
//! end. Every count costs at least one byte of input per item, so walking it is bounded by its
//! length.

use std::collections::HashSet;

use automerge::{AutoCommit, Change, ChangeHash};

use super::{
    CHUNK_CHANGE, CHUNK_COMPRESSED_CHANGE, catch_automerge_panic, deflated_len, inflated_len,
    split_any_chunk, uleb128,
};

/// The most bytes a compaction's plaintext may take once Automerge has inflated its compressed
/// columns and changes: as much as one blob may hold at all. An honest compaction is a save of
/// a section, a few times larger inflated than stored (measured: the largest fixture's
/// section of 331 changes saves to 65 KiB); the largest honest `Changes` blob may inflate to a
/// quarter of this (`CHANGES_INFLATED_BYTES_MAX`), so a section holding several of them still
/// compacts.
pub const DOCUMENT_INFLATED_BYTES_MAX: usize = crate::blob::BLOB_BYTES_MAX;

/// The chunk type of a document.
const CHUNK_DOCUMENT: u8 = 0;

/// The DEFLATE bit of a column's spec.
const COLUMN_DEFLATE: u64 = 0b1000;

/// Checks that a compaction's plaintext is a document (and changes) whose compressed parts
/// inflate to at most [`DOCUMENT_INFLATED_BYTES_MAX`] in all. Errors say what is wrong, for the
/// user.
pub fn check_document(bytes: &[u8]) -> Result<(), String> {
    let mut inflated = 0;
    let mut rest = bytes;
    while !rest.is_empty() {
        let (chunk, after) = split_any_chunk(rest)?;
        let room = DOCUMENT_INFLATED_BYTES_MAX - inflated;
        inflated += match chunk.kind {
            CHUNK_DOCUMENT => document_len(chunk.body, room)?,
            CHUNK_CHANGE | CHUNK_COMPRESSED_CHANGE => inflated_len(&chunk, room)?,
            kind => {
                return Err(format!(
                    "it holds an Automerge chunk of type {kind}, where only a document and \
                     changes belong"
                ));
            }
        };
        if inflated > DOCUMENT_INFLATED_BYTES_MAX {
            return Err(format!(
                "its document inflates to more than {} MiB, the most a compaction may hold",
                DOCUMENT_INFLATED_BYTES_MAX / (1024 * 1024)
            ));
        }
        rest = after;
    }
    Ok(())
}

/// A compaction's plaintext as a document, once [`check_document`] passes; Automerge's errors
/// and panics become a sentence for the user.
pub fn load_document(bytes: &[u8]) -> Result<AutoCommit, String> {
    check_document(bytes)?;
    match catch_automerge_panic(|| AutoCommit::load(bytes)) {
        Ok(Ok(doc)) => Ok(doc),
        Ok(Err(e)) => Err(format!("Automerge cannot read its document: {e}")),
        Err(message) => Err(format!("Automerge failed on its document: {message}")),
    }
}

/// The hashes of every change a blob's plaintext holds, once [`check_document`] passes: those of
/// a compaction's document and those of the change chunks after it, or those of a changes blob
/// or an audit entry. The chunks after a document are changes its writer held but could not
/// apply, their dependencies missing (built on a void change it never received, say): Automerge
/// saves them beside the document, and a reader that loads it holds them too, waiting. A loaded
/// document does not list them, so they are read here chunk by chunk.
pub fn change_hashes(bytes: &[u8]) -> Result<HashSet<ChangeHash>, String> {
    check_document(bytes)?;
    let mut hashes = HashSet::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (chunk, after) = split_any_chunk(rest)?;
        if chunk.kind == CHUNK_DOCUMENT {
            let mut doc = match catch_automerge_panic(|| AutoCommit::load(chunk.bytes)) {
                Ok(Ok(doc)) => doc,
                Ok(Err(e)) => return Err(format!("Automerge cannot read its document: {e}")),
                Err(message) => return Err(format!("Automerge failed on its document: {message}")),
            };
            hashes.extend(doc.get_changes_meta(&[]).into_iter().map(|meta| meta.hash));
        } else {
            let change = Change::try_from(chunk.bytes).map_err(|e| e.to_string())?;
            hashes.insert(change.hash());
        }
        rest = after;
    }
    Ok(hashes)
}

/// The changes a document holds but cannot apply, their dependencies missing: those Automerge
/// saves beside the document chunk (`retain_orphans`), read by [`waiting_changes`].
pub fn queued_changes(doc: &mut AutoCommit) -> Vec<Change> {
    waiting_changes(&doc.save_with_options(automerge::SaveOptions {
        deflate: false,
        retain_orphans: true,
    }))
}

/// The changes a document saved beside itself (`save` of a document holding changes whose
/// dependencies are missing): the change chunks of `bytes` after its document chunk. For a
/// document this device saved itself; a chunk that does not parse is left out.
pub fn waiting_changes(bytes: &[u8]) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut rest = bytes;
    while let Ok((chunk, after)) = split_any_chunk(rest) {
        if chunk.kind != CHUNK_DOCUMENT
            && let Ok(change) = Change::try_from(chunk.bytes)
        {
            changes.push(change);
        }
        rest = after;
    }
    changes
}

/// How many bytes a document chunk's body takes with its compressed columns inflated, counting
/// no further than one byte past `limit`.
fn document_len(body: &[u8], limit: usize) -> Result<usize, String> {
    let mut input = Input(body);
    for _ in 0..input.number()? {
        let len = input.number()?;
        input.take(len)?;
    }
    for _ in 0..input.number()? {
        input.take(32)?;
    }
    let mut columns = Vec::new();
    for _metadata in ["changes", "operations"] {
        for _ in 0..input.number()? {
            columns.push((input.number()?, input.number()?));
        }
    }
    // The prefix and the head indices after the columns count as they are.
    let mut total = body.len();
    for (spec, len) in columns {
        let data = input.take(len)?;
        if spec & COLUMN_DEFLATE != 0 {
            total -= data.len();
            total += deflated_len(data, limit.saturating_sub(total))?;
            if total > limit {
                break;
            }
        }
    }
    Ok(total)
}

/// A document body being read from its start.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn number(&mut self) -> Result<u64, String> {
        let (value, used) = uleb128(self.0).ok_or("its document's layout is malformed")?;
        self.0 = &self.0[used..];
        Ok(value)
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], String> {
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= self.0.len())
            .ok_or("its document ends in the middle")?;
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use automerge::{ROOT, ReadDoc, transaction::Transactable};

    use super::*;

    /// A section saved whole, as a compaction holds it, with one note of `bytes` bytes of one
    /// repeated letter: Automerge compresses its value column.
    fn saved(bytes: usize) -> Vec<u8> {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "note", "a".repeat(bytes)).unwrap();
        doc.put(ROOT, "other", "b").unwrap();
        doc.commit();
        doc.save()
    }

    #[test]
    fn an_honest_save_passes_and_loads() {
        let bytes = saved(1024 * 1024);
        assert!(bytes.len() < 64 * 1024, "compressed: {} bytes", bytes.len());
        check_document(&bytes).unwrap();
        let doc = load_document(&bytes).unwrap();
        assert!(doc.get(ROOT, "other").unwrap().is_some());
        // A save followed by later changes, as a section's stored pieces may be.
        let mut more = AutoCommit::load(&bytes).unwrap();
        let heads = more.get_heads();
        more.put(ROOT, "later", "c").unwrap();
        more.commit();
        let with_changes = [bytes.clone(), more.save_after(&heads)].concat();
        assert!(load_document(&with_changes).is_ok());
        assert_eq!(check_document(&[]), Ok(()));
    }

    #[test]
    fn a_document_that_inflates_past_the_limit_is_refused_without_inflating_it_all() {
        let bomb = saved(DOCUMENT_INFLATED_BYTES_MAX + 1024 * 1024);
        assert!(bomb.len() < 1024 * 1024, "compressed: {} bytes", bomb.len());
        let started = Instant::now();
        let err = load_document(&bomb).unwrap_err();
        let took = started.elapsed();
        assert!(err.contains("more than 64 MiB"), "{err}");
        assert!(took < Duration::from_secs(2), "took {took:?}");
        // Just under the limit the same shape passes.
        check_document(&saved(DOCUMENT_INFLATED_BYTES_MAX - 1024 * 1024)).unwrap();
    }

    #[test]
    fn garbage_truncation_damage_and_other_chunk_types_are_refused() {
        let bytes = saved(10_000);
        assert!(check_document(b"not automerge").is_err());
        for cut in [bytes.len() - 1, 20, 9] {
            assert!(check_document(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bundle = bytes.clone();
        bundle[8] = 3;
        let err = check_document(&bundle).unwrap_err();
        assert!(err.contains("type 3"), "{err}");
    }
}
