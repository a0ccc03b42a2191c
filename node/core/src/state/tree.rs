//! The entry tree and resumable walks over it.
//!
//! Every [`Entry`] knows its full path, its children (in insertion order, like
//! Python's dicts), its value (`None` = no data, e.g. an intermediate node or
//! a deletion tombstone; `Some(Value::Nil)` is a stored nil), its chain and
//! the tock of its last change. A new child inherits its parent's tock.
//!
//! [`WalkCursor`] walks a subtree depth-first, node before children, in
//! chunks: the caller can release its lock between chunks. The cursor is a
//! stack of child indices; children are only appended between chunks except
//! when purged, in which case a walk may skip an entry — a walk is a view of
//! a changing tree, and watchers get the changes anyway.

use distkv_model::{Chain, Path, Value};
use indexmap::IndexMap;

/// Insertion-ordered map with a fast, randomly seeded hasher (keys come from
/// the network, so the seed matters).
pub type Map<K, V> = IndexMap<K, V, foldhash::fast::RandomState>;

/// One node of the tree.
#[derive(Debug)]
pub struct Entry {
    pub(crate) path: Path,
    /// Boxed and absent for leaves (most entries): a small entry keeps the
    /// parent's map dense, and lookups touch fewer cache lines.
    pub(crate) children: Option<Box<Map<Value, Entry>>>,
    pub(crate) data: Option<Value>,
    pub(crate) chain: Option<Chain>,
    pub(crate) tock: u64,
}

impl Entry {
    pub(crate) fn new(path: Path, tock: u64) -> Entry {
        Entry {
            path,
            children: None,
            data: None,
            chain: None,
            tock,
        }
    }

    /// The entry's full path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored value, if any.
    pub fn data(&self) -> Option<&Value> {
        self.data.as_ref()
    }

    /// The chain of the last change, if any.
    pub fn chain(&self) -> Option<&Chain> {
        self.chain.as_ref()
    }

    /// The tock of the last change.
    pub fn tock(&self) -> u64 {
        self.tock
    }

    /// The children, in insertion order.
    pub fn children(&self) -> impl Iterator<Item = (&Value, &Entry)> {
        self.children.iter().flat_map(|m| m.iter())
    }

    /// Whether the entry has children.
    pub fn has_children(&self) -> bool {
        self.children.as_ref().is_some_and(|m| !m.is_empty())
    }

    /// A child by name.
    pub fn child(&self, name: &Value) -> Option<&Entry> {
        self.children.as_ref()?.get(name)
    }

    /// Follows `rel` from this entry.
    pub fn follow(&self, rel: &[Value]) -> Option<&Entry> {
        let mut e = self;
        for name in rel {
            e = e.child(name)?;
        }
        Some(e)
    }

    /// Follows `rel` from this entry, creating missing entries.
    pub(crate) fn follow_create(&mut self, rel: &[Value]) -> &mut Entry {
        let mut e = self;
        for name in rel {
            let (tock, path) = (e.tock, &e.path);
            let map = e.children.get_or_insert_with(Box::default);
            // Look up before inserting: existing children (the common case)
            // need no key clone.
            let idx = match map.get_index_of(name) {
                Some(i) => i,
                None => {
                    let child = Entry::new(path.child(name.clone()), tock);
                    map.insert_full(name.clone(), child).0
                }
            };
            e = &mut map[idx];
        }
        e
    }

    /// Removes the entry at `rel` if it is a leaf, then every ancestor
    /// left without value, change or children. Returns the removed entry.
    pub(crate) fn remove_leaf(&mut self, rel: &[Value]) -> Option<Entry> {
        let (name, parent_rel) = rel.split_last()?;
        let parent = self.follow_mut(parent_rel)?;
        if parent.child(name)?.has_children() {
            return None;
        }
        let map = parent.children.as_mut()?;
        let gone = map.shift_remove(name)?;
        if map.is_empty() {
            parent.children = None;
        }
        let bare = parent.data.is_none() && parent.chain.is_none() && !parent_rel.is_empty();
        if bare {
            self.remove_leaf(parent_rel);
        }
        Some(gone)
    }

    fn follow_mut(&mut self, rel: &[Value]) -> Option<&mut Entry> {
        let mut e = self;
        for name in rel {
            e = e.children.as_mut()?.get_mut(name)?;
        }
        Some(e)
    }

    fn child_at(&self, idx: &[usize]) -> Option<&Entry> {
        let mut e = self;
        for &i in idx {
            e = e.children.as_ref()?.get_index(i)?.1;
        }
        Some(e)
    }
}

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
    /// `visit(entry, depth)` for each reported one. Returns when the budget
    /// is used or the walk is done ([`WalkCursor::is_done`]).
    pub fn step(
        &mut self,
        start: &Entry,
        opts: &WalkOpts,
        budget: usize,
        mut visit: impl FnMut(&Entry, usize),
    ) {
        self.step_pruned(start, opts, budget, |e, depth, report| {
            if report {
                visit(e, depth);
            }
            true
        });
    }

    /// [`WalkCursor::step`] that asks about every entry it passes:
    /// `visit(entry, depth, reported)` returns whether to walk below it.
    pub fn step_pruned(
        &mut self,
        start: &Entry,
        opts: &WalkOpts,
        budget: usize,
        mut visit: impl FnMut(&Entry, usize, bool) -> bool,
    ) {
        let report =
            |e: &Entry, depth: usize| depth >= opts.min_depth && (opts.empty || e.data.is_some());
        let mut used = 0;
        if !self.started {
            self.started = true;
            let descend = visit(start, 0, report(start, 0));
            used += 1;
            if opts.max_depth == Some(0) || !descend {
                self.done = true;
                return;
            }
            self.stack.push(0);
        }
        while used < budget {
            let Some(&idx) = self.stack.last() else {
                self.done = true;
                return;
            };
            let depth = self.stack.len();
            let parent = start.child_at(&self.stack[..depth - 1]);
            let Some((name, child)) = parent.and_then(|p| p.children.as_ref()?.get_index(idx))
            else {
                self.stack.pop();
                if let Some(l) = self.stack.last_mut() {
                    *l += 1;
                }
                continue;
            };
            used += 1;
            if depth == 1 && name.is_nil() && !opts.meta {
                *self.stack.last_mut().expect("non-empty") += 1;
                continue;
            }
            let descend = visit(child, depth, report(child, depth));
            if descend && opts.max_depth.is_none_or(|m| depth < m) && child.has_children() {
                self.stack.push(0);
            } else {
                *self.stack.last_mut().expect("non-empty") += 1;
            }
        }
        if self.stack.is_empty() {
            self.done = true;
        }
    }
}
