//! How the CLI shows wire values to people: names of tiers and states, and
//! the lines printed for withdrawals, key groups, node statuses and exclusions.
//!
//! Display only: nothing here talks to a server or decides anything.

use permafrost_proto as pb;

/// Lower-case name of a wire tier.
pub fn tier_name(tier: i32) -> &'static str {
    match pb::Tier::try_from(tier) {
        Ok(pb::Tier::Hot) => "hot",
        Ok(pb::Tier::Warm) => "warm",
        Ok(pb::Tier::Cold) => "cold",
        _ => "unspecified",
    }
}

/// Lower-case name of a wire withdrawal state.
pub fn state_name(state: i32) -> &'static str {
    match pb::WithdrawalState::try_from(state) {
        Ok(pb::WithdrawalState::Pending) => "pending",
        Ok(pb::WithdrawalState::Signed) => "signed",
        Ok(pb::WithdrawalState::Failed) => "failed",
        _ => "unspecified",
    }
}

/// Human-readable lines describing a withdrawal status.
pub fn describe_withdrawal(s: &pb::WithdrawalStatus) -> String {
    let mut out = format!(
        "request id:       {}\nstate:            {}\n",
        s.request_id,
        state_name(s.state)
    );
    if !s.digest.is_empty() {
        out.push_str(&format!("request digest:   {}\n", hex::encode(&s.digest)));
    }
    if !s.message.is_empty() {
        out.push_str(&format!("signed message:   {}\n", hex::encode(&s.message)));
    }
    if !s.txid.is_empty() {
        out.push_str(&format!("txid:             {}\n", s.txid));
    }
    if !s.input_signatures.is_empty() {
        out.push_str(&format!(
            "input signatures: {} (BIP340)\n",
            s.input_signatures.len()
        ));
    }
    if !s.output_key.is_empty() {
        out.push_str(&format!(
            "output key:       {}\n",
            hex::encode(&s.output_key)
        ));
    }
    if !s.signature.is_empty() {
        out.push_str(&format!(
            "signature:        {}\n",
            hex::encode(&s.signature)
        ));
    }
    if !s.signers.is_empty() {
        out.push_str(&format!("signers:          {}\n", s.signers.join(", ")));
    }
    if !s.group_public_key.is_empty() {
        out.push_str(&format!(
            "group public key: {}\n",
            hex::encode(&s.group_public_key)
        ));
    }
    if !s.approvals.is_empty() {
        out.push_str(&format!("approvals:        {}\n", s.approvals.join(", ")));
    }
    if !s.limits.is_empty() {
        out.push_str(&format!("limits:           {}\n", s.limits));
    }
    if s.state == pb::WithdrawalState::Pending as i32 {
        if s.approvals_missing > 0 {
            out.push_str(&format!("approvals needed: {} more\n", s.approvals_missing));
        }
        if s.time_locked_until > 0 {
            out.push_str(&format!(
                "time-locked until {} ({})\n",
                s.time_locked_until,
                from_now(s.time_locked_until, permafrost_core::unix_now())
            ));
        }
    }
    out.push_str(&format!("attempts:         {}\n", s.attempts));
    if !s.culprits.is_empty() {
        out.push_str(&format!("culprits:         {}\n", s.culprits.join(", ")));
    }
    if !s.detail.is_empty() {
        out.push_str(&format!("detail:           {}\n", s.detail));
    }
    out
}

/// Human-readable line describing a key group.
pub fn describe_key_group(g: &pb::KeyGroup) -> String {
    format!(
        "{}  tier {}  {}-of-{} [{}]{}  epoch {}  registry #{}  {}  key {}{}",
        g.name,
        tier_name(g.tier),
        g.threshold,
        g.members.len().saturating_sub(g.removed.len()),
        g.members.join(","),
        if g.removed.is_empty() {
            String::new()
        } else {
            format!(" removed [{}]", g.removed.join(","))
        },
        g.epoch,
        g.registry_seq,
        if g.active { "active" } else { "NOT ACTIVE" },
        hex::encode(&g.group_public_key),
        describe_scheme(&g.scheme, &g.network, &g.output_key, &g.address)
    )
}

/// `"  message"`, or a taproot group's network, output key and address, as reported.
fn describe_scheme(scheme: &str, network: &str, output_key: &[u8], address: &str) -> String {
    match scheme {
        "" | "message" => "  scheme message".to_string(),
        "taproot" => format!(
            "  scheme taproot  network {}  output key {}  address {}",
            if network.is_empty() { "?" } else { network },
            hex::encode(output_key),
            if address.is_empty() { "?" } else { address }
        ),
        other => format!("  scheme {other:?}"),
    }
}

/// `"in 42s"` or `"passed"` for a Unix time relative to `now`.
pub fn from_now(at: u64, now: u64) -> String {
    if at > now {
        format!("in {}s", at - now)
    } else {
        "passed".to_string()
    }
}

/// Node ids joined by commas.
pub fn join(ids: &[permafrost_core::NodeId]) -> String {
    ids.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",")
}

/// Human-readable lines describing a node's status, including what
/// `audit verify --head` needs.
pub fn describe_node_status(s: &pb::NodeStatus) -> String {
    let mut out = format!(
        "node:             {}\nregion:           {}\nsealed:           {}\nopen nonces:      {}\npolicy hash:      {}\naudit entries:    {}\naudit head:       {}\n",
        s.node_id,
        s.region,
        if s.sealed { "yes (refuses to sign until unsealed)" } else { "no" },
        s.open_nonces,
        hex::encode(&s.policy_hash),
        s.audit_entries,
        hex::encode(&s.audit_head),
    );
    if s.key_groups.is_empty() {
        out.push_str("key groups:       none\n");
    }
    for g in &s.key_groups {
        out.push_str(&format!(
            "key group:        {}  tier {}  threshold {}  epoch {}  {}  key {}{}\n                  operator registry #{} {}\n",
            g.name,
            tier_name(g.tier),
            g.threshold,
            g.epoch,
            if g.active { "active" } else { "NOT ACTIVE" },
            hex::encode(&g.group_public_key),
            describe_scheme(&g.scheme, &g.network, &g.output_key, &g.address),
            g.registry_seq,
            if g.registry_hash.is_empty() {
                "(none: takes part in no ceremony)".to_string()
            } else {
                hex::encode(&g.registry_hash)
            }
        ));
        if !g.pending_refresh.is_empty() {
            out.push_str(&format!(
                "refresh pending:  {} (its new share is held beside the one in use; \
                 keygroup recover finishes it, keygroup abort-refresh drops it)\n",
                g.pending_refresh
            ));
        }
    }
    out.push_str(&format!(
        "check its log:    permafrostctl audit verify <audit.log> --head {}:{}\n",
        s.audit_entries,
        hex::encode(&s.audit_head)
    ));
    out
}

/// Human-readable line describing an exclusion.
pub fn describe_exclusion(e: &pb::Exclusion) -> String {
    format!(
        "{}  {}  excluded at {} for an invalid share while signing {} (evidence: {}-byte share, {}-byte signing package)",
        e.group,
        e.node_id,
        e.at,
        e.request_id,
        e.signature_share.len(),
        e.signing_package.len()
    )
}

/// Human-readable line describing one member's health in the cluster status.
pub fn describe_member_health(n: &pb::MemberHealth) -> String {
    let health = match (n.reachable, n.sealed) {
        (true, false) => "ok".to_string(),
        (true, true) => "SEALED".to_string(),
        (false, _) => format!("UNREACHABLE: {}", n.last_error),
    };
    format!(
        "  {:<12} {:<12} {:<22} {health}",
        n.node_id, n.region, n.endpoint
    )
}
