//! What the cluster protocol tells the rest of the node: its view (peers,
//! housekeeper) for `get_state`, and the nodes running now.
//!
//! The protocol driver (`cluster::node`) writes it, the server reads it;
//! neither knows the other.

use distkv_model::{NodeName, Value};
use parking_lot::Mutex;

/// The cluster protocol's latest report.
#[derive(Debug, Default)]
pub struct ClusterView {
    view: Mutex<Option<Value>>,
    /// The nodes running in the cluster now (heard recently), this one
    /// included once the cluster protocol runs.
    live: Mutex<Vec<NodeName>>,
}

impl ClusterView {
    /// Publishes the protocol's view and the nodes it hears.
    pub fn publish(&self, view: Value, live: Vec<NodeName>) {
        *self.view.lock() = Some(view);
        *self.live.lock() = live;
    }

    /// The protocol's view, if it runs.
    pub fn view(&self) -> Option<Value> {
        self.view.lock().clone()
    }

    /// Whether `node` was heard recently.
    pub fn is_live(&self, node: &str) -> bool {
        self.live.lock().iter().any(|n| &**n == node)
    }
}
