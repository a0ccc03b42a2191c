//! A DistKV node: the async shell around the pure core.
//!
//! * [`node`] — the one builder of a running node (recover, writer, load,
//!   readiness, bus, core, serve, flush).
//! * [`commit`] — the one way in: every change, whatever road it comes
//!   by, is bounded, checked, applied and announced there.
//! * [`server`] — the TCP client-protocol server.
//! * [`bus`] — the transport between nodes (a trait; MQTT and test
//!   implementations live in [`cluster`]).
//! * [`view`] — what the cluster protocol reports to the server.
//! * [`cluster`] — the bus (MQTT) and the driver running the replication
//!   protocol against it.
//! * [`persist`] — the writer thread keeping the data directory.
//! * [`config`] — DistKV's configuration keys.
//! * [`rules`] — types and codecs: checks and conversion of values.
//!
//! The pure parts live in `distkv-core` (state machine, protocol core,
//! files) and the client protocol in `distkv-client`; [`state`],
//! [`pyfiles`], [`client`] and [`wire`] re-export them.

#![warn(missing_docs)]

pub use distkv_client::{auth, client, errors, login, raw, tls, wire};
pub use distkv_core::{pyfiles, state};
pub mod addr;
pub mod bus;
pub mod cluster;
pub mod commit;
pub mod config;
pub mod node;
pub mod persist;
pub mod rules;
pub mod server;
pub mod view;
