//! The policy file as operators write it (TOML), and its validation into a
//! [`Policy`]: every rule checked once, at load, so evaluation never meets a
//! malformed limit; errors name the field and value.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{AssetLimits, BitcoinRules, GroupPolicy, Policy};
use crate::identity::parse_ed25519_hex;
use crate::taproot::{parse_address, Network, Scheme};
use crate::{CoreError, GroupName, Tier};

/// Policy file as written (TOML).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Approver id → Ed25519 public key (hex).
    #[serde(default)]
    pub approvers: BTreeMap<String, String>,
    /// Key group name → its policy.
    pub groups: BTreeMap<String, GroupPolicyFile>,
}

/// One key group's policy as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPolicyFile {
    /// The tier the group must have.
    pub tier: Tier,
    /// How the group signs: `taproot` for groups that hold bitcoin, `message` (default) for opaque bytes.
    #[serde(default)]
    pub scheme: Scheme,
    /// The bitcoin network of a taproot group's addresses (required for taproot).
    pub network: Option<Network>,
    /// Largest fee a taproot withdrawal may pay, sat (required for taproot).
    pub max_fee_sat: Option<u64>,
    /// Largest fee rate a taproot withdrawal may pay, sat/vB (required for taproot).
    pub max_fee_rate_sat_vb: Option<u64>,
    /// Seconds a request must age (from the later of its creation and the node first seeing it) before signing.
    #[serde(default)]
    pub time_lock_secs: u64,
    /// Longest allowed `expires_at - created_at`.
    pub max_lifetime_secs: u64,
    /// Approvals always required, whatever the amount.
    #[serde(default)]
    pub min_approvals: u32,
    /// If set, only these destinations may receive funds.
    pub allowlist: Option<Vec<String>>,
    /// Asset → limits. Assets not listed are refused.
    pub assets: BTreeMap<String, AssetLimitsFile>,
}

/// Limits for one asset, in its smallest unit (decimal strings allow u128).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetLimitsFile {
    /// Largest single withdrawal.
    pub per_request_max: String,
    /// Largest total over any rolling 24 hours, counted per node.
    pub daily_max: String,
    /// Approval bands: `[{ up_to = "N", approvals = K }, ...]` ascending; above the last band, `approvals_above` applies.
    #[serde(default)]
    pub bands: Vec<BandFile>,
    /// Approvals required above the last band.
    #[serde(default)]
    pub approvals_above: u32,
}

/// An approval band as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandFile {
    /// Amounts up to and including this need `approvals`.
    pub up_to: String,
    /// Approvals needed in this band.
    pub approvals: u32,
}

fn amount(field: &str, value: &str) -> Result<u128, CoreError> {
    value.parse().map_err(|_| {
        CoreError::invalid(
            "policy",
            format!("{field} = {value:?} is not a decimal integer"),
        )
    })
}

impl Policy {
    pub(super) fn validate(file: PolicyFile) -> Result<Self, CoreError> {
        let mut approvers = BTreeMap::new();
        for (id, key) in &file.approvers {
            let field = format!("approvers.{id}");
            let key = parse_ed25519_hex("policy approver key", key)
                .map_err(|e| CoreError::invalid("policy", format!("{field}: {e}")))?;
            approvers.insert(id.clone(), key);
        }
        let mut groups = BTreeMap::new();
        for (name, g) in file.groups {
            let name = GroupName::new(name.clone())
                .map_err(|e| CoreError::invalid("policy", format!("groups.{name}: {e}")))?;
            let at = |f: &str| format!("groups.{name}.{f}");
            if g.max_lifetime_secs == 0 {
                return Err(CoreError::invalid(
                    "policy",
                    format!("{} = 0: must be positive", at("max_lifetime_secs")),
                ));
            }
            if g.tier == Tier::Cold {
                if g.min_approvals < 2 {
                    return Err(CoreError::invalid(
                        "policy",
                        format!(
                            "{} = {}: cold groups need at least 2",
                            at("min_approvals"),
                            g.min_approvals
                        ),
                    ));
                }
                if g.allowlist.as_ref().is_none_or(|a| a.is_empty()) {
                    return Err(CoreError::invalid(
                        "policy",
                        format!(
                            "{}: cold groups need a non-empty allowlist",
                            at("allowlist")
                        ),
                    ));
                }
            }
            let bitcoin = match g.scheme {
                Scheme::Message => {
                    for (field, set) in [
                        ("network", g.network.is_some()),
                        ("max_fee_sat", g.max_fee_sat.is_some()),
                        ("max_fee_rate_sat_vb", g.max_fee_rate_sat_vb.is_some()),
                    ] {
                        if set {
                            return Err(CoreError::invalid(
                                "policy",
                                format!("{}: only taproot groups have one", at(field)),
                            ));
                        }
                    }
                    None
                }
                Scheme::Taproot => {
                    let need = |field: &str, v: Option<u64>| {
                        v.ok_or_else(|| {
                            CoreError::invalid(
                                "policy",
                                format!("{}: taproot groups need one", at(field)),
                            )
                        })
                    };
                    let network = g.network.ok_or_else(|| {
                        CoreError::invalid(
                            "policy",
                            format!("{}: taproot groups need one", at("network")),
                        )
                    })?;
                    if let Some(other) = g.assets.keys().find(|a| a.as_str() != "BTC") {
                        return Err(CoreError::invalid(
                            "policy",
                            format!("{}.{other}: a taproot group holds BTC only", at("assets")),
                        ));
                    }
                    Some(BitcoinRules {
                        network,
                        max_fee_sat: need("max_fee_sat", g.max_fee_sat)?,
                        max_fee_rate_sat_vb: need("max_fee_rate_sat_vb", g.max_fee_rate_sat_vb)?,
                    })
                }
            };
            let allowlist = match (g.allowlist, bitcoin) {
                (None, _) => None,
                (Some(list), None) => Some(list.into_iter().collect::<BTreeSet<_>>()),
                (Some(list), Some(rules)) => Some(
                    list.iter()
                        .map(|a| {
                            parse_address("policy allowlist", a, rules.network)
                                .map(|addr| addr.to_string())
                                .map_err(|e| {
                                    CoreError::invalid(
                                        "policy",
                                        format!("{}: {e}", at("allowlist")),
                                    )
                                })
                        })
                        .collect::<Result<BTreeSet<_>, _>>()?,
                ),
            };
            let needed = g.min_approvals as usize;
            if needed > approvers.len() {
                return Err(CoreError::invalid(
                    "policy",
                    format!(
                        "{} = {needed}: only {} approvers are registered",
                        at("min_approvals"),
                        approvers.len()
                    ),
                ));
            }
            let mut assets = BTreeMap::new();
            for (asset, l) in g.assets {
                let f = |x: &str| format!("{}.{asset}.{x}", at("assets"));
                let per_request_max = amount(&f("per_request_max"), &l.per_request_max)?;
                let daily_max = amount(&f("daily_max"), &l.daily_max)?;
                if per_request_max > daily_max {
                    return Err(CoreError::invalid(
                        "policy",
                        format!(
                            "{} = {per_request_max} exceeds daily_max {daily_max}",
                            f("per_request_max")
                        ),
                    ));
                }
                let mut bands = Vec::new();
                let mut last = 0u128;
                for (i, b) in l.bands.iter().enumerate() {
                    let up_to = amount(&f(&format!("bands[{i}].up_to")), &b.up_to)?;
                    if up_to <= last && i > 0 {
                        return Err(CoreError::invalid(
                            "policy",
                            format!(
                                "{} = {up_to}: bands must ascend",
                                f(&format!("bands[{i}].up_to"))
                            ),
                        ));
                    }
                    for k in [b.approvals] {
                        if k as usize > approvers.len() {
                            return Err(CoreError::invalid(
                                "policy",
                                format!(
                                    "{} = {k}: only {} approvers are registered",
                                    f(&format!("bands[{i}].approvals")),
                                    approvers.len()
                                ),
                            ));
                        }
                    }
                    last = up_to;
                    bands.push((up_to, b.approvals));
                }
                if l.approvals_above as usize > approvers.len() {
                    return Err(CoreError::invalid(
                        "policy",
                        format!(
                            "{} = {}: only {} approvers are registered",
                            f("approvals_above"),
                            l.approvals_above,
                            approvers.len()
                        ),
                    ));
                }
                assets.insert(
                    asset,
                    AssetLimits {
                        per_request_max,
                        daily_max,
                        bands,
                        approvals_above: l.approvals_above,
                    },
                );
            }
            groups.insert(
                name,
                GroupPolicy {
                    tier: g.tier,
                    scheme: g.scheme,
                    bitcoin,
                    time_lock_secs: g.time_lock_secs,
                    max_lifetime_secs: g.max_lifetime_secs,
                    min_approvals: g.min_approvals,
                    allowlist,
                    assets,
                },
            );
        }
        Ok(Self {
            approvers,
            groups,
            hash: [0; 32],
        })
    }
}
