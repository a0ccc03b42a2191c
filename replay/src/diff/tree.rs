//! A compact, read-only copy of an entry tree, built from a stream of
//! entries, for `diff`.
//!
//! Rebuilding a whole [`State`] from a snapshot or a live node only to
//! compare it costs far more than the comparison: every entry keeps its
//! own path, value and chain objects, a child map, tick bookkeeping
//! (present ticks by path), and the kernel has to clear every fresh page
//! of it (a third of the time at 1 M entries). A [`Tree`] keeps bytes:
//! one arena with each node's name and each entry's value and chain as
//! msgpack, and one fixed-size record per node (parent, name, name hash,
//! entry, where its subtree ends) and per entry (tock). No index: the
//! walk pairs children in order, and looks names up ([`ChildIndex`]) only
//! where the two trees' children are not in the same order. The decoded
//! entries are dropped as soon as they are copied, so their memory is
//! reused for the next ones.
//! Values compare by their encoding, as `diff` always compared them;
//! chains by their links. Entries are decoded again only to report them.
//!
//! Invariant: a [`Tree`] is exactly the tree a [`State`] would build from
//! the same entries ([`State::restore_entry_batched`] in stream order), and
//! its nodes are numbered in that state's walk order (depth-first, node
//! before children, children in insertion order). That holds by
//! construction when the stream comes in walk order — what a node's
//! snapshot writer and its `get_tree` produce: each entry either extends
//! the open branch or starts a new child of a node on it. The
//! [`TreeBuilder`] checks every entry for that; at the first one that
//! breaks it (an entry arriving after its descendants, names equal for
//! the tree but written differently) it stops building the compact tree,
//! restores the entries read so far (decoded again from the arena) and the
//! rest into a real [`State`], and copies that state's walk at the end:
//! slower, the same result. A branch reopened or a path seen before shows
//! only as two siblings of the same name; they are looked for once at the
//! end, in one sort of all nodes by (parent, name hash), with the same
//! fallback.
//!
//! Names are compared with the tree's equality (`1 == 1.0 == True`, as a
//! [`State`]'s child maps do): by a hash consistent with it, then by the
//! encoded bytes, and only when those differ by decoding both.
//!
//! Each side's tick bookkeeping is kept in a [`State`] without entries
//! (its `nodes` only), fed the ticks of every chain link in stream order:
//! node order and highest ticks come out as a full restore would make
//! them. The digest ([`State::digest`]) is summed entry by entry as they
//! come.

use std::hash::BuildHasher;
use std::sync::OnceLock;

use distkv_core::state::{Digest, SeenBatch, State};
use distkv_model::chain::Link;
use distkv_model::codec::{self, Limits};
use distkv_model::{Chain, NodeName, Path, RangeSet, Value};

use crate::engine::{FastMap, LIMITS};

/// "None" in the node and entry indices and lengths.
const NONE: u32 = u32::MAX;

/// Siblings sharing one name hash that [`Tree::has_twins`] still compares
/// pairwise.
const MAX_HASH_RUN: usize = 64;

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

/// A node of a [`Tree`].
pub type NodeId = u32;

/// One node of the tree.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Its name's encoding: `arena[name..name + name_len]`.
    name: u64,
    name_len: u32,
    /// Its parent (`NONE` for the root).
    parent: u32,
    /// [`name_hash`] of its name.
    hash: u64,
    /// Its entry, if one was read for it.
    entry: u32,
    /// One past the last node of its subtree.
    end: u32,
}

/// One entry: value and chain encoded in the arena, one after the other.
#[derive(Debug, Clone, Copy)]
struct Rec {
    at: u64,
    /// `NONE`: no value.
    value_len: u32,
    /// `NONE`: no chain.
    chain_len: u32,
    tock: u64,
}

/// An entry of a [`Tree`], as stored.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    /// The value's encoding.
    pub value: Option<&'a [u8]>,
    /// The chain's encoding (see [`encode_chain`]).
    pub chain: Option<&'a [u8]>,
    /// The tock.
    pub tock: u64,
}

impl EntryRef<'_> {
    /// Whether it holds a value or a chain: what a walk reports.
    pub fn is_set(&self) -> bool {
        self.value.is_some() || self.chain.is_some()
    }

    /// The value, decoded.
    pub fn value(&self) -> Option<Value> {
        self.value
            .and_then(|b| codec::decode_with(b, REDECODE).ok())
    }

    /// The chain, decoded.
    pub fn chain(&self) -> Option<Chain> {
        self.chain.and_then(decode_chain)
    }
}

/// Limits for decoding what this module encoded itself (it was checked
/// when it was first read).
const REDECODE: Limits = Limits {
    max_frame: usize::MAX,
    max_depth: 1 << 16,
    foreign_ext: true,
};

/// A hash of a name consistent with the tree's equality, the same for
/// every tree of the process (lookups go from one tree to the other);
/// randomly seeded, as names come from files and the network.
fn name_hash(v: &Value) -> u64 {
    static HASHER: OnceLock<foldhash::quality::RandomState> = OnceLock::new();
    HASHER.get_or_init(Default::default).hash_one(v)
}

/// A chain as bytes: each link's node name and tick, head first.
fn encode_chain(c: &Chain, out: &mut Vec<u8>) {
    for l in c.links() {
        codec::write_str(out, &l.node);
        codec::write_uint(out, l.tick);
    }
}

fn decode_chain(mut b: &[u8]) -> Option<Chain> {
    let mut links = Vec::new();
    while !b.is_empty() {
        let (node, n) = codec::decode_prefix(b, REDECODE).ok()?;
        let (tick, m) = codec::decode_prefix(b.get(n..)?, REDECODE).ok()?;
        links.push(Link {
            node: NodeName::from(node.as_str()?),
            tick: tick.as_u64()?,
        });
        b = b.get(n + m..)?;
    }
    Chain::from_links(links)
}

/// A compact entry tree; see the module docs.
#[derive(Debug)]
pub struct Tree {
    arena: Vec<u8>,
    /// In walk order; node 0 is the root.
    nodes: Vec<Node>,
    recs: Vec<Rec>,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            arena: Vec::new(),
            nodes: vec![Node {
                name: 0,
                name_len: 0,
                parent: NONE,
                hash: 0,
                entry: NONE,
                end: 1,
            }],
            recs: Vec::new(),
        }
    }

    /// The root.
    pub fn root(&self) -> NodeId {
        0
    }

    /// The number of nodes (the root included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree is only a root.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    /// A copy of `st`'s tree (meta tree included).
    pub fn from_state(st: &State) -> Tree {
        let mut shape = Shape::new();
        let mut t = Tree::new();
        let mut value = Vec::new();
        st.for_each_entry(true, |e, path| {
            let data = e.data().map(|v| {
                value.clear();
                codec::encode(&v, &mut value);
                &value[..]
            });
            // A state's walk is in walk order: this cannot fail.
            let fits = shape.add(&mut t, path, data, e.chain().as_deref(), e.tock());
            debug_assert!(fits.is_ok(), "a state's walk is in walk order");
        });
        shape.close(&mut t);
        t
    }

    /// The node's entry, if it has one holding a value or a chain.
    pub fn entry(&self, n: NodeId) -> Option<EntryRef<'_>> {
        let r = self.recs.get(self.nodes[n as usize].entry as usize)?;
        let e = self.entry_ref(r);
        e.is_set().then_some(e)
    }

    fn entry_ref(&self, r: &Rec) -> EntryRef<'_> {
        let at = r.at as usize;
        let vlen = if r.value_len == NONE {
            0
        } else {
            r.value_len as usize
        };
        EntryRef {
            value: (r.value_len != NONE).then(|| &self.arena[at..at + vlen]),
            chain: (r.chain_len != NONE)
                .then(|| &self.arena[at + vlen..at + vlen + r.chain_len as usize]),
            tock: r.tock,
        }
    }

    fn name_bytes(&self, n: NodeId) -> &[u8] {
        let node = &self.nodes[n as usize];
        &self.arena[node.name as usize..node.name as usize + node.name_len as usize]
    }

    /// The node's full path.
    pub fn path(&self, n: NodeId) -> Path {
        let mut names = Vec::new();
        let mut at = n;
        while at != 0 && at != NONE {
            names.push(codec::decode_with(self.name_bytes(at), REDECODE).unwrap_or(Value::Nil));
            at = self.nodes[at as usize].parent;
        }
        names.reverse();
        Path::new(names)
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

    /// The node's first child.
    pub fn first_child(&self, n: NodeId) -> Option<NodeId> {
        (n + 1 < self.nodes[n as usize].end).then_some(n + 1)
    }

    /// The sibling after child `c` of `parent`.
    pub fn next_sibling(&self, parent: NodeId, c: NodeId) -> Option<NodeId> {
        let next = self.nodes[c as usize].end;
        (next < self.nodes[parent as usize].end).then_some(next)
    }

    /// Whether node `n` has the name of `other`'s node `o`, by the tree's
    /// equality (`1 == 1.0`).
    pub fn same_name(&self, n: NodeId, other: &Tree, o: NodeId) -> bool {
        let (mine, theirs) = (&self.nodes[n as usize], &other.nodes[o as usize]);
        if mine.hash != theirs.hash {
            return false;
        }
        let (x, y) = (self.name_bytes(n), other.name_bytes(o));
        x == y || equal_names(x, y)
    }

    /// Whether some two children of a node have the same name: the
    /// stream was not in walk order after all (see the module docs).
    fn has_twins(&self) -> bool {
        let mut keys: Vec<(u32, u64, u32)> = (1..self.nodes.len() as u32)
            .map(|n| {
                (
                    self.nodes[n as usize].parent,
                    self.nodes[n as usize].hash,
                    n,
                )
            })
            .collect();
        keys.sort_unstable();
        keys.chunk_by(|x, y| (x.0, x.1) == (y.0, y.1))
            .filter(|run| run.len() > 1)
            .any(|run| {
                // Many siblings of one hash (maps as names hash by their
                // length only): not worth comparing each pair; a state
                // settles it.
                run.len() > MAX_HASH_RUN
                    || run
                        .iter()
                        .enumerate()
                        .any(|(i, x)| run[i + 1..].iter().any(|y| self.same_name(x.2, self, y.2)))
            })
    }
}

/// Whether two differently encoded names are equal for the tree.
fn equal_names(x: &[u8], y: &[u8]) -> bool {
    match (
        codec::decode_with(x, REDECODE),
        codec::decode_with(y, REDECODE),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The children of one node of a [`Tree`], by name hash: for looking up
/// the namesakes of another tree's children when the two are not in the
/// same order.
#[derive(Debug)]
pub struct ChildIndex(Vec<(u64, NodeId)>);

impl ChildIndex {
    /// The index of `t`'s node `n`'s children.
    pub fn new(t: &Tree, n: NodeId) -> ChildIndex {
        let mut v: Vec<(u64, NodeId)> = t
            .children(n)
            .map(|c| (t.nodes[c as usize].hash, c))
            .collect();
        v.sort_unstable();
        ChildIndex(v)
    }

    /// The child (of `t`, the tree indexed) with the name of `other`'s
    /// node `o`.
    pub fn find(&self, t: &Tree, other: &Tree, o: NodeId) -> Option<NodeId> {
        let hash = other.nodes[o as usize].hash;
        let from = self.0.partition_point(|&(h, _)| h < hash);
        self.0[from..]
            .iter()
            .take_while(|&&(h, _)| h == hash)
            .map(|&(_, c)| c)
            .find(|&c| t.same_name(c, other, o))
    }
}

/// The open branch while a [`Tree`] is built in walk order.
struct Shape {
    /// The open nodes, root first.
    open: Vec<NodeId>,
    /// Scratch space for encoding names.
    buf: Vec<u8>,
}

/// An entry that does not come in walk order.
#[derive(Debug)]
struct OutOfOrder;

impl Shape {
    fn new() -> Shape {
        Shape {
            open: vec![0],
            buf: Vec::new(),
        }
    }

    /// Adds an entry (its value as its encoding) to `t`, or refuses it,
    /// leaving `t` as it was, if it is not in walk order.
    fn add(
        &mut self,
        t: &mut Tree,
        path: &[Value],
        value: Option<&[u8]>,
        chain: Option<&Chain>,
        tock: u64,
    ) -> Result<(), OutOfOrder> {
        if t.nodes.len() + path.len() >= NONE as usize {
            // Beyond what the compact tree numbers.
            return Err(OutOfOrder);
        }
        // How much of the open branch the path follows.
        let mut depth = 0;
        let mut hash = 0;
        while depth < path.len() {
            hash = name_hash(&path[depth]);
            let Some(&open) = self.open.get(depth + 1) else {
                break;
            };
            if t.nodes[open as usize].hash != hash {
                break;
            }
            self.buf.clear();
            codec::encode(&path[depth], &mut self.buf);
            if t.name_bytes(open) != self.buf.as_slice() {
                if equal_names(t.name_bytes(open), &self.buf) {
                    // Equal for the tree, written differently: the state
                    // keeps the first spelling in its paths.
                    return Err(OutOfOrder);
                }
                break;
            }
            depth += 1;
        }
        let newest = t.nodes.len() as u32 - 1;
        if depth == path.len() {
            // The path names an open node: only the newest node, without
            // an entry yet, may get one (the root, first of all).
            let at = self.open[depth];
            if at != newest || t.nodes[at as usize].entry != NONE {
                return Err(OutOfOrder);
            }
            self.close_to(t, depth + 1);
            t.nodes[at as usize].entry = push_rec(t, value, chain, tock);
            return Ok(());
        }
        // A new branch below open node `depth`. Its first name should be
        // new there (an old sibling's subtree is closed): checked at the
        // end ([`Tree::has_twins`]).
        let mut parent = self.open[depth];
        self.close_to(t, depth + 1);
        for (d, name) in path.iter().enumerate().skip(depth) {
            let hash = if d == depth { hash } else { name_hash(name) };
            let at = t.arena.len();
            codec::encode(name, &mut t.arena);
            let id = t.nodes.len() as u32;
            t.nodes.push(Node {
                name: at as u64,
                name_len: (t.arena.len() - at) as u32,
                parent,
                hash,
                entry: NONE,
                end: NONE,
            });
            self.open.push(id);
            parent = id;
        }
        t.nodes[parent as usize].entry = push_rec(t, value, chain, tock);
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

/// Appends an entry's record (its value as its encoding); returns its
/// index.
fn push_rec(t: &mut Tree, value: Option<&[u8]>, chain: Option<&Chain>, tock: u64) -> u32 {
    let at = t.arena.len();
    let value_len = match value {
        Some(v) => {
            t.arena.extend_from_slice(v);
            v.len() as u32
        }
        None => NONE,
    };
    let chain_at = t.arena.len();
    let chain_len = match chain {
        Some(c) => {
            encode_chain(c, &mut t.arena);
            (t.arena.len() - chain_at) as u32
        }
        None => NONE,
    };
    t.recs.push(Rec {
        at: at as u64,
        value_len,
        chain_len,
        tock,
    });
    t.recs.len() as u32 - 1
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
    compact: Option<(Tree, Shape, Digest)>,
    batch: SeenBatch,
    /// Scratch space for encoding values.
    value: Vec<u8>,
}

impl TreeBuilder {
    /// A builder for the state of node `me`.
    pub fn new(me: &str) -> TreeBuilder {
        TreeBuilder {
            book: State::new(me, LIMITS),
            ticks: FastMap::default(),
            compact: Some((Tree::new(), Shape::new(), Digest::new())),
            batch: SeenBatch::default(),
            value: Vec::new(),
        }
    }

    /// A node record (as a snapshot has them).
    pub fn node(&mut self, name: &str, tick: Option<u64>, known: &RangeSet, deleted: &RangeSet) {
        self.book.restore_node(name, tick, known, deleted);
    }

    /// The next entry.
    pub fn entry(&mut self, e: EntryData) {
        if self.compact.is_some() {
            let mut value = std::mem::take(&mut self.value);
            value.clear();
            if let Some(v) = &e.value {
                codec::encode(v, &mut value);
            }
            let data = e.value.is_some().then_some(&value[..]);
            let fits = self.add_compact(&e.path, data, e.chain.as_ref(), e.tock);
            self.value = value;
            if fits {
                return;
            }
            self.leave_compact();
        }
        self.restore(e);
    }

    /// The next entry, its value given as its encoding (as
    /// [`codec::encode`] writes it): what a live node's reply holds.
    pub fn entry_encoded(
        &mut self,
        path: &[Value],
        value: Option<&[u8]>,
        chain: Option<&Chain>,
        tock: u64,
    ) {
        if self.compact.is_some() {
            if self.add_compact(path, value, chain, tock) {
                return;
            }
            self.leave_compact();
        }
        self.restore(EntryData {
            path: Path::new(path.to_vec()),
            value: value.and_then(|b| codec::decode_with(b, REDECODE).ok()),
            chain: chain.cloned(),
            tock,
        });
    }

    /// Adds an entry to the compact tree, its digest and the nodes'
    /// ticks; `false` (nothing added) if it is not in walk order.
    fn add_compact(
        &mut self,
        path: &[Value],
        value: Option<&[u8]>,
        chain: Option<&Chain>,
        tock: u64,
    ) -> bool {
        let Some((tree, shape, digest)) = &mut self.compact else {
            return false;
        };
        if shape.add(tree, path, value, chain, tock).is_err() {
            return false;
        }
        if value.is_some() || chain.is_some() {
            digest.add_encoded_entry(path, value, chain, tock);
        }
        for l in chain.into_iter().flat_map(Chain::links) {
            let seen = self.ticks.get(&l.node).copied();
            if seen.is_none_or(|t| t < l.tick) {
                let empty = RangeSet::new();
                self.book
                    .restore_node(&l.node, Some(l.tick), &empty, &empty);
                self.ticks.insert(l.node.clone(), l.tick);
            }
        }
        true
    }

    /// Out of order: restores what was read into the state, which takes
    /// every entry from now on.
    fn leave_compact(&mut self) {
        if let Some((tree, _, _)) = self.compact.take() {
            self.restore_tree(&tree);
        }
    }

    /// Restores every entry of `tree` in the order read (the nodes' order:
    /// each entry read made at least one node, except the root's).
    fn restore_tree(&mut self, tree: &Tree) {
        for n in 0..tree.nodes.len() as u32 {
            let Some(r) = tree.recs.get(tree.nodes[n as usize].entry as usize) else {
                continue;
            };
            let r = tree.entry_ref(r);
            self.restore(EntryData {
                path: tree.path(n),
                value: r.value(),
                chain: r.chain(),
                tock: r.tock,
            });
        }
    }

    fn restore(&mut self, e: EntryData) {
        self.book
            .restore_entry_batched(&e.path, e.value, e.chain, e.tock, &mut self.batch);
    }

    /// The node bookkeeping (e.g. to apply a live node's `get_state`).
    pub fn book_mut(&mut self) -> &mut State {
        &mut self.book
    }

    /// The side as read.
    pub fn finish(mut self) -> Built {
        let Some((mut tree, mut shape, mut digest)) = self.compact.take() else {
            self.book.finish_restore(self.batch);
            return Built::of_state(&self.book);
        };
        shape.close(&mut tree);
        if tree.has_twins() {
            self.restore_tree(&tree);
            drop(tree);
            self.book.finish_restore(self.batch);
            return Built::of_state(&self.book);
        }
        let nodes: Vec<(NodeName, Option<u64>)> = self
            .book
            .nodes()
            .map(|(n, i)| (n.clone(), i.tick()))
            .collect();
        for (n, t) in &nodes {
            digest.add_node(n, *t);
        }
        Built {
            me: self.book.me().clone(),
            tree,
            digest: digest.value(),
            nodes,
            compact: true,
        }
    }
}
