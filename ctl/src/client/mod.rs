//! Talking to the coordinator over mTLS gRPC as a custody service or an
//! operator, and to one signer node's `NodeAdmin` service as an operator.
//!
//! A [`Connection`] is resolved either from explicit flags or from a
//! `cluster.json` written by `permafrost-sim up` ([`ClusterFile`]); the RPC
//! helpers here are shared by the CLI and the simulations so both speak to
//! the cluster the same way. Every failed call becomes a
//! [`CtlError`](crate::CtlError) through
//! [`CtlError::from_status`](crate::CtlError::from_status). How results are shown lives in [`crate::display`]
//! (re-exported here for the simulations).
//!
//! - [`cluster_file`]: the cluster file and what it lists.
//! - [`connection`]: flags → [`Connection`] → channel and service clients.
//! - [`ceremony`], [`custody`], [`node_admin`]: one module per gRPC service.
//! - [`signatures`]: signing requests and approvals, verifying FROST signatures
//!   and taproot groups' signed transactions.

pub mod ceremony;
pub mod cluster_file;
pub mod connection;
pub mod custody;
pub mod node_admin;
pub mod signatures;

pub use self::ceremony::{
    abort_refresh, clear_exclusion, cluster_status, create_key_group, find_key_group,
    list_exclusions, list_key_groups, recover_key_group, refresh_key_group, repair_key_group,
    submit, Submitted,
};
pub use self::cluster_file::{
    ClusterFile, CoordinatorRef, CustodyCredentials, KeyGroupSummary, NodeRef, OperatorCredentials,
};
pub use self::connection::{ClientRole, Connection, DEFAULT_CALL_TIMEOUT};
pub use self::custody::{get_withdrawal, submit_approval, submit_withdrawal};
pub use self::node_admin::{node_status, seal_node, unseal_node};
pub use self::signatures::{
    sign_approval, sign_withdrawal, verify_signature, verify_signed, verify_signed_transaction,
};
pub use crate::cli::{ConnectionArgs, NodeConnectionArgs};
pub use crate::display::{
    describe_exclusion, describe_key_group, describe_node_status, describe_withdrawal, from_now,
    state_name, tier_name,
};
pub use crate::error::error_chain;
