use super::*;
use serde_json::json;

fn author(name: &str) -> Author {
    Author {
        id: format!("device-{name}"),
        name: name.to_string(),
    }
}

fn stamp(author: &Author, second: i64) -> Stamp<'_> {
    Stamp {
        author,
        time: Timestamp::from_second(1_700_000_000 + second).unwrap(),
    }
}

fn meta() -> RecordMeta {
    RecordMeta {
        id: "r1".into(),
        subject: None,
        nhs_number: None,
    }
}

fn condition(id: &str, text: &str) -> Value {
    json!({"resourceType": "Condition", "id": id, "code": {"text": text}})
}

/// Two replicas of one record, as two devices would hold them after a sync.
fn two_replicas() -> (Record, Record) {
    let a_actor = ActorId::from(b"device-a-actor-1".as_slice());
    let b_actor = ActorId::from(b"second-device-b2".as_slice());
    let alice = author("a");
    let mut a = Record::create(meta(), &a_actor);
    a.put(stamp(&alice, 0), &condition("c1", "asthma")).unwrap();
    a.commit(stamp(&alice, 0), "seed");
    let saved: BTreeMap<Section, Vec<u8>> = a.save_compacted().into_iter().collect();
    let b = Record::load(meta(), &saved, &b_actor).unwrap();
    (a, b)
}

#[test]
fn put_is_idempotent_and_records_author_and_time() {
    let me = author("me");
    let mut r = Record::create(meta(), &ActorId::random());
    assert_eq!(
        r.put(stamp(&me, 1), &condition("c1", "asthma")).unwrap(),
        PutOutcome::Added
    );
    r.commit(stamp(&me, 1), "add");
    let heads = r.heads();
    assert_eq!(
        r.put(stamp(&me, 2), &condition("c1", "asthma")).unwrap(),
        PutOutcome::Unchanged
    );
    r.commit(stamp(&me, 2), "again");
    assert_eq!(r.heads(), heads, "an unchanged put makes no change");
    let key: ResourceKey = "Condition/c1".parse().unwrap();
    let Some(Current::One(v)) = r.current(&key).unwrap() else {
        panic!("one version")
    };
    assert_eq!(v.author, me);
    assert_eq!(v.time.as_second(), 1_700_000_001);
    assert_eq!(v.section, Section::Summary);
}

#[test]
fn history_lists_every_version_oldest_first() {
    let me = author("me");
    let mut r = Record::create(meta(), &ActorId::random());
    for (i, text) in ["asthma", "asthma, mild", "asthma, resolved"]
        .iter()
        .enumerate()
    {
        r.put(stamp(&me, i as i64), &condition("c1", text)).unwrap();
        r.commit(stamp(&me, i as i64), "edit");
    }
    let history = r.history(&"Condition/c1".parse().unwrap()).unwrap();
    let texts: Vec<_> = history
        .iter()
        .map(|v| v.resource["code"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["asthma", "asthma, mild", "asthma, resolved"]);
}

#[test]
fn concurrent_edits_of_one_resource_conflict_and_resolve() {
    let (mut a, mut b) = two_replicas();
    let (alice, bob) = (author("a"), author("b"));
    a.put(stamp(&alice, 10), &condition("c1", "asthma (from a)"))
        .unwrap();
    a.commit(stamp(&alice, 10), "edit");
    b.put(stamp(&bob, 11), &condition("c1", "asthma (from b)"))
        .unwrap();
    b.commit(stamp(&bob, 11), "edit");
    a.merge(&mut b).unwrap();
    b.merge(&mut a).unwrap();
    for r in [&a, &b] {
        let conflicts = r.conflicts().unwrap();
        assert_eq!(conflicts.len(), 1);
        let texts: Vec<_> = conflicts[0]
            .versions
            .iter()
            .map(|v| v.resource["code"]["text"].clone())
            .collect();
        assert_eq!(texts, [json!("asthma (from a)"), json!("asthma (from b)")]);
    }
    let key: ResourceKey = "Condition/c1".parse().unwrap();
    let err = a
        .put(stamp(&alice, 12), &condition("c1", "overwrite"))
        .unwrap_err();
    assert!(matches!(err, RecordError::Conflicted(_)), "{err}");
    let keep = a.conflicts().unwrap()[0].versions[1].short_id();
    let resolved = a.resolve(stamp(&alice, 13), &key, &keep).unwrap();
    assert_eq!(resolved.resource["code"]["text"], "asthma (from b)");
    assert!(resolved.kept.is_some());
    assert!(a.conflicts().unwrap().is_empty());
    b.merge(&mut a).unwrap();
    assert!(
        b.conflicts().unwrap().is_empty(),
        "the resolution replicates"
    );
    assert_eq!(
        b.get(&key).unwrap().unwrap()["code"]["text"],
        "asthma (from b)"
    );
    // History keeps the version that was not chosen.
    let texts: Vec<_> = b
        .history(&key)
        .unwrap()
        .iter()
        .map(|v| v.resource["code"]["text"].clone())
        .collect();
    assert!(texts.contains(&json!("asthma (from a)")), "{texts:?}");
}

#[test]
fn edits_to_different_resources_merge_without_conflict() {
    let (mut a, mut b) = two_replicas();
    let (alice, bob) = (author("a"), author("b"));
    a.put(stamp(&alice, 10), &condition("c2", "eczema"))
        .unwrap();
    a.commit(stamp(&alice, 10), "add");
    b.put(stamp(&bob, 10), &condition("c3", "hay fever"))
        .unwrap();
    b.commit(stamp(&bob, 10), "add");
    a.merge(&mut b).unwrap();
    assert!(a.conflicts().unwrap().is_empty());
    assert_eq!(a.len(Section::Summary), 3);
}

#[test]
fn unknown_version_names_the_ones_that_exist() {
    let (mut a, mut b) = two_replicas();
    let (alice, bob) = (author("a"), author("b"));
    a.put(stamp(&alice, 1), &condition("c1", "x")).unwrap();
    b.put(stamp(&bob, 1), &condition("c1", "y")).unwrap();
    a.commit(stamp(&alice, 1), "e");
    b.commit(stamp(&bob, 1), "e");
    a.merge(&mut b).unwrap();
    let err = a
        .resolve(stamp(&alice, 2), &"Condition/c1".parse().unwrap(), "nope")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("has no single version 'nope'; its versions are"),
        "{err}"
    );
}

#[test]
fn take_unsaved_then_load_round_trips() {
    let me = author("me");
    let actor = ActorId::random();
    let mut r = Record::create(meta(), &actor);
    r.put(stamp(&me, 1), &condition("c1", "asthma")).unwrap();
    r.commit(stamp(&me, 1), "add");
    let first = r.take_unsaved();
    r.put(
        stamp(&me, 2),
        &json!({"resourceType": "Encounter", "id": "e1"}),
    )
    .unwrap();
    r.commit(stamp(&me, 2), "add");
    let second = r.take_unsaved();
    assert!(r.take_unsaved().is_empty());
    let mut stored = BTreeMap::<Section, Vec<u8>>::new();
    for (s, bytes) in first.into_iter().chain(second) {
        stored.entry(s).or_default().extend(bytes);
    }
    let mut loaded = Record::load(meta(), &stored, &actor).unwrap();
    assert_eq!(loaded.len(Section::Summary), 1);
    assert_eq!(loaded.len(Section::Clinical), 1);
    assert!(loaded.take_unsaved().is_empty(), "loading is not a change");
}

/// Two devices wrote one resource concurrently, both on a change that turned void: each load
/// takes the void change out with both versions, and each device writes its own again. A
/// version written again is not written again over the other device's at every later load.
#[test]
fn versions_written_again_on_two_devices_settle() {
    use crate::changes::provenance::ChangeGraph;
    let section = crate::section::place(&condition("c1", ""));
    let gp = ActorId::from(b"gp-device-actor1".as_slice());
    let mut base = Record::create(meta(), &gp);
    base.put(stamp(&author("gp"), 0), &condition("c0", "void"))
        .unwrap();
    base.commit(stamp(&author("gp"), 0), "void");
    let void: std::collections::HashSet<automerge::ChangeHash> = base
        .doc_for_provenance(section)
        .get_heads()
        .into_iter()
        .collect();
    // What the devices' stores hold, every change of the section.
    let mut store: BTreeMap<Section, Vec<u8>> = base.take_unsaved().into_iter().collect();
    let actors = [
        ActorId::from(b"device-a-actor-1".as_slice()),
        ActorId::from(b"second-device-b2".as_slice()),
    ];
    let mut written = Vec::new();
    for (actor, name) in actors.iter().zip(["a", "b"]) {
        let mut record = Record::load(meta(), &store, actor).unwrap();
        let by = author(name);
        record
            .put(stamp(&by, 10), &condition("c1", &format!("from {name}")))
            .unwrap();
        record.commit(stamp(&by, 10), "edit");
        written.extend(record.take_unsaved());
    }
    for (s, bytes) in written {
        store.entry(s).or_default().extend(bytes);
    }
    // Each device in turn loads what is stored, takes the void change out, writes its own
    // version again, and stores that.
    let mut rounds = 0;
    loop {
        let mut again = 0;
        for actor in &actors {
            let mut record = Record::load(meta(), &store, actor).unwrap();
            let graph = ChangeGraph::of(record.doc_for_provenance(section));
            let excluded = graph.with_descendants(&void);
            let stranded = record.exclude(section, &void, &excluded, &graph, actor);
            again += record.write_again(&stranded);
            for (s, bytes) in record.take_unsaved() {
                store.entry(s).or_default().extend(bytes);
            }
        }
        if again == 0 {
            break;
        }
        rounds += 1;
        assert!(rounds < 3, "still written again after {rounds} rounds");
    }
    // Neither version is lost.
    for actor in &actors {
        let mut record = Record::load(meta(), &store, actor).unwrap();
        let graph = ChangeGraph::of(record.doc_for_provenance(section));
        let excluded = graph.with_descendants(&void);
        record.exclude(section, &void, &excluded, &graph, actor);
        let history = record.history(&"Condition/c1".parse().unwrap()).unwrap();
        for name in ["a", "b"] {
            let text = format!("from {name}");
            assert!(
                history.iter().any(|v| v.resource == condition("c1", &text)),
                "{text}"
            );
        }
    }
}

/// A device's version built on a change that turned void is written again on what it was
/// built on, less the void change: a version another device wrote concurrently (which the
/// first never saw) stays beside it as a conflict for a person, not silently superseded.
#[test]
fn a_version_written_again_keeps_a_concurrent_version_in_conflict() {
    use crate::changes::provenance::ChangeGraph;
    let section = crate::section::place(&condition("c1", ""));
    let key: ResourceKey = "Condition/c1".parse().unwrap();
    let patient = ActorId::from(b"patient-laptop-1".as_slice());
    let mut base = Record::create(meta(), &patient);
    base.put(stamp(&author("laptop"), 0), &condition("c1", "original"))
        .unwrap();
    base.commit(stamp(&author("laptop"), 0), "original");
    let kept: BTreeMap<Section, Vec<u8>> = base.take_unsaved().into_iter().collect();
    // A withdrawn party's change, on the original.
    let gp = ActorId::from(b"gp-device-actor1".as_slice());
    let mut by_gp = Record::load(meta(), &kept, &gp).unwrap();
    by_gp
        .put(stamp(&author("gp"), 1), &condition("c0", "void"))
        .unwrap();
    by_gp.commit(stamp(&author("gp"), 1), "void");
    let void: std::collections::HashSet<automerge::ChangeHash> = by_gp
        .doc_for_provenance(section)
        .get_heads()
        .into_iter()
        .collect();
    let mut with_void = kept.clone();
    for (s, bytes) in by_gp.take_unsaved() {
        with_void.entry(s).or_default().extend(bytes);
    }
    // The tablet writes on the void change; the phone, which never saw it, concurrently.
    let tablet = ActorId::from(b"tablet-device-01".as_slice());
    let mut store = with_void.clone();
    for (actor, from, name) in [
        (&tablet, &with_void, "tablet"),
        (
            &ActorId::from(b"phone-device-001".as_slice()),
            &kept,
            "phone",
        ),
    ] {
        let mut record = Record::load(meta(), from, actor).unwrap();
        record
            .put(
                stamp(&author(name), 2),
                &condition("c1", &format!("from {name}")),
            )
            .unwrap();
        record.commit(stamp(&author(name), 2), "edit");
        for (s, bytes) in record.take_unsaved() {
            store.entry(s).or_default().extend(bytes);
        }
    }
    let mut record = Record::load(meta(), &store, &tablet).unwrap();
    let graph = ChangeGraph::of(record.doc_for_provenance(section));
    let excluded = graph.with_descendants(&void);
    let stranded = record.exclude(section, &void, &excluded, &graph, &tablet);
    assert_eq!(record.write_again(&stranded), 1);
    let Some(Current::Conflict(versions)) = record.current(&key).unwrap() else {
        panic!("the tablet's and the phone's versions in conflict");
    };
    let mut texts: Vec<String> = versions
        .iter()
        .map(|v| v.resource["code"]["text"].as_str().unwrap().to_string())
        .collect();
    texts.sort();
    assert_eq!(texts, ["from phone", "from tablet"]);
    let history = record.history(&key).unwrap();
    assert!(
        history
            .iter()
            .any(|v| v.resource == condition("c1", "original"))
    );
}

#[test]
fn lone_changes_merge_into_a_document_they_never_saw() {
    let owner = author("owner");
    let gp = author("gp");
    let mut r = Record::create(meta(), &ActorId::random());
    let existing = json!({"resourceType": "AuditEvent", "id": "a0", "action": "C"});
    r.put(stamp(&owner, 1), &existing).unwrap();
    r.commit(stamp(&owner, 1), "owner's entry");
    let saved = r.save_section(Section::Audit);
    let mut pieces = vec![saved];
    for id in ["a1", "a2"] {
        let entry = json!({"resourceType": "AuditEvent", "id": id, "action": "R"});
        let (section, bytes) =
            lone_change(stamp(&gp, 2), &entry, ActorId::random(), "read").unwrap();
        assert_eq!(section, Section::Audit);
        pieces.push(bytes);
    }
    let parts = BTreeMap::from([(Section::Audit, pieces)]);
    let (loaded, bad) = Record::load_parts(meta(), &parts, &ActorId::random());
    assert!(bad.is_empty());
    assert_eq!(loaded.len(Section::Audit), 3);
    let key: ResourceKey = "AuditEvent/a2".parse().unwrap();
    let Some(Current::One(version)) = loaded.current(&key).unwrap() else {
        panic!("one version of a2");
    };
    assert_eq!(version.author, gp);
    assert_eq!(version.resource["action"], "R");
    assert!(version.replaces.is_empty());
}

#[test]
fn keys_that_cannot_belong_to_a_section_are_not_read_from_it() {
    let patient = author("patient");
    let gp = author("gp");
    let allergy = json!({"resourceType": "AllergyIntolerance", "id": "peanut",
        "code": {"text": "Peanut allergy"}});
    let mut r = Record::create(meta(), &ActorId::random());
    r.put(stamp(&patient, 1), &allergy).unwrap();
    r.commit(stamp(&patient, 1), "allergy");
    let summary = r.save_section(Section::Summary);
    // What a compaction of `audit` could hold from before entries were checked: a grantee's
    // entry under the allergy's key. And an AuditEvent in `summary`.
    let fake = json!({"resourceType": "AllergyIntolerance", "id": "peanut",
        "code": {"text": "No known allergies"}});
    let (_, in_audit) = lone_change(stamp(&gp, 2), &fake, ActorId::random(), "entry").unwrap();
    let event = json!({"resourceType": "AuditEvent", "id": "e1", "action": "R"});
    let (_, in_summary) = lone_change(stamp(&gp, 2), &event, ActorId::random(), "entry").unwrap();
    let parts = BTreeMap::from([
        (Section::Summary, vec![summary, in_summary]),
        (Section::Audit, vec![in_audit]),
    ]);
    let (mut loaded, bad) = Record::load_parts(meta(), &parts, &ActorId::random());
    assert!(bad.is_empty());

    assert!(loaded.conflicts().unwrap().is_empty());
    let key: ResourceKey = "AllergyIntolerance/peanut".parse().unwrap();
    let Some(Current::One(version)) = loaded.current(&key).unwrap() else {
        panic!("one version of the allergy");
    };
    assert_eq!(version.resource, allergy);
    assert_eq!(loaded.history(&key).unwrap().len(), 1);
    assert!(loaded.resources(Section::Audit).unwrap().is_empty());
    assert_eq!(loaded.len(Section::Audit), 0);
    let types = |section, t| loaded.resources_of_type(section, t).unwrap().len();
    assert_eq!(types(Section::Audit, "AllergyIntolerance"), 0);
    assert_eq!(types(Section::Summary, "AuditEvent"), 0);
    assert_eq!(loaded.resources(Section::Summary).unwrap().len(), 1);
    assert_eq!(loaded.len(Section::Summary), 1);
    assert!(
        loaded
            .get(&"AuditEvent/e1".parse().unwrap())
            .unwrap()
            .is_none()
    );

    // A version that names the stray one as replaced does not bring it into the history.
    let stray = loaded
        .doc(Section::Audit)
        .get(ROOT, key.to_string())
        .unwrap();
    let (_, stray) = stray.expect("Automerge still holds it");
    let json = serde_json::to_string(&allergy).unwrap();
    let replaces = [format!("audit:{stray}")];
    let doc = loaded.doc_mut(Section::Summary);
    let stamp3 = stamp(&gp, 3);
    write_version(
        doc,
        Section::Summary,
        &key.to_string(),
        &json,
        stamp3,
        &replaces,
        &[],
    )
    .unwrap();
    let history = loaded.history(&key).unwrap();
    assert!(
        history.iter().all(|v| v.section == Section::Summary),
        "{history:#?}"
    );
    // And writes of the allergy go on as if the stray version were not there.
    let updated = json!({"resourceType": "AllergyIntolerance", "id": "peanut",
        "code": {"text": "Severe peanut allergy"}});
    assert_eq!(
        loaded.put(stamp(&patient, 4), &updated).unwrap(),
        PutOutcome::Updated
    );
}

mod author {
    use super::*;
    use crate::keys::{SigningKey, hex};

    fn version(author: &str, actor: &str) -> Version {
        Version {
            section: Section::Summary,
            id: format!("5@{actor}"),
            resource: Value::Null,
            author: Author {
                id: author.into(),
                name: "Ada".into(),
            },
            time: Timestamp::UNIX_EPOCH,
            replaces: Vec::new(),
            kept: None,
            import: None,
            removed: None,
            undoes: None,
            proven: true,
        }
    }

    #[test]
    fn the_named_author_must_be_the_writing_device() {
        let device = SigningKey::generate().peer_id();
        let other = SigningKey::generate().peer_id();
        let actor = format!("{}0102030405060708", hex(&device.public_key()[..16]));
        assert!(version(&device.to_string(), &actor).author_is_writer());
        assert!(!version(&other.to_string(), &actor).author_is_writer());
        assert!(!version("aaaaaaaa11", &actor).author_is_writer());
    }
}

/// Found by the `changes` fuzz target (its input, kept in the corpus): a change Automerge parses
/// but panics on when it applies it. Loading the section costs that piece, not the reader.
#[test]
fn a_piece_that_makes_automerge_panic_is_left_out_and_the_rest_loads() {
    let patient = author("patient");
    let mut r = Record::create(meta(), &ActorId::random());
    r.put(stamp(&patient, 1), &condition("c1", "Asthma"))
        .unwrap();
    r.commit(stamp(&patient, 1), "asthma");
    let good = r.save_section(Section::Summary);
    // With its checksum made to match, as a forger would (Automerge checks it on load).
    let forged = crate::changes::with_valid_checksum(include_bytes!(
        "../../../fuzz/corpus/changes/crash-op-on-a-missing-object"
    ));
    for pieces in [vec![forged.clone()], vec![good.clone(), forged.clone()]] {
        let parts = BTreeMap::from([(Section::Summary, pieces)]);
        let (_, bad) = Record::load_parts(meta(), &parts, &ActorId::random());
        assert!(
            matches!(
                &bad[..],
                [(Section::Summary, _, RecordError::AutomergePanicked { .. })]
            ),
            "{bad:?}"
        );
    }
    let parts = BTreeMap::from([(Section::Summary, vec![good, forged])]);
    let (loaded, bad) = Record::load_parts(meta(), &parts, &ActorId::random());
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        matches!(
            &bad[0],
            (Section::Summary, 1, RecordError::AutomergePanicked { .. })
        ),
        "{bad:?}"
    );
    assert_eq!(loaded.len(Section::Summary), 1);
}

/// A removal (an undone import's addition) hides the resource everywhere and keeps its
/// history; an edit made concurrently on another device outlives it, with no conflict to
/// settle; writing the resource again brings it back as new.
#[test]
fn a_removed_resource_is_gone_from_every_view_but_history_and_a_concurrent_edit_stands() {
    let (mut a, mut b) = two_replicas();
    let (alice, bob) = (author("a"), author("b"));
    let key: ResourceKey = "Condition/c1".parse().unwrap();
    a.remove(stamp(&alice, 1), &key, "undo of import 1234abcd", &[])
        .unwrap();
    a.commit(stamp(&alice, 1), "undo");
    assert_eq!(a.current(&key).unwrap(), None);
    assert_eq!(a.get(&key).unwrap(), None);
    assert_eq!(a.len(Section::Summary), 0);
    assert!(a.resources(Section::Summary).unwrap().is_empty());
    let history = a.history(&key).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        history[1].removed.as_deref(),
        Some("undo of import 1234abcd")
    );
    assert!(matches!(
        a.remove(stamp(&alice, 2), &key, "again", &[]),
        Err(RecordError::NotFound(_))
    ));

    // Meanwhile the other device edited it: the edit stands, and nothing waits for a person.
    b.put(stamp(&bob, 1), &condition("c1", "asthma, mild"))
        .unwrap();
    b.commit(stamp(&bob, 1), "edit");
    a.merge(&mut b).unwrap();
    let Some(Current::One(kept)) = a.current(&key).unwrap() else {
        panic!("the edit is the one version")
    };
    assert_eq!(kept.resource["code"]["text"], "asthma, mild");
    assert!(a.conflicts().unwrap().is_empty());
    assert_eq!(a.resources(Section::Summary).unwrap().len(), 1);
    // Writing over it supersedes the removal too.
    a.put(stamp(&alice, 3), &condition("c1", "asthma, moderate"))
        .unwrap();
    a.commit(stamp(&alice, 3), "edit");
    let Some(Current::One(last)) = a.current(&key).unwrap() else {
        panic!("one version")
    };
    assert_eq!(last.replaces.len(), 2, "{last:?}");

    // A resource removed alone comes back as new when written again.
    let mut c = Record::create(meta(), &ActorId::random());
    c.put(stamp(&alice, 0), &condition("c2", "eczema")).unwrap();
    let key2: ResourceKey = "Condition/c2".parse().unwrap();
    c.remove(stamp(&alice, 1), &key2, "undo", &[]).unwrap();
    assert_eq!(
        c.put(stamp(&alice, 2), &condition("c2", "eczema")).unwrap(),
        PutOutcome::Added
    );
    assert!(c.get(&key2).unwrap().is_some());
}
