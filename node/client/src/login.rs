//! The cryptography of password login, for both ends of a connection.
//!
//! DistKV's `password` method never sends a password: the client and the
//! node first agree on a key by Diffie-Hellman (the `diffie_hellman`
//! action), then the client sends the SHA-256 digest of the password sealed
//! in a NaCl SecretBox (XSalsa20-Poly1305) under that key. The node stores
//! only the digest. Every step here is byte-compatible with DistKV 0.63.3
//! and its Python client (docs/compat.md, "Password login"):
//!
//! * the groups are RFC 3526's MODP groups 14 (2048 bits) and, for a key
//!   length below 32, 5 (1536 bits), both with generator 2;
//! * a private key is `max(200, length) / 8 + 8` random bytes;
//! * a public key and the shared secret travel as minimal big-endian bytes;
//! * the session key is the first 32 bytes of the shared secret;
//! * a sealed box is the 24-byte nonce, then NaCl's tag and ciphertext.
//!
//! The arithmetic is crypto-bigint's constant-time Montgomery
//! exponentiation, the box is RustCrypto's `crypto_secretbox`; nothing here
//! is a hand-made cipher.

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd};
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use sha2::{Digest, Sha256};

/// The key length DistKV's client asks for (16 under `distkv -D`).
pub const DEFAULT_KEY_LENGTH: u32 = 1024;

/// The longest key length a peer may ask for: a private key of
/// `length / 8 + 8` bytes costs time to use, so a request for more is
/// refused rather than computed.
pub const MAX_KEY_LENGTH: u32 = 4096;

/// Bytes of a SecretBox nonce.
const NONCE_LEN: usize = 24;

/// Why a login step failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoginCryptoError {
    /// The peer asked for a key length beyond [`MAX_KEY_LENGTH`].
    #[error("key length {0} is too long (at most {MAX_KEY_LENGTH})")]
    KeyLength(u64),
    /// The peer's public key is not a valid element of the group.
    #[error("malformed Diffie-Hellman public key")]
    PublicKey,
    /// The shared secret is too short to give a 32-byte key (DistKV fails
    /// the same way, in its SecretBox).
    #[error("the shared secret is too short for a key")]
    ShortSecret,
    /// The operating system gave no random bytes.
    #[error("no randomness available: {0}")]
    Random(String),
    /// A sealed box that does not open: damaged, or sealed with another key.
    #[error("decryption failed")]
    Open,
}

/// RFC 3526's MODP groups, both with generator 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Group 5, 1536 bits: DistKV's choice for key lengths below 32.
    Modp1536,
    /// Group 14, 2048 bits.
    Modp2048,
}

impl Group {
    /// The group DistKV uses for a key of `length`.
    pub fn for_length(length: u32) -> Group {
        if length < 32 {
            Group::Modp1536
        } else {
            Group::Modp2048
        }
    }

    fn bits(self) -> u32 {
        match self {
            Group::Modp1536 => 1536,
            Group::Modp2048 => 2048,
        }
    }

    fn prime(self) -> Odd<BoxedUint> {
        // Both primes share their first 1470 bits with π's expansion; the
        // hex is RFC 3526's.
        let hex = match self {
            Group::Modp1536 => MODP_1536,
            Group::Modp2048 => MODP_2048,
        };
        let bytes: Vec<u8> = hex
            .as_bytes()
            .chunks(2)
            .map(|pair| {
                let digit = |c: u8| (c as char).to_digit(16).expect("a hex constant") as u8;
                digit(pair[0]) << 4 | digit(pair[1])
            })
            .collect();
        let p = BoxedUint::from_be_slice(&bytes, self.bits()).expect("the prime fits its group");
        Odd::new(p).into_option().expect("the prime is odd")
    }
}

const MODP_1536: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA237327FFFFFFFFFFFFFFFF",
);

const MODP_2048: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
);

/// One side of a Diffie-Hellman exchange: a fresh private key and its
/// public key.
pub struct KeyExchange {
    params: BoxedMontyParams,
    private: BoxedUint,
    public: Vec<u8>,
}

impl std::fmt::Debug for KeyExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyExchange")
            .field("public", &self.public.len())
            .finish_non_exhaustive()
    }
}

impl KeyExchange {
    /// A fresh key pair for a key of `length` (as the peer asked for it, or
    /// [`DEFAULT_KEY_LENGTH`]).
    pub fn new(length: u64) -> Result<KeyExchange, LoginCryptoError> {
        let length = u32::try_from(length)
            .ok()
            .filter(|&l| l <= MAX_KEY_LENGTH)
            .ok_or(LoginCryptoError::KeyLength(length))?;
        let mut private = vec![0u8; (length.max(200) / 8 + 8) as usize];
        getrandom::fill(&mut private).map_err(|e| LoginCryptoError::Random(e.to_string()))?;
        Ok(KeyExchange::with_private_key(
            Group::for_length(length),
            &private,
        ))
    }

    /// The key pair of a given private key (big-endian bytes): for tests
    /// that compare with another implementation.
    pub fn with_private_key(group: Group, private: &[u8]) -> KeyExchange {
        let params = BoxedMontyParams::new(group.prime());
        let bits = u32::try_from(private.len() * 8)
            .expect("a bounded key")
            .next_multiple_of(64);
        let private = BoxedUint::from_be_slice(private, bits).expect("sized to fit");
        let two = BoxedUint::from_be_slice(&[2], group.bits()).expect("2 fits");
        let public = BoxedMontyForm::new(two, &params).pow(&private).retrieve();
        KeyExchange {
            params,
            private,
            public: public.to_be_bytes_trimmed_vartime().into_vec(),
        }
    }

    /// The public key, as it is sent.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// The session key agreed with the peer whose public key is `peer`.
    /// The peer's key must lie strictly between 2 and p − 1 and be a
    /// quadratic residue (as DistKV checks), so a peer cannot force a
    /// trivial secret.
    pub fn session_key(&self, peer: &[u8]) -> Result<SessionKey, LoginCryptoError> {
        let p: &BoxedUint = self.params.modulus();
        let bits = p.bits_precision();
        let y = BoxedUint::from_be_slice(peer, bits).map_err(|_| LoginCryptoError::PublicKey)?;
        let p_minus_1 = p.wrapping_sub(BoxedUint::one_with_precision(bits));
        let two = BoxedUint::from_be_slice(&[2], bits).expect("2 fits");
        if y <= two || y >= p_minus_1 {
            return Err(LoginCryptoError::PublicKey);
        }
        let y = BoxedMontyForm::new(y, &self.params);
        let half = p_minus_1.shr(1);
        if y.pow(&half).retrieve() != BoxedUint::one_with_precision(bits) {
            return Err(LoginCryptoError::PublicKey);
        }
        let secret = y
            .pow(&self.private)
            .retrieve()
            .to_be_bytes_trimmed_vartime();
        let key: [u8; 32] = secret
            .get(..32)
            .and_then(|k| k.try_into().ok())
            .ok_or(LoginCryptoError::ShortSecret)?;
        Ok(SessionKey(key))
    }
}

/// The key both ends agreed on; it seals and opens SecretBoxes.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// Seals `plain` with a fresh random nonce: the nonce, then the box.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, LoginCryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| LoginCryptoError::Random(e.to_string()))?;
        let cipher = XSalsa20Poly1305::new(&self.0.into());
        let sealed = cipher
            .encrypt(&nonce.into(), plain)
            .map_err(|_| LoginCryptoError::Open)?;
        Ok([&nonce[..], &sealed].concat())
    }

    /// Opens what [`SessionKey::seal`] (or PyNaCl's `SecretBox.encrypt`)
    /// made.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, LoginCryptoError> {
        if sealed.len() < NONCE_LEN {
            return Err(LoginCryptoError::Open);
        }
        let (nonce, boxed) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| LoginCryptoError::Open)?;
        XSalsa20Poly1305::new(&self.0.into())
            .decrypt(&nonce.into(), boxed)
            .map_err(|_| LoginCryptoError::Open)
    }
}

/// Whether two password digests are equal, in time that does not depend
/// on where they differ.
pub fn digests_match(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// What is stored and compared for a password: its SHA-256 digest (of the
/// UTF-8 bytes).
pub fn password_digest(password: &str) -> [u8; 32] {
    Sha256::digest(password.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_agree_on_a_key_in_both_groups() {
        for length in [DEFAULT_KEY_LENGTH as u64, 16] {
            let (a, b) = (
                KeyExchange::new(length).unwrap(),
                KeyExchange::new(length).unwrap(),
            );
            let ka = a.session_key(b.public_key()).unwrap();
            let kb = b.session_key(a.public_key()).unwrap();
            assert_eq!(ka, kb);
            let digest = password_digest("geheim!");
            let sealed = ka.seal(&digest).unwrap();
            assert_eq!(sealed.len(), NONCE_LEN + 16 + 32);
            assert_eq!(kb.open(&sealed).unwrap(), digest);
        }
    }

    #[test]
    fn a_small_private_key_gives_the_textbook_public_key() {
        // 2^10 mod p = 1024 = [4, 0] in big-endian bytes, in either group.
        for group in [Group::Modp1536, Group::Modp2048] {
            let k = KeyExchange::with_private_key(group, &[10]);
            assert_eq!(k.public_key(), &[4, 0]);
        }
    }

    #[test]
    fn trivial_and_out_of_range_public_keys_are_refused() {
        let k = KeyExchange::new(1024).unwrap();
        let p = Group::Modp2048.prime().get().to_be_bytes().into_vec();
        let mut p_minus_1 = p.clone();
        *p_minus_1.last_mut().unwrap() -= 1;
        for bad in [
            vec![],
            vec![0],
            vec![1],
            vec![2],
            p_minus_1,
            p,
            vec![1; 300],
        ] {
            assert_eq!(
                k.session_key(&bad).unwrap_err(),
                LoginCryptoError::PublicKey,
                "{bad:?}"
            );
        }
        // A non-residue: p − 2 ≡ −2, and −2 is no square mod p ≡ 7 (mod 8).
        let mut p_minus_2 = Group::Modp2048.prime().get().to_be_bytes().into_vec();
        *p_minus_2.last_mut().unwrap() -= 2;
        assert_eq!(
            k.session_key(&p_minus_2).unwrap_err(),
            LoginCryptoError::PublicKey
        );
    }

    #[test]
    fn a_huge_key_length_is_refused_before_any_work() {
        assert_eq!(
            KeyExchange::new(u64::from(MAX_KEY_LENGTH) + 1).unwrap_err(),
            LoginCryptoError::KeyLength(u64::from(MAX_KEY_LENGTH) + 1)
        );
        assert!(KeyExchange::new(u64::MAX).is_err());
        assert!(KeyExchange::new(u64::from(MAX_KEY_LENGTH)).is_ok());
    }

    #[test]
    fn a_damaged_or_foreign_box_does_not_open() {
        let a = KeyExchange::new(16).unwrap();
        let b = KeyExchange::new(16).unwrap();
        let key = a.session_key(b.public_key()).unwrap();
        let mut sealed = key.seal(b"digest").unwrap();
        let other = KeyExchange::new(16)
            .unwrap()
            .session_key(b.public_key())
            .unwrap();
        assert_eq!(other.open(&sealed).unwrap_err(), LoginCryptoError::Open);
        *sealed.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(&sealed).unwrap_err(), LoginCryptoError::Open);
        assert_eq!(key.open(&sealed[..10]).unwrap_err(), LoginCryptoError::Open);
    }

    #[test]
    fn the_digest_is_sha256() {
        // SHA-256("abc"), FIPS 180-2's example.
        assert_eq!(
            password_digest("abc")[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "{:x?}",
            password_digest("abc")
        );
    }
}
