//! That every actor a change's operations name is one its header lists.
//!
//! A change chunk lists its actors once, in its header (its own actor first, then the others it
//! refers to), and its operations name actors by their index in that list: the object an
//! operation writes to, the list element it inserts after, the earlier operations it overwrites.
//! Automerge checks none of these indices when it reads a change, and looks each one up with an
//! `unwrap` when it applies, loads or expands the change: an index past the end of the list
//! panics (found by the `changes` fuzz target, docs/FUZZING.md). A writer could then crash every
//! reader of the record, at every load. So each change is checked here, from its bytes as
//! Automerge parsed them, before any of it is applied.
//!
//! The layout (Automerge's binary format, "change chunk"): after the chunk header, the
//! dependencies, actor, sequence number, start op, time, message and other actors, then the
//! column metadata (a count, then each column's specification and length) and the columns'
//! data, in that order. A specification's low three bits are its type; type 1 columns hold actor
//! indices, run-length encoded: a signed LEB128 count, then one value repeated that many times
//! (count > 0), that many literal values (count < 0), or a count of nulls (count = 0); each value
//! an unsigned LEB128.

use automerge::Change;

use super::{CHUNK_HEADER_FIXED_BYTES, uleb128};

/// A column's type, in the low bits of its specification.
const COLUMN_TYPE_MASK: u32 = 0b111;

/// The type of columns that hold actor indices.
const COLUMN_TYPE_ACTOR: u32 = 1;

/// The specification bit of a DEFLATE-compressed column (which Automerge refuses in a change).
const COLUMN_DEFLATE: u32 = 0b1000;

/// Checks that every actor index in `change`'s operations is within its list of actors.
pub(super) fn check_actor_indices(change: &Change) -> Result<(), String> {
    let actors = 1 + change.other_actor_ids().len() as u64;
    let malformed = || "it holds a change whose columns are malformed".to_string();
    let mut bytes = Bytes(change.raw_bytes());
    bytes.skip(CHUNK_HEADER_FIXED_BYTES).ok_or_else(malformed)?;
    bytes.uleb().ok_or_else(malformed)?; // the body's length
    let columns = bytes.columns().ok_or_else(malformed)?;
    for (spec, data) in columns {
        if spec & COLUMN_DEFLATE != 0 {
            return Err(malformed());
        }
        if spec & COLUMN_TYPE_MASK != COLUMN_TYPE_ACTOR {
            continue;
        }
        let largest = largest_value(data).ok_or_else(malformed)?;
        if largest.is_some_and(|index| index >= actors) {
            return Err(format!(
                "it holds a change whose operations name actor {} of the {actors} it lists",
                largest.unwrap_or_default() + 1
            ));
        }
    }
    Ok(())
}

/// A cursor over a change chunk's bytes.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn skip(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    fn uleb(&mut self) -> Option<u64> {
        let (value, len) = uleb128(self.0)?;
        self.0 = &self.0[len..];
        Some(value)
    }

    fn len_prefixed(&mut self, each: usize) -> Option<()> {
        let count = usize::try_from(self.uleb()?).ok()?;
        self.skip(count.checked_mul(each)?).map(drop)
    }

    /// Skips a signed LEB128 number.
    fn sleb(&mut self) -> Option<i64> {
        let mut value: i64 = 0;
        for (i, byte) in self.0.iter().enumerate().take(10) {
            value |= i64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
            if byte & 0x80 == 0 {
                let shift = 7 * (i as u32 + 1);
                if shift < 64 && byte & 0x40 != 0 {
                    value |= -1i64 << shift;
                }
                self.0 = &self.0[i + 1..];
                return Some(value);
            }
        }
        None
    }

    /// From the start of a change body: every column's specification and data.
    fn columns(mut self) -> Option<Vec<(u32, &'a [u8])>> {
        self.len_prefixed(32)?; // dependencies, 32-byte hashes
        let actor_len = usize::try_from(self.uleb()?).ok()?;
        self.skip(actor_len)?;
        self.uleb()?; // sequence number
        self.uleb()?; // start op
        self.sleb()?; // time
        let message_len = usize::try_from(self.uleb()?).ok()?;
        self.skip(message_len)?;
        for _ in 0..self.uleb()? {
            let len = usize::try_from(self.uleb()?).ok()?;
            self.skip(len)?; // another actor
        }
        let count = self.uleb()?;
        let mut specs = Vec::new();
        for _ in 0..count {
            let spec = u32::try_from(self.uleb()?).ok()?;
            let len = usize::try_from(self.uleb()?).ok()?;
            specs.push((spec, len));
        }
        specs
            .into_iter()
            .map(|(spec, len)| Some((spec, self.skip(len)?)))
            .collect()
    }
}

/// The largest value in a run-length encoded column of unsigned numbers (`None` if it holds
/// none), or `None` outside if the column is malformed.
fn largest_value(data: &[u8]) -> Option<Option<u64>> {
    let mut bytes = Bytes(data);
    let mut largest = None;
    while !bytes.0.is_empty() {
        match bytes.sleb()? {
            0 => {
                bytes.uleb()?; // a run of nulls
            }
            run if run > 0 => largest = largest.max(Some(bytes.uleb()?)),
            literals => {
                for _ in 0..literals.unsigned_abs() {
                    largest = largest.max(Some(bytes.uleb()?));
                }
            }
        }
    }
    Some(largest)
}

/// `chunk` (one uncompressed change) with its dependencies and its other actors cut from its
/// header, everything else as it was: its operations that named another actor then name an
/// index past the end of its actor table. The checksum is made to match, as a forger would.
#[cfg(test)]
pub(crate) fn without_deps_or_other_actors(chunk: &[u8]) -> Vec<u8> {
    let mut bytes = Bytes(chunk);
    bytes.skip(CHUNK_HEADER_FIXED_BYTES).unwrap();
    bytes.uleb().unwrap();
    let body = bytes.0;
    bytes.len_prefixed(32).unwrap();
    let after_deps = body.len() - bytes.0.len();
    let actor_len = bytes.uleb().unwrap() as usize;
    bytes.skip(actor_len).unwrap();
    bytes.uleb().unwrap();
    bytes.uleb().unwrap();
    bytes.sleb().unwrap();
    let message_len = bytes.uleb().unwrap() as usize;
    bytes.skip(message_len).unwrap();
    let before_others = body.len() - bytes.0.len();
    let others = bytes.uleb().unwrap();
    assert!(others > 0, "the change names other actors");
    for _ in 0..others {
        let len = bytes.uleb().unwrap() as usize;
        bytes.skip(len).unwrap();
    }
    let mut kept = vec![0];
    kept.extend(&body[after_deps..before_others]);
    kept.push(0);
    kept.extend(bytes.0);
    let mut out = chunk[..CHUNK_HEADER_FIXED_BYTES].to_vec();
    let mut len = kept.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend(kept);
    with_valid_checksum(&out)
}

/// `chunk` (one change chunk) with the checksum Automerge checks on load made to match.
#[cfg(test)]
pub(crate) fn with_valid_checksum(chunk: &[u8]) -> Vec<u8> {
    let mut out = chunk.to_vec();
    let hash = ring::digest::digest(&ring::digest::SHA256, &out[8..]);
    out[4..8].copy_from_slice(&hash.as_ref()[..4]);
    out
}

#[cfg(test)]
mod tests {
    use automerge::{AutoCommit, ObjType, ROOT, transaction::Transactable};

    use super::*;
    use crate::{changes::check_authorship, keys::SigningKey};

    /// The change compressed (chunk type 2), as Automerge makes it when asked for its bytes;
    /// without applying it, which would panic for a forged one.
    fn compressed(bytes: &[u8]) -> Vec<u8> {
        let mut change = Change::try_from(bytes).unwrap();
        let bytes = change.bytes().into_owned();
        assert_eq!(bytes[8], crate::changes::CHUNK_COMPRESSED_CHANGE);
        bytes
    }

    /// A change by `actor` that writes into a map another actor made (large enough for
    /// Automerge to compress).
    fn change_into_anothers_map(actor: automerge::ActorId) -> Vec<u8> {
        let mut doc = AutoCommit::new();
        let map = doc.put_object(ROOT, "Patient/1", ObjType::Map).unwrap();
        doc.put(&map, "resource", "{}").unwrap();
        doc.commit();
        let heads = doc.get_heads();
        let mut doc = doc.fork().with_actor(actor);
        doc.put(&map, "resource", "a".repeat(1000)).unwrap();
        doc.commit();
        doc.save_after(&heads)
    }

    #[test]
    fn honest_changes_pass_compressed_or_not() {
        let peer = SigningKey::generate().peer_id();
        let bytes = change_into_anothers_map(crate::audit::entry_actor(&peer));
        let change = Change::try_from(&bytes[..]).unwrap();
        assert_eq!(change.other_actor_ids().len(), 1);
        check_actor_indices(&change).unwrap();
        let compressed = compressed(&bytes);
        check_actor_indices(&Change::try_from(&compressed[..]).unwrap()).unwrap();
    }

    /// Found by the `changes` fuzz target (through an audit entry): a change whose operations
    /// name an actor its header does not list made Automerge panic on `apply_changes`, `load`
    /// and `load_incremental` alike. A grantee with write access could have sent it in a
    /// `Changes` blob, and every reader would have crashed each time it loaded the section.
    #[test]
    fn a_changes_blob_naming_an_actor_it_does_not_list_is_refused_before_automerge_reads_it() {
        let peer = SigningKey::generate().peer_id();
        let forged = without_deps_or_other_actors(&change_into_anothers_map(
            crate::audit::entry_actor(&peer),
        ));
        let change = Change::try_from(&forged[..]).unwrap();
        assert!(change.deps().is_empty() && change.other_actor_ids().is_empty());
        let err = check_authorship(&peer, &forged).unwrap_err();
        assert!(err.contains("name actor 2 of the 1 it lists"), "{err}");
        let err = check_authorship(&peer, &compressed(&forged)).unwrap_err();
        assert!(err.contains("name actor 2 of the 1 it lists"), "{err}");
    }

    #[test]
    fn run_length_columns_are_read_for_their_largest_value() {
        // A run of three 2s, two nulls, literals 5 and 1.
        assert_eq!(largest_value(&[3, 2, 0, 2, 0x7e, 5, 1]), Some(Some(5)));
        assert_eq!(largest_value(&[0, 9]), Some(None));
        assert_eq!(largest_value(&[]), Some(None));
        // A literal run that ends early.
        assert_eq!(largest_value(&[0x7d, 1]), None);
    }
}
