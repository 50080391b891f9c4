//! CURVE keys and Z85 text.

use std::ffi::c_char;
use std::fmt;

use labhub_zmq_sys as sys;

use zeroize::{Zeroize, Zeroizing};

use crate::error::{Z85Error, ZmqError};

const Z85_ALPHABET: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// Length of a CURVE key in bytes.
pub const CURVE_KEY_LEN: usize = 32;
/// Length of a CURVE key in Z85 characters.
pub const CURVE_KEY_Z85_LEN: usize = 40;

/// Encodes bytes as Z85 text (ZeroMQ RFC 32).
///
/// The input length must be a multiple of 4.
///
/// ```
/// let text = labhub_zmq::z85_encode(&[0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B]).unwrap();
/// assert_eq!(text, "HelloWorld");
/// ```
pub fn z85_encode(data: &[u8]) -> Result<String, Z85Error> {
    if !data.len().is_multiple_of(4) {
        return Err(Z85Error::EncodeLength { found: data.len() });
    }
    let mut out = vec![0u8; data.len() / 4 * 5 + 1];
    // SAFETY: `out` holds len*5/4 characters plus the NUL zmq_z85_encode writes; `data` is
    // valid for `data.len()` bytes, a multiple of 4 (checked above).
    let ptr = unsafe {
        sys::zmq_z85_encode(out.as_mut_ptr().cast::<c_char>(), data.as_ptr(), data.len())
    };
    if ptr.is_null() {
        // Unreachable after the length check; report rather than panic.
        return Err(Z85Error::EncodeLength { found: data.len() });
    }
    out.pop(); // the NUL
    // Z85 output is ASCII by construction; from_utf8 reuses the buffer (no stray copy of a
    // secret key's text).
    String::from_utf8(out).map_err(|e| Z85Error::InvalidCharacter {
        position: e.utf8_error().valid_up_to(),
        character: '\u{FFFD}',
    })
}

/// Decodes Z85 text into bytes.
///
/// The text length must be a multiple of 5 and every character in the Z85 alphabet; errors name
/// the first offending position.
///
/// ```
/// let bytes = labhub_zmq::z85_decode("HelloWorld").unwrap();
/// assert_eq!(bytes, [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B]);
/// assert!(labhub_zmq::z85_decode("Hello").is_ok());
/// assert!(labhub_zmq::z85_decode("Hell").is_err());
/// ```
pub fn z85_decode(text: &str) -> Result<Vec<u8>, Z85Error> {
    validate_z85(text)?;
    // Validated: ASCII without NUL. The NUL-terminated copy is wiped after use, since the text
    // may be a secret key.
    let mut c_text = Zeroizing::new(Vec::with_capacity(text.len() + 1));
    c_text.extend_from_slice(text.as_bytes());
    c_text.push(0);
    let mut out = vec![0u8; text.len() / 5 * 4];
    // SAFETY: `c_text` is NUL-terminated with a length that is a multiple of 5; `out` has
    // room for len*4/5 bytes, which is what zmq_z85_decode writes.
    let ptr = unsafe { sys::zmq_z85_decode(out.as_mut_ptr(), c_text.as_ptr().cast::<c_char>()) };
    if ptr.is_null() {
        // validate_z85 checks everything libzmq checks; keep a typed error regardless.
        return Err(Z85Error::Overflow { position: 0 });
    }
    Ok(out)
}

fn validate_z85(text: &str) -> Result<(), Z85Error> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(5) {
        return Err(Z85Error::DecodeLength { found: bytes.len() });
    }
    for (group_index, group) in bytes.chunks_exact(5).enumerate() {
        let mut value: u64 = 0;
        for (i, &b) in group.iter().enumerate() {
            let position = group_index * 5 + i;
            let Some(digit) = Z85_ALPHABET.iter().position(|&a| a == b) else {
                let character = text[position..].chars().next().unwrap_or('\u{FFFD}');
                return Err(Z85Error::InvalidCharacter {
                    position,
                    character,
                });
            };
            value = value * 85 + digit as u64;
        }
        if value > u64::from(u32::MAX) {
            return Err(Z85Error::Overflow {
                position: group_index * 5,
            });
        }
    }
    Ok(())
}

fn key_from_z85(text: &str) -> Result<[u8; CURVE_KEY_LEN], Z85Error> {
    if text.len() != CURVE_KEY_Z85_LEN {
        return Err(Z85Error::KeyLength {
            expected: CURVE_KEY_Z85_LEN,
            unit: "z85 characters",
            found: text.len(),
        });
    }
    let bytes = Zeroizing::new(z85_decode(text)?);
    key_from_bytes(&bytes)
}

fn key_from_bytes(bytes: &[u8]) -> Result<[u8; CURVE_KEY_LEN], Z85Error> {
    bytes.try_into().map_err(|_| Z85Error::KeyLength {
        expected: CURVE_KEY_LEN,
        unit: "bytes",
        found: bytes.len(),
    })
}

fn key_to_z85(key: &[u8; CURVE_KEY_LEN]) -> String {
    // 32 is a multiple of 4, so encoding cannot fail; fall back to an empty string regardless.
    z85_encode(key).unwrap_or_default()
}

/// A CURVE public key (32 bytes). Displays as 40 Z85 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CurvePublicKey([u8; CURVE_KEY_LEN]);

impl CurvePublicKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Z85Error> {
        key_from_bytes(bytes).map(Self)
    }

    /// The key from its 40-character Z85 text.
    pub fn from_z85(text: &str) -> Result<Self, Z85Error> {
        key_from_z85(text).map(Self)
    }

    /// The 32 key bytes.
    pub fn as_bytes(&self) -> &[u8; CURVE_KEY_LEN] {
        &self.0
    }

    /// The 40-character Z85 text.
    pub fn to_z85(&self) -> String {
        key_to_z85(&self.0)
    }
}

impl fmt::Display for CurvePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

impl fmt::Debug for CurvePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CurvePublicKey({})", self.to_z85())
    }
}

impl std::str::FromStr for CurvePublicKey {
    type Err = Z85Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_z85(s)
    }
}

/// A CURVE secret key (32 bytes). Its `Debug` output hides the key, and its bytes are wiped
/// when it is dropped (libzmq keeps its own copy inside each socket it was given to).
#[derive(Clone, PartialEq, Eq)]
pub struct CurveSecretKey([u8; CURVE_KEY_LEN]);

impl Drop for CurveSecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl CurveSecretKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Z85Error> {
        key_from_bytes(bytes).map(Self)
    }

    /// The key from its 40-character Z85 text.
    pub fn from_z85(text: &str) -> Result<Self, Z85Error> {
        key_from_z85(text).map(Self)
    }

    /// The 32 key bytes.
    pub fn as_bytes(&self) -> &[u8; CURVE_KEY_LEN] {
        &self.0
    }

    /// The 40-character Z85 text, wiped when dropped.
    pub fn to_z85(&self) -> Zeroizing<String> {
        Zeroizing::new(key_to_z85(&self.0))
    }

    /// The public key of this secret key.
    pub fn public_key(&self) -> Result<CurvePublicKey, ZmqError> {
        curve_public(self)
    }
}

impl fmt::Debug for CurveSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurveSecretKey(<hidden>)")
    }
}

/// A CURVE key pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurveKeyPair {
    /// The public half, given to peers.
    pub public: CurvePublicKey,
    /// The secret half, kept.
    pub secret: CurveSecretKey,
}

impl CurveKeyPair {
    /// A fresh random key pair (libsodium's generator through `zmq_curve_keypair`).
    ///
    /// Fails with `ENOTSUP` if libzmq was built without CURVE, which this crate's build prevents.
    pub fn generate() -> Result<Self, ZmqError> {
        let mut public = [0u8; CURVE_KEY_Z85_LEN + 1];
        let mut secret = Zeroizing::new([0u8; CURVE_KEY_Z85_LEN + 1]);
        // SAFETY: both buffers hold 40 characters plus NUL, as zmq_curve_keypair requires.
        let rc = unsafe {
            sys::zmq_curve_keypair(
                public.as_mut_ptr().cast::<c_char>(),
                secret.as_mut_ptr().cast::<c_char>(),
            )
        };
        if rc != 0 {
            return Err(ZmqError::last("zmq_curve_keypair", ""));
        }
        Ok(Self {
            public: CurvePublicKey::from_z85(z85_text(&public))?,
            secret: CurveSecretKey::from_z85(z85_text(&secret[..]))?,
        })
    }

    /// The key pair of a secret key.
    pub fn from_secret(secret: CurveSecretKey) -> Result<Self, ZmqError> {
        Ok(Self {
            public: curve_public(&secret)?,
            secret,
        })
    }
}

/// Derives the public key of a CURVE secret key (`zmq_curve_public`).
pub fn curve_public(secret: &CurveSecretKey) -> Result<CurvePublicKey, ZmqError> {
    let mut secret_text = Zeroizing::new([0u8; CURVE_KEY_Z85_LEN + 1]);
    secret_text[..CURVE_KEY_Z85_LEN].copy_from_slice(secret.to_z85().as_bytes());
    let mut public = [0u8; CURVE_KEY_Z85_LEN + 1];
    // SAFETY: `public` holds 40 characters plus NUL; `secret_text` is 40 Z85 characters + NUL.
    let rc = unsafe {
        sys::zmq_curve_public(
            public.as_mut_ptr().cast::<c_char>(),
            secret_text.as_ptr().cast::<c_char>(),
        )
    };
    if rc != 0 {
        return Err(ZmqError::last("zmq_curve_public", ""));
    }
    Ok(CurvePublicKey::from_z85(z85_text(&public))?)
}

/// The text libzmq wrote into a 41-byte key buffer (40 characters, then NUL). Non-ASCII bytes,
/// which libzmq never writes, give text that fails Z85 validation with a typed error.
fn z85_text(buffer: &[u8]) -> &str {
    let text = buffer.split(|&b| b == 0).next().unwrap_or(&[]);
    std::str::from_utf8(text).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc32_test_vector_round_trips() {
        let data = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B];
        assert_eq!(z85_encode(&data).unwrap(), "HelloWorld");
        assert_eq!(z85_decode("HelloWorld").unwrap(), data);
    }

    #[test]
    fn every_byte_value_round_trips_through_z85() {
        let data: Vec<u8> = (0..=255u8).collect();
        let text = z85_encode(&data).unwrap();
        assert_eq!(text.len(), 320);
        assert_eq!(z85_decode(&text).unwrap(), data);
    }

    #[test]
    fn encoding_a_length_not_multiple_of_four_is_refused() {
        assert_eq!(
            z85_encode(&[1, 2, 3]),
            Err(Z85Error::EncodeLength { found: 3 })
        );
    }

    #[test]
    fn decoding_a_length_not_multiple_of_five_is_refused() {
        assert_eq!(z85_decode("Hell"), Err(Z85Error::DecodeLength { found: 4 }));
    }

    #[test]
    fn decoding_a_character_outside_the_alphabet_names_it() {
        assert_eq!(
            z85_decode("Hello Worl"),
            Err(Z85Error::InvalidCharacter {
                position: 5,
                character: ' '
            })
        );
        assert_eq!(
            z85_decode("Hell\"World"),
            Err(Z85Error::InvalidCharacter {
                position: 4,
                character: '"'
            })
        );
    }

    #[test]
    fn decoding_a_group_above_32_bits_is_refused() {
        // '#' is digit 84: 84 * (85^4 + ... + 1) = 85^5 - 1 > 2^32 - 1.
        assert_eq!(z85_decode("#####"), Err(Z85Error::Overflow { position: 0 }));
    }

    #[test]
    fn non_ascii_text_is_an_invalid_character() {
        assert!(matches!(
            z85_decode("Helé"), // 5 bytes: 'é' is two
            Err(Z85Error::InvalidCharacter {
                position: 3,
                character: 'é'
            })
        ));
    }

    #[test]
    fn generated_keys_round_trip_through_z85_and_derive_the_same_public_key() {
        let pair = CurveKeyPair::generate().unwrap();
        let text = pair.public.to_z85();
        assert_eq!(text.len(), CURVE_KEY_Z85_LEN);
        assert_eq!(CurvePublicKey::from_z85(&text).unwrap(), pair.public);
        assert_eq!(curve_public(&pair.secret).unwrap(), pair.public);
        assert_ne!(CurveKeyPair::generate().unwrap().public, pair.public);
    }

    #[test]
    fn keys_of_the_wrong_length_are_refused() {
        assert_eq!(
            CurvePublicKey::from_z85("HelloWorld"),
            Err(Z85Error::KeyLength {
                expected: 40,
                unit: "z85 characters",
                found: 10
            })
        );
        assert_eq!(
            CurveSecretKey::from_bytes(&[0; 31]),
            Err(Z85Error::KeyLength {
                expected: 32,
                unit: "bytes",
                found: 31
            })
        );
    }

    #[test]
    fn secret_key_debug_output_hides_the_key() {
        let pair = CurveKeyPair::generate().unwrap();
        let shown = format!("{:?}", pair.secret);
        assert!(!shown.contains(pair.secret.to_z85().as_str()));
    }
}
