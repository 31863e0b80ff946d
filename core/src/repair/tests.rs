//! Repair (RTS) end to end on a dealer-made 2-of-3 group: the replacement
//! ends with exactly the lost member's share, and every message that is not
//! the spec's own (wrong helper, tampered, replayed into another repair) is
//! refused.

use frost_secp256k1::keys::{generate_with_dealer, IdentifierList, KeyPackage};
use frost_secp256k1::Identifier;

use super::*;
use crate::ceremony::{testing, AuthorizedCeremony, HeldGroup, LifecycleSpec};
use crate::manifest::{ClusterManifest, ManifestNode};
use crate::Tier;

struct Setup {
    spec: RepairSpec,
    /// What the operators approved: n1's share rebuilt on r1, at epoch 1.
    approved: LifecycleSpec,
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
    let group = GroupName::new("warm-1").expect("name");
    let now = crate::unix_now();
    let approved = LifecycleSpec {
        version: crate::ceremony::SPEC_VERSION,
        operation: crate::ceremony::Operation::Repair,
        proposal_id: "rep-1".into(),
        group: group.clone(),
        tier: Tier::Warm,
        epoch: 1,
        group_key: Some(public.verifying_key().serialize().expect("key")),
        members: vec![node("r1"), node("n2"), node("n3")],
        threshold: 2,
        subject: Some(node("n1")),
        replacement: Some(node("r1")),
        created_at: now,
        expires_at: now + 600,
        registry: None,
    };
    Setup {
        spec: RepairSpec {
            repair_id: "rep-1".into(),
            group,
            threshold: 2,
            members: members.clone(),
            lost: node("n1"),
            replacement: node("r1"),
            helpers: vec![node("n2"), node("n3")],
            removed: Vec::new(),
            authorization: approved.digest().0,
        },
        approved,
        keys,
        public,
        ids,
        dir: manifest.validate().expect("manifest"),
    }
}

impl Setup {
    fn held(&self, applied: bool) -> HeldGroup {
        HeldGroup {
            epoch: if applied { 2 } else { 1 },
            group_key: self.approved.group_key.clone().expect("key"),
            members: if applied {
                self.approved.members.clone()
            } else {
                self.spec.members.clone()
            },
            removed: Vec::new(),
            threshold: 2,
            tier: Tier::Warm,
            last_spec: applied.then(|| self.approved.digest()),
        }
    }
    /// A helper before it helped.
    fn helper(&self, h: &NodeId) -> AuthorizedCeremony {
        testing::member(&self.approved, h, &self.held(false))
    }
    /// A helper after it committed to the new membership.
    fn helped(&self) -> AuthorizedCeremony {
        testing::applied(&self.approved, &self.held(true))
    }
    /// The replacement.
    fn newcomer(&self) -> AuthorizedCeremony {
        testing::newcomer(&self.approved, &node("r1"))
    }
}

fn deltas(s: &Setup, spec: &RepairSpec) -> Vec<SealedRound2> {
    let mut rng = rand::thread_rng();
    spec.helpers
        .iter()
        .flat_map(|h| {
            helper_deltas(
                spec,
                &s.helper(h),
                h,
                &s.keys[h],
                &s.ids[h],
                &s.dir,
                &mut rng,
            )
            .expect("deltas")
        })
        .collect()
}

fn sigmas(s: &Setup, spec: &RepairSpec, deltas: &[SealedRound2]) -> Vec<SealedRound2> {
    let mut rng = rand::thread_rng();
    spec.helpers
        .iter()
        .map(|h| {
            helper_sigma(spec, &s.helped(), h, deltas, &s.ids[h], &s.dir, &mut rng).expect("sigma")
        })
        .collect()
}

#[test]
fn replacement_receives_exactly_the_lost_share() {
    let s = setup();
    let d = deltas(&s, &s.spec);
    let sig = sigmas(&s, &s.spec, &d);
    let r1 = node("r1");
    let repaired = replacement_receive(
        &s.spec,
        &s.newcomer(),
        &r1,
        &sig,
        &s.public,
        &s.ids[&r1],
        &s.dir,
    )
    .expect("repaired");
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
    assert!(helper_deltas(
        &s.spec,
        &s.helper(&node("n2")),
        &n1,
        &s.keys[&n1],
        &s.ids[&n1],
        &s.dir,
        &mut rng
    )
    .is_err());
    let d = deltas(&s, &s.spec);
    let sig = sigmas(&s, &s.spec, &d);
    let n2 = node("n2");
    assert!(replacement_receive(
        &s.spec,
        &s.newcomer(),
        &n2,
        &sig,
        &s.public,
        &s.ids[&n2],
        &s.dir
    )
    .is_err());
    // Too few sigmas: refused, not a wrong share.
    assert!(replacement_receive(
        &s.spec,
        &s.newcomer(),
        &r1,
        &sig[..1],
        &s.public,
        &s.ids[&r1],
        &s.dir
    )
    .is_err());
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
    assert!(helper_sigma(&s.spec, &s.helped(), &n3, &d, &s.ids[&n3], &s.dir, &mut rng).is_err());
    // Sigmas made for one repair are refused by another (bound to the spec hash).
    let d = deltas(&s, &s.spec);
    let sig = sigmas(&s, &s.spec, &d);
    let mut other = s.spec.clone();
    other.repair_id = "rep-2".into();
    assert!(replacement_receive(
        &other,
        &s.newcomer(),
        &r1,
        &sig,
        &s.public,
        &s.ids[&r1],
        &s.dir
    )
    .is_err());
}

#[test]
fn x6_prepare_acks_must_come_from_every_remaining_member_for_this_very_move() {
    let s = setup();
    let key = s.public.verifying_key().serialize().expect("key");
    let pkp = s.public.serialize().expect("pkp");
    let ack = |m: &str| sign_ack(&s.spec, &node(m), &s.ids[&node(m)], 2, &key, &pkp, &REG);
    let all = [ack("n2"), ack("n3")];
    check_acks(&s.spec, &s.dir, &all, 2, &key, &pkp, Some(&REG)).expect("every remaining member");
    assert_eq!(s.spec.remaining(), vec![node("n2"), node("n3")]);

    // One missing: named.
    let err =
        check_acks(&s.spec, &s.dir, &all[..1], 2, &key, &pkp, Some(&REG)).expect_err("n3 missing");
    assert!(err.to_string().contains("none from n3"), "{err}");
    // The lost member, or a stranger, cannot stand in.
    let lost = sign_ack(
        &s.spec,
        &node("n1"),
        &s.ids[&node("n1")],
        2,
        &key,
        &pkp,
        &REG,
    );
    assert!(check_acks(
        &s.spec,
        &s.dir,
        &[all[0].clone(), lost],
        2,
        &key,
        &pkp,
        Some(&REG)
    )
    .is_err());
    // Relabelled, or for another epoch, package or repair: refused.
    let mut relabelled = all[0].clone();
    relabelled.member = node("n3");
    assert!(check_acks(
        &s.spec,
        &s.dir,
        &[all[0].clone(), relabelled],
        2,
        &key,
        &pkp,
        Some(&REG)
    )
    .is_err());
    assert!(check_acks(&s.spec, &s.dir, &all, 3, &key, &pkp, Some(&REG)).is_err());
    let mut other_pkp = pkp.clone();
    let last = other_pkp.len() - 1;
    other_pkp[last] ^= 1;
    assert!(check_acks(&s.spec, &s.dir, &all, 2, &key, &other_pkp, Some(&REG)).is_err());
    let mut other = s.spec.clone();
    other.repair_id = "rep-2".into();
    assert!(check_acks(&other, &s.dir, &all, 2, &key, &pkp, Some(&REG)).is_err());
    // X5: under another operator registry than the checker's, or with one
    // member's stated registry relabelled: refused. Without an expected one,
    // the members must agree.
    assert!(check_acks(&s.spec, &s.dir, &all, 2, &key, &pkp, Some(&[8; 32])).is_err());
    let mut relabelled = all.clone();
    relabelled[1].registry = vec![8; 32];
    assert!(check_acks(&s.spec, &s.dir, &relabelled, 2, &key, &pkp, Some(&[8; 32])).is_err());
    assert_eq!(
        check_acks(&s.spec, &s.dir, &all, 2, &key, &pkp, None).expect("they agree"),
        REG.to_vec()
    );
    assert!(check_acks(&s.spec, &s.dir, &relabelled, 2, &key, &pkp, None).is_err());
}

/// The operator registry hash the test members acknowledge under.
const REG: [u8; 32] = [5; 32];
