//! The cluster: how nodes replicate to each other without a master.
//!
//! * [`mqtt`] (embedded broker mesh, or one external broker) and `mem`
//!   (seeded, fault-injecting, for tests) implement the transport trait
//!   [`crate::bus::Bus`]; `gate` cuts a node off any bus (partition tests). Both
//!   test helpers are built only with the `test-support` feature.
//! * [`msg`] — our server-to-server messages on `update` and `info`.
//! * [`actor`] — the deterministic housekeeper election (pure; time is
//!   passed in), and [`core`] — the replication protocol (pure):
//!   broadcast, repair, split recovery, the delete actor. Both live in
//!   `distkv-core` with [`msg`] and are re-exported here.
//! * [`node`] — the async driver running a `Core` against a bus and the
//!   node's store (its commit path), and state transfer for joining nodes.
//!
//! Nothing here knows the client server: the driver works on the
//! [`crate::commit::Store`] and reports to a [`crate::view::ClusterView`].

pub use distkv_core::cluster::{actor, core, msg};
#[cfg(any(test, feature = "test-support"))]
pub mod gate;
#[cfg(any(test, feature = "test-support"))]
pub mod mem;
pub mod mqtt;
pub mod node;
