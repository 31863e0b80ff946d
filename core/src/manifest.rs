//! The cluster manifest: which nodes exist, where, and their public identity keys.
//!
//! Every node and the coordinator hold the same manifest. Nodes use it to
//! check ceremony messages from their peers; the coordinator uses it to reach them.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::{identity::parse_ed25519_hex, CoreError, NodeId};

/// One signer node as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestNode {
    /// Node id (also in its certificate).
    pub id: NodeId,
    /// Region or failure domain; signers are spread across regions first.
    pub region: String,
    /// `host:port` of its gRPC endpoint.
    pub endpoint: String,
    /// The DNS name in its TLS certificate that clients verify.
    pub tls_server_name: String,
    /// Ed25519 identity key, hex.
    pub identity_key: String,
    /// X25519 encryption key, hex.
    pub encryption_key: String,
}

/// The whole cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterManifest {
    /// All signer nodes.
    pub nodes: Vec<ManifestNode>,
}

/// A validated manifest with parsed keys.
#[derive(Clone, Debug)]
pub struct Directory {
    nodes: BTreeMap<NodeId, DirectoryEntry>,
}

/// A validated manifest entry.
#[derive(Clone, Debug)]
pub struct DirectoryEntry {
    /// The entry as written.
    pub node: ManifestNode,
    /// Parsed Ed25519 identity key.
    pub identity_key: VerifyingKey,
    /// Parsed X25519 key bytes.
    pub encryption_key: Vec<u8>,
}

impl ClusterManifest {
    /// Parses JSON.
    pub fn from_json(text: &str) -> Result<Self, CoreError> {
        serde_json::from_str(text).map_err(|e| CoreError::invalid("manifest", e.to_string()))
    }

    /// Checks every entry and builds the lookup table.
    pub fn validate(&self) -> Result<Directory, CoreError> {
        let mut nodes = BTreeMap::new();
        for node in &self.nodes {
            let identity_key = parse_ed25519_hex("manifest identity_key", &node.identity_key)?;
            let encryption_key = hex::decode(&node.encryption_key)
                .ok()
                .filter(|k| k.len() == 32)
                .ok_or_else(|| {
                    CoreError::invalid(
                        "manifest encryption_key",
                        format!("node {}: expected 32 bytes of hex", node.id),
                    )
                })?;
            if node.region.is_empty() {
                return Err(CoreError::invalid(
                    "manifest region",
                    format!("node {} has an empty region", node.id),
                ));
            }
            let entry = DirectoryEntry {
                node: node.clone(),
                identity_key,
                encryption_key,
            };
            if nodes.insert(node.id.clone(), entry).is_some() {
                return Err(CoreError::invalid(
                    "manifest nodes",
                    format!("node {} listed twice", node.id),
                ));
            }
        }
        Ok(Directory { nodes })
    }
}

impl Directory {
    /// Looks a node up, refusing unknown ids.
    pub fn get(&self, id: &NodeId) -> Result<&DirectoryEntry, CoreError> {
        self.nodes
            .get(id)
            .ok_or_else(|| CoreError::refused(format!("node {id} is not in the cluster manifest")))
    }
    /// All entries in id order.
    pub fn iter(&self) -> impl Iterator<Item = &DirectoryEntry> {
        self.nodes.values()
    }
}
