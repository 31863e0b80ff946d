//! `custody-key ...` and `approver-key ...`: generate an Ed25519 key file or print its public key.

use crate::cli::KeyFileCommand;
use crate::{keys, CtlError};

/// Runs `custody-key ...` or `approver-key ...`; `what` names the key in messages.
pub fn run(cmd: KeyFileCommand, what: &str) -> Result<(), CtlError> {
    match cmd {
        KeyFileCommand::Generate { out } => {
            let public = keys::generate_key_file(&out)?;
            eprintln!("wrote the {what} to {} (mode 0600)", out.display());
            say!("{}", hex::encode(public.as_bytes()));
        }
        KeyFileCommand::Public { key } => {
            say!(
                "{}",
                hex::encode(keys::load_key_file(&key)?.verifying_key().as_bytes())
            );
        }
    }
    Ok(())
}
