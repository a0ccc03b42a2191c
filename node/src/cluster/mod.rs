//! The cluster: how nodes replicate to each other without a master.
//!
//! * [`bus`] — the transport trait; [`mqtt`] (embedded broker mesh, or one
//!   external broker) and [`mem`] (seeded, fault-injecting, for tests)
//!   implement it.
//! * [`actor`] — the deterministic housekeeper election (pure; time is
//!   passed in).

pub mod actor;
pub mod bus;
pub mod core;
pub mod mem;
pub mod mqtt;
pub mod msg;
pub mod node;
