//! What an audit entry sealed to the owners may hold.
//!
//! A grantee that holds no key of `audit` logs a read or write as one `AuditEvent`, written by
//! [`crate::record::lone_change`] as a change of its own, and seals it to the owner devices. The
//! owner device that opens it cannot ask the writer what it meant, and the change merges into
//! the audit document like any other write: whatever it holds becomes part of the record. So an
//! owner takes an entry only if it is exactly what `lone_change` makes of an `AuditEvent`:
//!
//! - one change chunk, inflating to at most [`super::AUDIT_ENTRY_BYTES_MAX`], by an actor of the signer;
//! - a change that stands alone: no dependencies, the actor's first, and no operation that
//!   overwrites or deletes anything (else a grantee could rewrite the entries it logged before);
//! - applied to an empty document, one root key `AuditEvent/<uuid>` holding one version in the
//!   layout [`crate::record::Record::put`] writes, whose resource is that very `AuditEvent`.
//!
//! An entry under another key (seen: the key of the patient's allergy, which made the entry a
//! conflicting version of it) is refused here; the record's read path also ignores keys that
//! cannot belong to a section, for entries that reached a compaction before this check.

use automerge::{
    AutoCommit, Change, ExpandedChange, ObjType,
    legacy::{ObjectId, OpId, OpType},
};

use super::{AUDIT_ENTRY, changes, check_actor};
use crate::{keys::PeerId, record, section::Section};

/// The resource type of every audit entry, and the only one the `audit` section holds.
const AUDIT_EVENT: &str = "AuditEvent";

/// Checks that an audit entry sealed to the owners is one `AuditEvent`, new, written as
/// [`crate::record::lone_change`] writes it, by an actor of its signer (see the module
/// documentation). Errors say what is wrong, for the user.
pub fn check_audit_entry(signer: &PeerId, plaintext: &[u8]) -> Result<(), String> {
    let all = changes(plaintext, AUDIT_ENTRY)?;
    let count = all.len();
    let Ok([change]) = <[Change; 1]>::try_from(all) else {
        return Err(format!(
            "it is an audit entry of {count} changes, where an entry is exactly one"
        ));
    };
    check_actor(signer, change.actor_id())?;
    if !change.deps().is_empty() || change.seq() != 1 {
        return Err(
            "it is an audit entry that builds on earlier changes, where an entry \
                    stands alone"
                .into(),
        );
    }
    // Judged before Automerge applies (and takes) the change, told after the layout: a change
    // that is not even one entry is described as that.
    let adds_only = check_adds_only(&change);
    let mut doc = AutoCommit::new();
    super::catch_automerge_panic(|| doc.apply_changes([change]))
        .map_err(|panic| {
            format!("it is an audit entry that Automerge cannot apply (it panicked: {panic})")
        })?
        .map_err(|e| format!("it is an audit entry that Automerge cannot apply: {e}"))?;
    let (key, _) = record::lone_version(&doc, Section::Audit)?;
    if key.resource_type != AUDIT_EVENT || !is_uuid(&key.id) {
        return Err(format!(
            "it is an audit entry filed under {key}, where an entry is a new AuditEvent/<uuid>"
        ));
    }
    adds_only
}

/// Whether `id` is a UUID in the form `crate::new_id` writes (lower case, hyphenated).
fn is_uuid(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok_and(|uuid| uuid.hyphenated().to_string() == id)
}

/// Checks that the change only adds: its first operation makes a map at the root, and every
/// other one puts a value into that map, overwriting nothing. Whatever document it merges into,
/// it cannot reach what others wrote, or what its writer logged before.
fn check_adds_only(change: &Change) -> Result<(), String> {
    let ExpandedChange {
        operations,
        actor_id,
        start_op,
        ..
    } = change.decode();
    let version = ObjectId::Id(OpId(start_op.get(), actor_id));
    let Some((first, rest)) = operations.split_first() else {
        return Err("it is an audit entry that writes nothing".into());
    };
    let makes_version = first.obj == ObjectId::Root && first.action == OpType::Make(ObjType::Map);
    let fills_version = rest
        .iter()
        .all(|op| op.obj == version && matches!(op.action, OpType::Put(_)));
    let new_only = operations.iter().all(|op| op.pred.is_empty() && !op.insert);
    if !(makes_version && fills_version && new_only) {
        return Err("it is an audit entry that does more than add one new version".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use automerge::{ROOT, ScalarValue, transaction::Transactable};
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        audit::entry_actor,
        keys::SigningKey,
        record::{Author, Record, RecordMeta, Stamp, lone_change},
    };

    fn author(peer: &PeerId) -> Author {
        Author {
            id: peer.to_string(),
            name: "Leeds GP".into(),
        }
    }

    fn at() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn event(id: &str) -> Value {
        json!({"resourceType": "AuditEvent", "id": id, "action": "R", "recorded": at().to_string(),
            "entity": [{"description": "show: summary"}]})
    }

    /// An entry as a grantee writes it: one resource, one lone change by a fresh actor of `peer`.
    fn entry(peer: &PeerId, resource: &Value) -> Vec<u8> {
        let author = author(peer);
        let stamp = Stamp {
            author: &author,
            time: at(),
        };
        lone_change(stamp, resource, entry_actor(peer), "audit: show")
            .unwrap()
            .1
    }

    /// A lone change in the version layout, put together by hand under any `key`, with any
    /// `resource` text and any extra fields.
    fn hand_made(peer: &PeerId, key: &str, resource: &str, extra: &[&str]) -> Vec<u8> {
        let mut doc = AutoCommit::new().with_actor(entry_actor(peer));
        let version = doc.put_object(ROOT, key, ObjType::Map).unwrap();
        doc.put(&version, "resource", resource).unwrap();
        doc.put(&version, "author", peer.to_string()).unwrap();
        doc.put(&version, "author_name", "Leeds GP").unwrap();
        let time = ScalarValue::Timestamp(at().as_millisecond());
        doc.put(&version, "time", time).unwrap();
        for field in extra {
            doc.put(&version, *field, "x").unwrap();
        }
        doc.commit();
        doc.save_after(&[])
    }

    /// The same change compressed (chunk type 2), as Automerge makes it when asked for a
    /// change's bytes.
    fn compressed(change: &[u8]) -> Vec<u8> {
        let mut change = Change::try_from(change).unwrap();
        let bytes = change.bytes().into_owned();
        assert_eq!(bytes[8], super::super::CHUNK_COMPRESSED_CHANGE);
        bytes
    }

    /// Found by the `changes` fuzz target: a change whose operations name an actor its header
    /// does not list made Automerge's `Change::decode` panic (an `unwrap` on the actor lookup), so
    /// a grantee could crash the owner device that opens its audit entry, and again each time
    /// that device read the stored entry.
    #[test]
    fn an_entry_naming_an_actor_it_does_not_list_is_refused_not_a_panic() {
        let gp = SigningKey::generate().peer_id();
        let id = crate::new_id();
        let mut doc = AutoCommit::new();
        doc.load_incremental(&entry(&gp, &event(&id))).unwrap();
        let heads = doc.get_heads();
        let mut doc = doc.fork().with_actor(entry_actor(&gp));
        doc.put_object(ROOT, format!("AuditEvent/{id}"), ObjType::Map)
            .unwrap();
        doc.commit();
        let forged =
            crate::changes::actor_table::without_deps_or_other_actors(&doc.save_after(&heads));
        let change = Change::try_from(&forged[..]).unwrap();
        assert!(change.deps().is_empty() && change.other_actor_ids().is_empty());
        let err = check_audit_entry(&gp, &forged).unwrap_err();
        assert!(err.contains("name actor 2 of the 1 it lists"), "{err}");
    }

    /// Found by the `changes` fuzz target (the input it found, kept in its corpus): a change of
    /// the signer's actor, standing alone, whose operations write into an object the document
    /// does not hold. Automerge's `apply_changes` panicked ("Missing from Index") instead of
    /// refusing it.
    #[test]
    fn an_entry_that_makes_automerge_panic_is_refused_not_a_crash() {
        let forged = include_bytes!("../../../fuzz/corpus/changes/crash-op-on-a-missing-object");
        let signer = crate::fuzzing::signer().peer_id();
        let err = check_audit_entry(&signer, forged).unwrap_err();
        assert!(
            err.contains("panicked: Obj ObjId(OpId(1, 0)) Missing from Index"),
            "{err}"
        );
    }

    #[test]
    fn an_honest_entry_passes_compressed_or_not() {
        let gp = SigningKey::generate().peer_id();
        let honest = entry(&gp, &event(&crate::new_id()));
        check_audit_entry(&gp, &honest).unwrap();
        check_audit_entry(&gp, &compressed(&honest)).unwrap();
    }

    #[test]
    fn an_entry_that_inflates_past_the_limit_is_refused_quickly() {
        let gp = SigningKey::generate().peer_id();
        let mut large = event(&crate::new_id());
        large["entity"][0]["description"] = "a".repeat(10_000_000).into();
        let bomb = compressed(&entry(&gp, &large));
        assert!(bomb.len() < 16 * 1024, "{} bytes compressed", bomb.len());
        let started = Instant::now();
        let err = check_audit_entry(&gp, &bomb).unwrap_err();
        let took = started.elapsed();
        assert!(err.contains("more than 64 KiB"), "{err}");
        assert!(took < Duration::from_millis(100), "took {took:?}");
        // Within the limit for a changes blob, it would have passed as one.
        crate::changes::check_authorship(&gp, &bomb).unwrap();
    }

    #[test]
    fn an_entry_under_another_resources_key_is_refused() {
        let gp = SigningKey::generate().peer_id();
        let allergy = json!({"resourceType": "AllergyIntolerance", "id": "peanut",
            "code": {"text": "No allergy"}});
        let err = check_audit_entry(&gp, &entry(&gp, &allergy)).unwrap_err();
        assert!(
            err.contains("filed under AllergyIntolerance/peanut"),
            "{err}"
        );
        // Nor may an AuditEvent carry another id than a fresh UUID.
        let err = check_audit_entry(&gp, &entry(&gp, &event("peanut"))).unwrap_err();
        assert!(err.contains("filed under AuditEvent/peanut"), "{err}");
    }

    #[test]
    fn an_entry_whose_resource_is_not_the_audit_event_of_its_key_is_refused() {
        let gp = SigningKey::generate().peer_id();
        let id = crate::new_id();
        let key = format!("AuditEvent/{id}");
        let allergy = json!({"resourceType": "AllergyIntolerance", "id": id}).to_string();
        let err = check_audit_entry(&gp, &hand_made(&gp, &key, &allergy, &[])).unwrap_err();
        assert!(
            err.contains(&format!("AllergyIntolerance/{id} under")),
            "{err}"
        );
        let other = event(&crate::new_id()).to_string();
        assert!(check_audit_entry(&gp, &hand_made(&gp, &key, &other, &[])).is_err());
        assert!(check_audit_entry(&gp, &hand_made(&gp, &key, "not json", &[])).is_err());
        // The version layout itself is what `lone_change` writes, nothing more.
        let own = event(&id).to_string();
        check_audit_entry(&gp, &hand_made(&gp, &key, &own, &[])).unwrap();
        for extra in ["replaces", "kept", "resourceType"] {
            let err = check_audit_entry(&gp, &hand_made(&gp, &key, &own, &[extra])).unwrap_err();
            assert!(err.contains(&format!("field '{extra}'")), "{err}");
        }
    }

    #[test]
    fn an_entry_of_two_resources_or_two_changes_is_refused() {
        let gp = SigningKey::generate().peer_id();
        let author = author(&gp);
        let stamp = Stamp {
            author: &author,
            time: at(),
        };
        let meta = RecordMeta {
            id: "r".into(),
            subject: None,
            nhs_number: None,
        };
        let mut two = Record::create(meta, &entry_actor(&gp));
        two.put(stamp, &event(&crate::new_id())).unwrap();
        two.put(stamp, &event(&crate::new_id())).unwrap();
        two.commit(stamp, "two entries");
        let (section, bytes) = two.take_unsaved().remove(0);
        assert_eq!(section, Section::Audit);
        let err = check_audit_entry(&gp, &bytes).unwrap_err();
        assert!(err.contains("holds 2 resources"), "{err}");
        let both = [
            entry(&gp, &event(&crate::new_id())),
            entry(&gp, &event(&crate::new_id())),
        ];
        let err = check_audit_entry(&gp, &both.concat()).unwrap_err();
        assert!(err.contains("of 2 changes"), "{err}");
        assert!(check_audit_entry(&gp, &[]).is_err());
    }

    #[test]
    fn an_entry_by_another_actor_or_that_rewrites_an_earlier_one_is_refused() {
        let gp = SigningKey::generate().peer_id();
        let pharmacy = SigningKey::generate().peer_id();
        let theirs = entry(&pharmacy, &event(&crate::new_id()));
        let err = check_audit_entry(&gp, &theirs).unwrap_err();
        assert!(err.contains("another actor"), "{err}");
        // The GP writes over its own earlier entry: a change that builds on it.
        let id = crate::new_id();
        let mut doc = AutoCommit::new();
        doc.load_incremental(&entry(&gp, &event(&id))).unwrap();
        let heads = doc.get_heads();
        let mut doc = doc.fork().with_actor(entry_actor(&gp));
        let version = doc
            .put_object(ROOT, format!("AuditEvent/{id}"), ObjType::Map)
            .unwrap();
        for (field, value) in [
            ("resource", event(&id).to_string()),
            ("author", gp.to_string()),
        ] {
            doc.put(&version, field, value).unwrap();
        }
        doc.put(&version, "author_name", "Leeds GP").unwrap();
        let time = ScalarValue::Timestamp(at().as_millisecond());
        doc.put(&version, "time", time).unwrap();
        doc.commit();
        let rewrite = doc.save_after(&heads);
        let err = check_audit_entry(&gp, &rewrite).unwrap_err();
        assert!(err.contains("builds on earlier changes"), "{err}");
    }
}
