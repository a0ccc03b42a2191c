//! `distkv-replay`: offline tools over a distkv node's history files.
//!
//! A node leaves a history behind: event-log segments (every change it
//! applied, in order, with periodic state records) and snapshots (its whole
//! state at one log position), in a data directory; DistKV-py leaves plain
//! msgpack save and log files. This crate reads them without a running
//! node and answers five questions:
//!
//! * [`dump`] — what exactly is in these files?
//! * [`audit`] — are they intact and consistent (checksums, framing, tick
//!   continuity, duplicates, chains), and which conflicts were resolved,
//!   with which value losing?
//! * [`restore`] — what did the state look like at a tock, a time or just
//!   after one event? (Written as a snapshot a node can load.)
//! * [`diff`] — how do two states differ (snapshots, data directories or
//!   live nodes)?
//! * [`history`] — how did one key (or subtree) change over time?
//!
//! Layers, bottom up: [`source`] recognises inputs, sorts them into
//! per-node histories and reads their records (damage is a finding, not an
//! error); [`engine`] replays histories through the node's own pure state
//! machine ([`distkv_core::state::State`]) — never a second implementation
//! of the apply rules — and lets an observer watch every outcome; the
//! command modules build reports; [`output`] writes them as text, JSON or
//! YAML; [`cli`] is the command line. Nothing here writes to an input.

#![warn(missing_docs)]

mod ahead;
pub mod audit;
pub mod cli;
pub mod diff;
pub mod dump;
pub mod engine;
pub mod error;
pub mod history;
pub mod output;
pub mod progress;
pub mod restore;
pub mod source;
pub mod time;

pub use error::{Error, Result};
