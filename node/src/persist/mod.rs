//! Durable history: the node's data directory.
//!
//! * [`meta`] — identity and tick reservation.
//! * [`snap`] — snapshots of the state.

pub mod meta;
pub mod snap;
