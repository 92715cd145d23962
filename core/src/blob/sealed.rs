//! Blobs sealed to the record's owners ([`BlobKind::SealedToOwners`]): a grantee's audit entries.
//!
//! `audit` is readable by the owner devices alone, so a grantee (a GP, a pharmacy) holds no key
//! of it, yet every read it makes must be logged there. Its entries are therefore encrypted with
//! age (age-encryption.org/v1, binary format) to the X25519 recipients of every owner device the
//! ledger names, one stanza each: the patient's devices read them, and nobody else, the grantee
//! that wrote them included.
//!
//! The layout is that of every blob, with the section-key fields fixed: epoch `0`, key id and
//! nonce all zero, no replaced blobs. The ciphertext is the age file. There is no AEAD associated
//! data in age, so the header is bound inside the plaintext instead:
//!
//! ```text
//! SHA-256("phr sealed to owners v1\0" ‖ every byte of the blob before the nonce) (32 bytes)
//! ‖ the Automerge changes
//! ```
//!
//! so a ciphertext cannot be moved under another header (another record, time or ledger state)
//! without the reader noticing. The Ed25519 signature and the id are as for every blob.

use std::io::{Read, Write};

use super::{
    BLOB_BYTES_MAX, Blob, BlobError, BlobHeader, BlobKind, CIPHERTEXT_LEN_BYTES, NONCE_BYTES,
    SIGNATURE_BYTES, check_header_bounds, encode_header, sign_and_name,
};
use crate::{
    envelope::{ENVELOPE_RECIPIENTS_MAX, count_x25519_stanzas},
    keys::{AgeIdentity, AgeRecipient, KeyId, SigningKey, sha256},
};

/// The most owner devices one blob is sealed to; also how many X25519 stanzas a reader tries
/// at most, which bounds the work a forged blob can cause. The same bound as key envelopes.
pub const BLOB_OWNER_RECIPIENTS_MAX: usize = ENVELOPE_RECIPIENTS_MAX;

/// Prefixed to the header bytes whose digest starts the plaintext.
const BINDING_CONTEXT: &[u8] = b"phr sealed to owners v1\0";
/// The size of that digest.
const BINDING_BYTES: usize = 32;

impl Blob {
    /// Encrypts `changes` with age to `owners` (the age recipients of the record's owner
    /// devices) and signs the result as `author`.
    ///
    /// The header must be of kind [`BlobKind::SealedToOwners`] with epoch 0 and an all-zero key
    /// id; every other bound is checked as for [`Blob::seal`], so a blob sealed here is one every
    /// node accepts.
    pub fn seal_to_owners(
        header: BlobHeader,
        owners: &[AgeRecipient],
        changes: &[u8],
        author: &SigningKey,
    ) -> Result<Blob, BlobError> {
        if header.kind != BlobKind::SealedToOwners
            || header.epoch != 0
            || header.key_id != KeyId([0; 16])
        {
            return Err(BlobError::WrongSealing {
                kind: header.kind,
                how: "under a section key, with Blob::seal (a blob sealed to the owners names no \
                      section key: epoch 0, key id zero)",
            });
        }
        if owners.is_empty() || owners.len() > BLOB_OWNER_RECIPIENTS_MAX {
            return Err(BlobError::OwnerRecipients {
                count: owners.len(),
            });
        }
        check_header_bounds(&header, author, changes.len())?;
        let mut bytes = Vec::new();
        // The ciphertext length is not known yet; it is written in once age is done.
        encode_header(&header, &[0; NONCE_BYTES], 0, &mut bytes);
        let length_at = bytes.len() - CIPHERTEXT_LEN_BYTES;
        let binding = binding(&bytes[..length_at - NONCE_BYTES]);
        let sealed = encrypt(owners, &binding, changes)?;
        let len = bytes.len() + sealed.len() + SIGNATURE_BYTES;
        if len > BLOB_BYTES_MAX {
            return Err(BlobError::TooLarge { len });
        }
        let sealed_len = u32::try_from(sealed.len()).expect("under BLOB_BYTES_MAX, so a u32");
        bytes[length_at..].copy_from_slice(&sealed_len.to_le_bytes());
        let start = bytes.len();
        bytes.extend_from_slice(&sealed);
        let ciphertext = start..bytes.len();
        let id = sign_and_name(&mut bytes, author);
        debug_assert_eq!(bytes.len(), len);
        Ok(Blob {
            bytes,
            header,
            id,
            ciphertext,
        })
    }

    /// Decrypts a blob sealed to the owners with an owner device's age identity, and checks that
    /// it was sealed under this very header. [`BlobError::NotForMe`] when it was sealed to other
    /// devices.
    pub fn open_sealed(&self, identity: &AgeIdentity) -> Result<Vec<u8>, BlobError> {
        if self.header.kind != BlobKind::SealedToOwners {
            return Err(BlobError::WrongOpening {
                id: self.id,
                kind: self.header.kind,
                how: "with the section key its header names, with Blob::open",
            });
        }
        let damaged = |reason: String| BlobError::DamagedSealed {
            id: self.id,
            author: self.header.author,
            reason,
        };
        let sealed = &self.bytes[self.ciphertext.clone()];
        let stanzas = count_x25519_stanzas(sealed);
        if stanzas > BLOB_OWNER_RECIPIENTS_MAX {
            return Err(damaged(format!(
                "it has {stanzas} X25519 recipient stanzas, over the limit of \
                 {BLOB_OWNER_RECIPIENTS_MAX}"
            )));
        }
        let decryptor = age::Decryptor::new_buffered(sealed)
            .map_err(|e| damaged(format!("age could not read it: {e}")))?;
        let mut reader = decryptor
            .decrypt(std::iter::once(identity.as_age() as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => BlobError::NotForMe { id: self.id },
                e => damaged(format!("age could not read it: {e}")),
            })?;
        // The plaintext is shorter than the age file.
        let mut plaintext = Vec::with_capacity(sealed.len());
        reader
            .read_to_end(&mut plaintext)
            .map_err(|e| damaged(format!("its age payload does not decrypt: {e}")))?;
        let header_end = self.ciphertext.start - CIPHERTEXT_LEN_BYTES - NONCE_BYTES;
        let expected = binding(&self.bytes[..header_end]);
        if plaintext.get(..BINDING_BYTES) != Some(expected.as_slice()) {
            return Err(damaged(
                "it was sealed under another header than the one it carries".into(),
            ));
        }
        plaintext.drain(..BINDING_BYTES);
        Ok(plaintext)
    }
}

/// The digest that binds the age plaintext to the header it travels under.
fn binding(header_before_nonce: &[u8]) -> [u8; BINDING_BYTES] {
    sha256(&[BINDING_CONTEXT, header_before_nonce])
}

/// One age file to every owner: the binding digest, then the changes.
fn encrypt(
    owners: &[AgeRecipient],
    binding: &[u8; BINDING_BYTES],
    changes: &[u8],
) -> Result<Vec<u8>, BlobError> {
    let encrypt_error = |e: std::io::Error| BlobError::Encrypt(e.to_string());
    let encryptor = age::Encryptor::with_recipients(
        owners
            .iter()
            .map(|owner| owner.as_age() as &dyn age::Recipient),
    )
    .map_err(|e| BlobError::Encrypt(e.to_string()))?;
    // About 110 bytes per X25519 stanza, plus the header line, MAC, nonce and payload tags.
    let mut sealed = Vec::with_capacity(BINDING_BYTES + changes.len() + 128 * owners.len() + 256);
    let mut writer = encryptor.wrap_output(&mut sealed).map_err(encrypt_error)?;
    writer.write_all(binding).map_err(encrypt_error)?;
    writer.write_all(changes).map_err(encrypt_error)?;
    writer.finish().map_err(encrypt_error)?;
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        blob::{BLOB_LEDGER_HEADS_MAX, Malformation},
        keys::{OpId, PeerId, RecordId},
        section::Section,
    };

    struct Fixture {
        author: SigningKey,
        owners: Vec<AgeIdentity>,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                author: SigningKey::generate(),
                owners: vec![AgeIdentity::generate(), AgeIdentity::generate()],
            }
        }

        fn header(&self) -> BlobHeader {
            sealed_header(self.author.peer_id())
        }

        fn recipients(&self) -> Vec<AgeRecipient> {
            self.owners.iter().map(AgeIdentity::recipient).collect()
        }

        fn seal(&self, changes: &[u8]) -> Blob {
            Blob::seal_to_owners(self.header(), &self.recipients(), changes, &self.author).unwrap()
        }
    }

    fn sealed_header(author: PeerId) -> BlobHeader {
        BlobHeader {
            record: RecordId([7; 16]),
            section: Section::Audit,
            kind: BlobKind::SealedToOwners,
            epoch: 0,
            key_id: KeyId([0; 16]),
            author,
            time_ms: 1_700_000_000_000,
            ledger_heads: vec![OpId([1; 32])],
            replaces: Vec::new(),
            proofs: Vec::new(),
        }
    }

    #[test]
    fn every_owner_opens_it_and_nobody_else_does() {
        let fixture = Fixture::new();
        let blob = fixture.seal(b"an audit entry");
        let decoded = Blob::decode(blob.bytes().to_vec()).unwrap();
        assert_eq!(decoded.header(), &fixture.header());
        assert_eq!(decoded.id(), blob.id());
        for owner in &fixture.owners {
            assert_eq!(decoded.open_sealed(owner).unwrap(), b"an audit entry");
        }
        let stranger = AgeIdentity::generate();
        assert_eq!(
            decoded.open_sealed(&stranger),
            Err(BlobError::NotForMe { id: blob.id() })
        );
        assert!(matches!(
            decoded.open(&crate::keys::SectionKey::generate()),
            Err(BlobError::WrongOpening { .. })
        ));
    }

    #[test]
    fn sealing_checks_the_kind_the_key_fields_and_the_recipients() {
        let fixture = Fixture::new();
        let mut changes = fixture.header();
        changes.kind = BlobKind::Changes;
        let mut with_epoch = fixture.header();
        with_epoch.epoch = 1;
        let mut with_key = fixture.header();
        with_key.key_id = KeyId([1; 16]);
        for header in [changes, with_epoch, with_key] {
            assert!(matches!(
                Blob::seal_to_owners(header, &fixture.recipients(), b"", &fixture.author),
                Err(BlobError::WrongSealing { .. })
            ));
        }
        assert_eq!(
            Blob::seal_to_owners(fixture.header(), &[], b"", &fixture.author).unwrap_err(),
            BlobError::OwnerRecipients { count: 0 }
        );
        let mut heads = fixture.header();
        heads.ledger_heads = vec![OpId([1; 32]); BLOB_LEDGER_HEADS_MAX + 1];
        assert!(matches!(
            Blob::seal_to_owners(heads, &fixture.recipients(), b"", &fixture.author),
            Err(BlobError::TooManyLedgerHeads { .. })
        ));
        let other = SigningKey::generate();
        assert!(matches!(
            Blob::seal_to_owners(fixture.header(), &fixture.recipients(), b"", &other),
            Err(BlobError::AuthorMismatch { .. })
        ));
        let key = crate::keys::SectionKey::generate();
        assert!(matches!(
            Blob::seal(fixture.header(), &key, b"", &fixture.author),
            Err(BlobError::WrongSealing { .. })
        ));
    }

    /// Signs edited bytes again, as a malicious author could.
    fn resign(bytes: &mut [u8], author: &SigningKey) {
        let body = bytes.len() - SIGNATURE_BYTES;
        let digest = sha256(&[&bytes[..body]]);
        let signature =
            author.sign(&[super::super::SIGNATURE_CONTEXT.as_slice(), &digest].concat());
        bytes[body..].copy_from_slice(&signature.0);
    }

    #[test]
    fn key_fields_must_be_zero_when_decoding() {
        let fixture = Fixture::new();
        let bytes = fixture.seal(b"entry").into_bytes();
        // Epoch (offset 24), key id (28) and the nonce (after the heads, the replaces count
        // and the proofs count: this fixture carries no proof).
        let nonce_at = 86 + 32 + 4 + 4;
        for at in [24, 28, 43, nonce_at, nonce_at + 11] {
            let mut forged = bytes.clone();
            forged[at] ^= 1;
            resign(&mut forged, &fixture.author);
            match Blob::decode(forged) {
                Err(BlobError::Malformed(Malformation::SealedWithKeyFields)) => {}
                other => panic!("byte {at}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_ciphertext_moved_under_another_header_is_refused() {
        let fixture = Fixture::new();
        let blob = fixture.seal(b"entry");
        // The author re-signs the same age file under another time: it decodes (the signature is
        // good) but the owner sees that it was sealed under another header.
        let mut forged = blob.into_bytes();
        forged[76] ^= 1;
        resign(&mut forged, &fixture.author);
        let forged = Blob::decode(forged).unwrap();
        assert!(matches!(
            forged.open_sealed(&fixture.owners[0]),
            Err(BlobError::DamagedSealed { .. })
        ));
    }

    #[test]
    fn every_flipped_byte_is_refused_or_fails_to_open() {
        let fixture = Fixture::new();
        let bytes = fixture.seal(b"an audit entry").into_bytes();
        for at in 0..bytes.len() {
            let mut forged = bytes.clone();
            forged[at] ^= 0x20;
            if let Ok(blob) = Blob::decode(forged) {
                assert!(blob.open_sealed(&fixture.owners[0]).is_err(), "byte {at}");
            }
        }
    }
}
