//! Joining: a node without data fetches the state from a ready node, or
//! starts the cluster when nobody has data; links coming back.

use super::*;

impl Core {
    /// A link to another node came (back) up: exchange ticks at once.
    ///
    /// Our ticks alone are not enough: a link is one direction (our client
    /// on a peer's broker), and the peer's link to our broker may come back
    /// only later, so it may never hear what we send now. So our ticks ask
    /// every hearer to answer with theirs ([`Info::reply`]); of two nodes,
    /// the one whose link comes back last asks, and the other's link is up
    /// by then. Both learn what they miss and ask for it, without waiting
    /// for the next housekeeper's round.
    pub fn link_up(&mut self, now: u64) {
        // What we asked for while the link was down may never have been
        // heard, or its answer lost: ask again once the ticks are in.
        self.forget_asked(now);
        self.fast_until = now + self.cfg.ping.gap;
        self.ticks_reply = true;
        self.ticks_soon(now, self.cfg.ping.gap / 10);
    }

    /// Schedules sending our ticks within `max_delay` ms (random, so that
    /// many nodes reacting to one event do not all send at once).
    pub(super) fn ticks_soon(&mut self, now: u64, max_delay: u64) {
        let at = now + self.jitter(max_delay);
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

    /// Warns (once) when `node` advertises the client address of another
    /// node or of this one: a joining node could fetch from the wrong one,
    /// or from none (nodes sharing a host name without `--advertise`).
    pub(super) fn check_addr(&mut self, node: &NodeName, addr: &str) {
        let mine = self.addr.as_deref() == Some(addr);
        let other = if mine {
            Some(self.me.clone())
        } else {
            self.peers
                .iter()
                .find(|(n, (_, a))| *n != node && a.as_deref() == Some(addr))
                .map(|(n, _)| n.clone())
        };
        let Some(other) = other else { return };
        let (a, b) = if other < *node {
            (other, node.clone())
        } else {
            (node.clone(), other)
        };
        if self
            .addr_clashes
            .insert((addr.to_string(), a.clone(), b.clone()))
        {
            tracing::warn!(
                node = %self.me,
                nodes = %format!("{a}, {b}"),
                %addr,
                "two nodes advertise the same client address: give each its own --advertise"
            );
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
