//! Key envelopes: section keys wrapped to their readers.
//!
//! A reader gets every epoch key of every section it may read, so a newly consented GP reads the
//! whole history. The keys travel in an **envelope**: one age file (age-encryption.org/v1, binary
//! format) with one X25519 recipient stanza per reader, so many readers share one file and each
//! unwraps it with its own [`AgeIdentity`]. Inside, the plaintext is:
//!
//! ```text
//! "PHRK" | version u8 = 1 | count u16 LE | count × (epoch u32 LE | key 32 bytes)
//! ```
//!
//! The plaintext holds secret keys, so it lives only in buffers that are wiped on drop.
//!
//! age cannot tell which stanza was meant for whom (that is its recipient privacy), so a stanza
//! addressed to this identity that was damaged in transit looks exactly like an envelope for
//! somebody else: both are [`EnvelopeError::NotForMe`]. Damage anywhere else (header, MAC,
//! payload, contents) is [`EnvelopeError::Damaged`].

use std::io::{Read, Write};

use zeroize::Zeroizing;

use crate::keys::{AgeIdentity, AgeRecipient, SectionKey};

/// The most keys one envelope may hold (epochs times sections); it bounds the plaintext to
/// about 144 KiB.
pub const ENVELOPE_KEYS_MAX: usize = 4096;

/// The most readers one envelope may be wrapped to. Unwrapping tries one X25519 exchange per
/// stanza, so this also bounds the work a forged envelope can cause.
pub const ENVELOPE_RECIPIENTS_MAX: usize = 1024;

/// The largest envelope, in bytes, that is unwrapped. A full envelope (the most keys, the most
/// recipients) is well under it.
pub const ENVELOPE_BYTES_MAX: usize = 1024 * 1024;

/// The first four bytes of the plaintext.
const MAGIC: [u8; 4] = *b"PHRK";
/// The only plaintext layout this code reads and writes.
const VERSION: u8 = 1;
/// Magic, version and count.
const PREFIX_BYTES: usize = 4 + 1 + 2;
/// Epoch and key.
const ENTRY_BYTES: usize = 4 + 32;
/// How an X25519 recipient stanza starts in an age header.
const X25519_STANZA: &[u8] = b"\n-> X25519 ";

/// Why section keys could not be wrapped or unwrapped.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// `wrap` was given no keys.
    #[error("cannot wrap section keys: no keys were given")]
    NoKeys,
    /// `wrap` was given no recipients.
    #[error("cannot wrap section keys: no recipients were given; name at least one reader")]
    NoRecipients,
    /// `wrap` was given more than [`ENVELOPE_KEYS_MAX`] keys.
    #[error(
        "cannot wrap {count} section keys in one envelope (the limit is {ENVELOPE_KEYS_MAX}); \
         wrap them in several envelopes"
    )]
    TooManyKeys {
        /// How many keys were given.
        count: usize,
    },
    /// `wrap` was given more than [`ENVELOPE_RECIPIENTS_MAX`] recipients.
    #[error(
        "cannot wrap section keys to {count} recipients in one envelope (the limit is \
         {ENVELOPE_RECIPIENTS_MAX}); wrap them in several envelopes"
    )]
    TooManyRecipients {
        /// How many recipients were given.
        count: usize,
    },
    /// age could not encrypt (not expected with X25519 recipients and an in-memory output).
    #[error("age could not wrap the section keys")]
    Encrypt(#[source] age::EncryptError),
    /// The envelope is larger than [`ENVELOPE_BYTES_MAX`]; it was refused before being read.
    #[error(
        "the key envelope is {len} bytes, over the limit of {ENVELOPE_BYTES_MAX}; it was \
         refused, ask the record's owner to share the section keys again"
    )]
    TooLarge {
        /// Its size in bytes.
        len: usize,
    },
    /// No stanza of the envelope opens with this identity: it was wrapped to other readers (or
    /// the stanza meant for this one was damaged, which age cannot tell apart).
    #[error(
        "the key envelope is not addressed to this device (age recipient {recipient}); ask the \
         record's owner to share the section with this device"
    )]
    NotForMe {
        /// The recipient of the identity that tried.
        recipient: AgeRecipient,
    },
    /// The envelope is addressed to this identity but is damaged or not a phr key envelope.
    #[error(
        "the key envelope is damaged ({0}); ask the record's owner to share the section keys again"
    )]
    Damaged(Damage),
}

/// What is wrong with a damaged envelope.
#[derive(Debug, thiserror::Error)]
pub enum Damage {
    /// age refused the header (format, stanza or MAC).
    #[error("age could not read it: {0}")]
    Age(age::DecryptError),
    /// The age payload does not decrypt: its ciphertext was changed or cut short.
    #[error("its age payload does not decrypt: {0}")]
    Payload(std::io::Error),
    /// More X25519 recipient stanzas than [`ENVELOPE_RECIPIENTS_MAX`].
    #[error("it has {count} X25519 recipient stanzas, over the limit of {ENVELOPE_RECIPIENTS_MAX}")]
    TooManyRecipients {
        /// How many stanzas its header has.
        count: usize,
    },
    /// The plaintext does not start with `PHRK`.
    #[error("its contents do not start with \"PHRK\", so they are not phr section keys")]
    BadMagic,
    /// A plaintext version this code does not read.
    #[error("its contents have format version {0}, and this version of phr reads only version 1")]
    UnsupportedVersion(u8),
    /// A key count of zero.
    #[error("it holds no keys")]
    NoKeys,
    /// A key count over [`ENVELOPE_KEYS_MAX`].
    #[error("it holds {count} keys, over the limit of {ENVELOPE_KEYS_MAX}")]
    TooManyKeys {
        /// The count in the plaintext.
        count: usize,
    },
    /// Fewer bytes than the count says.
    #[error("its contents are cut short: {len} bytes where {count} keys need {needed}")]
    Truncated {
        /// The plaintext's size.
        len: usize,
        /// The count in the plaintext.
        count: usize,
        /// The size the count needs.
        needed: usize,
    },
    /// More bytes than the count says.
    #[error("{count} bytes follow its last key")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

/// Wraps `(epoch, key)` pairs to every recipient in one age file (binary format).
///
/// Each recipient gets its own X25519 stanza around the one file key; the keys themselves are
/// encrypted once. The plaintext is built in a buffer that is wiped when dropped.
pub fn wrap(
    keys: &[(u32, &SectionKey)],
    recipients: &[AgeRecipient],
) -> Result<Vec<u8>, EnvelopeError> {
    if keys.is_empty() {
        return Err(EnvelopeError::NoKeys);
    }
    if keys.len() > ENVELOPE_KEYS_MAX {
        return Err(EnvelopeError::TooManyKeys { count: keys.len() });
    }
    if recipients.is_empty() {
        return Err(EnvelopeError::NoRecipients);
    }
    if recipients.len() > ENVELOPE_RECIPIENTS_MAX {
        return Err(EnvelopeError::TooManyRecipients {
            count: recipients.len(),
        });
    }
    let plaintext = encode_keys(keys);
    let encryptor = age::Encryptor::with_recipients(
        recipients
            .iter()
            .map(|recipient| recipient.as_age() as &dyn age::Recipient),
    )
    .map_err(EnvelopeError::Encrypt)?;
    // About 110 bytes per X25519 stanza, plus the header line, MAC, nonce and payload tag.
    let mut envelope = Vec::with_capacity(plaintext.len() + 128 * recipients.len() + 256);
    let mut writer = encryptor
        .wrap_output(&mut envelope)
        .map_err(|error| EnvelopeError::Encrypt(age::EncryptError::Io(error)))?;
    writer
        .write_all(&plaintext)
        .and_then(|()| writer.finish().map(drop))
        .map_err(|error| EnvelopeError::Encrypt(age::EncryptError::Io(error)))?;
    debug_assert!(envelope.len() <= ENVELOPE_BYTES_MAX);
    Ok(envelope)
}

/// Unwraps the keys an envelope holds for `identity`, as `(epoch, key)` pairs in wrapped order.
///
/// The size is checked first and the X25519 stanzas are counted before age reads the file,
/// so a forged envelope costs at most [`ENVELOPE_RECIPIENTS_MAX`] X25519 exchanges.
pub fn unwrap(
    envelope: &[u8],
    identity: &AgeIdentity,
) -> Result<Vec<(u32, SectionKey)>, EnvelopeError> {
    if envelope.len() > ENVELOPE_BYTES_MAX {
        return Err(EnvelopeError::TooLarge {
            len: envelope.len(),
        });
    }
    let stanzas = count_x25519_stanzas(envelope);
    if stanzas > ENVELOPE_RECIPIENTS_MAX {
        return Err(EnvelopeError::Damaged(Damage::TooManyRecipients {
            count: stanzas,
        }));
    }
    let decryptor = age::Decryptor::new_buffered(envelope)
        .map_err(|error| EnvelopeError::Damaged(Damage::Age(error)))?;
    let mut reader = decryptor
        .decrypt(std::iter::once(identity.as_age() as &dyn age::Identity))
        .map_err(|error| match error {
            age::DecryptError::NoMatchingKeys => EnvelopeError::NotForMe {
                recipient: identity.recipient(),
            },
            error => EnvelopeError::Damaged(Damage::Age(error)),
        })?;
    // The plaintext is shorter than the envelope, so this capacity is never outgrown and the
    // buffer is never reallocated, which would leave an unwiped copy of the keys behind.
    let mut plaintext = Zeroizing::new(Vec::with_capacity(envelope.len()));
    reader
        .read_to_end(&mut plaintext)
        .map_err(|error| EnvelopeError::Damaged(Damage::Payload(error)))?;
    decode_keys(&plaintext).map_err(EnvelopeError::Damaged)
}

/// The plaintext of an envelope, in a buffer wiped on drop and sized exactly so it never moves.
fn encode_keys(keys: &[(u32, &SectionKey)]) -> Zeroizing<Vec<u8>> {
    let mut plaintext = Zeroizing::new(Vec::with_capacity(PREFIX_BYTES + ENTRY_BYTES * keys.len()));
    plaintext.extend_from_slice(&MAGIC);
    plaintext.push(VERSION);
    let count = u16::try_from(keys.len()).expect("checked against ENVELOPE_KEYS_MAX");
    plaintext.extend_from_slice(&count.to_le_bytes());
    for (epoch, key) in keys {
        plaintext.extend_from_slice(&epoch.to_le_bytes());
        plaintext.extend_from_slice(key.bytes());
    }
    plaintext
}

/// Parses an envelope's plaintext, checking its count against its length and the bound.
pub(crate) fn decode_keys(plaintext: &[u8]) -> Result<Vec<(u32, SectionKey)>, Damage> {
    let Some((prefix, entries)) = plaintext.split_first_chunk::<PREFIX_BYTES>() else {
        return Err(Damage::Truncated {
            len: plaintext.len(),
            count: 0,
            needed: PREFIX_BYTES,
        });
    };
    let [m0, m1, m2, m3, version, c0, c1] = *prefix;
    if [m0, m1, m2, m3] != MAGIC {
        return Err(Damage::BadMagic);
    }
    if version != VERSION {
        return Err(Damage::UnsupportedVersion(version));
    }
    let count = usize::from(u16::from_le_bytes([c0, c1]));
    if count == 0 {
        return Err(Damage::NoKeys);
    }
    if count > ENVELOPE_KEYS_MAX {
        return Err(Damage::TooManyKeys { count });
    }
    let needed = PREFIX_BYTES + ENTRY_BYTES * count;
    if plaintext.len() < needed {
        return Err(Damage::Truncated {
            len: plaintext.len(),
            count,
            needed,
        });
    }
    if plaintext.len() > needed {
        return Err(Damage::TrailingBytes {
            count: plaintext.len() - needed,
        });
    }
    Ok(entries
        .chunks_exact(ENTRY_BYTES)
        .map(|entry| {
            let (epoch, key) = entry.split_at(4);
            let epoch = u32::from_le_bytes(epoch.try_into().expect("4 bytes"));
            let key = SectionKey::from_bytes(key.try_into().expect("32 bytes"));
            (epoch, key)
        })
        .collect())
}

/// The number of X25519 recipient stanzas (`-> X25519` lines) in an age header, which ends at its
/// `---` MAC line. Stanza bodies are base64, so neither marker can occur inside one. Other stanzas
/// (age adds one random "grease" stanza to every file) cost nothing to skip and are not counted.
pub(crate) fn count_x25519_stanzas(envelope: &[u8]) -> usize {
    let header_end = envelope
        .windows(5)
        .position(|window| window == b"\n--- ")
        .unwrap_or(envelope.len());
    envelope[..header_end]
        .windows(X25519_STANZA.len())
        .filter(|window| *window == X25519_STANZA)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn identities(n: usize) -> Vec<AgeIdentity> {
        (0..n).map(|_| AgeIdentity::generate()).collect()
    }

    fn recipients(identities: &[AgeIdentity]) -> Vec<AgeRecipient> {
        identities.iter().map(AgeIdentity::recipient).collect()
    }

    fn same_keys(got: &[(u32, SectionKey)], want: &[(u32, &SectionKey)]) -> bool {
        got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|((e1, k1), (e2, k2))| e1 == e2 && k1 == *k2)
    }

    /// An age file to `identity` whose plaintext is `plaintext` (not necessarily phr keys).
    fn age_file(plaintext: &[u8], identity: &AgeIdentity) -> Vec<u8> {
        age::encrypt(identity.recipient().as_age(), plaintext).unwrap()
    }

    #[test]
    fn three_readers_unwrap_the_same_keys_and_a_fourth_is_not_addressed() {
        let readers = identities(3);
        let (k0, k1) = (SectionKey::generate(), SectionKey::generate());
        let keys = [(0, &k0), (7, &k1)];
        let envelope = wrap(&keys, &recipients(&readers)).unwrap();
        for reader in &readers {
            assert!(same_keys(&unwrap(&envelope, reader).unwrap(), &keys));
        }
        let stranger = AgeIdentity::generate();
        match unwrap(&envelope, &stranger) {
            Err(EnvelopeError::NotForMe { recipient }) => {
                assert_eq!(recipient, stranger.recipient());
            }
            other => panic!("expected NotForMe, got {other:?}"),
        }
    }

    #[test]
    fn a_damaged_payload_or_mac_is_damaged_not_not_for_me() {
        let reader = AgeIdentity::generate();
        let key = SectionKey::generate();
        let envelope = wrap(&[(1, &key)], &[reader.recipient()]).unwrap();
        // The last byte is in the payload's Poly1305 tag.
        let mut payload = envelope.clone();
        *payload.last_mut().unwrap() ^= 1;
        assert!(matches!(
            unwrap(&payload, &reader),
            Err(EnvelopeError::Damaged(Damage::Payload(_)))
        ));
        // The header MAC is the base64 text after "--- ".
        let mac = envelope.windows(4).position(|w| w == b"--- ").unwrap() + 4;
        let mut header = envelope.clone();
        header[mac] = if header[mac] == b'A' { b'B' } else { b'A' };
        assert!(matches!(
            unwrap(&header, &reader),
            Err(EnvelopeError::Damaged(Damage::Age(_)))
        ));
        let mut magic = envelope;
        magic[0] ^= 0x20;
        assert!(matches!(
            unwrap(&magic, &reader),
            Err(EnvelopeError::Damaged(Damage::Age(_)))
        ));
    }

    #[test]
    fn wrap_refuses_empty_and_oversized_inputs() {
        let key = SectionKey::generate();
        let reader = AgeIdentity::generate().recipient();
        assert!(matches!(
            wrap(&[], std::slice::from_ref(&reader)),
            Err(EnvelopeError::NoKeys)
        ));
        assert!(matches!(
            wrap(&[(0, &key)], &[]),
            Err(EnvelopeError::NoRecipients)
        ));
        let many = vec![(0, &key); ENVELOPE_KEYS_MAX + 1];
        assert!(matches!(
            wrap(&many, std::slice::from_ref(&reader)),
            Err(EnvelopeError::TooManyKeys { count }) if count == ENVELOPE_KEYS_MAX + 1
        ));
        let crowd = vec![reader; ENVELOPE_RECIPIENTS_MAX + 1];
        assert!(matches!(
            wrap(&[(0, &key)], &crowd),
            Err(EnvelopeError::TooManyRecipients { count }) if count == ENVELOPE_RECIPIENTS_MAX + 1
        ));
    }

    #[test]
    fn the_fullest_envelope_fits_under_the_byte_limit() {
        let key = SectionKey::generate();
        let keys = vec![(u32::MAX, &key); ENVELOPE_KEYS_MAX];
        let crowd = vec![AgeIdentity::generate().recipient(); ENVELOPE_RECIPIENTS_MAX];
        let envelope = wrap(&keys, &crowd).unwrap();
        assert!(envelope.len() <= ENVELOPE_BYTES_MAX, "{}", envelope.len());
        assert_eq!(count_x25519_stanzas(&envelope), ENVELOPE_RECIPIENTS_MAX);
    }

    #[test]
    fn unwrap_refuses_an_oversized_envelope_before_reading_it() {
        let reader = AgeIdentity::generate();
        let huge = vec![0u8; ENVELOPE_BYTES_MAX + 1];
        assert!(matches!(
            unwrap(&huge, &reader),
            Err(EnvelopeError::TooLarge { len }) if len == ENVELOPE_BYTES_MAX + 1
        ));
    }

    #[test]
    fn unwrap_refuses_too_many_stanzas_before_trying_them() {
        let reader = AgeIdentity::generate();
        let key = SectionKey::generate();
        let crowd = vec![reader.recipient(); ENVELOPE_RECIPIENTS_MAX];
        let envelope = wrap(&[(0, &key)], &crowd).unwrap();
        // One more stanza, spliced in before the MAC line (age would also reject the MAC).
        let mac = envelope.windows(5).position(|w| w == b"\n--- ").unwrap();
        let first = envelope
            .windows(X25519_STANZA.len())
            .position(|w| w == X25519_STANZA)
            .unwrap();
        let second = first
            + 1
            + envelope[first + 1..]
                .windows(4)
                .position(|w| w == b"\n-> ")
                .unwrap();
        let stanza = envelope[first..second].to_vec();
        let mut forged = envelope[..mac].to_vec();
        forged.extend_from_slice(&stanza);
        forged.extend_from_slice(&envelope[mac..]);
        assert!(matches!(
            unwrap(&forged, &reader),
            Err(EnvelopeError::Damaged(Damage::TooManyRecipients { count }))
                if count == ENVELOPE_RECIPIENTS_MAX + 1
        ));
    }

    #[test]
    fn contents_that_are_not_phr_keys_are_damaged() {
        let reader = AgeIdentity::generate();
        let key = SectionKey::generate();
        let good = encode_keys(&[(3, &key), (4, &key)]);
        type Expected = fn(&Damage) -> bool;
        let mut cases: Vec<(Vec<u8>, Expected)> = vec![
            (b"PHR".to_vec(), |d| matches!(d, Damage::Truncated { .. })),
            (b"age is not phr".to_vec(), |d| {
                matches!(d, Damage::BadMagic)
            }),
            (b"PHRK\x02\x01\x00".to_vec(), |d| {
                matches!(d, Damage::UnsupportedVersion(2))
            }),
            (b"PHRK\x01\x00\x00".to_vec(), |d| {
                matches!(d, Damage::NoKeys)
            }),
            (b"PHRK\x01\x01\x10".to_vec(), |d| {
                matches!(d, Damage::TooManyKeys { count: 4097 })
            }),
            (good[..good.len() - 1].to_vec(), |d| {
                matches!(d, Damage::Truncated { count: 2, .. })
            }),
        ];
        let mut trailing = good.to_vec();
        trailing.push(0);
        cases.push((trailing, |d| {
            matches!(d, Damage::TrailingBytes { count: 1 })
        }));
        let mut miscounted = good.to_vec();
        miscounted[5] = 1;
        cases.push((miscounted, |d| {
            matches!(d, Damage::TrailingBytes { count: 36 })
        }));
        for (plaintext, expected) in cases {
            match unwrap(&age_file(&plaintext, &reader), &reader) {
                Err(EnvelopeError::Damaged(damage)) => assert!(expected(&damage), "{damage:?}"),
                other => panic!("{plaintext:?}: expected Damaged, got {other:?}"),
            }
        }
        assert_eq!(decode_keys(&good).unwrap().len(), 2);
    }

    #[test]
    fn errors_say_what_to_do() {
        let message = EnvelopeError::NotForMe {
            recipient: AgeIdentity::generate().recipient(),
        }
        .to_string();
        assert!(message.contains("ask the record's owner"), "{message}");
        let message = EnvelopeError::Damaged(Damage::BadMagic).to_string();
        assert!(
            message.contains("damaged") && message.contains("share"),
            "{message}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn keys_round_trip(
            entries in prop::collection::vec((any::<u32>(), any::<[u8; 32]>()), 1..20),
            readers in 1usize..4,
        ) {
            let keys: Vec<(u32, SectionKey)> = entries
                .iter()
                .map(|(epoch, bytes)| (*epoch, SectionKey::from_bytes(bytes)))
                .collect();
            let borrowed: Vec<(u32, &SectionKey)> =
                keys.iter().map(|(epoch, key)| (*epoch, key)).collect();
            let readers = identities(readers);
            let envelope = wrap(&borrowed, &recipients(&readers)).unwrap();
            prop_assert_eq!(count_x25519_stanzas(&envelope), readers.len());
            for reader in &readers {
                let unwrapped = unwrap(&envelope, reader).unwrap();
                prop_assert!(same_keys(&unwrapped, &borrowed));
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let reader = AgeIdentity::generate();
            prop_assert!(unwrap(&bytes, &reader).is_err());
        }
    }
}
