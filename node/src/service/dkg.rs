//! Creating a key group by distributed key generation, then activating it.
//!
//! The FROST DKG (Komlo–Goldberg, as `frost-core`'s `keys::dkg` implements it;
//! RFC 9591 itself specifies only trusted-dealer key generation, Appendix C),
//! driven by the pure `Awaiting*` states of `permafrost_core::dkg`: part 1,
//! an echo round so a relay cannot split views, part 2 (round-2 shares
//! encrypted and signed end to end), part 3. The steps between RPCs wait in the
//! node's [`crate::ceremonies::CeremonyTable`]; the share is sealed by the
//! [`crate::vault::ShareVault`]. A new group stays inactive until a test
//! signature under its key proves every member can sign.
//!
//! A refresh runs the same steps; what differs is in [`super::refresh`].

use std::time::Instant;

use permafrost_core::ceremony::AuthorizedCeremony;
use permafrost_core::dkg::{self, AwaitingEchoes, AwaitingRound1Set, AwaitingRound2};
use permafrost_core::{signing, CoreError};
use permafrost_proto as pb;
use permafrost_proto::convert::group_name;
use tracing::info;

use super::{
    audit, invalid, missing, quorum, refresh, refuse, stored_public_key_package, FromWire,
};
use crate::metrics::Check;
use crate::store::{GroupRecord, FIRST_EPOCH};
use crate::{NodeError, SignerNode};

/// A ceremony step waiting on this node for the coordinator's next message
/// (memory only: a restart aborts the ceremony).
pub(crate) enum CeremonyStep {
    /// Part 1 sent; waiting for everyone's round-1 packages.
    Round1(AwaitingRound1Set),
    /// Echo sent; waiting for everyone's echoes.
    Echoes(AwaitingEchoes),
    /// Round-2 shares sent; waiting for those addressed to this node.
    Round2(AwaitingRound2),
}

/// A ceremony step with the operator approval it runs under, kept together
/// so the step that ends the ceremony records the spec that authorized it.
pub(crate) struct CeremonyInFlight {
    step: CeremonyStep,
    authorized: AuthorizedCeremony,
    /// The operators' signed spec as relayed at `DkgStart`: a refresh keeps
    /// it with its pending share, so any coordinator can rebuild the commit
    /// certificate from the members (K7).
    authorization: Option<pb::SignedLifecycleSpec>,
}

type Taken = (
    CeremonyStep,
    AuthorizedCeremony,
    Option<pb::SignedLifecycleSpec>,
);

fn take(node: &SignerNode, id: &str) -> Result<Taken, NodeError> {
    let f = node.ceremonies.take(id, Instant::now())?;
    Ok((f.step, f.authorized, f.authorization))
}

fn put(
    node: &SignerNode,
    id: String,
    step: CeremonyStep,
    authorized: AuthorizedCeremony,
    authorization: Option<pb::SignedLifecycleSpec>,
) -> Result<(), NodeError> {
    node.ceremonies.put(
        id,
        CeremonyInFlight {
            step,
            authorized,
            authorization,
        },
        Instant::now(),
    )
}

/// `DkgStart`: verifies the operator quorum of the relayed lifecycle spec
/// (X5), checks the ceremony against it, the manifest and this node's records,
/// then part 1 (a new group, or a refresh of one this node holds).
pub(super) async fn start(
    node: &SignerNode,
    req: pb::DkgStartRequest,
) -> Result<pb::DkgRound1Message, NodeError> {
    let spec: dkg::CeremonySpec = req
        .spec
        .as_ref()
        .ok_or_else(|| missing("spec"))?
        .try_into()
        .wire()?;
    node.vault.ensure_unsealed()?;
    let approved = quorum::approved(node, "dkg-start", req.authorization.as_ref())?;
    for member in &spec.members {
        node.directory
            .get(member)
            .map_err(|e| refuse(node, "dkg-start", Check::Ceremony, e))?;
        if node.store.is_revoked(member)? {
            return Err(refuse(
                node,
                "dkg-start",
                Check::Ceremony,
                CoreError::refused(format!("{member} was replaced after a loss and is revoked")),
            ));
        }
    }
    let existing = node.store.group(&spec.group)?;
    if existing.is_none() && spec.refresh {
        return Err(NodeError::NotFound(format!(
            "key group {} is not held by {}",
            spec.group, node.id
        )));
    }
    // A name this node ever held, in any epoch, is never created again (X5:
    // no shadow group beside the live one).
    if let (None, Some(epoch)) = (&existing, node.store.group_epoch(&spec.group)?) {
        return Err(refuse(
            node,
            "dkg-start",
            Check::Ceremony,
            CoreError::refused(format!(
                "{} held key group {} before (epoch {}); a group name is never reused",
                node.id, spec.group, epoch.epoch
            )),
        ));
    }
    let held = existing
        .as_ref()
        .map(|r| quorum::held(node, r))
        .transpose()?;
    let authorized = match &held {
        Some(held) if spec.refresh => approved.at_current_epoch(&node.id, held),
        _ => approved.as_newcomer(&node.id, held.as_ref()),
    }
    .map_err(|e| refuse(node, "dkg-start", Check::Ceremony, e))?;
    let old = match &existing {
        Some(record) => Some(refresh::old_shares(node, &spec, record, &authorized)?),
        None => None,
    };
    node.ceremonies.admit(&spec.ceremony_id, Instant::now())?;
    let ceremony_id = spec.ceremony_id.clone();
    let started = match old {
        Some(old) => dkg::start_refresh(
            spec,
            &authorized,
            old,
            &node.id,
            &node.identity,
            &mut rand::thread_rng(),
        ),
        None => dkg::start(
            spec,
            &authorized,
            &node.id,
            &node.identity,
            &mut rand::thread_rng(),
        ),
    };
    let (state, msg) = started.map_err(|e| refuse(node, "dkg-start", Check::Ceremony, e))?;
    quorum::audit_authorized(node, "dkg-start", &authorized)?;
    audit(
        node,
        "dkg_started",
        serde_json::json!({"ceremony": ceremony_id, "group": state.spec().group.as_str(), "threshold": state.spec().threshold, "members": state.spec().members.iter().map(|m| m.as_str()).collect::<Vec<_>>(), "spec_digest": authorized.digest().to_hex()}),
    )?;
    info!(node = %node.id, ceremony = %ceremony_id, group = %state.spec().group, "DKG part 1 done");
    put(
        node,
        ceremony_id,
        CeremonyStep::Round1(state),
        authorized,
        req.authorization.clone(),
    )?;
    Ok(msg.into())
}

/// `DkgEcho`: checks the relayed round-1 set and echoes its hash.
pub(super) fn echo(
    node: &SignerNode,
    req: pb::DkgEchoRequest,
) -> Result<pb::DkgEchoMessage, NodeError> {
    let set: Vec<dkg::SignedRound1> = req
        .round1
        .iter()
        .map(TryInto::try_into)
        .collect::<Result<_, _>>()
        .wire()?;
    let (CeremonyStep::Round1(state), authorized, authorization) = take(node, &req.ceremony_id)?
    else {
        return Err(NodeError::Precondition(
            "ceremony is not waiting for the round-1 set; aborted".into(),
        ));
    };
    // No later round of a refresh this node promised never to report (K7).
    if state.spec().refresh {
        super::abandon::refuse_if_abandoned(
            node,
            "dkg-echo",
            &state.spec().group,
            &req.ceremony_id,
        )?;
    }
    let (next, echo) = state
        .receive_round1(&set, &node.directory, &node.identity)
        .map_err(|e| refuse(node, "dkg-echo", Check::Ceremony, e))?;
    audit(
        node,
        "dkg_round1_set_echoed",
        serde_json::json!({"ceremony": req.ceremony_id, "set_hash": hex::encode(&echo.set_hash)}),
    )?;
    put(
        node,
        req.ceremony_id,
        CeremonyStep::Echoes(next),
        authorized,
        authorization,
    )?;
    Ok(echo.into())
}

/// `DkgRound2`: checks every echo agrees, then part 2 (encrypted round-2 shares).
pub(super) fn round2(
    node: &SignerNode,
    req: pb::DkgRound2Request,
) -> Result<pb::DkgRound2Response, NodeError> {
    let echoes: Vec<dkg::Echo> = req
        .echoes
        .iter()
        .map(TryInto::try_into)
        .collect::<Result<_, _>>()
        .wire()?;
    let (CeremonyStep::Echoes(state), authorized, authorization) = take(node, &req.ceremony_id)?
    else {
        return Err(NodeError::Precondition(
            "ceremony is not waiting for echoes; aborted".into(),
        ));
    };
    if authorized.spec().operation != permafrost_core::ceremony::Operation::Create {
        super::abandon::refuse_if_abandoned(
            node,
            "dkg-round2",
            &authorized.spec().group,
            &req.ceremony_id,
        )?;
    }
    let (next, shares) = state
        .receive_echoes(
            &echoes,
            &node.directory,
            &node.identity,
            &mut rand::thread_rng(),
        )
        .map_err(|e| refuse(node, "dkg-round2", Check::Ceremony, e))?;
    audit(
        node,
        "dkg_echoes_agreed_shares_sent",
        serde_json::json!({"ceremony": req.ceremony_id, "encrypted_shares": shares.len()}),
    )?;
    put(
        node,
        req.ceremony_id,
        CeremonyStep::Round2(next),
        authorized,
        authorization,
    )?;
    Ok(pb::DkgRound2Response {
        shares: shares.into_iter().map(Into::into).collect(),
    })
}

/// `DkgFinish`: part 3; the new share is sealed and stored, the group pending activation.
pub(super) async fn finish(
    node: &SignerNode,
    req: pb::DkgFinishRequest,
) -> Result<pb::DkgKeyReport, NodeError> {
    let shares: Vec<dkg::SealedRound2> = req
        .shares
        .iter()
        .map(TryInto::try_into)
        .collect::<Result<_, _>>()
        .wire()?;
    let (CeremonyStep::Round2(state), authorized, authorization) = take(node, &req.ceremony_id)?
    else {
        return Err(NodeError::Precondition(
            "ceremony is not waiting for round-2 shares; aborted".into(),
        ));
    };
    let spec = state.spec().clone();
    // K7: a refresh's report is made and its pending share stored under the
    // lock an abandon promise is taken under, so the two never interleave.
    let fate = if spec.refresh {
        let fate = node.refresh_lock.lock().await;
        super::abandon::refuse_if_abandoned(node, "dkg-finish", &spec.group, &spec.ceremony_id)?;
        Some(fate)
    } else {
        None
    };
    let out = state
        .receive_round2(&shares, &node.directory, &node.identity)
        .map_err(|e| refuse(node, "dkg-finish", Check::Ceremony, e))?;
    if let Some(fate) = fate {
        return refresh::hold_new_share(node, &spec, &authorized, authorization, out, fate).await;
    }
    let (scheme, network) = node.scheme_of(&spec.group);
    let record = GroupRecord {
        v: 1,
        name: spec.group.clone(),
        tier: spec.tier,
        threshold: spec.threshold,
        members: spec.members.clone(),
        removed: Vec::new(),
        removed_at: Default::default(),
        ceremony_id: spec.ceremony_id.clone(),
        sealed_key_package: node.vault.seal_key_package(
            &spec.group,
            FIRST_EPOCH,
            &out.key_package,
        )?,
        public_key_package: out.report.public_key_package.clone(),
        group_public_key: out.report.group_public_key.clone(),
        active: false,
        pending_refresh: None,
        scheme,
        network,
        refresh_certificate: None,
        prepared_repair: None,
        repair_certificate: None,
        retired: false,
    };
    audit(
        node,
        "dkg_completed",
        serde_json::json!({"ceremony": spec.ceremony_id, "group": spec.group.as_str(), "group_public_key": hex::encode(&record.group_public_key)}),
    )?;
    node.store
        .insert_group_at(&record, &quorum::next_epoch(&authorized, FIRST_EPOCH), None)
        .await?;
    info!(node = %node.id, group = %spec.group, group_key = %hex::encode(&record.group_public_key), "DKG complete; key share sealed; group pending activation");
    Ok(out.report.into())
}

/// `ActivateGroup`: a pending group goes live on proof, not on the coordinator's
/// word: a valid group signature over the activation message.
pub(super) async fn activate(
    node: &SignerNode,
    req: pb::ActivateGroupRequest,
) -> Result<pb::ActivateGroupResponse, NodeError> {
    let name = group_name("group", &req.group).wire()?;
    let record = node.group_record(&name)?;
    if record.active {
        return Ok(pb::ActivateGroupResponse {});
    }
    let message = signing::activation_message(&name, &record.group_public_key);
    let refused = |why: &str| {
        refuse(
            node,
            "activate",
            Check::Ceremony,
            CoreError::refused(format!("test signature does not verify {why}")),
        )
    };
    match record.taproot_output()? {
        None => {
            let pkp = stored_public_key_package(&record)?;
            let signature = frost_secp256k1::Signature::deserialize(&req.test_signature)
                .map_err(|e| invalid("test_signature", e))?;
            pkp.verifying_key()
                .verify(&message, &signature)
                .map_err(|_| refused("under the group key"))?;
        }
        // A taproot group proves the path its withdrawals take: a BIP340
        // signature under its tweaked output key.
        Some(output) => {
            let digest: [u8; 32] = message
                .as_slice()
                .try_into()
                .map_err(|_| NodeError::Bug("activation message is not 32 bytes".into()))?;
            output
                .verify(&digest, &req.test_signature)
                .map_err(|_| refused("under the group's taproot output key"))?;
        }
    }
    audit(
        node,
        "group_activated",
        serde_json::json!({"group": name.as_str()}),
    )?;
    node.store.activate_group(&name).await?;
    info!(node = %node.id, group = %name, "key group active");
    Ok(pb::ActivateGroupResponse {})
}
