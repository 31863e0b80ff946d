//! `cert issue`: a certificate carrying a role and id, for a generated key or a CSR.

use crate::cli::CertCommand;
use crate::{files, pki, CtlError};

/// Runs `cert ...`.
pub fn run(cmd: CertCommand) -> Result<(), CtlError> {
    match cmd {
        CertCommand::Issue {
            ca_dir,
            role,
            id,
            out_dir,
            csr,
            dns,
            ip,
            days,
        } => {
            let csr_pem = csr.as_deref().map(files::read_text).transpose()?;
            let extra = pki::Extra {
                dns,
                ips: ip,
                days: Some(days),
            };
            pki::issue_to_dir(&ca_dir, role, &id, &extra, csr_pem.as_deref(), &out_dir)?;
            say!(
                "issued {role} certificate for {id}: {}",
                out_dir.join(format!("{id}.pem")).display()
            );
            if csr_pem.is_none() {
                say!(
                    "private key: {}",
                    out_dir.join(format!("{id}.key")).display()
                );
            }
            say!("server name: {}", pki::server_name(role, &id));
        }
    }
    Ok(())
}
