//! DKG state-machine tests: every step of RFC 9591 Appendix C's DKG as run
//! here, and each attack it must refuse (K1–K5).

use super::*;
use crate::manifest::{ClusterManifest, ManifestNode};
use crate::{GroupName, Tier};

pub(crate) struct Fixture {
    pub spec: CeremonySpec,
    /// What the operators approved (two of three test operators).
    pub approved: crate::ceremony::LifecycleSpec,
    pub ids: Vec<NodeIdentity>,
    pub dir: Directory,
}

pub(crate) fn fixture(n: usize, t: u16) -> Fixture {
    let mut rng = rand::thread_rng();
    let ids: Vec<NodeIdentity> = (0..n).map(|_| NodeIdentity::generate(&mut rng)).collect();
    let members: Vec<NodeId> = (0..n)
        .map(|i| NodeId::new(format!("n{}", i + 1)).expect("valid"))
        .collect();
    let manifest = ClusterManifest {
        nodes: members
            .iter()
            .zip(&ids)
            .map(|(m, id)| ManifestNode {
                id: m.clone(),
                region: "r1".into(),
                endpoint: "127.0.0.1:1".into(),
                tls_server_name: format!("{m}.node.permafrost"),
                identity_key: hex::encode(id.identity_key().as_bytes()),
                encryption_key: hex::encode(id.encryption_public_key()),
            })
            .collect(),
    };
    let group = GroupName::new("warm-1").expect("valid");
    let approved = crate::ceremony::testing::create_spec(&group, Tier::Warm, &members, t);
    Fixture {
        spec: CeremonySpec {
            ceremony_id: "c1".into(),
            group,
            tier: Tier::Warm,
            threshold: t,
            members,
            removed: Vec::new(),
            refresh: false,
            authorization: approved.digest().0,
        },
        approved,
        ids,
        dir: manifest.validate().expect("valid manifest"),
    }
}

impl Fixture {
    /// Member `i`'s authorization: the quorum-approved create spec, as a newcomer.
    pub fn auth(&self, i: usize) -> crate::ceremony::AuthorizedCeremony {
        crate::ceremony::testing::newcomer(&self.approved, &self.spec.members[i])
    }
}

type Tamper<'a> = &'a dyn Fn(usize, &mut Vec<SignedRound1>);

fn run(f: &Fixture, tamper_round1: Tamper) -> Vec<Result<DkgOutput, CoreError>> {
    let mut rng = rand::thread_rng();
    let n = f.spec.members.len();
    let mut states = Vec::new();
    let mut r1 = Vec::new();
    for i in 0..n {
        let (s, m) = start(
            f.spec.clone(),
            &f.auth(i),
            &f.spec.members[i],
            &f.ids[i],
            &mut rng,
        )
        .expect("part1");
        states.push(s);
        r1.push(m);
    }
    let mut echoes = Vec::new();
    let mut next = Vec::new();
    for (i, s) in states.into_iter().enumerate() {
        let mut view = r1.clone();
        tamper_round1(i, &mut view);
        match s.receive_round1(&view, &f.dir, &f.ids[i]) {
            Ok((s, e)) => {
                echoes.push(e);
                next.push(Some(s));
            }
            Err(e) => return vec![Err(e)],
        }
    }
    let mut r2 = Vec::new();
    let mut states2 = Vec::new();
    let mut results: Vec<Option<Result<DkgOutput, CoreError>>> = (0..n).map(|_| None).collect();
    for (i, s) in next.into_iter().enumerate() {
        match s
            .expect("present")
            .receive_echoes(&echoes, &f.dir, &f.ids[i], &mut rng)
        {
            Ok((s, shares)) => {
                r2.extend(shares);
                states2.push(Some(s));
            }
            Err(e) => {
                results[i] = Some(Err(e));
                states2.push(None);
            }
        }
    }
    for (i, s) in states2.into_iter().enumerate() {
        if let Some(s) = s {
            results[i] = Some(s.receive_round2(&r2, &f.dir, &f.ids[i]));
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every member has a result"))
        .collect()
}

#[test]
fn dkg_completes_and_all_agree() {
    let f = fixture(3, 2);
    let out = run(&f, &|_, _| {});
    let reports: Vec<GroupKeyReport> = out.into_iter().map(|r| r.expect("ok").report).collect();
    let pkp = check_reports(&f.spec, &f.dir, &reports).expect("agree");
    assert_eq!(pkp.verifying_shares().len(), 3);
}

#[test]
fn k1_split_view_aborts_every_honest_member() {
    let f = fixture(3, 2);
    // The relay shows member 2 a different (but validly signed, replayed) package:
    // here, it swaps n1's package for a freshly generated one signed by n1's key.
    let mut rng = rand::thread_rng();
    let (_, forged) = start(
        f.spec.clone(),
        &f.auth(0),
        &f.spec.members[0],
        &f.ids[0],
        &mut rng,
    )
    .expect("part1");
    let out = run(&f, &move |i, view: &mut Vec<SignedRound1>| {
        if i == 2 {
            view[0] = forged.clone();
        }
    });
    for r in out {
        let err = r.expect_err("must abort");
        assert!(matches!(err, CoreError::Aborted(_)), "{err}");
    }
}

#[test]
fn k2_long_commitment_rejected_with_sender_named() {
    let f = fixture(3, 2);
    let mut rng = rand::thread_rng();
    let mut spec3 = f.spec.clone();
    spec3.threshold = 3;
    // n2 runs part 1 with threshold 3 but signs it under the real spec.
    let (_, pkg) = dkg::part1(
        spec3.identifier_of(&f.spec.members[1]).expect("member"),
        3,
        3,
        &mut rng,
    )
    .expect("part1");
    let bytes = pkg.serialize().expect("ser");
    let sig = f.ids[1]
        .sign(&transcript(b"round1", &f.spec.hash(), &[b"n2", &bytes]))
        .to_vec();
    let evil = SignedRound1 {
        sender: f.spec.members[1].clone(),
        package: bytes,
        signature: sig,
    };
    let out = run(&f, &move |_, view: &mut Vec<SignedRound1>| {
        view[1] = evil.clone()
    });
    match &out[0] {
        Err(CoreError::PeerMisbehaved { culprit, .. }) => assert_eq!(culprit.as_str(), "n2"),
        other => panic!("expected culprit n2, got {:?}", other.as_ref().map(|_| ())),
    }
}

#[test]
fn k3_proof_replayed_under_another_identity_rejected() {
    let f = fixture(3, 2);
    let mut rng = rand::thread_rng();
    let mut states = Vec::new();
    let mut r1 = Vec::new();
    for i in 0..2 {
        let (s, m) = start(
            f.spec.clone(),
            &f.auth(i),
            &f.spec.members[i],
            &f.ids[i],
            &mut rng,
        )
        .expect("part1");
        states.push(s);
        r1.push(m);
    }
    // Malicious n3 re-sends n1's package as its own, correctly signed by n3 and
    // echoing the same set as everyone: only the proof of knowledge, bound to
    // n1's identifier, gives it away.
    let sig = f.ids[2]
        .sign(&transcript(
            b"round1",
            &f.spec.hash(),
            &[b"n3", &r1[0].package],
        ))
        .to_vec();
    r1.push(SignedRound1 {
        sender: f.spec.members[2].clone(),
        package: r1[0].package.clone(),
        signature: sig,
    });
    let mut echoes = Vec::new();
    let mut next = Vec::new();
    for (i, s) in states.into_iter().enumerate() {
        let (s, e) = s
            .receive_round1(&r1, &f.dir, &f.ids[i])
            .expect("round-1 set is well-formed");
        echoes.push(e);
        next.push(s);
    }
    let set_hash = echoes[0].set_hash.clone();
    let signature = f.ids[2]
        .sign(&transcript(b"echo", &f.spec.hash(), &[b"n3", &set_hash]))
        .to_vec();
    echoes.push(Echo {
        sender: f.spec.members[2].clone(),
        set_hash,
        signature,
    });
    for (i, s) in next.into_iter().enumerate() {
        match s.receive_echoes(&echoes, &f.dir, &f.ids[i], &mut rng) {
            Err(CoreError::PeerMisbehaved { culprit, .. }) => {
                assert_eq!(culprit.as_str(), "n3")
            }
            Err(e) => panic!("expected culprit n3, got {e}"),
            Ok(_) => panic!("replayed proof accepted"),
        }
    }
}

#[test]
fn k5_round2_shares_only_open_for_their_recipient() {
    let f = fixture(3, 2);
    let mut rng = rand::thread_rng();
    let mut states = Vec::new();
    let mut r1 = Vec::new();
    for i in 0..3 {
        let (s, m) = start(
            f.spec.clone(),
            &f.auth(i),
            &f.spec.members[i],
            &f.ids[i],
            &mut rng,
        )
        .expect("part1");
        states.push(s);
        r1.push(m);
    }
    let mut echoes = Vec::new();
    let mut next = Vec::new();
    for (i, s) in states.into_iter().enumerate() {
        let (s, e) = s.receive_round1(&r1, &f.dir, &f.ids[i]).expect("round 1");
        echoes.push(e);
        next.push(s);
    }
    let (_, shares) = next
        .remove(0)
        .receive_echoes(&echoes, &f.dir, &f.ids[0], &mut rng)
        .expect("part 2");
    assert_eq!(shares.len(), 2);
    for share in &shares {
        let recipient = f
            .spec
            .members
            .iter()
            .position(|m| *m == share.recipient)
            .expect("member");
        let info = round2_info(&f.spec.hash(), &share.sender, &share.recipient);
        let plaintext = f.ids[recipient]
            .open(&share.encapped_key, &share.ciphertext, &info)
            .expect("recipient opens");
        let package = round2::Package::deserialize(&plaintext).expect("package");
        let secret = package.signing_share().serialize();
        // What the relay sees never contains the share, and no one else can open it.
        assert!(!share
            .ciphertext
            .windows(secret.len())
            .any(|w| w == secret.as_slice()));
        let other = (recipient % 2) + 1;
        assert!(f.ids[other]
            .open(&share.encapped_key, &share.ciphertext, &info)
            .is_err());
    }
}

#[test]
fn forged_round1_signature_names_sender() {
    let f = fixture(3, 2);
    let out = run(&f, &|i, view: &mut Vec<SignedRound1>| {
        if i == 0 {
            view[1].signature[0] ^= 1;
        }
    });
    match &out[0] {
        Err(CoreError::PeerMisbehaved { culprit, .. }) => assert_eq!(culprit.as_str(), "n2"),
        _ => panic!("expected culprit"),
    }
}
