//! Change chains: which (node, tick) events built an entry's current value.
//!
//! A [`Chain`] lists links head first; the head is the most recent change. A
//! node appears at most once: when node N changes an entry, the new chain is
//! `(N, tick)` followed by the old chain without N's link (see
//! [`Chain::attach`]). In memory chains are unbounded; they are cut only when
//! sent (`nchain`).
//!
//! Comparison follows DistKV 0.63.3 (non-strict ticks), see [`supersedes`]
//! and [`precedes`].
//!
//! Wire form: `{node, tick, prev}` maps nested through `prev`; `prev: nil`
//! means the chain ends there, a missing `prev` means it was cut.
//!
//! In memory a chain of one link (nearly every entry's: keys written by one
//! node) is held inline, without an allocation of its own; longer chains
//! share one `Arc<[Link]>`. Equality, hashing and every format see only
//! the links.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::budget::{MAX_CHAIN_LINKS, MAX_NAME_BYTES};
use crate::shared_str::SharedStr;
use crate::value::Value;

/// The largest tick or tock accepted from outside. A node would need 146
/// years at a billion changes per second to get there; anything larger is
/// hostile or corrupt and would make the counters overflow.
pub const MAX_COUNTER: u64 = 1 << 62;

/// A server's name. Cheap to clone.
pub type NodeName = SharedStr;

/// One change event: the node that made it and that node's tick.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Link {
    /// The node that made the change.
    pub node: NodeName,
    /// Its tick at the time.
    pub tick: u64,
}

/// A non-empty chain of links, head first.
#[derive(Clone)]
pub struct Chain(Links);

/// A chain's links: one inline, or at least two shared.
#[derive(Clone)]
enum Links {
    One(Link),
    Many(Arc<[Link]>),
}

impl PartialEq for Chain {
    fn eq(&self, other: &Chain) -> bool {
        self.links() == other.links()
    }
}

impl Eq for Chain {}

impl std::hash::Hash for Chain {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.links().hash(state);
    }
}

/// A chain that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid chain: {0}")]
pub struct ChainError(pub &'static str);

impl Chain {
    /// A chain of one link.
    pub fn single(node: NodeName, tick: u64) -> Chain {
        Chain(Links::One(Link { node, tick }))
    }

    /// A chain from its links (head first). `None` if empty.
    pub fn from_links(mut links: Vec<Link>) -> Option<Chain> {
        match links.len() {
            0 => None,
            1 => links.pop().map(|l| Chain(Links::One(l))),
            _ => Some(Chain(Links::Many(Arc::from(links)))),
        }
    }

    /// The chain's parts: its one link, or the links of a longer chain,
    /// shared (for holders that keep chains in a compact form of their
    /// own: the node's tree).
    pub fn into_parts(self) -> Result<Link, Arc<[Link]>> {
        match self.0 {
            Links::One(l) => Ok(l),
            Links::Many(ls) => Err(ls),
        }
    }

    /// The chain of shared links (as [`Chain::into_parts`] gives them),
    /// keeping them shared when there are at least two. `None` if empty.
    pub fn from_shared(links: Arc<[Link]>) -> Option<Chain> {
        match links.len() {
            0 => None,
            1 => Some(Chain(Links::One(links[0].clone()))),
            _ => Some(Chain(Links::Many(links))),
        }
    }

    /// The links, head first.
    pub fn links(&self) -> &[Link] {
        match &self.0 {
            Links::One(l) => std::slice::from_ref(l),
            Links::Many(ls) => ls,
        }
    }

    /// The most recent change.
    pub fn head(&self) -> &Link {
        match &self.0 {
            Links::One(l) => l,
            // `Many` holds at least two links.
            Links::Many(ls) => &ls[0],
        }
    }

    /// Number of links.
    pub fn len(&self) -> usize {
        self.links().len()
    }

    /// Always false: chains have at least one link.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The link of `node`, if it is in the chain.
    pub fn find(&self, node: &str) -> Option<&Link> {
        self.links().iter().find(|l| &*l.node == node)
    }

    /// Whether both heads are the same (node, tick): DistKV's chain equality.
    pub fn same_head(&self, other: &Chain) -> bool {
        self.head() == other.head()
    }

    /// The chain of a new change `(node, tick)` on top of `prev`: `prev`
    /// loses `node`'s old link.
    pub fn attach(node: NodeName, tick: u64, prev: Option<&Chain>) -> Chain {
        // The common case: a node changing an entry only it changed (or a
        // new one) keeps a chain of one link, without an allocation.
        if prev.is_none_or(|p| p.len() == 1 && p.head().node == node) {
            return Chain::single(node, tick);
        }
        let mut links = Vec::with_capacity(1 + prev.map_or(0, Chain::len));
        links.push(Link {
            node: node.clone(),
            tick,
        });
        if let Some(p) = prev {
            links.extend(p.links().iter().filter(|l| l.node != node).cloned());
        }
        // Only a cluster of more nodes than the limit gets here: the oldest
        // links go, as when a chain is sent with `nchain`.
        links.truncate(MAX_CHAIN_LINKS);
        Chain::from_links(links).unwrap_or_else(|| Chain::single(node, tick))
    }

    /// This chain without `node`'s link (`None` if nothing is left).
    pub fn without(&self, node: &str) -> Option<Chain> {
        if self.find(node).is_none() {
            return Some(self.clone());
        }
        Chain::from_links(
            self.links()
                .iter()
                .filter(|l| &*l.node != node)
                .cloned()
                .collect(),
        )
    }

    /// `self > other`: this chain was built on top of `other` (0.63.3).
    fn gt(&self, other: &Chain) -> bool {
        if self.same_head(other) {
            return false;
        }
        let oh = other.head();
        match self.find(&oh.node) {
            Some(l) => l.tick >= oh.tick,
            None => false,
        }
    }

    /// Wire form, cut to `nchain` links (`-1` / negative = all). `nchain`
    /// must not be 0.
    pub fn to_value(&self, nchain: i64) -> Value {
        let links = self.links();
        let n = if nchain < 0 {
            links.len()
        } else {
            (nchain as usize).min(links.len())
        };
        let mut out: Option<Value> = None;
        for (i, l) in links[..n].iter().enumerate().rev() {
            let mut m = Vec::with_capacity(3);
            m.push((Value::str("node"), Value::Str(l.node.clone())));
            m.push((Value::str("tick"), Value::uint(l.tick)));
            match out.take() {
                Some(prev) => m.push((Value::str("prev"), prev)),
                // The chain really ends here: say so.
                None if i + 1 == links.len() => m.push((Value::str("prev"), Value::Nil)),
                None => {}
            }
            out = Some(Value::Map(m));
        }
        out.unwrap_or(Value::Nil)
    }

    /// A chain from links as read from one of our formats, with the
    /// checks [`Chain::from_value`] makes: at least one and at most
    /// [`MAX_CHAIN_LINKS`] links, each node once with a name of at most
    /// [`MAX_NAME_BYTES`] bytes and a tick of at most [`MAX_COUNTER`].
    pub fn from_checked_links(mut links: Vec<Link>) -> Result<Chain, ChainError> {
        Chain::from_checked_drain(&mut links)
    }

    /// [`Chain::from_checked_links`] of the links in `links`, taken out of
    /// it (a decoder keeps the buffer for the next chain): no allocation
    /// for a chain of one link, one for a longer one. On an error the
    /// links are left in `links`.
    pub fn from_checked_drain(links: &mut Vec<Link>) -> Result<Chain, ChainError> {
        if links.len() > MAX_CHAIN_LINKS {
            return Err(ChainError("chain has more links than the limit of 256"));
        }
        for (i, l) in links.iter().enumerate() {
            if l.tick > MAX_COUNTER {
                return Err(ChainError("tick is not an unsigned integer up to 2^62"));
            }
            if l.node.len() > MAX_NAME_BYTES {
                return Err(ChainError("node name is longer than 255 bytes"));
            }
            if links[..i].iter().any(|o| o.node == l.node) {
                return Err(ChainError("node appears twice"));
            }
        }
        match links.len() {
            0 => Err(ChainError("link without node")),
            1 => links
                .pop()
                .map(|l| Chain(Links::One(l)))
                .ok_or(ChainError("link without node")),
            // One allocation: the drained links go straight into the slice.
            _ => Ok(Chain(Links::Many(links.drain(..).collect()))),
        }
    }

    /// Decodes the wire form. `Ok(None)` for nil or a map without `node`.
    /// Accepts an entry map (uses its `chain` key if present).
    pub fn from_value(v: &Value) -> Result<Option<Chain>, ChainError> {
        let mut links = Vec::new();
        let mut cur = match v {
            Value::Map(_) => v.get("chain").unwrap_or(v),
            Value::Nil => return Ok(None),
            _ => return Err(ChainError("not a map")),
        };
        loop {
            match cur {
                Value::Nil => break,
                Value::Map(_) => {}
                _ => return Err(ChainError("link is not a map")),
            }
            let Some(node) = cur.get("node") else {
                if links.is_empty() {
                    return Ok(None);
                }
                return Err(ChainError("link without node"));
            };
            let node = node
                .as_str()
                .ok_or(ChainError("node name is not a string"))?;
            let tick = match cur.get("tick") {
                None | Some(Value::Nil) => 0,
                Some(t) => t
                    .as_u64()
                    .filter(|&t| t <= MAX_COUNTER)
                    .ok_or(ChainError("tick is not an unsigned integer up to 2^62"))?,
            };
            if links.iter().any(|l: &Link| &*l.node == node) {
                return Err(ChainError("node appears twice"));
            }
            if links.len() >= MAX_CHAIN_LINKS {
                return Err(ChainError("chain has more links than the limit of 256"));
            }
            if node.len() > MAX_NAME_BYTES {
                return Err(ChainError("node name is longer than 255 bytes"));
            }
            links.push(Link {
                node: NodeName::from(node),
                tick,
            });
            match cur.get("prev") {
                Some(p) => cur = p,
                None => break,
            }
        }
        Ok(Chain::from_links(links))
    }
}

/// The last few node names looked up, each with a number (an index in
/// some table of names), found again by the address of their allocation:
/// the same names keep coming back (the chains of a tree and of the events on
/// it share their names), so a hot path need not hash the name. Holding
/// the names keeps their addresses from being reused.
#[derive(Debug, Default, Clone)]
pub struct RecentNames {
    slots: [Option<(NodeName, u32)>; 4],
    next: usize,
}

impl RecentNames {
    /// The number of this very `Arc`, if it is among the recent ones.
    pub fn get(&self, name: &NodeName) -> Option<u32> {
        self.slots
            .iter()
            .flatten()
            .find(|(known, _)| SharedStr::ptr_eq(known, name))
            .map(|&(_, n)| n)
    }

    /// Remembers `name`'s number, in place of the oldest one remembered.
    pub fn put(&mut self, name: &NodeName, n: u32) {
        self.slots[self.next] = Some((name.clone(), n));
        self.next = (self.next + 1) % self.slots.len();
    }

    /// Forgets every name (the numbers changed).
    pub fn clear(&mut self) {
        *self = RecentNames::default();
    }
}

/// Node names numbered in the order they are first met (0, 1, …), for a
/// table of something per node kept beside: a name is found by its
/// address where it was met lately ([`RecentNames`]), by its hash
/// otherwise.
#[derive(Debug, Default, Clone)]
pub struct NameNumbers {
    numbers: HashMap<NodeName, u32>,
    recent: RecentNames,
}

impl NameNumbers {
    /// `name`'s number: a name not met before gets the next one, the
    /// number of names met before it.
    ///
    /// # Panics
    /// At the 2³²nd name (which would take far more memory than a
    /// process has).
    pub fn number(&mut self, name: &NodeName) -> u32 {
        if let Some(n) = self.recent.get(name) {
            return n;
        }
        let next = u32::try_from(self.numbers.len()).expect("fewer than 2^32 node names");
        let n = *self.numbers.entry(name.clone()).or_insert(next);
        self.recent.put(name, n);
        n
    }
}

/// `a > b` with DistKV's treatment of missing chains: `a` supersedes `b`
/// (an entry whose chain is `a` ignores an update carrying `b`).
pub fn supersedes(a: Option<&Chain>, b: Option<&Chain>) -> bool {
    match (a, b) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(a), Some(b)) => a.gt(b),
    }
}

/// `a < b`: `b` was built on top of `a` (a normal successor).
pub fn precedes(a: Option<&Chain>, b: Option<&Chain>) -> bool {
    match (a, b) {
        (None, Some(_)) => true,
        (_, None) => false,
        (Some(a), Some(b)) => b.gt(a),
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// DistKV's repr: `<NodeEvent n1:65 n2:3 (65,)>`.
impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<NodeEvent ")?;
        for (i, l) in self.links().iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}:{}", l.node, l.tick)?;
        }
        write!(f, " ({},)>", self.head().tick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are numbered in the order first met, an equal name in
    /// another allocation getting the same number, more than the recent
    /// ones remember included.
    #[test]
    fn names_are_numbered_in_the_order_first_met() {
        let mut n = NameNumbers::default();
        let names: Vec<NodeName> = (0..10).map(|i| NodeName::from(format!("n{i}"))).collect();
        for (i, name) in names.iter().enumerate() {
            assert_eq!(n.number(name), i as u32);
        }
        for (i, name) in names.iter().enumerate().rev() {
            assert_eq!(n.number(name), i as u32);
            assert_eq!(n.number(&NodeName::from(name.as_str())), i as u32);
        }
        assert_eq!(n.number(&NodeName::from("new")), 10);
    }

    fn c(links: &[(&str, u64)]) -> Chain {
        Chain::from_links(
            links
                .iter()
                .map(|(n, t)| Link {
                    node: NodeName::from(*n),
                    tick: *t,
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn successor_built_on_head_is_recognised_non_strictly() {
        let old = c(&[("a", 5)]);
        let new = c(&[("b", 1), ("a", 5)]);
        // 0.63.3: `old < new` because a:5 <= a:5 (0.57 said no).
        assert!(precedes(Some(&old), Some(&new)));
        assert!(supersedes(Some(&new), Some(&old)));
        assert!(!supersedes(Some(&old), Some(&new)));
    }

    #[test]
    fn unrelated_chains_neither_precede_nor_supersede() {
        let a = c(&[("a", 5)]);
        let b = c(&[("b", 7)]);
        assert!(!precedes(Some(&a), Some(&b)));
        assert!(!supersedes(Some(&a), Some(&b)));
    }

    #[test]
    fn equal_heads_are_neither() {
        let a = c(&[("a", 5), ("b", 2)]);
        let b = c(&[("a", 5)]);
        assert!(!precedes(Some(&a), Some(&b)));
        assert!(!supersedes(Some(&a), Some(&b)));
    }

    #[test]
    fn missing_chains_compare_like_python() {
        let a = c(&[("a", 1)]);
        assert!(supersedes(Some(&a), None));
        assert!(!supersedes(None, Some(&a)));
        assert!(precedes(None, Some(&a)));
        assert!(!precedes(Some(&a), None));
    }

    #[test]
    fn attach_removes_own_old_link() {
        let old = c(&[("b", 3), ("a", 2), ("c", 9)]);
        let new = Chain::attach(NodeName::from("a"), 7, Some(&old));
        assert_eq!(new, c(&[("a", 7), ("b", 3), ("c", 9)]));
    }

    #[test]
    fn wire_form_round_trips_and_cuts() {
        let ch = c(&[("n1", 79), ("n2", 2)]);
        let full = ch.to_value(-1);
        assert_eq!(Chain::from_value(&full).unwrap(), Some(ch.clone()));
        let one = ch.to_value(1);
        assert!(one.get("prev").is_none());
        let single = c(&[("n1", 63)]);
        assert_eq!(single.to_value(1).get("prev"), Some(&Value::Nil));
        assert_eq!(Chain::from_value(&Value::Nil).unwrap(), None);
        assert_eq!(Chain::from_value(&Value::map([])).unwrap(), None);
        assert!(Chain::from_value(&Value::Int(3)).is_err());
    }

    #[test]
    fn one_link_chains_are_inline_and_equal_to_shared_ones() {
        let a = Chain::single(NodeName::from("a"), 4);
        assert!(matches!(a.0, Links::One(_)));
        assert_eq!(a, c(&[("a", 4)]));
        // A node changing its own entry again keeps one inline link.
        let again = Chain::attach(NodeName::from("a"), 5, Some(&a));
        assert!(matches!(again.0, Links::One(_)));
        assert_eq!(again.links(), c(&[("a", 5)]).links());
        let two = Chain::attach(NodeName::from("b"), 1, Some(&again));
        assert!(matches!(two.0, Links::Many(_)));
        assert_eq!(two.head().node.as_ref(), "b");
        assert_eq!(two.without("b"), Some(c(&[("a", 5)])));
        assert_eq!(c(&[("a", 5)]).without("a"), None);
        assert!(matches!(two.without("b").map(|x| x.0), Some(Links::One(_))));
    }

    #[test]
    fn display_matches_python_repr() {
        assert_eq!(c(&[("n1", 65)]).to_string(), "<NodeEvent n1:65 (65,)>");
    }
}
