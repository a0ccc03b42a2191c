//! Snapshot files (full state, compressed). Empty until the durable-history
//! issue: nothing here reads or writes files yet.

#![warn(missing_docs)]
