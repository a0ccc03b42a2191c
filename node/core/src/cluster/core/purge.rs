//! Purge: the delete actor, which lets the deleter group drop tombstones
//! every node has seen.

use super::*;

impl Core {
    pub(super) fn on_del(&mut self, st: &mut State, now: u64, payload: &[u8]) {
        let msg = codec::decode_with(payload, BUS_LIMITS)
            .ok()
            .and_then(|v| ActorMsg::from_value(&v));
        let Some(msg) = msg else {
            tracing::warn!("ignoring a malformed delete-actor message");
            return;
        };
        if let Some(n) = msg.sender().filter(|n| *n != &*self.me) {
            self.heard.insert(NodeName::from(n), now);
        }
        let (msgs, events) = self.purge.actor.handle(now, &msg, &mut self.rng);
        self.publish_del(msgs);
        self.del_events(st, now, events);
    }

    /// Reads the deleter group from `(None, "actor", "del")` when it
    /// changed: members take part in the delete actor, others only listen.
    pub(super) fn refresh_deleters(&mut self, st: &State) {
        let path = [
            Value::Nil,
            Value::str(DELETER_GROUP[0]),
            Value::str(DELETER_GROUP[1]),
        ];
        let Some(e) = st.entry(&path) else { return };
        if e.tock() == self.purge.seen_tock {
            return;
        }
        self.purge.seen_tock = e.tock();
        let nodes: Vec<NodeName> = deleter_names(e.data().as_deref())
            .map(NodeName::from)
            .collect();
        let member = nodes.contains(&self.me);
        tracing::info!(node = %self.me, deleters = ?nodes, member, "deleter group");
        let mut cfg = self.purge.actor.config().clone();
        if cfg.nodes < nodes.len() {
            cfg.nodes = nodes.len();
            self.purge.actor.set_config(cfg);
        }
        self.purge.deleters = nodes;
        self.purge.tags.clear();
        self.purge.actor.set_enabled(member);
        self.purge.actor.set_value(member.then_some((0, 0)));
    }

    /// Whether every member of the deleter group was heard from within the
    /// last two delete cycles: only then may tombstones go, as every member
    /// has had the time to see the deletions.
    pub(super) fn group_present(&self, now: u64) -> bool {
        let window = 2 * self.purge.actor.config().cycle;
        !self.purge.deleters.is_empty()
            && self
                .purge
                .deleters
                .iter()
                .all(|n| *n == self.me || self.heard.get(n).is_some_and(|&t| t + window >= now))
    }

    pub(super) fn del_events(&mut self, st: &mut State, now: u64, events: Vec<ActorEvent>) {
        for e in events {
            match e {
                ActorEvent::Tag if self.group_present(now) => {
                    let tags = &mut self.purge.tags;
                    tags.push_back(st.tock().next());
                    if tags.len() > 4 {
                        tags.pop_front();
                    }
                    if let (Some(&old), Some(&new)) = (tags.front(), tags.back()) {
                        self.purge.actor.set_value(Some((old, new)));
                        if tags.len() > 2 {
                            self.purge_before(st, old);
                        }
                    }
                }
                ActorEvent::Ping {
                    node,
                    value: Some((old, _)),
                } if node != self.me
                    && old > 0
                    && self.purge.deleters.contains(&node)
                    && self.group_present(now) =>
                {
                    self.purge_before(st, old);
                }
                _ => {}
            }
        }
    }

    pub(super) fn purge_before(&mut self, st: &mut State, tock: u64) {
        let n = st.purge_deleted(tock);
        if n > 0 {
            tracing::info!(node = %self.me, tock, purged = n, "purged deletion tombstones");
        }
    }
}
