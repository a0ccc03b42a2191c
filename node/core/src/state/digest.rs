//! The state digest: an order-independent 128-bit content hash of a tree
//! and of each node's highest tick.
//!
//! Each entry that holds a value or a chain contributes the hash of its
//! path, value (or a "no value" marker), full chain and tock; each known
//! node the hash of its name and tick. The contributions are added, so
//! the digest does not depend on the order they come in: [`State::digest`]
//! walks its tree, `distkv-replay diff` feeds entries as it streams them
//! from a file or a live node, and both get the same figure.
//!
//! [`State::digest`]: super::State::digest

use distkv_model::{codec, Chain, Value};

/// Accumulates a digest; see the module docs.
#[derive(Debug, Default)]
pub struct Digest {
    sum: u128,
    buf: Vec<u8>,
}

impl Digest {
    /// An empty digest.
    pub fn new() -> Digest {
        Digest::default()
    }

    /// Adds one entry. Entries without value and chain (intermediate
    /// nodes) are not part of a digest: leave them out.
    pub fn add_entry(
        &mut self,
        path: &[Value],
        data: Option<&Value>,
        chain: Option<&Chain>,
        tock: u64,
    ) {
        self.start(path);
        match data {
            Some(v) => codec::encode(v, &mut self.buf),
            None => self.buf.push(0xc1), // never valid msgpack: "no value"
        }
        self.finish(chain, tock);
    }

    /// [`Digest::add_entry`] of an entry whose value is given as its
    /// encoding (as [`codec::encode`] writes it): the same sum.
    pub fn add_encoded_entry(
        &mut self,
        path: &[Value],
        data: Option<&[u8]>,
        chain: Option<&Chain>,
        tock: u64,
    ) {
        self.start(path);
        match data {
            Some(v) => self.buf.extend_from_slice(v),
            None => self.buf.push(0xc1), // never valid msgpack: "no value"
        }
        self.finish(chain, tock);
    }

    /// Starts an entry's bytes with its path.
    fn start(&mut self, path: &[Value]) {
        self.buf.clear();
        codec::write_path(&mut self.buf, path);
    }

    /// Ends an entry's bytes with its chain and tock, and adds them.
    fn finish(&mut self, chain: Option<&Chain>, tock: u64) {
        if let Some(c) = chain {
            write_chain(&mut self.buf, c);
        }
        codec::write_uint(&mut self.buf, tock);
        self.sum = self.sum.wrapping_add(hash128(&self.buf));
    }

    /// Adds one node and its highest tick (`None`: none seen).
    pub fn add_node(&mut self, name: &str, tick: Option<u64>) {
        self.buf.clear();
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0xff);
        self.buf
            .extend_from_slice(&tick.map_or(u64::MAX, |t| t).to_le_bytes());
        self.sum = self.sum.wrapping_add(hash128(&self.buf));
    }

    /// The digest of what was added.
    pub fn value(&self) -> u128 {
        self.sum
    }
}

/// The bytes of `codec::encode(&chain.to_value(-1))` — nested `{node,
/// tick, prev}` maps, the last `prev` nil — without building the value.
fn write_chain(out: &mut Vec<u8>, chain: &Chain) {
    // A map of three, then "node"; "tick"; "prev" (fixstrs).
    const NODE: &[u8] = b"\x83\xa4node";
    const TICK: &[u8] = b"\xa4tick";
    const PREV: &[u8] = b"\xa4prev";
    for l in chain.links() {
        out.extend_from_slice(NODE);
        codec::write_str(out, &l.node);
        out.extend_from_slice(TICK);
        codec::write_uint(out, l.tick);
        out.extend_from_slice(PREV);
    }
    out.push(0xc0);
}

/// A 128-bit content hash of `bytes`: two lanes of 64 bits take the bytes
/// eight at a time (little-endian words, the last one padded with zeros),
/// each word through a multiply and a shift that, for a given word, map a
/// lane's states one to one (no two histories merge), lane `b` with the
/// word's halves swapped and its own odd constant; each lane then takes
/// the length and ends with MurmurHash3's finalizer, so every input bit
/// moves about half of the output's. A word's worth of dependent
/// operations per eight bytes where a byte-wise FNV-1a took one per byte:
/// the digests of a restore or a `diff` of 1 M entries hash 60 MB each.
/// Not keyed, so not for data chosen to collide, which no state digest
/// can stop anyway. Digests are compared within one version of distkv
/// (a state's against a file's or a live node's entries, both hashed
/// here); they are not stored.
pub fn hash128(bytes: &[u8]) -> u128 {
    const KA: u64 = 0x9e37_79b9_7f4a_7c15;
    const KB: u64 = 0xc2b2_ae3d_27d4_eb4f;
    fn step(lane: u64, k: u64) -> u64 {
        let x = lane.wrapping_mul(k);
        x ^ (x >> 29)
    }
    fn fmix(mut x: u64) -> u64 {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
    let (mut a, mut b) = (0x243f_6a88_85a3_08d3u64, 0x1319_8a2e_0370_7344u64);
    let mut words = bytes.chunks_exact(8);
    let mut take = |w: u64| {
        a = step(a ^ w, KA);
        b = step(b ^ w.rotate_left(32), KB);
    };
    for w in &mut words {
        take(u64::from_le_bytes(w.try_into().unwrap_or_default()));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        take(u64::from_le_bytes(w));
    }
    let n = bytes.len() as u64;
    (u128::from(fmix(a ^ n)) << 64) | u128::from(fmix(step(b ^ n, KB)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::path;

    #[test]
    fn every_byte_and_the_length_count() {
        // Inputs one word and a bit long, trailing zeros that pad the
        // last word, each single bit flipped: no two hash alike, and each
        // flip moves about half of the 128 bits (what the finalizer
        // gives; a lane that lost a flip would move none of its 64).
        let base: Vec<u8> = (0..150u32).map(|i| (i * 37 + 11) as u8).collect();
        let mut seen = std::collections::HashSet::new();
        for n in 0..=base.len() {
            assert!(seen.insert(hash128(&base[..n])), "prefix of {n} bytes");
        }
        let mut padded = base[..13].to_vec();
        for _ in 0..4 {
            padded.push(0);
            assert!(seen.insert(hash128(&padded)), "{} bytes", padded.len());
        }
        let h = hash128(&base);
        let mut moved = [0u32; 2];
        for bit in 0..base.len() * 8 {
            let mut flipped = base.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let g = hash128(&flipped);
            assert!(seen.insert(g), "bit {bit}");
            let d = h ^ g;
            for (lane, d) in [(d >> 64) as u64, d as u64].into_iter().enumerate() {
                assert!(
                    d.count_ones() >= 10,
                    "bit {bit} moved {d:#x} of lane {lane}"
                );
                moved[lane] += d.count_ones();
            }
        }
        // 32 bits of 64 on average, ± 0.12 (a flip's count has a spread
        // of 4 bits, over 1 200 flips).
        for m in moved {
            let mean = f64::from(m) / (base.len() * 8) as f64;
            assert!((31.0..33.0).contains(&mean), "{mean} bits moved on average");
        }
    }

    #[test]
    fn entries_are_hashed_as_their_values_encode() {
        let chains = [
            Chain::single("n1".into(), 5),
            Chain::attach(
                "a".into(),
                1 << 40,
                Some(&Chain::attach(
                    "b".into(),
                    200,
                    Some(&Chain::single("c".into(), 0)),
                )),
            ),
        ];
        let p = path!["bench", 17u64, Value::Nil, "x".repeat(40)];
        for c in &chains {
            let mut bytes = Vec::new();
            write_chain(&mut bytes, c);
            assert_eq!(bytes, codec::to_vec(&c.to_value(-1)));
            let mut d = Digest::new();
            d.add_entry(&p, Some(&Value::Int(3)), Some(c), 9);
            let mut want = Vec::new();
            codec::write_path(&mut want, &p);
            codec::encode(&Value::Int(3), &mut want);
            codec::encode(&c.to_value(-1), &mut want);
            codec::write_uint(&mut want, 9);
            assert_eq!(d.value(), hash128(&want));
        }
    }
}
