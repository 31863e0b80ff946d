//! Authorization of a withdrawal by a signer node, proven by type (STYLE §4).
//!
//! [`AuthorizedWithdrawal`] can only be built by [`authorize_withdrawal`],
//! and a signature share can only be computed from one (see `signing`), so a
//! node that skips a check does not compile.

use ed25519_dalek::VerifyingKey;

use crate::identity::verify_ed25519;
use crate::policy::{evaluate_checked, show_amount, CheckedApprovals, LedgerView, Policy, Spend};
use crate::taproot::{decode_withdrawal, DecodedWithdrawal, GroupOutput};
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
    /// For a taproot group, its own output as this node derived it from the
    /// group key; `None` for a message group.
    pub taproot: Option<GroupOutput>,
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
    spend: Spend,
    messages: Vec<Vec<u8>>,
    decoded: Option<Box<DecodedWithdrawal>>,
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
    /// What it takes out of the group, as this node established it.
    pub fn spend(&self) -> &Spend {
        &self.spend
    }
    /// The exact messages FROST must sign, one per session: the payload of a
    /// message request, or the BIP341 sighash of every input that this node
    /// derived itself from the PSBT. Nothing else.
    pub fn messages(&self) -> &[Vec<u8>] {
        &self.messages
    }
    /// The decoded transaction of a PSBT request.
    pub fn decoded(&self) -> Option<&DecodedWithdrawal> {
        self.decoded.as_deref()
    }
}

/// The policy side of a decision: the node's policy, the approvals offered,
/// and what the node's own ledger says.
#[derive(Clone, Copy, Debug)]
pub struct PolicyInput<'a> {
    /// The policy this node enforces.
    pub policy: &'a Policy,
    /// Approvals offered with the request, their signatures already checked
    /// ([`crate::policy::check_approvals`]).
    pub approvals: &'a CheckedApprovals,
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

    /// What the request takes out of the group (decoded for a PSBT request).
    pub fn spend(&self) -> &Spend {
        &self.0.spend
    }

    /// The decoded transaction of a PSBT request.
    pub fn decoded(&self) -> Option<&DecodedWithdrawal> {
        self.0.decoded.as_deref()
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
    evaluate_checked(
        policy.policy,
        &checked.request,
        &checked.spend,
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
    // F4: clocks differ by up to the skew tolerance. A request is expired only
    // once it is expired beyond that; one dated ahead of this node's clock by
    // more is "not yet" (time resolves it, so nobody burns its id over it).
    if now
        > request
            .expires_at
            .saturating_add(settings.max_clock_skew_secs)
    {
        return Err(CoreError::refused(format!(
            "request expired at {} (now {now}, beyond the clock skew tolerance of {}s)",
            request.expires_at, settings.max_clock_skew_secs
        )));
    }
    if request.created_at > now.saturating_add(settings.max_clock_skew_secs) {
        return Err(CoreError::NotYet(format!(
            "request created in the future by this node's clock ({} > now {now} + skew {}s); retry later",
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
    let Decoded {
        spend,
        messages,
        transaction,
    } = decode_request(request, group)?;
    let decoded = transaction.map(Box::new);
    Ok(AuthorizedWithdrawal {
        request: request.clone(),
        digest,
        spend,
        messages,
        decoded,
    })
}

/// What a request asks the group to sign, as this node reads it.
#[derive(Clone, Debug)]
pub struct Decoded {
    /// What it takes out of the group.
    pub spend: Spend,
    /// The messages to sign, one FROST session each.
    pub messages: Vec<Vec<u8>>,
    /// The decoded transaction of a PSBT request.
    pub transaction: Option<DecodedWithdrawal>,
}

/// Reads what `request` asks `group` to sign: a message group signs the
/// payload (and policy sees only the labels); a taproot group decodes the
/// PSBT, checks the labels against it, and signs each input's sighash. A
/// request of the wrong kind for the group is refused. This checks no
/// signature: [`verify_custody`] runs it after the custody signature.
pub fn decode_request(
    request: &WithdrawalRequest,
    group: &GroupView,
) -> Result<Decoded, CoreError> {
    match (&request.psbt, &group.taproot) {
        (None, None) => Ok(Decoded {
            spend: Spend::of_labels(request),
            messages: vec![request.payload.clone()],
            transaction: None,
        }),
        (None, Some(_)) => Err(CoreError::refused(format!(
            "key group {} is a taproot group: it signs only a PSBT the nodes decode, never an opaque payload",
            group.name
        ))),
        (Some(_), None) => Err(CoreError::refused(format!(
            "key group {} is a message group: it does not sign transactions",
            group.name
        ))),
        (Some(psbt), Some(output)) => {
            let decoded = decode_withdrawal(psbt, output)?;
            check_labels(request, &decoded)?;
            Ok(Decoded {
                spend: Spend::of_transaction(&decoded),
                messages: decoded.sighashes.iter().map(|h| h.to_vec()).collect(),
                transaction: Some(decoded),
            })
        }
    }
}

/// The labels a client sends for display (amount, destination) must say what
/// the transaction does, or the request is refused naming both.
fn check_labels(request: &WithdrawalRequest, decoded: &DecodedWithdrawal) -> Result<(), CoreError> {
    let paid = u128::from(decoded.payments_sat());
    if request.amount != 0 && request.amount != paid {
        return Err(CoreError::refused(format!(
            "the request's amount label says {}, the transaction pays {}",
            show_amount(request.amount, &request.asset),
            show_amount(paid, "BTC")
        )));
    }
    let to = decoded.destination_label();
    if !request.destination.is_empty() && request.destination != to {
        return Err(CoreError::refused(format!(
            "the request's destination label says {}, the transaction pays {}",
            crate::error::preview(&request.destination),
            if to.is_empty() {
                "no one but the group itself"
            } else {
                to.as_str()
            }
        )));
    }
    if request.asset != "BTC" {
        return Err(CoreError::refused(format!(
            "a transaction request's asset must be BTC, not {}",
            crate::error::preview(&request.asset)
        )));
    }
    Ok(())
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
            taproot: None,
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
            approvals: &CheckedApprovals::none(),
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
        assert_eq!(a.messages(), std::slice::from_ref(&r.payload));
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
            approvals: &CheckedApprovals::none(),
            ledger: LedgerView::default(),
        };
        let checked = verify_custody(&s, &group, &settings, now).expect("custody ok");
        assert_eq!(checked.digest(), s.request.digest());
        let split = authorize_custody_checked(checked, input, now).expect("authorized");
        let whole = authorize_withdrawal(&s, &group, &settings, input, now).expect("authorized");
        assert_eq!(split.digest(), whole.digest());
        assert_eq!(split.messages(), whole.messages());
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
        // F4: expired only beyond the skew tolerance (60 s here)...
        auth(
            &signed(&key, r.clone()),
            &group,
            &settings,
            r.expires_at + 60,
        )
        .expect("within the skew tolerance of expiry");
        let e = auth(
            &signed(&key, r.clone()),
            &group,
            &settings,
            r.expires_at + 61,
        )
        .unwrap_err();
        assert!(matches!(e, CoreError::Refused(_)), "{e}");
        assert!(e.to_string().contains("expired"), "{e}");
        // ...and dated ahead beyond it is "not yet", which time resolves.
        let e = auth(
            &signed(&key, r.clone()),
            &group,
            &settings,
            r.created_at - 61,
        )
        .unwrap_err();
        assert!(matches!(e, CoreError::NotYet(_)), "{e}");
        assert!(e.to_string().contains("future"), "{e}");
        let inactive = GroupView {
            active: false,
            ..group
        };
        let e = auth(&signed(&key, r.clone()), &inactive, &settings, r.created_at).unwrap_err();
        assert!(e.to_string().contains("not active"), "{e}");
    }
}
