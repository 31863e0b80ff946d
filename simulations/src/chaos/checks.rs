//! Invariant checkers (DESIGN.md §5), one per invariant. Each reads what a
//! run did — every answer of the coordinator, every node's audit log and
//! status, every liar's report — and names each violation it finds. Any
//! violation is a safety failure of the run.

use std::collections::{BTreeMap, BTreeSet};

use permafrost_core::audit::AuditEntry;
use permafrost_proto as pb;
use serde::Serialize;

use crate::chaos::harness::GROUP;
use crate::chaos::liar::{LiarEvent, Lie};
use crate::cluster::COORDINATOR_ID;

/// What a run did, as the checkers need it.
#[derive(Debug, Default)]
pub struct RunRecord {
    /// Custody-signed, valid requests the scenario submitted: id → digest (hex).
    pub authorized: BTreeMap<String, String>,
    /// The exact bytes each authorized request asks to sign, by id.
    pub payloads: BTreeMap<String, Vec<u8>>,
    /// Requests the scenario made unauthorized on purpose: id → digest (hex).
    pub unauthorized: BTreeMap<String, String>,
    /// Every withdrawal status the coordinator returned.
    pub statuses: Vec<pb::WithdrawalStatus>,
    /// The group key at creation: it must never change (refresh and repair keep it).
    pub group_key: Option<Vec<u8>>,
    /// For requests submitted while a liar was in place: request id → the lying node.
    pub liar_by_request: BTreeMap<String, String>,
    /// Exclusions the coordinator listed (node, request id), including ones cleared later.
    pub exclusions: Vec<(String, String)>,
    /// Round 2 re-sent to a node after its restart: (node, request id, gRPC code of the answer).
    pub replays: Vec<(String, String, String)>,
    /// Ceremonies broken on purpose: (the sender whose message was altered, the coordinator's error).
    pub dkg_aborts: Vec<(String, String)>,
    /// Safety failures a scenario detected itself (e.g. a captured share that still signs).
    pub scenario_violations: Vec<Violation>,
    /// Every liar event: (node, event).
    pub liar_events: Vec<(String, LiarEvent)>,
    /// Each node's status at the end of the run (an error if it did not answer).
    pub node_statuses: BTreeMap<String, Result<pb::NodeStatus, String>>,
    /// Key groups as the coordinator lists them at the end.
    pub final_groups: Vec<pb::KeyGroup>,
    /// Audit logs by writer (node ids and the coordinator).
    pub audit_logs: BTreeMap<String, String>,
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The invariant or threat id and short name.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

impl Violation {
    /// A violation of `invariant`.
    pub fn new(invariant: &'static str, detail: impl Into<String>) -> Self {
        Self {
            invariant,
            detail: detail.into(),
        }
    }
}

/// Invariant 1: no nonce used twice.
pub const NONCE: &str = "inv1 nonce-single-use";
/// Invariant 2: no share for an unauthorized request.
pub const AUTHORIZED: &str = "inv2 authorized-only";
/// Invariant 3: at most one digest (and one signature) per request id.
pub const ONE_DIGEST: &str = "inv3 one-digest-per-request";
/// Invariant 4: the culprit named is always the injected liar.
pub const CULPRIT: &str = "inv4 culprit-is-liar";
/// Invariant 6: every member holds the same group key.
pub const GROUP_KEY: &str = "inv6 group-key-agreement";
/// C5: every signature verifies under the group key.
pub const SIGNATURES: &str = "C5 signatures-verify";
/// L1/S1: audit hash chains intact after every kill.
pub const AUDIT_CHAIN: &str = "L1 audit-chain";
/// Each node's velocity ledger counts every journaled request exactly once.
pub const VELOCITY_ONCE: &str = "P1 velocity-counted-once";

/// A checker: reads the record, returns what it found wrong.
pub type Checker = fn(&RunRecord) -> Vec<Violation>;

/// Every checker, by name.
pub const CHECKERS: [(&str, Checker); 7] = [
    (NONCE, nonce_single_use),
    (AUTHORIZED, authorized_only),
    (ONE_DIGEST, one_digest_per_request),
    (CULPRIT, culprit_is_liar),
    (GROUP_KEY, group_key_agreement),
    (SIGNATURES, signatures_verify),
    (AUDIT_CHAIN, audit_chain),
];

/// Runs every checker, then adds what the scenario itself found.
pub fn check_all(record: &RunRecord) -> Vec<Violation> {
    let mut all: Vec<Violation> = CHECKERS.iter().flat_map(|(_, c)| c(record)).collect();
    all.extend(record.scenario_violations.iter().cloned());
    all
}

/// How many shares the nodes' audit logs say were released.
pub fn shares_released(record: &RunRecord) -> usize {
    entries(record)
        .filter(|(writer, e)| *writer != COORDINATOR_ID && e.event == "share_released")
        .count()
}

/// Audit entries of every writer that parse (unparseable lines are the audit-chain checker's business).
fn entries(record: &RunRecord) -> impl Iterator<Item = (&str, AuditEntry)> {
    record.audit_logs.iter().flat_map(|(writer, text)| {
        text.lines()
            .filter_map(|l| serde_json::from_str::<AuditEntry>(l).ok())
            .map(move |e| (writer.as_str(), e))
    })
}

fn detail_str<'a>(e: &'a AuditEntry, field: &str) -> &'a str {
    e.detail.get(field).and_then(|v| v.as_str()).unwrap_or("")
}

fn signed_statuses(record: &RunRecord) -> impl Iterator<Item = &pb::WithdrawalStatus> {
    record
        .statuses
        .iter()
        .filter(|s| s.state == pb::WithdrawalState::Signed as i32)
}

/// Invariant 1. A round 2 re-sent after a restart must be refused as an unknown
/// nonce; no node may hand out the same commitments twice; and no two
/// signatures over different messages may share a nonce commitment `R`.
pub fn nonce_single_use(record: &RunRecord) -> Vec<Violation> {
    let mut out = Vec::new();
    for (node, request, code) in &record.replays {
        if code != "FailedPrecondition" {
            out.push(Violation::new(
                NONCE,
                format!("{node} answered a round 2 re-sent after its restart (request {request}) with {code}, not FailedPrecondition: a nonce outlived the process"),
            ));
        }
    }
    let mut commitments: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (node, e) in &record.liar_events {
        if let LiarEvent::Committed { commitments: c, .. } = e {
            *commitments.entry((node.as_str(), c.as_str())).or_default() += 1;
        }
    }
    for ((node, c), n) in commitments {
        if n > 1 {
            out.push(Violation::new(
                NONCE,
                format!(
                    "{node} handed out the same round-1 commitments {n} times ({}…)",
                    &c[..c.len().min(16)]
                ),
            ));
        }
    }
    let mut by_r: BTreeMap<&[u8], BTreeSet<&[u8]>> = BTreeMap::new();
    for s in signed_statuses(record) {
        if s.signature.len() == 65 {
            by_r.entry(&s.signature[..33])
                .or_default()
                .insert(&s.message);
        }
    }
    for (r, messages) in by_r {
        if messages.len() > 1 {
            out.push(Violation::new(
                NONCE,
                format!(
                    "{} different messages were signed with the same nonce commitment R = {}",
                    messages.len(),
                    hex::encode(r)
                ),
            ));
        }
    }
    out
}

/// Invariant 2. Every share a node released (its `share_released` audit
/// entries) is for a request the scenario authorized, with that request's digest.
pub fn authorized_only(record: &RunRecord) -> Vec<Violation> {
    let mut out = Vec::new();
    for (writer, e) in entries(record) {
        if writer == COORDINATOR_ID || e.event != "share_released" {
            continue;
        }
        let request = detail_str(&e, "request");
        let digest = detail_str(&e, "digest");
        match record.authorized.get(request) {
            Some(expected) if expected == digest => {}
            Some(expected) => out.push(Violation::new(
                AUTHORIZED,
                format!("{writer} released a share for {request} with digest {digest}, but the request authorized has digest {expected}"),
            )),
            None if record.unauthorized.contains_key(request) => out.push(Violation::new(
                AUTHORIZED,
                format!("{writer} released a share for {request}, a request the scenario made unauthorized"),
            )),
            None => out.push(Violation::new(
                AUTHORIZED,
                format!("{writer} released a share for {request}, which the scenario never authorized"),
            )),
        }
        if detail_str(&e, "group") != GROUP {
            out.push(Violation::new(
                AUTHORIZED,
                format!(
                    "{writer} released a share for {request} from group {:?}",
                    detail_str(&e, "group")
                ),
            ));
        }
    }
    out
}

/// Invariant 3. Across every node, the coordinator's audit log and every answer
/// it gave, a request id has at most one digest and at most one signature.
pub fn one_digest_per_request(record: &RunRecord) -> Vec<Violation> {
    let mut digests: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (writer, e) in entries(record) {
        let relevant = (writer != COORDINATOR_ID && e.event == "share_released")
            || (writer == COORDINATOR_ID && e.event == "withdrawal_signed");
        if relevant {
            digests
                .entry(detail_str(&e, "request").to_string())
                .or_default()
                .insert(detail_str(&e, "digest").to_string());
        }
    }
    let mut signatures: BTreeMap<&str, BTreeSet<&[u8]>> = BTreeMap::new();
    for s in &record.statuses {
        if !s.digest.is_empty() {
            digests
                .entry(s.request_id.clone())
                .or_default()
                .insert(hex::encode(&s.digest));
        }
        if s.state == pb::WithdrawalState::Signed as i32 {
            signatures
                .entry(s.request_id.as_str())
                .or_default()
                .insert(&s.signature);
        }
    }
    let mut out = Vec::new();
    for (request, set) in digests {
        if set.len() > 1 {
            out.push(Violation::new(
                ONE_DIGEST,
                format!(
                    "request {request} has {} digests: {}",
                    set.len(),
                    set.into_iter().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    for (request, set) in signatures {
        if set.len() > 1 {
            out.push(Violation::new(
                ONE_DIGEST,
                format!(
                    "request {request} was reported signed with {} different signatures (resubmission must return the same outcome)",
                    set.len()
                ),
            ));
        }
    }
    out
}

/// Invariant 4. Every culprit the coordinator names (in an answer, an
/// exclusion or its audit log) is the node that was lying for that request,
/// and every lie told during signing got its liar named.
pub fn culprit_is_liar(record: &RunRecord) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut named: BTreeSet<(String, String)> = BTreeSet::new();
    let mut blame = |node: &str, request: &str, source: &str, out: &mut Vec<Violation>| {
        named.insert((node.to_string(), request.to_string()));
        match record.liar_by_request.get(request) {
            Some(liar) if liar == node => {}
            Some(liar) => out.push(Violation::new(
                CULPRIT,
                format!("{source} names {node} for {request}, but the liar was {liar}"),
            )),
            None => out.push(Violation::new(
                CULPRIT,
                format!("{source} names {node} for {request}, but nobody lied there"),
            )),
        }
    };
    for s in &record.statuses {
        for c in &s.culprits {
            blame(c, &s.request_id, "the withdrawal status", &mut out);
        }
    }
    for (node, request) in &record.exclusions {
        blame(node, request, "the exclusion list", &mut out);
    }
    for (writer, e) in entries(record) {
        if writer == COORDINATOR_ID && e.event == "culprit_excluded" {
            blame(
                detail_str(&e, "node"),
                detail_str(&e, "request"),
                "the coordinator's audit log",
                &mut out,
            );
        }
    }
    for (node, e) in &record.liar_events {
        if let LiarEvent::Lied { lie, request } = e {
            if matches!(lie, Lie::BadShare | Lie::BadCommitments)
                && !named.contains(&(node.clone(), request.clone()))
            {
                out.push(Violation::new(
                    CULPRIT,
                    format!(
                        "{node} sent an invalid share for {request} ({lie:?}) and was never named"
                    ),
                ));
            }
        }
    }
    for (sender, message) in &record.dkg_aborts {
        if !message.contains(sender.as_str()) {
            out.push(Violation::new(
                CULPRIT,
                format!("the ceremony whose messages from {sender} were altered aborted without naming it: {message}"),
            ));
        }
    }
    out
}

/// Invariant 6. Every member of the group (as the coordinator lists it) that
/// answered holds the group under the same key, which is the key it was
/// created with; the coordinator's answers carry that key too.
pub fn group_key_agreement(record: &RunRecord) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(expected) = &record.group_key else {
        return out;
    };
    for g in record.final_groups.iter().filter(|g| g.name == GROUP) {
        if &g.group_public_key != expected {
            out.push(Violation::new(
                GROUP_KEY,
                format!(
                    "the coordinator lists {GROUP} with key {}, created with {}",
                    hex::encode(&g.group_public_key),
                    hex::encode(expected)
                ),
            ));
        }
        for member in &g.members {
            let Some(Ok(status)) = record.node_statuses.get(member) else {
                continue;
            };
            match status.key_groups.iter().find(|k| k.name == GROUP) {
                Some(k) if &k.group_public_key == expected => {}
                Some(k) => out.push(Violation::new(
                    GROUP_KEY,
                    format!(
                        "{member} holds {GROUP} under key {}, not {}",
                        hex::encode(&k.group_public_key),
                        hex::encode(expected)
                    ),
                )),
                None => out.push(Violation::new(
                    GROUP_KEY,
                    format!("{member} is listed as a member of {GROUP} but does not hold it"),
                )),
            }
        }
    }
    for s in &record.statuses {
        if !s.group_public_key.is_empty() && &s.group_public_key != expected {
            out.push(Violation::new(
                GROUP_KEY,
                format!(
                    "the status of {} carries group key {}",
                    s.request_id,
                    hex::encode(&s.group_public_key)
                ),
            ));
        }
    }
    out
}

/// C5. Every signature the coordinator returned verifies, with an independent
/// verifier, over the payload the scenario asked for, under the group key.
pub fn signatures_verify(record: &RunRecord) -> Vec<Violation> {
    let mut out = Vec::new();
    for s in signed_statuses(record) {
        let Some(payload) = record.payloads.get(&s.request_id) else {
            out.push(Violation::new(
                SIGNATURES,
                format!(
                    "{} is reported signed, but the scenario never asked for it",
                    s.request_id
                ),
            ));
            continue;
        };
        if &s.message != payload {
            out.push(Violation::new(
                SIGNATURES,
                format!(
                    "{}: the signed message is not the request payload",
                    s.request_id
                ),
            ));
        }
        let Some(key) = &record.group_key else {
            out.push(Violation::new(
                SIGNATURES,
                format!("{} is signed but no group was ever created", s.request_id),
            ));
            continue;
        };
        if let Err(e) = permafrostctl::client::verify_signature(key, payload, &s.signature) {
            out.push(Violation::new(SIGNATURES, format!("{}: {e}", s.request_id)));
        }
    }
    out
}

/// L1, S1. Every audit log (nodes and coordinator) still verifies as one
/// unbroken hash chain after the kills.
pub fn audit_chain(record: &RunRecord) -> Vec<Violation> {
    record
        .audit_logs
        .iter()
        .filter(|(_, text)| !text.is_empty())
        .filter_map(|(writer, text)| {
            permafrost_core::audit::verify(text, &[], None)
                .err()
                .map(|e| Violation::new(AUDIT_CHAIN, format!("audit log of {writer}: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, prev: &str, event: &str, detail: serde_json::Value) -> AuditEntry {
        AuditEntry::new(seq, 1, "n1", event, detail, prev)
    }

    fn log(events: &[(&str, serde_json::Value)]) -> String {
        let mut prev = permafrost_core::audit::genesis();
        let mut lines = Vec::new();
        for (i, (event, detail)) in events.iter().enumerate() {
            let e = entry(i as u64 + 1, &prev, event, detail.clone());
            prev = e.hash.clone();
            lines.push(serde_json::to_string(&e).expect("json"));
        }
        lines.join("\n") + "\n"
    }

    fn share(request: &str, digest: &str) -> (&'static str, serde_json::Value) {
        (
            "share_released",
            serde_json::json!({"request": request, "digest": digest, "group": GROUP}),
        )
    }

    #[test]
    fn shares_for_unknown_or_changed_requests_are_violations() {
        let mut r = RunRecord::default();
        r.authorized.insert("a".into(), "d1".into());
        r.audit_logs.insert(
            "n1".into(),
            log(&[share("a", "d1"), share("a", "d2"), share("b", "d3")]),
        );
        let v = authorized_only(&r);
        assert_eq!(v.len(), 2, "{v:?}");
        let v = one_digest_per_request(&r);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("request a has 2 digests"));
        assert!(audit_chain(&r).is_empty());
    }

    #[test]
    fn a_tampered_audit_line_breaks_the_chain() {
        let mut r = RunRecord::default();
        let text = log(&[share("a", "d1"), share("a", "d1")]).replace("\"d1\"", "\"d9\"");
        r.audit_logs.insert("n1".into(), text);
        assert_eq!(audit_chain(&r).len(), 1);
    }

    #[test]
    fn culprits_must_be_the_liar_and_lies_must_be_named() {
        let mut r = RunRecord::default();
        r.liar_by_request.insert("a".into(), "n2".into());
        r.statuses.push(pb::WithdrawalStatus {
            request_id: "a".into(),
            culprits: vec!["n2".into()],
            ..Default::default()
        });
        r.liar_events.push((
            "n2".into(),
            LiarEvent::Lied {
                lie: Lie::BadShare,
                request: "a".into(),
            },
        ));
        assert!(culprit_is_liar(&r).is_empty());
        r.statuses[0].culprits = vec!["n3".into()];
        let v = culprit_is_liar(&r);
        assert_eq!(v.len(), 2, "wrong node named and liar unnamed: {v:?}");
    }

    #[test]
    fn replays_must_be_refused_and_r_must_not_repeat() {
        let mut r = RunRecord::default();
        r.replays
            .push(("n1".into(), "a".into(), "FailedPrecondition".into()));
        assert!(nonce_single_use(&r).is_empty());
        r.replays.push(("n1".into(), "b".into(), "Ok".into()));
        let sig = |m: &[u8]| pb::WithdrawalStatus {
            state: pb::WithdrawalState::Signed as i32,
            signature: vec![7; 65],
            message: m.to_vec(),
            ..Default::default()
        };
        r.statuses.push(sig(b"one"));
        r.statuses.push(sig(b"two"));
        assert_eq!(nonce_single_use(&r).len(), 2);
    }
}
