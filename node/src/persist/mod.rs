//! Durable history: the node's data directory.
//!
//! * [`meta`] — identity and tick reservation.

pub mod meta;
