//! Durable history: the node's data directory.
//!
//! * [`lock`] — one node process per directory.
//! * [`meta`] — identity and tick reservation.
//! * [`snap`] — snapshots of the state.
//! * [`load`] — loading files before serving (`-l`).
//! * [`durable`] — recovery at start and the writer thread.

pub mod durable;
pub mod load;
pub mod lock;
pub mod meta;
pub mod snap;
