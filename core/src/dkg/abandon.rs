//! A member's signed promise that it has not reported a refresh and never
//! will (THREATS K7): the one proof on which the others drop their pending
//! shares of that refresh.
//!
//! A refresh commits only with every participant's signed report, so once
//! one participant has promised never to report, no complete certificate can
//! exist, and a pending share of it can never be committed anywhere. Dropping
//! such a share therefore changes nobody's current share and cannot split the
//! group's epochs. The node takes the promise under the same lock as its
//! report, so it can never give both (docs/ceremony-spec.md, "Aborting an
//! unfinished refresh").

use frost_secp256k1::keys::PublicKeyPackage;

use super::identifier;
use crate::identity::{verify_ed25519, NodeIdentity};
use crate::manifest::Directory;
use crate::{CoreError, GroupName, NodeId};

/// Domain separation of a promise's signature.
pub const ABANDON_DOMAIN: &[u8] = b"PERMAFROST/REFRESH-ABANDON/v1";

/// A member's promise that it has not reported refresh `ceremony_id` of
/// `group` at `epoch` and never will.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbandonPromise {
    /// The group.
    pub group: GroupName,
    /// The epoch the member holds the group at (the refresh would move it to `epoch + 1`).
    pub epoch: u64,
    /// The refresh abandoned.
    pub ceremony_id: String,
    /// The member that promised.
    pub member: NodeId,
    /// Ed25519 signature by the member's identity key over [`abandon_message`].
    pub signature: Vec<u8>,
}

/// The bytes a promise signs:
/// `"PERMAFROST/REFRESH-ABANDON/v1" || u32be len || group || u64be epoch ||
/// u32be len || ceremony_id || u32be len || member`.
/// Every variable-length field is length-prefixed, so the encoding is injective.
pub fn abandon_message(
    group: &GroupName,
    epoch: u64,
    ceremony_id: &str,
    member: &NodeId,
) -> Vec<u8> {
    fn put(m: &mut Vec<u8>, bytes: &[u8]) {
        m.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        m.extend_from_slice(bytes);
    }
    let mut m = ABANDON_DOMAIN.to_vec();
    put(&mut m, group.as_str().as_bytes());
    m.extend_from_slice(&epoch.to_be_bytes());
    put(&mut m, ceremony_id.as_bytes());
    put(&mut m, member.as_str().as_bytes());
    m
}

impl AbandonPromise {
    /// `member`'s promise, signed with its identity key. The caller has
    /// checked, under the lock its report is taken under, that it has not
    /// reported and recorded that it never will.
    pub fn sign(
        identity: &NodeIdentity,
        group: &GroupName,
        epoch: u64,
        ceremony_id: &str,
        member: &NodeId,
    ) -> Self {
        let signature = identity
            .sign(&abandon_message(group, epoch, ceremony_id, member))
            .to_vec();
        Self {
            group: group.clone(),
            epoch,
            ceremony_id: ceremony_id.to_string(),
            member: member.clone(),
            signature,
        }
    }

    /// Checks that this is a valid promise about refresh `ceremony_id` of
    /// `group` at `epoch`, by one of `participants`, signed with the identity
    /// key `directory` gives that member. Each refusal names what is wrong.
    pub fn check(
        &self,
        directory: &Directory,
        group: &GroupName,
        epoch: u64,
        ceremony_id: &str,
        participants: &[NodeId],
    ) -> Result<(), CoreError> {
        if self.group != *group {
            return Err(CoreError::refused(format!(
                "the promise is about key group {}, not {group}",
                self.group
            )));
        }
        if self.ceremony_id != ceremony_id {
            return Err(CoreError::refused(format!(
                "the promise abandons another refresh than {ceremony_id}"
            )));
        }
        if self.epoch != epoch {
            return Err(CoreError::refused(format!(
                "the promise was made at epoch {} of {group}, not {epoch}",
                self.epoch
            )));
        }
        if !participants.contains(&self.member) {
            return Err(CoreError::refused(format!(
                "{} takes no part in refresh {ceremony_id} of {group}; only a participant's promise counts",
                self.member
            )));
        }
        let key = directory.get(&self.member)?.identity_key;
        let message = abandon_message(&self.group, self.epoch, &self.ceremony_id, &self.member);
        if !verify_ed25519(&key, &message, &self.signature) {
            return Err(CoreError::refused(format!(
                "the promise to abandon refresh {ceremony_id} of {group} is not signed by {}'s identity key",
                self.member
            )));
        }
        Ok(())
    }
}

/// The members of `members` (in identifier order) that take part in the
/// refresh whose public key package is `package`: those it holds a verifying
/// share for.
pub fn participants_of(members: &[NodeId], package: &PublicKeyPackage) -> Vec<NodeId> {
    members
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            identifier(*i).is_ok_and(|id| package.verifying_shares().contains_key(&id))
        })
        .map(|(_, m)| m.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use frost_secp256k1::keys::{generate_with_dealer, IdentifierList};

    use super::*;
    use crate::manifest::{ClusterManifest, ManifestNode};

    fn node(s: &str) -> NodeId {
        NodeId::new(s).expect("id")
    }

    fn group() -> GroupName {
        GroupName::new("warm-1").expect("name")
    }

    fn setup() -> (Vec<(NodeId, NodeIdentity)>, Directory) {
        let mut rng = rand::thread_rng();
        let ids: Vec<(NodeId, NodeIdentity)> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| (node(n), NodeIdentity::generate(&mut rng)))
            .collect();
        let manifest = ClusterManifest {
            nodes: ids
                .iter()
                .map(|(n, id)| ManifestNode {
                    id: n.clone(),
                    region: "r1".into(),
                    endpoint: "127.0.0.1:1".into(),
                    tls_server_name: format!("{n}.node.permafrost"),
                    identity_key: hex::encode(id.identity_key().as_bytes()),
                    encryption_key: hex::encode(id.encryption_public_key()),
                })
                .collect(),
        };
        let dir = manifest.validate().expect("directory");
        (ids, dir)
    }

    fn everyone() -> Vec<NodeId> {
        vec![node("n1"), node("n2"), node("n3")]
    }

    #[test]
    fn k7_promise_encoding_is_pinned() {
        let m = abandon_message(&group(), 3, "0011223344556677", &node("n2"));
        let mut expected = b"PERMAFROST/REFRESH-ABANDON/v1".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 6]);
        expected.extend_from_slice(b"warm-1");
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]);
        expected.extend_from_slice(&[0, 0, 0, 16]);
        expected.extend_from_slice(b"0011223344556677");
        expected.extend_from_slice(&[0, 0, 0, 2]);
        expected.extend_from_slice(b"n2");
        assert_eq!(m, expected);
        // Length prefixes keep fields apart: moving a byte between the
        // ceremony id and the member changes the message.
        assert_ne!(
            abandon_message(&group(), 3, "ab", &node("c1")),
            abandon_message(&group(), 3, "a", &node("bc1"))
        );
    }

    #[test]
    fn k7_promise_verifies_for_its_refresh_only() {
        let (ids, dir) = setup();
        let (n2, identity) = &ids[1];
        let p = AbandonPromise::sign(identity, &group(), 3, "r-1", n2);
        p.check(&dir, &group(), 3, "r-1", &everyone())
            .expect("valid promise");

        let other_group = GroupName::new("warm-2").expect("name");
        let refusals = [
            p.check(&dir, &other_group, 3, "r-1", &everyone()),
            p.check(&dir, &group(), 4, "r-1", &everyone()),
            p.check(&dir, &group(), 3, "r-2", &everyone()),
            p.check(&dir, &group(), 3, "r-1", &[node("n1"), node("n3")]),
        ];
        for (i, r) in refusals.into_iter().enumerate() {
            let e = r.expect_err("refused");
            assert!(matches!(e, CoreError::Refused(_)), "case {i}: {e}");
        }
        let e = p
            .check(&dir, &group(), 3, "r-1", &[node("n1"), node("n3")])
            .expect_err("not a participant");
        assert!(e.to_string().contains("n2 takes no part"), "{e}");
    }

    #[test]
    fn k7_promise_tampered_or_signed_by_another_is_refused() {
        let (ids, dir) = setup();
        let p = AbandonPromise::sign(&ids[1].1, &group(), 3, "r-1", &ids[1].0);
        // Any field changed after signing.
        let mut tampered = p.clone();
        tampered.epoch = 4;
        let e = tampered
            .check(&dir, &group(), 4, "r-1", &everyone())
            .expect_err("tampered epoch");
        assert!(e.to_string().contains("not signed by n2"), "{e}");
        let mut renamed = p.clone();
        renamed.member = node("n3");
        renamed
            .check(&dir, &group(), 3, "r-1", &everyone())
            .expect_err("another member's name");
        // n1 signing a promise in n3's name.
        let forged = AbandonPromise::sign(&ids[0].1, &group(), 3, "r-1", &ids[2].0);
        let e = forged
            .check(&dir, &group(), 3, "r-1", &everyone())
            .expect_err("forged");
        assert!(e.to_string().contains("n3's identity key"), "{e}");
        let mut cut = p.clone();
        cut.signature.truncate(10);
        cut.check(&dir, &group(), 3, "r-1", &everyone())
            .expect_err("short signature");
        // A node missing from the manifest.
        let mut stranger = p;
        stranger.member = node("n9");
        stranger
            .check(&dir, &group(), 3, "r-1", &[node("n9")])
            .expect_err("unknown node");
    }

    #[test]
    fn k7_participants_come_from_the_refresh_package() {
        let mut rng = rand::thread_rng();
        let (_, full) =
            generate_with_dealer(3, 2, IdentifierList::Default, &mut rng).expect("dealer");
        assert_eq!(participants_of(&everyone(), &full), everyone());
        // A removal's package: identifiers 1 and 3 only (n2 removed).
        let ids = [identifier(0).expect("id"), identifier(2).expect("id")];
        let (_, removal) =
            generate_with_dealer(2, 2, IdentifierList::Custom(&ids), &mut rng).expect("dealer");
        assert_eq!(
            participants_of(&everyone(), &removal),
            vec![node("n1"), node("n3")]
        );
    }
}
