//! The shape of a coordinator's signing package (RFC 9591 §5.2, threat V3),
//! checked before a node journals anything or computes a share.
//!
//! frost's deserializer is lenient where a signer must not be: it ignores
//! trailing bytes and, reading the commitments into a map, keeps the last of
//! duplicate identifiers. It also accepts any number of commitments from any
//! identifiers. A package that parses is therefore not yet one this node
//! should sign: it must name only members of the group, at least the
//! threshold of them and no more than there are, and be the one encoding of
//! what it says.

use std::collections::BTreeSet;

use frost_core::{Ciphersuite, Identifier, SigningPackage};

use crate::CoreError;

const FIELD: &str = "signing_package";

/// Refuses a signing package that is not exactly a set of group members'
/// commitments in canonical encoding (V3). `raw` is the package as received
/// and `package` what frost parsed from it; `members` are the group's
/// identifiers and `min_signers` its threshold.
///
/// Refused: more commitments than members, an identifier outside `members`,
/// fewer than `min_signers` commitments, and any `raw` that is not the
/// re-serialization of `package` (trailing bytes, duplicate or unsorted
/// identifiers, any other second spelling).
pub fn check_package_shape<C: Ciphersuite>(
    raw: &[u8],
    package: &SigningPackage<C>,
    members: &BTreeSet<Identifier<C>>,
    min_signers: u16,
) -> Result<(), CoreError> {
    let commitments = package.signing_commitments();
    // Size first: a package of a thousand commitments is refused on its count,
    // before anything is done per entry.
    if commitments.len() > members.len() {
        return Err(CoreError::invalid(
            FIELD,
            format!(
                "has {} commitments; the group has only {} members",
                commitments.len(),
                members.len()
            ),
        ));
    }
    if let Some(stranger) = commitments.keys().find(|id| !members.contains(id)) {
        return Err(CoreError::invalid(
            FIELD,
            format!(
                "names identifier {}, not a member of the group",
                describe(stranger)
            ),
        ));
    }
    if commitments.len() < usize::from(min_signers) {
        return Err(CoreError::invalid(
            FIELD,
            format!(
                "has {} commitments; the group needs at least {min_signers}",
                commitments.len()
            ),
        ));
    }
    let canonical = package
        .serialize()
        .map_err(|e| CoreError::Frost(format!("re-serializing the signing package: {e}")))?;
    if canonical != raw {
        return Err(CoreError::invalid(
            FIELD,
            format!(
                "is not in canonical encoding ({} bytes received, {} in canonical form): \
                 trailing bytes, or identifiers duplicated or out of order",
                raw.len(),
                canonical.len()
            ),
        ));
    }
    Ok(())
}

/// An identifier as people write it: the small integer it was made from when
/// it is one (in either byte order, so any suite prints its ids the same),
/// else its scalar in hex.
fn describe<C: Ciphersuite>(id: &Identifier<C>) -> String {
    let bytes = id.serialize();
    let n = bytes.len();
    let small = |n: u16| Identifier::<C>::try_from(n).ok().filter(|i| i == id);
    if n >= 2 {
        if bytes[..n - 2].iter().all(|b| *b == 0) {
            let v = u16::from_be_bytes([bytes[n - 2], bytes[n - 1]]);
            if small(v).is_some() {
                return v.to_string();
            }
        }
        if bytes[2..].iter().all(|b| *b == 0) {
            let v = u16::from_le_bytes([bytes[0], bytes[1]]);
            if small(v).is_some() {
                return v.to_string();
            }
        }
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use frost_core::keys::{KeyPackage, PublicKeyPackage};
    use frost_core::round1::SigningCommitments;
    use frost_secp256k1::Secp256K1Sha256 as C;
    use rand::thread_rng;

    use super::*;

    const MESSAGE: &[u8] = b"PERMAFROST/TEST/strict-packages";

    struct Group {
        keys: BTreeMap<Identifier<C>, KeyPackage<C>>,
        public: PublicKeyPackage<C>,
    }

    impl Group {
        /// A dealer-made 2-of-3 group (ids 1, 2, 3).
        fn two_of_three() -> Self {
            let (shares, public) = frost_core::keys::generate_with_dealer::<C, _>(
                3,
                2,
                frost_core::keys::IdentifierList::Default,
                &mut thread_rng(),
            )
            .expect("dealer");
            let keys = shares
                .into_iter()
                .map(|(id, s)| (id, KeyPackage::try_from(s).expect("key package")))
                .collect();
            Self { keys, public }
        }

        fn members(&self) -> BTreeSet<Identifier<C>> {
            self.public.verifying_shares().keys().copied().collect()
        }

        fn commitment(&self, id: u16) -> SigningCommitments<C> {
            let id = Identifier::try_from(id).expect("id");
            frost_core::round1::commit(self.keys[&id].signing_share(), &mut thread_rng()).1
        }

        /// A package with a fresh commitment for each of `signers`.
        fn package(&self, signers: &[u16]) -> SigningPackage<C> {
            let commitments = signers
                .iter()
                .map(|n| (Identifier::try_from(*n).expect("id"), self.commitment(*n)))
                .collect();
            SigningPackage::new(commitments, MESSAGE)
        }

        /// Parses `raw` the way a node does and runs the check on it.
        fn check(&self, raw: &[u8]) -> Result<(), CoreError> {
            let package = SigningPackage::<C>::deserialize(raw).expect("frost parses it");
            check_package_shape(raw, &package, &self.members(), 2)
        }
    }

    fn refused(result: Result<(), CoreError>, says: &str) {
        match result {
            Err(e @ CoreError::InvalidField { .. }) => {
                let text = e.to_string();
                assert!(text.contains("signing_package"), "{text}");
                assert!(text.contains(says), "{text:?} should say {says:?}");
            }
            other => panic!("expected a refusal saying {says:?}, got {other:?}"),
        }
    }

    #[test]
    fn v3_members_package_in_canonical_form_is_accepted() {
        let g = Group::two_of_three();
        for signers in [&[1, 2][..], &[1, 3], &[2, 3], &[1, 2, 3]] {
            let raw = g.package(signers).serialize().expect("serialize");
            g.check(&raw)
                .expect("a package of members' commitments passes");
        }
    }

    #[test]
    fn v3_non_member_identifier_is_refused_by_number() {
        let g = Group::two_of_three();
        let mut commitments = g.package(&[1]).signing_commitments().clone();
        commitments.insert(Identifier::try_from(99).expect("id"), g.commitment(2));
        let raw = SigningPackage::new(commitments, MESSAGE)
            .serialize()
            .expect("serialize");
        refused(
            g.check(&raw),
            "names identifier 99, not a member of the group",
        );
    }

    #[test]
    fn v3_a_thousand_commitments_for_three_members_are_refused() {
        let g = Group::two_of_three();
        let one = g.commitment(1);
        let commitments = (1..=1000u16)
            .map(|n| (Identifier::try_from(n).expect("id"), one))
            .collect();
        let raw = SigningPackage::new(commitments, MESSAGE)
            .serialize()
            .expect("serialize");
        refused(g.check(&raw), "has 1000 commitments; the group has only 3");
    }

    #[test]
    fn v3_fewer_commitments_than_the_threshold_are_refused() {
        let g = Group::two_of_three();
        let raw = g.package(&[2]).serialize().expect("serialize");
        refused(
            g.check(&raw),
            "has 1 commitments; the group needs at least 2",
        );
        let raw = g.package(&[]).serialize().expect("serialize");
        refused(g.check(&raw), "has 0 commitments");
    }

    #[test]
    fn v3_trailing_bytes_are_refused() {
        let g = Group::two_of_three();
        let mut raw = g.package(&[1, 2]).serialize().expect("serialize");
        raw.push(0);
        refused(g.check(&raw), "not in canonical encoding");
    }

    #[test]
    fn v3_duplicate_identifiers_are_refused() {
        let g = Group::two_of_three();
        let pair = g.package(&[1, 2]);
        let raw = pair.serialize().expect("serialize");
        // postcard writes the commitments as a count then fixed-size entries;
        // find them from packages of zero and one commitment over the same message.
        let empty = SigningPackage::<C>::new(BTreeMap::new(), MESSAGE)
            .serialize()
            .expect("serialize");
        let count_at = empty
            .iter()
            .zip(&raw)
            .position(|(a, b)| a != b)
            .expect("the commitment count differs");
        assert_eq!((empty[count_at], raw[count_at]), (0, 2));
        let entry = (raw.len() - empty.len()) / 2;
        let second = &raw[count_at + 1 + entry..count_at + 1 + 2 * entry];
        // The same commitment list with the entry for id 2 written twice.
        let mut forged = raw[..count_at].to_vec();
        forged.push(3);
        forged.extend_from_slice(&raw[count_at + 1..count_at + 1 + 2 * entry]);
        forged.extend_from_slice(second);
        forged.extend_from_slice(&raw[count_at + 1 + 2 * entry..]);
        // frost reads it, collapsing the duplicate, so the check has to see the bytes.
        let parsed = SigningPackage::<C>::deserialize(&forged).expect("frost parses it");
        assert_eq!(parsed, pair);
        refused(g.check(&forged), "not in canonical encoding");
    }

    #[test]
    fn v3_identifiers_are_described_as_numbers() {
        let id = |n: u16| Identifier::<C>::try_from(n).expect("id");
        assert_eq!(describe(&id(1)), "1");
        assert_eq!(describe(&id(99)), "99");
        assert_eq!(describe(&id(65535)), "65535");
        let derived = Identifier::<C>::derive(b"n1").expect("derive");
        assert_eq!(describe(&derived), hex::encode(derived.serialize()));
    }
}
