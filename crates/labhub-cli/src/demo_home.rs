//! The demo's temporary home, and the reaping of homes and segments that dead demos left.
//!
//! `labhub demo` runs its broker in a private home, `<tmp>/labhub-demo-XXXXXX` (mode 0700): it
//! holds the demo broker's secret key and its password file, the user's client key and the audit
//! log. The demo's channel is named like the home's directory, so the segment is
//! `/labhub.<uid>.labhub-demo-XXXXXX` and belongs to exactly one demo.
//!
//! A demo that ends, or is stopped by SIGINT or SIGTERM, removes both. A demo killed outright
//! (SIGKILL, a crash) cannot, so every demo and every `labhub hub` reaps what dead demos left
//! ([`reap_dead_demos`]). A home is removed only when it is provably a dead demo's:
//!
//! - it is a directory (not a symlink) in the temporary directory, named `labhub-demo-*`, owned by
//!   this user;
//! - it holds the lock file `demo.lock` and the marker `demo.json`. The demo locks `demo.lock`
//!   (an exclusive `flock`, [`labhub::filelock`]) for its whole life and writes the marker only
//!   once it holds the lock, so a home with a marker whose lock is free belongs to a process
//!   that is gone: the kernel releases the lock when its holder dies, whatever killed it. A home
//!   without the marker (a demo between creating its home and locking it) is never touched;
//! - its channel's segment is unlinked only if no live process holds it (the broker's own rule,
//!   [`labhub::broker::segments::remove_if_unheld`]).

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use anyhow::Context as _;
use labhub::broker::segments::{self, Removal};
use labhub::filelock::{FileLock, FileLockGuard, LockHolder};
use labhub::protocol::{ChannelName, ShmName};

/// The file name prefix of demo homes (and of demo channel names).
pub const PREFIX: &str = "labhub-demo-";
/// Locked for the demo's life: `demo.lock` (a [`FileLock`] on this name).
const LOCK_TARGET: &str = "demo";
/// Written once the lock is held; its presence makes a free lock mean a dead demo.
const MARKER: &str = "demo.json";

/// A demo's private home, locked while this value lives, removed when it drops.
#[derive(Debug)]
#[must_use = "the home is removed when the value drops"]
pub struct DemoHome {
    // Field order matters: the directory is removed before the lock is released, so no reaper can
    // find a free lock in a home that is still being removed by its owner.
    dir: tempfile::TempDir,
    _lock: FileLockGuard,
    channel: String,
}

impl DemoHome {
    /// Creates and locks a new home in the temporary directory, mode 0700.
    ///
    /// # Errors
    ///
    /// The directory, its lock or its marker could not be created.
    pub fn create() -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir()
            .context("creating the demo's temporary LABHUB_HOME")?;
        let lock = FileLock::lock(dir.path().join(LOCK_TARGET))
            .context("locking the demo's temporary LABHUB_HOME")?;
        let channel = channel_of(dir.path())
            .with_context(|| format!("{} is no channel name", dir.path().display()))?;
        let marker = serde_json::json!({"pid": std::process::id(), "channel": channel});
        fs::write(dir.path().join(MARKER), marker.to_string())
            .context("writing the demo's marker file")?;
        Ok(Self {
            dir,
            _lock: lock,
            channel,
        })
    }

    /// The home directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The demo's channel name (the home directory's name).
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

/// The channel name of the demo whose home is `dir`.
fn channel_of(dir: &Path) -> Option<String> {
    let name = dir.file_name()?.to_str()?;
    (name.starts_with(PREFIX) && ChannelName::new(name).is_ok()).then(|| name.to_owned())
}

/// Removes the homes and segments of this user's demos that are no longer running (see the
/// [module docs](self) for how a dead demo is recognised), logging each. Never fails: what
/// cannot be looked at or removed is left and logged.
pub fn reap_dead_demos() {
    let tmp = std::env::temp_dir();
    let entries = match fs::read_dir(&tmp) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::debug!(dir = %tmp.display(), error = %e, "cannot list the temporary directory; no demo reaped");
            return;
        }
    };
    let uid = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let home = entry.path();
        let Some(channel) = channel_of(&home) else {
            continue;
        };
        if !is_dead_demo(&home, uid) {
            continue;
        }
        let segment = match labhub::name::ChannelName::new(channel.as_str()) {
            Ok(name) => segments::remove_if_unheld(&ShmName::of(&name)),
            Err(_) => Removal::Absent,
        };
        match fs::remove_dir_all(&home) {
            Ok(()) => {}
            // Another reaper got there first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(home = %home.display(), error = %e, "cannot remove a dead demo's home");
                continue;
            }
        }
        tracing::info!(home = %home.display(), segment = %segment.describe(), "removed a dead demo's leftovers");
    }
}

/// Whether `home` is provably the home of a dead demo of user `uid`.
fn is_dead_demo(home: &Path, uid: u32) -> bool {
    let Ok(meta) = fs::symlink_metadata(home) else {
        return false;
    };
    if !meta.is_dir() || meta.uid() != uid {
        return false;
    }
    let marker_is_file = fs::symlink_metadata(home.join(MARKER)).is_ok_and(|m| m.is_file());
    let lock_file = home.join(format!("{LOCK_TARGET}.lock"));
    let lock_is_file = fs::symlink_metadata(&lock_file).is_ok_and(|m| m.is_file());
    if !(marker_is_file && lock_is_file) {
        return false;
    }
    matches!(
        FileLock::probe(home.join(LOCK_TARGET)),
        Ok(LockHolder::Nobody)
    )
}
