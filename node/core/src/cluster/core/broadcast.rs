//! Broadcast: every change this node made, from its event log, once the
//! log holds it; and the messages the protocol publishes.

use super::*;

impl Core {
    /// Limits broadcasting to the event-log records below `next`: a node
    /// with a data directory broadcasts a change only once it is written to
    /// its log, so a crash of the process never loses a change that others
    /// hold (the ticks above its last logged change can then be declared
    /// never used, see [`State::skip_own_ticks`]). Without a call, every
    /// record is broadcast at once.
    pub fn allow_broadcast_below(&mut self, next: Seq) {
        self.unwritten = next;
    }

    /// Takes the events of the log since the last call for broadcasting:
    /// copies them (under the state's lock, which the caller holds), to be
    /// encoded and sent once the lock is let go ([`Core::take_outgoing`]).
    pub(super) fn broadcast_log(&mut self, st: &State, now: u64) {
        loop {
            let room = self.unwritten.saturating_sub(self.next_seq);
            let max = usize::try_from(room).unwrap_or(usize::MAX);
            match self.unsent.extend(st.log(), self.next_seq, max) {
                Ok(n) => {
                    self.next_seq += n as Seq;
                    break;
                }
                Err(lag) => {
                    // Others will learn our tick from pings and ask.
                    tracing::warn!(node = %self.me, %lag, "broadcast fell behind the event log");
                    self.next_seq = lag.oldest;
                    self.ticks_at = Some(0);
                }
            }
        }
        self.unsent_at = now;
    }

    /// The `update` messages of the events [`Core::broadcast_log`] copied
    /// that this node originated, at most `batch` events each; the copy is
    /// emptied.
    ///
    /// Changes of nodes that are not running (restored with `update`,
    /// loaded from files) are not broadcast: nobody else would send them
    /// either, so this node tells its ticks soon instead, and the others
    /// ask for what they lack (repair) — else such a change would stay
    /// here until this node next happened to tell its ticks.
    pub(super) fn send_unsent(&mut self) -> Vec<(String, Bytes)> {
        let mut out = Vec::new();
        let mut orphans = false;
        let now = self.unsent_at;
        // Out while the filter below reads `self`.
        let mut updates = std::mem::take(&mut self.updates);
        {
            let mut own = self
                .unsent
                .entries()
                .map(|(_, e)| e)
                .filter(|e| {
                    let head = e.head_node();
                    if head == self.me {
                        return true;
                    }
                    orphans |= !self.alive(&head, now);
                    false
                })
                .peekable();
            while own.peek().is_some() {
                let events = own.by_ref().take(self.cfg.batch.max(1));
                for m in updates.encode(&self.me, events) {
                    out.push((self.topics.update.clone(), m));
                }
            }
        }
        self.updates = updates;
        self.unsent.clear();
        if orphans {
            self.ticks_soon(now, self.cfg.ping.gap / 10);
        }
        out
    }

    /// Publishes `events` (each an [`UpdateEvent`] or its record in the
    /// event log).
    pub(super) fn publish_events<T: distkv_log::EventForm>(
        &mut self,
        events: impl IntoIterator<Item = T>,
    ) {
        for m in self.updates.encode(&self.me, events) {
            self.out.push((self.topics.update.clone(), m));
        }
    }

    /// Publishes `i`, telling where this node serves clients.
    pub(super) fn publish_info(&mut self, mut i: Info) {
        i.addr.clone_from(&self.addr);
        self.out.push((self.topics.info.clone(), i.encode()));
    }

    pub(super) fn publish_actor(&mut self, msgs: Vec<ActorMsg>) {
        for m in msgs {
            let mut v = m.to_value();
            if let (ActorMsg::Ping { .. }, Some(addr), Value::Map(pairs)) = (&m, &self.addr, &mut v)
            {
                pairs.push((Value::str("addr"), Value::str(addr)));
            }
            self.out
                .push((self.topics.ping.clone(), codec::to_vec(&v).into()));
        }
    }

    pub(super) fn publish_del(&mut self, msgs: Vec<ActorMsg>) {
        for m in msgs {
            let v = m.to_value();
            self.out
                .push((self.topics.del.clone(), codec::to_vec(&v).into()));
        }
    }
}
