//! Repair: ticks a node lacks are asked for (`info.missing`), and nodes
//! holding them answer with the entries or say they are superseded or
//! deleted (`info.known`/`deleted`); updates and infos from other nodes.

use super::*;

impl Core {
    /// Counts nothing as asked any more — unless answers are streaming in:
    /// under a big repair, brokers may drop a slow link, and asking for
    /// everything again on its return would only send it all twice.
    pub(super) fn forget_asked(&mut self, now: u64) {
        if now >= self.repair_rx + self.cfg.ping.gap {
            self.asked = NodeSet::default();
        }
    }

    pub(super) fn on_update(&mut self, st: &mut State, now: u64, u: Update) {
        if u.node == self.me {
            return;
        }
        self.heard.insert(u.node.clone(), now);
        let mut forged = None;
        let mut denied = None;
        // The memory of the events after each is asked for ahead of its
        // apply (`state::Lookahead`).
        let mut ahead = Lookahead::default();
        let mut events = u.events.into_iter();
        while let Some(ev) = events.next() {
            ahead.step(st, events.as_slice());
            if let Err(why) = st.vet(&ev.chain, Reporter::Peer(&u.node)) {
                forged.get_or_insert((why, 0)).1 += 1;
                continue;
            }
            let answer = ev.chain.links().iter().any(|l| {
                self.asked
                    .0
                    .get(&l.node)
                    .is_some_and(|r| r.contains(l.tick))
            });
            if answer {
                self.repair_rx = now;
            }
            if let Some((_, left)) = &mut self.refusing {
                // Not in the state, so not in memory: its tick is missing
                // here, and asked for again later.
                let head = ev.chain.head();
                if head.node != self.me {
                    st.saw_node_tick(&head.node, head.tick);
                }
                *left += 1;
                continue;
            }
            // The node's checks (its commit path), once it takes events.
            if let Err(why) = self.admit.event(st, &ev) {
                denied.get_or_insert((why.to_string(), 0)).1 += 1;
                continue;
            }
            let chain = ev.chain.clone();
            st.apply(ev);
            st.sighted(&chain);
        }
        if let Some((why, n)) = forged {
            tracing::warn!(node = %u.node, events = n, %why, "ignoring impossible events");
        }
        if let Some((why, n)) = denied {
            tracing::warn!(node = %u.node, events = n, %why, "events refused by a check");
        }
        // A jump in someone's ticks means a message was lost.
        self.check_missing(st, now);
    }

    pub(super) fn on_info(&mut self, st: &mut State, now: u64, i: Info) {
        if i.node == self.me {
            return;
        }
        if self.heard.insert(i.node.clone(), now).is_none() {
            // A node we did not know: tell it our ticks (and where we
            // serve) soon, so a joining node need not wait for a cycle.
            self.ticks_soon(now, self.cfg.ping.gap / 4);
        }
        if i.reply {
            // Its link to us came back: it wants our ticks now, and what
            // anyone asked for before may not have reached it.
            tracing::debug!(node = %self.me, from = %i.node, "a link came back: answering with our ticks");
            self.forget_asked(now);
            self.fast_until = now + self.cfg.ping.gap;
            self.ticks_soon(now, self.cfg.ping.gap / 10);
        }
        if let Some(addr) = &i.addr {
            self.check_addr(&i.node, addr);
            let e = self.peers.entry(i.node.clone()).or_insert((None, None));
            e.1 = Some(addr.clone());
            if e.0.is_none() {
                e.0 = i.tick.map(|t| (0, t));
            }
            if i.tick.is_some() {
                self.maybe_fetch(st, now, i.node.clone());
            }
        }
        if let Some(t) = i.tick {
            st.saw_node_tick(&i.node, t);
        }
        for (n, t) in &i.ticks {
            if st.believable_tick(n, *t, &i.node) {
                st.saw_node_tick(n, *t);
            } else {
                tracing::warn!(node = %i.node, about = %n, tick = t, "ignoring an impossible tick");
            }
        }
        let i = Info {
            known: believable(st, i.known, &i.node),
            deleted: believable(st, i.deleted, &i.node),
            ..i
        };
        if !i.missing.is_empty() {
            st.report_missing(&i.missing);
            if self.others_check_at.is_none() {
                self.others_since = now;
                self.others_check_at = Some(now + self.cfg.ping.gap);
            }
            for (n, r) in &i.missing.0 {
                self.asked.0.entry(n.clone()).or_default().union_with(r);
                self.others_asked
                    .0
                    .entry(n.clone())
                    .or_default()
                    .union_with(r);
                if *n != self.me && self.alive(n, now) {
                    let d = self.deferred.0.entry(n.clone()).or_default();
                    let again = d.intersection(r);
                    d.union_with(r);
                    self.second
                        .0
                        .entry(n.clone())
                        .or_default()
                        .union_with(&again);
                }
            }
            let at = if now < self.fast_until {
                now + self.jitter(self.cfg.ping.gap / 10)
            } else {
                now + self.cfg.ping.gap / 10 + self.jitter(self.cfg.ping.gap / 3)
            };
            self.resend_at.get_or_insert(at);
        }
        if !i.known.is_empty() {
            st.learn_known(&i.known);
        }
        if !i.skipped.is_empty() {
            self.on_skipped(st, now, &i);
        }
        if !i.deleted.is_empty() {
            st.learn_deleted(&i.deleted);
        }
        for n in &i.node_drop {
            if let Err(why) = st.forget_node(n) {
                // The change that made it head nothing may still be on its
                // way: try again in the next rounds.
                tracing::debug!(node = %n, why, "not dropping node yet");
                self.drops.insert(n.clone(), 3);
            }
        }
        self.check_missing(st, now);
    }

    /// The sender declared some of its own ticks never used. Those are
    /// superseded here too. Any of them held here were broadcast and then
    /// lost by the sender's files (an operating-system crash under a lazy
    /// fsync): send them back.
    pub(super) fn on_skipped(&mut self, st: &mut State, now: u64, i: &Info) {
        let beyond = i.skipped.ranges().last().map(|(_, b)| b - 1) > i.tick;
        if beyond {
            tracing::warn!(node = %i.node, "ignoring skipped ticks beyond the sender's own tick");
            return;
        }
        let mut ticks = NodeSet::default();
        ticks.0.insert(i.node.clone(), i.skipped.clone());
        let held = st.present_within(&i.node, &i.skipped);
        st.learn_known(&ticks);
        if held.is_empty() {
            return;
        }
        tracing::warn!(
            node = %i.node,
            ticks = %held,
            "a node declared ticks never used that are held here: sending them back"
        );
        let mut back = NodeSet::default();
        back.0.insert(i.node.clone(), held.clone());
        st.report_missing(&back);
        // Answered by us although their origin is alive: it lacks them.
        self.second
            .0
            .entry(i.node.clone())
            .or_default()
            .union_with(&held);
        let at = now + self.jitter(self.cfg.ping.gap / 10);
        self.resend_at = Some(self.resend_at.map_or(at, |t| t.min(at)));
    }

    /// Schedules a request for missing ticks if there are new ones.
    pub(super) fn check_missing(&mut self, st: &State, now: u64) {
        if self.missing_at.is_some() {
            return;
        }
        if !self.unasked_missing(st).is_empty() {
            let max = if now < self.fast_until {
                self.cfg.ping.gap / 10
            } else {
                self.cfg.ping.gap / 2
            };
            self.missing_at = Some(now + self.jitter(max));
        }
    }

    /// Ticks missing here that nobody asked for this round.
    pub(super) fn unasked_missing(&self, st: &State) -> NodeSet {
        let mut m = st.missing();
        for (n, r) in &self.asked.0 {
            if let Some(x) = m.0.get_mut(n) {
                x.subtract(r);
            }
        }
        m.0.retain(|_, r| !r.is_empty());
        m
    }

    /// A gap after other nodes asked for ticks we miss too: unless answers
    /// are coming in, those requests count as asked no more, so that what
    /// is still missing is asked for again, by us.
    pub(super) fn recheck_others_asked(&mut self, st: &State, now: u64) {
        let others = std::mem::take(&mut self.others_asked);
        if self.repair_rx >= self.others_since {
            // Answers are streaming in: look again later.
            self.others_asked = others;
            self.others_since = now;
            self.others_check_at = Some(now + self.cfg.ping.gap);
            return;
        }
        for (n, r) in &others.0 {
            if let Some(a) = self.asked.0.get_mut(n) {
                a.subtract(r);
            }
        }
        self.check_missing(st, now);
    }

    pub(super) fn send_missing(&mut self, st: &State) {
        let m = self.unasked_missing(st);
        if m.is_empty() {
            return;
        }
        tracing::info!(node = %self.me, missing = %fmt_set(&m), "repair: asking for missing ticks");
        for (n, r) in &m.0 {
            self.asked.0.entry(n.clone()).or_default().union_with(r);
        }
        let mut i = Info::new(self.me.clone(), st.tick());
        i.missing = m;
        self.publish_info(i);
    }

    /// Answers reported ticks: our own, those of nodes we do not hear
    /// (maybe gone), and those asked for again. The ticks of other live
    /// nodes are left to them first: one answer per tick, not one per
    /// holder.
    pub(super) fn resend(&mut self, st: &mut State, now: u64) {
        let live: std::collections::BTreeSet<NodeName> = self
            .heard
            .keys()
            .filter(|n| self.alive(n, now))
            .cloned()
            .collect();
        let (me, second) = (&self.me, &self.second);
        let a = st.answers(self.cfg.resend_max, |n| {
            (n != me && live.contains(n)).then(|| second.0.get(n).cloned().unwrap_or_default())
        });
        if !a.entries.is_empty() || !a.known.is_empty() || !a.deleted.is_empty() {
            tracing::info!(
                node = %self.me,
                entries = a.entries.len(),
                known = %fmt_set(&a.known),
                deleted = %fmt_set(&a.deleted),
                "repair: answering missing ticks"
            );
        }
        for chunk in a.entries.chunks(self.cfg.batch.max(1)) {
            self.publish_events(chunk.iter());
        }
        if !a.known.is_empty() || !a.deleted.is_empty() {
            let mut i = Info::new(self.me.clone(), st.tick());
            i.known = a.known;
            i.deleted = a.deleted;
            self.publish_info(i);
        }
        if st.has_reported() && a.entries.len() >= self.cfg.resend_max {
            self.resend_at = Some(now);
        }
    }
}

/// A node set for logs: `n1:[1,4) n2:7`.
/// `set` without the nodes whose ticks `sender` cannot know
/// ([`State::believable_tick`]).
pub(super) fn believable(st: &State, mut set: NodeSet, sender: &str) -> NodeSet {
    set.0.retain(|n, r| {
        let top = r.ranges().last().map_or(0, |(_, b)| b - 1);
        let ok = st.believable_tick(n, top, sender);
        if !ok {
            tracing::warn!(node = %sender, about = %n, tick = top, "ignoring impossible ticks");
        }
        ok
    });
    set
}

pub(super) fn fmt_set(s: &NodeSet) -> String {
    let mut out = String::new();
    for (n, r) in &s.0 {
        if r.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(n);
        out.push(':');
        for (i, (a, b)) in r.ranges().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if b == a + 1 {
                out.push_str(&a.to_string());
            } else {
                out.push_str(&format!("[{a},{b})"));
            }
        }
    }
    out
}
