//! ACL checks: DistKV's rules for what a user bound to an ACL may do on a
//! path of the user tree (docs/compat.md, "ACLs").
//!
//! An ACL `NAME` is the subtree `(None,"acl",NAME,…)`: each entry a
//! [pattern](super::pattern) whose value is a string of mode letters. A
//! request walks its path from the data root with an [`AclCursor`] that
//! starts at the ACL's root: every step into an existing child needs `x`,
//! every step that creates one needs `n`, both checked on the cursor
//! *before* the step; then the request's own letter is checked where the
//! walk ends. A path no pattern matches allows everything (DistKV's
//! behaviour). Tree walks and watches step the cursor per entry and use
//! [`AclCursor::allows`] and [`AclCursor::block`] to prune.
//!
//! The cursor is built from the state at the time of each request, so a
//! changed ACL entry counts at once.

use std::fmt;

use distkv_model::{Chain, SharedStr, Value};

use super::pattern::PatternCursor;
use super::{Entry, State};

/// The mode letters an ACL entry may hold, in DistKV's order.
pub const LETTERS: &str = "rwcdxena";

/// A mode letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `r`: read a value.
    Read,
    /// `w`: overwrite a value.
    Write,
    /// `c`: create a value.
    Create,
    /// `d`: delete a subtree.
    Delete,
    /// `x`: step into an existing child.
    Traverse,
    /// `e`: enumerate children.
    Enumerate,
    /// `n`: create a new child.
    New,
    /// `a`: see ACL flags (`test_acl`).
    Acl,
}

impl Mode {
    /// The mode of a letter, if it is one.
    pub fn from_letter(c: char) -> Option<Mode> {
        Some(match c {
            'r' => Mode::Read,
            'w' => Mode::Write,
            'c' => Mode::Create,
            'd' => Mode::Delete,
            'x' => Mode::Traverse,
            'e' => Mode::Enumerate,
            'n' => Mode::New,
            'a' => Mode::Acl,
            _ => return None,
        })
    }

    /// The mode's letter.
    pub fn letter(self) -> char {
        match self {
            Mode::Read => 'r',
            Mode::Write => 'w',
            Mode::Create => 'c',
            Mode::Delete => 'd',
            Mode::Traverse => 'x',
            Mode::Enumerate => 'e',
            Mode::New => 'n',
            Mode::Acl => 'a',
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Whether `flags` is a valid ACL entry value: mode letters only.
pub fn valid_flags(flags: &str) -> bool {
    flags.chars().all(|c| Mode::from_letter(c).is_some())
}

/// What a connection's login lets it do: bound to an ACL, or not.
///
/// The link from a user to an ACL is read at login; the ACL's entries are
/// read from the state at every request, so a changed entry counts at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Access {
    /// No ACL: nobody needs to log in, or the user has no `acl` link, or
    /// its link is `*`.
    #[default]
    Full,
    /// Bound to the ACL of this name, `(None,"acl",NAME,…)`.
    Acl(SharedStr),
}

impl Access {
    /// Whether an ACL restricts the connection.
    pub fn is_restricted(&self) -> bool {
        matches!(self, Access::Acl(_))
    }

    /// The cursor at the data root of `st`.
    pub fn cursor<'a>(&self, st: &'a State) -> AclCursor<'a> {
        match self {
            Access::Full => AclCursor::unrestricted(),
            Access::Acl(name) => {
                AclCursor::new(st.entry(&[Value::Nil, Value::str("acl"), Value::str(name)]))
            }
        }
    }
}

/// What a request is checked for at the end of its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// One mode.
    Mode(Mode),
    /// DistKV's `W`: `w` where the target holds data, `c` where it doesn't
    /// (set and delete of a value).
    WriteOrCreate,
}

/// A refused request, with DistKV's error text: the tuple of the ACL
/// entry that decided (its Python repr, or `None`) and the letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclDenied {
    /// The deciding entry's repr, or `None` where a block decided.
    pub entry: Option<String>,
    /// The letter that was missing.
    pub mode: Mode,
}

impl fmt::Display for AclDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entry = self.entry.as_deref().unwrap_or("None");
        write!(f, "({entry}, '{}')", self.mode.letter())
    }
}

impl std::error::Error for AclDenied {}

/// Where a request stands in its user's ACL.
#[derive(Debug, Clone)]
pub struct AclCursor<'a> {
    /// `None` for a user without restrictions.
    patterns: Option<PatternCursor<'a>>,
    /// Modes refused from here on whatever the patterns say (a walk blocks
    /// `r` below an entry it may not traverse).
    blocked: u8,
}

impl<'a> AclCursor<'a> {
    /// A user without an ACL: everything is allowed except seeing ACL
    /// flags.
    pub fn unrestricted() -> AclCursor<'a> {
        AclCursor {
            patterns: None,
            blocked: 0,
        }
    }

    /// A user bound to the ACL rooted at `root` (the entry
    /// `(None,"acl",NAME)`); `None` where that ACL has no entries, which
    /// allows everything as no pattern matches.
    pub fn new(root: Option<Entry<'a>>) -> AclCursor<'a> {
        AclCursor {
            patterns: Some(root.map_or_else(PatternCursor::empty, PatternCursor::new)),
            blocked: 0,
        }
    }

    /// The cursor one element further down.
    pub fn step(&self, elem: &Value) -> AclCursor<'a> {
        AclCursor {
            patterns: self.patterns.as_ref().map(|p| p.step(elem)),
            blocked: self.blocked,
        }
    }

    /// The entry that decides here, if any.
    pub fn entry(&self) -> Option<Entry<'a>> {
        self.patterns.as_ref().and_then(PatternCursor::best)
    }

    /// Whether `mode` is allowed here.
    pub fn allows(&self, mode: Mode) -> bool {
        if self.blocked & mode.bit() != 0 {
            return false;
        }
        let Some(patterns) = &self.patterns else {
            return mode != Mode::Acl;
        };
        match patterns.best().and_then(Entry::data).as_deref() {
            None => true,
            Some(Value::Str(flags)) => flags.contains(mode.letter()),
            // Only strings of letters are stored; anything else grants
            // nothing.
            Some(_) => false,
        }
    }

    /// Refuses `mode` from here on down.
    pub fn block(&mut self, mode: Mode) {
        if self.patterns.is_some() {
            self.blocked |= mode.bit();
        }
    }

    /// `Ok` if `mode` is allowed here, else DistKV's error. An
    /// unrestricted user passes every check, even `a` (which
    /// [`AclCursor::allows`] denies it: there are no flags to show).
    pub fn check(&self, mode: Mode) -> Result<(), AclDenied> {
        if self.patterns.is_none() || self.allows(mode) {
            return Ok(());
        }
        Err(AclDenied {
            entry: self.entry().map(entry_repr),
            mode,
        })
    }

    /// The ACL flags of the deciding entry (`test_acl`'s answer), if any.
    pub fn flags(&self) -> Option<&'a str> {
        self.entry()?.data()?.as_str()
    }

    /// Walks `path` from `root` (the data root) checking `x` at every step
    /// into an existing entry, `n` at every step to one that does not exist
    /// (yet), and `want` at the end; returns the entry reached (if it
    /// exists) and the cursor there, for walks below it.
    pub fn follow(
        self,
        root: Entry<'a>,
        path: &[Value],
        want: Want,
    ) -> Result<(Option<Entry<'a>>, AclCursor<'a>), AclDenied> {
        let mut acl = self;
        let mut at = Some(root);
        for elem in path {
            let child = at.and_then(|e| e.child(elem));
            acl.check(if child.is_some() {
                Mode::Traverse
            } else {
                Mode::New
            })?;
            acl = acl.step(elem);
            at = child;
        }
        let mode = match want {
            Want::Mode(m) => m,
            Want::WriteOrCreate if at.and_then(Entry::data).is_some() => Mode::Write,
            Want::WriteOrCreate => Mode::Create,
        };
        acl.check(mode)?;
        Ok((at, acl))
    }
}

impl<'a> AclCursor<'a> {
    /// Like [`AclCursor::follow`] for a request that creates nothing: the
    /// walk ends without an answer (`Ok(None)`) at the first missing
    /// element, before any check there.
    pub fn follow_existing(
        self,
        root: Entry<'a>,
        path: &[Value],
        want: Want,
    ) -> Result<Option<(Entry<'a>, AclCursor<'a>)>, AclDenied> {
        let mut acl = self;
        let mut at = root;
        for elem in path {
            let Some(child) = at.child(elem) else {
                return Ok(None);
            };
            acl.check(Mode::Traverse)?;
            acl = acl.step(elem);
            at = child;
        }
        let mode = match want {
            Want::Mode(m) => m,
            Want::WriteOrCreate if at.data().is_some() => Mode::Write,
            Want::WriteOrCreate => Mode::Create,
        };
        acl.check(mode)?;
        Ok(Some((at, acl)))
    }

    /// The cursor at `path` (from the data root), without any check.
    pub fn follow_to(&self, path: &[Value]) -> AclCursor<'a> {
        path.iter().fold(self.clone(), |acl, elem| acl.step(elem))
    }

    /// The cursor of an entry `rel` below this one in a tree walk or a
    /// watch: a level that may not be traversed (`x`) blocks `r` for all
    /// below it. `None` if a level on the way may not be enumerated (`e`),
    /// which hides all below it.
    pub fn below(&self, rel: &[Value]) -> Option<AclCursor<'a>> {
        let mut acl = self.clone();
        for elem in rel {
            if !acl.allows(Mode::Enumerate) {
                return None;
            }
            if !acl.allows(Mode::Traverse) {
                acl.block(Mode::Read);
            }
            acl = acl.step(elem);
        }
        Some(acl)
    }
}

/// The entries `delete_tree` removes at and below `start` (where `acl`
/// stands) for a user bound to an ACL: those holding a value whose `d` the
/// ACL grants, parents first; nothing below a level the ACL may not
/// enumerate (`e`) or traverse (`x`). With their paths and old values.
pub fn deletable(start: Entry<'_>, acl: AclCursor<'_>) -> Vec<(distkv_model::Path, Option<Value>)> {
    let mut out = Vec::new();
    let mut todo = vec![(start, acl)];
    while let Some((e, acl)) = todo.pop() {
        if e.data().is_some() && acl.allows(Mode::Delete) {
            out.push((e.path(), e.data_cloned()));
        }
        if !acl.allows(Mode::Enumerate) || !acl.allows(Mode::Traverse) {
            continue;
        }
        // Reversed onto the stack: children come off it in their order.
        let children: Vec<_> = e.children().collect();
        for (name, child) in children.into_iter().rev() {
            todo.push((child, acl.step(&name)));
        }
    }
    out
}

/// DistKV's repr of an ACL entry in error texts:
/// `<AclEntry:[None, 'acl', 'NAME', …]@<NodeEvent n1:3 (3,)> ='cx'>`.
pub fn entry_repr(entry: Entry<'_>) -> String {
    let path: Vec<String> = entry.path().iter().map(Value::to_string).collect();
    let mut out = format!("<AclEntry:[{}]", path.join(", "));
    if let Some(chain) = entry.chain() {
        out.push_str(&format!("@{}", chain_repr(&chain)));
    }
    if let Some(data) = entry.data() {
        out.push_str(&format!(" ={data}"));
    }
    out.push('>');
    out
}

/// DistKV's `NodeEvent` repr: every link `node:tick`, then the head's tick
/// as a one-element tuple.
fn chain_repr(chain: &Chain) -> String {
    let links: Vec<String> = chain
        .links()
        .iter()
        .map(|l| format!("{}:{}", l.node, l.tick))
        .collect();
    format!("<NodeEvent {} ({},)>", links.join(" "), chain.head().tick)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;
    use distkv_log::LogLimits;
    use distkv_model::Path;

    fn p(s: &str) -> Vec<Value> {
        s.split('.')
            .filter(|e| !e.is_empty())
            .map(Value::str)
            .collect()
    }

    fn set(s: &mut State, path: Vec<Value>, v: Value) {
        s.local_change(&Path::from(path), Some(v)).unwrap();
    }

    /// A state with ACL `foo` as in DistKV's acceptance test: `one` =
    /// `rxnc`, `one.two` = `rc`.
    fn acceptance() -> State {
        let mut s = State::new("n1", LogLimits::default());
        s.make_ready();
        for (pattern, flags) in [("one", "rxnc"), ("one.two", "rc")] {
            let mut path = vec![Value::Nil, Value::str("acl"), Value::str("foo")];
            path.extend(p(pattern));
            set(&mut s, path, Value::str(flags));
        }
        s
    }

    fn acl(s: &State) -> AclCursor<'_> {
        AclCursor::new(s.entry(&[Value::Nil, Value::str("acl"), Value::str("foo")]))
    }

    fn try_set(s: &mut State, path: &str) -> Result<(), AclDenied> {
        let path = p(path);
        acl(s).follow(s.root(), &path, Want::WriteOrCreate)?;
        set(s, path, Value::Int(1));
        Ok(())
    }

    #[test]
    fn distkvs_acceptance_for_user_aclix() {
        let mut s = acceptance();
        try_set(&mut s, "one").unwrap();
        try_set(&mut s, "one.two").unwrap();
        let e = try_set(&mut s, "one.two.three").unwrap_err();
        assert_eq!(e.mode, Mode::New);
        let e = try_set(&mut s, "one.two").unwrap_err();
        assert_eq!(e.mode, Mode::Write);
        assert!(
            e.to_string()
                .starts_with("(<AclEntry:[None, 'acl', 'foo', 'one', 'two']@<NodeEvent n1:"),
            "{e}"
        );
        assert!(e.to_string().ends_with(" ='rc'>, 'w')"), "{e}");
    }

    #[test]
    fn no_match_allows_everything_and_unrestricted_users_lack_only_a() {
        let s = acceptance();
        let (_, at) = acl(&s)
            .follow(s.root(), &p("elsewhere.deep"), Want::Mode(Mode::Delete))
            .unwrap();
        assert!(at.allows(Mode::Acl), "no pattern matches: everything");
        let free = AclCursor::unrestricted();
        assert!(free.allows(Mode::Write) && !free.allows(Mode::Acl));
        let (_, mut at) = free
            .follow(s.root(), &p("a.b"), Want::Mode(Mode::Read))
            .unwrap();
        at.block(Mode::Read);
        assert!(at.allows(Mode::Read), "nothing blocks an unrestricted user");
    }

    #[test]
    fn a_block_refuses_below_whatever_the_patterns_say() {
        let s = acceptance();
        let mut at = acl(&s).step(&Value::str("one"));
        assert!(at.allows(Mode::Read));
        at.block(Mode::Read);
        let below = at.step(&Value::str("two"));
        assert_eq!(
            below.check(Mode::Read).unwrap_err().mode,
            Mode::Read,
            "the block holds below"
        );
    }

    #[test]
    fn a_changed_acl_counts_at_once() {
        let mut s = acceptance();
        try_set(&mut s, "one").unwrap();
        assert!(try_set(&mut s, "one.x").is_ok());
        let path = vec![
            Value::Nil,
            Value::str("acl"),
            Value::str("foo"),
            Value::str("one"),
        ];
        set(&mut s, path, Value::str("rxc"));
        assert_eq!(try_set(&mut s, "one.y").unwrap_err().mode, Mode::New);
    }

    #[test]
    fn flags_are_checked_letter_by_letter() {
        assert!(valid_flags("rwcdxena") && valid_flags(""));
        assert!(!valid_flags("rwq") && !valid_flags("W"));
        for c in LETTERS.chars() {
            assert_eq!(Mode::from_letter(c).map(Mode::letter), Some(c));
        }
    }
}
