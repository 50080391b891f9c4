//! CURVE public keys on the wire: the server key of a message channel and the client keys a
//! broker admits.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::names::NameError;

/// Length of a CURVE key in Z85 text.
pub const CURVE_KEY_Z85_LEN: usize = 40;

/// The most client keys a `register` reply lists in `admitted_keys`: they must fit one reply
/// (a key is 43 bytes of JSON, a reply at most 64 KiB).
pub const MAX_ADMITTED_KEYS: usize = 1024;

/// A CURVE public key as the protocol carries it: 40 characters of Z85 (32 bytes), checked
/// when parsed.
///
/// ```
/// use labhub::protocol::CurveKey;
/// let key = CurveKey::from_z85("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7").unwrap();
/// assert_eq!(key.to_string(), "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7");
/// assert!(CurveKey::from_z85("too short").is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CurveKey([u8; 32]);

impl CurveKey {
    /// The key of these 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 40 Z85 characters.
    ///
    /// # Errors
    ///
    /// [`NameError`] when `text` is not 40 characters of Z85.
    pub fn from_z85(text: &str) -> Result<Self, NameError> {
        let invalid = |problem| NameError::Invalid {
            what: "curve key",
            value: text.chars().take(CURVE_KEY_Z85_LEN).collect(),
            problem,
        };
        if text.len() != CURVE_KEY_Z85_LEN {
            return Err(invalid("a CURVE key is 40 characters of Z85"));
        }
        let bytes = z85::decode(text).map_err(|_| invalid("not Z85 text"))?;
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| invalid("does not decode to 32 bytes"))
    }

    /// The 40-character Z85 text.
    pub fn to_z85(&self) -> String {
        z85::encode(self.0)
    }
}

impl fmt::Display for CurveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

impl fmt::Debug for CurveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CurveKey({self})")
    }
}

impl TryFrom<String> for CurveKey {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::from_z85(&s)
    }
}

impl From<CurveKey> for String {
    fn from(key: CurveKey) -> String {
        key.to_z85()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_through_json_and_bad_text_is_refused() {
        let key = CurveKey::from_bytes([7; 32]);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json.len(), CURVE_KEY_Z85_LEN + 2);
        assert_eq!(serde_json::from_str::<CurveKey>(&json).unwrap(), key);
        for bad in ["", "abc", &"x".repeat(41), &"\"".repeat(40)] {
            assert!(CurveKey::from_z85(bad).is_err(), "{bad:?}");
        }
    }
}
