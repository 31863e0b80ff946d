//! The liar's event format and its choices.
use super::*;
use std::collections::BTreeMap;

#[test]
fn events_round_trip_as_json_lines() {
    let e = LiarEvent::Paused {
        point: PausePoint::BeforeSign,
        request: "r1".into(),
    };
    let line = serde_json::to_string(&e).expect("encode");
    assert_eq!(
        line,
        r#"{"event":"paused","point":"before-sign","request":"r1"}"#
    );
    assert_eq!(serde_json::from_str::<LiarEvent>(&line).expect("decode"), e);
}

#[test]
fn restored_package_carries_the_real_commitments() {
    let mut rng = StdRng::seed_from_u64(1);
    let share = |b: u8| SigningShare::deserialize(&[b; 32]).expect("share");
    let (_, real) = frost_secp256k1::round1::commit(&share(1), &mut rng);
    let (_, fake) = frost_secp256k1::round1::commit(&share(2), &mut rng);
    let (_, other) = frost_secp256k1::round1::commit(&share(3), &mut rng);
    let one = Identifier::try_from(1u16).expect("id");
    let two = Identifier::try_from(2u16).expect("id");
    let shown = SigningPackage::new(BTreeMap::from([(one, fake), (two, other)]), b"msg");
    let bytes = shown.serialize().expect("serialize");
    let restored =
        Liar::restore_commitments(&bytes, 1, &real.serialize().expect("ser")).expect("restored");
    let restored = SigningPackage::deserialize(&restored).expect("package");
    assert_eq!(restored.signing_commitments().get(&one), Some(&real));
    assert_eq!(restored.signing_commitments().get(&two), Some(&other));
    assert_eq!(restored.message().as_slice(), b"msg");
}

#[test]
fn dkg_lies_need_a_sender() {
    assert!(Lie::DkgEcho.is_dkg());
    assert!(!Lie::BadShare.is_dkg());
    assert!(LiarOptions::new(Lie::DkgEcho).validate().is_err());
    let mut options = LiarOptions::new(Lie::DkgEcho);
    options.tamper_sender = Some("n2".into());
    assert!(options.validate().is_ok());
    assert!(LiarOptions::new(Lie::SlowSign).validate().is_err());
}

#[test]
fn adaptive_choices_replay_and_vary() {
    let picks: Vec<Lie> = (0..30)
        .map(|i| adaptive_choice(7, &format!("r{i}")))
        .collect();
    let again: Vec<Lie> = (0..30)
        .map(|i| adaptive_choice(7, &format!("r{i}")))
        .collect();
    assert_eq!(picks, again, "a function of seed and request only");
    for lie in [Lie::Honest, Lie::BadShare, Lie::SilentAfterCommit] {
        assert!(picks.contains(&lie), "{lie:?} never chosen in 30 sessions");
    }
}
