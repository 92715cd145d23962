//! Error reporting and exit codes: 1 for a user error, 2 for anything else.

use std::process::ExitCode;

use phr_core::{
    entry::EntryError, fhir::reference::BadResourceKey, home::HomeError, import::ImportError,
    nhs::NhsNumberError, record::RecordError, section::UnknownSection,
};

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
            || cause.is::<BadResourceKey>()
            || cause.is::<UnknownSection>()
            || matches!(
                cause.downcast_ref::<HomeError>(),
                Some(
                    HomeError::NotInitialised(_)
                        | HomeError::AlreadyInitialised(_)
                        | HomeError::NoRecord(_)
                        | HomeError::Busy(_)
                )
            )
            || matches!(
                cause.downcast_ref::<RecordError>(),
                Some(
                    RecordError::Conflicted(_)
                        | RecordError::NotFound(_)
                        | RecordError::NotInConflict(_)
                        | RecordError::UnknownVersion { .. }
                )
            )
    })
}

/// Prints the error chain on stderr and picks the exit code.
pub fn report(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    if is_user_error(error) {
        ExitCode::from(1)
    } else {
        ExitCode::from(2)
    }
}
