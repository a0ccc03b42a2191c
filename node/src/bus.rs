//! The message bus between nodes.
//!
//! A [`Bus`] carries opaque payloads on MQTT-style topics (`a/b/c`; filters
//! may use `+` for one level and a trailing `#` for any rest). Delivery is
//! at most once and unordered across publishers (MQTT QoS 0): messages may
//! be lost, and the cluster layer repairs losses by anti-entropy. Messages
//! from one publisher to one subscriber arrive in publishing order unless
//! the bus is a fault-injecting test bus.
//!
//! **Own messages:** a subscriber receives every matching message, its own
//! node's publications included, just as an MQTT broker delivers a client's
//! publications to that client's own matching subscriptions. The bus does
//! not mark them; every cluster message names its sender, and the cluster
//! layer recognises its own by that name.

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

/// One message taken off the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The full topic, e.g. `:distkv/update`.
    pub topic: String,
    /// The payload, as published.
    pub payload: Bytes,
}

/// How many undelivered messages a subscription holds before the bus drops
/// newer ones (and counts them in [`Bus::dropped`]).
pub const SUBSCRIPTION_QUEUE: usize = 16 * 1024;

/// Publish/subscribe transport between nodes.
pub trait Bus: Send + Sync + 'static {
    /// Publishes `payload` on `topic`. Never blocks; a message that cannot
    /// be sent (no connection, full queue) is dropped and counted.
    fn publish(&self, topic: &str, payload: Bytes);

    /// Subscribes to `filter`. The receiver gets every later message on a
    /// matching topic, this node's own included (see the module docs), in
    /// a queue of [`SUBSCRIPTION_QUEUE`] messages; when it is full, further
    /// messages for it are dropped and counted. Dropping the receiver ends
    /// the subscription.
    fn subscribe(&self, filter: &str) -> mpsc::Receiver<Delivery>;

    /// A counter that increases whenever a link to another node or broker
    /// is (re-)established: after a partition heals, the cluster layer
    /// starts an anti-entropy round at once instead of waiting for its
    /// timer.
    fn links(&self) -> watch::Receiver<u64>;

    /// Messages dropped so far (full queues, publishing while unconnected).
    fn dropped(&self) -> u64;

    /// The addresses (`host:port`) at which this node's bus reached the
    /// broker of node `node` (mesh mode; none otherwise). A node whose
    /// advertised client address cannot be reached from here may still be
    /// reached at the host of one of these.
    fn reached_at(&self, _node: &str) -> Vec<String> {
        Vec::new()
    }
}

/// Why `filter` is not an MQTT topic filter a broker serves, if it is not
/// one: empty, a NUL, `#` other than as the last level, `+` or `#` within a
/// level, or a leading `$` (reserved for the broker's own topics; rumqttd
/// drops a client that asks for one).
pub fn filter_error(filter: &str) -> Option<&'static str> {
    let levels = filter.split('/').count();
    for (i, level) in filter.split('/').enumerate() {
        match level {
            "+" => {}
            "#" if i + 1 < levels => return Some("'#' is only allowed as the last level"),
            "#" => {}
            _ if level.contains(['+', '#']) => {
                return Some("'+' and '#' are only allowed as whole levels")
            }
            _ => {}
        }
    }
    shared_topic_error(filter)
}

/// Why `topic` is not an MQTT topic one may publish on, if it is not one:
/// empty, a NUL, a wildcard (`+`, `#`) or a leading `$` (the broker's).
pub fn topic_error(topic: &str) -> Option<&'static str> {
    if topic.contains(['+', '#']) {
        return Some("wildcards ('+', '#') are only allowed in filters");
    }
    shared_topic_error(topic)
}

fn shared_topic_error(t: &str) -> Option<&'static str> {
    if t.is_empty() {
        Some("empty")
    } else if t.contains('\0') {
        Some("NUL is not allowed")
    } else if t.starts_with('$') {
        Some("topics starting with '$' are the broker's")
    } else if t.len() > usize::from(u16::MAX) {
        Some("longer than 65 535 bytes")
    } else {
        None
    }
}

/// Whether `topic` matches the MQTT topic filter `filter`.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{filter_error, topic_error, topic_matches};

    #[test]
    fn filters_and_topics_a_broker_serves() {
        for ok in ["#", "+", "a/+/b", "a/#", ":distkv/update", "a//b", "/"] {
            assert_eq!(filter_error(ok), None, "{ok:?}");
        }
        for bad in ["", "a/#/b", "a+/b", "a/b#", "$SYS/#", "$share/g/a", "a\0b"] {
            assert!(filter_error(bad).is_some(), "{bad:?}");
        }
        assert!(filter_error(&"a".repeat(65_536)).is_some());
        assert_eq!(topic_error(":distkv/x/y"), None);
        for bad in ["", "a/+", "#", "a/b#", "$SYS/x", "a\0"] {
            assert!(topic_error(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn filters_match_like_mqtt() {
        assert!(topic_matches(":distkv/#", ":distkv/update"));
        assert!(topic_matches(":distkv/+", ":distkv/ping"));
        assert!(topic_matches("#", "a/b/c"));
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(!topic_matches(":distkv/update", ":distkv/info"));
        assert!(
            topic_matches("a/#", "a"),
            "a trailing # matches the parent too"
        );
    }
}
