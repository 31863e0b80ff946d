//! The floor: the same FROST work in this process on one thread, with no
//! network, storage or policy — what a signature or a key ceremony costs
//! before it is distributed. Signing is RFC 9591 §5 (round one `commit`, the
//! signing package, round two `sign`, `aggregate`) plus one verification of
//! the result; the ceremony is the three-part DKG of frost-core.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use frost_secp256k1 as frost;
use frost_secp256k1::keys::{IdentifierList, KeyPackage, PublicKeyPackage};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::bench::stats::Summary;
use crate::SimError;

/// Signatures made before timing starts (page faults, caches, lazy tables).
const WARM_UP: usize = 3;

/// In-process signing cost for one t-of-n.
#[derive(Clone, Debug, Serialize)]
pub struct SigningFloor {
    /// Signers needed.
    pub threshold: u16,
    /// Group size.
    pub members: u16,
    /// Signatures timed.
    pub signatures: usize,
    /// Per signature: every signer's commit and share, aggregation, one verification.
    pub latency: Summary,
    /// Signatures per second on one thread (1 / mean).
    pub rate_per_sec: f64,
}

/// In-process cost of one DKG ceremony (all parties on one thread).
#[derive(Clone, Debug, Serialize)]
pub struct DkgFloor {
    /// Signers needed.
    pub threshold: u16,
    /// Parties.
    pub members: u16,
    /// Wall time of part 1, 2 and 3 for every party, milliseconds.
    pub ms: f64,
}

fn crypto(what: &str) -> impl FnOnce(frost::Error) -> SimError + '_ {
    move |e| SimError::Verification(format!("in-process FROST {what}: {e}"))
}

/// Keys for `threshold`-of-`members` from a trusted dealer: the floor only
/// needs valid key packages, not how they were made.
fn dealer_keys(
    threshold: u16,
    members: u16,
) -> Result<(Vec<(frost::Identifier, KeyPackage)>, PublicKeyPackage), SimError> {
    let (shares, public) = frost::keys::generate_with_dealer(
        members,
        threshold,
        IdentifierList::Default,
        rand::thread_rng(),
    )
    .map_err(crypto("key generation"))?;
    let mut packages = Vec::new();
    for (id, share) in shares {
        packages.push((
            id,
            KeyPackage::try_from(share).map_err(crypto("key package"))?,
        ));
    }
    Ok((packages, public))
}

/// One signature by the first `threshold` members, verified.
fn sign_once(
    signers: &[(frost::Identifier, KeyPackage)],
    public: &PublicKeyPackage,
    message: &[u8],
) -> Result<(), SimError> {
    let mut rng = rand::thread_rng();
    let mut nonces = Vec::with_capacity(signers.len());
    let mut commitments = BTreeMap::new();
    for (id, key) in signers {
        let (n, c) = frost::round1::commit(key.signing_share(), &mut rng);
        nonces.push(n);
        commitments.insert(*id, c);
    }
    let package = frost::SigningPackage::new(commitments, message);
    let mut shares = BTreeMap::new();
    for ((id, key), n) in signers.iter().zip(&nonces) {
        shares.insert(
            *id,
            frost::round2::sign(&package, n, key).map_err(crypto("round 2"))?,
        );
    }
    let signature = frost::aggregate(&package, &shares, public).map_err(crypto("aggregate"))?;
    public
        .verifying_key()
        .verify(message, &signature)
        .map_err(crypto("verify"))
}

/// Times `signatures` in-process signatures of a `threshold`-of-`members` group.
pub fn signing(threshold: u16, members: u16, signatures: usize) -> Result<SigningFloor, SimError> {
    let (keys, public) = dealer_keys(threshold, members)?;
    let signers = &keys[..usize::from(threshold)];
    let mut samples = Vec::with_capacity(signatures);
    for i in 0..signatures + WARM_UP {
        let message = Sha256::digest(format!("permafrost bench floor/{i}")).to_vec();
        let started = Instant::now();
        sign_once(signers, &public, &message)?;
        if i >= WARM_UP {
            samples.push(started.elapsed());
        }
    }
    let latency = Summary::of(&samples);
    let rate_per_sec = if latency.mean_ms > 0.0 {
        1000.0 / latency.mean_ms
    } else {
        0.0
    };
    Ok(SigningFloor {
        threshold,
        members,
        signatures,
        latency,
        rate_per_sec,
    })
}

/// Times one in-process DKG of `threshold`-of-`members`.
pub fn dkg(threshold: u16, members: u16) -> Result<DkgFloor, SimError> {
    let started = Instant::now();
    let mut rng = rand::thread_rng();
    let mut round1_secrets = BTreeMap::new();
    let mut round1_packages = BTreeMap::new();
    for i in 1..=members {
        let id = frost::Identifier::try_from(i).map_err(crypto("identifier"))?;
        let (secret, package) =
            frost::keys::dkg::part1(id, members, threshold, &mut rng).map_err(crypto("part 1"))?;
        round1_secrets.insert(id, secret);
        round1_packages.insert(id, package);
    }
    let others = |me: &frost::Identifier| -> BTreeMap<_, _> {
        round1_packages
            .iter()
            .filter(|(id, _)| *id != me)
            .map(|(id, p)| (*id, p.clone()))
            .collect()
    };
    let mut round2_secrets = BTreeMap::new();
    let mut inbox: BTreeMap<frost::Identifier, BTreeMap<frost::Identifier, _>> = BTreeMap::new();
    for (id, secret) in round1_secrets {
        let (secret2, outgoing) =
            frost::keys::dkg::part2(secret, &others(&id)).map_err(crypto("part 2"))?;
        round2_secrets.insert(id, secret2);
        for (to, package) in outgoing {
            inbox.entry(to).or_default().insert(id, package);
        }
    }
    let mut group_key = None;
    for (id, secret2) in &round2_secrets {
        let received = inbox.remove(id).unwrap_or_default();
        let (_, public) =
            frost::keys::dkg::part3(secret2, &others(id), &received).map_err(crypto("part 3"))?;
        let key = public
            .verifying_key()
            .serialize()
            .map_err(crypto("group key"))?;
        if group_key.get_or_insert_with(|| key.clone()) != &key {
            return Err(SimError::Verification(
                "in-process DKG: parties derived different group keys".into(),
            ));
        }
    }
    Ok(DkgFloor {
        threshold,
        members,
        ms: ms(started.elapsed()),
    })
}

/// Milliseconds as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_produce_valid_signatures_and_keys() {
        let s = signing(2, 3, 4).expect("signing floor");
        assert_eq!(s.latency.count, 4);
        assert!(s.rate_per_sec > 0.0);
        let d = dkg(2, 3).expect("dkg floor");
        assert!(d.ms > 0.0);
    }
}
