use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::keys::sha256;

/// What one session between two honest peers came to.
#[derive(Debug)]
struct Session {
    have: BTreeSet<Id>,
    need: BTreeSet<Id>,
    /// Round trips: answers the initiator received.
    rounds: usize,
    /// Bytes sent both ways, all messages included.
    bytes: usize,
}

/// Runs a whole session between an initiator holding `initiator` and a responder holding
/// `responder`, failing the test on any error.
fn reconcile(
    initiator: impl IntoIterator<Item = Id>,
    responder: impl IntoIterator<Item = Id>,
) -> Session {
    let (mut initiator, mut message) = Initiator::start(initiator).expect("start");
    let mut responder = Responder::new(responder).expect("responder");
    let mut bytes = message.len();
    loop {
        let answer = responder.answer(&message).expect("answer");
        bytes += answer.len();
        match initiator.receive(&answer).expect("receive") {
            Some(next) => {
                bytes += next.len();
                message = next;
            }
            None => break,
        }
    }
    assert!(initiator.is_done());
    assert_eq!(responder.rounds(), initiator.rounds());
    Session {
        have: initiator.have().clone(),
        need: initiator.need().clone(),
        rounds: initiator.rounds(),
        bytes,
    }
}

/// The `n`th id of a deterministic, evenly spread sequence, like real SHA-256 ids.
fn id(n: usize) -> Id {
    sha256(&[b"reconcile test id", &n.to_be_bytes()])
}

/// Two sets over `n` ids that differ in `d` of them: the first `d - d / 2` only at the initiator,
/// the next `d / 2` only at the responder, the rest at both.
fn sets_differing_in(n: usize, d: usize) -> (Vec<Id>, Vec<Id>) {
    let initiator_only = d - d / 2;
    let initiator = (0..n).filter(|&i| i >= d || i < initiator_only).map(id);
    let responder = (initiator_only..n).map(id);
    (initiator.collect(), responder.collect())
}

/// An id: mostly uniform, sometimes one sharing a 28-byte prefix with others, so that range bounds
/// need long id prefixes. The tails stay random: fingerprints are sums, and ids differing in one
/// byte only would collide (see the module docs).
fn any_id() -> impl Strategy<Value = Id> {
    prop_oneof![
        3 => any::<Id>(),
        1 => any::<u32>().prop_map(|tail| {
            let mut id = [0x5a; 32];
            id[28..].copy_from_slice(&tail.to_le_bytes());
            id
        }),
    ]
}

/// Sets A and B of up to 2,000 ids each, with a random overlap.
fn two_sets() -> impl Strategy<Value = (BTreeSet<Id>, BTreeSet<Id>)> {
    let part = || prop::collection::vec(any_id(), 0..1000);
    (part(), part(), part()).prop_map(|(shared, a_only, b_only)| {
        let a = shared.iter().chain(&a_only).copied().collect();
        let b = shared.iter().chain(&b_only).copied().collect();
        (a, b)
    })
}

/// `ids` in an order and with duplicates chosen by `seed`.
fn scrambled(ids: &BTreeSet<Id>, seed: u64) -> Vec<Id> {
    let key = |id: &Id| sha256(&[&seed.to_le_bytes(), id]);
    let mut scrambled: Vec<Id> = ids.iter().copied().collect();
    scrambled.extend(ids.iter().filter(|id| key(id)[0] % 3 == 0));
    scrambled.sort_by_key(key);
    scrambled
}

/// Real messages of a session with several rounds: the first of each side.
fn real_messages() -> (Vec<u8>, Vec<u8>) {
    let (ours, theirs) = sets_differing_in(1000, 40);
    let (_, first) = Initiator::start(ours).unwrap();
    let answer = Responder::new(theirs).unwrap().answer(&first).unwrap();
    (first, answer)
}

/// Feeds `message` to a fresh initiator and responder, returning both results.
fn feed_both(message: &[u8]) -> [Result<(), ReconcileError>; 2] {
    let (ours, theirs) = sets_differing_in(1000, 40);
    let (mut initiator, _) = Initiator::start(ours).unwrap();
    let mut responder = Responder::new(theirs).unwrap();
    [
        initiator.receive(message).map(drop),
        responder.answer(message).map(drop),
    ]
}

fn refused_as_damaged(result: &Result<(), ReconcileError>) -> bool {
    matches!(
        result,
        Err(ReconcileError::Malformed(_) | ReconcileError::UnsupportedVersion { .. })
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn have_and_need_are_exactly_the_differences((a, b) in two_sets()) {
        let session = reconcile(a.iter().copied(), b.iter().copied());
        prop_assert_eq!(&session.have, &a.difference(&b).copied().collect());
        prop_assert_eq!(&session.need, &b.difference(&a).copied().collect());
        prop_assert!(session.rounds <= RECONCILE_ROUNDS_MAX);
    }

    #[test]
    fn same_sets_reconcile_the_same_whatever_the_order_and_duplicates(
        (a, b) in two_sets(),
        seeds in any::<(u64, u64)>(),
    ) {
        let sorted = reconcile(a.iter().copied(), b.iter().copied());
        let scrambled = reconcile(scrambled(&a, seeds.0), scrambled(&b, seeds.1));
        prop_assert_eq!(&scrambled.have, &sorted.have);
        prop_assert_eq!(&scrambled.need, &sorted.need);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_are_refused_or_read_never_panic(
        message in prop::collection::vec(any::<u8>(), 0..600),
        versioned in any::<bool>(),
    ) {
        let mut message = message;
        if versioned {
            message.insert(0, PROTOCOL_VERSION);
        }
        for result in feed_both(&message) {
            if message.first() != Some(&PROTOCOL_VERSION) {
                prop_assert!(refused_as_damaged(&result), "{result:?}");
            } else {
                prop_assert!(result.is_ok() || refused_as_damaged(&result), "{result:?}");
            }
        }
    }

    #[test]
    fn damaged_real_messages_are_refused_or_read_never_panic(
        which in any::<bool>(),
        at in any::<prop::sample::Index>(),
        flip in 1..=u8::MAX,
    ) {
        let (first, answer) = real_messages();
        let message = if which { first } else { answer };
        let at = at.index(message.len());

        let mut flipped = message.clone();
        flipped[at] ^= flip;
        for result in feed_both(&flipped) {
            prop_assert!(result.is_ok() || refused_as_damaged(&result), "{result:?}");
        }
        // Cut anywhere, a message may still be well formed (between two ranges): never a panic.
        for result in feed_both(&message[..at]) {
            prop_assert!(result.is_ok() || refused_as_damaged(&result), "{result:?}");
        }
    }
}

#[test]
fn identical_sets_settle_in_one_round_trip() {
    for n in [0, 1, 31, 32, 100, 10_000] {
        let ids: Vec<Id> = (0..n).map(id).collect();
        let session = reconcile(ids.clone(), ids);
        assert_eq!(session.rounds, 1, "{n} ids");
        assert!(
            session.have.is_empty() && session.need.is_empty(),
            "{n} ids"
        );
    }
}

#[test]
fn ten_differences_among_ten_thousand_ids_take_at_most_three_round_trips() {
    let (initiator, responder) = sets_differing_in(10_000, 10);
    let session = reconcile(initiator, responder);
    assert_eq!((session.have.len(), session.need.len()), (5, 5));
    assert!(session.rounds <= 3, "{} round trips", session.rounds);
    // Measured: 2 round trips, 7,823 bytes both ways.
    assert!(session.bytes <= 10_000, "{} bytes", session.bytes);
}

#[test]
fn disjoint_sets_of_ten_thousand_ids_finish_within_the_round_limit() {
    // Every id differs: the ids travel in frames of at most RECONCILE_FRAME_BYTES_MAX.
    let (initiator, responder) = sets_differing_in(10_000, 10_000);
    let session = reconcile(initiator, responder);
    assert_eq!((session.have.len(), session.need.len()), (5_000, 5_000));
    assert!(
        session.rounds <= RECONCILE_ROUNDS_MAX / 2,
        "{} rounds",
        session.rounds
    );
}

#[test]
fn initiator_far_behind_stops_at_the_round_limit_with_true_differences() {
    // About 2,000 ids a round: 16 rounds are not enough for 40,000.
    let theirs: BTreeSet<Id> = (0..40_000).map(id).collect();
    let (mut initiator, mut message) = Initiator::start([]).unwrap();
    let mut responder = Responder::new(theirs.iter().copied()).unwrap();
    let error = loop {
        match initiator.receive(&responder.answer(&message).unwrap()) {
            Ok(Some(next)) => message = next,
            Ok(None) => panic!("finished in {} rounds", initiator.rounds()),
            Err(error) => break error,
        }
    };
    let max = RECONCILE_ROUNDS_MAX;
    assert_eq!(
        (error, initiator.rounds()),
        (ReconcileError::TooManyRounds { max }, max)
    );
    assert!(
        initiator.need().len() > 25_000,
        "{}",
        initiator.need().len()
    );
    assert!(initiator.need().is_subset(&theirs));
}

#[test]
fn last_byte_cut_off_is_malformed() {
    let (first, answer) = real_messages();
    for message in [first, answer] {
        for result in feed_both(&message[..message.len() - 1]) {
            assert!(
                matches!(result, Err(ReconcileError::Malformed(_))),
                "{result:?}"
            );
        }
    }
}

#[test]
fn oversized_message_is_refused_before_it_is_read() {
    // 0xff is no protocol version: had these been read, they would be refused as such.
    let oversized = vec![0xff; RECONCILE_MESSAGE_BYTES_MAX + 1];
    let too_large = ReconcileError::TooLarge {
        bytes: RECONCILE_MESSAGE_BYTES_MAX + 1,
        max: RECONCILE_MESSAGE_BYTES_MAX,
    };
    assert_eq!(
        feed_both(&oversized),
        [Err(too_large.clone()), Err(too_large)]
    );

    let largest = vec![0xff; RECONCILE_MESSAGE_BYTES_MAX];
    let read = ReconcileError::UnsupportedVersion { version: 0xff };
    assert_eq!(feed_both(&largest), [Err(read.clone()), Err(read)]);
}

#[test]
fn replaying_initiator_is_stopped_by_the_round_limit() {
    let (ours, theirs) = sets_differing_in(1000, 40);
    let (_, first) = Initiator::start(ours).unwrap();
    let mut responder = Responder::new(theirs).unwrap();
    for _ in 0..RECONCILE_ROUNDS_MAX {
        responder.answer(&first).unwrap();
    }
    let too_many = Err(ReconcileError::TooManyRounds {
        max: RECONCILE_ROUNDS_MAX,
    });
    assert_eq!(responder.answer(&first), too_many);
    assert_eq!(responder.answer(&first), too_many);
}

/// Feeds `message` to an initiator until it stops, returning how many it took and its last result.
fn initiator_fed_for_ever(message: &[u8]) -> (Initiator, usize, ReconcileError) {
    let (ours, _) = sets_differing_in(1000, 40);
    let (mut initiator, _) = Initiator::start(ours).unwrap();
    for taken in 1.. {
        match initiator.receive(message) {
            Ok(Some(_)) => {}
            Ok(None) => panic!("reconciliation finished after {taken} messages"),
            Err(error) => return (initiator, taken, error),
        }
        assert!(taken <= RECONCILE_ROUNDS_MAX, "never stopped");
    }
    unreachable!()
}

#[test]
fn replaying_responder_is_stopped_by_the_round_limit() {
    let (_, answer) = real_messages();
    let (initiator, taken, error) = initiator_fed_for_ever(&answer);
    let too_many = ReconcileError::TooManyRounds {
        max: RECONCILE_ROUNDS_MAX,
    };
    assert_eq!((taken, &error), (RECONCILE_ROUNDS_MAX, &too_many));
    assert!(!initiator.is_done());
}

#[test]
fn responder_that_keeps_every_range_open_is_stopped_by_the_round_limit() {
    // The whole range (upper bound infinity) with a fingerprint that matches no set.
    let mut message = vec![PROTOCOL_VERSION, 0, 0, 1];
    message.extend([0; FINGERPRINT_BYTES]);
    let (mut initiator, taken, error) = initiator_fed_for_ever(&message);
    let too_many = ReconcileError::TooManyRounds {
        max: RECONCILE_ROUNDS_MAX,
    };
    assert_eq!((taken, &error), (RECONCILE_ROUNDS_MAX, &too_many));
    assert_eq!(initiator.receive(&message), Err(too_many));
    assert_eq!(initiator.rounds(), RECONCILE_ROUNDS_MAX);
}

#[test]
fn receive_after_completion_is_refused() {
    let ids = [id(1), id(2)];
    let (mut initiator, first) = Initiator::start(ids).unwrap();
    let answer = Responder::new(ids).unwrap().answer(&first).unwrap();
    assert_eq!(initiator.receive(&answer), Ok(None));
    assert_eq!(initiator.receive(&answer), Err(ReconcileError::Finished));
}

#[test]
fn refused_message_leaves_the_state_as_it_was() {
    let (ours, theirs) = sets_differing_in(100, 10);
    let (mut initiator, first) = Initiator::start(ours.clone()).unwrap();
    let mut responder = Responder::new(theirs.clone()).unwrap();
    let answer = responder.answer(&first).unwrap();
    assert!(initiator.receive(&answer[..answer.len() - 1]).is_err());
    assert!(initiator.have().is_empty() && initiator.need().is_empty());

    let mut next = initiator.receive(&answer).unwrap();
    while let Some(message) = next {
        next = initiator
            .receive(&responder.answer(&message).unwrap())
            .unwrap();
    }
    assert_eq!(initiator.have(), &reconcile(ours, theirs).have);
}

/// The version byte, then `range` (a bound, a mode and its payload, or part of one).
fn one_range(range: &[u8]) -> Vec<u8> {
    [&[PROTOCOL_VERSION], range].concat()
}

#[test]
fn check_message_refuses_what_negentropy_would_guess_at() {
    let cases: [(&str, Vec<u8>); 7] = [
        ("empty", vec![]),
        ("mode missing", one_range(&[0, 0])),
        ("varint runs past the end", one_range(&[0x80])),
        ("varint over 64 bits", one_range(&[0xff; 11])),
        ("id prefix over 32 bytes", one_range(&[1, 33])),
        ("unknown mode", one_range(&[0, 0, 3])),
        (
            "id list longer than the message",
            one_range(&[0, 0, 2, 1, 7]),
        ),
    ];
    for (case, message) in cases {
        let result = check_message(&message);
        assert!(
            matches!(result, Err(ReconcileError::Malformed(_))),
            "{case}: {result:?}"
        );
    }

    // Their well-formed neighbours.
    let mut id_list = one_range(&[0, 0, 2, 1]);
    id_list.extend([7; 32]);
    for message in [
        one_range(&[]),
        one_range(&[0, 0, 0]),
        one_range(&[1, 32])
            .into_iter()
            .chain([9; 32])
            .chain([0])
            .collect(),
        id_list,
    ] {
        assert_eq!(check_message(&message), Ok(()), "{message:?}");
    }
}

#[test]
fn timestamped_items_find_a_difference_in_the_middle() {
    let id = |n: u8| -> Id { crate::keys::sha256(&[b"item", &[n]]) };
    let phone = vec![
        (1_763_700_232_527, id(1)),
        (1_763_700_197_136, id(2)),
        (1_763_700_248_707, id(3)),
    ];
    let laptop = vec![(1_763_700_197_136, id(2)), (1_763_700_248_707, id(3))];
    for (ours, theirs, have, need) in [(&phone, &laptop, 1, 0), (&laptop, &phone, 0, 1)] {
        let (mut initiator, mut message) = Initiator::start_items(ours.clone()).unwrap();
        let mut responder = Responder::with_items(theirs.clone()).unwrap();
        loop {
            let answer = responder.answer(&message).unwrap();
            match initiator.receive(&answer).unwrap() {
                Some(next) => message = next,
                None => break,
            }
        }
        assert_eq!(
            (initiator.have().len(), initiator.need().len()),
            (have, need)
        );
    }
}
