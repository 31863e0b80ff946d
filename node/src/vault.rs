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
//! Offline tools and tests that hold a stopped node's disk and sealer read a
//! share with [`ShareVault::open_offline`], so the context is spelled once.

use std::sync::{Arc, RwLock};

use frost_secp256k1::keys::KeyPackage;
use permafrost_core::{GroupName, NodeId};
use permafrost_hsm::{SealContext, Sealer};
use zeroize::Zeroizing;

use crate::NodeError;

/// The node's key shares at rest: the share sealer and the one context they are sealed under.
pub struct ShareVault {
    node: NodeId,
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
    /// A vault for `node`'s shares; sealed when `sealer` is `None`.
    pub fn new(node: NodeId, sealer: Option<Arc<dyn Sealer>>) -> Self {
        Self {
            node,
            sealer: RwLock::new(sealer),
        }
    }

    /// The seal context of `node`'s share of `group`: the one place it is spelled.
    pub fn context(node: &NodeId, group: &GroupName) -> SealContext {
        SealContext::new(node.as_str(), format!("keygroup/{group}"))
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

    /// Seals `key_package` as this node's share of `group`.
    pub fn seal_key_package(
        &self,
        group: &GroupName,
        key_package: &KeyPackage,
    ) -> Result<Vec<u8>, NodeError> {
        let bytes = Zeroizing::new(
            key_package
                .serialize()
                .map_err(|e| NodeError::Bug(format!("serialize key package: {e}")))?,
        );
        Ok(self
            .sealer()?
            .seal(&Self::context(&self.node, group), &bytes)?)
    }

    /// Opens this node's sealed share of `group`.
    pub fn open_key_package(
        &self,
        group: &GroupName,
        sealed: &[u8],
    ) -> Result<KeyPackage, NodeError> {
        Self::open_offline(&*self.sealer()?, &self.node, group, sealed)
    }

    /// Opens `node`'s sealed share of `group` with `sealer`, outside a running node
    /// (a stopped node's disk and sealer: tests, the chaos harness, forensics).
    pub fn open_offline(
        sealer: &dyn Sealer,
        node: &NodeId,
        group: &GroupName,
        sealed: &[u8],
    ) -> Result<KeyPackage, NodeError> {
        let bytes = sealer.unseal(&Self::context(node, group), sealed)?;
        KeyPackage::deserialize(&bytes)
            .map_err(|e| NodeError::Corrupt(format!("stored key package unreadable: {e}")))
    }

    fn sealer(&self) -> Result<Arc<dyn Sealer>, NodeError> {
        self.sealer
            .read()
            .map_err(|_| poisoned())?
            .clone()
            .ok_or_else(|| NodeError::Sealed(self.node.clone()))
    }
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
        let vault = ShareVault::new(node.clone(), None);
        let kp = key_package();
        assert!(vault.is_sealed());
        assert!(matches!(
            vault.seal_key_package(&group, &kp),
            Err(NodeError::Sealed(_))
        ));
        vault.install_sealer(sealer.clone()).expect("install");
        assert!(!vault.is_sealed());
        let blob = vault.seal_key_package(&group, &kp).expect("seal");
        let opened = vault.open_key_package(&group, &blob).expect("open");
        assert_eq!(opened.signing_share(), kp.signing_share());
        let offline = ShareVault::open_offline(&*sealer, &node, &group, &blob).expect("offline");
        assert_eq!(offline.signing_share(), kp.signing_share());
        // Bound to the node and the group: another context does not open it.
        let other = GroupName::new("warm-2").expect("group");
        assert!(ShareVault::open_offline(&*sealer, &node, &other, &blob).is_err());
        vault.drop_sealer().expect("drop");
        assert!(matches!(
            vault.open_key_package(&group, &blob),
            Err(NodeError::Sealed(_))
        ));
    }
}
