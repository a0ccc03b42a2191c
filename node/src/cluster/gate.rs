//! A bus that can be cut off: fault injection for tests and benchmarks
//! over a real bus.
//!
//! [`Gate`] wraps another [`Bus`]. While closed, nothing this node publishes
//! leaves and nothing arrives — the node is cut off as by a network
//! partition, but keeps serving its clients. Opening it again counts as a
//! link coming back, as a real reconnect would.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::bus::{Bus, Delivery, SUBSCRIPTION_QUEUE};

/// A bus adapter that can partition its node from all others.
pub struct Gate {
    inner: Arc<dyn Bus>,
    open: Arc<AtomicBool>,
    links: watch::Sender<u64>,
}

impl Gate {
    /// Wraps `inner`, open. Call from within a tokio runtime.
    pub fn new(inner: Arc<dyn Bus>) -> Arc<Gate> {
        let (links, _) = watch::channel(0);
        let gate = Arc::new(Gate {
            inner,
            open: Arc::new(AtomicBool::new(true)),
            links,
        });
        // Real link changes of the inner bus count too.
        let mut inner_links = gate.inner.links();
        let weak = Arc::downgrade(&gate);
        tokio::spawn(async move {
            while inner_links.changed().await.is_ok() {
                let Some(g) = weak.upgrade() else { return };
                g.links.send_modify(|n| *n += 1);
            }
        });
        gate
    }

    /// Cuts the node off (`false`) or reconnects it (`true`).
    pub fn set_open(&self, open: bool) {
        let was = self.open.swap(open, Ordering::SeqCst);
        if open && !was {
            self.links.send_modify(|n| *n += 1);
        }
    }
}

impl Gate {
    /// Tells the protocol a link came back without cutting anything: the
    /// other side of a healed partition sees its peers reconnect too.
    pub fn link_up(&self) {
        self.links.send_modify(|n| *n += 1);
    }
}

impl Bus for Gate {
    fn publish(&self, topic: &str, payload: Bytes) {
        if self.open.load(Ordering::SeqCst) {
            self.inner.publish(topic, payload);
        }
    }

    fn subscribe(&self, filter: &str) -> mpsc::Receiver<Delivery> {
        let mut rx = self.inner.subscribe(filter);
        let (tx, out) = mpsc::channel(SUBSCRIPTION_QUEUE);
        let open = self.open.clone();
        tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                if open.load(Ordering::SeqCst) && tx.send(d).await.is_err() {
                    return;
                }
            }
        });
        out
    }

    fn links(&self) -> watch::Receiver<u64> {
        self.links.subscribe()
    }

    fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    fn reached_at(&self, node: &str) -> Vec<String> {
        self.inner.reached_at(node)
    }
}
