//! [`Packed`]: a [`Value`] in 16 bytes, the form the node's tree keeps its
//! entries' names and values in (a `Value` takes 32: its arrays and maps are
//! `Vec`s of three words).
//!
//! Layout: a kind byte, the extension type byte, a 32-bit length and one
//! word. Scalars (nil, booleans, integers that fit 64 bits, floats) live in
//! the word. Strings, byte strings, big integers, extension values and paths
//! keep the very allocation the `Value` had (a [`SharedStr`], an `Arc`): the
//! word is its (thin) pointer, the length its element count, so packing and
//! unpacking never copy or count references. Arrays and maps become boxed slices (their `Vec`'s spare
//! capacity is given back) held the same way. Anything whose length does
//! not fit 32 bits (never, under the node's budget) is boxed whole.
//!
//! Invariant: a `Packed` owns exactly what the `Value` it was made from
//! owned, and [`Packed::take`] rebuilds that `Value` bit for bit. Every
//! reading goes through such a rebuilt `Value` ([`Packed::view`], a
//! [`ValueRef`] that is never dropped), so equality, hashing, `same_type`,
//! `Display` and encoding are `Value`'s own: a packed value cannot disagree
//! with the value it holds.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr::slice_from_raw_parts;
use std::sync::Arc;

use crate::path::Path;
use crate::shared_str::SharedStr;
use crate::value::Value;

/// Which `Value` variant a [`Packed`] holds, and how.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Kind {
    Nil,
    False,
    True,
    Int,
    UInt,
    Float,
    BigUint,
    Str,
    Bin,
    Ext,
    Array,
    Map,
    Path,
    /// A whole `Value` in a `Box` (a length beyond 32 bits).
    Boxed,
}

/// A scalar's bits or a pointer to what the value owns.
#[derive(Clone, Copy)]
union Word {
    bits: u64,
    ptr: *const u8,
}

/// A [`Value`] in 16 bytes (`Option<Packed>` too); see the module
/// documentation. Read it through [`Packed::view`].
pub struct Packed {
    kind: Kind,
    ext: i8,
    len: u32,
    word: Word,
}

// A `Packed` owns a `Value`'s parts, and `Value` is `Send` and `Sync`.
unsafe impl Send for Packed {}
unsafe impl Sync for Packed {}

impl Packed {
    #[inline]
    fn scalar(kind: Kind, bits: u64) -> Packed {
        Packed {
            kind,
            ext: 0,
            len: 0,
            word: Word { bits },
        }
    }

    #[inline]
    fn pointer(kind: Kind, ext: i8, len: usize, ptr: *const u8) -> Packed {
        Packed {
            kind,
            ext,
            // Callers checked that the length fits.
            len: len as u32,
            word: Word { ptr },
        }
    }

    fn boxed(v: Value) -> Packed {
        Packed::pointer(
            Kind::Boxed,
            0,
            0,
            Box::into_raw(Box::new(v)).cast_const().cast(),
        )
    }

    /// Packs `v`, keeping its allocations (an array's or a map's spare
    /// capacity is freed).
    #[inline]
    pub fn new(v: Value) -> Packed {
        let fits = |n: usize| u32::try_from(n).is_ok();
        match v {
            Value::Nil => Packed::scalar(Kind::Nil, 0),
            Value::Bool(false) => Packed::scalar(Kind::False, 0),
            Value::Bool(true) => Packed::scalar(Kind::True, 0),
            Value::Int(i) => Packed::scalar(Kind::Int, i as u64),
            Value::UInt(u) => Packed::scalar(Kind::UInt, u),
            Value::Float(f) => Packed::scalar(Kind::Float, f.to_bits()),
            Value::BigUint(b) if fits(b.len()) => {
                Packed::pointer(Kind::BigUint, 0, b.len(), Arc::into_raw(b).cast())
            }
            // A `SharedStr`'s length always fits 32 bits.
            Value::Str(s) => Packed::pointer(Kind::Str, 0, s.len(), SharedStr::into_raw(s)),
            Value::Bin(b) if fits(b.len()) => {
                Packed::pointer(Kind::Bin, 0, b.len(), Arc::into_raw(b).cast())
            }
            Value::Ext(t, b) if fits(b.len()) => {
                Packed::pointer(Kind::Ext, t, b.len(), Arc::into_raw(b).cast())
            }
            Value::Array(a) if fits(a.len()) => {
                let a = a.into_boxed_slice();
                Packed::pointer(
                    Kind::Array,
                    0,
                    a.len(),
                    Box::into_raw(a).cast_const().cast(),
                )
            }
            Value::Map(m) if fits(m.len()) => {
                let m = m.into_boxed_slice();
                Packed::pointer(Kind::Map, 0, m.len(), Box::into_raw(m).cast_const().cast())
            }
            Value::Path(p) if fits(p.len()) => {
                let p = p.into_arc();
                Packed::pointer(Kind::Path, 0, p.len(), Arc::into_raw(p).cast())
            }
            v => Packed::boxed(v),
        }
    }

    /// Rebuilds the value this was made from, taking over what it owns
    /// (for [`Kind::Boxed`], the `Box` is freed and must not be used
    /// again).
    ///
    /// # Safety
    /// The result owns the packed parts: either `self` is never used again
    /// (it is being dropped or was forgotten), or the result is never
    /// dropped and `self` is not boxed ([`Packed::view`]).
    #[inline]
    unsafe fn take(&self) -> Value {
        let n = self.len as usize;
        // SAFETY: the word was written by `new` for this kind: bits for
        // scalars, else the pointer `into_raw` gave for `n` elements.
        unsafe {
            let p = self.word.ptr;
            match self.kind {
                Kind::Nil => Value::Nil,
                Kind::False => Value::Bool(false),
                Kind::True => Value::Bool(true),
                Kind::Int => Value::Int(self.word.bits as i64),
                Kind::UInt => Value::UInt(self.word.bits),
                Kind::Float => Value::Float(f64::from_bits(self.word.bits)),
                Kind::BigUint => Value::BigUint(Arc::from_raw(slice_from_raw_parts(p, n))),
                Kind::Str => Value::Str(SharedStr::from_raw(p)),
                Kind::Bin => Value::Bin(Arc::from_raw(slice_from_raw_parts(p, n))),
                Kind::Ext => Value::Ext(self.ext, Arc::from_raw(slice_from_raw_parts(p, n))),
                // A boxed slice of `n` is a `Vec`'s buffer of capacity `n`.
                Kind::Array => Value::Array(Vec::from_raw_parts(p as *mut Value, n, n)),
                Kind::Map => Value::Map(Vec::from_raw_parts(p as *mut (Value, Value), n, n)),
                Kind::Path => Value::Path(Path::from_arc(Arc::from_raw(slice_from_raw_parts(
                    p as *const Value,
                    n,
                )))),
                Kind::Boxed => *Box::from_raw(p as *mut Value),
            }
        }
    }

    /// The value, borrowed: no copy, no reference counting.
    #[inline]
    pub fn view(&self) -> ValueRef<'_> {
        if self.kind == Kind::Boxed {
            // SAFETY: `new` boxed a `Value` there; it lives as long as self.
            return ValueRef(Repr::Borrowed(unsafe { &*(self.word.ptr as *const Value) }));
        }
        // SAFETY: not boxed, and the rebuilt value is never dropped.
        ValueRef(Repr::Rebuilt(
            ManuallyDrop::new(unsafe { self.take() }),
            PhantomData,
        ))
    }

    /// The value, owned.
    #[inline]
    pub fn into_value(self) -> Value {
        let me = ManuallyDrop::new(self);
        // SAFETY: `me` is never used or dropped again.
        unsafe { me.take() }
    }
}

impl From<Value> for Packed {
    fn from(v: Value) -> Packed {
        Packed::new(v)
    }
}

impl Drop for Packed {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: self is being dropped.
        drop(unsafe { self.take() });
    }
}

/// Clones the value (reference counts for strings and paths, a copy of an
/// array's or map's elements).
impl Clone for Packed {
    fn clone(&self) -> Packed {
        Packed::new(self.view().clone())
    }
}

impl PartialEq for Packed {
    fn eq(&self, other: &Packed) -> bool {
        *self.view() == *other.view()
    }
}

impl Eq for Packed {}

/// Hashes as the [`Value`] does: lookups by `&Value` find packed keys.
impl Hash for Packed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.view().hash(state)
    }
}

impl fmt::Debug for Packed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.view(), f)
    }
}

/// A [`Packed`] value, borrowed for `'a`: derefs to the [`Value`].
///
/// Its own accessors ([`ValueRef::as_str`], [`ValueRef::get`], …) hand out
/// references that live for `'a` — into the packed value's allocations —
/// not just as long as the `ValueRef`.
pub struct ValueRef<'a>(Repr<'a>);

enum Repr<'a> {
    /// Rebuilt from the packed parts; never dropped.
    Rebuilt(ManuallyDrop<Value>, PhantomData<&'a Packed>),
    /// A boxed value.
    Borrowed(&'a Value),
}

impl Deref for ValueRef<'_> {
    type Target = Value;
    #[inline]
    fn deref(&self) -> &Value {
        match &self.0 {
            Repr::Rebuilt(v, _) => v,
            Repr::Borrowed(v) => v,
        }
    }
}

impl<'a> ValueRef<'a> {
    /// Lends `r`, which points into the packed value's allocations (never
    /// into the rebuilt `Value` itself), for `'a`.
    #[inline]
    fn extend<T: ?Sized>(&self, r: &T) -> &'a T {
        // SAFETY: the packed value owns the allocation `r` points into and
        // is borrowed, unchanged, for 'a (see the callers).
        unsafe { &*(r as *const T) }
    }

    /// The string, if this is one ([`Value::as_str`], for `'a`).
    #[inline]
    pub fn as_str(&self) -> Option<&'a str> {
        // The characters are in the `SharedStr`'s allocation.
        self.deref().as_str().map(|s| self.extend(s))
    }

    /// The array elements ([`Value::as_array`], for `'a`).
    #[inline]
    pub fn as_array(&self) -> Option<&'a [Value]> {
        // The elements are in the boxed slice.
        self.deref().as_array().map(|a| self.extend(a))
    }

    /// The map pairs ([`Value::as_map`], for `'a`).
    #[inline]
    pub fn as_map(&self) -> Option<&'a [(Value, Value)]> {
        // The pairs are in the boxed slice.
        self.deref().as_map().map(|m| self.extend(m))
    }

    /// A map's value under a string key ([`Value::get`], for `'a`).
    #[inline]
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The value, cloned.
    #[inline]
    pub fn to_value(&self) -> Value {
        self.deref().clone()
    }
}

impl PartialEq for ValueRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl PartialEq<Value> for ValueRef<'_> {
    fn eq(&self, other: &Value) -> bool {
        **self == *other
    }
}

impl fmt::Debug for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl fmt::Display for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::hash::BuildHasher;

    /// Every kind of value, with numbers that are equal across kinds
    /// (`1 == 1.0 == True`) drawn often.
    fn any_value() -> impl Strategy<Value = Value> {
        let text = proptest::collection::vec(any::<char>(), 0..12)
            .prop_map(|c| c.into_iter().collect::<String>());
        let bytes = proptest::collection::vec(any::<u8>(), 0..12);
        let small = -3i64..4;
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Bool),
            small.clone().prop_map(Value::Int),
            small.clone().prop_map(|i| Value::Float(i as f64)),
            any::<i64>().prop_map(Value::Int),
            any::<u64>().prop_map(Value::uint),
            any::<f64>().prop_map(Value::Float),
            Just(Value::Float(f64::NAN)),
            Just(Value::Float(-0.0)),
            Just(Value::UInt(1 << 63)),
            Just(Value::Float((1u64 << 63) as f64)),
            text.prop_map(|s| Value::str(&s)),
            small.prop_map(|i| Value::str(&i.to_string())),
            bytes.clone().prop_map(|b| Value::Bin(Arc::from(b))),
            bytes.clone().prop_map(|b| Value::BigUint(Arc::from(b))),
            (any::<i8>(), bytes).prop_map(|(t, b)| Value::Ext(t, Arc::from(b))),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                // With spare capacity, which packing gives back.
                proptest::collection::vec(inner.clone(), 0..6).prop_map(|mut a| {
                    a.reserve(5);
                    Value::Array(a)
                }),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..6)
                    .prop_map(Value::Map),
                proptest::collection::vec(inner, 0..4).prop_map(|e| Value::Path(Path::new(e))),
            ]
        })
    }

    fn same_bits(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_bits(x, y))
            }
            (Value::Map(x), Value::Map(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|((k, v), (l, w))| same_bits(k, l) && same_bits(v, w))
            }
            (Value::Path(x), Value::Path(y)) => {
                x.len() == y.len() && x.iter().zip(y.iter()).all(|(x, y)| same_bits(x, y))
            }
            _ => a.same_type(b) && a == b && format!("{a:?}") == format!("{b:?}"),
        }
    }

    #[test]
    fn sixteen_bytes_with_or_without_a_value() {
        assert_eq!(std::mem::size_of::<Packed>(), 16);
        assert_eq!(std::mem::size_of::<Option<Packed>>(), 16);
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x7061_636b),
            cases: 2_000,
            ..ProptestConfig::default()
        })]

        /// Packing keeps the value bit for bit, through a view, a clone
        /// and unpacking.
        #[test]
        fn packing_round_trips(v in any_value()) {
            let p = Packed::new(v.clone());
            prop_assert!(same_bits(&p.view(), &v));
            let c = p.clone();
            prop_assert!(same_bits(&c.view(), &v));
            drop(p);
            prop_assert!(same_bits(&c.into_value(), &v));
        }

        /// Equality, `same_type` and hashing of packed values and of their
        /// views agree with `Value`'s, across kinds.
        #[test]
        fn packed_values_compare_and_hash_like_values(a in any_value(), b in any_value()) {
            let s = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
            let (pa, pb) = (Packed::new(a.clone()), Packed::new(b.clone()));
            prop_assert_eq!(pa == pb, a == b);
            prop_assert_eq!(pa.view() == pb.view(), a == b);
            prop_assert_eq!(pa.view() == b, a == b);
            prop_assert_eq!(pa.view().same_type(&b), a.same_type(&b));
            prop_assert_eq!(s.hash_one(&pa), s.hash_one(&a));
            prop_assert_eq!(s.hash_one(&*pa.view()), s.hash_one(&a));
            if a == b {
                prop_assert_eq!(s.hash_one(&pa), s.hash_one(&pb));
            }
            prop_assert_eq!(pa.view().to_string(), a.to_string());
            prop_assert_eq!(crate::codec::to_vec(&pa.view()), crate::codec::to_vec(&a));
        }
    }

    #[test]
    fn views_lend_for_the_packed_values_lifetime() {
        let map = Packed::new(Value::map([("key", Value::str("v")), ("n", Value::Int(1))]));
        let got = {
            let view = map.view();
            view.get("key")
        };
        assert_eq!(got.and_then(Value::as_str), Some("v"));
        let s = Packed::new(Value::str("name"));
        let text = s.view().as_str();
        assert_eq!(text, Some("name"));
        let a = Packed::new(Value::Array(vec![Value::Int(1)]));
        assert_eq!(a.view().as_array(), Some(&[Value::Int(1)][..]));
        assert_eq!(Packed::new(Value::Int(1)).view().as_str(), None);
    }

    #[test]
    fn strings_keep_their_allocation() {
        let s = SharedStr::from("shared");
        let p = Packed::new(Value::Str(s.clone()));
        assert_eq!(SharedStr::count(&s), 2);
        match &*p.view() {
            Value::Str(v) => assert!(SharedStr::ptr_eq(v, &s)),
            other => panic!("{other:?}"),
        }
        assert_eq!(SharedStr::count(&s), 2, "a view counts no reference");
        let c = p.clone();
        assert_eq!(SharedStr::count(&s), 3);
        drop((p, c));
        assert_eq!(SharedStr::count(&s), 1);
    }
}
