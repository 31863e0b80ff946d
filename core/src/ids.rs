//! Validated identifiers: node ids, key-group names, request ids, tiers and roles.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::preview;
use crate::CoreError;

fn check_name(kind: &'static str, value: &str, max: usize) -> Result<(), CoreError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(CoreError::InvalidField {
            field: kind,
            reason: format!(
                "{:?} must be 1..={max} characters of a-z, 0-9, '-' or '_'",
                preview(value)
            ),
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, CoreError> {
                let value = value.into();
                check_name($kind, &value, $max)?;
                Ok(Self(value))
            }
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = CoreError;
            fn try_from(value: String) -> Result<Self, CoreError> {
                Self::new(value)
            }
        }
        impl std::str::FromStr for $name {
            type Err = CoreError;
            fn from_str(value: &str) -> Result<Self, CoreError> {
                Self::new(value)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}

name_type!(
    /// A signer node's id, as written in its certificate and the cluster manifest.
    NodeId, "node id", 64
);
name_type!(
    /// A key group's name, unique in the cluster (e.g. `warm-1`).
    GroupName, "key group", 64
);

/// A withdrawal request id chosen by the custody service; printable ASCII, no spaces.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId(String);

impl RequestId {
    /// Validates and wraps `value`.
    pub fn new(value: impl Into<String>) -> Result<Self, CoreError> {
        let value = value.into();
        if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CoreError::InvalidField {
                field: "request id",
                reason: format!(
                    "{:?} must be 1..=128 printable ASCII characters without spaces",
                    preview(&value)
                ),
            });
        }
        Ok(Self(value))
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for RequestId {
    type Error = CoreError;
    fn try_from(value: String) -> Result<Self, CoreError> {
        Self::new(value)
    }
}
impl std::str::FromStr for RequestId {
    type Err = CoreError;
    fn from_str(value: &str) -> Result<Self, CoreError> {
        Self::new(value)
    }
}
impl From<RequestId> for String {
    fn from(value: RequestId) -> String {
        value.0
    }
}
impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A wallet tier. Tiers are separate key groups on separate node sets.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Small, automated withdrawals.
    Hot,
    /// Medium withdrawals, limits and optional approvals.
    Warm,
    /// Treasury: approvals, time-locks, allowlisted destinations, sealed nodes.
    Cold,
}

impl Tier {
    /// The tier's one-byte code in the canonical encoding; never renumber.
    pub fn code(self) -> u8 {
        match self {
            Tier::Hot => 1,
            Tier::Warm => 2,
            Tier::Cold => 3,
        }
    }
    /// Inverse of [`Tier::code`].
    pub fn from_code(code: u8) -> Result<Self, CoreError> {
        match code {
            1 => Ok(Tier::Hot),
            2 => Ok(Tier::Warm),
            3 => Ok(Tier::Cold),
            other => Err(CoreError::InvalidField {
                field: "tier",
                reason: format!("unknown tier code {other}"),
            }),
        }
    }
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Hot => "hot",
            Tier::Warm => "warm",
            Tier::Cold => "cold",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Tier {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "hot" => Ok(Tier::Hot),
            "warm" => Ok(Tier::Warm),
            "cold" => Ok(Tier::Cold),
            other => Err(CoreError::InvalidField {
                field: "tier",
                reason: format!("{:?} is not one of hot, warm, cold", preview(other)),
            }),
        }
    }
}

/// The role a principal's certificate grants. Identity comes from mTLS only.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A signer node.
    Node,
    /// The coordinator (untrusted for safety).
    Coordinator,
    /// The custody service that requests withdrawals.
    Custody,
    /// A key-ceremony or cluster operator.
    Operator,
}

impl Role {
    /// Lower-case name, as written in certificates.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Coordinator => "coordinator",
            Role::Custody => "custody",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "node" => Ok(Role::Node),
            "coordinator" => Ok(Role::Coordinator),
            "custody" => Ok(Role::Custody),
            "operator" => Ok(Role::Operator),
            other => Err(CoreError::InvalidField {
                field: "role",
                reason: format!(
                    "{:?} is not one of node, coordinator, custody, operator",
                    preview(other)
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_bad_characters() {
        assert!(NodeId::new("n1").is_ok());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("N1").is_err());
        assert!(NodeId::new("a b").is_err());
        assert!(GroupName::new("x".repeat(65)).is_err());
        assert!(RequestId::new("wd-2026-0001").is_ok());
        assert!(RequestId::new("has space").is_err());
    }

    #[test]
    fn v4_errors_show_a_prefix_not_the_whole_value() {
        let long = "x".repeat(900_000);
        for err in [
            RequestId::new(long.clone()).expect_err("too long"),
            NodeId::new(long.clone()).expect_err("too long"),
            GroupName::new(long.clone()).expect_err("too long"),
            long.parse::<Tier>().expect_err("no such tier"),
            long.parse::<Role>().expect_err("no such role"),
        ] {
            let text = err.to_string();
            assert!(text.len() < 200, "{} bytes: {}", text.len(), preview(&text));
            assert!(text.contains("(900000 bytes)"), "{text}");
        }
        let err = RequestId::new("has space").expect_err("space");
        assert!(err.to_string().contains("\"has space\""), "{err}");
    }
}
