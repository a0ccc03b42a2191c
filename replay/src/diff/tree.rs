//! A compact, read-only copy of an entry tree, built from a stream of
//! entries, for `diff`.
//!
//! Rebuilding a whole [`State`] from a snapshot or a live node only to
//! compare it costs far more than the comparison: every entry gets its own
//! path object, a child map, tick bookkeeping (present ticks by path), and
//! all of it is freed again at the end. A [`Tree`] keeps only what the
//! diff needs: the entries as they were read (path, value, chain, tock,
//! nothing copied), and one small record per tree node (parent, where its
//! name is, its entry, where its subtree ends), with one hash index from
//! (parent, name) to node.
//!
//! Invariant: a [`Tree`] is exactly the tree a [`State`] would build from
//! the same entries ([`State::restore_entry_batched`] in stream order), and
//! its nodes are numbered in that state's walk order (depth-first, node
//! before children, children in insertion order). That holds by
//! construction when the stream comes in walk order — what a node's
//! snapshot writer and its `get_tree` produce: each entry either extends
//! the open branch or starts a new child of a node on it. The
//! [`TreeBuilder`] checks every entry for that; at the first one that
//! breaks it (a path seen before, an entry arriving after its
//! descendants, a branch reopened, names equal for the tree but written
//! differently) it stops building the compact tree, restores everything
//! read so far and the rest into a real [`State`], and copies that state's
//! walk at the end: slower, the same result.
//!
//! Each side's tick bookkeeping is kept the same way in a [`State`]
//! without entries (its `nodes` only), fed the ticks of every chain link
//! in stream order: node order and highest ticks come out as a full
//! restore would make them.

use std::collections::HashMap;
use std::hash::BuildHasher;

use distkv_core::state::{Digest, SeenBatch, State};
use distkv_model::{codec, Chain, NodeName, Path, RangeSet, Value};

use crate::engine::{FastMap, LIMITS};

/// "None" in the node and entry indices.
const NONE: u32 = u32::MAX;

/// One entry as read.
#[derive(Debug, Clone)]
pub struct EntryData {
    /// Its full path.
    pub path: Path,
    /// Its value (`None`: a tombstone or a data-less node).
    pub value: Option<Value>,
    /// Its chain.
    pub chain: Option<Chain>,
    /// Its tock.
    pub tock: u64,
}

impl EntryData {
    /// Whether it holds a value or a chain: what a walk reports and a
    /// digest counts.
    pub fn is_set(&self) -> bool {
        self.value.is_some() || self.chain.is_some()
    }
}

/// One node of the tree.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Its name is `items[creator].path[depth - 1]`.
    creator: u32,
    depth: u32,
    /// Its entry, if one was read for it.
    item: u32,
    /// One past the last node of its subtree.
    end: u32,
    /// The next node with the same parent and name hash.
    next: u32,
}

/// A compact entry tree; see the module docs.
#[derive(Debug)]
pub struct Tree {
    items: Vec<EntryData>,
    /// In walk order; node 0 is the root.
    nodes: Vec<Node>,
    /// (parent, name hash) → the newest node with them (then `next`).
    index: HashMap<(u32, u64), u32, foldhash::fast::FixedState>,
    hasher: foldhash::fast::RandomState,
}

/// A node of a [`Tree`].
pub type NodeId = u32;

impl Tree {
    fn new() -> Tree {
        Tree {
            items: Vec::new(),
            nodes: vec![Node {
                creator: NONE,
                depth: 0,
                item: NONE,
                end: 1,
                next: NONE,
            }],
            index: HashMap::default(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The root.
    pub fn root(&self) -> NodeId {
        0
    }

    /// A copy of `st`'s tree (meta tree included).
    pub fn from_state(st: &State) -> Tree {
        let mut b = Shape::new();
        let mut t = Tree::new();
        st.for_each_entry(true, |e| {
            let item = EntryData {
                path: e.path().clone(),
                value: e.data().cloned(),
                chain: e.chain().cloned(),
                tock: e.tock(),
            };
            // A state's walk is in walk order: this cannot fail.
            let fits = b.add(&mut t, item);
            debug_assert!(fits.is_ok(), "a state's walk is in walk order");
        });
        b.close(&mut t);
        t
    }

    /// The node's entry, if it has one holding a value or a chain.
    pub fn entry(&self, n: NodeId) -> Option<&EntryData> {
        let i = self.nodes[n as usize].item;
        self.items.get(i as usize).filter(|it| it.is_set())
    }

    /// The node's full path.
    pub fn path(&self, n: NodeId) -> Path {
        let node = &self.nodes[n as usize];
        match self.items.get(node.creator as usize) {
            None => Path::root(),
            Some(c) if c.path.len() == node.depth as usize => c.path.clone(),
            Some(c) => Path::new(c.path[..node.depth as usize].to_vec()),
        }
    }

    /// The node's name (`None` for the root).
    pub fn name(&self, n: NodeId) -> Option<&Value> {
        let node = &self.nodes[n as usize];
        let depth = (node.depth as usize).checked_sub(1)?;
        self.items.get(node.creator as usize)?.path.get(depth)
    }

    /// The node's children, in insertion order.
    pub fn children(&self, n: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        let end = self.nodes[n as usize].end;
        let mut c = n + 1;
        std::iter::from_fn(move || {
            (c < end).then(|| {
                let this = c;
                c = self.nodes[c as usize].end;
                this
            })
        })
    }

    /// The child of `n` named `name` (the tree's equality: `1 == 1.0`).
    pub fn child(&self, n: NodeId, name: &Value) -> Option<NodeId> {
        self.find(n, self.hasher.hash_one(name), name)
    }

    fn find(&self, parent: NodeId, hash: u64, name: &Value) -> Option<NodeId> {
        let mut c = *self.index.get(&(parent, hash))?;
        while c != NONE {
            if self.name(c) == Some(name) {
                return Some(c);
            }
            c = self.nodes[c as usize].next;
        }
        None
    }

    /// Every entry holding a value or a chain, in the order read.
    pub fn entries(&self) -> impl Iterator<Item = &EntryData> {
        self.items.iter().filter(|i| i.is_set())
    }
}

/// The open branch while a [`Tree`] is built in walk order.
struct Shape {
    /// The open nodes, root first.
    open: Vec<NodeId>,
}

impl Shape {
    fn new() -> Shape {
        Shape { open: vec![0] }
    }

    /// Adds `item` to `t`, or hands it back, leaving `t` as it was, if it
    /// is not in walk order.
    fn add(&mut self, t: &mut Tree, item: EntryData) -> Result<(), EntryData> {
        let path = item.path.elements();
        if t.nodes.len() + path.len() >= NONE as usize {
            // Beyond what the compact tree numbers.
            return Err(item);
        }
        // How much of the open branch the path follows.
        let mut depth = 0;
        while depth + 1 < self.open.len() && depth < path.len() {
            let Some(name) = t.name(self.open[depth + 1]) else {
                return Err(item);
            };
            if !identical(name, &path[depth]) {
                if *name == path[depth] {
                    // Equal for the tree, written differently: the state
                    // keeps the first spelling in its paths.
                    return Err(item);
                }
                break;
            }
            depth += 1;
        }
        let new_node = t.nodes.len() as u32;
        if depth == path.len() {
            // The path names an open node: only the newest node, without
            // an entry yet, may get one (the root, first of all).
            let at = self.open[depth];
            if at + 1 != new_node || t.nodes[at as usize].item != NONE {
                return Err(item);
            }
            self.close_to(t, depth + 1);
            t.nodes[at as usize].item = t.items.len() as u32;
            t.items.push(item);
            return Ok(());
        }
        // A new branch below open node `depth`: its first name must be new
        // there (an old sibling's subtree is closed).
        let parent = self.open[depth];
        let first_hash = t.hasher.hash_one(&path[depth]);
        if t.find(parent, first_hash, &path[depth]).is_some() {
            return Err(item);
        }
        self.close_to(t, depth + 1);
        let creator = t.items.len() as u32;
        let mut parent = parent;
        for (d, name) in path.iter().enumerate().skip(depth) {
            let hash = if d == depth {
                first_hash
            } else {
                t.hasher.hash_one(name)
            };
            let id = t.nodes.len() as u32;
            let next = t.index.insert((parent, hash), id).unwrap_or(NONE);
            t.nodes.push(Node {
                creator,
                depth: d as u32 + 1,
                item: NONE,
                end: NONE,
                next,
            });
            self.open.push(id);
            parent = id;
        }
        t.nodes[parent as usize].item = creator;
        t.items.push(item);
        Ok(())
    }

    /// Closes open nodes until `keep` remain.
    fn close_to(&mut self, t: &mut Tree, keep: usize) {
        let end = t.nodes.len() as u32;
        while self.open.len() > keep {
            if let Some(n) = self.open.pop() {
                t.nodes[n as usize].end = end;
            }
        }
    }

    /// Closes every node: the tree is complete.
    fn close(&mut self, t: &mut Tree) {
        self.close_to(t, 0);
    }
}

/// Whether two names are the same value written the same way (so that
/// paths print alike), not merely equal for the tree.
fn identical(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Nil, Value::Nil) => true,
        _ => a == b && codec::to_vec(a) == codec::to_vec(b),
    }
}

/// One side of a diff, as read: its tree, its digest and its nodes' ticks.
#[derive(Debug)]
pub struct Built {
    /// The node whose state it is.
    pub me: NodeName,
    /// The tree.
    pub tree: Tree,
    /// [`State::digest`] of the same state.
    pub digest: u128,
    /// Every node known, in the state's order, with its highest tick.
    pub nodes: Vec<(NodeName, Option<u64>)>,
    /// Whether it was built without a whole [`State`] (a stream in walk
    /// order).
    pub compact: bool,
}

impl Built {
    /// A copy of a whole state.
    pub fn of_state(st: &State) -> Built {
        Built {
            me: st.me().clone(),
            tree: Tree::from_state(st),
            digest: st.digest(),
            nodes: st.nodes().map(|(n, i)| (n.clone(), i.tick())).collect(),
            compact: false,
        }
    }
}

/// Builds a [`Built`] from a stream of node records and entries (see the
/// module docs): a compact [`Tree`] while the stream is in walk order, a
/// [`State`] from the first entry that is not.
pub struct TreeBuilder {
    /// The nodes' bookkeeping; the whole state once out of order.
    book: State,
    /// Highest tick passed to `book` per node, to skip repeats.
    ticks: FastMap<NodeName, u64>,
    /// `None` once out of order.
    compact: Option<(Tree, Shape)>,
    batch: SeenBatch,
}

impl TreeBuilder {
    /// A builder for the state of node `me`.
    pub fn new(me: &str) -> TreeBuilder {
        TreeBuilder {
            book: State::new(me, LIMITS),
            ticks: FastMap::default(),
            compact: Some((Tree::new(), Shape::new())),
            batch: SeenBatch::default(),
        }
    }

    /// A node record (as a snapshot has them).
    pub fn node(&mut self, name: &str, tick: Option<u64>, known: &RangeSet, deleted: &RangeSet) {
        self.book.restore_node(name, tick, known, deleted);
    }

    /// The next entry.
    pub fn entry(&mut self, item: EntryData) {
        let Some((tree, shape)) = &mut self.compact else {
            self.book.restore_entry_batched(
                &item.path,
                item.value,
                item.chain,
                item.tock,
                &mut self.batch,
            );
            return;
        };
        if let Some(chain) = &item.chain {
            for l in chain.links() {
                let seen = self.ticks.get(&l.node).copied();
                if seen.is_none_or(|t| t < l.tick) {
                    let empty = RangeSet::new();
                    self.book
                        .restore_node(&l.node, Some(l.tick), &empty, &empty);
                    self.ticks.insert(l.node.clone(), l.tick);
                }
            }
        }
        let Err(item) = shape.add(tree, item) else {
            return;
        };
        // Out of order: restore what was read, and go on in a state.
        let Some((tree, _)) = self.compact.take() else {
            return;
        };
        for it in tree.items.into_iter().chain([item]) {
            self.book
                .restore_entry_batched(&it.path, it.value, it.chain, it.tock, &mut self.batch);
        }
    }

    /// The node bookkeeping (e.g. to apply a live node's `get_state`).
    pub fn book_mut(&mut self) -> &mut State {
        &mut self.book
    }

    /// The side as read.
    pub fn finish(mut self) -> Built {
        let Some((mut tree, mut shape)) = self.compact else {
            self.book.finish_restore(self.batch);
            return Built::of_state(&self.book);
        };
        shape.close(&mut tree);
        let mut d = Digest::new();
        for it in tree.entries() {
            d.add_entry(&it.path, it.value.as_ref(), it.chain.as_ref(), it.tock);
        }
        let nodes: Vec<(NodeName, Option<u64>)> = self
            .book
            .nodes()
            .map(|(n, i)| (n.clone(), i.tick()))
            .collect();
        for (n, t) in &nodes {
            d.add_node(n, *t);
        }
        Built {
            me: self.book.me().clone(),
            tree,
            digest: d.value(),
            nodes,
            compact: true,
        }
    }
}
