//! Durable history: the node's data directory.
//!
//! The files and their recovery are the pure core's
//! ([`distkv_core::persist`], re-exported here); [`durable`] is the writer
//! thread that keeps them up to date while the node runs, [`index`] its
//! part that keeps the history index current.

pub use distkv_core::persist::{load, lock, meta, recover, snap};
pub mod durable;
pub mod index;
