//! The replication protocol's pure parts; the node drives them against a
//! bus (`distkv_node::cluster`).
//!
//! * [`msg`] — our server-to-server messages on `update` and `info`.
//! * [`actor`] — the deterministic housekeeper election (time is passed
//!   in).
//! * [`core`] — the replication protocol: broadcast, repair, split
//!   recovery, the delete actor.

pub mod actor;
pub mod core;
pub mod msg;
