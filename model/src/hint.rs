//! Hints to the processor: memory asked for before it is read, so that
//! its loads overlap with other work instead of stalling it in turn. A hint
//! changes nothing but time.

use crate::Value;

/// Asks the processor to start loading the cache line at `p` without
/// waiting for it (nothing where the target has no such hint).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of every x86-64 processor, and a prefetch
        // neither faults nor reads into the program, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Value {
    /// Asks for what dropping, cloning or comparing this value reads
    /// first: the reference count (and a string's first bytes) of a
    /// string, a byte string or a path (the count sits just before an
    /// `Arc`'s data, as `std` lays it out today: a different layout only
    /// makes the hint miss), the elements of an array or a map. Nothing
    /// for the values held inline.
    #[inline]
    pub fn prefetch(&self) {
        const ARC_COUNTS: usize = 2 * size_of::<usize>();
        match self {
            Value::Str(s) => s.prefetch(),
            Value::Bin(b) | Value::BigUint(b) | Value::Ext(_, b) => {
                prefetch(b.as_ptr().wrapping_sub(ARC_COUNTS));
            }
            Value::Path(p) => prefetch(p.as_ptr().cast::<u8>().wrapping_sub(ARC_COUNTS)),
            Value::Array(a) => prefetch(a.as_ptr()),
            Value::Map(m) => prefetch(m.as_ptr()),
            Value::Nil | Value::Bool(_) | Value::Int(_) | Value::UInt(_) | Value::Float(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategies::{path, value};
    use crate::SharedStr;
    use proptest::prelude::*;
    use std::sync::Arc;

    proptest! {
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(0x41b7), ..ProptestConfig::default() })]

        /// A hint reads nothing and changes nothing, also for the empty
        /// and the shared values whose pointers point at nothing of their
        /// own.
        #[test]
        fn asking_for_a_value_changes_nothing(v in value(), p in path()) {
            let empty = [
                Value::Str(SharedStr::default()),
                Value::Bin(Arc::from(Vec::new())),
                Value::Array(Vec::new()),
                Value::Map(Vec::new()),
                Value::Path(crate::Path::root()),
                Value::Ext(5, Arc::from(Vec::new())),
            ];
            for v in empty.iter().chain([&v, &Value::Path(p)]) {
                let before = v.clone();
                v.prefetch();
                prop_assert_eq!(v, &before);
            }
        }
    }
}
