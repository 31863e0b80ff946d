//! Authorization of a withdrawal by a signer node, proven by type (STYLE §4).
//!
//! [`AuthorizedWithdrawal`] can only be built by [`authorize_withdrawal`],
//! and a signature share can only be computed from one (see `signing`), so a
//! node that skips a check does not compile.

use ed25519_dalek::VerifyingKey;

use crate::identity::verify_ed25519;
use crate::policy::{evaluate, Approval, LedgerView, Policy};
use crate::withdrawal::{RequestDigest, WithdrawalRequest};
use crate::{CoreError, GroupName, Tier};

/// A withdrawal request with the custody service's Ed25519 signature over its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedWithdrawal {
    /// The request.
    pub request: WithdrawalRequest,
    /// Ed25519 signature by a custody key over `request.digest()`.
    pub custody_signature: Vec<u8>,
}

/// What a node knows of the key group a request names.
#[derive(Clone, Debug)]
pub struct GroupView {
    /// Group name.
    pub name: GroupName,
    /// Tier the group was created for.
    pub tier: Tier,
    /// Whether the group passed its activation test signature.
    pub active: bool,
}

/// The node's own settings for checking requests.
#[derive(Clone, Debug)]
pub struct CheckSettings {
    /// Custody public keys whose signatures the node accepts.
    pub custody_keys: Vec<VerifyingKey>,
    /// Largest tolerated clock difference, seconds (F4).
    pub max_clock_skew_secs: u64,
    /// Longest allowed request lifetime (`expires_at - created_at`), seconds.
    pub max_lifetime_secs: u64,
}

/// A withdrawal that passed every check of this node. Fields are private:
/// only [`authorize_withdrawal`] makes one.
#[derive(Clone, Debug)]
pub struct AuthorizedWithdrawal {
    request: WithdrawalRequest,
    digest: RequestDigest,
}

impl AuthorizedWithdrawal {
    /// The request.
    pub fn request(&self) -> &WithdrawalRequest {
        &self.request
    }
    /// Its digest.
    pub fn digest(&self) -> RequestDigest {
        self.digest
    }
    /// The exact bytes FROST must sign: the request's payload, nothing else.
    pub fn message(&self) -> &[u8] {
        &self.request.payload
    }
}

/// The policy side of a decision: the node's policy, the approvals offered,
/// and what the node's own ledger says.
#[derive(Clone, Copy, Debug)]
pub struct PolicyInput<'a> {
    /// The policy this node enforces.
    pub policy: &'a Policy,
    /// Approvals offered with the request.
    pub approvals: &'a [Approval],
    /// The node's ledger view of this request.
    pub ledger: LedgerView,
}

/// Checks a signed withdrawal against the group, this node's settings and its
/// policy at time `now`. Every refusal names the check that failed.
pub fn authorize_withdrawal(
    signed: &SignedWithdrawal,
    group: &GroupView,
    settings: &CheckSettings,
    policy: PolicyInput<'_>,
    now: u64,
) -> Result<AuthorizedWithdrawal, CoreError> {
    let checked = verify_custody_request(signed, group, settings, now)?;
    authorize_custody_checked(CustodyChecked(checked), policy, now)
}

/// A request whose custody-side checks passed (signature, group, tier,
/// activity, expiry, lifetime) and whose policy has not been looked at yet.
/// Only [`verify_custody`] makes one, so the signature is verified once and a
/// node can keep that work out of the store step that reads its ledger.
#[derive(Clone, Debug)]
pub struct CustodyChecked(AuthorizedWithdrawal);

impl CustodyChecked {
    /// The request's digest.
    pub fn digest(&self) -> RequestDigest {
        self.0.digest
    }

    /// The request.
    pub fn request(&self) -> &WithdrawalRequest {
        &self.0.request
    }
}

/// The custody-side checks of [`authorize_withdrawal`], on their own.
pub fn verify_custody(
    signed: &SignedWithdrawal,
    group: &GroupView,
    settings: &CheckSettings,
    now: u64,
) -> Result<CustodyChecked, CoreError> {
    verify_custody_request(signed, group, settings, now).map(CustodyChecked)
}

/// The policy side of [`authorize_withdrawal`] for a request already custody-checked.
pub fn authorize_custody_checked(
    checked: CustodyChecked,
    policy: PolicyInput<'_>,
    now: u64,
) -> Result<AuthorizedWithdrawal, CoreError> {
    let checked = checked.0;
    evaluate(
        policy.policy,
        &checked.request,
        &checked.digest,
        policy.approvals,
        policy.ledger,
        now,
    )
    .into_result()?;
    Ok(checked)
}

/// The custody-side checks alone, for the coordinator's fail-fast path; yields
/// the digest, never an [`AuthorizedWithdrawal`].
pub fn check_custody(
    signed: &SignedWithdrawal,
    group: &GroupView,
    settings: &CheckSettings,
    now: u64,
) -> Result<RequestDigest, CoreError> {
    verify_custody(signed, group, settings, now).map(|c| c.digest())
}

/// The checks that need no policy: custody signature, group, tier, activity,
/// expiry, future-dating and lifetime. Private on purpose: its result is only
/// ever handed out by [`authorize_withdrawal`] after policy evaluation.
fn verify_custody_request(
    signed: &SignedWithdrawal,
    group: &GroupView,
    settings: &CheckSettings,
    now: u64,
) -> Result<AuthorizedWithdrawal, CoreError> {
    let request = &signed.request;
    request.validate()?;
    let digest = request.digest();
    if !settings
        .custody_keys
        .iter()
        .any(|key| verify_ed25519(key, &digest.0, &signed.custody_signature))
    {
        return Err(CoreError::refused(
            "custody signature does not verify under any configured custody key",
        ));
    }
    if request.key_group != group.name {
        return Err(CoreError::refused(format!(
            "request names key group {}, signing was asked of {}",
            request.key_group, group.name
        )));
    }
    if request.tier != group.tier {
        return Err(CoreError::refused(format!(
            "request tier {} does not match key group {} tier {}",
            request.tier, group.name, group.tier
        )));
    }
    if !group.active {
        return Err(CoreError::refused(format!(
            "key group {} is not active",
            group.name
        )));
    }
    if now > request.expires_at {
        return Err(CoreError::refused(format!(
            "request expired at {} (now {now})",
            request.expires_at
        )));
    }
    if request.created_at > now.saturating_add(settings.max_clock_skew_secs) {
        return Err(CoreError::refused(format!(
            "request created in the future ({} > now {now} + skew {})",
            request.created_at, settings.max_clock_skew_secs
        )));
    }
    let lifetime = request.expires_at - request.created_at;
    if lifetime > settings.max_lifetime_secs {
        return Err(CoreError::refused(format!(
            "request lifetime {lifetime}s exceeds the maximum {}s",
            settings.max_lifetime_secs
        )));
    }
    Ok(AuthorizedWithdrawal {
        request: request.clone(),
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::withdrawal::tests::sample;
    use ed25519_dalek::{Signer, SigningKey};

    fn setup() -> (SigningKey, CheckSettings, GroupView) {
        let key = SigningKey::generate(&mut rand::thread_rng());
        let settings = CheckSettings {
            custody_keys: vec![key.verifying_key()],
            max_clock_skew_secs: 60,
            max_lifetime_secs: 86_400,
        };
        let group = GroupView {
            name: GroupName::new("warm-1").expect("valid"),
            tier: Tier::Warm,
            active: true,
        };
        (key, settings, group)
    }

    pub(crate) fn open_policy() -> Policy {
        Policy::from_toml(
            r#"
[groups.warm-1]
tier = "warm"
max_lifetime_secs = 86400
[groups.warm-1.assets.BTC]
per_request_max = "1000000000"
daily_max = "1000000000"
"#,
        )
        .expect("valid policy")
    }

    fn auth(
        s: &SignedWithdrawal,
        g: &GroupView,
        c: &CheckSettings,
        now: u64,
    ) -> Result<AuthorizedWithdrawal, CoreError> {
        let policy = open_policy();
        let input = PolicyInput {
            policy: &policy,
            approvals: &[],
            ledger: LedgerView::default(),
        };
        authorize_withdrawal(s, g, c, input, now)
    }

    fn signed(key: &SigningKey, request: WithdrawalRequest) -> SignedWithdrawal {
        let custody_signature = key.sign(&request.digest().0).to_bytes().to_vec();
        SignedWithdrawal {
            request,
            custody_signature,
        }
    }

    #[test]
    fn valid_request_is_authorized() {
        let (key, settings, group) = setup();
        let r = sample();
        let now = r.created_at + 10;
        let a = auth(&signed(&key, r.clone()), &group, &settings, now).expect("authorized");
        assert_eq!(a.message(), r.payload.as_slice());
    }

    #[test]
    fn x1_altered_destination_refused() {
        let (key, settings, group) = setup();
        let mut s = signed(&key, sample());
        s.request.destination = "attacker".into();
        let err = auth(&s, &group, &settings, s.request.created_at).unwrap_err();
        assert!(err.to_string().contains("custody signature"), "{err}");
    }

    #[test]
    fn custody_checked_once_then_policy_gives_the_same_authorization() {
        let (key, settings, group) = setup();
        let s = signed(&key, sample());
        let now = s.request.created_at + 10;
        let policy = open_policy();
        let input = PolicyInput {
            policy: &policy,
            approvals: &[],
            ledger: LedgerView::default(),
        };
        let checked = verify_custody(&s, &group, &settings, now).expect("custody ok");
        assert_eq!(checked.digest(), s.request.digest());
        let split = authorize_custody_checked(checked, input, now).expect("authorized");
        let whole = authorize_withdrawal(&s, &group, &settings, input, now).expect("authorized");
        assert_eq!(split.digest(), whole.digest());
        assert_eq!(split.message(), whole.message());
        // A forged signature never yields a CustodyChecked to authorize.
        let mut forged = s.clone();
        forged.request.destination = "attacker".into();
        assert!(verify_custody(&forged, &group, &settings, now).is_err());
    }

    #[test]
    fn wrong_tier_group_expiry_and_future_refused() {
        let (key, settings, group) = setup();
        let r = sample();
        let mut cold = r.clone();
        cold.tier = Tier::Cold;
        let e = auth(&signed(&key, cold), &group, &settings, r.created_at).unwrap_err();
        assert!(e.to_string().contains("tier"), "{e}");
        let mut other = r.clone();
        other.key_group = GroupName::new("warm-2").expect("valid");
        let e = auth(&signed(&key, other), &group, &settings, r.created_at).unwrap_err();
        assert!(e.to_string().contains("key group"), "{e}");
        let e = auth(
            &signed(&key, r.clone()),
            &group,
            &settings,
            r.expires_at + 1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        let e = auth(
            &signed(&key, r.clone()),
            &group,
            &settings,
            r.created_at - 61,
        )
        .unwrap_err();
        assert!(e.to_string().contains("future"), "{e}");
        let inactive = GroupView {
            active: false,
            ..group
        };
        let e = auth(&signed(&key, r.clone()), &inactive, &settings, r.created_at).unwrap_err();
        assert!(e.to_string().contains("not active"), "{e}");
    }
}
