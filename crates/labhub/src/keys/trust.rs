//! Which files the broker may believe: ownership and mode checks in the manner of OpenSSH's
//! `StrictModes`.
//!
//! The broker admits clients and picks its settings from files (the allow list, `broker.toml`,
//! key files). Whoever can write one of them, or replace it through a directory on its path,
//! decides who is admitted. So every such file, and every directory from it up to the root,
//! must be owned by the broker's user or by root and must not be writable by group or others.
//! A directory writable by others is accepted only when it has the sticky bit and is owned by
//! root (as `/tmp` is): there nobody else may rename or remove the broker's entries.
//!
//! A refusal is a [`KeyError::Untrusted`] naming the path, its owner and its mode.
#![deny(unsafe_code)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::KeyError;

/// What a checked path is, for the rules that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// A file the broker reads and believes: config, allow list, public keys.
    File,
    /// A secret: only its owner may read it (mode `0600` or stricter).
    Secret,
    /// A directory the broker keeps trusted files in (the labhub home, `keys/`).
    Directory,
}

/// The effective user id of this process.
pub fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn untrusted(path: &Path, meta: &std::fs::Metadata, problem: &'static str) -> KeyError {
    KeyError::Untrusted {
        path: path.to_owned(),
        owner: meta.uid(),
        mode: meta.mode() & 0o7777,
        problem,
    }
}

/// Checks `path` as `kind`, then every directory above it.
///
/// # Errors
///
/// [`KeyError::Read`] if a path cannot be examined, [`KeyError::Untrusted`] if one is owned by
/// another user or open to writes (or, for secrets, reads) by others.
pub fn check(path: &Path, kind: Trust) -> Result<(), KeyError> {
    let me = current_uid();
    let meta = std::fs::symlink_metadata(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.mode();
    if meta.file_type().is_symlink() {
        // Follow it, then check what it points to and where.
        let target = std::fs::canonicalize(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        return check(&target, kind);
    }
    if meta.uid() != me && meta.uid() != 0 {
        return Err(untrusted(
            path,
            &meta,
            "it must be owned by the broker's user or root",
        ));
    }
    match kind {
        Trust::Directory if !meta.is_dir() => {
            return Err(untrusted(path, &meta, "it must be a directory"));
        }
        Trust::File | Trust::Secret if !meta.is_file() => {
            return Err(untrusted(path, &meta, "it must be a regular file"));
        }
        Trust::Secret if mode & 0o077 != 0 => {
            return Err(untrusted(
                path,
                &meta,
                "a secret must not be accessible to group or others (chmod 600)",
            ));
        }
        _ if mode & 0o022 != 0 => {
            return Err(untrusted(
                path,
                &meta,
                "it must not be writable by group or others (chmod go-w)",
            ));
        }
        _ => {}
    }
    let absolute = std::path::absolute(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut dir = absolute.parent();
    while let Some(d) = dir {
        check_ancestor(d, me)?;
        dir = d.parent();
    }
    Ok(())
}

fn check_ancestor(dir: &Path, me: u32) -> Result<(), KeyError> {
    let meta = std::fs::metadata(dir).map_err(|source| KeyError::Read {
        path: dir.to_owned(),
        source,
    })?;
    if meta.uid() != me && meta.uid() != 0 {
        return Err(untrusted(
            dir,
            &meta,
            "a directory above a trusted file must be owned by the broker's user or root",
        ));
    }
    let sticky_root = meta.mode() & 0o1000 != 0 && meta.uid() == 0;
    if meta.mode() & 0o022 != 0 && !sticky_root {
        return Err(untrusted(
            dir,
            &meta,
            "a directory above a trusted file must not be writable by group or others",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("labhub-trust-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn a_private_file_in_a_private_directory_is_trusted_and_modes_are_checked() {
        let d = dir("modes");
        let f = d.join("allowed_clients");
        std::fs::write(&f, "").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        check(&f, Trust::File).unwrap();
        assert!(matches!(
            check(&f, Trust::Secret),
            Err(KeyError::Untrusted { mode: 0o644, .. })
        ));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
        let err = check(&f, Trust::File).unwrap_err();
        assert!(err.to_string().contains("0664"), "{err}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check(&f, Trust::File).unwrap_err();
        assert!(err.to_string().contains(d.to_str().unwrap()), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
