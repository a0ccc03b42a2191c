//! A DistKV node.
//!
//! * [`state`] — the pure state machine (tree, ticks, apply rules, event
//!   log). No tokio, no clock, no I/O: `distkv-replay` uses it offline.
//! * the async shell around it: the TCP client-protocol server and a client.

#![warn(missing_docs)]

pub mod addr;
pub mod client;
pub mod cluster;
pub mod config;
pub mod persist;
pub mod pyfiles;
pub mod server;
pub mod state;
pub mod wire;
