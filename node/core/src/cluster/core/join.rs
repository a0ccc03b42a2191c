//! Joining: a node without data fetches the state from a ready node, or
//! starts the cluster when nobody has data; links coming back.

use super::*;

impl Core {
    /// A link to another node came (back) up: exchange ticks soon.
    pub fn link_up(&mut self, now: u64) {
        let at = now + self.jitter(self.cfg.ping.gap / 4);
        self.ticks_at = Some(self.ticks_at.map_or(at, |t| t.min(at)));
    }

    /// The fetch of a joining node's state ended (`ok`: it is ready now).
    pub fn fetch_done(&mut self, ok: bool, now: u64) {
        self.fetching = false;
        if !ok {
            self.fetch_after = now + self.cfg.ping.gap;
        }
        if ok {
            self.ticks_at = Some(now);
            // Own ticks nobody had (a node that lost its files) are
            // settled like a crash gap.
            self.gap_at = Some(now + self.cfg.own_gap_grace);
        }
    }

    pub(super) fn maybe_fetch(&mut self, st: &State, now: u64, node: NodeName) {
        if st.tick().is_some() || self.fetching || now < self.fetch_after {
            return;
        }
        let addr = self.peers.get(&node).and_then(|(_, a)| a.clone());
        self.fetching = true;
        self.notices.push(Notice::Fetch { node, addr });
    }

    pub(super) fn maybe_bootstrap(&mut self, now: u64) {
        if self.fetching || now < self.started_at + self.cfg.join_wait {
            return;
        }
        // Only a cluster whose nodes are all here and empty is new: a node
        // that hears nobody waits (its peers may be out of reach).
        let heard_others = self.peers.keys().any(|n| *n != self.me);
        let any_ready = self.peers.values().any(|(v, _)| v.is_some());
        let first = self.peers.keys().all(|n| *n >= self.me);
        if heard_others && !any_ready && first {
            self.notices.push(Notice::Bootstrap);
            self.ticks_at = Some(now); // tell the others at once
        } else if !heard_others {
            tracing::warn!(
                node = %self.me,
                "no other node heard yet: not serving (use --force to serve without the cluster's data)"
            );
        }
    }
}
