//! Signing (RFC 9591 §5): what a node may sign and how shares are aggregated.
//!
//! A node computes a share only for a [`SigningTarget`], which is either an
//! [`AuthorizedWithdrawal`] or the activation test of a freshly generated
//! group. The message inside the coordinator's signing package must equal the
//! message the node derived itself (X1, RFC 9591 §7.7: signers are not oracles).
//!
//! Everything here is generic over frost's [`Ciphersuite`], so one signing
//! path serves FROST(secp256k1, SHA-256) today and a BIP340 suite next; the
//! daemons call it with `frost-secp256k1` types.

use std::collections::BTreeMap;

use frost_core::keys::{KeyPackage, PublicKeyPackage};
use frost_core::round1::SigningNonces;
use frost_core::round2::SignatureShare;
use frost_core::{Ciphersuite, Identifier, Signature, SigningPackage};
use sha2::{Digest, Sha256};

use crate::authz::AuthorizedWithdrawal;
use crate::{CoreError, GroupName};

/// The message a new key group signs once, to prove it works before activation (K4).
/// Domain-separated so it can never be a transaction on any chain.
pub fn activation_message(group: &GroupName, group_public_key: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"PERMAFROST/ACTIVATION/v1");
    h.update((group.as_str().len() as u32).to_be_bytes());
    h.update(group.as_str().as_bytes());
    h.update(group_public_key);
    h.finalize().to_vec()
}

/// The activation test of a group that is generated but not yet active.
#[derive(Clone, Debug)]
pub struct ActivationTarget {
    message: Vec<u8>,
}

impl ActivationTarget {
    /// Builds the target for a pending group; refuses an active one, which has no business signing tests.
    pub fn for_pending_group<C: Ciphersuite>(
        group: &GroupName,
        public_key_package: &PublicKeyPackage<C>,
        active: bool,
    ) -> Result<Self, CoreError> {
        if active {
            return Err(CoreError::refused(format!(
                "key group {group} is already active; no test signature"
            )));
        }
        let key = public_key_package
            .verifying_key()
            .serialize()
            .map_err(|e| CoreError::Frost(e.to_string()))?;
        Ok(Self {
            message: activation_message(group, &key),
        })
    }
}

/// Something a node has decided it may sign.
#[derive(Clone, Debug)]
pub enum SigningTarget {
    /// A withdrawal that passed every check.
    Withdrawal(AuthorizedWithdrawal),
    /// The one-off activation test of a pending group.
    Activation(ActivationTarget),
}

impl SigningTarget {
    /// The exact bytes to sign.
    pub fn message(&self) -> &[u8] {
        match self {
            SigningTarget::Withdrawal(w) => w.message(),
            SigningTarget::Activation(a) => &a.message,
        }
    }
}

/// Computes this node's signature share (RFC 9591 §5.2) for `target`.
///
/// `nonces` is taken by value: the caller has already removed it from its pool
/// (N1), and it is dropped (zeroized) here whatever the outcome.
pub fn compute_share<C: Ciphersuite>(
    target: &SigningTarget,
    package: &SigningPackage<C>,
    nonces: SigningNonces<C>,
    key_package: &KeyPackage<C>,
) -> Result<SignatureShare<C>, CoreError> {
    check_package(target, package, &nonces, key_package)?;
    frost_core::round2::sign(package, &nonces, key_package)
        .map_err(|e| CoreError::Frost(e.to_string()))
}

/// The checks [`compute_share`] makes on the coordinator's signing package,
/// callable first so a node can refuse before journaling anything.
pub fn check_package<C: Ciphersuite>(
    target: &SigningTarget,
    package: &SigningPackage<C>,
    nonces: &SigningNonces<C>,
    key_package: &KeyPackage<C>,
) -> Result<(), CoreError> {
    if package.message().as_slice() != target.message() {
        return Err(CoreError::refused(
            "the message in the signing package is not the one derived from the authorized request",
        ));
    }
    let min = usize::from(*key_package.min_signers());
    if package.signing_commitments().len() < min {
        return Err(CoreError::refused(format!(
            "signing package has {} commitments, the group needs {min}",
            package.signing_commitments().len()
        )));
    }
    match package.signing_commitments().get(key_package.identifier()) {
        Some(c) if c == nonces.commitments() => {}
        _ => {
            return Err(CoreError::refused(
                "signing package does not carry this node's commitment",
            ))
        }
    }
    Ok(())
}

/// Outcome of an aggregation attempt.
#[derive(Debug)]
pub enum AggregateError<C: Ciphersuite> {
    /// These signers sent invalid shares (C1).
    InvalidShares(Vec<Identifier<C>>),
    /// Anything else (missing shares, bad package).
    Other(String),
}

/// Aggregates shares (RFC 9591 §5.3) and verifies the result against the group key (C5).
pub fn aggregate<C: Ciphersuite>(
    package: &SigningPackage<C>,
    shares: &BTreeMap<Identifier<C>, SignatureShare<C>>,
    public_key_package: &PublicKeyPackage<C>,
) -> Result<Signature<C>, AggregateError<C>> {
    match frost_core::aggregate(package, shares, public_key_package) {
        Ok(sig) => {
            public_key_package
                .verifying_key()
                .verify(package.message(), &sig)
                .map_err(|e| AggregateError::Other(format!("aggregate does not verify: {e}")))?;
            Ok(sig)
        }
        Err(e) if !e.culprits().is_empty() => Err(AggregateError::InvalidShares(e.culprits())),
        Err(e) => Err(AggregateError::Other(e.to_string())),
    }
}

#[cfg(test)]
mod tests;
