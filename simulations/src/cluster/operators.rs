//! The local cluster's operators: three Ed25519 keys in `operators/` (the
//! format of every key file here), registered in every node's and the
//! coordinator's `[operators]` section, two of them needed for any ceremony;
//! and the approved lifecycle specs the cluster's own ceremonies run under.
//!
//! In a real cluster each operator keeps their own key and approves with
//! `permafrostctl ceremony approve`; a local cluster holds all three so
//! `demo`, `up`, `chaos` and `bench` can run unattended.

use std::path::{Path, PathBuf};

use permafrost_core::ceremony::{LifecycleSpec, RegistryConfig, SignedSpec};
use permafrost_core::{GroupName, NodeId, Tier};
use permafrostctl::ceremony::{self as spec_file, Change, CurrentGroup};
use permafrostctl::{client, keys};

use super::LocalCluster;
use crate::SimError;

/// The registered operators.
pub const OPERATORS: [&str; 3] = ["operator-1", "operator-2", "operator-3"];

/// Approvals every lifecycle operation needs (2 of the 3).
pub const OPERATOR_QUORUM: u16 = 2;

/// The directory (under the cluster's) holding the operators' keys.
pub(super) const OPERATORS_DIR: &str = "operators";

/// How long the specs the cluster proposes for itself stay valid.
const SPEC_LIFETIME_SECS: u64 = 3600;

/// Generates every operator's key in `dir/operators/` and returns the registry naming them.
pub(super) fn create_operator_keys(dir: &Path) -> Result<RegistryConfig, SimError> {
    let keys_dir = dir.join(OPERATORS_DIR);
    std::fs::create_dir_all(&keys_dir).map_err(|e| SimError::io(&keys_dir, e))?;
    let mut registry = RegistryConfig {
        default_quorum: OPERATOR_QUORUM,
        ..Default::default()
    };
    for id in OPERATORS {
        let public = keys::generate_key_file(&keys_dir.join(format!("{id}.key")))?;
        registry
            .keys
            .insert(id.to_string(), hex::encode(public.as_bytes()));
    }
    Ok(registry)
}

impl LocalCluster {
    /// Path of an operator's key file.
    pub fn operator_key_path(&self, operator_id: &str) -> PathBuf {
        self.dir
            .join(OPERATORS_DIR)
            .join(format!("{operator_id}.key"))
    }

    /// `spec` approved by the first `n` operators, with their keys in `operators/`.
    pub fn approve_by(&self, spec: &LifecycleSpec, n: usize) -> Result<SignedSpec, SimError> {
        let mut signed = SignedSpec {
            spec: spec.clone(),
            approvals: Vec::new(),
        };
        for id in OPERATORS.iter().take(n) {
            let key = keys::load_key_file(&self.operator_key_path(id))?;
            spec_file::approve(&mut signed, id, &key)?;
        }
        Ok(signed)
    }

    /// `spec` approved by a quorum of operators.
    pub fn approve(&self, spec: &LifecycleSpec) -> Result<SignedSpec, SimError> {
        self.approve_by(spec, usize::from(OPERATOR_QUORUM))
    }

    /// A quorum-approved create spec.
    pub fn approved_create(
        &self,
        name: &GroupName,
        tier: Tier,
        threshold: u16,
        members: &[NodeId],
    ) -> Result<SignedSpec, SimError> {
        let change = Change::Create {
            tier,
            threshold,
            members: members.to_vec(),
        };
        let proposal = spec_file::propose(name, change, None, None, SPEC_LIFETIME_SECS)?;
        self.approve(&proposal.spec)
    }

    /// A quorum-approved spec of `change` to `name` as the coordinator reports the group now.
    pub async fn approved_change(
        &self,
        name: &GroupName,
        change: Change,
    ) -> Result<SignedSpec, SimError> {
        let g = client::find_key_group(&self.operator, name).await?;
        let current = CurrentGroup::reported(&g)
            .map_err(|e| SimError::Verification(format!("{name}: the coordinator reports {e}")))?;
        let proposal = spec_file::propose(name, change, Some(&current), None, SPEC_LIFETIME_SECS)?;
        self.approve(&proposal.spec)
    }
}
