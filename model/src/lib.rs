//! The DistKV data model, shared by the node, the file formats and the tools.
//!
//! Everything here is plain data and pure functions: [`Value`] and [`Path`]
//! with their msgpack encoding ([`codec`]), text syntax ([`pathfmt`]) and
//! Python `repr()` ([`repr`]), their serde form for our own formats
//! ([`serial`]), the budget every stored change keeps
//! ([`budget`]), change [`Chain`]s, tick [`RangeSet`]s and
//! [`UpdateEvent`]s. No I/O, no clocks, no async.

#![warn(missing_docs)]

pub mod budget;
pub mod chain;
pub mod codec;
pub mod cursor;
pub mod event;
pub mod fast;
pub mod hex;
pub mod hint;
pub mod packed;
pub mod path;
pub mod pathfmt;
pub mod ranges;
pub mod repr;
pub mod serial;
pub mod shared_str;
#[cfg(any(test, feature = "strategies"))]
pub mod strategies;
#[cfg(test)]
mod testutil;
pub mod value;

pub use chain::{Chain, Link, NameNumbers, NodeName, RecentNames};
pub use event::UpdateEvent;
pub use packed::{Packed, ValueRef};
pub use path::{Path, PathStrings};
pub use ranges::{NodeSet, RangeSet};
pub use shared_str::SharedStr;
pub use value::Value;
