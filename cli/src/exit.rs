//! Error reporting and exit codes: 1 for a user error, 2 for anything else.

use std::process::ExitCode;

use phr_core::{
    appointments::AppointmentError,
    card::CardError,
    entry::{CorrectionError, EntryError},
    fhir::reference::BadResourceKey,
    home::HomeError,
    import::ImportError,
    keys::KeyError,
    keystore::KeystoreError,
    ledger::LedgerError,
    messages::MessageError,
    nhs::NhsNumberError,
    record::RecordError,
    repeats::RepeatError,
    section::UnknownSection,
};

use crate::context::tell;

/// A user error raised in the CLI itself (bad combination of flags and the like).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

fn is_user_error(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<UserError>()
            || cause.is::<ImportError>()
            || cause.is::<NhsNumberError>()
            || cause.is::<EntryError>()
            || cause.is::<MessageError>()
            || cause.is::<RepeatError>()
            || cause.is::<AppointmentError>()
            || cause.is::<CorrectionError>()
            || cause.is::<BadResourceKey>()
            || cause.is::<UnknownSection>()
            || cause.is::<CardError>()
            || cause.is::<phr_core::emergency::CardError>()
            || cause.is::<KeyError>()
            // A refused consent change is the user's to fix (not an owner, audit, ...).
            || cause.is::<LedgerError>()
            || cause.downcast_ref::<KeystoreError>().is_some_and(keystore_user_error)
            || cause.downcast_ref::<HomeError>().is_some_and(home_user_error)
            || matches!(
                cause.downcast_ref::<RecordError>(),
                Some(
                    RecordError::Conflicted(_)
                        | RecordError::NotFound(_)
                        | RecordError::NotInConflict(_)
                        | RecordError::UnknownVersion { .. }
                        | RecordError::UnknownImport(_)
                )
            )
    })
}

/// Keystore problems the user can fix: a passphrase, a missing file, its permissions. A damaged
/// keystore is not the user's doing (exit 2).
fn keystore_user_error(error: &KeystoreError) -> bool {
    matches!(
        error,
        KeystoreError::Missing(_)
            | KeystoreError::WrongPassphrase
            | KeystoreError::PassphraseNeeded
            | KeystoreError::EmptyPassphrase
            | KeystoreError::InsecurePermissions { .. }
    )
}

/// `HomeError` wraps the lower errors transparently (they are not separate links of the
/// chain), so they are looked into here.
fn home_user_error(error: &HomeError) -> bool {
    match error {
        HomeError::NotInitialised(_)
        | HomeError::AlreadyInitialised(_)
        | HomeError::NoRecord(_)
        | HomeError::Busy(_)
        | HomeError::UnknownContact(_)
        | HomeError::AmbiguousContact { .. }
        | HomeError::NoRootKey
        | HomeError::NotOwner
        | HomeError::WrongRole(_)
        | HomeError::NothingToDo(_)
        // Permissions: the message gives the `chmod` that fixes them.
        | HomeError::WritableByOthers { .. }
        | HomeError::CannotRestrict { .. }
        | HomeError::Card(_)
        | HomeError::Key(_)
        | HomeError::Import(_)
        | HomeError::Ledger(_)
        // Unknown, ambiguous, not granted, expired, outside the grant: the user's to fix.
        | HomeError::Provider(_)
        // The imported medicines table was changed by hand: import it again or remove it.
        | HomeError::MedicinesTable { .. } => true,
        HomeError::Keystore(e) => keystore_user_error(e),
        HomeError::Record(e) => matches!(
            e,
            RecordError::Conflicted(_)
                | RecordError::NotFound(_)
                | RecordError::NotInConflict(_)
                | RecordError::UnknownVersion { .. }
        ),
        _ => false,
    }
}

/// Prints the error chain on stderr and picks the exit code.
pub fn report(error: &anyhow::Error) -> ExitCode {
    tell(&format!("error: {error:#}"));
    if is_user_error(error) {
        ExitCode::from(1)
    } else {
        ExitCode::from(2)
    }
}
