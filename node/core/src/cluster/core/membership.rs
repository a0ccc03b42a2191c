//! Membership: the housekeeper election's pings and what it decides, and
//! which nodes are alive.

use super::*;

impl Core {
    pub(super) fn on_ping(&mut self, st: &mut State, now: u64, payload: &[u8]) {
        let Ok(v) = codec::decode_with(payload, BUS_LIMITS) else {
            tracing::warn!("ignoring an undecodable ping");
            return;
        };
        let Some(msg) = ActorMsg::from_value(&v) else {
            tracing::warn!("ignoring a malformed ping");
            return;
        };
        if let ActorMsg::Ping { node, value, .. } = &msg {
            if *node != self.me {
                self.heard.insert(node.clone(), now);
            }
            let addr = v.get("addr").and_then(Value::as_str).map(str::to_string);
            if let (Some(a), false) = (&addr, *node == self.me) {
                self.check_addr(node, a);
            }
            self.peers.insert(node.clone(), (*value, addr));
            if let (Some((tock, tick)), false) = (value, *node == self.me) {
                if *tick > MAX_COUNTER || *tock > MAX_COUNTER {
                    tracing::warn!(%node, "ignoring a ping with an impossible tick or tock");
                    return;
                }
                st.tock().seen(*tock);
                st.saw_node_tick(node, *tick);
            }
        }
        self.actor.set_value(ping_value(st));
        let (msgs, events) = self.actor.handle(now, &msg, &mut self.rng);
        self.publish_actor(msgs);
        self.actor_events(st, now, events);
        self.check_missing(st, now);
    }

    pub(super) fn actor_events(&mut self, st: &mut State, now: u64, events: Vec<ActorEvent>) {
        for e in events {
            match e {
                ActorEvent::Tag => {
                    tracing::debug!(node = %self.me, "housekeeper: broadcasting ticks");
                    self.ticks_at = Some(now);
                }
                ActorEvent::Recover {
                    prio,
                    local,
                    remote,
                } => {
                    tracing::info!(prio, ?local, ?remote, "healed split: exchanging ticks");
                    let at = now + self.cfg.ping.gap * prio as u64 / 8 + self.jitter(50);
                    self.ticks_at = Some(self.ticks_at.map_or(at, |t| t.min(at)));
                }
                ActorEvent::GoodNode { node } => self.maybe_fetch(st, now, node),
                ActorEvent::NameCollision => self.notices.push(Notice::NameCollision),
                ActorEvent::Ping { .. } | ActorEvent::Untag | ActorEvent::Detag => {}
            }
        }
    }

    /// Whether `node` was heard from within the last two cycles.
    /// The nodes heard within the last two cycles (this one included).
    pub fn live_nodes(&self, now: u64) -> Vec<NodeName> {
        let mut live: Vec<NodeName> = self
            .heard
            .keys()
            .filter(|n| self.alive(n, now))
            .cloned()
            .collect();
        live.push(self.me.clone());
        live
    }

    pub(super) fn alive(&self, node: &NodeName, now: u64) -> bool {
        let window = 2 * self.cfg.ping.cycle;
        self.heard.get(node).is_some_and(|&t| t + window >= now)
    }
}

/// A node's ping value: `(tock, tick)` once it is ready.
pub(super) fn ping_value(st: &State) -> PingValue {
    st.tick().map(|t| (st.tock().peek(), t))
}
