//! Withdrawal policy: per key group limits, rolling 24-hour velocity,
//! approvals by amount band, destination allowlist, time-lock and lifetime.
//!
//! Written once and run in two places: every signer node enforces it before
//! any share leaves (the decision that counts), and the coordinator runs the
//! same code only to fail fast and to tell the client what is still missing.
//! The file as written and its validation are in `file`; approvals (their
//! signed message, and checking them) in `approvals`.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::taproot::{DecodedWithdrawal, Network, Scheme};
use crate::withdrawal::{RequestDigest, WithdrawalRequest};
use crate::{CoreError, GroupName, Tier};

/// The velocity window.
pub const VELOCITY_WINDOW_SECS: u64 = 24 * 3600;

/// A validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    approvers: BTreeMap<String, VerifyingKey>,
    groups: BTreeMap<GroupName, GroupPolicy>,
    hash: [u8; 32],
}

/// A validated group policy.
#[derive(Clone, Debug)]
pub struct GroupPolicy {
    /// Tier.
    pub tier: Tier,
    /// How the group signs.
    pub scheme: Scheme,
    /// Fee caps and network of a taproot group.
    pub bitcoin: Option<BitcoinRules>,
    /// Time-lock, seconds.
    pub time_lock_secs: u64,
    /// Max lifetime, seconds.
    pub max_lifetime_secs: u64,
    /// Minimum approvals.
    pub min_approvals: u32,
    /// Allowlist (for taproot groups: addresses in their canonical form).
    pub allowlist: Option<BTreeSet<String>>,
    /// Per-asset limits.
    pub assets: BTreeMap<String, AssetLimits>,
}

/// What a taproot group's policy adds: its network and fee caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitcoinRules {
    /// The network its addresses belong to.
    pub network: Network,
    /// Largest fee, sat.
    pub max_fee_sat: u64,
    /// Largest fee rate, sat/vB.
    pub max_fee_rate_sat_vb: u64,
}

/// Validated per-asset limits.
#[derive(Clone, Debug)]
pub struct AssetLimits {
    /// Largest single withdrawal.
    pub per_request_max: u128,
    /// Largest rolling-24h total.
    pub daily_max: u128,
    /// (up_to, approvals), ascending.
    pub bands: Vec<(u128, u32)>,
    /// Approvals above the last band.
    pub approvals_above: u32,
}

impl Policy {
    /// Parses and validates TOML; errors name the field and value.
    pub fn from_toml(text: &str) -> Result<Self, CoreError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| CoreError::invalid("policy", e.to_string()))?;
        let mut policy = Self::validate(file)?;
        policy.hash = Sha256::digest(text.as_bytes()).into();
        Ok(policy)
    }

    /// SHA-256 of the policy text, reported so operators can compare nodes (I3).
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// Number of registered approvers: no request can carry more approvals that count.
    pub fn approver_count(&self) -> usize {
        self.approvers.len()
    }

    /// Every group's policy, by name.
    pub fn groups(&self) -> impl Iterator<Item = (&GroupName, &GroupPolicy)> {
        self.groups.iter()
    }

    /// The policy of a group.
    pub fn group(&self, name: &GroupName) -> Option<&GroupPolicy> {
        self.groups.get(name)
    }

    /// Approvals a request of `amount` of `asset` needs in `group`.
    pub fn approvals_needed(&self, group: &GroupPolicy, asset: &AssetLimits, amount: u128) -> u32 {
        let band = asset
            .bands
            .iter()
            .find(|(up_to, _)| amount <= *up_to)
            .map(|(_, k)| *k)
            .unwrap_or(asset.approvals_above);
        band.max(group.min_approvals)
    }
}

/// The limits that bind a request of `spend` in its group, in words, for the
/// client to see when the request is accepted (`None` if the policy has no
/// entry for the group or asset).
pub fn binding_limits(
    policy: &Policy,
    request: &WithdrawalRequest,
    spend: &Spend,
) -> Option<String> {
    let group = policy.group(&request.key_group)?;
    let limits = group.assets.get(&request.asset)?;
    let asset = request.asset.as_str();
    let mut parts = vec![
        format!(
            "counted {} of at most {} per request",
            show_amount(spend.amount, asset),
            show_amount(limits.per_request_max, asset)
        ),
        format!(
            "{} per rolling 24 h for the group",
            show_amount(limits.daily_max, asset)
        ),
        format!(
            "{} approval(s) needed",
            policy.approvals_needed(group, limits, spend.amount)
        ),
        format!("lifetime at most {}s", group.max_lifetime_secs),
    ];
    if group.time_lock_secs > 0 {
        parts.push(format!("time-lock {}s", group.time_lock_secs));
    }
    if let (Some(fee), Some(rules)) = (spend.fee, group.bitcoin) {
        parts.push(format!(
            "fee {} sat of at most {} sat, {} of at most {} sat/vB",
            fee.fee_sat, rules.max_fee_sat, fee.rate_sat_vb, rules.max_fee_rate_sat_vb
        ));
    }
    Some(parts.join("; "))
}

/// What the node's own ledger knows about a request.
#[derive(Clone, Copy, Debug, Default)]
pub struct LedgerView {
    /// Sum of this group's withdrawals of the asset in the last 24 hours, excluding this request.
    pub spent_24h: u128,
    /// When this node first saw the request (Unix seconds), if it has.
    pub first_seen: Option<u64>,
}

/// The policy rule a refused request broke, for clients to act on without
/// reading prose.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyRule {
    /// The policy has no entry for the key group.
    UnknownGroup,
    /// The request's tier is not the group's.
    Tier,
    /// The asset is not allowed for the group.
    Asset,
    /// The destination is not on the group's allowlist.
    Allowlist,
    /// The request lives longer than the group allows.
    Lifetime,
    /// The amount is over the per-request limit.
    PerRequestLimit,
    /// The amount would take the rolling 24 h total over the daily limit.
    Velocity,
    /// The request's kind does not fit the group's scheme (a payload for a taproot group).
    Scheme,
    /// The transaction's fee is over the group's limit.
    FeeLimit,
    /// The transaction's fee rate is over the group's limit.
    FeeRateLimit,
}

impl PolicyRule {
    /// Every rule, for callers that list them (metrics show each from 0).
    pub const ALL: [PolicyRule; 10] = [
        PolicyRule::UnknownGroup,
        PolicyRule::Tier,
        PolicyRule::Asset,
        PolicyRule::Allowlist,
        PolicyRule::Lifetime,
        PolicyRule::PerRequestLimit,
        PolicyRule::Velocity,
        PolicyRule::Scheme,
        PolicyRule::FeeLimit,
        PolicyRule::FeeRateLimit,
    ];

    /// Stable snake_case name (in status messages and the wire enum).
    pub fn name(self) -> &'static str {
        match self {
            PolicyRule::UnknownGroup => "unknown_group",
            PolicyRule::Tier => "tier",
            PolicyRule::Asset => "asset",
            PolicyRule::Allowlist => "allowlist",
            PolicyRule::Lifetime => "lifetime",
            PolicyRule::PerRequestLimit => "per_request_limit",
            PolicyRule::Velocity => "velocity",
            PolicyRule::Scheme => "scheme",
            PolicyRule::FeeLimit => "fee_limit",
            PolicyRule::FeeRateLimit => "fee_rate_limit",
        }
    }
}

/// Why policy refuses a request for good: the rule, and the sentence for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The rule broken.
    pub rule: PolicyRule,
    /// What exactly, in words (names the values).
    pub why: String,
}

impl Denial {
    fn verdict(rule: PolicyRule, why: String) -> Verdict {
        Verdict::Denied(Denial { rule, why })
    }

    /// Whether the sentence mentions `text` (for tests and logs).
    pub fn contains(&self, text: &str) -> bool {
        self.why.contains(text)
    }
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// The result of evaluating policy: either everything is met, or what is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every rule holds.
    Allowed,
    /// The request can never be signed under this policy; says which rule.
    Denied(Denial),
    /// The request may become signable: approvals or time are missing.
    Waiting {
        /// Valid distinct approvals still needed.
        approvals_missing: u32,
        /// Unix time before which the time-lock holds, if it still holds.
        time_locked_until: Option<u64>,
        /// Why each offered approval was not counted.
        rejected_approvals: Vec<String>,
    },
}

/// A fee as a node derived it from a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeeView {
    /// Inputs minus outputs, sat.
    pub fee_sat: u64,
    /// Fee per virtual byte of the signed transaction, rounded up.
    pub rate_sat_vb: u64,
}

/// What a request takes out of its group, as the node established it: for a
/// transaction, decoded from the PSBT (payments plus fee); for an opaque
/// message, only what the request's labels claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spend {
    /// Amount counted against limits and velocity, smallest unit.
    pub amount: u128,
    /// Where it goes (addresses of the payments; change excluded).
    pub destinations: Vec<String>,
    /// The fee, for a transaction.
    pub fee: Option<FeeView>,
}

impl Spend {
    /// A message request's spend: its labels, which nothing ties to the bytes signed.
    pub fn of_labels(request: &WithdrawalRequest) -> Self {
        Self {
            amount: request.amount,
            destinations: vec![request.destination.clone()],
            fee: None,
        }
    }

    /// A transaction's spend: every payment plus the fee, as decoded.
    pub fn of_transaction(decoded: &DecodedWithdrawal) -> Self {
        Self {
            amount: u128::from(decoded.outflow_sat()),
            destinations: decoded.payments.iter().map(|p| p.address.clone()).collect(),
            fee: Some(FeeView {
                fee_sat: decoded.fee_sat,
                rate_sat_vb: decoded.fee_rate_sat_vb(),
            }),
        }
    }
}

/// Parses a canonical decimal (digits only, no sign, no leading zeros).
pub fn parse_canonical_u64(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// An amount as people read it: satoshis with BTC beside them, other assets in their smallest unit.
pub fn show_amount(amount: u128, asset: &str) -> String {
    if asset == "BTC" {
        let whole = amount / 100_000_000;
        let frac = amount % 100_000_000;
        format!("{amount} sat ({whole}.{frac:08} BTC)")
    } else {
        format!("{amount} (smallest units of {asset})")
    }
}

/// Evaluates `request`, which takes `spend` out of its group, against `policy` at `now`.
pub fn evaluate(
    policy: &Policy,
    request: &WithdrawalRequest,
    spend: &Spend,
    digest: &RequestDigest,
    approvals: &[Approval],
    ledger: LedgerView,
    now: u64,
) -> Verdict {
    let (group, limits) = match rules_verdict(policy, request, spend, ledger) {
        Ok(found) => found,
        Err(denied) => return denied,
    };
    let checked = check_approvals(policy, request, digest, approvals, now);
    evaluate_checked_tail(policy, group, limits, request, spend, &checked, ledger, now)
}

/// Every rule but approvals and time: the group's tier, scheme, asset,
/// allowlist, fees, lifetime, per-request limit and velocity.
fn rules_verdict<'p>(
    policy: &'p Policy,
    request: &WithdrawalRequest,
    spend: &Spend,
    ledger: LedgerView,
) -> Result<(&'p GroupPolicy, &'p AssetLimits), Verdict> {
    let Some(group) = policy.group(&request.key_group) else {
        return Err(Denial::verdict(
            PolicyRule::UnknownGroup,
            format!("no policy for key group {}", request.key_group),
        ));
    };
    if group.tier != request.tier {
        return Err(Denial::verdict(
            PolicyRule::Tier,
            format!(
                "key group {} is {} by policy; the request says {}",
                request.key_group, group.tier, request.tier
            ),
        ));
    }
    match (group.scheme, spend.fee.is_some()) {
        (Scheme::Taproot, false) => {
            return Err(Denial::verdict(
                PolicyRule::Scheme,
                format!(
                    "key group {} is a taproot group: it signs transactions (a PSBT), never opaque payloads",
                    request.key_group
                ),
            ))
        }
        (Scheme::Message, true) => {
            return Err(Denial::verdict(
                PolicyRule::Scheme,
                format!(
                    "key group {} is a message group: it signs opaque payloads, not transactions",
                    request.key_group
                ),
            ))
        }
        _ => {}
    }
    let Some(limits) = group.assets.get(&request.asset) else {
        return Err(Denial::verdict(
            PolicyRule::Asset,
            format!(
                "asset {} is not allowed for key group {}",
                request.asset, request.key_group
            ),
        ));
    };
    if let Some(allow) = &group.allowlist {
        if let Some(d) = spend.destinations.iter().find(|d| !allow.contains(*d)) {
            return Err(Denial::verdict(
                PolicyRule::Allowlist,
                format!(
                    "destination {d} is not on the allowlist of {}",
                    request.key_group
                ),
            ));
        }
    }
    if let (Some(fee), Some(rules)) = (spend.fee, group.bitcoin) {
        if fee.fee_sat > rules.max_fee_sat {
            return Err(Denial::verdict(
                PolicyRule::FeeLimit,
                format!(
                    "fee {} exceeds the limit {}",
                    show_amount(u128::from(fee.fee_sat), "BTC"),
                    show_amount(u128::from(rules.max_fee_sat), "BTC")
                ),
            ));
        }
        if fee.rate_sat_vb > rules.max_fee_rate_sat_vb {
            return Err(Denial::verdict(
                PolicyRule::FeeRateLimit,
                format!(
                    "fee rate {} sat/vB exceeds the limit {} sat/vB",
                    fee.rate_sat_vb, rules.max_fee_rate_sat_vb
                ),
            ));
        }
    }
    let lifetime = request.expires_at.saturating_sub(request.created_at);
    if lifetime > group.max_lifetime_secs {
        return Err(Denial::verdict(
            PolicyRule::Lifetime,
            format!(
                "request lifetime {lifetime}s exceeds the policy maximum {}s",
                group.max_lifetime_secs
            ),
        ));
    }
    let asset = request.asset.as_str();
    if spend.amount > limits.per_request_max {
        return Err(Denial::verdict(
            PolicyRule::PerRequestLimit,
            format!(
                "amount {} exceeds the per-request limit {}",
                show_amount(spend.amount, asset),
                show_amount(limits.per_request_max, asset)
            ),
        ));
    }
    let total = ledger.spent_24h.saturating_add(spend.amount);
    if total > limits.daily_max {
        return Err(Denial::verdict(
            PolicyRule::Velocity,
            format!(
                "velocity: {} already signed in 24h plus {} exceeds the daily limit {}",
                show_amount(ledger.spent_24h, asset),
                show_amount(spend.amount, asset),
                show_amount(limits.daily_max, asset)
            ),
        ));
    }
    Ok((group, limits))
}

/// [`evaluate`] with approvals already checked by [`check_approvals`], so a
/// node can verify their signatures before it enters its store step.
pub fn evaluate_checked(
    policy: &Policy,
    request: &WithdrawalRequest,
    spend: &Spend,
    approvals: &CheckedApprovals,
    ledger: LedgerView,
    now: u64,
) -> Verdict {
    match rules_verdict(policy, request, spend, ledger) {
        Err(v) => v,
        Ok((group, limits)) => evaluate_checked_tail(
            policy, group, limits, request, spend, approvals, ledger, now,
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn evaluate_checked_tail(
    policy: &Policy,
    group: &GroupPolicy,
    limits: &AssetLimits,
    request: &WithdrawalRequest,
    spend: &Spend,
    checked: &CheckedApprovals,
    ledger: LedgerView,
    now: u64,
) -> Verdict {
    let needed = policy.approvals_needed(group, limits, spend.amount);
    let (counted, rejected) = checked.count_at(now);
    let approvals_missing = needed.saturating_sub(counted as u32);
    // A group without a time-lock never waits on time, even for a request
    // dated slightly ahead of this node's clock (within the skew tolerance).
    let since = ledger.first_seen.unwrap_or(now).max(request.created_at);
    let not_before = since.saturating_add(group.time_lock_secs);
    let locked = group.time_lock_secs > 0 && now < not_before;
    if approvals_missing > 0 || locked {
        return Verdict::Waiting {
            approvals_missing,
            time_locked_until: locked.then_some(not_before),
            rejected_approvals: rejected,
        };
    }
    Verdict::Allowed
}

impl Verdict {
    /// A refusal for anything but `Allowed`.
    pub fn into_result(self) -> Result<(), CoreError> {
        match self {
            Verdict::Allowed => Ok(()),
            Verdict::Denied(why) => Err(CoreError::PolicyDenied(why)),
            Verdict::Waiting {
                approvals_missing,
                time_locked_until,
                rejected_approvals,
            } => {
                let mut parts = Vec::new();
                if approvals_missing > 0 {
                    parts.push(format!("{approvals_missing} more approval(s) required"));
                }
                if let Some(t) = time_locked_until {
                    parts.push(format!("time-locked until {t}"));
                }
                if !rejected_approvals.is_empty() {
                    parts.push(format!("not counted: {}", rejected_approvals.join("; ")));
                }
                Err(CoreError::NotYet(format!("policy: {}", parts.join(", "))))
            }
        }
    }
}

mod approvals;
pub use approvals::{approval_message, check_approvals, Approval, CheckedApprovals};

mod file;
pub use file::{AssetLimitsFile, BandFile, GroupPolicyFile, PolicyFile};

#[cfg(test)]
mod tests;
