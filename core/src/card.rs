//! Contact cards: how one node learns another's identity. Sharing starts from a card.
//!
//! A card is one line a person can paste into a message or scan as a QR code. It carries a
//! node's [`Party`] (PeerId, age recipient, display name, role, ODS code) and the network
//! addresses it listens on, signed by the node's own key, so a card that was changed on its way
//! (a different recipient slipped in, say) does not verify:
//!
//! ```text
//! phr-card:v1:<base64url(postcard(body))>.<base64url(Ed25519 signature)>
//! ```
//!
//! The body is the [postcard](https://postcard.jamesmunns.com/wire-format) encoding of
//! `(party, addrs, created_ms)`; the signature is over `b"phr card v1\0"` followed by the body's
//! bytes, by the key whose public half is `party.peer`. Base64url is without padding, and the
//! text is ASCII with no characters that need escaping in a URL, a shell or a QR code.
//!
//! A card proves only that whoever holds the key made it: that the key belongs to the GP
//! practice named on it is for the person to check, by getting the card from a channel they
//! trust (the practice's own site or front desk).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::{
    keys::{PeerId, Signature, SigningKey},
    party::{PARTY_NAME_BYTES_MAX, Party},
};

/// What every card starts with: the format's name and version.
pub const CARD_PREFIX: &str = "phr-card:v1:";

/// The longest card accepted, in characters. A typical card is about 300; the limit leaves room
/// for many addresses while bounding what a parser of pasted text will decode.
pub const CARD_CHARS_MAX: usize = 4096;

/// The most addresses a card carries: enough for IPv4, IPv6, TCP, QUIC and relayed addresses.
pub const CARD_ADDRS_MAX: usize = 16;

/// The longest address on a card, in bytes (a relayed multiaddr with two PeerIds is about 150).
pub const CARD_ADDR_BYTES_MAX: usize = 256;

/// The longest ODS organisation code, in characters (real ones are 3 to 6).
pub const CARD_ODS_CHARS_MAX: usize = 16;

/// The domain separation tag the signature covers before the body, so a card's signature can
/// never be replayed as a signature of anything else the key signs.
const SIGNATURE_TAG: &[u8] = b"phr card v1\0";

/// The text that starts a card of any version.
const ANY_VERSION_PREFIX: &str = "phr-card:v";

/// Why a card could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    /// The text is not a contact card at all.
    #[error(
        "this is not a phr contact card (a card starts with `{CARD_PREFIX}`); ask the sender for \
         their card from `phr card`"
    )]
    NotACard,
    /// A card of a version this build cannot read (the version is held).
    #[error(
        "this is a version {0} contact card, which this version of phr cannot read; upgrade phr, \
         or ask the sender for a card made by the same version"
    )]
    UnsupportedVersion(String),
    /// Longer than [`CARD_CHARS_MAX`] (the length in characters is held).
    #[error(
        "the contact card is {0} characters long, more than the {CARD_CHARS_MAX} a card may be; \
         copy only the card's own line"
    )]
    TooLong(usize),
    /// The card's encoding is broken, typically by a partial copy (the reason is held).
    #[error(
        "the contact card is damaged ({0}); copy it again in full, or ask the sender for a fresh \
         one from `phr card`"
    )]
    Malformed(String),
    /// The signature does not match the card's contents.
    #[error(
        "the card's signature does not verify: it was changed after it was made; ask the sender \
         for a fresh one"
    )]
    BadSignature,
    /// A field is out of bounds or not allowed (the reason is held). When making a card this
    /// is a mistake of the caller; when reading one, the signer's.
    #[error("the contact card is not valid: {0}")]
    Invalid(String),
    /// [`Card::encode`] was given a key other than the one the card names.
    #[error("the card names peer {party} but the key signing it is {key}")]
    WrongKey {
        /// The peer the card names.
        party: PeerId,
        /// The key that was to sign it.
        key: PeerId,
    },
}

/// A node's contact card, as made by [`Card::encode`] and verified by [`Card::parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Card {
    /// The node: its PeerId (which verifies the card), age recipient, name, role and ODS code.
    pub party: Party,
    /// Multiaddrs where the node listens (such as `/ip4/192.0.2.7/tcp/4001`), best first.
    pub addrs: Vec<String>,
    /// When the card was made, in milliseconds since the Unix epoch: of two cards from the same
    /// node, the later one has the current addresses.
    pub created_ms: i64,
}

/// The signed part of a card, borrowed for encoding.
#[derive(Serialize)]
struct BodyRef<'a> {
    party: &'a Party,
    addrs: &'a [String],
    created_ms: i64,
}

/// The signed part of a card, owned for decoding. Same fields, same order as [`BodyRef`].
#[derive(Deserialize)]
struct Body {
    party: Party,
    addrs: Vec<String>,
    created_ms: i64,
}

impl Card {
    /// Encodes the card and signs it with `key`, which must be the key of `party.peer`: a card
    /// signed by another key would never verify. The bounds [`Card::parse`] checks are checked
    /// here too, so a card this returns is one every phr node accepts.
    pub fn encode(&self, key: &SigningKey) -> Result<String, CardError> {
        if key.peer_id() != self.party.peer {
            return Err(CardError::WrongKey {
                party: self.party.peer,
                key: key.peer_id(),
            });
        }
        self.check()?;
        let body = postcard::to_stdvec(&BodyRef {
            party: &self.party,
            addrs: &self.addrs,
            created_ms: self.created_ms,
        })
        .map_err(|e| CardError::Invalid(format!("it cannot be encoded: {e}")))?;
        let signature = key.sign(&signed_bytes(&body));
        let text = format!(
            "{CARD_PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(signature.0)
        );
        if text.len() > CARD_CHARS_MAX {
            return Err(CardError::TooLong(text.len()));
        }
        Ok(text)
    }

    /// Reads a card that a person pasted: whitespace around it and inside it (a mail client's
    /// line wrapping) is ignored. Checks the length and the encoding, then the signature against
    /// the PeerId the card names, then the bounds of its fields: the errors say what is wrong
    /// and what to do, and a card that fails any check is refused whole.
    pub fn parse(text: &str) -> Result<Card, CardError> {
        let text = text.trim();
        // Bound the work before copying: whitespace inside cannot make a card this long fit.
        if text.len() > 2 * CARD_CHARS_MAX {
            return Err(CardError::TooLong(text.chars().count()));
        }
        let text: String = text.split_whitespace().collect();
        let Some(rest) = text.strip_prefix(CARD_PREFIX) else {
            return Err(match text.strip_prefix(ANY_VERSION_PREFIX) {
                Some(rest) => CardError::UnsupportedVersion(version_of(rest)),
                None => CardError::NotACard,
            });
        };
        if text.len() > CARD_CHARS_MAX {
            return Err(CardError::TooLong(text.chars().count()));
        }
        let (body, signature) = rest
            .split_once('.')
            .ok_or_else(|| malformed("its signature is missing"))?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| malformed("its contents are not base64url"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| malformed("its signature is not base64url"))?;
        let signature = Signature(
            signature
                .try_into()
                .map_err(|_| malformed("its signature is not 64 bytes"))?,
        );
        let card = decode_body(&body)?;
        card.party
            .peer
            .verify(&signed_bytes(&body), &signature)
            .map_err(|_| CardError::BadSignature)?;
        card.check()?;
        Ok(card)
    }

    /// The bounds every card keeps, whoever made it.
    fn check(&self) -> Result<(), CardError> {
        check_name(&self.party.name)?;
        if let Some(ods) = &self.party.ods {
            let chars = ods.chars().count();
            if chars == 0
                || chars > CARD_ODS_CHARS_MAX
                || !ods.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(CardError::Invalid(format!(
                    "an ODS code is 1 to {CARD_ODS_CHARS_MAX} letters and digits"
                )));
            }
        }
        if self.addrs.len() > CARD_ADDRS_MAX {
            return Err(CardError::Invalid(format!(
                "it has {} addresses, more than the {CARD_ADDRS_MAX} a card may carry",
                self.addrs.len()
            )));
        }
        for addr in &self.addrs {
            let plausible = addr.starts_with('/')
                && addr.len() <= CARD_ADDR_BYTES_MAX
                && addr.bytes().all(|b| b.is_ascii_graphic());
            if !plausible {
                return Err(CardError::Invalid(format!(
                    "`{}` is not a multiaddr (such as /ip4/192.0.2.7/tcp/4001) of at most \
                     {CARD_ADDR_BYTES_MAX} bytes",
                    addr.escape_default().take(80).collect::<String>()
                )));
            }
        }
        Ok(())
    }
}

/// The display name must fit and must not be able to deceive a reader of the terminal: no
/// control characters (escape sequences) and no bidirectional overrides (text that displays in
/// a different order from the one it has).
fn check_name(name: &str) -> Result<(), CardError> {
    if name.trim().is_empty() {
        return Err(CardError::Invalid("its name is empty".into()));
    }
    if name.len() > PARTY_NAME_BYTES_MAX {
        return Err(CardError::Invalid(format!(
            "its name is {} bytes long, more than {PARTY_NAME_BYTES_MAX}",
            name.len()
        )));
    }
    if !crate::screen::is_clean_name(name) {
        return Err(CardError::Invalid(
            "its name contains control or text-direction characters".into(),
        ));
    }
    Ok(())
}

/// Postcard-decodes a body, requiring that it is the one canonical encoding of its contents, so
/// that one card has exactly one text.
fn decode_body(bytes: &[u8]) -> Result<Card, CardError> {
    let (body, rest): (Body, _) = postcard::take_from_bytes(bytes)
        .map_err(|e| malformed(&format!("its contents do not decode ({e})")))?;
    if !rest.is_empty() {
        return Err(malformed("its contents have trailing bytes"));
    }
    let card = Card {
        party: body.party,
        addrs: body.addrs,
        created_ms: body.created_ms,
    };
    let canonical = postcard::to_stdvec(&BodyRef {
        party: &card.party,
        addrs: &card.addrs,
        created_ms: card.created_ms,
    });
    if canonical.as_deref() != Ok(bytes) {
        return Err(malformed("its contents are not canonically encoded"));
    }
    Ok(card)
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    [SIGNATURE_TAG, body].concat()
}

fn malformed(reason: &str) -> CardError {
    CardError::Malformed(reason.into())
}

/// The version named after `phr-card:v`, shown only if it looks like one.
fn version_of(rest: &str) -> String {
    let version: String = rest.chars().take_while(|&c| c != ':').take(9).collect();
    if !version.is_empty()
        && version.len() <= 8
        && version.chars().all(|c| c.is_ascii_alphanumeric())
    {
        version
    } else {
        "unknown".into()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{keys::AgeIdentity, party::Role};

    /// The example card printed in the format documentation: made by the key with seed
    /// `[7; 32]` for a fictional practice. Ed25519 signatures are deterministic, so encoding the
    /// same card gives this exact text; a change here is a change of the wire format.
    const EXAMPLE_CARD: &str = "phr-card:v1:\
        6kpsY-KcUgq-9VB7Ey7F-ZVHdq6-vnuSQh7qaRRG0iw-YWdlMXR4enN3MHJ6ZWplM3RzMzQ3dzR1Y3R5ZXJ6Mm1hMjBu\
        ZnV0bWhybWVsOWV1cHVseHEzYXFkMG1wNTYRUml2ZXJzaWRlIFN1cmdlcnkBAQZZOTk5OTkCFy9pcDQvMTkyLjAuMi43\
        L3RjcC80MDAxHy9pcDQvMTkyLjAuMi43L3VkcC80MDAxL3F1aWMtdjGAoNXt7mY.\
        YQf9Fk6eLoLdd3ogNDUfY9nQ4Fy6lUH4nJZO0JnDDj0jXSCgtvFh5KrW-Nf9wIHseZAPa7XSq-T-IgRQLL1NBA";

    fn example() -> (SigningKey, Card) {
        let key = SigningKey::from_seed(&[7; 32]);
        let card = Card {
            party: Party {
                peer: key.peer_id(),
                recipient: "age1txzsw0rzeje3ts347w4uctyerz2ma20nfutmhrmel9eupulxq3aqd0mp56"
                    .parse()
                    .unwrap(),
                name: "Riverside Surgery".into(),
                role: Role::Provider,
                ods: Some("Y99999".into()),
            },
            addrs: vec![
                "/ip4/192.0.2.7/tcp/4001".into(),
                "/ip4/192.0.2.7/udp/4001/quic-v1".into(),
            ],
            created_ms: 1_767_225_600_000,
        };
        (key, card)
    }

    fn card_of(key: &SigningKey, name: &str) -> Card {
        Card {
            party: Party {
                peer: key.peer_id(),
                recipient: AgeIdentity::generate().recipient(),
                name: name.into(),
                role: Role::Patient,
                ods: None,
            },
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            created_ms: 1_700_000_000_000,
        }
    }

    /// Signs arbitrary body bytes as a card, the way a faulty or hostile implementation might.
    fn sign_raw(key: &SigningKey, body: &[u8]) -> String {
        let signature = key.sign(&signed_bytes(body));
        format!(
            "{CARD_PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(body),
            URL_SAFE_NO_PAD.encode(signature.0)
        )
    }

    fn body_of(card: &Card) -> Vec<u8> {
        postcard::to_stdvec(&BodyRef {
            party: &card.party,
            addrs: &card.addrs,
            created_ms: card.created_ms,
        })
        .unwrap()
    }

    #[test]
    fn example_card_is_stable() {
        let (key, card) = example();
        let text = card.encode(&key).unwrap();
        assert_eq!(text, EXAMPLE_CARD, "the card encoding changed:\n{text}");
        assert_eq!(Card::parse(EXAMPLE_CARD).unwrap(), card);
    }

    #[test]
    fn a_card_wrapped_or_padded_by_a_mail_client_still_parses() {
        let (key, card) = example();
        let text = card.encode(&key).unwrap();
        let wrapped: Vec<String> = text
            .as_bytes()
            .chunks(60)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        let pasted = format!("\n  {}\r\n\t", wrapped.join("\r\n"));
        assert_eq!(Card::parse(&pasted).unwrap(), card);
    }

    #[test]
    fn a_changed_character_anywhere_is_refused() {
        let (key, card) = example();
        let text = card.encode(&key).unwrap();
        for (i, original) in text.char_indices() {
            for replacement in ['A', 'g', '0', '-', '_', '.', ':', ' ', 'é'] {
                if replacement == original {
                    continue;
                }
                let mut changed = text.clone();
                changed.replace_range(i..i + 1, replacement.encode_utf8(&mut [0; 4]));
                let result = Card::parse(&changed);
                assert!(
                    result.is_err(),
                    "changing byte {i} to {replacement:?} gave {result:?}"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        let (key, card) = example();
        let text = card.encode(&key).unwrap();
        for len in 0..text.len() {
            assert!(Card::parse(&text[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn a_card_signed_by_another_key_is_refused() {
        let (key, card) = example();
        let other = SigningKey::from_seed(&[8; 32]);
        assert_eq!(
            card.encode(&other),
            Err(CardError::WrongKey {
                party: key.peer_id(),
                key: other.peer_id()
            })
        );
        // The same card, signed by someone else than the peer it names.
        let forged = sign_raw(&other, &body_of(&card));
        let err = Card::parse(&forged).unwrap_err();
        assert_eq!(err, CardError::BadSignature);
        assert!(
            err.to_string().contains("ask the sender for a fresh one"),
            "{err}"
        );
        // A real card with its recipient swapped for an attacker's.
        let mut swapped = card.clone();
        swapped.party.recipient = AgeIdentity::generate().recipient();
        let signature = card
            .encode(&key)
            .unwrap()
            .split_once('.')
            .unwrap()
            .1
            .to_owned();
        let body = URL_SAFE_NO_PAD.encode(body_of(&swapped));
        let spliced = format!("{CARD_PREFIX}{body}.{signature}");
        assert_eq!(Card::parse(&spliced), Err(CardError::BadSignature));
    }

    #[test]
    fn wrong_prefixes_say_what_they_are() {
        let (key, card) = example();
        let text = card.encode(&key).unwrap();
        let rest = text.strip_prefix(CARD_PREFIX).unwrap();
        assert_eq!(
            Card::parse(&format!("phr-card:v2:{rest}")),
            Err(CardError::UnsupportedVersion("2".into()))
        );
        for not_a_card in [
            "",
            "hello",
            "12D3KooWabc",
            &format!("PHR-CARD:V1:{rest}"),
            rest,
        ] {
            let err = Card::parse(not_a_card).unwrap_err();
            assert_eq!(err, CardError::NotACard, "{not_a_card:?}");
            assert!(err.to_string().contains("`phr card`"), "{err}");
        }
        assert!(matches!(
            Card::parse(&format!("{CARD_PREFIX}{}", rest.replace('.', ""))),
            Err(CardError::Malformed(_))
        ));
    }

    #[test]
    fn too_long_cards_are_refused() {
        let key = SigningKey::generate();
        let mut card = card_of(&key, "Long");
        card.addrs = (0..CARD_ADDRS_MAX)
            .map(|i| format!("/dns4/{i}.{}/tcp/4001", "a".repeat(200)))
            .collect();
        assert!(matches!(card.encode(&key), Err(CardError::TooLong(n)) if n > CARD_CHARS_MAX));
        let long = format!("{CARD_PREFIX}{}", "A".repeat(CARD_CHARS_MAX));
        assert!(matches!(Card::parse(&long), Err(CardError::TooLong(_))));
        let huge = format!("{CARD_PREFIX}{}", "A".repeat(10 * CARD_CHARS_MAX));
        assert!(matches!(Card::parse(&huge), Err(CardError::TooLong(_))));
    }

    #[test]
    fn out_of_bounds_fields_are_refused_when_made() {
        let key = SigningKey::generate();
        type Spoil = fn(&mut Card);
        let bad: Vec<(&str, Spoil)> = vec![
            ("empty name", |c| c.party.name = " ".into()),
            ("long name", |c| c.party.name = "é".repeat(101)),
            ("escape in name", |c| {
                c.party.name = "Dr \u{1b}[31mWho".into()
            }),
            ("bidi override", |c| c.party.name = "Dr \u{202e}ohW".into()),
            ("empty ODS", |c| c.party.ods = Some(String::new())),
            ("ODS with a dash", |c| c.party.ods = Some("Y9-999".into())),
            ("long ODS", |c| c.party.ods = Some("A".repeat(17))),
            ("17 addresses", |c| {
                c.addrs = vec!["/ip4/10.0.0.1/tcp/1".into(); 17]
            }),
            ("relative address", |c| {
                c.addrs = vec!["ip4/10.0.0.1/tcp/1".into()]
            }),
            ("space in address", |c| {
                c.addrs = vec!["/dns4/a b/tcp/1".into()]
            }),
            ("unicode address", |c| {
                c.addrs = vec!["/dns4/é/tcp/1".into()]
            }),
            ("long address", |c| {
                c.addrs = vec![format!("/{}", "a".repeat(256))]
            }),
        ];
        for (what, spoil) in bad {
            let mut card = card_of(&key, "Alex");
            spoil(&mut card);
            let made = card.encode(&key);
            assert!(
                matches!(made, Err(CardError::Invalid(_))),
                "{what}: {made:?}"
            );
            // Signed anyway, by an implementation that does not check: refused when read.
            let read = Card::parse(&sign_raw(&key, &body_of(&card)));
            assert!(
                matches!(read, Err(CardError::Invalid(_))),
                "{what}: {read:?}"
            );
        }
        let mut fine = card_of(&key, "Ana 👩‍⚕️ Ní Bhriain");
        fine.party.ods = Some("A".repeat(CARD_ODS_CHARS_MAX));
        fine.addrs = vec![format!("/{}", "a".repeat(CARD_ADDR_BYTES_MAX - 1)); 2];
        Card::parse(&fine.encode(&key).unwrap()).unwrap();
    }

    #[test]
    fn a_signed_but_non_canonical_body_is_malformed() {
        let key = SigningKey::generate();
        let mut card = card_of(&key, "Alex");
        card.created_ms = 0;
        let mut body = body_of(&card);
        assert_eq!(body.pop(), Some(0), "created_ms 0 is the varint 0x00, last");
        body.extend([0x80, 0x00]);
        let mut trailing = body_of(&card);
        trailing.push(0);
        for body in [body, trailing] {
            let read = Card::parse(&sign_raw(&key, &body));
            assert!(matches!(read, Err(CardError::Malformed(_))), "{read:?}");
        }
    }

    fn arb_card() -> impl Strategy<Value = (SigningKey, Card)> {
        let name = "\\PC{1,40}".prop_filter("a name has something to show", |n: &String| {
            !n.trim().is_empty() && n.len() <= PARTY_NAME_BYTES_MAX
        });
        let addr = prop_oneof![
            "/ip4/[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/(tcp|udp)/[0-9]{1,5}",
            "/[!-~]{0,120}",
        ];
        let role = prop_oneof![Just(Role::Patient), Just(Role::Provider), Just(Role::Relay)];
        (
            any::<[u8; 32]>(),
            name,
            role,
            proptest::option::of("[A-Z0-9]{1,16}"),
            proptest::collection::vec(addr, 0..=CARD_ADDRS_MAX),
            any::<i64>(),
        )
            .prop_map(|(seed, name, role, ods, addrs, created_ms)| {
                let key = SigningKey::from_seed(&seed);
                let party = Party {
                    peer: key.peer_id(),
                    recipient: AgeIdentity::generate().recipient(),
                    name,
                    role,
                    ods,
                };
                let card = Card {
                    party,
                    addrs,
                    created_ms,
                };
                (key, card)
            })
    }

    proptest! {
        #[test]
        fn cards_round_trip((key, card) in arb_card()) {
            let text = card.encode(&key).unwrap();
            prop_assert!(text.len() <= CARD_CHARS_MAX);
            prop_assert!(text.bytes().all(|b| b.is_ascii_graphic()));
            prop_assert_eq!(Card::parse(&text).unwrap(), card);
        }

        #[test]
        fn a_changed_character_never_gives_a_valid_card(
            (key, card) in arb_card(),
            at in any::<prop::sample::Index>(),
            replacement in "[A-Za-z0-9_.:-]",
        ) {
            let text = card.encode(&key).unwrap();
            let i = at.index(text.len());
            prop_assume!(text[i..i + 1] != *replacement);
            let mut changed = text.clone();
            changed.replace_range(i..i + 1, &replacement);
            prop_assert!(Card::parse(&changed).is_err());
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in "\\PC{0,300}") {
            let _ = Card::parse(&text);
            let _ = Card::parse(&format!("{CARD_PREFIX}{text}"));
        }
    }
}
