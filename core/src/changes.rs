//! Who wrote the Automerge changes inside a blob.
//!
//! Automerge's own change author is unsigned: any writer can name any actor. A blob, though, is
//! signed, and every device writes as an actor whose first 16 bytes are its public key's
//! (`home::Device::actor`). So a reader checks that each change in a `Changes` blob was made by
//! the blob's signer; a grantee with write access cannot slip in changes that claim to be the
//! patient's. (Compaction blobs hold everyone's history and are written by owner devices only.)
//!
//! The bytes are Automerge's storage format: a sequence of chunks, each `magic (4) | checksum
//! (4) | type (1) | length (unsigned LEB128) | body`. Types 1 (change) and 2 (compressed change)
//! are parsed by Automerge itself; a document chunk (type 0) or anything else is refused here.

use automerge::{ActorId, Change};

use crate::keys::PeerId;

/// The bytes every Automerge chunk starts with.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// How many bytes of an actor id come from the device's public key.
pub const ACTOR_KEY_BYTES: usize = 16;

/// Whether `actor` is one a device with this PeerId writes as.
pub fn actor_of(peer: &PeerId, actor: &ActorId) -> bool {
    actor.to_bytes().get(..ACTOR_KEY_BYTES) == Some(&peer.public_key()[..ACTOR_KEY_BYTES])
}

/// The actor of every change in `bytes`, in order. Errors say what is wrong, for the user.
pub fn change_actors(bytes: &[u8]) -> Result<Vec<ActorId>, String> {
    let mut actors = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let header = rest
            .get(..9)
            .ok_or("it ends in the middle of a change header")?;
        if header[..4] != CHUNK_MAGIC {
            return Err("it holds something other than Automerge changes".into());
        }
        if !matches!(header[8], 1 | 2) {
            return Err(format!(
                "it holds an Automerge chunk of type {}, where only changes belong",
                header[8]
            ));
        }
        let (length, leb_bytes) = uleb128(&rest[9..]).ok_or("a change length is malformed")?;
        let end = usize::try_from(length)
            .ok()
            .and_then(|n| n.checked_add(9 + leb_bytes))
            .filter(|end| *end <= rest.len())
            .ok_or("it ends in the middle of a change")?;
        let change = Change::try_from(&rest[..end]).map_err(|e| e.to_string())?;
        actors.push(change.actor_id().clone());
        rest = &rest[end..];
    }
    Ok(actors)
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

/// Checks that every change in a `Changes` blob's plaintext was made by its signer.
pub fn check_authorship(signer: &PeerId, plaintext: &[u8]) -> Result<(), String> {
    for actor in change_actors(plaintext)? {
        if !actor_of(signer, &actor) {
            return Err(format!(
                "it holds a change by another actor ({}) than its signer",
                crate::keys::hex(&actor.to_bytes()[..actor.to_bytes().len().min(8)])
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use automerge::{AutoCommit, ROOT, transaction::Transactable};

    use super::*;
    use crate::keys::SigningKey;

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
            // Big values make Automerge compress the change chunk (type 2).
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
}
