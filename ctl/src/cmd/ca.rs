//! `ca init`: create the cluster certificate authority.

use crate::cli::CaCommand;
use crate::{pki, CtlError};

/// Runs `ca ...`.
pub fn run(cmd: CaCommand) -> Result<(), CtlError> {
    match cmd {
        CaCommand::Init { dir, name } => {
            pki::init_ca(&dir, &name)?;
            say!("created CA {name:?}: {}", dir.join(pki::CA_CERT).display());
            say!(
                "its private key is {}; keep it offline",
                dir.join(pki::CA_KEY).display()
            );
        }
    }
    Ok(())
}
