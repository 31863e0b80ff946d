//! `audit verify`: check an audit log offline and say where it was tampered with.

use crate::cli::AuditCommand;
use crate::{audit, CtlError};

/// Runs `audit ...`.
pub fn run(cmd: AuditCommand) -> Result<(), CtlError> {
    match cmd {
        AuditCommand::Verify { file, keys, head } => {
            let report = audit::verify_file(&file, &keys, head.as_ref())?;
            say!(
                "{}: {}",
                file.display(),
                audit::describe_report(&report, !keys.is_empty(), head.is_some()).trim_end()
            );
        }
    }
    Ok(())
}
