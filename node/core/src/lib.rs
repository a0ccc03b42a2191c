//! DistKV's pure core, shared by the node and `distkv-replay`.
//!
//! * [`admit`] — the check other nodes' events and loaded files pass
//!   before the core applies them (the node's commit path answers it).
//! * [`state`] — the state machine: tree, ticks, apply rules, event log.
//! * [`cluster`] — the replication protocol (broadcast, repair, split
//!   recovery), the housekeeper election, and the server-to-server
//!   messages. Time is passed in; nothing here sends or sleeps.
//! * [`persist`] — the data directory's files: lock, metadata, snapshots,
//!   loading, and recovery at start.
//! * [`pyfiles`] — DistKV-py's saved-state and log files.
//!
//! No async runtime and no network: the crate does not depend on tokio or
//! the MQTT crates, so the compiler keeps the core pure and replaying a
//! node's files offline runs the same code as the node.

#![warn(missing_docs)]

pub mod admit;
pub mod cluster;
pub mod persist;
pub mod pyfiles;
pub mod state;
