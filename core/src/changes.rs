//! Who wrote the Automerge changes inside a blob, and how large they are.
//!
//! Automerge's own change author is unsigned: any writer can name any actor. A blob, though, is
//! signed, and every device writes as an actor whose first 16 bytes are its public key's
//! (`home::Device::actor`). So a reader checks that each change in a `Changes` blob was made by
//! the blob's signer; a grantee with write access cannot slip in changes that claim to be the
//! patient's. (Compaction blobs hold everyone's history and are written by owner devices only.)
//! An audit entry sealed to the owners is held to more than that: [`check_audit_entry`].
//!
//! The bytes are Automerge's storage format: a sequence of chunks, each `magic (4) | checksum
//! (4) | type (1) | length (unsigned LEB128) | body`. Types 1 (change) and 2 (compressed change)
//! are parsed by Automerge itself; a document chunk (type 0) or anything else is refused here.
//! phr writes type 1 (`save_after` stores a change's raw bytes), but Automerge reads type 2 as
//! well, and makes it itself when asked for a change's bytes (`Change::bytes`). The body of a
//! type-2 chunk is a raw DEFLATE stream of a type-1 body, which Automerge inflates whole into
//! memory, without a bound: a megabyte can inflate to gigabytes. So this module inflates it
//! first, counting and discarding the bytes, and stops one byte past the limit
//! ([`CHANGES_INFLATED_BYTES_MAX`], [`AUDIT_ENTRY_BYTES_MAX`]); a type-1 body counts as it is.
//! Only chunks within the limit reach Automerge. (A change chunk's columns are never compressed
//! themselves: Automerge refuses them.) Automerge parses each change then, and before any is
//! applied, `actor_table` checks that its operations name only actors its header lists.

use std::io::{self, Read};

use automerge::{ActorId, Change};
use flate2::bufread::DeflateDecoder;

use crate::keys::PeerId;

mod actor_table;
mod audit_entry;
mod document;
pub mod packed;
pub mod provenance;

#[cfg(test)]
pub(crate) use actor_table::with_valid_checksum;

pub use audit_entry::check_audit_entry;
pub use document::{
    DOCUMENT_INFLATED_BYTES_MAX, change_hashes, check_document, load_document, queued_changes,
    waiting_changes,
};

/// The most bytes the changes of one `Changes` blob may inflate to, in all (a type-1 chunk's
/// body counts as it is): what one blob may cost a reader in memory, whatever its compressed
/// size. Honest blobs are mostly small: an owner device stores a save of 64 KiB or more as a
/// compaction instead (`COMPACT_SAVE_BYTES_MIN`), and a person types at most `NOTE_BYTES_MAX`.
/// The one large honest `Changes` blob is a grantee's import, about as large as the FHIR JSON it
/// imports; a quarter of `BLOB_BYTES_MAX` leaves it room for a large record.
pub const CHANGES_INFLATED_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The most bytes the one change of an audit entry sealed to the owners may inflate to. An
/// honest entry (`audit::audit_event` through `record::lone_change`) is about 1.5 KiB; this
/// leaves room for long descriptions and many sections, while an owner device that opens
/// thousands of entries it cannot otherwise vouch for spends little on each.
pub const AUDIT_ENTRY_BYTES_MAX: usize = 64 * 1024;

const _: () = assert!(AUDIT_ENTRY_BYTES_MAX <= CHANGES_INFLATED_BYTES_MAX);
const _: () = assert!(CHANGES_INFLATED_BYTES_MAX <= crate::blob::BLOB_BYTES_MAX);

/// The bytes every Automerge chunk starts with.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Magic, checksum and type: the fixed part of a chunk header, before the body's length.
const CHUNK_HEADER_FIXED_BYTES: usize = 9;

/// The chunk type of a change.
const CHUNK_CHANGE: u8 = 1;

/// The chunk type of a change whose body is DEFLATE-compressed.
const CHUNK_COMPRESSED_CHANGE: u8 = 2;

/// How many bytes of an actor id come from the device's public key.
pub const ACTOR_KEY_BYTES: usize = 16;

/// Whether `actor` is one a device with this PeerId writes as.
pub fn actor_of(peer: &PeerId, actor: &ActorId) -> bool {
    actor.to_bytes().get(..ACTOR_KEY_BYTES) == Some(&peer.public_key()[..ACTOR_KEY_BYTES])
}

/// Runs Automerge on changes that others wrote, and returns its panic's message if it panics.
/// Automerge 0.12 panics on some changes it parses without complaint (found by the `changes` fuzz
/// target: an operation on an object the document does not hold, "Missing from Index"), where it
/// should return an error; a reader must refuse such a change, not crash, and not again at every
/// load. A document Automerge panicked in may be half-changed: callers throw it away.
pub(crate) fn catch_automerge_panic<T>(run: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|message| message.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "with no message".into())
    })
}

/// The actor of every change in `bytes`, in order, if its changes inflate to at most
/// [`CHANGES_INFLATED_BYTES_MAX`]. Errors say what is wrong, for the user.
pub fn change_actors(bytes: &[u8]) -> Result<Vec<ActorId>, String> {
    Ok(changes(bytes, BLOB_CHANGES)?
        .iter()
        .map(|change| change.actor_id().clone())
        .collect())
}

/// The heads of the changes in `bytes`: those no other change in them depends on, sorted. What
/// the author of a blob signs in its [`crate::blob::AuthorshipProof`].
pub fn change_heads(bytes: &[u8]) -> Result<Vec<automerge::ChangeHash>, String> {
    let all = changes(bytes, BLOB_CHANGES)?;
    Ok(heads_among(&all))
}

fn heads_among(all: &[Change]) -> Vec<automerge::ChangeHash> {
    let deps: std::collections::BTreeSet<_> =
        all.iter().flat_map(|c| c.deps().iter().copied()).collect();
    let mut heads: Vec<_> = all
        .iter()
        .map(Change::hash)
        .filter(|hash| !deps.contains(hash))
        .collect();
    heads.sort();
    heads.dedup();
    heads
}

/// Checks that the changes in a `Changes` blob's plaintext inflate to at most
/// [`CHANGES_INFLATED_BYTES_MAX`] and were all made by its signer, and returns their hashes
/// and their heads.
pub fn check_authorship_hashes(
    signer: &PeerId,
    plaintext: &[u8],
) -> Result<(Vec<automerge::ChangeHash>, Vec<automerge::ChangeHash>), String> {
    let all = changes(plaintext, BLOB_CHANGES)?;
    for change in &all {
        check_actor(signer, change.actor_id())?;
    }
    Ok((all.iter().map(Change::hash).collect(), heads_among(&all)))
}

/// How much the changes of one plaintext may inflate to, and what it is, for the user.
#[derive(Clone, Copy, Debug)]
struct Limit {
    inflated_bytes_max: usize,
    /// Ends "the most ... may hold".
    holder: &'static str,
}

const BLOB_CHANGES: Limit = Limit {
    inflated_bytes_max: CHANGES_INFLATED_BYTES_MAX,
    holder: "one blob's changes",
};

const AUDIT_ENTRY: Limit = Limit {
    inflated_bytes_max: AUDIT_ENTRY_BYTES_MAX,
    holder: "an audit entry",
};

/// Every change in `bytes`, in order, parsed by Automerge only once all of them together are
/// known to inflate to at most the limit.
fn changes(bytes: &[u8], limit: Limit) -> Result<Vec<Change>, String> {
    let mut chunks = Vec::new();
    let mut inflated = 0;
    let mut rest = bytes;
    while !rest.is_empty() {
        let (chunk, after) = split_chunk(rest)?;
        inflated += inflated_len(&chunk, limit.inflated_bytes_max - inflated)?;
        if inflated > limit.inflated_bytes_max {
            let max = limit.inflated_bytes_max;
            let size = match max % (1024 * 1024) {
                0 => format!("{} MiB", max / (1024 * 1024)),
                _ => format!("{} KiB", max / 1024),
            };
            return Err(format!(
                "its changes inflate to more than {size}, the most {} may hold",
                limit.holder
            ));
        }
        chunks.push(chunk);
        rest = after;
    }
    chunks
        .into_iter()
        .map(|chunk| {
            let change = Change::try_from(chunk.bytes).map_err(|e| e.to_string())?;
            // Automerge leaves this to its `unwrap`s, which panic: see `actor_table`.
            actor_table::check_actor_indices(&change)?;
            Ok(change)
        })
        .collect()
}

/// One change chunk as it lies in the bytes.
struct Chunk<'a> {
    /// The whole chunk, header included: what Automerge parses.
    bytes: &'a [u8],
    /// [`CHUNK_CHANGE`] or [`CHUNK_COMPRESSED_CHANGE`].
    kind: u8,
    /// The bytes after the header: a change, or a DEFLATE stream of one.
    body: &'a [u8],
}

/// The change chunk `bytes` starts with, and the bytes after it.
fn split_chunk(bytes: &[u8]) -> Result<(Chunk<'_>, &[u8]), String> {
    let (chunk, rest) = split_any_chunk(bytes)?;
    if !matches!(chunk.kind, CHUNK_CHANGE | CHUNK_COMPRESSED_CHANGE) {
        return Err(format!(
            "it holds an Automerge chunk of type {}, where only changes belong",
            chunk.kind
        ));
    }
    Ok((chunk, rest))
}

/// The Automerge chunk `bytes` starts with, of any type, and the bytes after it.
fn split_any_chunk(bytes: &[u8]) -> Result<(Chunk<'_>, &[u8]), String> {
    let header = bytes
        .get(..CHUNK_HEADER_FIXED_BYTES)
        .ok_or("it ends in the middle of a change header")?;
    if header[..4] != CHUNK_MAGIC {
        return Err("it holds something other than Automerge changes".into());
    }
    let kind = header[8];
    let (length, leb_bytes) =
        uleb128(&bytes[CHUNK_HEADER_FIXED_BYTES..]).ok_or("a change length is malformed")?;
    let start = CHUNK_HEADER_FIXED_BYTES + leb_bytes;
    let end = usize::try_from(length)
        .ok()
        .and_then(|n| n.checked_add(start))
        .filter(|end| *end <= bytes.len())
        .ok_or("it ends in the middle of a change")?;
    let chunk = Chunk {
        bytes: &bytes[..end],
        kind,
        body: &bytes[start..end],
    };
    Ok((chunk, &bytes[end..]))
}

/// How many bytes the chunk's change takes inflated, counting no further than one byte past
/// `limit`. A compressed body is inflated as Automerge inflates it (raw DEFLATE, to the end of
/// the stream), into a sink: nothing is kept, and nothing past that byte is made.
fn inflated_len(chunk: &Chunk<'_>, limit: usize) -> Result<usize, String> {
    if chunk.kind != CHUNK_COMPRESSED_CHANGE {
        return Ok(chunk.body.len());
    }
    deflated_len(chunk.body, limit)
}

/// How many bytes a raw DEFLATE stream inflates to, counting no further than one byte past
/// `limit`, into a sink.
fn deflated_len(stream: &[u8], limit: usize) -> Result<usize, String> {
    let limit = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut inflated = DeflateDecoder::new(stream).take(limit);
    let len = io::copy(&mut inflated, &mut io::sink())
        .map_err(|_| "it holds compressed data that does not inflate".to_string())?;
    Ok(usize::try_from(len).unwrap_or(usize::MAX))
}

/// An unsigned LEB128 number and how many bytes it took (at most 10).
fn uleb128(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Checks that the changes in a `Changes` blob's plaintext inflate to at most
/// [`CHANGES_INFLATED_BYTES_MAX`] and were all made by its signer.
pub fn check_authorship(signer: &PeerId, plaintext: &[u8]) -> Result<(), String> {
    for actor in change_actors(plaintext)? {
        check_actor(signer, &actor)?;
    }
    Ok(())
}

fn check_actor(signer: &PeerId, actor: &ActorId) -> Result<(), String> {
    if actor_of(signer, actor) {
        return Ok(());
    }
    let bytes = actor.to_bytes();
    Err(format!(
        "it holds a change by another actor ({}) than its signer",
        crate::keys::hex(&bytes[..bytes.len().min(8)])
    ))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use automerge::{AutoCommit, ROOT, transaction::Transactable};

    use super::*;
    use crate::keys::SigningKey;

    /// One change by `actor` that puts `bytes` bytes of one repeated letter, as phr saves it
    /// (`save_after`: uncompressed, chunk type 1).
    fn large_change(actor: ActorId, bytes: usize) -> Vec<u8> {
        let mut doc = AutoCommit::new().with_actor(actor);
        doc.put(ROOT, "note", "a".repeat(bytes)).unwrap();
        doc.commit();
        doc.save_after(&[])
    }

    /// The same change chunks compressed (type 2), as Automerge makes them when asked for a
    /// change's bytes, and as anyone may send them.
    fn compressed(changes: &[u8]) -> Vec<u8> {
        let mut doc = AutoCommit::new();
        doc.load_incremental(changes).unwrap();
        let mut out = Vec::new();
        for mut change in doc.get_changes(&[]) {
            let bytes = change.bytes();
            assert_eq!(bytes[8], CHUNK_COMPRESSED_CHANGE, "Automerge compressed it");
            out.extend_from_slice(&bytes);
        }
        out
    }

    fn actor_for(peer: &PeerId) -> ActorId {
        let mut bytes = peer.public_key()[..ACTOR_KEY_BYTES].to_vec();
        bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        ActorId::from(bytes)
    }

    /// Changes as `Home::save` takes them: everything after what was saved before.
    fn edits(actor: ActorId, after: &mut AutoCommit, values: &[&str]) -> Vec<u8> {
        let heads = after.get_heads();
        let mut doc = after.fork().with_actor(actor);
        for (i, value) in values.iter().enumerate() {
            // Values of 100 bytes, as in a small resource.
            doc.put(ROOT, format!("k{i}"), value.repeat(100)).unwrap();
            doc.commit();
        }
        let bytes = doc.save_after(&heads);
        after.merge(&mut doc).unwrap();
        bytes
    }

    #[test]
    fn changes_by_the_signer_pass_and_changes_by_another_actor_do_not() {
        let patient = SigningKey::generate().peer_id();
        let gp = SigningKey::generate().peer_id();
        let mut doc = AutoCommit::new();
        let by_patient = edits(actor_for(&patient), &mut doc, &["a", "b", "c"]);
        assert_eq!(change_actors(&by_patient).unwrap().len(), 3);
        check_authorship(&patient, &by_patient).unwrap();
        let err = check_authorship(&gp, &by_patient).unwrap_err();
        assert!(err.contains("another actor"), "{err}");
        // A GP's blob that smuggles one change made as the patient's actor.
        let by_gp = edits(actor_for(&gp), &mut doc, &["d"]);
        let forged = edits(actor_for(&patient), &mut doc, &["e"]);
        let mixed = [by_gp.clone(), forged].concat();
        check_authorship(&gp, &by_gp).unwrap();
        assert!(check_authorship(&gp, &mixed).is_err());
    }

    #[test]
    fn documents_truncation_and_garbage_are_refused() {
        let patient = SigningKey::generate().peer_id();
        let mut doc = AutoCommit::new().with_actor(actor_for(&patient));
        doc.put(ROOT, "k", "v").unwrap();
        let document = doc.save();
        assert!(change_actors(&document).unwrap_err().contains("type 0"));
        let mut other = AutoCommit::new();
        let changes = edits(actor_for(&patient), &mut other, &["a"]);
        assert!(change_actors(&changes[..changes.len() - 1]).is_err());
        assert!(change_actors(b"not automerge at all").is_err());
        assert_eq!(change_actors(&[]).unwrap(), Vec::<ActorId>::new());
    }

    #[test]
    fn a_change_that_inflates_past_the_limit_is_refused_without_inflating_it_all() {
        let patient = SigningKey::generate().peer_id();
        let bomb = compressed(&large_change(actor_for(&patient), 20_000_000));
        assert!(bomb.len() < 64 * 1024, "{} bytes compressed", bomb.len());
        let started = Instant::now();
        let err = check_authorship(&patient, &bomb).unwrap_err();
        let took = started.elapsed();
        assert!(err.contains("more than 16 MiB"), "{err}");
        assert!(took < Duration::from_millis(500), "took {took:?}");
        // Just under the limit, the same change passes, compressed or not.
        let large = large_change(actor_for(&patient), CHANGES_INFLATED_BYTES_MAX - 1024);
        check_authorship(&patient, &large).unwrap();
        check_authorship(&patient, &compressed(&large)).unwrap();
    }

    #[test]
    fn changes_count_toward_the_limit_together_and_uncompressed_ones_by_their_length() {
        let patient = SigningKey::generate().peer_id();
        let half = large_change(actor_for(&patient), 9 * 1024 * 1024);
        assert_eq!(half[8], CHUNK_CHANGE, "phr saves changes uncompressed");
        check_authorship(&patient, &half).unwrap();
        let other_half = large_change(actor_for(&patient), 9 * 1024 * 1024 + 1);
        for both in [
            [half.clone(), other_half.clone()],
            [half.clone(), compressed(&other_half)],
        ] {
            let err = check_authorship(&patient, &both.concat()).unwrap_err();
            assert!(err.contains("more than 16 MiB"), "{err}");
        }
        let over = large_change(actor_for(&patient), CHANGES_INFLATED_BYTES_MAX);
        assert!(check_authorship(&patient, &over).is_err());
    }

    #[test]
    fn a_compressed_change_that_does_not_inflate_is_refused() {
        let patient = SigningKey::generate().peer_id();
        let mut damaged = compressed(&large_change(actor_for(&patient), 10_000));
        let (chunk, _) = split_chunk(&damaged).unwrap();
        let body_start = damaged.len() - chunk.body.len();
        damaged[body_start] = 0xff; // a DEFLATE block of the reserved type 3
        let err = check_authorship(&patient, &damaged).unwrap_err();
        assert!(err.contains("does not inflate"), "{err}");
    }
}
