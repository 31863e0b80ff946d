//! Distributed key generation (FROST DKG, Pedersen with proofs of knowledge)
//! as a pure per-participant state machine, hardened for an untrusted relay.
//!
//! Each step consumes the previous state and returns the next one plus the
//! message to send. On top of `frost::keys::dkg`:
//! - every message is signed by its sender's Ed25519 identity key and bound to
//!   the hash of the whole ceremony spec (so a replayed or re-targeted message fails, K3);
//! - round-1 packages are echo-checked: every member signs the hash of the set
//!   it received and nobody proceeds unless all hashes agree (K1);
//! - VSS commitments must have exactly `threshold` coefficients (K2);
//! - round-2 shares are HPKE-encrypted and signed from sender to recipient,
//!   so the coordinator relaying them never sees a share (K5);
//! - part 3 names the culprit of a bad share (K4).
//!
//! The same machine runs a proactive refresh (`keys::refresh`, DKG-based, no
//! dealer): same members and threshold, a zero constant term, new shares for
//! the same group key (K6).

use std::collections::BTreeMap;

use frost_secp256k1::keys::dkg::{self, round1, round2};
use frost_secp256k1::keys::{KeyPackage, PublicKeyPackage};
use frost_secp256k1::Identifier;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::ceremony::AuthorizedCeremony;
use crate::identity::{seal_to, verify_ed25519, NodeIdentity};
use crate::manifest::Directory;
use crate::{CoreError, NodeId};

mod abandon;
mod spec;
pub use abandon::{abandon_message, participants_of, AbandonPromise, ABANDON_DOMAIN};
pub use spec::CeremonySpec;

/// FROST identifier for a 0-based member index.
pub fn identifier(index: usize) -> Result<Identifier, CoreError> {
    let v = u16::try_from(index + 1).map_err(|_| CoreError::invalid("members", "too many"))?;
    Identifier::try_from(v).map_err(|e| CoreError::Frost(e.to_string()))
}

fn lp(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u32).to_be_bytes());
    h.update(bytes);
}

pub(crate) fn transcript(label: &[u8], spec_hash: &[u8; 32], parts: &[&[u8]]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"PERMAFROST/DKG/v1/");
    lp(&mut h, label);
    h.update(spec_hash);
    for p in parts {
        lp(&mut h, p);
    }
    h.finalize().to_vec()
}

/// A round-1 package, signed by its sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRound1 {
    /// Sender node.
    pub sender: NodeId,
    /// Serialized `round1::Package`.
    pub package: Vec<u8>,
    /// Ed25519 signature over the transcript.
    pub signature: Vec<u8>,
}

/// A member's signed view of the whole round-1 set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Echo {
    /// Sender node.
    pub sender: NodeId,
    /// Hash of the set it received.
    pub set_hash: Vec<u8>,
    /// Ed25519 signature over the transcript.
    pub signature: Vec<u8>,
}

/// A round-2 share, HPKE-encrypted to its recipient and signed by its sender.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedRound2 {
    /// Sender node.
    pub sender: NodeId,
    /// Recipient node.
    pub recipient: NodeId,
    /// HPKE encapsulated key.
    pub encapped_key: Vec<u8>,
    /// HPKE ciphertext of the serialized `round2::Package`.
    pub ciphertext: Vec<u8>,
    /// Ed25519 signature over the transcript.
    pub signature: Vec<u8>,
}

impl std::fmt::Debug for SealedRound2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedRound2")
            .field("sender", &self.sender)
            .field("recipient", &self.recipient)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// A member's signed report of the group key it derived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupKeyReport {
    /// Sender node.
    pub sender: NodeId,
    /// SEC1-compressed group public key (33 bytes).
    pub group_public_key: Vec<u8>,
    /// Serialized public key package (all verifying shares).
    pub public_key_package: Vec<u8>,
    /// Ed25519 signature over the transcript.
    pub signature: Vec<u8>,
}

impl GroupKeyReport {
    /// Checks the report's signature against the sender's identity key.
    pub fn verify(&self, spec: &CeremonySpec, directory: &Directory) -> Result<(), CoreError> {
        let key = directory.get(&self.sender)?.identity_key;
        let t = transcript(
            b"key",
            &spec.hash(),
            &[
                self.sender.as_str().as_bytes(),
                &self.group_public_key,
                &self.public_key_package,
            ],
        );
        if verify_ed25519(&key, &t, &self.signature) {
            Ok(())
        } else {
            Err(CoreError::PeerMisbehaved {
                culprit: self.sender.clone(),
                reason: "group key report signature invalid".into(),
            })
        }
    }
}

/// Checks that every member reported, with valid signatures, the same group key
/// and public key package (K4, invariant 6). Returns the agreed package.
pub fn check_reports(
    spec: &CeremonySpec,
    directory: &Directory,
    reports: &[GroupKeyReport],
) -> Result<PublicKeyPackage, CoreError> {
    let mut by_sender = BTreeMap::new();
    for r in reports {
        r.verify(spec, directory)?;
        by_sender.insert(r.sender.clone(), r);
    }
    let first = reports
        .first()
        .ok_or_else(|| CoreError::Aborted("no group key reports".into()))?;
    for m in &spec.participants() {
        let r = by_sender
            .get(m)
            .ok_or_else(|| CoreError::Aborted(format!("member {m} did not report a group key")))?;
        if r.group_public_key != first.group_public_key
            || r.public_key_package != first.public_key_package
        {
            return Err(CoreError::Aborted(format!(
                "member {m} reports a different group key than {}",
                first.sender
            )));
        }
    }
    PublicKeyPackage::deserialize(&first.public_key_package)
        .map_err(|e| CoreError::Frost(e.to_string()))
}

/// Result of a completed DKG for one member.
pub struct DkgOutput {
    /// This member's key package (secret share inside; zeroizes on drop).
    pub key_package: KeyPackage,
    /// The group's public key package.
    pub public_key_package: PublicKeyPackage,
    /// Signed report to send to the coordinator.
    pub report: GroupKeyReport,
}

impl std::fmt::Debug for DkgOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkgOutput")
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

/// The shares a refresh replaces (the member's current key and public packages).
pub struct OldShares {
    /// Current key package.
    pub key_package: KeyPackage,
    /// Current public key package.
    pub public_key_package: PublicKeyPackage,
}

struct Context {
    old: Option<OldShares>,
    spec: CeremonySpec,
    spec_hash: [u8; 32],
    me: NodeId,
    my_identifier: Identifier,
}

/// State after part 1: waiting for the relayed set of round-1 packages.
pub struct AwaitingRound1Set {
    ctx: Context,
    secret: round1::SecretPackage,
    my_package: Vec<u8>,
}

/// State after the echo: waiting for every member's echo.
pub struct AwaitingEchoes {
    ctx: Context,
    secret: round1::SecretPackage,
    set_hash: [u8; 32],
    others: BTreeMap<Identifier, round1::Package>,
}

/// State after part 2: waiting for the round-2 shares addressed to us.
pub struct AwaitingRound2 {
    ctx: Context,
    secret: round2::SecretPackage,
    others: BTreeMap<Identifier, round1::Package>,
}

/// Starts a ceremony as member `me` (part 1), only under the operators' approval of exactly it.
pub fn start<R: RngCore + CryptoRng>(
    spec: CeremonySpec,
    authorized: &AuthorizedCeremony,
    me: &NodeId,
    identity: &NodeIdentity,
    rng: &mut R,
) -> Result<(AwaitingRound1Set, SignedRound1), CoreError> {
    if spec.refresh {
        return Err(CoreError::invalid(
            "spec",
            "a refresh starts with the current shares (start_refresh)",
        ));
    }
    spec.check_authorized(authorized)?;
    start_with(spec, None, me, identity, rng)
}

/// Starts a refresh of `old` as member `me` (K6): the spec must keep the
/// group's members and threshold, and be what the operators approved.
pub fn start_refresh<R: RngCore + CryptoRng>(
    spec: CeremonySpec,
    authorized: &AuthorizedCeremony,
    old: OldShares,
    me: &NodeId,
    identity: &NodeIdentity,
    rng: &mut R,
) -> Result<(AwaitingRound1Set, SignedRound1), CoreError> {
    if !spec.refresh {
        return Err(CoreError::invalid("spec", "not a refresh ceremony"));
    }
    if usize::from(*old.key_package.min_signers()) != usize::from(spec.threshold) {
        return Err(CoreError::refused(format!(
            "a refresh cannot change the threshold ({} -> {})",
            old.key_package.min_signers(),
            spec.threshold
        )));
    }
    // Every participant must hold a share now; a removal drops one more
    // member's verifying share, a plain refresh none.
    let participants = spec.participants();
    let old_shares = old.public_key_package.verifying_shares();
    for m in &participants {
        if !old_shares.contains_key(&spec.identifier_of(m)?) {
            return Err(CoreError::refused(format!(
                "{m} holds no share of the group to refresh"
            )));
        }
    }
    if old_shares.len() < participants.len() || old_shares.len() > participants.len() + 1 {
        return Err(CoreError::refused("a refresh cannot change the member set"));
    }
    spec.check_authorized(authorized)?;
    start_with(spec, Some(old), me, identity, rng)
}

fn start_with<R: RngCore + CryptoRng>(
    spec: CeremonySpec,
    old: Option<OldShares>,
    me: &NodeId,
    identity: &NodeIdentity,
    rng: &mut R,
) -> Result<(AwaitingRound1Set, SignedRound1), CoreError> {
    spec.validate()?;
    if spec.refresh != old.is_some() {
        return Err(CoreError::invalid(
            "spec",
            "refresh ceremonies need the current shares, key generation none",
        ));
    }
    let my_identifier = spec.identifier_of(me)?;
    if let Some(old) = &old {
        if *old.key_package.identifier() != my_identifier {
            return Err(CoreError::refused("a refresh cannot reorder members"));
        }
    }
    let n = spec.participants().len() as u16;
    let (secret, package) = if spec.refresh {
        frost_secp256k1::keys::refresh::refresh_dkg_part1(
            my_identifier,
            n,
            spec.threshold,
            &mut *rng,
        )
    } else {
        dkg::part1(my_identifier, n, spec.threshold, rng)
    }
    .map_err(|e| CoreError::Frost(e.to_string()))?;
    let bytes = package
        .serialize()
        .map_err(|e| CoreError::Frost(e.to_string()))?;
    let spec_hash = spec.hash();
    let signature = identity
        .sign(&transcript(
            b"round1",
            &spec_hash,
            &[me.as_str().as_bytes(), &bytes],
        ))
        .to_vec();
    let msg = SignedRound1 {
        sender: me.clone(),
        package: bytes.clone(),
        signature,
    };
    let ctx = Context {
        old,
        spec,
        spec_hash,
        me: me.clone(),
        my_identifier,
    };
    Ok((
        AwaitingRound1Set {
            ctx,
            secret,
            my_package: bytes,
        },
        msg,
    ))
}

impl AwaitingRound1Set {
    /// The ceremony spec.
    pub fn spec(&self) -> &CeremonySpec {
        &self.ctx.spec
    }

    /// Checks the relayed round-1 set and returns our signed echo of it.
    pub fn receive_round1(
        self,
        set: &[SignedRound1],
        directory: &Directory,
        identity: &NodeIdentity,
    ) -> Result<(AwaitingEchoes, Echo), CoreError> {
        let ctx = self.ctx;
        let mut by_sender: BTreeMap<&NodeId, &SignedRound1> = BTreeMap::new();
        for msg in set {
            if ctx.spec.identifier_of(&msg.sender).is_err() {
                return Err(CoreError::refused(format!(
                    "round-1 package from non-member {}",
                    msg.sender
                )));
            }
            if by_sender.insert(&msg.sender, msg).is_some() {
                return Err(CoreError::Aborted(format!(
                    "two round-1 packages from {}",
                    msg.sender
                )));
            }
        }
        let mut hasher = Sha256::new();
        hasher.update(ctx.spec_hash);
        let mut others = BTreeMap::new();
        for member in &ctx.spec.participants() {
            let msg = by_sender.get(member).ok_or_else(|| {
                CoreError::Aborted(format!("round-1 set lacks a package from {member}"))
            })?;
            let key = directory.get(member)?.identity_key;
            let t = transcript(
                b"round1",
                &ctx.spec_hash,
                &[member.as_str().as_bytes(), &msg.package],
            );
            if !verify_ed25519(&key, &t, &msg.signature) {
                return Err(CoreError::PeerMisbehaved {
                    culprit: member.clone(),
                    reason: "round-1 signature invalid".into(),
                });
            }
            lp(&mut hasher, member.as_str().as_bytes());
            lp(&mut hasher, &msg.package);
            if *member == ctx.me {
                if msg.package != self.my_package {
                    return Err(CoreError::Aborted(
                        "the relay altered our own round-1 package".into(),
                    ));
                }
                continue;
            }
            let package = round1::Package::deserialize(&msg.package).map_err(|e| {
                CoreError::PeerMisbehaved {
                    culprit: member.clone(),
                    reason: format!("malformed round-1 package: {e}"),
                }
            })?;
            // K2: a longer commitment would silently raise the threshold.
            let coefficients = package
                .commitment()
                .serialize()
                .map_err(|e| CoreError::Frost(e.to_string()))?
                .len();
            // A refresh commitment omits its (identity) constant term.
            let expected = usize::from(ctx.spec.threshold) - usize::from(ctx.spec.refresh);
            if coefficients != expected {
                return Err(CoreError::PeerMisbehaved {
                    culprit: member.clone(),
                    reason: format!(
                        "commitment has {coefficients} coefficients, expected {expected} for threshold {}",
                        ctx.spec.threshold
                    ),
                });
            }
            others.insert(ctx.spec.identifier_of(member)?, package);
        }
        let set_hash: [u8; 32] = hasher.finalize().into();
        let signature = identity
            .sign(&transcript(
                b"echo",
                &ctx.spec_hash,
                &[ctx.me.as_str().as_bytes(), &set_hash],
            ))
            .to_vec();
        let echo = Echo {
            sender: ctx.me.clone(),
            set_hash: set_hash.to_vec(),
            signature,
        };
        Ok((
            AwaitingEchoes {
                ctx,
                secret: self.secret,
                set_hash,
                others,
            },
            echo,
        ))
    }
}

impl AwaitingEchoes {
    /// Checks every member's echo agrees with ours (K1), runs part 2 and
    /// returns the encrypted, signed round-2 shares for each other member.
    pub fn receive_echoes<R: RngCore + CryptoRng>(
        self,
        echoes: &[Echo],
        directory: &Directory,
        identity: &NodeIdentity,
        rng: &mut R,
    ) -> Result<(AwaitingRound2, Vec<SealedRound2>), CoreError> {
        let ctx = self.ctx;
        for member in &ctx.spec.participants() {
            let echo = echoes
                .iter()
                .find(|e| &e.sender == member)
                .ok_or_else(|| CoreError::Aborted(format!("no echo from {member}")))?;
            let key = directory.get(member)?.identity_key;
            let t = transcript(
                b"echo",
                &ctx.spec_hash,
                &[member.as_str().as_bytes(), &echo.set_hash],
            );
            if !verify_ed25519(&key, &t, &echo.signature) {
                return Err(CoreError::PeerMisbehaved {
                    culprit: member.clone(),
                    reason: "echo signature invalid".into(),
                });
            }
            if echo.set_hash != self.set_hash {
                return Err(CoreError::Aborted(format!(
                    "split view: {member} saw a different round-1 set than {}",
                    ctx.me
                )));
            }
        }
        let (secret, packages) = if ctx.spec.refresh {
            frost_secp256k1::keys::refresh::refresh_dkg_part2(self.secret, &self.others)
        } else {
            dkg::part2(self.secret, &self.others)
        }
        .map_err(|e| ctx.spec.culprit(&e))?;
        let mut out = Vec::with_capacity(packages.len());
        for (id, package) in packages {
            let recipient = ctx
                .spec
                .member_of(&id)
                .ok_or_else(|| {
                    CoreError::Frost("part 2 produced a share for an unknown identifier".into())
                })?
                .clone();
            let plaintext = zeroize::Zeroizing::new(
                package
                    .serialize()
                    .map_err(|e| CoreError::Frost(e.to_string()))?,
            );
            let info = round2_info(&ctx.spec_hash, &ctx.me, &recipient);
            let recipient_key = &directory.get(&recipient)?.encryption_key;
            let (encapped_key, ciphertext) = seal_to(recipient_key, &info, &plaintext, rng)?;
            let signature = identity
                .sign(&round2_transcript(
                    &ctx.spec_hash,
                    &ctx.me,
                    &recipient,
                    &encapped_key,
                    &ciphertext,
                ))
                .to_vec();
            out.push(SealedRound2 {
                sender: ctx.me.clone(),
                recipient,
                encapped_key,
                ciphertext,
                signature,
            });
        }
        Ok((
            AwaitingRound2 {
                ctx,
                secret,
                others: self.others,
            },
            out,
        ))
    }
}

fn round2_info(spec_hash: &[u8; 32], sender: &NodeId, recipient: &NodeId) -> Vec<u8> {
    transcript(
        b"round2-hpke",
        spec_hash,
        &[sender.as_str().as_bytes(), recipient.as_str().as_bytes()],
    )
}

fn round2_transcript(
    spec_hash: &[u8; 32],
    sender: &NodeId,
    recipient: &NodeId,
    enc: &[u8],
    ct: &[u8],
) -> Vec<u8> {
    transcript(
        b"round2",
        spec_hash,
        &[
            sender.as_str().as_bytes(),
            recipient.as_str().as_bytes(),
            enc,
            ct,
        ],
    )
}

impl AwaitingRound2 {
    /// The ceremony spec.
    pub fn spec(&self) -> &CeremonySpec {
        &self.ctx.spec
    }

    /// Checks, decrypts and combines the round-2 shares addressed to us (part 3).
    pub fn receive_round2(
        self,
        shares: &[SealedRound2],
        directory: &Directory,
        identity: &NodeIdentity,
    ) -> Result<DkgOutput, CoreError> {
        let ctx = &self.ctx;
        let mut packages = BTreeMap::new();
        for member in ctx.spec.participants().iter().filter(|m| **m != ctx.me) {
            let share = shares
                .iter()
                .find(|s| &s.sender == member && s.recipient == ctx.me)
                .ok_or_else(|| CoreError::Aborted(format!("no round-2 share from {member}")))?;
            let key = directory.get(member)?.identity_key;
            let t = round2_transcript(
                &ctx.spec_hash,
                member,
                &ctx.me,
                &share.encapped_key,
                &share.ciphertext,
            );
            if !verify_ed25519(&key, &t, &share.signature) {
                return Err(CoreError::PeerMisbehaved {
                    culprit: member.clone(),
                    reason: "round-2 signature invalid".into(),
                });
            }
            let plaintext = identity
                .open(
                    &share.encapped_key,
                    &share.ciphertext,
                    &round2_info(&ctx.spec_hash, member, &ctx.me),
                )
                .map_err(|e| CoreError::PeerMisbehaved {
                    culprit: member.clone(),
                    reason: e.to_string(),
                })?;
            let package = round2::Package::deserialize(&plaintext).map_err(|e| {
                CoreError::PeerMisbehaved {
                    culprit: member.clone(),
                    reason: format!("malformed round-2 package: {e}"),
                }
            })?;
            packages.insert(ctx.spec.identifier_of(member)?, package);
        }
        let (key_package, public_key_package) = match &ctx.old {
            Some(old) => {
                let refreshed = frost_secp256k1::keys::refresh::refresh_dkg_shares(
                    &self.secret,
                    &self.others,
                    &packages,
                    old.public_key_package.clone(),
                    old.key_package.clone(),
                )
                .map_err(|e| ctx.spec.culprit(&e))?;
                if refreshed.1.verifying_key() != old.public_key_package.verifying_key() {
                    return Err(CoreError::Aborted("refresh changed the group key".into()));
                }
                refreshed
            }
            None => dkg::part3(&self.secret, &self.others, &packages)
                .map_err(|e| ctx.spec.culprit(&e))?,
        };
        debug_assert_eq!(*key_package.identifier(), ctx.my_identifier);
        let group_public_key = public_key_package
            .verifying_key()
            .serialize()
            .map_err(|e| CoreError::Frost(e.to_string()))?;
        let pkp = public_key_package
            .serialize()
            .map_err(|e| CoreError::Frost(e.to_string()))?;
        let signature = identity
            .sign(&transcript(
                b"key",
                &ctx.spec_hash,
                &[ctx.me.as_str().as_bytes(), &group_public_key, &pkp],
            ))
            .to_vec();
        Ok(DkgOutput {
            key_package,
            public_key_package,
            report: GroupKeyReport {
                sender: ctx.me.clone(),
                group_public_key,
                public_key_package: pkp,
                signature,
            },
        })
    }
}

#[cfg(test)]
mod tests;
