//! The access token of the metrics endpoint: generated or read from a file, compared in constant
//! time, never printed by `Debug`.
#![deny(unsafe_code)]

use std::io::Read as _;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::MetricsError;
use crate::keys;

/// Random bytes in a generated token (hex-encoded: 64 characters).
const TOKEN_BYTES: usize = 32;
/// Shortest token accepted from a file.
pub const MIN_TOKEN_LEN: usize = 16;
/// Most bytes read from a token file.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// A bearer token. Its `Debug` form is redacted, so it cannot reach a log line by accident, and
/// equality is compared in constant time.
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other.as_str().as_bytes())
    }
}

impl Eq for Token {}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A fresh random token: 32 bytes from the operating system, in hex.
    ///
    /// # Errors
    ///
    /// The operating system's random source failed.
    pub fn generate() -> Result<Self, MetricsError> {
        let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
        getrandom::fill(&mut bytes[..]).map_err(|e| MetricsError::Random(e.to_string()))?;
        let mut text = Zeroizing::new(String::with_capacity(2 * TOKEN_BYTES));
        for b in bytes.iter() {
            text.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            text.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        Ok(Self(text))
    }

    /// Reads a token from `path`: a file only its owner can access, holding 16 to 4096
    /// printable ASCII characters without spaces (a trailing newline is ignored).
    ///
    /// # Errors
    ///
    /// The file is missing, open to group or others, too long, or holds no valid token.
    pub fn from_file(path: &Path) -> Result<Self, MetricsError> {
        let bad = |problem: String| MetricsError::TokenFile {
            path: path.to_owned(),
            problem,
        };
        keys::check_secret_permissions(path).map_err(|e| bad(e.to_string()))?;
        let mut text = Zeroizing::new(String::new());
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_TOKEN_FILE_BYTES + 1).read_to_string(&mut text))
            .map_err(|e| bad(format!("cannot read it: {e}")))?;
        if text.len() as u64 > MAX_TOKEN_FILE_BYTES {
            return Err(bad(format!(
                "it is longer than {MAX_TOKEN_FILE_BYTES} bytes"
            )));
        }
        let token = text.trim_end_matches(['\n', '\r']);
        if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(format!(
                "a token is at least {MIN_TOKEN_LEN} printable ASCII characters without spaces"
            )));
        }
        Ok(Self(Zeroizing::new(token.to_owned())))
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `offered` is this token, compared in time that depends only on the lengths.
    pub fn matches(&self, offered: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(offered).into()
    }

    /// Writes the token to `path` (mode 0600), replacing an earlier file.
    pub(super) fn store(&self, path: &Path) -> Result<(), MetricsError> {
        let bad = |problem: String| MetricsError::TokenFile {
            path: path.to_owned(),
            problem,
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bad(format!("cannot replace it: {e}"))),
        }
        let mut line = Zeroizing::new(self.as_str().to_owned());
        line.push('\n');
        match keys::write_new_file(path, line.as_bytes(), 0o600) {
            Ok(true) => Ok(()),
            Ok(false) => Err(bad("another process created it meanwhile".into())),
            Err(e) => Err(bad(e.to_string())),
        }
    }
}

/// Where a generated token is stored for `labhub top` and the user: `<home>/metrics.token`.
pub fn default_token_file(home: &Path) -> PathBuf {
    home.join("metrics.token")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generated_tokens_are_long_random_and_redacted() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_eq!(a.as_str().len(), 64);
        assert_ne!(a, b);
        assert!(a.matches(a.as_str().as_bytes()));
        assert!(!a.matches(b.as_str().as_bytes()));
        assert!(!a.matches(&a.as_str().as_bytes()[..63]));
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn a_token_file_must_be_private_and_hold_a_token() {
        let dir = std::env::temp_dir().join(format!("labhub-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t");
        let t = Token::generate().unwrap();
        t.store(&path).unwrap();
        assert_eq!(Token::from_file(&path).unwrap(), t);
        // Replaced on the next store.
        let u = Token::generate().unwrap();
        u.store(&path).unwrap();
        assert_eq!(Token::from_file(&path).unwrap(), u);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Token::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("group or others"), "{e}");
        std::fs::write(&path, "short\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Token::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("at least 16"), "{e}");
        std::fs::write(&path, vec![b'a'; 5000]).unwrap();
        let e = Token::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("longer than 4096"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
