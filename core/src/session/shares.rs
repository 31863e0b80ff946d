//! A signer's shares for a session: verified on arrival, aggregated once
//! the session has them all.

use super::*;

impl<C: Ciphersuite> SigningSession<C> {
    pub(super) fn on_shares(
        &mut self,
        node: NodeId,
        session: u32,
        raw: Vec<Vec<u8>>,
        elapsed: std::time::Duration,
        out: &mut Vec<Command<C>>,
    ) {
        let Some(signer) = self.signers.get(&node) else {
            return;
        };
        let identifier = signer.identifier;
        let Some(s) = self.sessions.get_mut(session as usize) else {
            return;
        };
        if !s.signers.contains(&node) || !s.answered.insert(node.clone()) {
            return;
        }
        let blame = |share: Vec<u8>, package: &[u8]| Evidence {
            node: node.clone(),
            share,
            signing_package: package.to_vec(),
        };
        let evidence = if raw.len() != s.packages.len() {
            Some(blame(raw.concat(), &s.package_bytes.concat()))
        } else {
            let mut bad = None;
            let pkp = &self.config.public_key_package;
            // The share that completes the session is checked by the
            // aggregate's own verification below: with every other share
            // verified, the aggregate verifies exactly when this one does
            // (the check is their sum), and a failure is traced back to it.
            let completes = !s.dead && s.shares.iter().all(|m| m.len() + 1 == s.signers.len());
            for (i, bytes) in raw.iter().enumerate() {
                let ok = match SignatureShare::<C>::deserialize(bytes) {
                    Ok(share) => {
                        (completes || share_verifies(pkp, identifier, &share, &s.packages[i])) && {
                            s.shares[i].insert(identifier, share);
                            true
                        }
                    }
                    Err(_) => false,
                };
                if !ok {
                    bad = Some(blame(bytes.clone(), &s.package_bytes[i]));
                    break;
                }
            }
            bad
        };
        if let Some(evidence) = evidence {
            return self.culprit(evidence, session, out);
        }
        let complete = !s.dead && s.shares.iter().all(|m| m.len() == s.signers.len());
        if complete {
            let mut signatures = Vec::with_capacity(s.packages.len());
            let mut failed = None;
            for (i, (package, shares)) in s.packages.iter().zip(&s.shares).enumerate() {
                match crate::signing::aggregate_verified(
                    package,
                    shares,
                    &self.config.public_key_package,
                )
                .map_err(|e| format!("{e:?}"))
                .and_then(|sig| sig.serialize().map_err(|e| e.to_string()))
                {
                    Ok(sig) => signatures.push(sig),
                    Err(e) => {
                        // The last share was not verified on its own: it is
                        // the culprit if it does not verify now.
                        let invalid = shares.get(&identifier).is_some_and(|share| {
                            !share_verifies(
                                &self.config.public_key_package,
                                identifier,
                                share,
                                package,
                            )
                        });
                        failed = Some(match invalid {
                            true => Err(blame(raw[i].clone(), &s.package_bytes[i])),
                            false => Ok(e),
                        });
                        break;
                    }
                }
            }
            match failed {
                Some(Err(evidence)) => return self.culprit(evidence, session, out),
                Some(Ok(e)) => {
                    self.finished = true;
                    out.push(Command::Fail {
                        reason: FailReason::Other,
                        detail: format!("verified shares did not aggregate: {e}"),
                    });
                    return;
                }
                None => {}
            }
            let signers = s.signers.clone();
            self.finished = true;
            let unused = self
                .signers
                .iter_mut()
                .filter(|(_, s)| !matches!(s.state, State::Culprit))
                .flat_map(|(n, s)| s.sets.drain(..).map(move |set| (n.clone(), set)))
                .collect();
            out.push(Command::Done {
                signatures,
                signers,
                unused,
            });
            return;
        }
        // Valid shares: responsive again, with its next nonce set; while its
        // session may still complete, after the hedge delay.
        let released = s.released;
        let first_answer = s.answered.len() == 1;
        if let Some(signer) = self.signers.get_mut(&node) {
            signer.proven = true;
            if signer.state == State::InSession(session) {
                signer.state = if released {
                    State::Available
                } else {
                    State::Held(session)
                };
            }
        }
        if released {
            self.replenish(&node, out);
        } else {
            if first_answer {
                let slowest = s
                    .signers
                    .iter()
                    .filter_map(|n| self.config.latencies.get(n))
                    .max()
                    .copied()
                    .unwrap_or_default();
                let rest_of_slowest = (slowest * 5 / 4).saturating_sub(elapsed);
                out.push(Command::Later {
                    after: self
                        .config
                        .hedge
                        .max(elapsed / HEDGE_FRACTION)
                        .max(rest_of_slowest),
                    command: Box::new(Command::Hedge { session }),
                });
            }
            if elapsed >= self.config.hedge {
                // A long round trip: fetch its next nonce set now, so that
                // a hedge finds it in hand instead of waiting one more trip.
                self.request_commitments(&node, out);
            }
        }
    }

    /// A signer sent an invalid share: it is named with the evidence, never
    /// asked again, and its session is dead.
    fn culprit(&mut self, evidence: Evidence, session: u32, out: &mut Vec<Command<C>>) {
        if let Some(signer) = self.signers.get_mut(&evidence.node) {
            signer.state = State::Culprit;
            signer.sets.clear();
        }
        out.push(Command::Exclude(evidence));
        self.kill_session(session, out);
    }
}

/// Whether `share` is `identifier`'s valid share of `package` (RFC 9591
/// §5.4); a signer the group does not know has no valid share.
fn share_verifies<C: Ciphersuite>(
    pkp: &frost_core::keys::PublicKeyPackage<C>,
    identifier: frost_core::Identifier<C>,
    share: &SignatureShare<C>,
    package: &SigningPackage<C>,
) -> bool {
    pkp.verifying_shares().get(&identifier).is_some_and(|vk| {
        frost_core::verify_signature_share(identifier, vk, share, package, pkp.verifying_key())
            .is_ok()
    })
}
