//! A compaction's plaintext packed whole: one DEFLATE stream of Automerge change chunks.
//!
//! Automerge compresses a saved document column by column, but a change chunk only on its own
//! (chunk type 2), and a small change barely shrinks that way: the strings, actor ids and
//! layout that ten home readings repeat are written ten times. A run compaction
//! ([`crate::replica::Replica::form_run`]) holds the changes of several small changes blobs of
//! one author; packed together in one stream they take about a quarter of their bytes (ten
//! blood-pressure readings: 3,340 bytes of changes, 895 packed).
//!
//! The packed form is [`PACKED_MAGIC`] followed by a raw DEFLATE stream. Automerge's chunks
//! start with their own magic (`85 6f 4a 83`), so the two never look alike. Only a compaction's
//! plaintext may be packed; [`crate::blob::Blob::open`] unpacks it before anyone reads it, so
//! everything after sees change chunks as before. Unpacking inflates at most
//! [`PACKED_INFLATED_BYTES_MAX`]: a stream that inflates further is refused without being
//! inflated past that point, so a hand-made one cannot make a reader allocate more.

use std::io::Read;

use flate2::{Compression, bufread::DeflateDecoder, write::DeflateEncoder};

/// The bytes a packed plaintext starts with.
pub const PACKED_MAGIC: [u8; 4] = *b"phrZ";

/// The most bytes a packed plaintext may inflate to. A run compaction packs at most
/// [`crate::replica::RUN_PLAINTEXT_BYTES_MAX`] of changes.
pub const PACKED_INFLATED_BYTES_MAX: usize = 4 * 1024 * 1024;

const _: () = assert!(crate::replica::RUN_PLAINTEXT_BYTES_MAX <= PACKED_INFLATED_BYTES_MAX);

/// Packs `plaintext` (Automerge change chunks) into one DEFLATE stream behind [`PACKED_MAGIC`].
pub fn pack(plaintext: &[u8]) -> Vec<u8> {
    let mut encoder = DeflateEncoder::new(PACKED_MAGIC.to_vec(), Compression::best());
    std::io::Write::write_all(&mut encoder, plaintext).expect("DEFLATE into memory cannot fail");
    encoder.finish().expect("DEFLATE into memory cannot fail")
}

/// Whether `plaintext` is packed.
pub fn is_packed(plaintext: &[u8]) -> bool {
    plaintext.starts_with(&PACKED_MAGIC)
}

/// The change chunks a packed plaintext holds, if it inflates to at most
/// [`PACKED_INFLATED_BYTES_MAX`]. Errors say what is wrong, for the user.
pub fn unpack(plaintext: &[u8]) -> Result<Vec<u8>, String> {
    let stream = plaintext
        .strip_prefix(&PACKED_MAGIC)
        .ok_or("it is not packed")?;
    let limit = u64::try_from(PACKED_INFLATED_BYTES_MAX)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut out = Vec::new();
    DeflateDecoder::new(stream)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| "its packed changes do not inflate".to_string())?;
    if out.len() > PACKED_INFLATED_BYTES_MAX {
        return Err(format!(
            "its packed changes inflate to more than {} MiB, the most a run of changes may hold",
            PACKED_INFLATED_BYTES_MAX / (1024 * 1024)
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_and_is_told_apart_from_automerge_chunks() {
        let changes =
            b"\x85\x6f\x4a\x83 some change chunks, repeated, repeated, repeated".repeat(20);
        let packed = pack(&changes);
        assert!(is_packed(&packed));
        assert!(!is_packed(&changes));
        assert!(packed.len() < changes.len() / 4, "{} bytes", packed.len());
        assert_eq!(unpack(&packed).unwrap(), changes);
    }

    #[test]
    fn a_stream_that_inflates_past_the_limit_is_refused_and_a_broken_one_too() {
        // Eight MiB of zeros packs to a few KiB.
        let bomb = pack(&vec![0; 2 * PACKED_INFLATED_BYTES_MAX]);
        assert!(bomb.len() < 64 * 1024);
        let error = unpack(&bomb).unwrap_err();
        assert!(error.contains("more than 4 MiB"), "{error}");
        // Exactly at the limit is fine.
        assert_eq!(
            unpack(&pack(&vec![0; PACKED_INFLATED_BYTES_MAX]))
                .unwrap()
                .len(),
            PACKED_INFLATED_BYTES_MAX
        );
        let mut broken = pack(b"changes");
        broken.truncate(PACKED_MAGIC.len() + 2);
        broken.push(0xff);
        assert!(unpack(&broken).is_err());
    }
}
