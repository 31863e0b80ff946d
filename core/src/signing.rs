//! Signing (RFC 9591 §5): what a node may sign and how shares are aggregated.
//!
//! A node computes a share only for a [`SigningTarget`], which is either an
//! [`AuthorizedWithdrawal`] or the activation test of a freshly generated
//! group. The message inside the coordinator's signing package must equal the
//! message the node derived itself (X1, RFC 9591 §7.7: signers are not oracles).
//!
//! Everything here is generic over frost's [`Ciphersuite`], so one signing
//! path serves both schemes: `message` groups sign with FROST(secp256k1,
//! SHA-256) and `taproot` groups with FROST(secp256k1, SHA-256-TR), the
//! BIP340 suite, under the group key tweaked as BIP341 says for a key-path
//! output with no script tree ([`taproot_key_package`]). A group's key is
//! made, refreshed and repaired once, as secp256k1 shares; [`rekey`] moves the
//! same shares into the suite its scheme signs with.

use std::collections::BTreeMap;

use frost_core::keys::{KeyPackage, PublicKeyPackage};
use frost_core::keys::{SigningShare, VerifyingShare};
use frost_core::round1::SigningNonces;
use frost_core::round2::SignatureShare;
use frost_core::{Ciphersuite, Identifier, Signature, SigningPackage, VerifyingKey};
use frost_secp256k1::Secp256K1Sha256;
use frost_secp256k1_tr::keys::Tweak;
use frost_secp256k1_tr::Secp256K1Sha256TR;
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
    Withdrawal(Box<AuthorizedWithdrawal>),
    /// The one-off activation test of a pending group.
    Activation(ActivationTarget),
}

impl SigningTarget {
    /// The exact messages to sign, one FROST session each.
    pub fn messages(&self) -> &[Vec<u8>] {
        match self {
            SigningTarget::Withdrawal(w) => w.messages(),
            SigningTarget::Activation(a) => std::slice::from_ref(&a.message),
        }
    }
}

/// Computes this node's signature shares (RFC 9591 §5.2) for `target`: one
/// per message, session `i` signing message `i` with package `i` and nonce `i`.
///
/// `nonces` are taken by value: the caller has already removed them from its
/// pool (N1), and they are dropped (zeroized) here whatever the outcome.
pub fn compute_shares<C: Ciphersuite>(
    target: &SigningTarget,
    packages: &[SigningPackage<C>],
    nonces: Vec<SigningNonces<C>>,
    key_package: &KeyPackage<C>,
) -> Result<Vec<SignatureShare<C>>, CoreError> {
    check_packages(target, packages, &nonces, key_package)?;
    packages
        .iter()
        .zip(&nonces)
        .map(|(package, nonces)| {
            frost_core::round2::sign(package, nonces, key_package)
                .map_err(|e| CoreError::Frost(e.to_string()))
        })
        .collect()
}

/// The checks [`compute_shares`] makes on the coordinator's signing packages,
/// callable first so a node can refuse before journaling anything: one
/// package and one nonce per message the node derived itself, and each
/// package signs exactly that message.
pub fn check_packages<C: Ciphersuite>(
    target: &SigningTarget,
    packages: &[SigningPackage<C>],
    nonces: &[SigningNonces<C>],
    key_package: &KeyPackage<C>,
) -> Result<(), CoreError> {
    let messages = target.messages();
    if packages.len() != messages.len() || nonces.len() != messages.len() {
        return Err(CoreError::refused(format!(
            "{} signing packages and {} nonces for {} messages to sign",
            packages.len(),
            nonces.len(),
            messages.len()
        )));
    }
    for (i, ((package, nonces), message)) in packages.iter().zip(nonces).zip(messages).enumerate() {
        check_package(message, package, nonces, key_package)
            .map_err(|e| CoreError::refused(format!("session {i}: {e}")))?;
    }
    Ok(())
}

/// The checks on one session's signing package.
fn check_package<C: Ciphersuite>(
    message: &[u8],
    package: &SigningPackage<C>,
    nonces: &SigningNonces<C>,
    key_package: &KeyPackage<C>,
) -> Result<(), CoreError> {
    if package.message().as_slice() != message {
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

/// The same key shares in another FROST suite over the same curve (both
/// encode scalars and points alike). Used to sign a group's secp256k1 shares
/// with the suite of its scheme; fails only if the suites' encodings differ.
pub fn rekey<A: Ciphersuite, B: Ciphersuite>(
    key_package: &KeyPackage<A>,
) -> Result<KeyPackage<B>, CoreError> {
    let bad = |what: &str| CoreError::Frost(format!("re-encoding {what} between suites failed"));
    let id = Identifier::<B>::deserialize(&key_package.identifier().serialize())
        .map_err(|_| bad("identifier"))?;
    let share = zeroize::Zeroizing::new(key_package.signing_share().serialize());
    let share = SigningShare::<B>::deserialize(&share).map_err(|_| bad("signing share"))?;
    let vshare = VerifyingShare::<B>::deserialize(
        &key_package
            .verifying_share()
            .serialize()
            .map_err(|_| bad("verifying share"))?,
    )
    .map_err(|_| bad("verifying share"))?;
    let key = VerifyingKey::<B>::deserialize(
        &key_package
            .verifying_key()
            .serialize()
            .map_err(|_| bad("group key"))?,
    )
    .map_err(|_| bad("group key"))?;
    Ok(KeyPackage::new(
        id,
        share,
        vshare,
        key,
        *key_package.min_signers(),
    ))
}

/// [`rekey`] for the public side.
pub fn rekey_public<A: Ciphersuite, B: Ciphersuite>(
    public_key_package: &PublicKeyPackage<A>,
) -> Result<PublicKeyPackage<B>, CoreError> {
    let bad = |what: &str| CoreError::Frost(format!("re-encoding {what} between suites failed"));
    let mut shares = BTreeMap::new();
    for (id, share) in public_key_package.verifying_shares() {
        let id = Identifier::<B>::deserialize(&id.serialize()).map_err(|_| bad("identifier"))?;
        let share = VerifyingShare::<B>::deserialize(
            &share.serialize().map_err(|_| bad("verifying share"))?,
        )
        .map_err(|_| bad("verifying share"))?;
        shares.insert(id, share);
    }
    let key = VerifyingKey::<B>::deserialize(
        &public_key_package
            .verifying_key()
            .serialize()
            .map_err(|_| bad("group key"))?,
    )
    .map_err(|_| bad("group key"))?;
    Ok(PublicKeyPackage::new(
        shares,
        key,
        public_key_package.min_signers(),
    ))
}

/// A taproot group member's key package: its secp256k1 share in the BIP340
/// suite, tweaked for the key-path output with no script tree (BIP341), so a
/// signature verifies under the group's output key.
pub fn taproot_key_package(
    key_package: &KeyPackage<Secp256K1Sha256>,
) -> Result<KeyPackage<Secp256K1Sha256TR>, CoreError> {
    Ok(rekey::<_, Secp256K1Sha256TR>(key_package)?.tweak(None::<&[u8]>))
}

/// The public side of [`taproot_key_package`], for aggregation.
pub fn taproot_public_key_package(
    public_key_package: &PublicKeyPackage<Secp256K1Sha256>,
) -> Result<PublicKeyPackage<Secp256K1Sha256TR>, CoreError> {
    Ok(rekey_public::<_, Secp256K1Sha256TR>(public_key_package)?.tweak(None::<&[u8]>))
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

/// [`aggregate`] for shares each already checked on arrival
/// (`verify_signature_share`, as the session engine does): frost's own
/// verification of the result is the only one (C5), and there is no cheater
/// search to run, since every share was verified before.
pub fn aggregate_verified<C: Ciphersuite>(
    package: &SigningPackage<C>,
    shares: &BTreeMap<Identifier<C>, SignatureShare<C>>,
    public_key_package: &PublicKeyPackage<C>,
) -> Result<Signature<C>, AggregateError<C>> {
    frost_core::aggregate_custom(
        package,
        shares,
        public_key_package,
        frost_core::CheaterDetection::Disabled,
    )
    .map_err(|e| AggregateError::Other(format!("verified shares did not aggregate: {e}")))
}

pub mod strict;

#[cfg(test)]
mod tests;
