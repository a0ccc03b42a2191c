//! [`SharedStr`]: an immutable, reference-counted string behind one thin
//! pointer, the string of a [`Value::Str`](crate::Value::Str) and a
//! [`NodeName`](crate::NodeName).
//!
//! One allocation holds a 4-byte reference count, the 4-byte length and the
//! bytes. `Arc<str>` puts two 8-byte counts in front of the bytes (strong and
//! weak) and needs a fat pointer; the 8 bytes saved per string decide the
//! allocator's size class of the node's typical entries (a 100-byte value
//! takes a 112-byte block instead of a 128-byte one, a 12-byte name 24 bytes
//! instead of 32). Lengths are limited to 32 bits, as msgpack limits a string.
//!
//! The count never wraps: from 2³¹ on, a string is never freed again
//! (clones stop counting, drops stop uncounting), so a count that reaches two
//! thousand million references, or a string made [`SharedStr::immortal`],
//! costs a leak, never a use after free. The empty string is one such
//! immortal string and allocates nothing.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};

/// What precedes the bytes.
#[repr(C)]
struct Header {
    count: AtomicU32,
    len: u32,
}

/// The bytes start right after the header (its alignment, 4, is the
/// allocation's).
const HEADER: usize = size_of::<Header>();

/// From this count on a string is never freed: clones no longer count, drops
/// no longer uncount. Far below `u32::MAX`, so the clones under way when it
/// is reached (at most one per thread) cannot wrap the count.
const STUCK: u32 = 1 << 31;

/// The empty string, shared by all and never freed.
static EMPTY: Header = Header {
    count: AtomicU32::new(STUCK),
    len: 0,
};

/// An immutable, reference-counted UTF-8 string behind a thin pointer: see
/// the module documentation.
pub struct SharedStr {
    ptr: NonNull<Header>,
}

// SAFETY: the bytes are never written after construction and the count is
// atomic, as in `Arc<str>`.
unsafe impl Send for SharedStr {}
// SAFETY: as above.
unsafe impl Sync for SharedStr {}

impl SharedStr {
    /// The longest string, in bytes: msgpack's limit too, so every string
    /// read from the network or from disk fits; code that makes strings of
    /// its own (a rule's result) checks.
    pub const MAX_LEN: usize = u32::MAX as usize;

    /// A new string with the bytes of `s`, counted once.
    ///
    /// # Panics
    /// If `s` is longer than [`SharedStr::MAX_LEN`].
    pub fn new(s: &str) -> SharedStr {
        if s.is_empty() {
            return SharedStr::default();
        }
        let Ok(len) = u32::try_from(s.len()) else {
            panic!(
                "a string of {} bytes: strings are limited to 4 GiB, as in msgpack",
                s.len()
            );
        };
        let layout = layout(len);
        // SAFETY: the layout is at least the header's size, not zero.
        let Some(ptr) = NonNull::new(unsafe { alloc(layout) }.cast::<Header>()) else {
            handle_alloc_error(layout)
        };
        // SAFETY: the allocation holds a header and `len` bytes after it,
        // aligned for the header; `s` does not overlap a fresh allocation.
        unsafe {
            ptr.write(Header {
                count: AtomicU32::new(1),
                len,
            });
            std::ptr::copy_nonoverlapping(s.as_ptr(), bytes(ptr), s.len());
        }
        SharedStr { ptr }
    }

    /// A string that is never freed: its clones and drops do not touch the
    /// count, so threads sharing it contend on nothing. For the small fixed
    /// sets of strings a process interns.
    pub fn immortal(s: &str) -> SharedStr {
        let s = SharedStr::new(s);
        s.header().count.store(STUCK, Ordering::Relaxed);
        s
    }

    /// The string.
    #[inline]
    pub fn as_str(&self) -> &str {
        let len = self.header().len as usize;
        // SAFETY: `new` copied `len` bytes of a `str` after the header; they
        // are never written again and live as long as `self` counts.
        unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(bytes(self.ptr), len)) }
    }

    /// Asks for the count and the bytes in the next cache line too (a
    /// 100-byte string takes two or three): what a drop, a clone or a
    /// comparison reads first. See [`crate::hint`].
    #[inline]
    pub fn prefetch(&self) {
        let p = self.ptr.as_ptr().cast::<u8>();
        crate::hint::prefetch(p);
        crate::hint::prefetch(p.wrapping_add(64));
    }

    /// Whether `a` and `b` are the same allocation (equal strings need not
    /// be).
    #[inline]
    pub fn ptr_eq(a: &SharedStr, b: &SharedStr) -> bool {
        a.ptr == b.ptr
    }

    /// The number of references counted, 2³¹ or more once the string
    /// is never freed (for tests).
    pub fn count(s: &SharedStr) -> u32 {
        s.header().count.load(Ordering::Relaxed)
    }

    /// The thin pointer, owning the reference `s` counted.
    #[inline]
    pub fn into_raw(s: SharedStr) -> *const u8 {
        std::mem::ManuallyDrop::new(s)
            .ptr
            .as_ptr()
            .cast_const()
            .cast()
    }

    /// The string [`SharedStr::into_raw`] gave `p` for.
    ///
    /// # Safety
    /// `p` came from `into_raw`, and the reference it owns is taken over
    /// once (or the result is never dropped).
    #[inline]
    pub unsafe fn from_raw(p: *const u8) -> SharedStr {
        // SAFETY: `into_raw` gave a non-null header pointer.
        SharedStr {
            ptr: unsafe { NonNull::new_unchecked(p.cast::<Header>().cast_mut()) },
        }
    }

    #[inline]
    fn header(&self) -> &Header {
        // SAFETY: the header lives as long as `self` counts.
        unsafe { self.ptr.as_ref() }
    }
}

/// The allocation of a string of `len` bytes.
fn layout(len: u32) -> Layout {
    Layout::from_size_align(HEADER + len as usize, align_of::<Header>())
        .expect("a header and a 32-bit length fit the address space")
}

/// Where the bytes of the string at `ptr` start.
///
/// # Safety
/// `ptr` is a live string's header.
#[inline]
unsafe fn bytes(ptr: NonNull<Header>) -> *mut u8 {
    // SAFETY: the bytes follow the header in the same allocation.
    unsafe { ptr.as_ptr().cast::<u8>().add(HEADER) }
}

impl Default for SharedStr {
    /// The empty string (no allocation).
    fn default() -> SharedStr {
        SharedStr {
            ptr: NonNull::from(&EMPTY),
        }
    }
}

impl Clone for SharedStr {
    #[inline]
    fn clone(&self) -> SharedStr {
        let count = &self.header().count;
        // Relaxed, as `Arc::clone`: a new reference comes from an existing
        // one, so the string cannot be freed meanwhile.
        if count.load(Ordering::Relaxed) < STUCK {
            count.fetch_add(1, Ordering::Relaxed);
        }
        SharedStr { ptr: self.ptr }
    }
}

impl Drop for SharedStr {
    #[inline]
    fn drop(&mut self) {
        let count = &self.header().count;
        let mut n = count.load(Ordering::Relaxed);
        loop {
            // A stuck count is never lowered: the clones it stopped counting
            // may still be alive.
            if n >= STUCK {
                return;
            }
            match count.compare_exchange_weak(n, n - 1, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        if n == 1 {
            // As `Arc`'s drop: every other owner's use of the bytes happened
            // before their release of the count.
            fence(Ordering::Acquire);
            let layout = layout(self.header().len);
            // SAFETY: this was the last reference to a string `new`
            // allocated with this layout (the empty one is stuck).
            unsafe { dealloc(self.ptr.as_ptr().cast(), layout) };
        }
    }
}

impl Deref for SharedStr {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> SharedStr {
        SharedStr::new(s)
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> SharedStr {
        SharedStr::new(&s)
    }
}

impl From<std::borrow::Cow<'_, str>> for SharedStr {
    fn from(s: std::borrow::Cow<'_, str>) -> SharedStr {
        SharedStr::new(&s)
    }
}

impl PartialEq for SharedStr {
    #[inline]
    fn eq(&self, other: &SharedStr) -> bool {
        SharedStr::ptr_eq(self, other) || self.as_str() == other.as_str()
    }
}

impl Eq for SharedStr {}

impl PartialEq<str> for SharedStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialOrd for SharedStr {
    fn partial_cmp(&self, other: &SharedStr) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SharedStr {
    fn cmp(&self, other: &SharedStr) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// Hashes as the `str` does, so maps keyed by `SharedStr` are searched by
/// `&str`.
impl Hash for SharedStr {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Display for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl serde::Serialize for SharedStr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for SharedStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SharedStr, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = SharedStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<SharedStr, E> {
                Ok(SharedStr::new(s))
            }
        }
        d.deserialize_str(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_keep_their_bytes_and_share_one_allocation() {
        for text in ["", "a", "bench.123456", &"x".repeat(100), "grüße, 世界"] {
            let s = SharedStr::from(text);
            assert_eq!(&*s, text);
            assert_eq!(s.len(), text.len());
            let t = s.clone();
            assert!(SharedStr::ptr_eq(&s, &t));
            assert_eq!(s, t);
            assert_eq!(format!("{s:?}"), format!("{text:?}"));
        }
        let (a, b) = (SharedStr::from("a"), SharedStr::from("b"));
        assert_ne!(a, b);
        assert!(a < b);
    }

    #[test]
    fn the_count_follows_clones_and_drops() {
        let s = SharedStr::from("counted");
        assert_eq!(SharedStr::count(&s), 1);
        let clones: Vec<_> = (0..10).map(|_| s.clone()).collect();
        assert_eq!(SharedStr::count(&s), 11);
        drop(clones);
        assert_eq!(SharedStr::count(&s), 1);
        let raw = SharedStr::into_raw(s.clone());
        assert_eq!(SharedStr::count(&s), 2);
        // SAFETY: `raw` came from `into_raw` and is taken over once.
        drop(unsafe { SharedStr::from_raw(raw) });
        assert_eq!(SharedStr::count(&s), 1);
    }

    #[test]
    fn a_stuck_count_never_moves_and_the_string_lives_on() {
        let s = SharedStr::from("stuck");
        s.header().count.store(STUCK - 2, Ordering::Relaxed);
        let a = s.clone();
        let b = s.clone();
        assert_eq!(SharedStr::count(&s), STUCK);
        let more: Vec<_> = (0..5).map(|_| s.clone()).collect();
        drop((a, b, more));
        assert_eq!(
            SharedStr::count(&s),
            STUCK,
            "drops do not lower a stuck count"
        );
        assert_eq!(&*s, "stuck");
        // Freed never: give the test's allocation back by hand.
        s.header().count.store(1, Ordering::Relaxed);

        let i = SharedStr::immortal("interned");
        let copies: Vec<_> = (0..3).map(|_| i.clone()).collect();
        drop(copies);
        assert_eq!(SharedStr::count(&i), STUCK);
        i.header().count.store(1, Ordering::Relaxed);
        assert_eq!(SharedStr::count(&SharedStr::default()), STUCK);
    }

    #[test]
    fn threads_clone_and_drop_one_string() {
        let s = SharedStr::from("shared by threads");
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        let c = s.clone();
                        assert_eq!(&*c, "shared by threads");
                    }
                });
            }
        });
        assert_eq!(SharedStr::count(&s), 1);
    }

    #[test]
    fn hashes_as_str_and_is_found_by_it() {
        let mut m = std::collections::HashMap::new();
        m.insert(SharedStr::from("key"), 1);
        assert_eq!(m.get("key"), Some(&1));
    }

    #[test]
    fn strings_take_a_smaller_block_than_arc_str() {
        // The header is two 4-byte words; `Arc<str>`'s two 8-byte counts,
        // behind a pointer of two words.
        assert_eq!(HEADER, 8);
        assert_eq!(size_of::<SharedStr>(), 8);
        assert_eq!(size_of::<std::sync::Arc<str>>(), 16);
        assert_eq!(size_of::<Option<SharedStr>>(), 8);
    }
}
