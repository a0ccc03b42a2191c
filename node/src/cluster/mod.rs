//! The cluster: how nodes replicate to each other without a master.
//!
//! * [`bus`] — the transport trait; [`mqtt`] (embedded broker mesh, or one
//!   external broker) and [`mem`] (seeded, fault-injecting, for tests)
//!   implement it; [`gate`] cuts a node off any bus (partition tests).
//! * [`msg`] — our server-to-server messages on `update` and `info`.
//! * [`actor`] — the deterministic housekeeper election (pure; time is
//!   passed in).
//! * [`core`] — the replication protocol (pure): broadcast, repair, split
//!   recovery, the delete actor.
//! * [`node`] — the async driver running a `Core` against a bus and a
//!   server, and state transfer for joining nodes.

pub mod actor;
pub mod bus;
pub mod core;
pub mod gate;
pub mod mem;
pub mod mqtt;
pub mod msg;
pub mod node;
