//! CURVE key pairs on disk: generation, Z85 public key files, password-encrypted secret key
//! files, the local user's client key, and the broker's allow list.
//!
//! A CurveZMQ key pair is an X25519 pair (32-byte secret, 32-byte public), written in Z85 (40
//! characters) as libzmq expects. Files:
//!
//! - `NAME.pub`: the public key, one Z85 line (mode 0644);
//! - `NAME.secret`: a JSON document (mode 0600) holding the public key and either the secret
//!   key encrypted with a password (Argon2id key derivation, ChaCha20-Poly1305, the public key
//!   as associated data) or, for the local client key only, the secret key in Z85.
//!
//! A secret file readable by group or others, a public file that does not match its secret, or a
//! file that does not parse is refused with a [`KeyError`] naming the file and the problem.
#![deny(unsafe_code)]

pub mod trust;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The `format` field of secret key files.
pub const SECRET_FORMAT: &str = "labhub-secret-key";

/// Argon2id memory cost of new files, in KiB (the OWASP minimum for Argon2id).
const ARGON2_M_KIB: u32 = 19 * 1024;
/// Argon2id passes of new files.
const ARGON2_T: u32 = 2;
/// Upper bounds accepted when reading a file, so a doctored file cannot stall the broker.
const ARGON2_M_KIB_MAX: u32 = 1024 * 1024;
const ARGON2_T_MAX: u32 = 16;

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory the broker would trust is owned by another user, or open to
    /// writes (for secrets: reads) by group or others; see [`trust`].
    #[error("{path} is owned by uid {owner} with mode {mode:04o}: {problem}")]
    Untrusted {
        /// The file or directory.
        path: PathBuf,
        /// Its owner's user id.
        owner: u32,
        /// Its permission bits.
        mode: u32,
        /// What is wrong, and how to fix it.
        problem: &'static str,
    },
    /// A file does not hold what it should.
    #[error("{path}: {problem}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line number when there is one.
        problem: String,
    },
    /// The password does not decrypt the secret key.
    #[error("wrong password for {path} (or the file was altered)")]
    WrongPassword {
        /// The file.
        path: PathBuf,
    },
    /// The public key file does not belong to the secret key file beside it.
    #[error("{public} does not match the key in {secret}")]
    Mismatch {
        /// The public key file.
        public: PathBuf,
        /// The secret key file.
        secret: PathBuf,
    },
    /// An encrypted secret key needs a password and none was given.
    #[error("{path} is encrypted and no password was given ({hint})")]
    NoPassword {
        /// The file.
        path: PathBuf,
        /// Where a password can come from.
        hint: &'static str,
    },
    /// Key derivation failed.
    #[error("key derivation failed for {path}: {problem}")]
    Kdf {
        /// The file.
        path: PathBuf,
        /// The KDF's complaint.
        problem: String,
    },
}

/// A CURVE public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_z85())
    }
}

impl PublicKey {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 40-character Z85 text.
    pub fn to_z85(&self) -> String {
        z85::encode(self.0)
    }

    /// Parses 40 Z85 characters.
    pub fn from_z85(text: &str) -> Result<Self, String> {
        decode_z85_key(text).map(Self)
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_z85())
    }
}

fn decode_z85_key(text: &str) -> Result<[u8; 32], String> {
    if text.len() != 40 {
        return Err(format!(
            "a key is 40 Z85 characters, this is {} characters",
            text.len()
        ));
    }
    let bytes = z85::decode(text).map_err(|e| format!("not Z85: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| "a key decodes to 32 bytes".to_owned())
}

/// A CURVE key pair. The secret is wiped from memory on drop.
#[derive(Clone)]
pub struct KeyPair {
    /// The public half.
    pub public: PublicKey,
    secret: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A new random key pair from the operating system's generator.
    pub fn generate() -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut secret[..]);
        Self::from_secret(secret)
    }

    /// The pair of a secret key (the public key is derived from it).
    pub fn from_secret(secret: Zeroizing<[u8; 32]>) -> Self {
        let scalar = x25519_dalek::StaticSecret::from(*secret);
        let public = x25519_dalek::PublicKey::from(&scalar);
        Self {
            public: PublicKey(public.to_bytes()),
            secret,
        }
    }

    /// The raw secret key.
    pub fn secret_bytes(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The secret key in Z85, as libzmq's `ZMQ_CURVE_SECRETKEY` option takes it.
    pub fn secret_z85(&self) -> Zeroizing<String> {
        Zeroizing::new(z85::encode(&self.secret[..]))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretFile {
    format: String,
    version: u32,
    public: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<KdfParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cipher: Option<CipherText>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfParams {
    algorithm: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CipherText {
    algorithm: String,
    nonce: String,
    ciphertext: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn aad(public: &str) -> Vec<u8> {
    format!("{SECRET_FORMAT} 1 {public}").into_bytes()
}

fn derive(
    path: &Path,
    password: &str,
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let kdf_err = |e: argon2::Error| KeyError::Kdf {
        path: path.to_owned(),
        problem: e.to_string(),
    };
    let params = argon2::Params::new(m, t, p, Some(32)).map_err(kdf_err)?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password.as_bytes(), salt, &mut key[..])
        .map_err(kdf_err)?;
    Ok(key)
}

/// Refuses a secret file that another user owns, that group or others can access at all, or
/// that lies under a directory others could change.
pub fn check_secret_permissions(path: &Path) -> Result<(), KeyError> {
    trust::check(path, trust::Trust::Secret)
}

/// Refuses a trusted file (config, allow list) that another user owns or that group or
/// others could change, directly or through a directory on its path.
pub fn check_trusted_permissions(path: &Path) -> Result<(), KeyError> {
    trust::check(path, trust::Trust::File)
}

/// Reads a secret file after checking its permissions.
pub fn read_secret_text(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    check_secret_permissions(path)?;
    fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Writes `contents` to `path` with `mode`, atomically and never over an existing file.
///
/// Returns `Ok(false)` when `path` already exists (another process won a race to create it).
pub fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<bool, KeyError> {
    let write_err = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
        std::process::id(),
        OsRng.next_u64()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        // The mode given to open is filtered by the umask; set it exactly.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        // A hard link fails if the target exists: a no-clobber atomic publish.
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = fs::remove_file(&tmp);
    result.map_err(write_err)
}

/// Creates `dir` (and parents) with mode 0700 if it is missing, then checks that it can be
/// trusted (owned by this user or root, not writable by others, nor any directory above it).
pub fn ensure_private_dir(dir: &Path) -> Result<(), KeyError> {
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| KeyError::Write {
                path: dir.to_owned(),
                source,
            })?;
    }
    trust::check(dir, trust::Trust::Directory)
}

/// Serialises `pair` as an encrypted secret file.
pub fn encrypt_secret(pair: &KeyPair, password: &str, path: &Path) -> Result<String, KeyError> {
    let public = pair.public.to_z85();
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let mut nonce = [0u8; 12];
    OsRng.fill_bytes(&mut nonce);
    let key = derive(path, password, &salt, ARGON2_M_KIB, ARGON2_T, 1)?;
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key[..]));
    let aad = aad(&public);
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &pair.secret[..],
                aad: &aad,
            },
        )
        .map_err(|_| KeyError::Kdf {
            path: path.to_owned(),
            problem: "encryption failed".into(),
        })?;
    let file = SecretFile {
        format: SECRET_FORMAT.into(),
        version: 1,
        public,
        secret: None,
        kdf: Some(KdfParams {
            algorithm: "argon2id".into(),
            m_cost_kib: ARGON2_M_KIB,
            t_cost: ARGON2_T,
            p_cost: 1,
            salt: hex(&salt),
        }),
        cipher: Some(CipherText {
            algorithm: "chacha20poly1305".into(),
            nonce: hex(&nonce),
            ciphertext: hex(&ciphertext),
        }),
    };
    Ok(serde_json::to_string_pretty(&file).unwrap_or_default() + "\n")
}

/// Serialises `pair` as an unencrypted secret file (for the local client key, protected by its
/// 0600 mode alone, like an SSH key without a passphrase).
pub fn plain_secret(pair: &KeyPair) -> String {
    let file = SecretFile {
        format: SECRET_FORMAT.into(),
        version: 1,
        public: pair.public.to_z85(),
        secret: Some(pair.secret_z85().to_string()),
        kdf: None,
        cipher: None,
    };
    serde_json::to_string_pretty(&file).unwrap_or_default() + "\n"
}

/// Whether a secret file is encrypted (needs a password).
pub fn is_encrypted(path: &Path) -> Result<bool, KeyError> {
    let text = read_secret_text(path)?;
    let file = parse_secret_file(path, &text)?;
    Ok(file.cipher.is_some())
}

fn parse_secret_file(path: &Path, text: &str) -> Result<SecretFile, KeyError> {
    let malformed = |problem: String| KeyError::Malformed {
        path: path.to_owned(),
        problem,
    };
    let file: SecretFile = serde_json::from_str(text)
        .map_err(|e| malformed(format!("not a labhub secret key file: {e}")))?;
    if file.format != SECRET_FORMAT {
        return Err(malformed(format!(
            "format is {:?}, expected {SECRET_FORMAT:?}",
            file.format
        )));
    }
    if file.version != 1 {
        return Err(malformed(format!(
            "version {} is not supported (supported: 1)",
            file.version
        )));
    }
    Ok(file)
}

/// Reads a secret key file, decrypting it with `password` when it is encrypted.
pub fn read_secret(path: &Path, password: Option<&str>) -> Result<KeyPair, KeyError> {
    let text = read_secret_text(path)?;
    let file = parse_secret_file(path, &text)?;
    let malformed = |problem: String| KeyError::Malformed {
        path: path.to_owned(),
        problem,
    };
    let public =
        PublicKey::from_z85(&file.public).map_err(|e| malformed(format!("public: {e}")))?;
    let pair = match (&file.secret, &file.kdf, &file.cipher) {
        (Some(secret), None, None) => {
            let bytes = decode_z85_key(secret).map_err(|e| malformed(format!("secret: {e}")))?;
            KeyPair::from_secret(Zeroizing::new(bytes))
        }
        (None, Some(kdf), Some(c)) => {
            let password = password.ok_or_else(|| KeyError::NoPassword {
                path: path.to_owned(),
                hint: "set LABHUB_BROKER_SECRET, pass --secret-file, or run on a terminal",
            })?;
            if kdf.algorithm != "argon2id" || c.algorithm != "chacha20poly1305" {
                return Err(malformed(format!(
                    "unsupported algorithms {} / {} (supported: argon2id / chacha20poly1305)",
                    kdf.algorithm, c.algorithm
                )));
            }
            if kdf.m_cost_kib > ARGON2_M_KIB_MAX || kdf.t_cost > ARGON2_T_MAX || kdf.p_cost > 16 {
                return Err(malformed("key derivation costs out of bounds".into()));
            }
            let salt = unhex(&kdf.salt).ok_or_else(|| malformed("salt is not hex".into()))?;
            let nonce = unhex(&c.nonce)
                .filter(|n| n.len() == 12)
                .ok_or_else(|| malformed("nonce is not 12 bytes of hex".into()))?;
            let ciphertext = unhex(&c.ciphertext)
                .filter(|n| n.len() == 48)
                .ok_or_else(|| malformed("ciphertext is not 48 bytes of hex".into()))?;
            let key = derive(
                path,
                password,
                &salt,
                kdf.m_cost_kib,
                kdf.t_cost,
                kdf.p_cost,
            )?;
            let cipher = ChaCha20Poly1305::new(Key::from_slice(&key[..]));
            let aad = aad(&file.public);
            let plain = Zeroizing::new(
                cipher
                    .decrypt(
                        Nonce::from_slice(&nonce),
                        Payload {
                            msg: &ciphertext,
                            aad: &aad,
                        },
                    )
                    .map_err(|_| KeyError::WrongPassword {
                        path: path.to_owned(),
                    })?,
            );
            let mut bytes = Zeroizing::new([0u8; 32]);
            bytes.copy_from_slice(&plain);
            KeyPair::from_secret(bytes)
        }
        _ => {
            return Err(malformed(
                "must hold either \"secret\" or both \"kdf\" and \"cipher\"".into(),
            ));
        }
    };
    if pair.public != public {
        return Err(malformed(
            "the public key recorded does not belong to the secret key".into(),
        ));
    }
    Ok(pair)
}

/// Largest public key file read, in bytes: one 40-character key with room for comments. A
/// larger or endless file (`/dev/zero`, a FIFO that never ends) is refused after reading one
/// byte more than this.
pub const MAX_PUBLIC_KEY_FILE_LEN: u64 = 4096;

/// Reads a public key file (one Z85 key; comment lines and blank lines allowed), at most
/// [`MAX_PUBLIC_KEY_FILE_LEN`] bytes of it.
pub fn read_public(path: &Path) -> Result<PublicKey, KeyError> {
    let text = read_bounded_text(path, MAX_PUBLIC_KEY_FILE_LEN)?;
    let mut keys = parse_key_lines(path, &text)?;
    match (keys.pop(), keys.is_empty()) {
        (Some(k), true) => Ok(k),
        _ => Err(KeyError::Malformed {
            path: path.to_owned(),
            problem: "a public key file holds exactly one key".into(),
        }),
    }
}

/// Reads `path` as UTF-8 text of at most `limit` bytes, without reading more than one byte past
/// the limit, so a huge or endless file costs nothing.
fn read_bounded_text(path: &Path, limit: u64) -> Result<String, KeyError> {
    use std::io::Read as _;
    let read_err = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > limit {
        return Err(KeyError::Malformed {
            path: path.to_owned(),
            problem: format!("longer than {limit} bytes, too long for a key file"),
        });
    }
    String::from_utf8(bytes).map_err(|_| KeyError::Malformed {
        path: path.to_owned(),
        problem: "not UTF-8 text".into(),
    })
}

/// Parses lines of Z85 keys. The first word of a line is the key and the rest of the line is a
/// free comment; a line whose first word starts with `#` and is not 40 characters long is a
/// comment line (Z85 itself uses `#`, so a comment marker cannot be found inside a key).
fn parse_key_lines(path: &Path, text: &str) -> Result<Vec<PublicKey>, KeyError> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(word) = line.split_whitespace().next() else {
            continue;
        };
        if word.starts_with('#') && word.len() != 40 {
            continue;
        }
        let key = PublicKey::from_z85(word).map_err(|e| KeyError::Malformed {
            path: path.to_owned(),
            problem: format!("line {}: {e}", i + 1),
        })?;
        keys.push(key);
    }
    Ok(keys)
}

/// Reads an allow list: one Z85 client public key per line, comments allowed. The file
/// must not be writable by group or others.
pub fn read_allow_list(path: &Path) -> Result<Vec<PublicKey>, KeyError> {
    check_trusted_permissions(path)?;
    let text = fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_key_lines(path, &text)
}

/// Writes a new key pair as `<base>.pub` and `<base>.secret` (encrypted when `password` is
/// given, plain otherwise). Refuses to overwrite.
pub fn write_pair(base: &Path, pair: &KeyPair, password: Option<&str>) -> Result<(), KeyError> {
    let secret_path = with_suffix(base, "secret");
    let public_path = with_suffix(base, "pub");
    let text = match password {
        Some(p) => Zeroizing::new(encrypt_secret(pair, p, &secret_path)?),
        None => Zeroizing::new(plain_secret(pair)),
    };
    if !write_new_file(&secret_path, text.as_bytes(), 0o600)? {
        return Err(KeyError::Write {
            path: secret_path,
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "refusing to overwrite an existing key",
            ),
        });
    }
    write_public(&public_path, &pair.public)
}

/// Writes (or replaces) a public key file.
pub fn write_public(path: &Path, public: &PublicKey) -> Result<(), KeyError> {
    let _ = fs::remove_file(path);
    write_new_file(path, format!("{public}\n").as_bytes(), 0o644).map(|_| ())
}

/// `base` with `.suffix` appended to its file name.
pub fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// Loads a pair from `<base>.secret`, checking `<base>.pub` (re-created if missing).
pub fn load_pair(base: &Path, password: Option<&str>) -> Result<KeyPair, KeyError> {
    let secret_path = with_suffix(base, "secret");
    let public_path = with_suffix(base, "pub");
    let pair = read_secret(&secret_path, password)?;
    if public_path.exists() {
        if read_public(&public_path)? != pair.public {
            return Err(KeyError::Mismatch {
                public: public_path,
                secret: secret_path,
            });
        }
    } else {
        write_public(&public_path, &pair.public)?;
    }
    Ok(pair)
}

/// The local user's client key under `keys_dir` (`client.secret`, plain, 0600), created on
/// first use. Two processes racing to create it end up with the same key.
pub fn local_client_key(keys_dir: &Path) -> Result<KeyPair, KeyError> {
    ensure_private_dir(keys_dir)?;
    let base = keys_dir.join("client");
    let secret_path = with_suffix(&base, "secret");
    if !secret_path.exists() {
        let pair = KeyPair::generate();
        if write_new_file(&secret_path, plain_secret(&pair).as_bytes(), 0o600)? {
            write_public(&with_suffix(&base, "pub"), &pair.public)?;
            return Ok(pair);
        }
    }
    load_pair(&base, None)
}

/// A random password for a non-interactive first run: 32 random bytes in Z85.
pub fn random_password() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut bytes[..]);
    Zeroizing::new(z85::encode(&bytes[..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "labhub-keys-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&d);
        ensure_private_dir(&d).unwrap();
        d
    }

    #[test]
    fn public_keys_match_libsodium_for_a_known_vector() {
        // RFC 7748 section 6.1, Alice's key pair.
        let secret: [u8; 32] =
            unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap()
                .try_into()
                .unwrap();
        let pair = KeyPair::from_secret(Zeroizing::new(secret));
        assert_eq!(
            hex(pair.public.as_bytes()),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        let z = pair.public.to_z85();
        assert_eq!(z.len(), 40);
        assert_eq!(PublicKey::from_z85(&z).unwrap(), pair.public);
    }

    #[test]
    fn an_encrypted_pair_round_trips_and_refuses_a_wrong_password() {
        let dir = tempdir("enc");
        let base = dir.join("broker");
        let pair = KeyPair::generate();
        write_pair(&base, &pair, Some("hunter2")).unwrap();
        let back = load_pair(&base, Some("hunter2")).unwrap();
        assert_eq!(back.public, pair.public);
        assert_eq!(back.secret_bytes(), pair.secret_bytes());
        assert!(matches!(
            load_pair(&base, Some("wrong")),
            Err(KeyError::WrongPassword { .. })
        ));
        assert!(matches!(
            load_pair(&base, None),
            Err(KeyError::NoPassword { .. })
        ));
        // Never overwritten.
        assert!(write_pair(&base, &KeyPair::generate(), Some("x")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_group_readable_secret_is_refused_naming_the_file() {
        let dir = tempdir("perm");
        let base = dir.join("k");
        write_pair(&base, &KeyPair::generate(), None).unwrap();
        let secret = with_suffix(&base, "secret");
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o640)).unwrap();
        let err = load_pair(&base, None).unwrap_err();
        assert!(matches!(err, KeyError::Untrusted { mode: 0o640, .. }));
        assert!(
            err.to_string().contains(&secret.display().to_string()),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn altered_or_mismatched_files_are_refused() {
        let dir = tempdir("bad");
        let base = dir.join("k");
        write_pair(&base, &KeyPair::generate(), Some("pw")).unwrap();
        let secret = with_suffix(&base, "secret");
        // Swapping the recorded public key breaks authentication of the ciphertext.
        let text = fs::read_to_string(&secret).unwrap();
        let other = KeyPair::generate().public.to_z85();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let altered = text.replace(v["public"].as_str().unwrap(), &other);
        fs::remove_file(&secret).unwrap();
        write_new_file(&secret, altered.as_bytes(), 0o600).unwrap();
        assert!(matches!(
            load_pair(&base, Some("pw")),
            Err(KeyError::WrongPassword { .. })
        ));
        // A public file of another pair.
        let base2 = dir.join("k2");
        write_pair(&base2, &KeyPair::generate(), None).unwrap();
        write_public(&with_suffix(&base2, "pub"), &KeyPair::generate().public).unwrap();
        assert!(matches!(
            load_pair(&base2, None),
            Err(KeyError::Mismatch { .. })
        ));
        // Garbage.
        let base3 = dir.join("k3");
        write_new_file(&with_suffix(&base3, "secret"), b"hello", 0o600).unwrap();
        assert!(matches!(
            load_pair(&base3, None),
            Err(KeyError::Malformed { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_local_client_key_is_created_once_and_reused() {
        let dir = tempdir("local");
        let a = local_client_key(&dir).unwrap();
        let b = local_client_key(&dir).unwrap();
        assert_eq!(a.public, b.public);
        let mode = fs::metadata(dir.join("client.secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn allow_lists_take_comments_and_name_the_bad_line() {
        let dir = tempdir("allow");
        let path = dir.join("allowed_clients");
        let k1 = KeyPair::generate().public;
        let k2 = KeyPair::generate().public;
        let text = format!("# lab clients\n{k1}  # alice\n\n   {k2}\n");
        write_new_file(&path, text.as_bytes(), 0o644).unwrap();
        assert_eq!(read_allow_list(&path).unwrap(), vec![k1, k2]);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            read_allow_list(&path),
            Err(KeyError::Untrusted { .. })
        ));
        let bad = dir.join("bad");
        write_new_file(&bad, format!("{k1}\nnot-a-key\n").as_bytes(), 0o600).unwrap();
        let err = read_allow_list(&bad).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
