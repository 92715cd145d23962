//! Tests of the consent ledger: the byte format, the validity rules, and that the state is a
//! function of the set of operations.

use super::*;
use crate::{
    keys::SigningKey,
    party::Role,
    section::Section::{Audit, Clinical, Journal, Sensitive, Summary},
};
use LedgerError as E;
use proptest::prelude::*;

// Fixed keys and recipients, so a failing proptest case replays exactly.
const ROOT: u8 = 1;
const PHONE: u8 = 2;
const LAPTOP: u8 = 3;
const TABLET: u8 = 4;
const GP: u8 = 5;
const PHARMACY: u8 = 6;
const RELAY: u8 = 7;
const NOW: i64 = 10;

/// Every party shares one age recipient: the ledger keys parties by PeerId and never opens
/// envelopes, so only the encoding matters here.
const RECIPIENT: &str = "age1usvpljtdrvxjah48a5rzvpn7yll4a2w0pedph8k3atg42y92987s4j458z";

fn key(who: u8) -> SigningKey {
    SigningKey::from_seed(&[who; 32])
}

fn peer(who: u8) -> PeerId {
    key(who).peer_id()
}

fn party(who: u8) -> Party {
    let role = match who {
        GP | PHARMACY => Role::Provider,
        RELAY => Role::Relay,
        _ => Role::Patient,
    };
    let recipient = RECIPIENT.parse().unwrap();
    let name = format!("party {who}");
    Party {
        peer: peer(who),
        recipient,
        name,
        role,
        ods: None,
    }
}

/// A record created by the root key, with the phone as its first owner device.
fn patient_record() -> Ledger {
    Ledger::create(&key(ROOT), party(PHONE), 0).unwrap()
}

/// Appends `body` signed by `who`, which must be accepted.
fn ok(ledger: &mut Ledger, who: u8, body: OpBody) -> SignedOp {
    ledger.append(&key(who), body, 1).unwrap()
}

/// Why appending `body` signed by `who` is refused (checking the ledger is left as it was).
fn refused(ledger: &Ledger, who: u8, body: OpBody) -> LedgerError {
    let mut copy = ledger.clone();
    let error = copy.append(&key(who), body, 1).unwrap_err();
    assert_eq!(copy.len(), ledger.len());
    error
}

fn add(who: u8) -> OpBody {
    OpBody::AddDevice { device: party(who) }
}

fn remove(who: u8) -> OpBody {
    OpBody::RemoveDevice { device: peer(who) }
}

fn grant_full(
    grantee: Party,
    sections: &[Section],
    access: Access,
    expires_ms: Option<i64>,
    purpose: Option<String>,
) -> OpBody {
    OpBody::Grant {
        grantee,
        sections: sections.to_vec(),
        access,
        expires_ms,
        purpose,
    }
}

fn grant(grantee: u8, sections: &[Section], access: Access) -> OpBody {
    grant_full(party(grantee), sections, access, None, Some("care".into()))
}

fn read(grantee: u8, section: Section) -> OpBody {
    grant(grantee, &[section], Access::Read)
}

fn keys_full(
    section: Section,
    keys: Vec<(u32, KeyId)>,
    recipients: Vec<PeerId>,
    envelope: Vec<u8>,
) -> OpBody {
    OpBody::Keys {
        section,
        keys,
        recipients,
        envelope,
    }
}

fn keys(section: Section, epoch: u32, id: u8, recipients: &[u8]) -> OpBody {
    let recipients = recipients.iter().map(|&who| peer(who)).collect();
    keys_full(
        section,
        vec![(epoch, KeyId([id; 16]))],
        recipients,
        vec![7; 40],
    )
}

fn revoke(target: RevokeTarget) -> OpBody {
    OpBody::Revoke { target }
}

fn revoke_party(who: u8) -> OpBody {
    revoke(RevokeTarget::Party(peer(who)))
}

fn reads(state: &LedgerState, who: u8, section: Section) -> bool {
    state.can_read(&peer(who), section, NOW)
}

fn writes(state: &LedgerState, who: u8, section: Section) -> bool {
    state.can_write(&peer(who), section, NOW)
}

/// The operation `who` would sign on `ledger` now, unsigned.
fn unsigned(ledger: &Ledger, who: u8, body: OpBody) -> Op {
    Op {
        record: ledger.record(),
        parents: ledger.heads(),
        author: peer(who),
        time_ms: 7,
        body,
    }
}

/// Signs an operation with chosen parents, bypassing `append`'s checks: what a forger or a
/// device with a stale view would send.
fn forge(ledger: &Ledger, who: u8, parents: Vec<OpId>, body: OpBody) -> SignedOp {
    let op = Op {
        parents,
        ..unsigned(ledger, who, body)
    };
    SignedOp::sign(op, &key(who)).unwrap()
}

/// Signs arbitrary payload bytes as an operation would be, to craft inputs `sign` refuses.
fn seal(payload: &[u8], who: u8) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.push(VERSION);
    bytes.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(payload);
    let signature = key(who).sign(&signed_message(&bytes));
    bytes.extend_from_slice(&signature.0);
    bytes
}

fn malformed<T>(result: Result<T, LedgerError>) -> bool {
    matches!(result, Err(E::Malformed(_)))
}

fn merge(from: &Ledger, into: &mut Ledger) {
    for op in from.ops() {
        into.insert(op.clone()).unwrap();
    }
}

fn is_rejected(ledger: &Ledger, id: OpId) -> bool {
    ledger.state().rejected.iter().any(|(op, _)| *op == id)
}

#[test]
fn revoke_beats_a_concurrent_grant() {
    let mut base = patient_record();
    ok(&mut base, ROOT, add(LAPTOP));
    let (mut phone, mut laptop) = (base.clone(), base);
    let granted = ok(&mut phone, PHONE, read(GP, Summary));
    ok(&mut laptop, LAPTOP, revoke_party(GP));
    assert!(reads(phone.state(), GP, Summary));

    merge(&laptop, &mut phone);
    merge(&phone, &mut laptop);
    for ledger in [&phone, &laptop] {
        let state = ledger.state();
        assert!(!reads(state, GP, Summary) && !state.admitted(&peer(GP), NOW));
        assert!(state.grants.is_empty());
        assert_eq!(state.revoked.len(), 1);
        assert_eq!(state.revoked[0].id, granted.id());
    }
    assert_eq!(phone.state(), laptop.state());
}

#[test]
fn a_grant_that_follows_a_revoke_readmits() {
    let mut ledger = patient_record();
    let first = ok(&mut ledger, PHONE, grant(GP, &[Summary], Access::Write));
    ok(&mut ledger, PHONE, revoke_party(GP));
    assert!(!writes(ledger.state(), GP, Summary));
    let second = ok(&mut ledger, PHONE, read(GP, Summary));
    let state = ledger.state();
    assert!(reads(state, GP, Summary) && !writes(state, GP, Summary));
    let ids = |grants: Vec<&GrantState>| grants.iter().map(|g| g.id).collect::<Vec<_>>();
    assert_eq!(ids(state.grants_to(&peer(GP))), vec![second.id()]);
    assert_eq!(ids(state.revoked.iter().collect()), vec![first.id()]);

    // Revoking one grant by id ends that grant only.
    let pharmacy = ok(&mut ledger, PHONE, read(PHARMACY, Summary));
    ok(&mut ledger, PHONE, revoke(RevokeTarget::Grant(second.id())));
    let state = ledger.state();
    assert!(!reads(state, GP, Summary) && reads(state, PHARMACY, Summary));
    assert_eq!(ids(state.grants.iter().collect()), vec![pharmacy.id()]);
}

#[test]
fn a_device_re_added_concurrently_with_its_removal_stays_removed() {
    let mut base = patient_record();
    ok(&mut base, ROOT, add(LAPTOP));
    let (mut removing, mut re_adding) = (base.clone(), base);
    ok(&mut removing, ROOT, remove(LAPTOP));
    ok(&mut re_adding, ROOT, add(LAPTOP));
    merge(&re_adding, &mut removing);
    let state = removing.state();
    assert!(!state.is_owner(&peer(LAPTOP)));
    assert!(state.removed_devices.contains(&peer(LAPTOP)));
    let error = refused(&removing, LAPTOP, read(GP, Summary));
    assert_eq!(error, E::NotOwner { peer: peer(LAPTOP) });
}

#[test]
fn a_device_re_added_after_its_removal_is_an_owner_again() {
    let mut ledger = patient_record();
    ok(&mut ledger, ROOT, add(LAPTOP));
    ok(&mut ledger, ROOT, remove(LAPTOP));
    assert!(!ledger.state().is_owner(&peer(LAPTOP)));
    ok(&mut ledger, ROOT, add(LAPTOP));
    assert!(ledger.state().is_owner(&peer(LAPTOP)));
    assert!(ledger.state().removed_devices.is_empty());
    ok(&mut ledger, LAPTOP, read(GP, Clinical));
    assert!(reads(ledger.state(), GP, Clinical));
    // The first device can be removed too: the Create is its add.
    ok(&mut ledger, ROOT, remove(PHONE));
    assert!(!ledger.state().is_owner(&peer(PHONE)));
}

#[test]
fn append_refuses_operations_by_the_wrong_key() {
    let mut ledger = patient_record();
    let state = ledger.state();
    assert_eq!(ledger.record(), RecordId::of_root(&peer(ROOT)));
    assert_eq!((state.root, state.valid.len()), (Some(peer(ROOT)), 1));
    let again = OpBody::Create {
        root: peer(ROOT),
        first_device: party(LAPTOP),
    };
    assert_eq!(refused(&ledger, ROOT, again), E::AlreadyCreated);
    let not_owner = |who| E::NotOwner { peer: peer(who) };
    assert_eq!(refused(&ledger, GP, read(GP, Summary)), not_owner(GP));
    // The root key manages devices; it is not itself an owner device (the first device is).
    assert!(ledger.state().is_owner(&peer(PHONE)));
    assert_eq!(refused(&ledger, ROOT, read(GP, Summary)), not_owner(ROOT));
    assert_eq!(refused(&ledger, ROOT, revoke_party(GP)), not_owner(ROOT));
    let not_root = E::NotRoot { peer: peer(PHONE) };
    assert_eq!(refused(&ledger, PHONE, add(LAPTOP)), not_root);
    assert_eq!(refused(&ledger, PHONE, remove(PHONE)), not_root);
    let audit = grant(GP, &[Summary, Audit], Access::Write);
    assert_eq!(refused(&ledger, PHONE, audit), E::CannotGrantAudit);
    // A relay's grant covers every section's ciphertext, audit included, and reads nothing.
    let relay = grant(RELAY, &Section::ALL, Access::Relay);
    ok(&mut ledger, PHONE, relay);
    let state = ledger.state();
    assert!(state.is_relay(&peer(RELAY), NOW) && state.admitted(&peer(RELAY), NOW));
    for section in Section::ALL {
        assert!(!reads(state, RELAY, section) && !writes(state, RELAY, section));
        assert!(!state.readers(section, NOW).contains_key(&peer(RELAY)));
    }
}

#[test]
fn a_forged_grant_by_a_non_owner_is_rejected_and_has_no_effect() {
    let mut ledger = patient_record();
    let heads = ledger.heads();
    let by_gp = grant(GP, &[Clinical], Access::Write);
    let by_gp = forge(&ledger, GP, heads.clone(), by_gp);
    let audit = forge(&ledger, PHONE, heads.clone(), read(GP, Audit));
    let device = forge(&ledger, PHONE, heads.clone(), add(GP));
    for op in [&by_gp, &audit, &device] {
        assert!(ledger.insert(op.clone()).unwrap());
        assert!(is_rejected(&ledger, op.id()));
    }
    let state = ledger.state();
    assert!(state.grants.is_empty() && !state.is_owner(&peer(GP)));
    assert!(!writes(state, GP, Clinical) && !reads(state, GP, Audit));
    // Junk never becomes a head, so it cannot crowd out the parents of real operations.
    assert_eq!(ledger.heads(), heads);
}

#[test]
fn audit_is_read_by_owners_and_appended_to_by_grantees() {
    let mut ledger = patient_record();
    ok(&mut ledger, PHONE, read(GP, Summary));
    let state = ledger.state();
    assert!(!reads(state, GP, Audit) && writes(state, GP, Audit));
    assert!(!writes(state, GP, Summary) && reads(state, PHONE, Audit));
    let readers: Vec<PeerId> = state.readers(Audit, NOW).into_keys().collect();
    assert_eq!(readers, vec![peer(PHONE)]);
}

#[test]
fn a_removed_device_cannot_back_date_a_grant() {
    let mut ledger = patient_record();
    ok(&mut ledger, ROOT, add(LAPTOP));
    let earlier = ok(&mut ledger, LAPTOP, read(PHARMACY, Summary));
    let before_removal = ledger.heads();
    ok(&mut ledger, ROOT, remove(LAPTOP));

    // The stolen laptop signs a grant whose parents predate its removal.
    let everything = grant(GP, &Section::ALL[..5], Access::Write);
    let stale = forge(&ledger, LAPTOP, before_removal, everything);
    ledger.insert(stale.clone()).unwrap();
    assert!(is_rejected(&ledger, stale.id()));
    assert!(!ledger.state().admitted(&peer(GP), NOW));
    // One that follows its removal is refused too, by append and by the rules.
    let error = refused(&ledger, LAPTOP, read(GP, Summary));
    assert_eq!(error, E::NotOwner { peer: peer(LAPTOP) });
    let late = forge(&ledger, LAPTOP, ledger.heads(), read(GP, Summary));
    ledger.insert(late.clone()).unwrap();
    assert!(is_rejected(&ledger, late.id()));
    // What the laptop granted before its removal stands: the patient consented then.
    assert!(reads(ledger.state(), PHARMACY, Summary));
    assert!(ledger.state().valid.contains(&earlier.id()));
    // Judged as of its own heads, without the removal, the stale grant looked valid.
    let then = ledger.state_at(&[stale.id()]).unwrap();
    assert!(reads(&then, GP, Summary));
    let now = ledger.state_at(&ledger.heads()).unwrap();
    assert!(!reads(&now, GP, Summary) && reads(&now, PHARMACY, Summary));
}

#[test]
fn revoking_a_key_holder_makes_the_section_need_a_new_epoch() {
    let mut ledger = patient_record();
    ok(&mut ledger, PHONE, read(GP, Summary));
    assert_eq!(ledger.state().current_key(Summary, NOW), None);
    assert_eq!(ledger.state().next_epoch(Summary), 0);
    ok(&mut ledger, PHONE, keys(Summary, 0, 10, &[PHONE, GP]));
    let current = ledger.state().current_key(Summary, NOW).map(|k| k.key_id);
    assert_eq!(current, Some(KeyId([10; 16])));
    assert!(ledger.state().missing_keys(Summary, NOW).is_empty());

    ok(&mut ledger, PHONE, revoke_party(GP));
    let state = ledger.state();
    assert_eq!(state.current_key(Summary, NOW), None);
    assert_eq!(state.next_epoch(Summary), 1);
    let readers: Vec<PeerId> = state.readers(Summary, NOW).into_keys().collect();
    assert_eq!(readers, vec![peer(PHONE)]);

    ok(&mut ledger, PHONE, keys(Summary, 1, 11, &[PHONE]));
    let state = ledger.state();
    let current = state.current_key(Summary, NOW).unwrap();
    assert_eq!((current.epoch, current.key_id), (1, KeyId([11; 16])));
    assert!(!current.holders.contains(&peer(GP)));

    // A new reader is missing the whole history of the section, oldest first.
    ok(&mut ledger, PHONE, read(PHARMACY, Summary));
    let missing = ledger.state().missing_keys(Summary, NOW);
    assert_eq!(missing.len(), 1);
    let history = vec![KeyId([10; 16]), KeyId([11; 16])];
    assert_eq!(missing[&peer(PHARMACY)], history);
    assert!(ledger.state().missing_keys(Clinical, NOW).is_empty());
}

#[test]
fn an_expired_grantee_is_no_longer_a_reader() {
    let mut ledger = patient_record();
    let expiring = grant_full(party(PHARMACY), &[Summary], Access::Read, Some(5_000), None);
    ok(&mut ledger, PHONE, expiring);
    ok(&mut ledger, PHONE, keys(Summary, 0, 20, &[PHONE, PHARMACY]));
    let state = ledger.state();
    for (now, live) in [(4_999, true), (5_000, false)] {
        assert_eq!(state.can_read(&peer(PHARMACY), Summary, now), live);
        assert_eq!(state.admitted(&peer(PHARMACY), now), live);
        let readers = state.readers(Summary, now);
        assert_eq!(readers.contains_key(&peer(PHARMACY)), live);
        assert_eq!(state.current_key(Summary, now).is_some(), live);
    }
    // The grant is still listed, for the patient to see and renew.
    assert_eq!(state.grants_to(&peer(PHARMACY)).len(), 1);
}

#[test]
fn a_key_announced_twice_keeps_its_lowest_epoch_and_every_holder() {
    let mut ledger = patient_record();
    ok(&mut ledger, PHONE, read(GP, Journal));
    ok(&mut ledger, PHONE, keys(Journal, 3, 30, &[PHONE]));
    ok(&mut ledger, PHONE, keys(Journal, 5, 30, &[GP]));
    let journal = &ledger.state().keys[&Journal];
    assert_eq!((journal.len(), journal[0].epoch), (1, 3));
    assert_eq!(journal[0].holders, BTreeSet::from([peer(PHONE), peer(GP)]));
}

#[test]
fn a_child_inserted_before_its_parent_waits_for_it() {
    let mut source = patient_record();
    let create = source.ops().next().unwrap().clone();
    let added = ok(&mut source, ROOT, add(LAPTOP));
    let granted = ok(&mut source, LAPTOP, read(GP, Summary));

    let mut member = Ledger::new(source.record());
    assert!(member.insert(granted.clone()).unwrap());
    assert_eq!(member.state().pending, 1);
    assert!(member.state().grants.is_empty() && member.heads().is_empty());
    let unknown = E::UnknownOp(granted.id());
    assert_eq!(member.state_at(&[granted.id()]), Err(unknown));
    member.insert(added).unwrap();
    assert_eq!(member.state().pending, 2);
    assert!(!reads(member.state(), GP, Summary));
    member.insert(create).unwrap();
    assert_eq!(member.state().pending, 0);
    assert!(reads(member.state(), GP, Summary));
    assert_eq!(member.state(), source.state());
    assert_eq!(member.heads(), vec![granted.id()]);
    assert_eq!(member.state_at(&[]), Ok(LedgerState::default()));
    let unknown = OpId([9; 32]);
    assert_eq!(member.state_at(&[unknown]), Err(E::UnknownOp(unknown)));
}

#[test]
fn insert_refuses_other_records_and_counts_duplicates_once() {
    let mut ledger = patient_record();
    let other = Ledger::create(&key(TABLET), party(TABLET), 0).unwrap();
    let foreign = other.ops().next().unwrap().clone();
    let (expected, found) = (ledger.record(), other.record());
    let wrong = E::WrongRecord { expected, found };
    assert_eq!(ledger.insert(foreign), Err(wrong));
    let op = ok(&mut ledger, PHONE, read(GP, Summary));
    assert!(!ledger.insert(op.clone()).unwrap());
    assert_eq!(ledger.len(), 2);

    // Fill the ledger to its bound (with stand-in entries; only the count matters here).
    for n in ledger.len()..LEDGER_OPS_MAX {
        let mut id = [0xff; 32];
        id[..8].copy_from_slice(&(n as u64).to_le_bytes());
        ledger.ops.insert(OpId(id), op.clone());
    }
    let another = forge(&ledger, PHONE, vec![op.id()], revoke_party(GP));
    let max = LEDGER_OPS_MAX;
    assert_eq!(ledger.insert(another), Err(E::TooMany { max }));
    assert_eq!(ledger.insert(op), Ok(false));
}

#[test]
fn admit_takes_an_honest_ledger_in_any_order_and_never_refuses_for_being_full() {
    let mut ledger = patient_record();
    ok(&mut ledger, ROOT, add(LAPTOP));
    ok(&mut ledger, LAPTOP, read(GP, Summary));
    ok(&mut ledger, PHONE, revoke_party(GP));
    // Children before parents, and the laptop's grant before the root's op that adds it.
    let mut reversed: Vec<SignedOp> = ledger.ops().cloned().collect();
    reversed.sort_by_key(|op| std::cmp::Reverse(op.op().time_ms));
    reversed.reverse();
    reversed.rotate_left(1);
    let mut copy = Ledger::new(ledger.record());
    let admission = copy.admit(reversed).unwrap();
    assert_eq!((admission.new.len(), admission.dropped), (4, 0));
    assert_eq!(copy.state(), ledger.state());

    // Another record's operation refuses the lot.
    let other = Ledger::create(&key(TABLET), party(TABLET), 0).unwrap();
    let foreign = other.ops().next().unwrap().clone();
    let wrong = copy.admit(vec![foreign]).unwrap_err();
    assert!(matches!(wrong, E::WrongRecord { .. }), "{wrong:?}");

    // A full ledger drops what does not fit, and says so.
    let last = ledger.ops().next().unwrap().clone();
    for n in copy.len()..LEDGER_OPS_MAX {
        let mut id = [0xff; 32];
        id[..8].copy_from_slice(&(n as u64).to_le_bytes());
        copy.ops.insert(OpId(id), last.clone());
        copy.bytes += last.bytes().len();
    }
    copy.cache = std::sync::OnceLock::new();
    let more = forge(&ledger, PHONE, ledger.heads(), read(PHARMACY, Summary));
    let admission = copy.admit(vec![more]).unwrap();
    assert_eq!((admission.new.len(), admission.dropped), (0, 1));
}

#[test]
fn an_owner_keeps_at_most_its_allowance_of_operations_waiting_for_parents() {
    let mut ledger = patient_record();
    let honest = ledger.len();
    let waiting = |who: u8, n: usize| -> Vec<SignedOp> {
        (0..n)
            .map(|i| {
                let mut parent = [0xee; 32];
                parent[..8].copy_from_slice(&(i as u64).to_le_bytes());
                forge(&ledger, who, vec![OpId(parent)], read(GP, Summary))
            })
            .collect()
    };
    // The phone (an owner) may have that many in flight; a stranger none once Create is held.
    let (owners, strangers) = (
        waiting(PHONE, LEDGER_PENDING_PER_AUTHOR_MAX + 50),
        waiting(TABLET, 10),
    );
    let admission = ledger.admit(owners).unwrap();
    assert_eq!(admission.new.len(), LEDGER_PENDING_PER_AUTHOR_MAX);
    assert_eq!(admission.dropped, 50);
    let admission = ledger.admit(strangers).unwrap();
    assert_eq!((admission.new.len(), admission.dropped), (0, 10));
    assert_eq!(ledger.len(), honest + LEDGER_PENDING_PER_AUTHOR_MAX);
}

#[test]
fn a_second_create_and_its_descendants_do_not_count() {
    let ledger = patient_record();
    let mut rival = Ledger::new(ledger.record());
    let body = OpBody::Create {
        root: peer(ROOT),
        first_device: party(GP),
    };
    let create = ok(&mut rival, ROOT, body);
    ok(&mut rival, GP, grant(GP, &[Sensitive], Access::Write));
    let mut merged = ledger.clone();
    merge(&rival, &mut merged);
    let rival_wins = create.id() < ledger.heads()[0];
    let mut pair = [&ledger, &rival];
    if rival_wins {
        pair.reverse();
    }
    let [kept, lost] = pair;
    assert_eq!(merged.state().owners, kept.state().owners);
    assert!(lost.ops().all(|op| is_rejected(&merged, op.id())));
    assert_eq!(writes(merged.state(), GP, Sensitive), rival_wins);
}

#[test]
fn decode_refuses_malformed_input_with_typed_errors() {
    let decode = SignedOp::decode;
    let op = patient_record().ops().next().unwrap().clone();
    let bytes = op.bytes().to_vec();
    assert_eq!(decode(&bytes), Ok(op));

    let huge = vec![0u8; LEDGER_OP_BYTES_MAX + 1];
    let max = LEDGER_OP_BYTES_MAX;
    assert!(
        matches!(decode(&huge), Err(E::TooLarge { bytes, max: m }) if bytes == max + 1 && m == max)
    );
    let trailing = [bytes.as_slice(), b"!!"].concat();
    assert_eq!(decode(&trailing), Err(E::TrailingBytes(2)));
    let mut magic = bytes.clone();
    magic[3] = b'X';
    assert_eq!(decode(&magic), Err(E::NotAnOp));
    assert_eq!(decode(b""), Err(E::NotAnOp));
    let mut version = bytes.clone();
    version[4] = 3;
    assert_eq!(decode(&version), Err(E::UnsupportedVersion(3)));
    // A version 1 operation relabelled as version 2 does not parse as a sealed one.
    let mut relabelled = bytes.clone();
    relabelled[4] = 2;
    assert!(matches!(
        decode(&relabelled),
        Err(E::Malformed(_) | E::BadSignature)
    ));
    let mut length = bytes.clone();
    length[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(malformed(decode(&length)));
    for end in [5, 8, 9, bytes.len() - 1] {
        assert!(malformed(decode(&bytes[..end])));
    }
}

#[test]
fn decode_refuses_non_canonical_or_padded_encodings() {
    let ledger = patient_record();
    let op = Op {
        time_ms: 0,
        ..unsigned(&ledger, PHONE, revoke_party(GP))
    };
    let payload = postcard::to_stdvec(&op).unwrap();
    SignedOp::decode(&seal(&payload, PHONE)).unwrap();
    // time_ms = 0 spelled as a two-byte varint: the same op in other bytes, refused.
    let at = 16 + 1 + 32 + 32;
    assert_eq!(payload[at], 0);
    let mut overlong = payload.clone();
    overlong.splice(at..=at, [0x80, 0x00]);
    let padded = [payload.as_slice(), &[0]].concat();
    for bad in [overlong, padded] {
        assert!(malformed(SignedOp::decode(&seal(&bad, PHONE))));
    }
    // Signed by someone other than the named author.
    let forged = SignedOp::decode(&seal(&payload, GP));
    assert_eq!(forged, Err(E::BadSignature));
}

#[test]
fn sign_and_decode_enforce_the_same_bounds() {
    let ledger = patient_record();
    let with_body = |body| unsigned(&ledger, PHONE, body);
    let with_parents = |parents| Op {
        parents,
        ..with_body(read(GP, Summary))
    };
    let grant_to = |grantee, purpose| {
        let (sections, access, expiry) = (&Section::ALL[..5], Access::Read, Some(i64::MAX));
        with_body(grant_full(grantee, sections, access, expiry, purpose))
    };
    let named = |bytes| Party {
        name: "n".repeat(bytes),
        ..party(GP)
    };
    let purpose = |bytes| Some("p".repeat(bytes));
    let (name_max, purpose_max) = (PARTY_NAME_BYTES_MAX, GRANT_PURPOSE_BYTES_MAX);
    let many_keys = vec![(0, KeyId([1; 16])); KEYS_OP_KEYS_MAX + 1];
    let many_recipients = vec![peer(GP); KEYS_OP_RECIPIENTS_MAX + 1];
    assert_eq!(LEDGER_PARENTS_MAX, 64);
    let out_of_bounds = [
        with_parents((0..=64).map(|n| OpId([n; 32])).collect()),
        with_parents(vec![OpId([1; 32]), OpId([1; 32])]),
        with_body(grant(GP, &[], Access::Read)),
        with_body(grant(GP, &[Summary, Summary], Access::Read)),
        grant_to(party(GP), purpose(purpose_max + 1)),
        grant_to(named(name_max + 1), None),
        with_body(OpBody::AddDevice {
            device: named(name_max + 1),
        }),
        with_body(keys_full(Summary, many_keys, vec![], vec![])),
        with_body(keys_full(Summary, vec![], many_recipients, vec![])),
    ];
    for op in out_of_bounds {
        assert!(malformed(SignedOp::sign(op.clone(), &key(PHONE))), "{op:?}");
        let bytes = seal(&postcard::to_stdvec(&op).unwrap(), PHONE);
        assert!(malformed(SignedOp::decode(&bytes)), "{op:?}");
    }
    let at_bounds = grant_to(named(name_max), purpose(purpose_max));
    SignedOp::decode(SignedOp::sign(at_bounds, &key(PHONE)).unwrap().bytes()).unwrap();
    let envelope = vec![0; LEDGER_OP_BYTES_MAX];
    let huge = with_body(keys_full(Summary, vec![], vec![], envelope));
    let signed = SignedOp::sign(huge, &key(PHONE));
    assert!(matches!(signed, Err(E::TooLarge { .. })));
    let signed = SignedOp::sign(with_body(revoke_party(GP)), &key(GP));
    assert!(
        matches!(signed, Err(E::WrongKey { author, key }) if key == peer(GP) && author == peer(PHONE))
    );
}

/// A grant with every optional field set, to exercise the whole encoding.
fn sample_op() -> SignedOp {
    let ledger = patient_record();
    let grantee = Party {
        ods: Some("Y01234".into()),
        ..party(GP)
    };
    let sections = [Summary, Section::Requests];
    let purpose = Some("repeat prescriptions".into());
    let body = grant_full(grantee, &sections, Access::Write, Some(1 << 40), purpose);
    forge(&ledger, PHONE, ledger.heads(), body)
}

proptest! {
    #[test]
    fn every_flipped_byte_fails_to_decode(at in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let mut bytes = sample_op().into_bytes();
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        prop_assert!(SignedOp::decode(&bytes).is_err(), "byte {} ^ {:#04x} decoded", at, mask);
    }

    #[test]
    fn operations_round_trip_through_bytes(
        sections in prop::sample::subsequence(Section::ALL[..5].to_vec(), 1..=5),
        access in prop::sample::select(vec![Access::Read, Access::Write, Access::Relay]),
        expires_ms in any::<Option<i64>>(),
        purpose in prop::option::of("\\PC{0,120}"),
        time_ms in any::<i64>(),
        envelope in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let ledger = patient_record();
        let bodies = [
            grant_full(party(GP), &sections, access, expires_ms, purpose),
            keys_full(Audit, vec![(7, KeyId([3; 16]))], vec![peer(GP)], envelope),
        ];
        for body in bodies {
            let op = Op { time_ms, ..unsigned(&ledger, PHONE, body) };
            let signed = SignedOp::sign(op.clone(), &key(PHONE)).unwrap();
            let decoded = SignedOp::decode(signed.bytes()).unwrap();
            prop_assert_eq!(decoded.op(), &op);
            prop_assert_eq!(decoded.id(), signed.id());
            prop_assert_eq!(decoded.id(), OpId(sha256(&[signed.bytes()])));
        }
    }

    #[test]
    fn the_state_is_the_same_for_every_order_and_duplication(
        steps in prop::collection::vec(
            (0u8..13, 0usize..3, any::<usize>(), any::<u8>(), any::<Option<u8>>()), 1..40),
        seed in any::<u64>(),
    ) {
        let all = history(&steps);
        let record = all[0].op().record;
        let mut reference = Ledger::new(record);
        for op in &all {
            reference.insert(op.clone()).unwrap();
        }
        let mut rng = seed | 1;
        let mut arrivals: Vec<&SignedOp> = all
            .iter()
            .flat_map(|op| std::iter::repeat_n(op, 1 + (xorshift(&mut rng) % 3) as usize))
            .collect();
        for i in (1..arrivals.len()).rev() {
            arrivals.swap(i, (xorshift(&mut rng) % (i as u64 + 1)) as usize);
        }
        let mut shuffled = Ledger::new(record);
        for op in arrivals {
            shuffled.insert(SignedOp::decode(op.bytes()).unwrap()).unwrap();
            // Judge part-way through too, so a stale cache would show.
            let _ = shuffled.state();
        }
        let state = shuffled.state();
        prop_assert_eq!(state, reference.state());
        prop_assert_eq!(shuffled.heads(), reference.heads());
        prop_assert_eq!(state.pending, 0);
        prop_assert_eq!(state.valid.len() + state.rejected.len(), all.len());
        // As of the heads, the same, but for the rejected operations no valid one follows.
        let at = shuffled.state_of_past(&shuffled.heads()).unwrap();
        prop_assert_eq!(&at, &shuffled.state_at(&shuffled.heads()).unwrap());
        prop_assert!(at.rejected.iter().all(|r| state.rejected.contains(r)));
        let (rejected, pending) = (at.rejected.clone(), 0);
        prop_assert_eq!(at, LedgerState { rejected, pending, ..state.clone() });
    }
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One step of a random history: what happens (`kind`), on which node (`node`), and numbers
/// that pick its arguments. Three nodes keep their own view of the ledger: the root key's
/// (node 0), the phone's (1) and the laptop's (2). They meet only at sync steps, so the owner
/// devices act concurrently on partial views, also after the root has removed them.
type Step = (u8, usize, usize, u8, Option<u8>);

/// Plays `steps` and returns every operation any node made, the Create first.
fn history(steps: &[Step]) -> Vec<SignedOp> {
    const DEVICES: [u8; 3] = [PHONE, LAPTOP, TABLET];
    const GRANTEES: [u8; 3] = [GP, PHARMACY, RELAY];
    let mut views = vec![patient_record(); 3];
    for (n, &(kind, node, pick, bits, maybe)) in steps.iter().enumerate() {
        let now = n as i64 * 1_000;
        // Device changes are made by the root's node, owner operations by a device's node.
        let (device, grantee) = (DEVICES[pick % 3], GRANTEES[pick % 3]);
        let by = 1 + node % 2;
        let (node, body) = match kind {
            0..=2 => {
                let from = views[pick % 3].clone();
                merge(&from, &mut views[node]);
                continue;
            }
            3 => (0, add(device)),
            4 => (0, remove(device)),
            5..=7 => {
                let sections: Vec<Section> = (0..5)
                    .filter(|bit| bits & (1 << bit) != 0)
                    .map(|bit| Section::ALL[bit])
                    .collect();
                let access = [Access::Read, Access::Write, Access::Relay][usize::from(bits % 3)];
                let expires_ms = maybe.map(|e| i64::from(e) * 1_000);
                let grantee = party(grantee);
                (by, grant_full(grantee, &sections, access, expires_ms, None))
            }
            8 => {
                let grants = &views[by].state().grants;
                let Some(picked) = grants.get(pick % grants.len().max(1)) else {
                    continue;
                };
                (by, revoke(RevokeTarget::Grant(picked.id)))
            }
            9 => (by, revoke(RevokeTarget::Party(peer(grantee)))),
            10 | 11 => {
                let section = Section::ALL[pick % 6];
                let state = views[by].state();
                let known = state.keys.get(&section).map(Vec::as_slice).unwrap_or(&[]);
                // Either a new epoch, or an existing key re-announced, maybe at a higher epoch.
                let key = match maybe {
                    Some(m) if !known.is_empty() => {
                        let old = &known[usize::from(m) % known.len()];
                        (old.epoch + u32::from(m % 2), old.key_id)
                    }
                    _ => {
                        let mut id = [by as u8; 16];
                        id[..8].copy_from_slice(&(n as u64).to_le_bytes());
                        (state.next_epoch(section), KeyId(id))
                    }
                };
                let recipients = state.readers(section, now).into_keys().collect();
                (by, keys_full(section, vec![key], recipients, vec![]))
            }
            _ => {
                // A provider signs a grant to itself; the root's node stores it as any op.
                let body = grant(grantee, &[Sensitive], Access::Write);
                let forged = forge(&views[0], grantee, views[0].heads(), body);
                views[0].insert(forged).unwrap();
                continue;
            }
        };
        // Appends the rules refuse on a node's current view are simply not made.
        let signer = [ROOT, PHONE, LAPTOP][node];
        let _ = views[node].append(&key(signer), body, now);
    }
    let all: BTreeMap<OpId, SignedOp> = views.into_iter().flat_map(|view| view.ops).collect();
    let mut all: Vec<SignedOp> = all.into_values().collect();
    all.sort_by_key(|op| !op.op().parents.is_empty());
    all
}

/// A 2,000-operation ledger of two devices working concurrently: 9 ms in release, 18 ms in a
/// debug build. `cargo test --release -p phr-core --lib two_thousand -- --nocapture` prints it.
#[test]
fn two_thousand_operations_compute_quickly() {
    let mut ledger = patient_record();
    ok(&mut ledger, ROOT, add(LAPTOP));
    // Two chains, the phone's and the laptop's, and every tenth operation merges them.
    let mut ids = vec![ledger.heads()[0]; 2];
    let mut ops = Vec::new();
    for n in 2..2_000usize {
        let parents = match n % 10 {
            0 => vec![ids[n - 1], ids[n - 2]],
            _ => vec![ids[n - 2]],
        };
        let body = match n % 4 {
            0 => read(GP, Summary),
            1 => keys(Summary, n as u32, n as u8, &[PHONE, LAPTOP]),
            2 => revoke_party(PHARMACY),
            _ => grant(PHARMACY, &[Clinical], Access::Write),
        };
        let op = forge(&ledger, [PHONE, LAPTOP][n % 2], parents, body);
        ids.push(op.id());
        ops.push(op);
    }
    let begun = std::time::Instant::now();
    for op in ops {
        ledger.insert(op).unwrap();
    }
    let state = ledger.state();
    let elapsed = begun.elapsed();
    println!("2,000-operation ledger state computed in {elapsed:?}");
    assert_eq!((ledger.len(), state.valid.len()), (2_000, 2_000));
    assert!(elapsed < std::time::Duration::from_secs(1));
}

#[test]
fn heads_past_the_limit_of_one_pin_take_several_pins_that_add_up() {
    let mut ledger = patient_record();
    let hash = |i: usize| {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
        bytes
    };
    let summary: Vec<[u8; 32]> = (0..PIN_HEADS_MAX).map(hash).collect();
    let clinical: Vec<[u8; 32]> = (PIN_HEADS_MAX..PIN_HEADS_MAX + 10).map(hash).collect();
    let heads = vec![(Summary, summary.clone()), (Clinical, clinical.clone())];
    // One pin of them all is refused as malformed.
    let whole = OpBody::Pin {
        party: peer(GP),
        heads: heads.clone(),
    };
    assert!(ledger.clone().append(&key(PHONE), whole, 1).is_err());
    let pins = OpBody::pins(peer(GP), heads);
    assert_eq!(pins.len(), 2);
    for pin in pins {
        ok(&mut ledger, PHONE, pin);
    }
    let pinned = &ledger.state().pins[&peer(GP)];
    assert_eq!(pinned[&Summary].len(), summary.len());
    assert_eq!(pinned[&Clinical].len(), clinical.len());
    // None at all still makes one pin, naming nothing.
    assert_eq!(
        OpBody::pins(peer(GP), Vec::new()),
        vec![OpBody::Pin {
            party: peer(GP),
            heads: Vec::new()
        }]
    );
}

#[test]
fn the_bytes_held_are_kept_as_operations_come_and_go() {
    let walked = |ledger: &Ledger| ledger.ops().map(|op| op.bytes().len()).sum::<usize>();
    let mut ledger = patient_record();
    ok(&mut ledger, ROOT, add(LAPTOP));
    assert_eq!(ledger.bytes(), walked(&ledger));
    // Stored, found invalid and taken out again by `append` (a stranger adding a device).
    let before = ledger.bytes();
    let mut copy = ledger.clone();
    assert!(copy.append(&key(TABLET), add(GP), 1).is_err());
    assert_eq!(copy.bytes(), before);
    let last = ledger.ops().last().unwrap().id();
    ledger.forget(&[last]);
    assert_eq!(ledger.bytes(), walked(&ledger));
    assert!(ledger.bytes() < before);
}

#[test]
fn a_party_named_with_control_or_direction_characters_is_malformed() {
    let mut ledger = patient_record();
    for name in [
        "Riverside\u{1b}[2K Surgery",
        "Riverside\r\nSurgery",
        "\u{202e}yregruS",
    ] {
        let mut evil = party(GP);
        evil.name = name.into();
        let body = grant_full(evil, &[Summary], Access::Read, None, None);
        assert!(
            matches!(refused(&ledger, PHONE, body), E::Malformed(_)),
            "{name:?}"
        );
    }
    let mut evil = party(GP);
    evil.ods = Some("Y1\u{1b}[8m".into());
    let body = grant_full(evil, &[Summary], Access::Read, None, None);
    assert!(matches!(refused(&ledger, PHONE, body), E::Malformed(_)));
    ok(&mut ledger, PHONE, read(GP, Summary));
}

/// A sealed grant (format version 2): its bytes hold neither the grantee's details nor the
/// purpose; an owner opens them with the `audit` key, the grantee with its own identity, and
/// anyone else sees placeholders. A version 2 operation with details in clear is refused.
#[test]
fn sealed_details_open_for_the_owners_and_the_grantee_alone() {
    let audit = SectionKey::generate();
    let gp_identity = AgeIdentity::generate();
    let mut ledger = Ledger::create_sealed(&key(ROOT), party(PHONE), 0, &audit).unwrap();
    let mut gp = party(GP);
    gp.name = "Riverside Sexual Health Clinic".into();
    gp.ods = Some("Y12345".into());
    gp.recipient = gp_identity.recipient();
    let grant = ledger
        .append_sealed(
            &key(PHONE),
            OpBody::Grant {
                grantee: gp.clone(),
                sections: vec![Sensitive],
                access: Access::Read,
                expires_ms: None,
                purpose: Some("HIV care".into()),
            },
            1,
            &audit,
        )
        .unwrap();
    assert!(grant.is_sealed());
    for secret in ["Riverside", "Y12345", "HIV care", "party 2"] {
        assert!(
            !ledger.ops().any(|op| op
                .bytes()
                .windows(secret.len())
                .any(|w| w == secret.as_bytes())),
            "{secret}"
        );
    }
    let fresh = || {
        let mut copy = Ledger::new(ledger.record());
        for op in ledger.ops() {
            copy.insert(SignedOp::decode(op.bytes()).unwrap()).unwrap();
        }
        copy
    };
    let grantee = |l: &Ledger| l.state().grants_to(&peer(GP))[0].clone();
    let stranger = AgeIdentity::generate();
    // A stranger (or another grantee, or a relay): placeholders.
    let mut seen = fresh();
    assert!(seen.reveal(|_| None, &stranger, &peer(PHARMACY)).is_empty());
    assert_eq!(
        grantee(&seen).grantee.name,
        "a party the patient shares with (name sealed)"
    );
    assert_eq!(grantee(&seen).purpose, None);
    assert_eq!(grantee(&seen).sections, vec![Sensitive]);
    // The grantee: its own grant, not the device's label.
    let mut seen = fresh();
    assert!(seen.reveal(|_| None, &gp_identity, &peer(GP)).is_empty());
    assert_eq!(grantee(&seen).grantee, gp);
    assert_eq!(grantee(&seen).purpose.as_deref(), Some("HIV care"));
    assert!(seen.state().owners[&peer(PHONE)].name.contains("sealed"));
    // An owner: everything, and the state is the one the author computed.
    let mut seen = fresh();
    let held = audit.clone();
    assert!(
        seen.reveal(
            |id| (*id == held.id()).then_some(&held),
            &stranger,
            &peer(PHONE)
        )
        .is_empty()
    );
    assert_eq!(seen.state(), ledger.state());
    // A wrong `audit` key under the right id does not open it, and is reported.
    let wrong = SectionKey::generate();
    let mut seen = fresh();
    let problems = seen.reveal(|_| Some(&wrong), &stranger, &peer(PHONE));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("does not decrypt"), "{problems:?}");
    // Details in clear under version 2 are refused, signed or not.
    let op = grant.op().clone();
    let wire = SealedOp {
        op: op.clone(),
        sealed: SignedOp::decode(grant.bytes()).unwrap().sealed.unwrap(),
    };
    let payload = postcard::to_stdvec(&wire).unwrap();
    let mut bytes = MAGIC.to_vec();
    bytes.push(VERSION_SEALED);
    bytes.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(&payload);
    let signature = key(PHONE).sign(&signed_message(&bytes));
    bytes.extend_from_slice(&signature.0);
    assert!(matches!(
        SignedOp::decode(&bytes),
        Err(E::Malformed(m)) if m.contains("details in clear")
    ));
}
