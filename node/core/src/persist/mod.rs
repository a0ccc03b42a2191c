//! The data directory's files.
//!
//! * [`lock`] — one node process per directory.
//! * [`meta`] — identity and tick reservation.
//! * [`snap`] — snapshots of the state.
//! * [`load`] — loading files before serving (`-l`).
//! * [`recover`] — rebuilding the state from the files at start (the
//!   files read on a thread of their own, `ahead`).
//!
//! The node's writer thread, which keeps the files up to date while it
//! runs, is `distkv_node::persist::durable`.

mod ahead;
pub mod load;
pub mod lock;
pub mod meta;
pub mod recover;
pub mod snap;

pub use ahead::{spawn_with, Spent};
