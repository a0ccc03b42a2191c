//! DistKV's path patterns: how ACLs (`(None,"acl",NAME,…)`), type matches
//! (`(None,"match",…)`) and converters (`(None,"conv",GROUP,…)`) find the
//! entry that governs a path.
//!
//! A pattern element is a literal, `+` (exactly one level) or `#` (one or
//! more levels; several may appear). Wildcards never match a `None`
//! element. Among the patterns that match, earlier levels dominate, and at
//! each level a literal beats `+`, which beats a `#` that starts there,
//! which beats a `#` that goes on from an earlier level. The rule is
//! DistKV's (docs/compat.md, "Path patterns"), including its example, which
//! the tests check.
//!
//! A [`PatternCursor`] steps along a path one element at a time, as an ACL
//! check does; [`best_match`] is the whole walk at once.

use std::sync::LazyLock;

use distkv_model::Value;

use super::Entry;

/// Where a path stands among the patterns below one root: the pattern
/// entries that match the path so far, most specific first.
#[derive(Debug, Clone)]
pub struct PatternCursor<'a> {
    /// Each candidate and whether it is a `#` that may swallow more levels.
    /// Kept free of repeats (keeping the first), which bounds it by twice
    /// the number of pattern entries and changes no answer: a repeat only
    /// ever adds later repeats.
    candidates: Vec<(Entry<'a>, bool)>,
}

impl<'a> PatternCursor<'a> {
    /// The cursor at `root` (e.g. the entry `(None,"acl",NAME)`), before
    /// any path element.
    pub fn new(root: Entry<'a>) -> PatternCursor<'a> {
        PatternCursor {
            candidates: vec![(root, false)],
        }
    }

    /// A cursor that matches nothing (an ACL without entries).
    pub fn empty() -> PatternCursor<'a> {
        PatternCursor {
            candidates: Vec::new(),
        }
    }

    /// The cursor after one more path element.
    pub fn step(&self, elem: &Value) -> PatternCursor<'a> {
        static WILDCARDS: LazyLock<(Value, Value)> =
            LazyLock::new(|| (Value::str("+"), Value::str("#")));
        let (plus, hash) = &*WILDCARDS;
        let mut next: Vec<(Entry<'a>, bool)> = Vec::with_capacity(self.candidates.len() + 2);
        let mut push = |entry: Entry<'a>, keep: bool| {
            if !next.iter().any(|&(e, k)| e == entry && k == keep) {
                next.push((entry, keep));
            }
        };
        for &(entry, keep) in &self.candidates {
            if let Some(child) = entry.child(elem) {
                push(child, false);
            }
            if *elem == Value::Nil {
                continue;
            }
            if let Some(child) = entry.child(plus) {
                push(child, false);
            }
            if let Some(child) = entry.child(hash) {
                push(child, true);
            }
            if keep {
                push(entry, true);
            }
        }
        PatternCursor { candidates: next }
    }

    /// The most specific matching pattern that holds a value, if any.
    pub fn best(&self) -> Option<Entry<'a>> {
        self.candidates
            .iter()
            .map(|&(e, _)| e)
            .find(|e| e.data().is_some())
    }

    /// Whether no pattern can match this path or any path below it.
    pub fn is_dead(&self) -> bool {
        self.candidates.is_empty()
    }
}

/// The pattern entry below `root` that governs `path`, if any.
pub fn best_match<'a>(root: Entry<'a>, path: &[Value]) -> Option<Entry<'a>> {
    let mut cursor = PatternCursor::new(root);
    for elem in path {
        cursor = cursor.step(elem);
        if cursor.is_dead() {
            return None;
        }
    }
    cursor.best()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;
    use distkv_log::LogLimits;
    use distkv_model::Path;

    /// A state whose subtree `("acl","t")` holds `patterns`.
    fn patterns(patterns: &[(&str, &str)]) -> State {
        let mut s = State::new("n1", LogLimits::default());
        s.make_ready();
        for (pattern, flags) in patterns {
            let mut p: Vec<Value> = vec![Value::str("acl"), Value::str("t")];
            p.extend(pattern.split('.').map(Value::str));
            s.local_change(&Path::from(p), Some(Value::str(flags)))
                .unwrap();
        }
        s
    }

    fn lookup(s: &State, path: &[Value]) -> Option<String> {
        let root = s.entry(&[Value::str("acl"), Value::str("t")]).unwrap();
        best_match(root, path).map(|e| match e.data().as_deref() {
            Some(Value::Str(f)) => f.to_string(),
            other => panic!("{other:?}"),
        })
    }

    fn p(s: &str) -> Vec<Value> {
        s.split('.').map(Value::str).collect()
    }

    #[test]
    fn distkvs_example_resolves_as_distkv_does() {
        let s = patterns(&[("a.#", "r"), ("a.+.c", "w"), ("a.b", "x"), ("a.b.#", "e")]);
        for (path, want) in [
            ("a", None),
            ("a.b", Some("x")),
            ("a.q", Some("r")),
            ("a.b.c", Some("e")),
            ("a.q.c", Some("w")),
            ("a.q.c.d", Some("r")),
            ("z", None),
        ] {
            assert_eq!(lookup(&s, &p(path)).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn hash_needs_at_least_one_level_and_wildcards_skip_none() {
        let s = patterns(&[("x.#", "r"), ("y.+", "w")]);
        assert_eq!(lookup(&s, &p("x")), None);
        assert_eq!(lookup(&s, &p("x.1.2.3")).as_deref(), Some("r"));
        assert_eq!(lookup(&s, &[Value::str("x"), Value::Nil]), None);
        assert_eq!(lookup(&s, &[Value::str("y"), Value::Nil]), None);
        assert_eq!(lookup(&s, &p("y.z")).as_deref(), Some("w"));
        assert_eq!(lookup(&s, &p("y.z.z")), None);
    }

    #[test]
    fn many_hashes_on_a_long_path_stay_cheap() {
        // Without dropping repeats the candidates would double at every
        // level: 2^200 of them.
        let s = patterns(&[("#.#.#.#.#.#", "r"), ("#.+.#.+.#", "w")]);
        let long: Vec<Value> = (0..200).map(Value::Int).collect();
        // The second level decides: `+` beats `#`.
        assert_eq!(lookup(&s, &long).as_deref(), Some("w"));
    }

    /// The rule as written, candidates repeats and all (exponential).
    fn naive<'a>(root: Entry<'a>, path: &[Value]) -> Option<Entry<'a>> {
        let (plus, hash) = (Value::str("+"), Value::str("#"));
        let mut cands = vec![(root, false)];
        for elem in path {
            let mut next = Vec::new();
            for (node, keep) in cands {
                next.extend(node.child(elem).map(|c| (c, false)));
                if *elem == Value::Nil {
                    continue;
                }
                next.extend(node.child(&plus).map(|c| (c, false)));
                next.extend(node.child(&hash).map(|c| (c, true)));
                if keep {
                    next.push((node, true));
                }
            }
            cands = next;
        }
        cands
            .into_iter()
            .map(|(e, _)| e)
            .find(|e| e.data().is_some())
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 500,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed),
            ..proptest::test_runner::Config::default()
        })]
        #[test]
        fn dropping_repeats_changes_no_answer(
            pats in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(vec!["a", "b", "+", "#"]), 1..5),
                1..8,
            ),
            path in proptest::collection::vec(proptest::sample::select(vec![Some("a"), Some("b"), None]), 0..7),
        ) {
            let flags: Vec<(String, String)> = pats
                .iter()
                .enumerate()
                .map(|(i, p)| (p.join("."), i.to_string()))
                .collect();
            let flags: Vec<(&str, &str)> = flags.iter().map(|(p, f)| (p.as_str(), f.as_str())).collect();
            let s = patterns(&flags);
            let root = s.entry(&[Value::str("acl"), Value::str("t")]).unwrap();
            let path: Vec<Value> = path.iter().map(|e| e.map_or(Value::Nil, Value::str)).collect();
            let got = best_match(root, &path).map(|e| e.path().clone());
            let want = naive(root, &path).map(|e| e.path().clone());
            proptest::prop_assert_eq!(got, want);
        }
    }
}
