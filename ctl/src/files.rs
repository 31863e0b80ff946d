//! Writing key material and public files with safe permissions, atomically.

use std::io::Write;
use std::path::Path;

use crate::CtlError;

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CtlError> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
        let mut f = opts.open(&tmp).map_err(|e| CtlError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| CtlError::io(&tmp, e))?;
        f.sync_all().map_err(|e| CtlError::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| CtlError::io(path, e))
}

/// Writes a secret file readable by its owner only (0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CtlError> {
    write_mode(path, bytes, 0o600)
}

/// Writes a public file (0644).
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), CtlError> {
    write_mode(path, bytes, 0o644)
}

/// Reads a UTF-8 file, naming it on error.
pub fn read_text(path: &Path) -> Result<String, CtlError> {
    std::fs::read_to_string(path).map_err(|e| CtlError::io(path, e))
}
