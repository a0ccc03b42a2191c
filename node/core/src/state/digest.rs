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
    for l in chain.links() {
        codec::write_map_len(out, 3);
        codec::write_str(out, "node");
        codec::write_str(out, &l.node);
        codec::write_str(out, "tick");
        codec::write_uint(out, l.tick);
        codec::write_str(out, "prev");
    }
    out.push(0xc0);
}

/// FNV-1a, twice with different offsets, for a 128-bit content hash.
fn hash128(bytes: &[u8]) -> u128 {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for &x in bytes {
        a = (a ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3);
        b = (b ^ x as u64)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(5);
    }
    ((a as u128) << 64) | b as u128
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::path;

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
