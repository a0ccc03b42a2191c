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
        self.buf.clear();
        codec::write_path(&mut self.buf, path);
        match data {
            Some(v) => codec::encode(v, &mut self.buf),
            None => self.buf.push(0xc1), // never valid msgpack: "no value"
        }
        if let Some(c) = chain {
            codec::encode(&c.to_value(-1), &mut self.buf);
        }
        codec::write_uint(&mut self.buf, tock);
        self.sum = self.sum.wrapping_add(hash128(&self.buf));
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
        self.buf.clear();
        codec::write_path(&mut self.buf, path);
        match data {
            Some(v) => self.buf.extend_from_slice(v),
            None => self.buf.push(0xc1), // never valid msgpack: "no value"
        }
        if let Some(c) = chain {
            codec::encode(&c.to_value(-1), &mut self.buf);
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
