//! `node status | seal | unseal`: one signer node, directly over mTLS with the
//! operator certificate; the unseal passphrase never comes from argv.

use zeroize::Zeroizing;

use crate::cli::{NodeCommand, PassphraseSource};
use crate::client;
use crate::{display, files, CtlError};

/// Runs `node ...`.
pub async fn run(cmd: NodeCommand) -> Result<(), CtlError> {
    let status = match cmd {
        NodeCommand::Status { conn } => client::node_status(&conn.resolve()?).await?,
        NodeCommand::Seal { conn } => {
            let status = client::seal_node(&conn.resolve()?).await?;
            say!(
                "node {} sealed: it refuses to sign until unsealed",
                status.node_id
            );
            status
        }
        NodeCommand::Unseal { conn, passphrase } => {
            let conn = conn.resolve()?;
            let status = client::unseal_node(&conn, read_passphrase(&passphrase)?).await?;
            say!("node {} unsealed", status.node_id);
            status
        }
    };
    say!("{}", display::describe_node_status(&status).trim_end());
    Ok(())
}

/// Reads the unseal passphrase from its file (dropping one trailing newline) or variable.
fn read_passphrase(source: &PassphraseSource) -> Result<Zeroizing<String>, CtlError> {
    let (passphrase, from) = match (&source.passphrase_file, &source.passphrase_env) {
        (Some(path), None) => {
            let mut text = Zeroizing::new(files::read_text(path)?);
            for suffix in ["\r\n", "\n"] {
                if text.ends_with(suffix) {
                    let keep = text.len() - suffix.len();
                    text.truncate(keep);
                    break;
                }
            }
            (text, format!("--passphrase-file {}", path.display()))
        }
        (None, Some(var)) => {
            let value = std::env::var(var)
                .map_err(|e| CtlError::InvalidInput(format!("--passphrase-env {var}: {e}")))?;
            (Zeroizing::new(value), format!("--passphrase-env {var}"))
        }
        _ => {
            return Err(CtlError::InvalidInput(
                "give exactly one of --passphrase-file FILE or --passphrase-env VAR".into(),
            ))
        }
    };
    if passphrase.is_empty() {
        return Err(CtlError::InvalidInput(format!(
            "{from}: the passphrase is empty"
        )));
    }
    Ok(passphrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_file_drops_one_newline_and_refuses_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pass");
        std::fs::write(&path, "correct horse battery\n").expect("write");
        let source = PassphraseSource {
            passphrase_file: Some(path.clone()),
            passphrase_env: None,
        };
        assert_eq!(
            read_passphrase(&source).expect("read").as_str(),
            "correct horse battery"
        );
        std::fs::write(&path, "\n").expect("write");
        let err = read_passphrase(&source).expect_err("empty").to_string();
        assert!(
            err.contains("empty") && err.contains("--passphrase-file"),
            "{err}"
        );
    }
}
