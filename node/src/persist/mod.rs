//! Durable history: the node's data directory.
//!
//! * [`meta`] — identity and tick reservation.
//! * [`snap`] — snapshots of the state.
//! * [`load`] — loading files before serving (`-l`).
//! * [`durable`] — recovery at start and the writer thread.

pub mod durable;
pub mod load;
pub mod meta;
pub mod snap;
