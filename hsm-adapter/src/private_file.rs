//! Crash-safe, owner-only file writes for the crate's state files.

use std::fs;
use std::io::Write;
use std::path::Path;

use rand::RngCore;

use crate::SealError;

/// Creates the directory (and parents) readable by the owner only, if it does not exist.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), SealError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| SealError::io(dir, e))
}

/// Writes `contents` to a new file at `path` with mode 0600, atomically and without ever
/// replacing an existing file.
///
/// The data goes to a temporary file in the same directory, is fsynced, then published with
/// `hard_link` rather than `rename`: like rename it is atomic (readers see all or nothing, a
/// crash leaves no half-written state), but it fails if `path` exists, so two concurrent
/// `create` calls cannot silently overwrite each other's state.
pub(crate) fn create_new_private_file(path: &Path, contents: &[u8]) -> Result<(), SealError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp-{:016x}", rand::rngs::OsRng.next_u64()));

    let result = write_synced(&tmp, contents).and_then(|()| {
        fs::hard_link(&tmp, path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => SealError::AlreadyExists {
                path: path.to_path_buf(),
            },
            _ => SealError::io(path, e),
        })
    });
    // The temporary name is ours alone; failing to remove it leaves only litter.
    let _ = fs::remove_file(&tmp);
    result?;
    sync_dir(dir)
}

fn write_synced(path: &Path, contents: &[u8]) -> Result<(), SealError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| SealError::io(path, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| SealError::io(path, e))
}

/// Makes the new directory entry itself durable (POSIX needs an fsync of the directory).
fn sync_dir(dir: &Path) -> Result<(), SealError> {
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SealError::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_owner_only_file_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        create_new_private_file(&path, b"first").expect("first write");
        let err = create_new_private_file(&path, b"second").expect_err("must not overwrite");
        assert!(matches!(err, SealError::AlreadyExists { .. }), "{err}");
        assert_eq!(fs::read(&path).expect("read back"), b"first");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("list dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
}
