//! Where a share is sealed: the [`ShareVault`].
//!
//! Every FROST key package this node holds is sealed and opened here and
//! nowhere else, under the one seal context for key shares
//! (`node id` + `keygroup/<group>`, see [`ShareVault::context`]). The vault
//! owns the share sealer: the configured sealer, or, with `[seal] manual =
//! true`, the passphrase sealer an operator installs with `unseal` and drops
//! with `seal` (`crate::admin`). While it holds none the node is *sealed* and
//! refuses every step that needs a share.
//!
//! The store keeps only the ciphertext ([`crate::store::GroupRecord`]); the
//! node's identity and TLS key are sealed with the configured sealer at
//! `init` (`crate::open`), under their own contexts.
//!
//! Crypto-shredding (THREATS K8): each share is sealed under a random data
//! key of its own, and only that data key is sealed by the share sealer, in
//! its own small file (`<data_dir>/datakeys/<group>/<id>.key`). When a share
//! is replaced (refresh, repair) the old data key is overwritten and removed
//! ([`ShareVault::shred`]); copies of the old share's blob that linger in the
//! store's free pages, a backup or a disk snapshot then open under no
//! passphrase or token. A node destroys at start any data key no record uses
//! ([`ShareVault::shred_unused`]).
//!
//! Offline tools and tests that hold a stopped node's disk and sealer read a
//! share with [`ShareVault::open_offline`], so the context is spelled once.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use frost_secp256k1::keys::KeyPackage;
use permafrost_core::{GroupName, NodeId};
use permafrost_hsm::{DataKey, SealContext, Sealer};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::NodeError;

/// First bytes of a share sealed under its own data key (K8); anything else
/// is a share sealed directly by the share sealer (data dirs made before
/// data keys), which still opens but cannot be shredded.
const ENVELOPE_MAGIC: &[u8; 8] = b"PFSHARE1";
/// Data keys live under `<data_dir>/datakeys/<group>/<id>.key`.
const KEYS_DIR: &str = "datakeys";
/// Hex length of a data key id (16 random bytes).
const KEY_ID_HEX: usize = 32;
/// Envelope header: magic, data key id, the share's epoch (u64, big endian).
const HEADER_LEN: usize = ENVELOPE_MAGIC.len() + KEY_ID_HEX + 8;

/// The node's key shares at rest: the share sealer and the one context they are sealed under.
pub struct ShareVault {
    node: NodeId,
    /// `<data_dir>/datakeys`: one sealed data key per share this node holds.
    keys_dir: PathBuf,
    /// `None` while the node is sealed.
    sealer: RwLock<Option<Arc<dyn Sealer>>>,
}

impl std::fmt::Debug for ShareVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareVault")
            .field("node", &self.node)
            .field("sealed", &self.is_sealed())
            .finish()
    }
}

impl ShareVault {
    /// A vault for `node`'s shares kept under `data_dir`; sealed when `sealer` is `None`.
    pub fn new(node: NodeId, data_dir: &Path, sealer: Option<Arc<dyn Sealer>>) -> Self {
        Self {
            node,
            keys_dir: data_dir.join(KEYS_DIR),
            sealer: RwLock::new(sealer),
        }
    }

    /// The seal context of `node`'s share of `group`: the one place it is spelled.
    pub fn context(node: &NodeId, group: &GroupName) -> SealContext {
        SealContext::new(node.as_str(), format!("keygroup/{group}"))
    }

    /// The seal context of the data key `id` of `node`'s share of `group` at `epoch`.
    fn key_context(node: &NodeId, group: &GroupName, id: &str, epoch: u64) -> SealContext {
        SealContext::new(node.as_str(), format!("datakey/{group}/{id}/epoch/{epoch}"))
    }

    /// The context of a share sealed under its data key: the group and the
    /// epoch it was made for are in the associated data.
    fn share_context(node: &NodeId, group: &GroupName, epoch: u64) -> SealContext {
        SealContext::new(node.as_str(), format!("keygroup/{group}/epoch/{epoch}"))
    }

    /// Whether shares are sealed away (no share sealer installed).
    pub fn is_sealed(&self) -> bool {
        self.sealer.read().map(|s| s.is_none()).unwrap_or(true)
    }

    /// Installs the share sealer an operator unlocked (manual unseal).
    pub fn install_sealer(&self, sealer: Arc<dyn Sealer>) -> Result<(), NodeError> {
        *self.sealer.write().map_err(|_| poisoned())? = Some(sealer);
        Ok(())
    }

    /// Drops the share sealer (manual seal): from here on no share can be opened.
    pub fn drop_sealer(&self) -> Result<(), NodeError> {
        *self.sealer.write().map_err(|_| poisoned())? = None;
        Ok(())
    }

    /// `Ok` while unsealed; the "sealed" refusal otherwise (for steps that will need a share).
    pub fn ensure_unsealed(&self) -> Result<(), NodeError> {
        self.sealer().map(|_| ())
    }

    /// Seals `key_package` as this node's share of `group` for `epoch`, under
    /// a data key of its own (written, sealed by the share sealer, before this
    /// returns), so that [`ShareVault::shred`] can make this blob unreadable
    /// for good. The epoch is authenticated with the share
    /// ([`ShareVault::sealed_epoch`] reads it back).
    pub fn seal_key_package(
        &self,
        group: &GroupName,
        epoch: u64,
        key_package: &KeyPackage,
    ) -> Result<Vec<u8>, NodeError> {
        let sealer = self.sealer()?;
        let bytes = Zeroizing::new(
            key_package
                .serialize()
                .map_err(|e| NodeError::Bug(format!("serialize key package: {e}")))?,
        );
        let mut raw_id = [0u8; KEY_ID_HEX / 2];
        rand::rngs::OsRng.fill_bytes(&mut raw_id);
        let id = hex::encode(raw_id);
        let data_key = DataKey::generate();
        let sealed_key = sealer.seal(
            &Self::key_context(&self.node, group, &id, epoch),
            &data_key.to_bytes(),
        )?;
        write_key_file(&self.key_path(group, &id), &sealed_key)?;
        let blob = data_key.seal(&Self::share_context(&self.node, group, epoch), &bytes)?;
        let mut envelope = Vec::with_capacity(HEADER_LEN + blob.len());
        envelope.extend_from_slice(ENVELOPE_MAGIC);
        envelope.extend_from_slice(id.as_bytes());
        envelope.extend_from_slice(&epoch.to_be_bytes());
        envelope.extend_from_slice(&blob);
        Ok(envelope)
    }

    /// Opens this node's sealed share of `group`.
    pub fn open_key_package(
        &self,
        group: &GroupName,
        sealed: &[u8],
    ) -> Result<KeyPackage, NodeError> {
        open_with(&*self.sealer()?, &self.keys_dir, &self.node, group, sealed)
    }

    /// Opens `node`'s sealed share of `group` with `sealer`, outside a running node
    /// (a stopped node's data dir and sealer: tests, the chaos harness, forensics).
    pub fn open_offline(
        sealer: &dyn Sealer,
        data_dir: &Path,
        node: &NodeId,
        group: &GroupName,
        sealed: &[u8],
    ) -> Result<KeyPackage, NodeError> {
        open_with(sealer, &data_dir.join(KEYS_DIR), node, group, sealed)
    }

    /// The epoch a share was sealed for; `None` for a share sealed before
    /// data keys. Authenticated: a changed epoch makes the share unopenable.
    pub fn sealed_epoch(sealed: &[u8]) -> Option<u64> {
        envelope(sealed).map(|(_, epoch, _)| epoch)
    }

    /// Destroys the data key of a sealed share (K8, crypto-shredding): its
    /// file is overwritten, flushed and removed, so the share cannot be
    /// opened again by anyone, from any copy of its blob. Returns whether
    /// there was a key to destroy (a share sealed before data keys has none).
    pub fn shred(&self, group: &GroupName, sealed: &[u8]) -> Result<bool, NodeError> {
        match envelope(sealed) {
            Some((id, _, _)) => {
                shred_file(&self.key_path(group, id))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Destroys every data key that no share in `keep` uses (keys of shares
    /// replaced while the node was down, or of ceremonies that never
    /// finished). Returns the destroyed keys as `group/id`.
    pub fn shred_unused<'a>(
        &self,
        keep: impl IntoIterator<Item = (&'a GroupName, &'a [u8])>,
    ) -> Result<Vec<String>, NodeError> {
        let kept: std::collections::BTreeSet<PathBuf> = keep
            .into_iter()
            .filter_map(|(group, sealed)| {
                envelope(sealed).map(|(id, _, _)| self.key_path(group, id))
            })
            .collect();
        let mut shredded = Vec::new();
        let groups = match fs::read_dir(&self.keys_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(shredded),
            Err(e) => return Err(io_error(&self.keys_dir, e)),
        };
        for group_dir in groups {
            let group_dir = group_dir.map_err(|e| io_error(&self.keys_dir, e))?.path();
            if !group_dir.is_dir() {
                continue;
            }
            for key in fs::read_dir(&group_dir).map_err(|e| io_error(&group_dir, e))? {
                let path = key.map_err(|e| io_error(&group_dir, e))?.path();
                if path.extension().is_some_and(|x| x == "key") && !kept.contains(&path) {
                    shred_file(&path)?;
                    let group = group_dir.file_name().unwrap_or_default().to_string_lossy();
                    let id = path.file_stem().unwrap_or_default().to_string_lossy();
                    shredded.push(format!("{group}/{id}"));
                }
            }
        }
        Ok(shredded)
    }

    fn key_path(&self, group: &GroupName, id: &str) -> PathBuf {
        key_path(&self.keys_dir, group, id)
    }

    fn sealer(&self) -> Result<Arc<dyn Sealer>, NodeError> {
        self.sealer
            .read()
            .map_err(|_| poisoned())?
            .clone()
            .ok_or_else(|| NodeError::Sealed(self.node.clone()))
    }
}

fn key_path(keys_dir: &Path, group: &GroupName, id: &str) -> PathBuf {
    keys_dir.join(group.as_str()).join(format!("{id}.key"))
}

/// An enveloped share's data key id, epoch and blob; `None` for a share
/// sealed directly.
fn envelope(sealed: &[u8]) -> Option<(&str, u64, &[u8])> {
    let rest = sealed.strip_prefix(ENVELOPE_MAGIC.as_slice())?;
    let id = std::str::from_utf8(rest.get(..KEY_ID_HEX)?).ok()?;
    let epoch = u64::from_be_bytes(rest.get(KEY_ID_HEX..KEY_ID_HEX + 8)?.try_into().ok()?);
    let blob = rest.get(KEY_ID_HEX + 8..)?;
    id.bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then_some((id, epoch, blob))
}

fn open_with(
    sealer: &dyn Sealer,
    keys_dir: &Path,
    node: &NodeId,
    group: &GroupName,
    sealed: &[u8],
) -> Result<KeyPackage, NodeError> {
    let bytes = match envelope(sealed) {
        Some((id, epoch, blob)) => {
            let path = key_path(keys_dir, group, id);
            let sealed_key = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(NodeError::Corrupt(format!(
                        "the data key of {node}'s share of {group} ({}) is gone: the share was \
                         destroyed (refreshed or replaced) or the data dir is incomplete",
                        path.display()
                    )))
                }
                Err(e) => return Err(io_error(&path, e)),
            };
            let key = sealer.unseal(
                &ShareVault::key_context(node, group, id, epoch),
                &sealed_key,
            )?;
            let data_key = DataKey::from_bytes(&key)?;
            data_key.unseal(&ShareVault::share_context(node, group, epoch), blob)?
        }
        None => sealer.unseal(&ShareVault::context(node, group), sealed)?,
    };
    KeyPackage::deserialize(&bytes)
        .map_err(|e| NodeError::Corrupt(format!("stored key package unreadable: {e}")))
}

fn io_error(path: &Path, e: std::io::Error) -> NodeError {
    NodeError::Unavailable(format!("data keys: {}: {e}", path.display()))
}

/// Writes a sealed data key durably (owner-only, temp file + rename, both fsynced).
fn write_key_file(path: &Path, contents: &[u8]) -> Result<(), NodeError> {
    let dir = path
        .parent()
        .ok_or_else(|| NodeError::Bug(format!("{} has no directory", path.display())))?;
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| io_error(dir, e))?;
    let tmp = path.with_extension("key.tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(|e| io_error(&tmp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
    sync_dir(dir)
}

/// Overwrites a key file with zeros, flushes it, removes it and flushes the directory.
fn shred_file(path: &Path) -> Result<(), NodeError> {
    match fs::OpenOptions::new().write(true).open(path) {
        Ok(mut file) => {
            let len = file.metadata().map_err(|e| io_error(path, e))?.len();
            let zeros = vec![0u8; usize::try_from(len).unwrap_or(0)];
            file.write_all(&zeros)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error(path, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(path, e)),
    }
    fs::remove_file(path).map_err(|e| io_error(path, e))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), NodeError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

fn poisoned() -> NodeError {
    NodeError::Bug("seal lock poisoned".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use permafrost_hsm::{KdfParams, PassphraseSealer};

    fn key_package() -> KeyPackage {
        let mut rng = rand::thread_rng();
        let (shares, _) = frost_secp256k1::keys::generate_with_dealer(
            3,
            2,
            frost_secp256k1::keys::IdentifierList::Default,
            &mut rng,
        )
        .expect("dealer");
        let share = shares.into_values().next().expect("a share");
        KeyPackage::try_from(share).expect("key package")
    }

    fn ids() -> (NodeId, GroupName) {
        (
            NodeId::new("n1").expect("id"),
            GroupName::new("warm-1").expect("group"),
        )
    }

    #[test]
    fn sealed_vault_refuses_and_unsealed_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sealer: Arc<dyn Sealer> = Arc::new(
            PassphraseSealer::create(
                dir.path(),
                "vault test passphrase",
                KdfParams::fast_for_tests(),
            )
            .expect("sealer"),
        );
        let (node, group) = ids();
        let vault = ShareVault::new(node.clone(), dir.path(), None);
        let kp = key_package();
        assert!(vault.is_sealed());
        assert!(matches!(
            vault.seal_key_package(&group, 1, &kp),
            Err(NodeError::Sealed(_))
        ));
        vault.install_sealer(sealer.clone()).expect("install");
        assert!(!vault.is_sealed());
        let blob = vault.seal_key_package(&group, 1, &kp).expect("seal");
        let opened = vault.open_key_package(&group, &blob).expect("open");
        assert_eq!(opened.signing_share(), kp.signing_share());
        let offline =
            ShareVault::open_offline(&*sealer, dir.path(), &node, &group, &blob).expect("offline");
        assert_eq!(offline.signing_share(), kp.signing_share());
        // Bound to the node and the group: another context does not open it.
        let other = GroupName::new("warm-2").expect("group");
        assert!(ShareVault::open_offline(&*sealer, dir.path(), &node, &other, &blob).is_err());
        vault.drop_sealer().expect("drop");
        assert!(matches!(
            vault.open_key_package(&group, &blob),
            Err(NodeError::Sealed(_))
        ));
    }

    #[test]
    fn k8_shredding_a_data_key_kills_every_copy_of_the_share() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sealer: Arc<dyn Sealer> = Arc::new(
            PassphraseSealer::create(
                dir.path(),
                "vault shred passphrase",
                KdfParams::fast_for_tests(),
            )
            .expect("sealer"),
        );
        let (node, group) = ids();
        let vault = ShareVault::new(node.clone(), dir.path(), Some(sealer.clone()));
        let old = vault
            .seal_key_package(&group, 1, &key_package())
            .expect("seal");
        let copy = old.clone();
        let new = vault
            .seal_key_package(&group, 1, &key_package())
            .expect("seal");
        assert!(vault.shred(&group, &old).expect("shred"));
        for blob in [&old, &copy] {
            let err = vault.open_key_package(&group, blob).expect_err("shredded");
            assert!(err.to_string().contains("gone"), "{err}");
        }
        vault
            .open_key_package(&group, &new)
            .expect("the other share still opens");
        // The epoch is authenticated: relabelled, the share does not open.
        assert_eq!(ShareVault::sealed_epoch(&new), Some(1));
        let mut relabelled = new.clone();
        relabelled[ENVELOPE_MAGIC.len() + KEY_ID_HEX + 7] = 2;
        assert!(vault.open_key_package(&group, &relabelled).is_err());
        // A key no record names is destroyed at start; the kept one stays.
        let orphan = vault
            .seal_key_package(&group, 1, &key_package())
            .expect("seal");
        let shredded = vault
            .shred_unused([(&group, new.as_slice())])
            .expect("sweep");
        assert_eq!(shredded.len(), 1, "{shredded:?}");
        assert!(vault.open_key_package(&group, &orphan).is_err());
        vault.open_key_package(&group, &new).expect("kept");
        // Shares sealed before data keys still open (and have nothing to shred).
        let legacy = sealer
            .seal(
                &ShareVault::context(&node, &group),
                &key_package().serialize().expect("ser"),
            )
            .expect("seal");
        vault
            .open_key_package(&group, &legacy)
            .expect("legacy opens");
        assert!(!vault.shred(&group, &legacy).expect("nothing to shred"));
    }
}
