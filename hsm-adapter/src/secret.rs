//! Where a passphrase or PIN comes from: a file or an environment variable, never argv
//! (which any local user can read from `/proc`).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::SealError;

/// A secret file larger than this is a misconfiguration (a key file given by mistake, say).
const MAX_SECRET_FILE_LEN: u64 = 64 * 1024;

/// Where a passphrase or PIN is read from. Holds only the location, never the secret.
// Deriving Debug is safe here, and on purpose: the value is a path or a variable
// name, which errors and logs should show. The secret itself is only ever the
// `Zeroizing<String>` that `read` returns, which no type here keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file whose whole content is the secret (one trailing newline is ignored).
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(path) => write!(f, "file {}", path.display()),
            SecretSource::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

impl SecretSource {
    /// Reads the secret, dropping one trailing newline (`\n` or `\r\n`) as editors and
    /// `echo` add one. An empty or unreadable secret is an error naming this source.
    pub fn read(&self) -> Result<Zeroizing<String>, SealError> {
        let mut secret = match self {
            SecretSource::File(path) => read_file(path)?,
            SecretSource::Env(name) => {
                let value = std::env::var_os(name).ok_or_else(|| self.refused("is not set"))?;
                Zeroizing::new(
                    value
                        .into_string()
                        .map_err(|_| self.refused("is not valid UTF-8"))?,
                )
            }
        };
        let newline = if secret.ends_with("\r\n") {
            2
        } else {
            usize::from(secret.ends_with('\n'))
        };
        let keep = secret.len() - newline;
        secret.truncate(keep);
        if secret.is_empty() {
            return Err(self.refused("is empty"));
        }
        Ok(secret)
    }

    fn refused(&self, reason: &str) -> SealError {
        SealError::Secret {
            origin: self.to_string(),
            reason: reason.into(),
        }
    }
}

/// Reads into a buffer sized up front so that no reallocation leaves an unzeroed partial copy
/// of the secret behind on the heap.
fn read_file(path: &Path) -> Result<Zeroizing<String>, SealError> {
    let refused = |reason: &str| SecretSource::File(path.to_path_buf()).refused(reason);
    let file = std::fs::File::open(path).map_err(|e| SealError::io(path, e))?;
    let len = file.metadata().map_err(|e| SealError::io(path, e))?.len();
    if len > MAX_SECRET_FILE_LEN {
        return Err(refused("is larger than 64 KiB; is it the right file?"));
    }
    // `len` is at most 64 KiB here, so the cast cannot truncate.
    let mut bytes = Zeroizing::new(Vec::with_capacity(len as usize + 1));
    file.take(MAX_SECRET_FILE_LEN)
        .read_to_end(&mut bytes)
        .map_err(|e| SealError::io(path, e))?;
    if std::str::from_utf8(&bytes).is_err() {
        return Err(refused("is not valid UTF-8"));
    }
    // Moves the buffer (no copy); UTF-8 was checked just above, so this cannot fail.
    String::from_utf8(std::mem::take(&mut *bytes))
        .map(Zeroizing::new)
        .map_err(|_| refused("is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, content: &[u8]) -> SecretSource {
        let path = dir.path().join("secret");
        std::fs::write(&path, content).expect("write secret file");
        SecretSource::File(path)
    }

    #[test]
    fn trims_exactly_one_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (content, expected) in [
            (&b"hunter2\n"[..], "hunter2"),
            (b"hunter2\r\n", "hunter2"),
            (b"hunter2", "hunter2"),
            (b"hunter2\n\n", "hunter2\n"),
            (b" spaced \n", " spaced "),
        ] {
            let secret = write(&dir, content).read().expect("readable secret");
            assert_eq!(secret.as_str(), expected);
        }
    }

    #[test]
    fn empty_secret_is_refused_naming_the_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        for content in [&b""[..], b"\n", b"\r\n"] {
            let source = write(&dir, content);
            let err = source.read().expect_err("empty secret");
            let msg = err.to_string();
            assert!(matches!(err, SealError::Secret { .. }), "{msg}");
            assert!(msg.contains("secret") && msg.contains("is empty"), "{msg}");
        }
    }

    #[test]
    fn missing_file_and_unset_variable_name_the_source() {
        let missing = SecretSource::File("/nonexistent/permafrost/pin".into());
        let msg = missing.read().expect_err("missing file").to_string();
        assert!(msg.contains("/nonexistent/permafrost/pin"), "{msg}");

        let unset = SecretSource::Env("PERMAFROST_TEST_SURELY_UNSET_VARIABLE".into());
        let msg = unset.read().expect_err("unset variable").to_string();
        assert!(
            msg.contains("PERMAFROST_TEST_SURELY_UNSET_VARIABLE"),
            "{msg}"
        );
        assert!(msg.contains("is not set"), "{msg}");
    }

    #[test]
    fn non_utf8_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = write(&dir, &[0xff, 0xfe]).read().expect_err("not UTF-8");
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }
}
