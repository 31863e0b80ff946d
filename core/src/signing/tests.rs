//! Signing checks, written once over frost's `Ciphersuite` and run for every
//! suite the cluster signs with (today FROST(secp256k1, SHA-256)).

use std::collections::BTreeMap;

use frost_core::keys::{KeyPackage, PublicKeyPackage};
use frost_core::round1::{SigningCommitments, SigningNonces};
use frost_core::{Ciphersuite, Identifier, SigningPackage};
use rand::thread_rng;

use super::*;
use crate::GroupName;

struct Group<C: Ciphersuite> {
    keys: BTreeMap<Identifier<C>, KeyPackage<C>>,
    public: PublicKeyPackage<C>,
}

fn group<C: Ciphersuite>(n: u16, t: u16) -> Group<C> {
    let (shares, public) = frost_core::keys::generate_with_dealer::<C, _>(
        n,
        t,
        frost_core::keys::IdentifierList::Default,
        &mut thread_rng(),
    )
    .expect("dealer");
    let keys = shares
        .into_iter()
        .map(|(id, s)| (id, KeyPackage::try_from(s).expect("key package")))
        .collect();
    Group { keys, public }
}

fn target<C: Ciphersuite>(g: &Group<C>) -> SigningTarget {
    let name = GroupName::new("warm-1").expect("name");
    SigningTarget::Activation(
        ActivationTarget::for_pending_group(&name, &g.public, false).expect("pending group"),
    )
}

/// Round 1 for `signers`: their nonces and the package over `message`.
#[allow(clippy::type_complexity)]
fn round1<C: Ciphersuite>(
    g: &Group<C>,
    signers: &[Identifier<C>],
    message: &[u8],
) -> (BTreeMap<Identifier<C>, SigningNonces<C>>, SigningPackage<C>) {
    let mut nonces = BTreeMap::new();
    let mut commitments: BTreeMap<Identifier<C>, SigningCommitments<C>> = BTreeMap::new();
    for id in signers {
        let (n, c) = frost_core::round1::commit(g.keys[id].signing_share(), &mut thread_rng());
        nonces.insert(*id, n);
        commitments.insert(*id, c);
    }
    (nonces, SigningPackage::new(commitments, message))
}

/// One session through the batch API.
fn compute_share<C: Ciphersuite>(
    t: &SigningTarget,
    package: &SigningPackage<C>,
    nonces: SigningNonces<C>,
    key: &KeyPackage<C>,
) -> Result<frost_core::round2::SignatureShare<C>, CoreError> {
    compute_shares(t, std::slice::from_ref(package), vec![nonces], key).map(|mut v| v.remove(0))
}

fn check_package<C: Ciphersuite>(
    t: &SigningTarget,
    package: &SigningPackage<C>,
    nonces: &SigningNonces<C>,
    key: &KeyPackage<C>,
) -> Result<(), CoreError> {
    check_packages(
        t,
        std::slice::from_ref(package),
        std::slice::from_ref(nonces),
        key,
    )
}

fn honest_signature_verifies<C: Ciphersuite>() {
    let g = group::<C>(3, 2);
    let t = target(&g);
    let ids: Vec<_> = g.keys.keys().copied().take(2).collect();
    let (mut nonces, package) = round1(&g, &ids, &t.messages()[0]);
    let shares: BTreeMap<_, _> = ids
        .iter()
        .map(|id| {
            let n = nonces.remove(id).expect("nonce");
            (
                *id,
                compute_share(&t, &package, n, &g.keys[id]).expect("share"),
            )
        })
        .collect();
    let sig = aggregate(&package, &shares, &g.public).expect("aggregate");
    g.public
        .verifying_key()
        .verify(&t.messages()[0], &sig)
        .expect("C5: the aggregate verifies");
}

fn x1_package_for_another_message_is_refused<C: Ciphersuite>() {
    let g = group::<C>(3, 2);
    let t = target(&g);
    let ids: Vec<_> = g.keys.keys().copied().take(2).collect();
    let (mut nonces, package) = round1(&g, &ids, b"pay the attacker");
    let n = nonces.remove(&ids[0]).expect("nonce");
    let err = compute_share(&t, &package, n, &g.keys[&ids[0]]).expect_err("refused");
    assert!(err.to_string().contains("not the one derived"), "{err}");
}

fn v3_too_few_commitments_or_not_ours_are_refused<C: Ciphersuite>() {
    let g = group::<C>(3, 2);
    let t = target(&g);
    let ids: Vec<_> = g.keys.keys().copied().collect();
    // Only one commitment for a 2-of-3 group.
    let (nonces, package) = round1(&g, &ids[..1], &t.messages()[0]);
    let err = check_package(&t, &package, &nonces[&ids[0]], &g.keys[&ids[0]]).expect_err("too few");
    assert!(err.to_string().contains("commitments"), "{err}");
    // A package that does not carry this node's commitment (another nonce of ours).
    let (_, package) = round1(&g, &ids[..2], &t.messages()[0]);
    let (other, _) = round1(&g, &ids[..1], &t.messages()[0]);
    let err = check_package(&t, &package, &other[&ids[0]], &g.keys[&ids[0]])
        .expect_err("not our commitment");
    assert!(err.to_string().contains("this node's commitment"), "{err}");
}

fn c1_invalid_share_names_exactly_the_culprit<C: Ciphersuite>() {
    let g = group::<C>(3, 2);
    let t = target(&g);
    let ids: Vec<_> = g.keys.keys().copied().take(2).collect();
    let (mut nonces, package) = round1(&g, &ids, &t.messages()[0]);
    let mut shares = BTreeMap::new();
    for id in &ids {
        let n = nonces.remove(id).expect("nonce");
        shares.insert(
            *id,
            compute_share(&t, &package, n, &g.keys[id]).expect("share"),
        );
    }
    // The second signer's share is replaced by one for a different package.
    let (mut other_nonces, other_package) = round1(&g, &ids, &t.messages()[0]);
    let liar = ids[1];
    let n = other_nonces.remove(&liar).expect("nonce");
    let bad = compute_share(&t, &other_package, n, &g.keys[&liar]).expect("share");
    shares.insert(liar, bad);
    match aggregate(&package, &shares, &g.public) {
        Err(AggregateError::InvalidShares(culprits)) => assert_eq!(culprits, vec![liar]),
        other => panic!("expected the culprit, got {other:?}"),
    }
    // C5: the aggregation for shares checked on arrival still never returns
    // a signature that does not verify.
    assert!(aggregate_verified(&package, &shares, &g.public).is_err());
}

fn k4_active_group_signs_no_activation_test<C: Ciphersuite>() {
    let g = group::<C>(3, 2);
    let name = GroupName::new("warm-1").expect("name");
    assert!(ActivationTarget::for_pending_group(&name, &g.public, true).is_err());
    let key = g.public.verifying_key().serialize().expect("key");
    assert_eq!(
        target(&g).messages()[0].as_slice(),
        activation_message(&name, &key).as_slice()
    );
}

/// Runs every check for one ciphersuite.
macro_rules! suite {
    ($module:ident, $suite:ty) => {
        mod $module {
            #[test]
            fn honest_signature_verifies() {
                super::honest_signature_verifies::<$suite>();
            }
            #[test]
            fn x1_package_for_another_message_is_refused() {
                super::x1_package_for_another_message_is_refused::<$suite>();
            }
            #[test]
            fn v3_too_few_commitments_or_not_ours_are_refused() {
                super::v3_too_few_commitments_or_not_ours_are_refused::<$suite>();
            }
            #[test]
            fn c1_invalid_share_names_exactly_the_culprit() {
                super::c1_invalid_share_names_exactly_the_culprit::<$suite>();
            }
            #[test]
            fn k4_active_group_signs_no_activation_test() {
                super::k4_active_group_signs_no_activation_test::<$suite>();
            }
        }
    };
}

suite!(secp256k1_sha256, frost_secp256k1::Secp256K1Sha256);
suite!(secp256k1_sha256_tr, frost_secp256k1_tr::Secp256K1Sha256TR);

#[test]
fn packages_and_nonces_must_match_the_messages_one_for_one() {
    let g = group::<frost_secp256k1::Secp256K1Sha256>(3, 2);
    let t = target(&g);
    let ids: Vec<_> = g.keys.keys().copied().take(2).collect();
    let (nonces, package) = round1(&g, &ids, &t.messages()[0]);
    let n = &nonces[&ids[0]];
    let two = [package.clone(), package];
    let err = check_packages(&t, &two, std::slice::from_ref(n), &g.keys[&ids[0]])
        .expect_err("two packages for one message");
    assert!(err.to_string().contains("2 signing packages"), "{err}");
}

#[test]
fn rekeyed_shares_sign_for_the_tweaked_taproot_key() {
    use frost_secp256k1_tr::keys::Tweak;
    let g = group::<frost_secp256k1::Secp256K1Sha256>(3, 2);
    let ids: Vec<_> = g.keys.keys().copied().take(2).collect();
    let keys: BTreeMap<_, _> = ids
        .iter()
        .map(|id| {
            let k = taproot_key_package(&g.keys[id]).expect("rekey");
            (*k.identifier(), k)
        })
        .collect();
    let public = taproot_public_key_package(&g.public).expect("rekey public");
    let message = [9u8; 32];
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for (id, k) in &keys {
        let (n, c) = frost_core::round1::commit(k.signing_share(), &mut thread_rng());
        nonces.insert(*id, n);
        commitments.insert(*id, c);
    }
    let package = SigningPackage::new(commitments, &message);
    let shares: BTreeMap<_, _> = keys
        .iter()
        .map(|(id, k)| {
            (
                *id,
                frost_core::round2::sign(&package, &nonces[id], k).expect("share"),
            )
        })
        .collect();
    let sig = aggregate(&package, &shares, &public).expect("aggregate");
    // The same as frost's own taproot helpers with the untweaked key.
    let untweaked =
        rekey_public::<_, frost_secp256k1_tr::Secp256K1Sha256TR>(&g.public).expect("rekey");
    assert_eq!(
        untweaked.tweak(None::<&[u8]>).verifying_key(),
        public.verifying_key()
    );
    assert_eq!(sig.serialize().expect("serialize").len(), 64);
}
