//! The consent rules tested: keys that follow the ledger, and the ingest check.
use super::*;
use crate::{
    blob::BlobHeader,
    keys::{AgeIdentity, OpId},
    ledger::{Access, RevokeTarget},
    party::{Party, Role},
};

struct Node {
    key: SigningKey,
    age: AgeIdentity,
    role: Role,
}

impl Node {
    fn new(role: Role) -> Self {
        Self {
            key: SigningKey::generate(),
            age: AgeIdentity::generate(),
            role,
        }
    }

    fn party(&self) -> Party {
        Party {
            peer: self.key.peer_id(),
            recipient: self.age.recipient(),
            name: format!("{:?}", self.role),
            role: self.role,
            ods: None,
        }
    }

    fn keyring(&self, ledger: &Ledger) -> Keyring {
        Keyring::unlock(ledger, &self.key.peer_id(), &self.age)
    }

    /// A blob of `section` sealed by this node under the ledger's current heads.
    fn write(&self, ledger: &Ledger, section: Section, kind: BlobKind) -> Blob {
        let keyring = self.keyring(ledger);
        let (epoch, key) = writing_key(ledger, &keyring, section, 10).unwrap();
        self.seal(ledger.heads(), section, kind, epoch, key, ledger.record())
    }

    fn seal(
        &self,
        heads: Vec<OpId>,
        section: Section,
        kind: BlobKind,
        epoch: u32,
        key: &SectionKey,
        record: RecordId,
    ) -> Blob {
        let header = BlobHeader {
            record,
            section,
            kind,
            epoch,
            key_id: key.id(),
            author: self.key.peer_id(),
            time_ms: 10,
            ledger_heads: heads,
            replaces: Vec::new(),
            proofs: Vec::new(),
        };
        Blob::seal(header, key, b"changes", &self.key).unwrap()
    }

    /// An audit entry of this node sealed to the owners the ledger names at `heads`.
    fn seal_to_owners(&self, ledger: &Ledger, heads: Vec<OpId>, section: Section) -> Blob {
        let owners: Vec<AgeRecipient> = ledger
            .state_at(&heads)
            .unwrap()
            .owners
            .values()
            .map(|party| party.recipient.clone())
            .collect();
        let header = BlobHeader {
            record: ledger.record(),
            section,
            kind: BlobKind::SealedToOwners,
            epoch: 0,
            key_id: KeyId([0; 16]),
            author: self.key.peer_id(),
            time_ms: 10,
            ledger_heads: heads,
            replaces: Vec::new(),
            proofs: Vec::new(),
        };
        Blob::seal_to_owners(header, &owners, b"entry", &self.key).unwrap()
    }
}

/// A record with its first device, a GP with write access to summary and a pharmacy with
/// read access to summary, keys in step.
fn record() -> (Ledger, Node, Node, Node) {
    let root = SigningKey::generate();
    let laptop = Node::new(Role::Patient);
    let gp = Node::new(Role::Provider);
    let pharmacy = Node::new(Role::Provider);
    let mut ledger = Ledger::create(&root, laptop.party(), 0).unwrap();
    let mut keyring = laptop.keyring(&ledger);
    for (who, access) in [(&gp, Access::Write), (&pharmacy, Access::Read)] {
        let body = OpBody::Grant {
            grantee: who.party(),
            sections: vec![Section::Summary],
            access,
            expires_ms: None,
            purpose: None,
        };
        ledger.append(&laptop.key, body, 1).unwrap();
    }
    repair(&mut ledger, &mut keyring, &laptop.key, 2).unwrap();
    (ledger, laptop, gp, pharmacy)
}

#[test]
fn repair_gives_every_section_a_key_and_is_idempotent() {
    let (mut ledger, laptop, gp, pharmacy) = record();
    let mut keyring = laptop.keyring(&ledger);
    assert_eq!(keyring.sections().len(), Section::ALL.len());
    assert_eq!(
        gp.keyring(&ledger).sections(),
        BTreeSet::from([Section::Summary])
    );
    assert_eq!(
        pharmacy.keyring(&ledger).sections(),
        BTreeSet::from([Section::Summary])
    );
    let again = repair(&mut ledger, &mut keyring, &laptop.key, 3).unwrap();
    assert!(again.is_empty(), "nothing changed, nothing appended");
    let mut gp_keys = gp.keyring(&ledger);
    assert!(
        repair(&mut ledger, &mut gp_keys, &gp.key, 3)
            .unwrap()
            .is_empty(),
        "a grantee never issues keys"
    );
}

#[test]
fn a_writer_within_its_grant_is_accepted() {
    let (ledger, laptop, gp, _) = record();
    let id = ledger.record();
    let blob = gp.write(&ledger, Section::Summary, BlobKind::Changes);
    assert_eq!(check_blob(&blob, &ledger, id, Section::Summary), Ok(()));
    let blob = laptop.write(&ledger, Section::Sensitive, BlobKind::Compaction);
    assert_eq!(check_blob(&blob, &ledger, id, Section::Sensitive), Ok(()));
}

#[test]
fn writes_outside_consent_are_refused() {
    let (ledger, laptop, gp, pharmacy) = record();
    let id = ledger.record();
    let key = laptop.keyring(&ledger);
    let (epoch, clinical) = writing_key(&ledger, &key, Section::Clinical, 10).unwrap();
    // The GP got hold of a clinical key somehow: it still may not write clinical.
    let blob = gp.seal(
        ledger.heads(),
        Section::Clinical,
        BlobKind::Changes,
        epoch,
        clinical,
        id,
    );
    assert!(matches!(
        check_blob(&blob, &ledger, id, Section::Clinical),
        Err(IngestError::NotAllowed { .. })
    ));
    let blob = pharmacy.write(&ledger, Section::Summary, BlobKind::Changes);
    assert!(matches!(
        check_blob(&blob, &ledger, id, Section::Summary),
        Err(IngestError::NotAllowed { .. })
    ));
    let blob = gp.write(&ledger, Section::Summary, BlobKind::Compaction);
    assert!(
        matches!(
            check_blob(&blob, &ledger, id, Section::Summary),
            Err(IngestError::NotAllowed { .. })
        ),
        "only owner devices compact"
    );
    let outsider = Node::new(Role::Provider);
    let blob = outsider.seal(
        ledger.heads(),
        Section::Summary,
        BlobKind::Changes,
        0,
        &SectionKey::generate(),
        id,
    );
    assert!(check_blob(&blob, &ledger, id, Section::Summary).is_err());
}

#[test]
fn misplaced_unknown_heads_and_unknown_keys_are_refused() {
    let (ledger, laptop, gp, _) = record();
    let id = ledger.record();
    let blob = gp.write(&ledger, Section::Summary, BlobKind::Changes);
    assert!(matches!(
        check_blob(&blob, &ledger, id, Section::Clinical),
        Err(IngestError::Misplaced { .. })
    ));
    assert!(matches!(
        check_blob(&blob, &ledger, RecordId([9; 16]), Section::Summary),
        Err(IngestError::Misplaced { .. })
    ));
    let blob = laptop.seal(
        vec![OpId([7; 32])],
        Section::Summary,
        BlobKind::Changes,
        0,
        &SectionKey::generate(),
        id,
    );
    assert!(matches!(
        check_blob(&blob, &ledger, id, Section::Summary),
        Err(IngestError::UnknownLedgerHeads(_))
    ));
    let blob = laptop.seal(
        ledger.heads(),
        Section::Summary,
        BlobKind::Changes,
        0,
        &SectionKey::generate(),
        id,
    );
    assert!(matches!(
        check_blob(&blob, &ledger, id, Section::Summary),
        Err(IngestError::UnknownKey(_))
    ));
}

#[test]
fn revocation_rotates_and_refuses_the_revoked_writer_under_later_consent() {
    let (mut ledger, laptop, gp, pharmacy) = record();
    let id = ledger.record();
    let before = ledger.heads();
    let old_key = ledger
        .state()
        .current_key(Section::Summary, 3)
        .unwrap()
        .key_id;
    ledger
        .append(
            &laptop.key,
            OpBody::Revoke {
                target: RevokeTarget::Party(gp.key.peer_id()),
            },
            3,
        )
        .unwrap();
    let mut keyring = laptop.keyring(&ledger);
    let appended = repair(&mut ledger, &mut keyring, &laptop.key, 4).unwrap();
    assert_eq!(appended.len(), 1, "one new epoch, for summary only");
    let current = ledger
        .state()
        .current_key(Section::Summary, 4)
        .unwrap()
        .clone();
    assert_ne!(current.key_id, old_key);
    assert!(gp.keyring(&ledger).get(&current.key_id).is_none());
    assert!(pharmacy.keyring(&ledger).get(&current.key_id).is_some());
    assert!(!current.holders.contains(&gp.key.peer_id()));

    // Under the consent after the revocation, the GP may not write.
    let stale_key = gp.keyring(&ledger);
    let stale = stale_key.get(&old_key).unwrap();
    let blob = gp.seal(
        ledger.heads(),
        Section::Summary,
        BlobKind::Changes,
        0,
        stale,
        id,
    );
    assert!(matches!(
        check_blob(&blob, &ledger, id, Section::Summary),
        Err(IngestError::NotAllowed { .. })
    ));
    // Written under the consent before it (offline work, or a back-dated claim): accepted,
    // and judged the same by every node. Documented in docs/FORMAT.md.
    let blob = gp.seal(before, Section::Summary, BlobKind::Changes, 0, stale, id);
    assert_eq!(check_blob(&blob, &ledger, id, Section::Summary), Ok(()));
}

#[test]
fn grantees_and_owners_append_audit_entries_sealed_to_the_owners() {
    let (ledger, laptop, gp, pharmacy) = record();
    let id = ledger.record();
    for who in [&laptop, &gp, &pharmacy] {
        let blob = who.seal_to_owners(&ledger, ledger.heads(), Section::Audit);
        assert_eq!(check_blob(&blob, &ledger, id, Section::Audit), Ok(()));
    }
}

#[test]
fn entries_sealed_to_the_owners_are_refused_outside_audit_or_consent() {
    let (mut ledger, laptop, gp, pharmacy) = record();
    let id = ledger.record();
    let blob = gp.seal_to_owners(&ledger, ledger.heads(), Section::Summary);
    assert!(matches!(
        check_blob(&blob, &ledger, id, Section::Summary),
        Err(IngestError::SealedOutsideAudit { .. })
    ));
    let outsider = Node::new(Role::Provider);
    let blob = outsider.seal_to_owners(&ledger, ledger.heads(), Section::Audit);
    assert!(matches!(
        check_blob(&blob, &ledger, id, Section::Audit),
        Err(IngestError::NotAllowed { .. })
    ));
    // A relay carries the record but has no read or write grant: it logs nothing.
    let relay = Node::new(Role::Relay);
    let body = OpBody::Grant {
        grantee: relay.party(),
        sections: vec![Section::Summary],
        access: Access::Relay,
        expires_ms: None,
        purpose: None,
    };
    ledger.append(&laptop.key, body, 3).unwrap();
    let blob = relay.seal_to_owners(&ledger, ledger.heads(), Section::Audit);
    assert!(matches!(
        check_blob(&blob, &ledger, id, Section::Audit),
        Err(IngestError::NotAllowed { .. })
    ));
    // After the pharmacy's revocation, it may no longer append under the new consent.
    let before = ledger.heads();
    let revoke = OpBody::Revoke {
        target: RevokeTarget::Party(pharmacy.key.peer_id()),
    };
    ledger.append(&laptop.key, revoke, 4).unwrap();
    let blob = pharmacy.seal_to_owners(&ledger, ledger.heads(), Section::Audit);
    assert!(matches!(
        check_blob(&blob, &ledger, id, Section::Audit),
        Err(IngestError::NotAllowed { .. })
    ));
    // Under the consent before it, as for every blob (see the revocation test above).
    let blob = pharmacy.seal_to_owners(&ledger, before, Section::Audit);
    assert_eq!(check_blob(&blob, &ledger, id, Section::Audit), Ok(()));
}

#[test]
fn an_expired_grantee_appends_no_audit_entry() {
    let root = SigningKey::generate();
    let laptop = Node::new(Role::Patient);
    let gp = Node::new(Role::Provider);
    let mut ledger = Ledger::create(&root, laptop.party(), 0).unwrap();
    let body = OpBody::Grant {
        grantee: gp.party(),
        sections: vec![Section::Summary],
        access: Access::Read,
        expires_ms: Some(5),
        purpose: None,
    };
    ledger.append(&laptop.key, body, 1).unwrap();
    // The helper stamps its blobs at time 10, after the grant lapsed.
    let blob = gp.seal_to_owners(&ledger, ledger.heads(), Section::Audit);
    assert!(matches!(
        check_blob(&blob, &ledger, ledger.record(), Section::Audit),
        Err(IngestError::NotAllowed { .. })
    ));
}
