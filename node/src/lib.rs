//! A DistKV node: the async shell around the pure core.
//!
//! * [`server`] — the TCP client-protocol server.
//! * [`cluster`] — the bus (MQTT) and the driver running the replication
//!   protocol against it.
//! * [`persist`] — the writer thread keeping the data directory.
//! * [`config`] — DistKV's configuration keys.
//!
//! The pure parts live in `distkv-core` (state machine, protocol core,
//! files) and the client protocol in `distkv-client`; [`state`],
//! [`pyfiles`], [`client`] and [`wire`] re-export them.

#![warn(missing_docs)]

pub use distkv_client::{client, login, wire};
pub use distkv_core::{pyfiles, state};
pub mod addr;
pub mod cluster;
pub mod config;
pub mod persist;
pub mod server;
