//! The check an event from outside passes before the core applies it.
//!
//! The core applies other nodes' events itself (in the replication
//! protocol) and so does the loader of files; the node's commit path
//! (`distkv_node::commit`) decides whether they may be applied. It does so
//! through [`Admit`], which keeps the decision out of this crate: the core
//! asks, the node answers. [`Open`] admits everything (simulations,
//! offline tools).
//!
//! Two questions, at two granularities, so a refusal costs what it should:
//! [`Admit::batch`] once per message or file (can the node take events at
//! all now — its history writable, not too much waiting for the disk?) and
//! [`Admit::event`] once per event (may this event be applied: the
//! node's checks, such as authorisation).

use distkv_model::UpdateEvent;

use crate::state::State;

/// Why events are not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not now (the history cannot be written, or too much waits for the
    /// disk): the events are left missing and asked for again later.
    #[error("{0}")]
    Later(String),
    /// Never: a check refused the event. It is dropped (an event of
    /// another node, its tick still missing here, may be offered again; a
    /// check that refused it refuses it again).
    #[error("{0}")]
    Denied(String),
}

/// Decides whether events from outside may be applied.
pub trait Admit {
    /// Whether the node takes events at all now; asked once per message
    /// or file, before its events.
    fn batch(&self, st: &State) -> Result<(), Refused>;
    /// Whether `ev` may be applied; asked for each event, before it is
    /// (only while [`Admit::batch`] admits).
    fn event(&self, st: &State, ev: &UpdateEvent) -> Result<(), Refused>;
}

/// Admits everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Open;

impl Admit for Open {
    fn batch(&self, _: &State) -> Result<(), Refused> {
        Ok(())
    }

    fn event(&self, _: &State, _: &UpdateEvent) -> Result<(), Refused> {
        Ok(())
    }
}
