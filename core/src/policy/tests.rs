//! Policy evaluation tests: limits, velocity, approval bands, allowlist,
//! time-lock and lifetime (P1–P3, A2, I2).

use super::*;
use crate::withdrawal::tests::sample;
use ed25519_dalek::{Signer, SigningKey};

struct Fx {
    policy: Policy,
    alice: SigningKey,
    bob: SigningKey,
}

fn fx() -> Fx {
    let alice = SigningKey::from_bytes(&[1; 32]);
    let bob = SigningKey::from_bytes(&[2; 32]);
    let text = format!(
        r#"
[approvers]
alice = "{a}"
bob = "{b}"
alice-again = "{a}"

[groups.warm-1]
tier = "warm"
max_lifetime_secs = 86400
[groups.warm-1.assets.BTC]
per_request_max = "100000000"
daily_max = "150000000"
bands = [{{ up_to = "1000000", approvals = 0 }}, {{ up_to = "10000000", approvals = 1 }}]
approvals_above = 2

[groups.cold-1]
tier = "cold"
max_lifetime_secs = 604800
time_lock_secs = 60
min_approvals = 2
allowlist = ["bc1qwarmwallet"]
[groups.cold-1.assets.BTC]
per_request_max = "10000000000"
daily_max = "10000000000"
"#,
        a = hex::encode(alice.verifying_key().as_bytes()),
        b = hex::encode(bob.verifying_key().as_bytes()),
    );
    Fx {
        policy: Policy::from_toml(&text).expect("valid"),
        alice,
        bob,
    }
}

fn approve(key: &SigningKey, id: &str, r: &WithdrawalRequest, expires_at: u64) -> Approval {
    Approval {
        approver_id: id.into(),
        expires_at,
        signature: key
            .sign(&approval_message(&r.digest(), id, expires_at))
            .to_bytes()
            .to_vec(),
    }
}

fn eval(f: &Fx, r: &WithdrawalRequest, a: &[Approval], spent: u128, now: u64) -> Verdict {
    evaluate(
        &f.policy,
        r,
        &Spend::of_labels(r),
        &r.digest(),
        a,
        LedgerView {
            spent_24h: spent,
            first_seen: Some(r.created_at),
        },
        now,
    )
}

#[test]
fn approvals_follow_amount_bands() {
    let f = fx();
    let mut r = sample();
    let now = r.created_at;
    r.amount = 1_000_000;
    assert_eq!(eval(&f, &r, &[], 0, now), Verdict::Allowed);
    r.amount = 5_000_000;
    assert!(matches!(
        eval(&f, &r, &[], 0, now),
        Verdict::Waiting {
            approvals_missing: 1,
            ..
        }
    ));
    let a = approve(&f.alice, "alice", &r, now + 60);
    assert_eq!(
        eval(&f, &r, std::slice::from_ref(&a), 0, now),
        Verdict::Allowed
    );
    r.amount = 50_000_000;
    let a = approve(&f.alice, "alice", &r, now + 60);
    assert!(matches!(
        eval(&f, &r, &[a], 0, now),
        Verdict::Waiting {
            approvals_missing: 1,
            ..
        }
    ));
}

#[test]
fn i2_one_key_counts_once_and_self_approval_refused() {
    let f = fx();
    let mut r = sample();
    r.amount = 50_000_000;
    let now = r.created_at;
    // The same key under two registry ids counts once.
    let twice = [
        approve(&f.alice, "alice", &r, now + 60),
        approve(&f.alice, "alice-again", &r, now + 60),
    ];
    match eval(&f, &r, &twice, 0, now) {
        Verdict::Waiting {
            approvals_missing: 1,
            rejected_approvals,
            ..
        } => {
            assert!(
                rejected_approvals[0].contains("already counted"),
                "{rejected_approvals:?}"
            )
        }
        v => panic!("{v:?}"),
    }
    // The requester cannot approve their own request.
    r.requested_by = "bob".into();
    let own = [
        approve(&f.alice, "alice", &r, now + 60),
        approve(&f.bob, "bob", &r, now + 60),
    ];
    match eval(&f, &r, &own, 0, now) {
        Verdict::Waiting {
            approvals_missing: 1,
            rejected_approvals,
            ..
        } => {
            assert!(
                rejected_approvals[0].contains("own request"),
                "{rejected_approvals:?}"
            )
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn a2_approval_replayed_on_another_request_or_after_expiry_refused() {
    let f = fx();
    let mut r = sample();
    r.amount = 5_000_000;
    let now = r.created_at;
    let mut other = r.clone();
    other.request_id = crate::RequestId::new("wd-other").expect("valid");
    let replayed = approve(&f.alice, "alice", &other, now + 60);
    assert!(matches!(
        eval(&f, &r, &[replayed], 0, now),
        Verdict::Waiting {
            approvals_missing: 1,
            ..
        }
    ));
    let a = approve(&f.alice, "alice", &r, now + 60);
    assert_eq!(
        eval(&f, &r, std::slice::from_ref(&a), 0, now + 60),
        Verdict::Allowed
    );
    assert!(matches!(
        eval(&f, &r, &[a], 0, now + 61),
        Verdict::Waiting {
            approvals_missing: 1,
            ..
        }
    ));
}

#[test]
fn p1_velocity_counts_what_was_already_signed() {
    let f = fx();
    let mut r = sample();
    r.amount = 1_000_000;
    assert_eq!(
        eval(&f, &r, &[], 149_000_000, r.created_at),
        Verdict::Allowed
    );
    match eval(&f, &r, &[], 149_000_001, r.created_at) {
        Verdict::Denied(why) => {
            assert!(why.contains("velocity"), "{why}");
            assert_eq!(why.rule, PolicyRule::Velocity);
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn p2_p3_allowlist_tier_and_time_lock() {
    let f = fx();
    let mut r = sample();
    r.key_group = GroupName::new("cold-1").expect("valid");
    r.tier = Tier::Cold;
    let now = r.created_at;
    match eval(&f, &r, &[], 0, now) {
        Verdict::Denied(why) => {
            assert!(why.contains("allowlist"), "{why}");
            assert_eq!(why.rule, PolicyRule::Allowlist);
        }
        v => panic!("{v:?}"),
    }
    r.destination = "bc1qwarmwallet".into();
    let two = [
        approve(&f.alice, "alice", &r, now + 600),
        approve(&f.bob, "bob", &r, now + 600),
    ];
    match eval(&f, &r, &two, 0, now + 59) {
        Verdict::Waiting {
            approvals_missing: 0,
            time_locked_until: Some(t),
            ..
        } => assert_eq!(t, now + 60),
        v => panic!("{v:?}"),
    }
    assert_eq!(eval(&f, &r, &two, 0, now + 60), Verdict::Allowed);
    // The time-lock counts from when the node first saw the request, not only from created_at.
    let late = LedgerView {
        spent_24h: 0,
        first_seen: Some(now + 100),
    };
    assert!(matches!(
        evaluate(
            &f.policy,
            &r,
            &Spend::of_labels(&r),
            &r.digest(),
            &two,
            late,
            now + 120
        ),
        Verdict::Waiting {
            time_locked_until: Some(_),
            ..
        }
    ));
    // Cold submitted as warm.
    let mut warm = r.clone();
    warm.tier = Tier::Warm;
    assert!(matches!(
        eval(&f, &warm, &two, 0, now + 60),
        Verdict::Denied(_)
    ));
}

#[test]
fn validation_names_field_and_value() {
    let err = Policy::from_toml(
        r#"
[groups.cold-1]
tier = "cold"
max_lifetime_secs = 10
min_approvals = 1
allowlist = ["x"]
assets = {}
"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("groups.cold-1.min_approvals = 1"), "{err}");
    let err = Policy::from_toml(
        r#"
[groups.warm-1]
tier = "warm"
max_lifetime_secs = 10
[groups.warm-1.assets.BTC]
per_request_max = "ten"
daily_max = "100"
"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("per_request_max") && err.contains("ten"),
        "{err}"
    );
}

#[test]
fn i2_requester_cannot_approve_through_an_alias_of_their_key() {
    let f = fx();
    let mut r = sample();
    r.amount = 50_000_000;
    // alice asks; "alice-again" is the same key under another id.
    r.requested_by = "alice".into();
    let now = r.created_at;
    let alias = [
        approve(&f.alice, "alice-again", &r, now + 60),
        approve(&f.bob, "bob", &r, now + 60),
    ];
    match eval(&f, &r, &alias, 0, now) {
        Verdict::Waiting {
            approvals_missing: 1,
            rejected_approvals,
            ..
        } => assert!(
            rejected_approvals[0].contains("own request"),
            "{rejected_approvals:?}"
        ),
        v => panic!("{v:?}"),
    }
}

#[test]
fn f4_future_dated_request_is_not_time_locked_where_no_time_lock_applies() {
    let f = fx();
    let mut r = sample();
    r.amount = 10_000;
    // Created 30 s ahead of this node's clock (inside any sane skew tolerance).
    let now = r.created_at - 30;
    let ledger = LedgerView {
        spent_24h: 0,
        first_seen: Some(now),
    };
    assert_eq!(
        evaluate(
            &f.policy,
            &r,
            &Spend::of_labels(&r),
            &r.digest(),
            &[],
            ledger,
            now
        ),
        Verdict::Allowed
    );
}

#[test]
fn units_are_sat_with_btc_beside() {
    assert_eq!(
        show_amount(450_034_001, "BTC"),
        "450034001 sat (4.50034001 BTC)"
    );
    assert_eq!(show_amount(7, "ETH"), "7 (smallest units of ETH)");
}
