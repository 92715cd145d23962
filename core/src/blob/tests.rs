use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::keys::sha256;

/// Byte offsets in the layout, for tests that forge or damage blobs.
const VERSION_AT: usize = 4;
const KIND_AT: usize = 5;
const SECTION_AT: usize = 6;
const RESERVED_AT: usize = 7;
const EPOCH_AT: usize = 24;
const KEY_ID_AT: usize = 28;
const HEAD_COUNT_AT: usize = 84;

/// A writer of one section: its key and its signing key.
struct Writer {
    key: SectionKey,
    author: SigningKey,
}

impl Writer {
    fn new() -> Self {
        Writer {
            key: SectionKey::generate(),
            author: SigningKey::generate(),
        }
    }

    fn header(&self, kind: BlobKind) -> BlobHeader {
        BlobHeader {
            record: RecordId([7; 16]),
            section: Section::Clinical,
            kind,
            epoch: 3,
            key_id: self.key.id(),
            author: self.author.peer_id(),
            time_ms: 1_700_000_000_000,
            ledger_heads: vec![OpId([1; 32]), OpId([2; 32])],
            replaces: Vec::new(),
            proofs: Vec::new(),
        }
    }

    fn seal(&self, header: BlobHeader, plaintext: &[u8]) -> Blob {
        Blob::seal(header, &self.key, plaintext, &self.author).unwrap()
    }

    /// A small compaction blob: two heads, two replaced ids, a short text.
    fn small(&self) -> Blob {
        let mut header = self.header(BlobKind::Compaction);
        header.replaces = vec![BlobId([3; 32]), BlobId([4; 32])];
        self.seal(header, b"Encounter/1: GP review, blood pressure 128/82")
    }

    /// Signs edited bytes again, as a malicious (or buggy) author could.
    fn resign(&self, bytes: &mut [u8]) {
        let body = bytes.len() - SIGNATURE_BYTES;
        let digest = sha256(&[&bytes[..body]]);
        let signature = self
            .author
            .sign(&[SIGNATURE_CONTEXT.as_slice(), &digest].concat());
        bytes[body..].copy_from_slice(&signature.0);
    }
}

fn malformed(bytes: Vec<u8>) -> Malformation {
    match Blob::decode(bytes) {
        Err(BlobError::Malformed(malformation)) => malformation,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

/// Decoding then opening damaged bytes must fail with a typed error, never return plaintext.
fn assert_refused(bytes: Vec<u8>, key: &SectionKey, what: &str) {
    match Blob::decode(bytes) {
        Err(BlobError::Malformed(_) | BlobError::BadSignature { .. }) => {}
        Err(other) => panic!("{what}: decode failed with an unexpected error: {other}"),
        Ok(blob) => match blob.open(key) {
            Err(BlobError::Damaged { .. } | BlobError::WrongKey { .. }) => {}
            other => panic!("{what}: damaged blob opened: {other:?}"),
        },
    }
}

fn header_strategy() -> impl Strategy<Value = (BlobKind, u8, [u8; 16], u32, i64, usize, usize)> {
    (
        prop_oneof![Just(BlobKind::Changes), Just(BlobKind::Compaction)],
        0..6u8,
        any::<[u8; 16]>(),
        any::<u32>(),
        any::<i64>(),
        0..=BLOB_LEDGER_HEADS_MAX,
        0..200usize,
    )
}

fn ids(count: usize, seed: u8) -> Vec<[u8; 32]> {
    (0..count)
        .map(|i| sha256(&[&[seed], &i.to_le_bytes()]))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn seal_open_and_decode_round_trip(
        (kind, section, record, epoch, time_ms, heads, replaces) in header_strategy(),
        plaintext in prop::collection::vec(any::<u8>(), 0..64 * 1024),
        key in any::<[u8; 32]>(),
        seed in any::<[u8; 32]>(),
    ) {
        let key = SectionKey::from_bytes(&key);
        let author = SigningKey::from_seed(&seed);
        let replaces = if kind == BlobKind::Changes { 0 } else { replaces };
        let header = BlobHeader {
            record: RecordId(record),
            section: Section::from_code(section).unwrap(),
            kind,
            epoch,
            key_id: key.id(),
            author: author.peer_id(),
            time_ms,
            ledger_heads: ids(heads, 1).into_iter().map(OpId).collect(),
            replaces: ids(replaces, 2).into_iter().map(BlobId).collect(),
            proofs: Vec::new(),
        };
        let blob = Blob::seal(header.clone(), &key, &plaintext, &author).unwrap();
        prop_assert_eq!(blob.header(), &header);
        prop_assert_eq!(blob.len(), sealed_len(heads, replaces, plaintext.len()));
        prop_assert_eq!(blob.id(), BlobId(sha256(&[blob.bytes()])));
        prop_assert_eq!(&blob.open(&key).unwrap(), &plaintext);

        let id = blob.id();
        let decoded = Blob::decode(blob.into_bytes()).unwrap();
        prop_assert_eq!(decoded.header(), &header);
        prop_assert_eq!(decoded.id(), id);
        prop_assert_eq!(decoded.open(&key).unwrap(), plaintext);
    }

    #[test]
    fn any_flipped_byte_is_refused(
        plaintext in prop::collection::vec(any::<u8>(), 0..2048),
        position in any::<prop::sample::Index>(),
        mask in 1..=255u8,
    ) {
        let writer = Writer::new();
        let blob = writer.seal(writer.header(BlobKind::Changes), &plaintext);
        let mut bytes = blob.into_bytes();
        let at = position.index(bytes.len());
        bytes[at] ^= mask;
        assert_refused(bytes, &writer.key, &format!("byte {at} ^ {mask:#04x}"));
    }

    #[test]
    fn random_bytes_are_refused_without_panicking(
        bytes in prop::collection::vec(any::<u8>(), 0..1024),
        magic in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if magic && bytes.len() >= 8 {
            bytes[..8].copy_from_slice(b"PHRB\x01\x00\x00\x00");
        }
        prop_assert!(Blob::decode(bytes).is_err());
    }
}

#[test]
fn every_flipped_byte_of_a_small_blob_is_refused() {
    let writer = Writer::new();
    let bytes = writer.small().into_bytes();
    for at in 0..bytes.len() {
        for mask in [0x01, 0x80, 0xff] {
            let mut damaged = bytes.clone();
            damaged[at] ^= mask;
            assert_refused(damaged, &writer.key, &format!("byte {at} ^ {mask:#04x}"));
        }
    }
}

#[test]
fn opening_with_another_sections_key_is_wrong_key() {
    let writer = Writer::new();
    let blob = writer.small();
    let other = SectionKey::generate();
    assert_eq!(
        blob.open(&other),
        Err(BlobError::WrongKey {
            id: blob.id(),
            section: Section::Clinical,
            epoch: 3,
            blob_key: writer.key.id(),
            given: other.id(),
        })
    );
}

#[test]
fn a_forged_key_id_fails_authentication_under_the_named_key() {
    // The author seals under one key but names another in the header, and signs that.
    let writer = Writer::new();
    let named = SectionKey::generate();
    let mut bytes = writer.small().into_bytes();
    bytes[KEY_ID_AT..KEY_ID_AT + 16].copy_from_slice(&named.id().0);
    writer.resign(&mut bytes);
    let blob = Blob::decode(bytes).expect("the signature is valid");
    assert_eq!(blob.header().key_id, named.id());
    assert_eq!(
        blob.open(&named),
        Err(BlobError::Damaged {
            id: blob.id(),
            author: writer.author.peer_id(),
            key: named.id(),
        })
    );
    assert!(matches!(
        blob.open(&writer.key),
        Err(BlobError::WrongKey { .. })
    ));
}

#[test]
fn the_header_is_authenticated_by_the_aead_too() {
    // Re-signing an edited header passes decode, but the AEAD's associated data catches it.
    let writer = Writer::new();
    let mut bytes = writer.small().into_bytes();
    bytes[EPOCH_AT] ^= 1;
    writer.resign(&mut bytes);
    let blob = Blob::decode(bytes).expect("the signature is valid");
    assert_eq!(blob.header().epoch, 2);
    assert!(matches!(
        blob.open(&writer.key),
        Err(BlobError::Damaged { .. })
    ));
}

#[test]
fn every_truncation_is_refused_as_truncated() {
    let writer = Writer::new();
    let bytes = writer.small().into_bytes();
    for len in 0..bytes.len() {
        match malformed(bytes[..len].to_vec()) {
            Malformation::Truncated { len: got, needed } => {
                assert_eq!(got, len);
                assert!(needed > len, "cut at {len}: needed {needed}");
            }
            other => panic!("cut at {len}: expected Truncated, got {other:?}"),
        }
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let writer = Writer::new();
    let mut bytes = writer.small().into_bytes();
    bytes.extend_from_slice(b"xyz");
    assert_eq!(malformed(bytes), Malformation::TrailingBytes { count: 3 });
}

#[test]
fn oversized_bytes_are_refused_before_they_are_read() {
    // `vec![0; n]` is a lazily mapped zeroed allocation: this costs no real 64 MiB.
    let huge = vec![0u8; BLOB_BYTES_MAX + 1];
    assert_eq!(
        malformed(huge),
        Malformation::TooLarge {
            len: BLOB_BYTES_MAX + 1
        }
    );
}

#[test]
fn a_ciphertext_length_inconsistent_with_the_size_is_refused() {
    let writer = Writer::new();
    let bytes = writer
        .seal(writer.header(BlobKind::Changes), b"x")
        .into_bytes();
    let length_at = bytes.len() - SIGNATURE_BYTES - (1 + TAG_BYTES) - CIPHERTEXT_LEN_BYTES;
    let with_length = |len: u32| {
        let mut forged = bytes.clone();
        forged[length_at..length_at + 4].copy_from_slice(&len.to_le_bytes());
        forged
    };
    assert_eq!(
        malformed(with_length(u32::MAX)),
        Malformation::Truncated {
            len: bytes.len(),
            needed: length_at + 4 + u32::MAX as usize + SIGNATURE_BYTES,
        }
    );
    assert_eq!(
        malformed(with_length(TAG_BYTES as u32)),
        Malformation::TrailingBytes { count: 1 }
    );
    assert_eq!(
        malformed(with_length(TAG_BYTES as u32 - 1)),
        Malformation::CiphertextTooShort { len: 15 }
    );
}

#[test]
fn unknown_magic_version_kind_section_and_reserved_are_refused() {
    let writer = Writer::new();
    let bytes = writer.small().into_bytes();
    let with = |at: usize, value: u8| {
        let mut forged = bytes.clone();
        forged[at] = value;
        forged
    };
    assert_eq!(malformed(with(0, b'X')), Malformation::BadMagic);
    assert_eq!(
        malformed(with(VERSION_AT, 3)),
        Malformation::UnsupportedVersion(3)
    );
    // A version 2 blob relabelled version 1 (its proofs count read as the nonce): refused.
    assert!(matches!(
        malformed(with(VERSION_AT, 1)),
        Malformation::Truncated { .. }
    ));
    assert_eq!(malformed(with(KIND_AT, 3)), Malformation::UnknownKind(3));
    // A compaction relabelled as sealed to the owners lists replaced blobs: refused as well.
    assert_eq!(
        malformed(with(KIND_AT, BlobKind::SealedToOwners.code())),
        Malformation::ReplacesOnChanges { count: 2 }
    );
    assert_eq!(
        malformed(with(SECTION_AT, 6)),
        Malformation::UnknownSection(6)
    );
    assert_eq!(malformed(with(RESERVED_AT, 1)), Malformation::Reserved(1));
}

#[test]
fn counts_over_the_bounds_are_refused_when_decoding() {
    let writer = Writer::new();
    let bytes = writer.small().into_bytes();
    let mut heads = bytes.clone();
    heads[HEAD_COUNT_AT..HEAD_COUNT_AT + 2].copy_from_slice(&65u16.to_le_bytes());
    assert_eq!(
        malformed(heads),
        Malformation::TooManyLedgerHeads { count: 65 }
    );
    let replaces_at = HEAD_COUNT_AT + 2 + 2 * HASH_BYTES;
    let mut replaces = bytes;
    replaces[replaces_at..replaces_at + 4].copy_from_slice(&100_001u32.to_le_bytes());
    assert_eq!(
        malformed(replaces),
        Malformation::TooManyReplaces { count: 100_001 }
    );
}

#[test]
fn a_changes_blob_that_replaces_blobs_is_refused() {
    let writer = Writer::new();
    let mut header = writer.header(BlobKind::Changes);
    header.replaces = vec![BlobId([9; 32])];
    assert_eq!(
        Blob::seal(header, &writer.key, b"", &writer.author).unwrap_err(),
        BlobError::ReplacesOnChanges { count: 1 }
    );
    // The same, forged and properly signed: decode refuses it before the signature matters.
    let mut bytes = writer.small().into_bytes();
    bytes[KIND_AT] = BlobKind::Changes.code();
    writer.resign(&mut bytes);
    assert_eq!(
        malformed(bytes),
        Malformation::ReplacesOnChanges { count: 2 }
    );
}

#[test]
fn a_blob_at_every_count_bound_round_trips_and_one_over_is_refused() {
    let writer = Writer::new();
    let mut header = writer.header(BlobKind::Compaction);
    header.ledger_heads = ids(BLOB_LEDGER_HEADS_MAX, 1)
        .into_iter()
        .map(OpId)
        .collect();
    header.replaces = ids(BLOB_REPLACES_MAX, 2).into_iter().map(BlobId).collect();
    let blob = writer.seal(header.clone(), b"compacted history");
    let decoded = Blob::decode(blob.into_bytes()).unwrap();
    assert_eq!(decoded.header(), &header);
    assert_eq!(decoded.open(&writer.key).unwrap(), b"compacted history");

    let mut heads = header.clone();
    heads.ledger_heads.push(OpId([0; 32]));
    assert_eq!(
        Blob::seal(heads, &writer.key, b"", &writer.author).unwrap_err(),
        BlobError::TooManyLedgerHeads { count: 65 }
    );
    let mut replaces = header;
    replaces.replaces.push(BlobId([0; 32]));
    assert_eq!(
        Blob::seal(replaces, &writer.key, b"", &writer.author).unwrap_err(),
        BlobError::TooManyReplaces { count: 100_001 }
    );
}

#[test]
fn the_size_bound_is_exact_and_checked_before_sealing() {
    let writer = Writer::new();
    let header = writer.header(BlobKind::Changes);
    let room = BLOB_BYTES_MAX - sealed_len(2, 0, 0);
    // Lazily mapped zeroed allocations: the check happens before any byte is read or copied.
    let fits = vec![0u8; room];
    assert_eq!(
        check_sealable(&header, &writer.key, &fits, &writer.author),
        Ok(BLOB_BYTES_MAX)
    );
    drop(fits);
    let over = vec![0u8; room + 1];
    assert_eq!(
        Blob::seal(header, &writer.key, &over, &writer.author).unwrap_err(),
        BlobError::TooLarge {
            len: BLOB_BYTES_MAX + 1
        }
    );
}

#[test]
fn the_smallest_blob_is_190_bytes_as_documented() {
    let writer = Writer::new();
    let mut header = writer.header(BlobKind::Changes);
    header.ledger_heads.clear();
    let blob = writer.seal(header, b"");
    assert_eq!(blob.len(), 190);
    assert_eq!(Blob::decode(blob.into_bytes()).unwrap().len(), 190);
}

#[test]
fn seal_refuses_a_key_or_author_other_than_the_headers() {
    let writer = Writer::new();
    let header = writer.header(BlobKind::Changes);
    let other_key = SectionKey::generate();
    assert_eq!(
        Blob::seal(header.clone(), &other_key, b"", &writer.author).unwrap_err(),
        BlobError::KeyMismatch {
            header: writer.key.id(),
            given: other_key.id(),
        }
    );
    let impostor = SigningKey::generate();
    assert_eq!(
        Blob::seal(header, &writer.key, b"", &impostor).unwrap_err(),
        BlobError::AuthorMismatch {
            header: writer.author.peer_id(),
            signer: impostor.peer_id(),
        }
    );
}

#[test]
fn another_authors_key_does_not_verify() {
    // The header names someone else as author; the signature is the writer's.
    let writer = Writer::new();
    let mut bytes = writer.small().into_bytes();
    let author_at = KEY_ID_AT + 16;
    let someone = SigningKey::generate().peer_id();
    bytes[author_at..author_at + 32].copy_from_slice(someone.public_key());
    assert!(matches!(
        Blob::decode(bytes),
        Err(BlobError::BadSignature { .. })
    ));
}

#[test]
fn the_ciphertext_does_not_contain_the_plaintext() {
    let text: String = (0..)
        .map(|i| format!("Observation/{i}: systolic {} mmHg; ", 110 + i % 40))
        .take_while({
            let mut len = 0;
            move |line: &String| {
                len += line.len();
                len <= 4096
            }
        })
        .collect();
    assert!(text.len() > 4000);
    let writer = Writer::new();
    let blob = writer.seal(writer.header(BlobKind::Changes), text.as_bytes());
    let windows: HashSet<&[u8]> = blob.bytes().windows(16).collect();
    let leaked = text
        .as_bytes()
        .windows(16)
        .filter(|window| windows.contains(window))
        .count();
    assert_eq!(
        leaked, 0,
        "16-byte windows of the plaintext found in the blob"
    );
    assert_eq!(blob.open(&writer.key).unwrap(), text.as_bytes());
}

#[test]
fn two_seals_of_the_same_changes_differ() {
    // A fresh random nonce per blob: the same changes never give the same ciphertext.
    let writer = Writer::new();
    let header = writer.header(BlobKind::Changes);
    let first = writer.seal(header.clone(), b"same changes");
    let second = writer.seal(header, b"same changes");
    assert_ne!(first.id(), second.id());
    assert_ne!(first.bytes(), second.bytes());
}

#[test]
fn debug_shows_the_id_and_header_never_the_plaintext() {
    let writer = Writer::new();
    let blob = writer.seal(writer.header(BlobKind::Changes), b"PHQ-9 score 14");
    let debug = format!("{blob:?}");
    assert!(debug.contains(&blob.id().short()), "{debug}");
    assert!(debug.contains("Clinical"), "{debug}");
    assert!(!debug.contains("PHQ-9"), "{debug}");
}

#[test]
fn errors_name_the_blob_and_say_what_to_do() {
    let writer = Writer::new();
    let mut bytes = writer.small().into_bytes();
    *bytes.last_mut().unwrap() ^= 1;
    let id = BlobId(sha256(&[&bytes]));
    let error = Blob::decode(bytes).unwrap_err();
    assert_eq!(error, BlobError::BadSignature { id });
    let message = error.to_string();
    assert!(
        message.contains(&format!("blob {}…", id.short())),
        "{message}"
    );
    assert!(message.contains("fetched again"), "{message}");
    let message = BlobError::Malformed(Malformation::BadMagic).to_string();
    assert!(
        message.contains("PHRB") && message.contains("fetched again"),
        "{message}"
    );
}

mod proofs {
    use super::*;

    fn proof(signer: &SigningKey, heads: &[[u8; 32]]) -> AuthorshipProof {
        let heads = heads.iter().map(|h| automerge::ChangeHash(*h)).collect();
        AuthorshipProof::sign(RecordId([7; 16]), Section::Clinical, heads, signer).unwrap()
    }

    #[test]
    fn a_blob_carries_its_authors_proof_and_a_compaction_carries_many() {
        let writer = Writer::new();
        let mut header = writer.header(BlobKind::Changes);
        header.proofs = vec![proof(&writer.author, &[[5; 32]])];
        let blob = writer.seal(header.clone(), b"changes");
        let decoded = Blob::decode(blob.into_bytes()).unwrap();
        assert_eq!(decoded.header(), &header);
        assert!(decoded.header().proofs[0].verifies(RecordId([7; 16]), Section::Clinical));
        assert!(!decoded.header().proofs[0].verifies(RecordId([7; 16]), Section::Summary));
        let others: Vec<AuthorshipProof> = (0..3)
            .map(|i| proof(&SigningKey::generate(), &[[i; 32], [i + 10; 32]]))
            .collect();
        let mut header = writer.header(BlobKind::Compaction);
        header.proofs = others;
        let blob = writer.seal(header.clone(), b"document");
        assert_eq!(Blob::decode(blob.into_bytes()).unwrap().header(), &header);
    }

    #[test]
    fn a_changes_blob_may_carry_only_one_proof_and_only_its_authors() {
        let writer = Writer::new();
        let stranger = SigningKey::generate();
        for proofs in [
            vec![proof(&stranger, &[[5; 32]])],
            vec![
                proof(&writer.author, &[[5; 32]]),
                proof(&writer.author, &[[6; 32]]),
            ],
        ] {
            let mut header = writer.header(BlobKind::Changes);
            header.proofs = proofs.clone();
            let err = Blob::seal(header.clone(), &writer.key, b"x", &writer.author).unwrap_err();
            assert!(matches!(err, BlobError::BadProofs(_)), "{err:?}");
            // Forged past the sealing checks, decoding refuses it as well.
            let mut compaction = header;
            compaction.kind = BlobKind::Compaction;
            let mut bytes = writer.seal(compaction, b"x").into_bytes();
            bytes[KIND_AT] = BlobKind::Changes.code();
            writer.resign(&mut bytes);
            assert!(matches!(malformed(bytes), Malformation::Proofs(_)));
        }
    }

    #[test]
    fn a_proof_count_larger_than_the_blob_is_refused_before_anything_is_allocated() {
        let writer = Writer::new();
        let blob = writer.seal(writer.header(BlobKind::Compaction), b"x");
        let mut bytes = blob.into_bytes();
        // The proofs count follows the two heads and the replaces count.
        let at = HEAD_COUNT_AT + 2 + 2 * 32 + 4;
        bytes[at..at + 4].copy_from_slice(&(BLOB_PROOFS_MAX as u32).to_le_bytes());
        writer.resign(&mut bytes);
        assert!(matches!(malformed(bytes), Malformation::Truncated { .. }));
    }

    /// A blob of layout version 1 (before proofs), sealed by hand as phr sealed it then.
    fn version_one(writer: &Writer, plaintext: &[u8]) -> Vec<u8> {
        let header = writer.header(BlobKind::Changes);
        let mut bytes = Vec::new();
        let nonce = [9; NONCE_BYTES];
        let ciphertext_len = (plaintext.len() + TAG_BYTES) as u32;
        encode_header(&header, &nonce, ciphertext_len, &mut bytes);
        // Version 1 has no proofs count, just before the nonce and the ciphertext length.
        let count_at = bytes.len() - CIPHERTEXT_LEN_BYTES - NONCE_BYTES - PROOFS_COUNT_BYTES;
        bytes.drain(count_at..count_at + PROOFS_COUNT_BYTES);
        bytes[VERSION_AT] = VERSION_WITHOUT_PROOFS;
        let start = bytes.len();
        bytes.extend_from_slice(plaintext);
        let (associated, in_out) = bytes.split_at_mut(start);
        let tag = aead_key(&writer.key)
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&*associated),
                in_out,
            )
            .unwrap();
        bytes.extend_from_slice(tag.as_ref());
        sign_and_name(&mut bytes, &writer.author);
        bytes
    }

    #[test]
    fn blobs_written_before_proofs_still_decode_and_open() {
        let writer = Writer::new();
        let blob = Blob::decode(version_one(&writer, b"old changes")).unwrap();
        assert!(blob.header().proofs.is_empty());
        assert_eq!(blob.open(&writer.key).unwrap(), b"old changes");
    }
}
