//! Lifecycle spec files (docs/ceremony-spec.md): what `ceremony propose`
//! writes, `ceremony approve` signs, `ceremony show` prints and
//! `ceremony submit` (or `keygroup create | refresh | repair |
//! clear-exclusion --spec`) hands to the coordinator, which only relays it:
//! every node checks the operator quorum itself.
//!
//! An approval signs a 32-byte digest, so the file carries the spec itself in
//! readable form; every reader recomputes the digest from the fields and
//! refuses a file whose recorded digest differs, so nobody approves a digest
//! whose contents they did not see.

use std::path::Path;

use ed25519_dalek::SigningKey;
use permafrost_core::ceremony::{
    self as core, LifecycleSpec, Operation, OperatorApproval, RegistryChange, RegistryConfig,
    SignedSpec, SPEC_VERSION,
};
use permafrost_core::{unix_now, GroupName, NodeId, Tier};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::{display, files, CtlError};

/// How long a proposal stays valid unless told otherwise: a working day.
pub const DEFAULT_LIFETIME_SECS: u64 = 86_400;

/// A spec file (JSON): the spec, its digest for reference, and the approvals so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    /// The spec, field by field.
    pub spec: LifecycleSpec,
    /// SHA-256 of the canonical encoding, hex (recomputed on reading; must match).
    pub digest: String,
    /// Operator approvals of that digest.
    pub approvals: Vec<OperatorApproval>,
}

impl SpecFile {
    /// The file of `signed`.
    pub fn of(signed: &SignedSpec) -> Self {
        SpecFile {
            digest: signed.spec.digest().to_hex(),
            spec: signed.spec.clone(),
            approvals: signed.approvals.clone(),
        }
    }

    /// The signed spec, once the digest recomputed from the fields matches
    /// the recorded one and the spec's shape is valid.
    pub fn checked(self, origin: &str) -> Result<SignedSpec, CtlError> {
        let digest = self.spec.digest().to_hex();
        if digest != self.digest {
            return Err(CtlError::InvalidFile(format!(
                "{origin}: the fields give digest {digest}, the file records {}; it was edited after it was proposed",
                self.digest
            )));
        }
        self.spec
            .validate()
            .map_err(|e| CtlError::InvalidFile(format!("{origin}: {e}")))?;
        Ok(SignedSpec {
            spec: self.spec,
            approvals: self.approvals,
        })
    }
}

/// Reads and checks a spec file.
pub fn load(path: &Path) -> Result<SignedSpec, CtlError> {
    let text = files::read_text(path)?;
    let file: SpecFile = serde_json::from_str(&text).map_err(|e| {
        CtlError::InvalidFile(format!("{}: not a ceremony spec file: {e}", path.display()))
    })?;
    file.checked(&path.display().to_string())
}

/// Writes `signed` to `path` (0644: nothing in it is secret).
pub fn save(path: &Path, signed: &SignedSpec) -> Result<(), CtlError> {
    let json = serde_json::to_string_pretty(&SpecFile::of(signed))
        .map_err(|e| CtlError::Bug(format!("spec file JSON: {e}")))?;
    files::write_public(path, format!("{json}\n").as_bytes())
}

/// A random proposal id.
pub fn random_proposal_id(operation: Operation) -> String {
    let mut b = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("{operation}-{}", hex::encode(b))
}

/// The group as it stands, for a spec that changes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentGroup {
    /// Tier.
    pub tier: Tier,
    /// Epoch.
    pub epoch: u64,
    /// 33-byte key.
    pub group_key: Vec<u8>,
    /// Members in identifier order.
    pub members: Vec<NodeId>,
    /// Signers needed.
    pub threshold: u16,
    /// The group's operator registry sequence (0: the config's, never changed).
    pub registry_seq: u64,
    /// Hash of the registry in force for the group (empty: not known).
    pub registry_hash: Vec<u8>,
}

impl CurrentGroup {
    /// The group as the coordinator reports it (a spec names the members
    /// still in the group, not the removed ones).
    pub fn reported(g: &permafrost_proto::KeyGroup) -> Result<Self, CtlError> {
        Ok(CurrentGroup {
            tier: permafrost_proto::convert::tier_from_wire(g.tier)
                .map_err(|e| CtlError::BadResponse(e.message().to_string()))?,
            epoch: g.epoch,
            group_key: g.group_public_key.clone(),
            members: g
                .members
                .iter()
                .filter(|m| !g.removed.contains(m))
                .map(NodeId::new)
                .collect::<Result<_, _>>()
                .map_err(|e| CtlError::BadResponse(format!("member id: {e}")))?,
            threshold: u16::try_from(g.threshold)
                .map_err(|_| CtlError::BadResponse(format!("threshold {}", g.threshold)))?,
            registry_seq: g.registry_seq,
            registry_hash: g.registry_hash.clone(),
        })
    }
}

/// The `[operators]` section of a TOML file: a group's new registry, for
/// `ceremony propose --operation change-registry --registry FILE`.
pub fn load_registry(path: &Path) -> Result<RegistryConfig, CtlError> {
    #[derive(Deserialize)]
    struct File {
        operators: RegistryConfig,
    }
    let text = files::read_text(path)?;
    let file: File = toml::from_str(&text).map_err(|e| {
        CtlError::InvalidFile(format!(
            "{}: not a TOML file with an [operators] section: {e}",
            path.display()
        ))
    })?;
    let registry = canonical(&file.operators);
    registry
        .build()
        .map_err(|e| CtlError::InvalidFile(format!("{}: {e}", path.display())))?;
    Ok(registry)
}

/// `registry` with its keys in the canonical form a spec carries (lower-case hex).
fn canonical(registry: &RegistryConfig) -> RegistryConfig {
    RegistryConfig {
        keys: registry
            .keys
            .iter()
            .map(|(id, key)| (id.clone(), key.trim().to_ascii_lowercase()))
            .collect(),
        ..registry.clone()
    }
}

/// What a proposal changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new group.
    Create {
        /// Tier.
        tier: Tier,
        /// Signers needed.
        threshold: u16,
        /// Members in identifier order.
        members: Vec<NodeId>,
    },
    /// New shares, same key.
    Refresh,
    /// `lost`'s share rebuilt on `replacement`.
    Repair {
        /// The lost member.
        lost: NodeId,
        /// The node taking its place.
        replacement: NodeId,
    },
    /// `node` leaves the group; `threshold` afterwards.
    RemoveMember {
        /// The member removed.
        node: NodeId,
        /// Signers needed afterwards.
        threshold: u16,
    },
    /// The group stops signing.
    Retire,
    /// `node` may sign again.
    ClearExclusion {
        /// The excluded member.
        node: NodeId,
    },
    /// The group's operator registry becomes `registry`.
    ChangeRegistry {
        /// The new registry.
        registry: RegistryConfig,
    },
}

impl Change {
    /// Its operation.
    pub fn operation(&self) -> Operation {
        match self {
            Change::Create { .. } => Operation::Create,
            Change::Refresh => Operation::Refresh,
            Change::Repair { .. } => Operation::Repair,
            Change::RemoveMember { .. } => Operation::RemoveMember,
            Change::Retire => Operation::Retire,
            Change::ClearExclusion { .. } => Operation::ClearExclusion,
            Change::ChangeRegistry { .. } => Operation::ChangeRegistry,
        }
    }
}

/// A new, unapproved spec of `change` to `group` (standing as `current`, for
/// every change but create), valid for `lifetime_secs` from now.
pub fn propose(
    group: &GroupName,
    change: Change,
    current: Option<&CurrentGroup>,
    proposal_id: Option<String>,
    lifetime_secs: u64,
) -> Result<SignedSpec, CtlError> {
    let now = unix_now();
    let operation = change.operation();
    let mut spec = LifecycleSpec {
        version: SPEC_VERSION,
        operation,
        proposal_id: proposal_id.unwrap_or_else(|| random_proposal_id(operation)),
        group: group.clone(),
        tier: Tier::Warm,
        epoch: 0,
        group_key: None,
        members: Vec::new(),
        threshold: 0,
        subject: None,
        replacement: None,
        created_at: now,
        expires_at: now.saturating_add(lifetime_secs),
        registry: None,
    };
    match (&change, current) {
        (
            Change::Create {
                tier,
                threshold,
                members,
            },
            _,
        ) => {
            spec.tier = *tier;
            spec.threshold = *threshold;
            spec.members = members.clone();
        }
        (_, None) => {
            return Err(CtlError::InvalidInput(format!(
                "a {operation} spec names the group's current epoch and key: give --epoch and --group-key, or a coordinator to read them from"
            )))
        }
        (change, Some(cur)) => {
            spec.tier = cur.tier;
            spec.epoch = cur.epoch;
            spec.group_key = Some(cur.group_key.clone());
            spec.members = cur.members.clone();
            spec.threshold = cur.threshold;
            match change {
                Change::Repair { lost, replacement } => {
                    if !cur.members.contains(lost) {
                        return Err(CtlError::InvalidInput(format!(
                            "{lost} is not a member of {group} ({})",
                            display::join(&cur.members)
                        )));
                    }
                    spec.members = cur
                        .members
                        .iter()
                        .map(|m| if m == lost { replacement.clone() } else { m.clone() })
                        .collect();
                    spec.subject = Some(lost.clone());
                    spec.replacement = Some(replacement.clone());
                }
                Change::RemoveMember { node, threshold } => {
                    spec.members.retain(|m| m != node);
                    spec.threshold = *threshold;
                    spec.subject = Some(node.clone());
                }
                Change::ClearExclusion { node } => spec.subject = Some(node.clone()),
                Change::ChangeRegistry { registry } => {
                    if cur.registry_hash.is_empty() {
                        return Err(CtlError::InvalidInput(format!(
                            "the hash of {group}'s registry in force is not known: give --registry-seq and --registry-hash (from `permafrostctl node status`)"
                        )));
                    }
                    spec.registry = Some(RegistryChange {
                        seq: cur.registry_seq.saturating_add(1),
                        previous: cur.registry_hash.clone(),
                        registry: canonical(registry),
                    })
                }
                Change::Refresh | Change::Retire | Change::Create { .. } => {}
            }
        }
    }
    spec.validate()
        .map_err(|e| CtlError::InvalidInput(format!("the proposal is not valid: {e}")))?;
    Ok(SignedSpec {
        spec,
        approvals: Vec::new(),
    })
}

/// Adds `operator`'s approval (signed with `key`) to `signed`, replacing an
/// earlier one of theirs. Refuses an expired spec.
pub fn approve(signed: &mut SignedSpec, operator: &str, key: &SigningKey) -> Result<(), CtlError> {
    if unix_now() > signed.spec.expires_at {
        return Err(CtlError::InvalidInput(format!(
            "spec {} expired {}; propose a new one",
            signed.spec.proposal_id,
            display::from_now(signed.spec.expires_at, unix_now())
        )));
    }
    signed.add_approval(core::approve(&signed.spec, operator, key));
    Ok(())
}

/// What a person must check before approving, one line each.
pub fn describe(signed: &SignedSpec) -> String {
    let s = &signed.spec;
    let mut lines = vec![
        format!("operation     {}", s.operation),
        format!("group         {}", s.group),
        format!("proposal id   {}", s.proposal_id),
    ];
    match &s.group_key {
        Some(key) => lines.push(format!(
            "current key   {}  (compare with `permafrostctl node status` on your own node)",
            hex::encode(key)
        )),
        None => lines.push("current key   none: a new group".into()),
    }
    lines.push(format!(
        "epoch         {}{}",
        s.epoch,
        if s.epoch == 0 {
            "  (the group does not exist yet)".to_string()
        } else {
            format!("  (afterwards {})", s.epoch + 1)
        }
    ));
    let change = match s.operation {
        Operation::Repair => format!(
            "{} is LOST and loses its place; {} takes its share (same key)",
            s.subject.as_ref().map(|n| n.as_str()).unwrap_or("?"),
            s.replacement.as_ref().map(|n| n.as_str()).unwrap_or("?")
        ),
        Operation::RemoveMember => format!(
            "{} LEAVES the group",
            s.subject.as_ref().map(|n| n.as_str()).unwrap_or("?")
        ),
        Operation::ClearExclusion => format!(
            "{} may sign again (check why it was excluded: permafrostctl keygroup exclusions)",
            s.subject.as_ref().map(|n| n.as_str()).unwrap_or("?")
        ),
        Operation::Create => "a NEW key by DKG; no machine ever holds the whole key".into(),
        Operation::Refresh => "new shares for every member, same key; old shares destroyed".into(),
        Operation::Retire => "the group STOPS signing for good".into(),
        Operation::ChangeRegistry => match &s.registry {
            Some(r) => describe_registry(r),
            None => "the operator registry changes (but the spec names none)".into(),
        },
    };
    lines.push(format!("change        {change}"));
    lines.push(format!(
        "afterwards    tier {}, {}-of-{} [{}]",
        s.tier,
        s.threshold,
        s.members.len(),
        display::join(&s.members)
    ));
    lines.push(format!(
        "valid         until {} ({})",
        s.expires_at,
        display::from_now(s.expires_at, unix_now())
    ));
    lines.push(format!("digest        {}", s.digest()));
    let approvers: Vec<&str> = signed
        .approvals
        .iter()
        .map(|a| a.operator.as_str())
        .collect();
    lines.push(format!(
        "approvals     {}{}",
        approvers.len(),
        if approvers.is_empty() {
            String::new()
        } else {
            format!(" ({})", approvers.join(", "))
        }
    ));
    lines.join("\n")
}

/// A registry change, as a person checks it: the sequence, the registry it
/// replaces, and every operator's key and quorum afterwards.
fn describe_registry(change: &RegistryChange) -> String {
    let mut out = format!(
        "the group's OPERATOR REGISTRY becomes #{} (replacing {}, which `permafrostctl node status` shows as the group's registry hash)",
        change.seq,
        hex::encode(&change.previous)
    );
    let r = &change.registry;
    out.push_str(&format!(
        "\n              default quorum {} of {}",
        r.default_quorum,
        r.keys.len()
    ));
    for (op, k) in &r.quorum {
        out.push_str(&format!("\n              quorum {op} = {k}"));
    }
    for (id, key) in &r.keys {
        out.push_str(&format!(
            "\n              operator {id} = {key}  (check with that operator's `operator-key public`)"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(s: &str) -> NodeId {
        NodeId::new(s).expect("id")
    }

    fn current() -> CurrentGroup {
        CurrentGroup {
            tier: Tier::Warm,
            epoch: 2,
            group_key: vec![2; 33],
            members: vec![node("n1"), node("n2"), node("n3")],
            threshold: 2,
            registry_seq: 0,
            registry_hash: vec![7; 32],
        }
    }

    #[test]
    fn a_repair_proposal_replaces_only_the_lost_member() {
        let g = GroupName::new("warm-1").expect("name");
        let signed = propose(
            &g,
            Change::Repair {
                lost: node("n3"),
                replacement: node("n4"),
            },
            Some(&current()),
            Some("r-1".into()),
            600,
        )
        .expect("proposal");
        assert_eq!(
            signed.spec.members,
            vec![node("n1"), node("n2"), node("n4")]
        );
        assert_eq!(signed.spec.epoch, 2);
        let text = describe(&signed);
        assert!(
            text.contains("n3 is LOST") && text.contains("2-of-3 [n1,n2,n4]"),
            "{text}"
        );
        assert!(
            propose(&g, Change::Refresh, None, None, 600).is_err(),
            "needs the current group"
        );
    }

    #[test]
    fn an_edited_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spec.json");
        let g = GroupName::new("warm-1").expect("name");
        let mut signed = propose(&g, Change::Refresh, Some(&current()), None, 600).expect("p");
        approve(&mut signed, "op-1", &SigningKey::from_bytes(&[1; 32])).expect("approve");
        save(&path, &signed).expect("save");
        assert_eq!(load(&path).expect("load"), signed);
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, text.replace("\"threshold\": 2", "\"threshold\": 3")).expect("edit");
        let err = load(&path).expect_err("edited").to_string();
        assert!(err.contains("edited"), "{err}");
    }
}
