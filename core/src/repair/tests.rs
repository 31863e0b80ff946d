//! Repair (RTS) end to end on a dealer-made 2-of-3 group: the replacement
//! ends with exactly the lost member's share, and every message that is not
//! the spec's own (wrong helper, tampered, replayed into another repair) is
//! refused.

use frost_secp256k1::keys::{generate_with_dealer, IdentifierList, KeyPackage};
use frost_secp256k1::Identifier;

use super::*;
use crate::manifest::{ClusterManifest, ManifestNode};

struct Setup {
    spec: RepairSpec,
    keys: BTreeMap<NodeId, KeyPackage>,
    public: PublicKeyPackage,
    ids: BTreeMap<NodeId, NodeIdentity>,
    dir: Directory,
}

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("id")
}

fn setup() -> Setup {
    let mut rng = rand::thread_rng();
    let members = vec![node("n1"), node("n2"), node("n3")];
    let (shares, public) =
        generate_with_dealer(3, 2, IdentifierList::Default, &mut rng).expect("dealer");
    let mut keys = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        let id: Identifier = identifier(i).expect("identifier");
        let share = shares.get(&id).expect("share").clone();
        keys.insert(m.clone(), KeyPackage::try_from(share).expect("key package"));
    }
    let everyone = [node("n1"), node("n2"), node("n3"), node("r1")];
    let ids: BTreeMap<NodeId, NodeIdentity> = everyone
        .iter()
        .map(|n| (n.clone(), NodeIdentity::generate(&mut rng)))
        .collect();
    let manifest = ClusterManifest {
        nodes: everyone
            .iter()
            .map(|n| ManifestNode {
                id: n.clone(),
                region: "r1".into(),
                endpoint: "127.0.0.1:1".into(),
                tls_server_name: format!("{n}.node.permafrost"),
                identity_key: hex::encode(ids[n].identity_key().as_bytes()),
                encryption_key: hex::encode(ids[n].encryption_public_key()),
            })
            .collect(),
    };
    Setup {
        spec: RepairSpec {
            repair_id: "rep-1".into(),
            group: GroupName::new("warm-1").expect("name"),
            threshold: 2,
            members,
            lost: node("n1"),
            replacement: node("r1"),
            helpers: vec![node("n2"), node("n3")],
        },
        keys,
        public,
        ids,
        dir: manifest.validate().expect("manifest"),
    }
}

fn deltas(s: &Setup, spec: &RepairSpec) -> Vec<SealedRound2> {
    let mut rng = rand::thread_rng();
    spec.helpers
        .iter()
        .flat_map(|h| {
            helper_deltas(spec, h, &s.keys[h], &s.ids[h], &s.dir, &mut rng).expect("deltas")
        })
        .collect()
}

fn sigmas(s: &Setup, spec: &RepairSpec, deltas: &[SealedRound2]) -> Vec<SealedRound2> {
    let mut rng = rand::thread_rng();
    spec.helpers
        .iter()
        .map(|h| helper_sigma(spec, h, deltas, &s.ids[h], &s.dir, &mut rng).expect("sigma"))
        .collect()
}

#[test]
fn replacement_receives_exactly_the_lost_share() {
    let s = setup();
    let d = deltas(&s, &s.spec);
    let sig = sigmas(&s, &s.spec, &d);
    let r1 = node("r1");
    let repaired =
        replacement_receive(&s.spec, &r1, &sig, &s.public, &s.ids[&r1], &s.dir).expect("repaired");
    let lost = &s.keys[&node("n1")];
    assert_eq!(repaired.identifier(), lost.identifier());
    assert_eq!(repaired.signing_share(), lost.signing_share());
    assert_eq!(repaired.verifying_key(), lost.verifying_key());
}

#[test]
fn spec_shape_is_checked() {
    let s = setup();
    let mut bad = s.spec.clone();
    bad.helpers = vec![node("n1"), node("n2")];
    assert!(bad.validate().is_err(), "the lost member cannot help");
    let mut bad = s.spec.clone();
    bad.replacement = node("n2");
    assert!(
        bad.validate().is_err(),
        "a member cannot be the replacement"
    );
    let mut bad = s.spec.clone();
    bad.helpers = vec![node("n2")];
    assert!(bad.validate().is_err(), "exactly t helpers");
    let mut bad = s.spec.clone();
    bad.helpers = vec![node("n2"), node("n2")];
    assert!(bad.validate().is_err(), "no helper twice");
    // The hash covers every field: another replacement is another repair.
    let mut other = s.spec.clone();
    other.replacement = node("r2");
    assert_ne!(other.hash(), s.spec.hash());
}

#[test]
fn only_helpers_release_deltas_and_only_the_replacement_receives() {
    let s = setup();
    let mut rng = rand::thread_rng();
    let r1 = node("r1");
    let n1 = node("n1");
    assert!(helper_deltas(&s.spec, &n1, &s.keys[&n1], &s.ids[&n1], &s.dir, &mut rng).is_err());
    let d = deltas(&s, &s.spec);
    let sig = sigmas(&s, &s.spec, &d);
    let n2 = node("n2");
    assert!(replacement_receive(&s.spec, &n2, &sig, &s.public, &s.ids[&n2], &s.dir).is_err());
    // Too few sigmas: refused, not a wrong share.
    assert!(replacement_receive(&s.spec, &r1, &sig[..1], &s.public, &s.ids[&r1], &s.dir).is_err());
}

#[test]
fn tampered_or_replayed_messages_are_refused() {
    let s = setup();
    let r1 = node("r1");
    // A flipped byte in one delta: the helper receiving it refuses.
    let mut d = deltas(&s, &s.spec);
    let victim = d
        .iter()
        .position(|m| m.recipient == node("n3"))
        .expect("a delta for n3");
    d[victim].ciphertext[0] ^= 1;
    let mut rng = rand::thread_rng();
    let n3 = node("n3");
    assert!(helper_sigma(&s.spec, &n3, &d, &s.ids[&n3], &s.dir, &mut rng).is_err());
    // Sigmas made for one repair are refused by another (bound to the spec hash).
    let d = deltas(&s, &s.spec);
    let sig = sigmas(&s, &s.spec, &d);
    let mut other = s.spec.clone();
    other.repair_id = "rep-2".into();
    assert!(replacement_receive(&other, &r1, &sig, &s.public, &s.ids[&r1], &s.dir).is_err());
}
