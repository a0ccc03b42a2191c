//! The entry tree and resumable walks over it.
//!
//! Every entry has a name (its last path element), its children (in
//! insertion order, like Python's dicts), its value (`None` = no data, e.g.
//! an intermediate node or a deletion tombstone; `Some(Value::Nil)` is a
//! stored nil), its chain and the tock of its last change. A new child
//! inherits its parent's tock.
//!
//! Layout, for memory (docs/perf.md, "Memory"): the entries live in one
//! arena of slots addressed by [`EntryId`]s, in chunks of fixed size so
//! that growing never moves (or copies) the entries already there. A slot
//! holds its name and its parent's id, not its full path: the path is
//! computed by walking up ([`Entry::path`]) when somebody needs it. A
//! parent's children are a vector of ids in insertion order plus a hash
//! table of those ids, hashed by the names in their slots (nothing stored
//! twice), kept in a table of their own that the parent's slot indexes.
//! Freed slots are reused. Invariant: an id held anywhere (a parent's
//! children, the tick bookkeeping) names a live slot.
//!
//! Keys come in runs under one parent (`bench.1`, `bench.2`, …; a cluster's
//! changes under `data.`): [`Tree::follow_create`] keeps the ids along the
//! path it followed last and starts the next path below the longest prefix
//! they share, compared name by name, without hashing or probing. Only names
//! whose equality is plain (strings, byte strings, integers, nil: equal
//! means the same type and the same bytes or number) are taken from it;
//! any other name is looked up as before, so the cache finds exactly the
//! child a look-up would. It is cleared whenever a slot is freed, so the
//! ids it holds are live, each the child of the one before.
//!
//! A slot keeps its name and value [`Packed`] (16 bytes each instead of a
//! `Value`'s 32) and its chain as a `SlotChain` (16 bytes: a single
//! link's node is an index into the tree's table of node names). Readers
//! get borrowed views that deref to `&Value` / `&Chain` ([`ValueRef`],
//! [`ChainRef`]), made without copying or counting references.
//!
//! A snapshot's load adds its entries in the order a snapshot holds them:
//! depth first, parents before children, each subtree whole. In that order
//! a child added below a parent whose children all came with the load is
//! a new one, so [`Tree::begin_in_order`] skips the look-up and leaves the
//! parent's hash table empty; [`Tree::end_in_order`] builds each such
//! table from the insertion order in one pass (no look-up missing the
//! cache per entry, no growing) and says whether the order was kept, i.e.
//! whether no parent got the same name twice. A load that breaks the order
//! is done again the usual way (`persist::snap::load`).
//!
//! A run of events being applied is looked ahead of (`state::ahead`): the
//! tree hands out, without changing anything, where a child's look-up will
//! read — the part of its parent's table where its name's hash starts
//! probing, then the slot of the first id whose hash tag fits, then its
//! chain — so that those loads are asked for early. The table's address
//! comes from hashbrown's layout (buckets below the control bytes), kept in
//! [`Children`] whenever a table is built; a test holds the layout to it.
//!
//! [`Entry`] is a cheap, copyable view of one slot and the tree around it;
//! reading goes through it. Changes go through [`Tree`]'s crate-private
//! methods.
//!
//! [`WalkCursor`] walks a subtree depth-first, node before children, in
//! chunks: the caller can release its lock between chunks. The cursor is a
//! stack of child indices; children are only appended between chunks except
//! when purged, in which case a walk may skip an entry — a walk is a view of
//! a changing tree, and watchers get the changes anyway. Along the open
//! levels it keeps their names (found again from the indices when a chunk
//! resumes) and hands each visited entry its path relative to the start:
//! a walk never computes paths entry by entry.

use std::hash::BuildHasher;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr::{slice_from_raw_parts, NonNull};
use std::sync::Arc;

use distkv_model::{Chain, Link, NameNumbers, NodeName, Packed, Path, Value, ValueRef};
use hashbrown::HashTable;
use indexmap::IndexMap;

use super::ahead;

/// Insertion-ordered map with a fast, randomly seeded hasher (keys come from
/// the network, so the seed matters; the quality variant for the reason
/// [`NameHasher`] gives).
pub type Map<K, V> = IndexMap<K, V, foldhash::quality::RandomState>;

/// How a [`Tree`] hashes its children's names: seeded at random (names come
/// from the network), and mixed once more than foldhash's fast variant, whose
/// hashes of consecutive integers share their top bits under some seeds —
/// the bits hashbrown tells a table's entries apart by (docs/perf.md).
type NameHasher = foldhash::quality::SeedableRandomState;

/// The index of an entry's slot in its [`Tree`].
pub type EntryId = u32;

/// The root's id.
pub(crate) const ROOT: EntryId = 0;
/// The parent of the root (and of free slots).
const NO_PARENT: EntryId = EntryId::MAX;
/// Slots per chunk of the arena (a power of two).
const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;

/// One entry's slot.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Packed: 16 bytes instead of a `Value`'s 32.
    name: Packed,
    parent: EntryId,
    /// Where its children are in [`Tree`]'s table of children (`None` for
    /// leaves, most entries): 4 bytes where a box took 8.
    children: Option<KidsId>,
    /// Packed: 16 bytes instead of a `Value`'s 32.
    pub(crate) data: Option<Packed>,
    chain: SlotChain,
    pub(crate) tock: u64,
}

/// An entry's chain in 16 bytes (an `Option<Chain>` takes 32): one link
/// with its node as an index into [`Tree`]'s table of node names, or the
/// shared links of a longer chain behind a thin pointer (the `Arc<[Link]>`
/// of the `Chain` it was made from, `len` links at `ptr`).
#[derive(Debug)]
enum SlotChain {
    None,
    One { node: u32, tick: u64 },
    Many { len: u32, ptr: NonNull<Link> },
}

// A `SlotChain` owns an `Arc<[Link]>` at most, which is `Send` and `Sync`.
unsafe impl Send for SlotChain {}
unsafe impl Sync for SlotChain {}

impl Drop for SlotChain {
    fn drop(&mut self) {
        if let SlotChain::Many { len, ptr } = *self {
            // SAFETY: `Tree::set_chain` made `ptr` with `Arc::into_raw` of
            // `len` links, and this is its only owner.
            drop(unsafe { Arc::from_raw(slice_from_raw_parts(ptr.as_ptr(), len as usize)) });
        }
    }
}

/// An entry's chain, borrowed from its [`Tree`]: derefs to the [`Chain`].
/// Made without reference counting or allocating.
pub struct ChainRef<'a> {
    /// Rebuilt from the slot's parts; never dropped.
    chain: ManuallyDrop<Chain>,
    tree: PhantomData<&'a Tree>,
}

impl Deref for ChainRef<'_> {
    type Target = Chain;
    fn deref(&self) -> &Chain {
        &self.chain
    }
}

impl std::fmt::Debug for ChainRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.chain, f)
    }
}

impl Slot {
    fn new(name: Packed, parent: EntryId, tock: u64) -> Slot {
        Slot {
            name,
            parent,
            children: None,
            data: None,
            chain: SlotChain::None,
            tock,
        }
    }
}

/// A slot's chain, borrowed as the slot holds it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SlotLinks<'t> {
    None,
    /// One link, its node's name from the tree's table.
    One(&'t NodeName, u64),
    Many(&'t [Link]),
}

/// 1 + the index of a parent's [`Children`] in [`Tree`]'s table.
type KidsId = std::num::NonZeroU32;

/// A parent's children: ids in insertion order, and a hash table of the
/// same ids for lookups by name.
#[derive(Debug, Default)]
struct Children {
    order: Vec<EntryId>,
    index: HashTable<EntryId>,
    /// Made during an in-order load: `index` is empty until
    /// [`Tree::end_in_order`] builds it.
    in_order: bool,
    /// Where `index` keeps its control bytes, as hashbrown lays a table
    /// out: the buckets of ids below, bucket `i` at `end - 4 (i + 1)`, the
    /// control bytes from `end` on (`Tree::table_end`; a test holds the
    /// layout to it); 0 while unknown. Only ever used to prefetch
    /// (`state::ahead`): a stale or wrong address costs time, not
    /// correctness.
    end: usize,
}

/// The arena of entries; slot [`ROOT`] is the root.
#[derive(Debug)]
pub struct Tree {
    chunks: Vec<Vec<Slot>>,
    free: Vec<EntryId>,
    hasher: NameHasher,
    /// Every parent's children, by [`KidsId`]; freed ones (empty) are
    /// reused.
    kids: Vec<Children>,
    free_kids: Vec<KidsId>,
    /// The node names of single-link chains, by index; only ever grows
    /// (a cluster has few nodes: every name a chain ever held).
    nodes: Vec<NodeName>,
    /// Their indices (a node's changes come in runs, with the same
    /// allocation for its name: found by its address).
    node_ids: NameNumbers,
    /// The entries along the path [`Tree::follow_create`] followed last
    /// from the root: `last_path[i]` is at depth `i + 1` (see the module's
    /// text). Emptied whenever a slot is freed.
    last_path: Vec<EntryId>,
    /// During an in-order load ([`Tree::begin_in_order`]): the children
    /// whose tables wait for its end.
    in_order: Option<Vec<KidsId>>,
}

impl Default for Tree {
    fn default() -> Tree {
        Tree::with_hasher(NameHasher::default())
    }
}

impl Tree {
    /// An empty tree whose tables hash names with `hasher`.
    fn with_hasher(hasher: NameHasher) -> Tree {
        let mut t = Tree {
            chunks: Vec::new(),
            free: Vec::new(),
            hasher,
            kids: Vec::new(),
            free_kids: Vec::new(),
            nodes: Vec::new(),
            node_ids: NameNumbers::default(),
            last_path: Vec::new(),
            in_order: None,
        };
        t.alloc(Slot::new(Packed::new(Value::Nil), NO_PARENT, 0));
        t
    }

    /// Bytes of one entry's slot in the arena (its value's, its chain's
    /// and its children's allocations come on top).
    pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

    pub(crate) fn slot(&self, id: EntryId) -> &Slot {
        &self.chunks[id as usize >> CHUNK_BITS][id as usize & (CHUNK - 1)]
    }

    pub(crate) fn slot_mut(&mut self, id: EntryId) -> &mut Slot {
        &mut self.chunks[id as usize >> CHUNK_BITS][id as usize & (CHUNK - 1)]
    }

    /// Entry `id`'s children, if it has any.
    fn kids(&self, id: EntryId) -> Option<&Children> {
        let k = self.slot(id).children?;
        Some(&self.kids[k.get() as usize - 1])
    }

    /// The view of entry `id`.
    pub(crate) fn entry(&self, id: EntryId) -> Entry<'_> {
        Entry { tree: self, id }
    }

    /// The root entry.
    pub fn root(&self) -> Entry<'_> {
        self.entry(ROOT)
    }

    /// Sets entry `id`'s chain.
    pub(crate) fn set_chain(&mut self, id: EntryId, chain: Option<Chain>) {
        let packed = match chain.map(Chain::into_parts) {
            None => SlotChain::None,
            Some(Ok(Link { node, tick })) => SlotChain::One {
                node: self.node_index(node),
                tick,
            },
            Some(Err(links)) => Self::many(links),
        };
        self.slot_mut(id).chain = packed;
    }

    /// Sets entry `id`'s chain and hands back the one it had, taken out of
    /// the slot (a longer chain's links are moved, not shared and released).
    pub(crate) fn replace_chain(&mut self, id: EntryId, chain: Option<Chain>) -> Option<Chain> {
        let old = ManuallyDrop::new(std::mem::replace(
            &mut self.slot_mut(id).chain,
            SlotChain::None,
        ));
        let old = match *old {
            SlotChain::None => None,
            SlotChain::One { node, tick } => {
                Some(Chain::single(self.nodes[node as usize].clone(), tick))
            }
            // SAFETY: `ptr`/`len` are the slot's `Arc<[Link]>` (`many`),
            // whose ownership passes to the chain: `old` is never dropped.
            SlotChain::Many { len, ptr } => Chain::from_shared(unsafe {
                Arc::from_raw(slice_from_raw_parts(
                    ptr.as_ptr().cast_const(),
                    len as usize,
                ))
            }),
        };
        self.set_chain(id, chain);
        old
    }

    /// The index of `node` in the table of node names, which gains it if
    /// new.
    fn node_index(&mut self, node: NodeName) -> u32 {
        let n = self.node_ids.number(&node);
        if n as usize == self.nodes.len() {
            self.nodes.push(node);
        }
        n
    }

    fn many(links: Arc<[Link]>) -> SlotChain {
        // Chains are cut far below 2^32 links (`MAX_CHAIN_LINKS`).
        let len = u32::try_from(links.len()).expect("chains are short");
        let ptr = NonNull::new(Arc::into_raw(links).cast::<Link>().cast_mut())
            .expect("an Arc is never null");
        SlotChain::Many { len, ptr }
    }

    /// Entry `id`'s chain, borrowed.
    fn chain_ref(&self, id: EntryId) -> Option<ChainRef<'_>> {
        let chain = match self.slot(id).chain {
            SlotChain::None => return None,
            // SAFETY: a bitwise copy of the table's name that is never
            // dropped (no count taken, none released); the table is
            // borrowed, unchanged, for the view's lifetime.
            SlotChain::One { node, tick } => {
                Chain::single(unsafe { std::ptr::read(&self.nodes[node as usize]) }, tick)
            }
            // SAFETY: `ptr`/`len` are the slot's `Arc<[Link]>` (`many`);
            // the rebuilt chain is never dropped.
            SlotChain::Many { len, ptr } => Chain::from_shared(unsafe {
                Arc::from_raw(slice_from_raw_parts(
                    ptr.as_ptr().cast_const(),
                    len as usize,
                ))
            })?,
        };
        Some(ChainRef {
            chain: ManuallyDrop::new(chain),
            tree: PhantomData,
        })
    }

    fn alloc(&mut self, slot: Slot) -> EntryId {
        if let Some(id) = self.free.pop() {
            *self.slot_mut(id) = slot;
            return id;
        }
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let id = (self.chunks.len() - 1) * CHUNK + self.chunks.last().map_or(0, Vec::len);
        // Ids are u32: 4 G entries would need far more memory than a node has.
        let id = EntryId::try_from(id).expect("fewer than 2^32 entries");
        if let Some(c) = self.chunks.last_mut() {
            c.push(slot);
        }
        id
    }

    fn hash(&self, name: &Value) -> u64 {
        self.hasher.hash_one(name)
    }

    /// The hash of entry `id`'s name, as its parent's table holds it.
    fn name_hash(&self, id: EntryId) -> u64 {
        self.hash(&self.slot(id).name.view())
    }

    /// The child of `parent` named `name`.
    fn find(&self, parent: EntryId, name: &Value) -> Option<EntryId> {
        let kids = self.kids(parent)?;
        if kids.in_order {
            // Nothing looks children up during a load; should anything,
            // it finds them in their order (slowly).
            return kids
                .order
                .iter()
                .copied()
                .find(|&c| self.slot(c).name.view() == *name);
        }
        kids.index
            .find(self.hash(name), |&c| self.slot(c).name.view() == *name)
            .copied()
    }

    /// Slot `id`, if the arena has it.
    fn get_slot(&self, id: EntryId) -> Option<&Slot> {
        self.chunks
            .get(id as usize >> CHUNK_BITS)?
            .get(id as usize & (CHUNK - 1))
    }

    /// For a look-ahead (`state::ahead`): looks up the parent of the entry
    /// at `rel` (the levels it shares with the path followed last taken
    /// from there) and asks for the part of its table where the entry's
    /// name starts probing. The parent and the name's hash, for
    /// [`Tree::prefetch_slot`].
    pub(crate) fn prefetch_table(&self, rel: &[Value]) -> Option<(EntryId, u64)> {
        let (name, up) = rel.split_last()?;
        // Runs of keys share their parents: mostly the apply's last one.
        let (at, depth) = self.along_last_path(up);
        let parent = self.entry(at).follow(&up[depth..])?.id;
        let hash = self.hash(name);
        if let Some(kids) = self.kids(parent).filter(|k| k.end != 0) {
            prefetch_bucket(&kids.index, kids.end, hash);
        }
        Some((parent, hash))
    }

    /// For a look-ahead: the first child of `parent` whose name `hash` may
    /// be (its name is not compared: its slot is asked for), after
    /// [`Tree::prefetch_table`].
    pub(crate) fn prefetch_slot(&self, parent: EntryId, hash: u64) -> Option<EntryId> {
        let id = *self.kids(parent)?.index.iter_hash(hash).next()?;
        self.prefetch_slot_of(id);
        Some(id)
    }

    /// Asks for entry `id`'s slot (both lines, should it straddle two).
    fn prefetch_slot_of(&self, id: EntryId) {
        if let Some(slot) = self.get_slot(id) {
            let slot: *const Slot = slot;
            ahead::prefetch(slot);
            ahead::prefetch(slot.cast::<u8>().wrapping_add(size_of::<Slot>() - 1));
        }
    }

    /// For a look-ahead: entry `id`'s chain, if its name is `name`; a
    /// longer chain's links are asked for.
    pub(crate) fn prefetch_links(&self, id: EntryId, name: Option<&Value>) -> SlotLinks<'_> {
        let Some(slot) = self.get_slot(id) else {
            return SlotLinks::None;
        };
        if name.is_none_or(|n| slot.name.view() != *n) {
            return SlotLinks::None;
        }
        let links = self.links(id);
        if let SlotLinks::Many(l) = links {
            ahead::prefetch(l.as_ptr());
        }
        links
    }

    /// For a look-ahead: asks for what entry `id`'s value owns (a
    /// string's count and first bytes), which a change compares with the
    /// new value and a read encodes.
    pub(crate) fn prefetch_data(&self, id: EntryId) {
        if let Some(data) = self.get_slot(id).and_then(|s| s.data.as_ref()) {
            data.view().prefetch();
        }
    }

    /// Entry `id`'s chain as its slot holds it.
    pub(crate) fn links(&self, id: EntryId) -> SlotLinks<'_> {
        match self.get_slot(id).map(|s| &s.chain) {
            None | Some(SlotChain::None) => SlotLinks::None,
            Some(&SlotChain::One { node, tick }) => match self.nodes.get(node as usize) {
                Some(name) => SlotLinks::One(name, tick),
                None => SlotLinks::None,
            },
            // SAFETY: `ptr`/`len` are the slot's `Arc<[Link]>` (`many`),
            // which lives while the tree is borrowed.
            Some(&SlotChain::Many { len, ptr }) => {
                SlotLinks::Many(unsafe { std::slice::from_raw_parts(ptr.as_ptr(), len as usize) })
            }
        }
    }

    /// Follows `rel` from the root, creating missing entries. The levels
    /// it shares with the path followed last are taken from `last_path`.
    pub(crate) fn follow_create(&mut self, rel: &[Value]) -> EntryId {
        let (mut at, depth) = self.along_last_path(rel);
        self.last_path.truncate(depth);
        for name in &rel[depth..] {
            let in_order = self.in_order.is_some() && self.kids(at).is_none_or(|k| k.in_order);
            at = match in_order {
                // New: see the module's text.
                true => self.add_in_order(at, name),
                false => match self.find(at, name) {
                    Some(c) => c,
                    None => self.add_child(at, name),
                },
            };
            self.last_path.push(at);
        }
        at
    }

    /// Right after [`Tree::follow_create`] of `rel`: whether each of its
    /// names is of the same type and value as the tree's own (see
    /// [`plain_eq`]), so that `rel` names its entry as the tree does.
    pub(crate) fn followed_as_named(&self, rel: &[Value]) -> bool {
        self.along_last_path(rel).1 == rel.len()
    }

    /// How far `rel` goes along the path followed last: the entry there
    /// (the root if nowhere) and the number of names of `rel` it took.
    fn along_last_path(&self, rel: &[Value]) -> (EntryId, usize) {
        let mut at = ROOT;
        let mut depth = 0;
        while let (Some(name), Some(&id)) = (rel.get(depth), self.last_path.get(depth)) {
            if !plain_eq(&self.slot(id).name.view(), name) {
                break;
            }
            at = id;
            depth += 1;
        }
        (at, depth)
    }

    /// Starts an in-order load (see the module's text): until
    /// [`Tree::end_in_order`], [`Tree::follow_create`] takes a child
    /// below a parent whose children all came since to be new.
    pub(crate) fn begin_in_order(&mut self) {
        self.in_order.get_or_insert_with(Vec::new);
    }

    /// Ends an in-order load: builds the tables it left empty. False if
    /// the order was broken (a parent got the same name twice: the tree
    /// holds both, one of them not in the table, and is only fit to be
    /// dropped).
    pub(crate) fn end_in_order(&mut self) -> bool {
        let mut kept = true;
        for k in self.in_order.take().unwrap_or_default() {
            let at = k.get() as usize - 1;
            let mut kids = std::mem::take(&mut self.kids[at]);
            // The room a table that grew by itself would have.
            let (index, end, unique) = self.index_of(&kids.order, kids.order.len());
            kept &= unique;
            kids.end = end;
            kids.index = index;
            kids.in_order = false;
            self.kids[at] = kids;
        }
        kept
    }

    fn add_in_order(&mut self, parent: EntryId, name: &Value) -> EntryId {
        let id = self.new_child(parent, name);
        let k = match self.slot(parent).children {
            Some(k) => k,
            None => {
                let k = self.new_children(parent);
                self.kids[k.get() as usize - 1].in_order = true;
                if let Some(waiting) = &mut self.in_order {
                    waiting.push(k);
                }
                k
            }
        };
        self.kids[k.get() as usize - 1].order.push(id);
        id
    }

    /// A new slot for child `name` of `parent`, which inherits its tock.
    fn new_child(&mut self, parent: EntryId, name: &Value) -> EntryId {
        let tock = self.slot(parent).tock;
        self.alloc(Slot::new(Packed::new(name.clone()), parent, tock))
    }

    /// New (empty) children for `parent`, which has none.
    fn new_children(&mut self, parent: EntryId) -> KidsId {
        let k = self.free_kids.pop().unwrap_or_else(|| {
            self.kids.push(Children::default());
            // Fewer parents than entries, which are fewer than 2^32.
            KidsId::new(u32::try_from(self.kids.len()).expect("fewer than 2^32 parents"))
                .expect("at least one")
        });
        self.slot_mut(parent).children = Some(k);
        k
    }

    fn add_child(&mut self, parent: EntryId, name: &Value) -> EntryId {
        let id = self.new_child(parent, name);
        let hash = self.hash(name);
        let k = match self.slot(parent).children {
            Some(k) => k,
            None => self.new_children(parent),
        };
        let at = k.get() as usize - 1;
        // Out of the table while it is rebuilt from the slots.
        let mut kids = std::mem::take(&mut self.kids[at]);
        if kids.index.len() == kids.index.capacity() {
            // Room for one more is twice the buckets, as the table would
            // grow by itself; its children are unique (it held them).
            (kids.index, kids.end, _) = self.index_of(&kids.order, kids.order.len() + 1);
        }
        kids.order.push(id);
        kids.index.insert_unique(hash, id, |&c| self.name_hash(c));
        if kids.end == 0 {
            kids.end = self.table_end(&kids.index, id);
        }
        self.kids[at] = kids;
        id
    }

    /// A table of the children `order` with room for `room` of them, the
    /// address of its control bytes ([`Children::end`], 0 if empty), and
    /// whether no two of them had the same name (a table holds one of
    /// each; an in-order load's names are not known to be unique).
    ///
    /// Built from the insertion order, not grown in place (which rehashes
    /// the children in the table's order): a parent filled in one go has
    /// its slots one after another in memory (a node's start spent 5 % of
    /// its time growing the table of a parent of 1 M children when
    /// snapshots were loaded by look-ups). Children that came one by one
    /// between other changes are scattered over the arena, every slot a
    /// miss of the cache (a tenth of a merge's time over 1 M keys): so
    /// each child's slot, then its name's bytes, then its place in the
    /// table (which never grows here, so its buckets stay where the first
    /// child's shows them) are asked for `BUILD_AHEAD` children apart
    /// before its insert.
    fn index_of(&self, order: &[EntryId], room: usize) -> (HashTable<EntryId>, usize, bool) {
        const SLOT: usize = 3 * BUILD_AHEAD;
        const NAME: usize = 2 * BUILD_AHEAD;
        let mut index = HashTable::with_capacity(room);
        let mut end = 0;
        let mut unique = true;
        for &c in order.iter().take(SLOT) {
            self.prefetch_slot_of(c);
        }
        for &c in order.iter().take(NAME) {
            self.slot(c).name.view().prefetch();
        }
        let mut hashes = [0; BUILD_AHEAD];
        for (i, &c) in order.iter().take(BUILD_AHEAD).enumerate() {
            hashes[i] = self.name_hash(c);
        }
        for (i, &c) in order.iter().enumerate() {
            if let Some(&next) = order.get(i + SLOT) {
                self.prefetch_slot_of(next);
            }
            if let Some(&next) = order.get(i + NAME) {
                self.slot(next).name.view().prefetch();
            }
            let hash = hashes[i % BUILD_AHEAD];
            if let Some(&next) = order.get(i + BUILD_AHEAD) {
                let h = self.name_hash(next);
                hashes[i % BUILD_AHEAD] = h;
                if end != 0 {
                    prefetch_bucket(&index, end, h);
                }
            }
            let name = self.slot(c).name.view();
            let same = |&o: &EntryId| self.slot(o).name.view() == name;
            match index.entry(hash, same, |&o| self.name_hash(o)) {
                hashbrown::hash_table::Entry::Vacant(v) => {
                    v.insert(c);
                }
                hashbrown::hash_table::Entry::Occupied(_) => unique = false,
            }
            if i == 0 {
                end = self.table_end(&index, c);
            }
        }
        (index, end, unique)
    }

    /// The address [`Children::end`] of `index`, found from the bucket of
    /// one of its ids, `member`: hashbrown keeps bucket `i` just below the
    /// control bytes, at `end - size_of::<EntryId>() * (i + 1)`.
    fn table_end(&self, index: &HashTable<EntryId>, member: EntryId) -> usize {
        let Some(i) = index.find_bucket_index(self.name_hash(member), |&c| c == member) else {
            return 0;
        };
        index.get_bucket(i).map_or(0, |b| {
            std::ptr::from_ref(b) as usize + size_of::<EntryId>() * (i + 1)
        })
    }

    /// Removes the entry at `rel` (from the root) if it is a leaf, then
    /// every ancestor left without value, change or children. Returns the
    /// removed entry's chain (`None` also when nothing was removed).
    ///
    /// Takes time in the number of the removed entry's siblings: to remove
    /// many, use [`Tree::bulk_removal`].
    #[cfg(test)]
    pub(crate) fn remove_leaf(&mut self, rel: &[Value]) -> Option<Option<Chain>> {
        self.bulk_removal().remove_leaf(rel)
    }

    /// Removes leaves in bulk: see [`BulkRemoval`].
    pub(crate) fn bulk_removal(&mut self) -> BulkRemoval<'_> {
        debug_assert!(self.in_order.is_none(), "no removal during a load");
        BulkRemoval {
            tree: self,
            left: Vec::new(),
        }
    }

    /// Takes `id` out of its parent's lookup table (and frees the parent's
    /// children if that was the last one); notes in `left` where it is to
    /// leave the parent's insertion order. Returns its chain.
    fn unlink(&mut self, id: EntryId, left: &mut Vec<(KidsId, EntryId)>) -> Option<Chain> {
        let parent = self.slot(id).parent;
        let hash = self.name_hash(id);
        if let Some(k) = self.slot(parent).children {
            let kids = &mut self.kids[k.get() as usize - 1];
            if let Ok(e) = kids.index.find_entry(hash, |&c| c == id) {
                e.remove();
            }
            if kids.index.is_empty() {
                // Its memory goes; its place is reused.
                *kids = Children::default();
                self.free_kids.push(k);
                self.slot_mut(parent).children = None;
            } else {
                left.push((k, id));
            }
        }
        self.replace_chain(id, None)
    }

    fn free_slot(&mut self, id: EntryId) {
        // The slot may be reused anywhere: no path through it is known.
        self.last_path.clear();
        *self.slot_mut(id) = Slot::new(Packed::new(Value::Nil), NO_PARENT, 0);
        self.free.push(id);
    }

    /// Slots of the arena, in use or free (the root's included).
    pub(crate) fn slots(&self) -> usize {
        self.chunks
            .last()
            .map_or(0, |c| (self.chunks.len() - 1) * CHUNK + c.len())
    }

    /// Entries in use (the root included).
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum::<usize>() - self.free.len()
    }

    /// Always false: the root is there.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Leaves being removed from a [`Tree`] ([`Tree::bulk_removal`]).
///
/// A child leaves its parent's lookup table at once, but its parent's
/// insertion order (a vector) only when this is dropped: in one pass per
/// parent, however many of its children went. Removing children one by one
/// from the vector took time in the number of siblings each, so purging
/// the tombstones of n deleted siblings took n² steps (minutes, under the
/// state's lock, for a million). While this lives the tree can only be
/// looked up (by name, which uses the lookup tables) and have leaves
/// removed: no entry is added, so no freed slot is reused, and the orders
/// are not read.
pub(crate) struct BulkRemoval<'t> {
    tree: &'t mut Tree,
    /// Children removed so far and the parent's children they left.
    left: Vec<(KidsId, EntryId)>,
}

impl BulkRemoval<'_> {
    /// The entry at `rel` from the root (whose children are not to be
    /// listed before the removal ends: their order is not yet updated).
    pub(crate) fn follow(&self, rel: &[Value]) -> Option<Entry<'_>> {
        self.tree.root().follow(rel)
    }

    /// As [`Tree::remove_leaf`].
    #[cfg(test)]
    pub(crate) fn remove_leaf(&mut self, rel: &[Value]) -> Option<Option<Chain>> {
        let id = self.tree.root().follow(rel)?.id;
        self.remove(id)
    }

    /// Removes entry `id` (found with [`BulkRemoval::follow`]) if it is a
    /// leaf, then every ancestor left without value, change or children.
    /// Returns its chain (`None` also when nothing was removed).
    pub(crate) fn remove(&mut self, id: EntryId) -> Option<Option<Chain>> {
        let tree = &mut *self.tree;
        if id == ROOT || tree.entry(id).has_children() {
            return None;
        }
        let chain = tree.unlink(id, &mut self.left);
        let mut at = tree.slot(id).parent;
        tree.free_slot(id);
        // Bare ancestors go too (not the root).
        while at != ROOT {
            let s = tree.slot(at);
            if s.data.is_some() || !matches!(s.chain, SlotChain::None) || s.children.is_some() {
                break;
            }
            let up = s.parent;
            tree.unlink(at, &mut self.left);
            tree.free_slot(at);
            at = up;
        }
        Some(chain)
    }
}

impl Drop for BulkRemoval<'_> {
    fn drop(&mut self) {
        // By parent, then id: each parent's removed ids are a sorted run.
        self.left.sort_unstable();
        for run in self.left.chunk_by(|a, b| a.0 == b.0) {
            let kids = &mut self.tree.kids[run[0].0.get() as usize - 1];
            // Emptied and freed meanwhile: its order went with it.
            if kids.index.is_empty() {
                continue;
            }
            kids.order
                .retain(|c| run.binary_search_by_key(c, |&(_, id)| id).is_err());
        }
    }
}

/// Children a table being built asks for its places ahead of their
/// inserts, and twice and three times as many for their names' bytes
/// and their slots ([`Tree::index_of`]).
const BUILD_AHEAD: usize = 16;

/// Asks for the place in `index` (whose control bytes start at `end`, see
/// [`Children::end`]) where a probe for `hash` starts: the group of
/// control bytes at `end + pos` and bucket `pos`.
fn prefetch_bucket(index: &HashTable<EntryId>, end: usize, hash: u64) {
    let pos = hash as usize & index.num_buckets().saturating_sub(1);
    let end = end as *const u8;
    ahead::prefetch(end.wrapping_add(pos));
    ahead::prefetch(end.wrapping_sub(size_of::<EntryId>() * (pos + 1)));
}

/// Whether `stored` (a child's name) equals `name` for a kind of name
/// whose equality is plain: the same type and the same bytes or number.
/// Such a name equals no other sibling than this one (the tree never holds
/// two equal siblings), so it is the child [`Tree::find`] would return.
/// False for every other kind (floats, booleans, paths, maps, …, whose
/// equality crosses types or is not transitive), which are then looked up.
fn plain_eq(stored: &Value, name: &Value) -> bool {
    match (stored, name) {
        (Value::Str(a), Value::Str(b)) => a == b,
        (Value::Int(a), Value::Int(b)) => a == b,
        (Value::Bin(a), Value::Bin(b)) => a == b,
        (Value::Nil, Value::Nil) => true,
        _ => false,
    }
}

/// A view of one entry of a [`Tree`]: cheap to copy.
#[derive(Clone, Copy)]
pub struct Entry<'a> {
    tree: &'a Tree,
    id: EntryId,
}

/// The same entry of the same tree.
impl PartialEq for Entry<'_> {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.tree, other.tree) && self.id == other.id
    }
}

impl Eq for Entry<'_> {}

impl std::fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("path", &self.path())
            .field("data", &self.data())
            .field("chain", &self.chain())
            .field("tock", &self.tock())
            .finish()
    }
}

impl<'a> Entry<'a> {
    fn slot(self) -> &'a Slot {
        self.tree.slot(self.id)
    }

    /// The entry's id in its tree.
    pub fn id(self) -> EntryId {
        self.id
    }

    /// The entry's name: the last element of its path (nil for the root).
    pub fn name(self) -> ValueRef<'a> {
        self.slot().name.view()
    }

    /// The entry's full path, computed by walking up to the root.
    pub fn path(self) -> Path {
        let mut names = Vec::new();
        let mut at = self.id;
        while at != ROOT {
            let s = self.tree.slot(at);
            names.push(s.name.view().clone());
            at = s.parent;
        }
        names.reverse();
        Path::new(names)
    }

    /// The stored value, if any, borrowed (it derefs to the [`Value`]).
    pub fn data(self) -> Option<ValueRef<'a>> {
        self.slot().data.as_ref().map(Packed::view)
    }

    /// The stored value, if any, cloned (a reference count for strings).
    pub fn data_cloned(self) -> Option<Value> {
        self.data().map(|v| v.to_value())
    }

    /// The chain of the last change, if any, borrowed (it derefs to the
    /// [`Chain`]).
    pub fn chain(self) -> Option<ChainRef<'a>> {
        self.tree.chain_ref(self.id)
    }

    /// The chain of the last change, if any, cloned.
    pub fn chain_cloned(self) -> Option<Chain> {
        self.chain().map(|c| Chain::clone(&c))
    }

    /// The tock of the last change.
    pub fn tock(self) -> u64 {
        self.slot().tock
    }

    /// The children, in insertion order.
    pub fn children(self) -> impl Iterator<Item = (ValueRef<'a>, Entry<'a>)> {
        let tree = self.tree;
        tree.kids(self.id)
            .into_iter()
            .flat_map(|k| k.order.iter())
            .map(move |&c| (tree.slot(c).name.view(), tree.entry(c)))
    }

    /// Whether the entry has children.
    pub fn has_children(self) -> bool {
        self.tree
            .kids(self.id)
            .is_some_and(|k| !k.index.is_empty() || k.in_order && !k.order.is_empty())
    }

    /// A child by name.
    pub fn child(self, name: &Value) -> Option<Entry<'a>> {
        self.tree.find(self.id, name).map(|c| self.tree.entry(c))
    }

    /// Follows `rel` from this entry.
    pub fn follow(self, rel: &[Value]) -> Option<Entry<'a>> {
        let mut e = self;
        for name in rel {
            e = e.child(name)?;
        }
        Some(e)
    }

    /// The `idx`-th child (insertion order).
    fn child_index(self, idx: usize) -> Option<Entry<'a>> {
        let c = *self.tree.kids(self.id)?.order.get(idx)?;
        Some(self.tree.entry(c))
    }

    /// For a walk at the `idx`-th child: asks for the slot of the child
    /// [`WALK_AHEAD`] further on, and for the value and chain links of the
    /// one half as far (whose slot was asked for before), so that the
    /// walk's visits do not wait for them one after the other (a snapshot
    /// encodes every value while it holds the state).
    fn prefetch_children(self, idx: usize) {
        let Some(kids) = self.tree.kids(self.id) else {
            return;
        };
        if let Some(&c) = kids.order.get(idx + WALK_AHEAD) {
            self.tree.prefetch_slot_of(c);
        }
        if let Some(&c) = kids.order.get(idx + WALK_AHEAD / 2) {
            self.tree.prefetch_data(c);
            self.tree.prefetch_links(c, None);
        }
    }
}

/// How many children ahead of its visit a walk asks for a child's slot.
const WALK_AHEAD: usize = 16;

/// What a walk visits.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalkOpts {
    /// Depth (relative to the start) from which entries are reported.
    pub min_depth: usize,
    /// Depth below which the walk does not descend (`None` = unlimited).
    pub max_depth: Option<usize>,
    /// Also report entries without data.
    pub empty: bool,
    /// Walk the start entry's `None` child (the meta tree).
    pub meta: bool,
}

/// A resumable depth-first walk position.
#[derive(Debug, Default)]
pub struct WalkCursor {
    /// Next child index at each open level.
    stack: Vec<usize>,
    started: bool,
    done: bool,
}

impl WalkCursor {
    /// Whether the walk has finished.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Visits up to `budget` entries below (and including) `start`, calling
    /// `visit(entry, rel)` for each reported one, where `rel` is the entry's
    /// path relative to `start` (so its depth is `rel.len()`): visitors
    /// need not compute paths ([`Entry::path`] walks up and allocates).
    /// Returns when the budget is used or the walk is done
    /// ([`WalkCursor::is_done`]).
    pub fn step<'a>(
        &mut self,
        start: Entry<'a>,
        opts: &WalkOpts,
        budget: usize,
        mut visit: impl FnMut(Entry<'a>, &[Value]),
    ) {
        self.step_pruned(start, opts, budget, |e, rel, report| {
            if report {
                visit(e, rel);
            }
            true
        });
    }

    /// [`WalkCursor::step`] that asks about every entry it passes:
    /// `visit(entry, rel, reported)` returns whether to walk below it.
    pub fn step_pruned<'a>(
        &mut self,
        start: Entry<'a>,
        opts: &WalkOpts,
        budget: usize,
        mut visit: impl FnMut(Entry<'a>, &[Value], bool) -> bool,
    ) {
        let report = |e: Entry<'_>, depth: usize| {
            depth >= opts.min_depth && (opts.empty || e.data().is_some())
        };
        let mut used = 0;
        if !self.started {
            self.started = true;
            let descend = visit(start, &[], report(start, 0));
            used += 1;
            if opts.max_depth == Some(0) || !descend {
                self.done = true;
                return;
            }
            self.stack.push(0);
        }
        // The open levels' entries and names, found again from the indices
        // (the tree may have changed since the last chunk), then kept along:
        // `parents[k]` is the open entry at depth k (the start at 0), `rel`
        // the names of `parents[1..]`, then of the entry being visited.
        let mut parents: Vec<Option<Entry<'a>>> = Vec::with_capacity(self.stack.len());
        let mut rel: Vec<Value> = Vec::with_capacity(self.stack.len());
        let mut at = Some(start);
        for &i in &self.stack {
            parents.push(at);
            at = at.and_then(|e| e.child_index(i));
            if parents.len() < self.stack.len() {
                // A vanished level's name is never handed out: nothing is
                // visited below it before it is closed.
                rel.push(at.map_or(Value::Nil, |e| e.name().to_value()));
            }
        }
        while used < budget {
            let Some(&idx) = self.stack.last() else {
                self.done = true;
                return;
            };
            let depth = self.stack.len();
            let parent = parents.last().copied().flatten();
            let Some(child) = parent.and_then(|p| p.child_index(idx)) else {
                self.stack.pop();
                parents.pop();
                rel.pop();
                if let Some(l) = self.stack.last_mut() {
                    *l += 1;
                }
                continue;
            };
            used += 1;
            if let Some(p) = parent {
                p.prefetch_children(idx);
            }
            if depth == 1 && child.name().is_nil() && !opts.meta {
                *self.stack.last_mut().expect("non-empty") += 1;
                continue;
            }
            rel.push(child.name().to_value());
            let descend = visit(child, &rel, report(child, depth));
            if descend && opts.max_depth.is_none_or(|m| depth < m) && child.has_children() {
                self.stack.push(0);
                parents.push(Some(child));
            } else {
                rel.pop();
                *self.stack.last_mut().expect("non-empty") += 1;
            }
        }
        if self.stack.is_empty() {
            self.done = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::path;
    use proptest::prelude::*;

    /// A children table rebuilt as it fills finds every child and holds
    /// no more room than one that grew by itself.
    #[test]
    fn a_growing_children_table_finds_every_child_and_takes_no_more_room() {
        let mut t = Tree::default();
        let mut grown: HashTable<i64> = HashTable::new();
        let parent = t.follow_create(&path!["p"]);
        for i in 0..20_000i64 {
            let id = t.follow_create(&path!["p", i]);
            let index = &t.kids(parent).expect("children").index;
            grown.insert_unique(i as u64, i, |&x| x as u64);
            assert_eq!(index.capacity(), grown.capacity(), "after {i}");
            assert_eq!(t.find(parent, &Value::Int(i)), Some(id));
        }
        for i in 0..20_000i64 {
            let found = t.find(parent, &Value::Int(i)).map(|c| t.entry(c).path());
            assert_eq!(found, Some(path!["p", i]));
        }
        assert_eq!(t.find(parent, &Value::Int(20_000)), None);
    }

    /// Children made between other entries (their slots scattered over
    /// the arena, as a cluster's changes make them) are all found after
    /// each rebuild of their tables, named by integers or by strings, and
    /// each table's `end` is where its control bytes are.
    #[test]
    fn children_made_between_others_are_found_after_every_rebuild() {
        let mut t = Tree::default();
        let name = |p: usize, i: i64| match p {
            0 => Value::Int(i),
            _ => Value::str(&format!("{p}-child-{i}")),
        };
        let parents: Vec<EntryId> = (0..3i64).map(|p| t.follow_create(&path![p])).collect();
        let mut ids = vec![Vec::new(); parents.len()];
        for i in 0..12_000i64 {
            for (p, ids) in ids.iter_mut().enumerate() {
                ids.push(t.follow_create(&[Value::Int(p as i64), name(p, i)]));
            }
        }
        for (p, (&parent, ids)) in parents.iter().zip(&ids).enumerate() {
            for (i, &id) in ids.iter().enumerate() {
                assert_eq!(t.find(parent, &name(p, i as i64)), Some(id), "{p}/{i}");
            }
            assert_eq!(t.find(parent, &name(p, 12_000)), None);
            let kids = t.kids(parent).expect("children");
            assert_eq!(kids.end, t.table_end(&kids.index, ids[0]));
        }
    }

    /// Every table's `end` is where hashbrown keeps its control bytes: each
    /// id's bucket `i` lies at `end - 4 (i + 1)`, in tables grown one child
    /// at a time and in tables an in-order load built. And the look-ahead
    /// finds what a look-up finds: the parent, the child's slot (for all
    /// but the few whose hash tag an earlier bucket shares), its chain
    /// (only under its own name).
    #[test]
    fn the_look_ahead_asks_for_the_tables_slots_and_chains_a_look_up_reads() {
        const SEEDS: u64 = 200;
        fn check_layout(t: &Tree, parent: EntryId) {
            let kids = t.kids(parent).expect("children");
            assert_ne!(kids.end, 0);
            for &c in &kids.order {
                let i = kids
                    .index
                    .find_bucket_index(t.name_hash(c), |&x| x == c)
                    .expect("in its table");
                let at = std::ptr::from_ref(kids.index.get_bucket(i).expect("full")) as usize;
                assert_eq!(at, kids.end - 4 * (i + 1), "bucket {i} of child {c}");
            }
        }
        // Seeded, as a node's are at random: the few seeds that would leave
        // many look-ups with a wrong first candidate are among these.
        let mut fewest = usize::MAX;
        for seed in 0..SEEDS {
            let shared = Box::leak(Box::new(foldhash::SharedSeed::from_u64(seed)));
            let mut t = Tree::with_hasher(NameHasher::with_seed(seed, shared));
            let parent = t.follow_create(&path!["p"]);
            let mut buckets = 0;
            for i in 0..3_000i64 {
                let id = t.follow_create(&path!["p", i]);
                t.set_chain(id, Some(Chain::single(NodeName::from("n"), i as u64 + 1)));
                let kids = t.kids(parent).expect("children");
                if kids.index.num_buckets() != buckets {
                    buckets = kids.index.num_buckets();
                    check_layout(&t, parent);
                }
            }
            assert!(buckets >= 4096, "the table grew: {buckets} buckets");
            let mut hits = 0;
            for i in 0..3_000i64 {
                let p = path!["p", i];
                let (up, hash) = t.prefetch_table(&p).expect("its parent");
                assert_eq!((up, hash), (parent, t.hash(&Value::Int(i))));
                let want = t.root().follow(&p).expect("there").id();
                let Some(id) = t.prefetch_slot(up, hash) else {
                    panic!("no candidate for {i}");
                };
                if id != want {
                    continue;
                }
                hits += 1;
                match t.prefetch_links(id, Some(&Value::Int(i))) {
                    SlotLinks::One(node, tick) => assert_eq!((&**node, tick), ("n", i as u64 + 1)),
                    other => panic!("{other:?}"),
                }
                assert!(matches!(
                    t.prefetch_links(id, Some(&Value::Int(-1))),
                    SlotLinks::None
                ));
            }
            fewest = fewest.min(hits);
            assert!(
                t.prefetch_table(&path!["q", 1i64]).is_none(),
                "no such parent"
            );
        }
        assert!(
            fewest >= 2_850,
            "{fewest} of 3 000 slots found by their hash alone"
        );

        let mut t = Tree::default();
        t.begin_in_order();
        for i in 0..3_000i64 {
            t.follow_create(&path!["p", i]);
        }
        assert!(t.end_in_order());
        check_layout(&t, t.root().follow(&path!["p"]).expect("p").id());
    }

    /// Paths in a snapshot's order (depth first, parents before children,
    /// each subtree whole): a parent of 3 000 children; levels without an
    /// entry of their own (`p`, `x`: only below them are there entries);
    /// names of several kinds.
    fn in_snapshot_order() -> Vec<Path> {
        let mut paths = Vec::new();
        for (a, children) in [("a", 7i64), ("big", 3_000), ("c", 2)] {
            if a != "big" {
                paths.push(path![a]);
            }
            for b in 0..children {
                paths.push(path![a, "p", b]);
                if b % 5 == 0 {
                    paths.push(path![a, "p", b, "x", Value::Bin(vec![1, 2].into())]);
                    paths.push(path![a, "p", b, "x", "y"]);
                }
            }
        }
        paths.push(path![Value::Nil, "meta"]);
        paths
    }

    /// Every parent's children in `t` below `id`, depth first: names, and
    /// the room of their table.
    fn shape(t: &Tree, id: EntryId, out: &mut Vec<(Path, Vec<Value>, usize)>) {
        let Some(kids) = t.kids(id) else { return };
        let names = kids
            .order
            .iter()
            .map(|&c| t.entry(c).name().to_owned())
            .collect();
        out.push((t.entry(id).path(), names, kids.index.capacity()));
        for &c in &kids.order {
            shape(t, c, out);
        }
    }

    #[test]
    fn an_in_order_load_builds_the_tree_a_load_by_look_ups_builds() {
        let paths = in_snapshot_order();
        let mut looked_up = Tree::default();
        // A tree not empty before the load: its root's children and
        // `a`'s are looked up as before.
        looked_up.follow_create(&path!["a", "first"]);
        let mut in_order = Tree::default();
        in_order.follow_create(&path!["a", "first"]);
        in_order.begin_in_order();
        for p in &paths {
            let (l, o) = (looked_up.follow_create(p), in_order.follow_create(p));
            assert_eq!(l, o, "{p}");
        }
        // While it lasts, look-ups are still right (the slow way).
        let big = in_order.root().follow(&path!["big", "p"]).map(|e| e.id());
        assert!(big.is_some_and(|b| in_order.kids(b).is_some_and(|k| k.in_order)));
        assert!(in_order
            .root()
            .follow(&path!["big", "p", 2_999i64])
            .is_some());
        assert!(in_order
            .root()
            .follow(&path!["big", "p"])
            .is_some_and(Entry::has_children));
        assert!(in_order.end_in_order(), "the order was kept");
        let (mut want, mut got) = (Vec::new(), Vec::new());
        shape(&looked_up, ROOT, &mut want);
        shape(&in_order, ROOT, &mut got);
        assert_eq!(got, want, "the same children, order and room");
        for p in &paths {
            let e = in_order.root().follow(p).map(|e| e.path());
            assert_eq!(e.as_ref(), Some(p));
        }
        assert!(in_order.in_order.is_none() && in_order.kids.iter().all(|k| !k.in_order));
    }

    #[test]
    fn an_in_order_load_that_breaks_the_order_says_so() {
        let subtree_in_parts = [
            path!["a", "x", 1i64],
            path!["a", "y"],
            path!["a", "x", 2i64],
        ];
        let twice = [path!["b", 1i64], path!["b", 2i64], path!["b", 1i64]];
        for paths in [&subtree_in_parts[..], &twice[..]] {
            let mut t = Tree::default();
            t.begin_in_order();
            for p in paths {
                t.follow_create(p);
            }
            assert!(!t.end_in_order(), "{paths:?}");
        }
        // Kept: the same name below different parents, and a name met
        // again at the start of a new in-order load.
        let mut t = Tree::default();
        t.begin_in_order();
        for p in [path!["a", 1i64], path!["b", 1i64], path!["b", 2i64, 1i64]] {
            t.follow_create(&p);
        }
        assert!(t.end_in_order());
        t.begin_in_order();
        t.follow_create(&path!["a", 1i64]);
        let again = t.follow_create(&path!["b", 2i64, 1i64]);
        assert!(t.end_in_order());
        assert_eq!(t.len(), 7, "nothing made twice");
        assert_eq!(
            t.root().follow(&path!["b", 2i64, 1i64]).map(|e| e.id()),
            Some(again)
        );
    }

    #[test]
    fn freed_slots_are_reused_and_paths_are_computed() {
        let mut t = Tree::default();
        let a = t.follow_create(&path!["a", "b"]);
        t.slot_mut(a).data = Some(Packed::new(Value::Int(1)));
        assert_eq!(t.entry(a).path(), path!["a", "b"]);
        assert_eq!(t.len(), 3);
        // b is a leaf; a is bare, so it goes too.
        assert_eq!(t.remove_leaf(&path!["a", "b"]), Some(None));
        assert_eq!(t.len(), 1);
        assert!(!t.root().has_children());
        let c = t.follow_create(&path!["c", "d"]);
        assert_eq!(t.len(), 3);
        assert_eq!(t.kids.len(), 2, "freed children tables are reused");
        assert_eq!(t.entry(c).path(), path!["c", "d"]);
        assert!(t.root().follow(&path!["a"]).is_none());
        assert_eq!(t.root().follow(&path!["c", "d"]).map(|e| e.id()), Some(c));
    }

    #[test]
    fn children_keep_insertion_order_across_removals_and_growth() {
        let mut t = Tree::default();
        for i in 0..10_000i64 {
            let id = t.follow_create(&[Value::Int(i)]);
            t.slot_mut(id).data = Some(Packed::new(Value::Int(i)));
        }
        for i in (0..10_000i64).step_by(3) {
            let id = t.root().follow(&[Value::Int(i)]).unwrap().id();
            t.slot_mut(id).data = None;
            assert!(t.remove_leaf(&[Value::Int(i)]).is_some());
        }
        let names: Vec<i64> = t
            .root()
            .children()
            .map(|(n, _)| n.as_i64().unwrap())
            .collect();
        let want: Vec<i64> = (0..10_000).filter(|i| i % 3 != 0).collect();
        assert_eq!(names, want);
        for i in 0..10_000i64 {
            let e = t.root().child(&Value::Int(i));
            assert_eq!(e.is_some(), i % 3 != 0, "{i}");
            if let Some(e) = e {
                assert_eq!(e.data_cloned(), Some(Value::Int(i)));
                assert_eq!(e.path(), Path::new(vec![Value::Int(i)]));
            }
        }
        // Python's equality: 1.0 finds the child named 1.
        assert!(t.root().child(&Value::Float(1.0)).is_some());
    }

    #[test]
    fn chains_are_kept_compact_and_given_back_whole() {
        assert_eq!(std::mem::size_of::<SlotChain>(), 16);
        let mut t = Tree::default();
        let ids: Vec<EntryId> = (0..4i64)
            .map(|i| t.follow_create(&[Value::Int(i)]))
            .collect();
        let node = |n: &str| NodeName::from(n);
        let one = Chain::single(node("a"), 7);
        let link = |n: &str, tick| Link {
            node: node(n),
            tick,
        };
        let many = Chain::from_links(vec![link("b", 3), link("a", 9), link("c", 1)]).unwrap();
        let shared = match many.clone().into_parts() {
            Err(links) => links,
            Ok(_) => unreachable!("three links"),
        };
        t.set_chain(ids[0], Some(one.clone()));
        t.set_chain(ids[1], Some(Chain::single(node("a"), 8)));
        t.set_chain(ids[2], Some(many.clone()));
        assert_eq!(t.nodes.len(), 1, "one name for both single links");
        assert_eq!(t.entry(ids[0]).chain_cloned(), Some(one));
        assert_eq!(t.entry(ids[1]).chain().map(|c| c.head().tick), Some(8));
        assert_eq!(t.entry(ids[2]).chain_cloned().as_ref(), Some(&many));
        assert!(t.entry(ids[3]).chain().is_none());
        // The long chain's links are shared, not copied, and released.
        let count = Arc::strong_count(&shared);
        assert_eq!(t.entry(ids[2]).chain().map(|c| c.len()), Some(3));
        assert_eq!(Arc::strong_count(&shared), count, "a view takes no count");
        t.set_chain(ids[2], None);
        assert_eq!(Arc::strong_count(&shared), count - 1);
        t.set_chain(ids[3], Some(many.clone()));
        assert_eq!(t.remove_leaf(&[Value::Int(3)]), Some(Some(many.clone())));
        assert_eq!(Arc::strong_count(&shared), count - 1);
        // A run of one node's changes (the same allocation for its name), then
        // another node's name, then the first again.
        let b = node("b");
        t.set_chain(ids[0], Some(Chain::single(b.clone(), 1)));
        t.set_chain(ids[1], Some(Chain::single(b, 2)));
        t.set_chain(ids[2], Some(Chain::single(node("a"), 3)));
        assert_eq!(t.nodes.len(), 2);
        let heads: Vec<Option<(String, u64)>> = ids[..3]
            .iter()
            .map(|&i| {
                let c = t.entry(i).chain()?;
                Some((c.head().node.to_string(), c.head().tick))
            })
            .collect();
        let want = [("b", 1), ("b", 2), ("a", 3)].map(|(n, t)| Some((n.to_string(), t)));
        assert_eq!(heads, want);
    }

    /// A name or value of any kind; numbers equal across kinds
    /// (`1 == 1.0 == True`) and short strings drawn often.
    fn any_key() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Bool),
            (-2i64..3).prop_map(Value::Int),
            (-2i64..3).prop_map(|i| Value::Float(i as f64)),
            any::<i64>().prop_map(Value::Int),
            any::<u64>().prop_map(Value::uint),
            Just(Value::Float(0.5)),
            Just(Value::Float(f64::NAN)),
            "[ab]{0,2}".prop_map(|s| Value::str(&s)),
            proptest::collection::vec(any::<u8>(), 0..3).prop_map(|b| Value::from(&b[..])),
            proptest::collection::vec(any::<u8>(), 0..3)
                .prop_map(|b| Value::BigUint(b.as_slice().into())),
            (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..2))
                .prop_map(|(t, b)| Value::Ext(t, b.as_slice().into())),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..3)
                    .prop_map(Value::Map),
                proptest::collection::vec(inner, 0..3).prop_map(|e| Value::Path(Path::new(e))),
            ]
        })
    }

    /// A path of one to three names from a few that share prefixes, with
    /// names equal across kinds (`1`, `1.0`, `True`), nil (the name a freed
    /// slot holds) and maps whose equality is not symmetric.
    fn any_short_path() -> impl Strategy<Value = Vec<Value>> {
        let dup = Value::Map(vec![
            (Value::Int(1), Value::Nil),
            (Value::Int(1), Value::Nil),
        ]);
        let two = Value::Map(vec![
            (Value::Int(1), Value::Nil),
            (Value::Int(2), Value::Nil),
        ]);
        let name = prop_oneof![
            Just(Value::str("a")),
            Just(Value::str("b")),
            Just(Value::Int(1)),
            Just(Value::Float(1.0)),
            Just(Value::Bool(true)),
            Just(Value::from(&b"a"[..])),
            Just(Value::Nil),
            Just(dup),
            Just(two),
        ];
        proptest::collection::vec(name, 1..4)
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 500,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6c61_7374),
            ..ProptestConfig::default()
        })]

        /// The path followed last shortens the next look-up and never
        /// changes its result: every entry `follow_create` returns is the
        /// one a plain look-up finds (or, when it made it, the only one
        /// there), across removals that free and reuse slots.
        #[test]
        fn the_last_path_finds_what_a_look_up_finds(
            ops in proptest::collection::vec((any_short_path(), any::<bool>()), 1..80),
        ) {
            let mut t = Tree::default();
            for (rel, remove) in ops {
                if remove {
                    if let Some(e) = t.root().follow(&rel) {
                        t.slot_mut(e.id()).data = None;
                        t.remove_leaf(&rel);
                    }
                    continue;
                }
                let before = t.root().follow(&rel).map(|e| e.id());
                let len = t.len();
                let id = t.follow_create(&rel);
                match before {
                    Some(b) => prop_assert_eq!(id, b, "{:?}", rel),
                    None => prop_assert!(t.len() > len, "{:?} was not made", rel),
                }
                prop_assert_eq!(t.root().follow(&rel).map(|e| e.id()), Some(id));
                let path = t.entry(id).path();
                prop_assert_eq!(path.len(), rel.len());
                for (got, want) in path.iter().zip(&rel) {
                    prop_assert!(got == want, "{:?} in {:?}", got, rel);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 300,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6e61_6d65),
            ..ProptestConfig::default()
        })]

        /// Children named and valued by packed values are found, ordered,
        /// valued and removed exactly as a map keyed by `Value` has them.
        #[test]
        fn packed_names_and_values_behave_like_values(
            ops in proptest::collection::vec((any_key(), proptest::option::of(any_key())), 1..60),
        ) {
            let mut t = Tree::default();
            let mut model: IndexMap<Value, Value> = IndexMap::new();
            for (name, value) in ops {
                let rel = [name.clone()];
                match value {
                    Some(v) => {
                        let id = t.follow_create(&rel);
                        t.slot_mut(id).data = Some(Packed::new(v.clone()));
                        model.insert(name, v);
                    }
                    None => {
                        if let Some(e) = t.root().child(&name) {
                            t.slot_mut(e.id()).data = None;
                            prop_assert!(t.remove_leaf(&rel).is_some());
                        }
                        model.shift_remove(&name);
                    }
                }
                let got: Vec<(Value, Value)> = t
                    .root()
                    .children()
                    .map(|(n, e)| (n.to_value(), e.data_cloned().unwrap_or(Value::Nil)))
                    .collect();
                let want: Vec<(Value, Value)> =
                    model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                prop_assert_eq!(got.len(), want.len());
                for ((gn, gv), (wn, wv)) in got.iter().zip(&want) {
                    // The first name stored stays (a map keeps its first key).
                    prop_assert!(gn.same_type(wn) && gn == wn, "{:?} vs {:?}", gn, wn);
                    prop_assert!(gv.same_type(wv) && gv == wv, "{:?} vs {:?}", gv, wv);
                }
                for (k, v) in &model {
                    let e = t.root().child(k);
                    prop_assert!(e.is_some(), "{:?} not found", k);
                    let data = e.and_then(|e| e.data_cloned());
                    prop_assert_eq!(data.as_ref(), Some(v));
                    prop_assert_eq!(e.map(|e| e.path()), Some(Path::new(vec![k.clone()])));
                }
            }
        }
    }

    /// Each parent's children, by name, in order.
    fn listing(t: &Tree) -> Vec<(Value, Vec<Value>)> {
        t.root()
            .children()
            .map(|(p, e)| {
                (
                    p.to_value(),
                    e.children().map(|(c, _)| c.to_value()).collect(),
                )
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 300,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6275_6c6b),
            ..ProptestConfig::default()
        })]

        /// Leaves removed in bulk leave the tree as removing them one by one
        /// does, and as a map in insertion order has it: the other
        /// children in their order, parents left bare gone; entries made
        /// afterwards (in reused slots) come last.
        #[test]
        fn bulk_removal_matches_one_by_one_and_the_model(
            keys in proptest::collection::vec((0i64..4, 0i64..48), 1..150),
            gone in proptest::collection::vec(any::<bool>(), 150),
            again in proptest::collection::vec((0i64..5, 0i64..48), 0..20),
        ) {
            let rel = |&(p, c): &(i64, i64)| [Value::Int(p), Value::Int(c)];
            let build = || {
                let mut t = Tree::default();
                for k in &keys {
                    let id = t.follow_create(&rel(k));
                    t.slot_mut(id).data = Some(Packed::new(Value::Int(1)));
                }
                t
            };
            let removed: Vec<_> = keys.iter().zip(&gone).filter(|(_, &g)| g).map(|(k, _)| rel(k)).collect();
            let (mut one, mut bulk) = (build(), build());
            let mut model: IndexMap<i64, IndexMap<i64, ()>> = IndexMap::new();
            for &(p, c) in &keys {
                model.entry(p).or_default().insert(c, ());
            }
            for r in &removed {
                one.remove_leaf(r);
                let (p, c) = (r[0].as_i64().unwrap(), r[1].as_i64().unwrap());
                if let Some(kids) = model.get_mut(&p) {
                    kids.shift_remove(&c);
                    if kids.is_empty() {
                        model.shift_remove(&p);
                    }
                }
            }
            {
                let mut b = bulk.bulk_removal();
                for r in &removed {
                    b.remove_leaf(r);
                }
            }
            for k in &again {
                for t in [&mut one, &mut bulk] {
                    let id = t.follow_create(&rel(k));
                    t.slot_mut(id).data = Some(Packed::new(Value::Int(2)));
                }
                model.entry(k.0).or_default().insert(k.1, ());
            }
            let want: Vec<(Value, Vec<Value>)> = model
                .iter()
                .map(|(p, kids)| (Value::Int(*p), kids.keys().map(|&c| Value::Int(c)).collect()))
                .collect();
            prop_assert_eq!(listing(&bulk), want);
            prop_assert_eq!(listing(&one), listing(&bulk));
            prop_assert_eq!(one.len(), bulk.len());
        }
    }
}
