//! An exclusive advisory lock on a path, across processes and across the threads of one
//! process.
//!
//! Locking `data/run.h5` locks the file `data/run.h5.lock`; locking a directory `data/raw`
//! locks `data/raw.dir.lock` beside it. The lock has two layers:
//!
//! 1. **Between processes**, an exclusive `flock(2)` on the lock file (through the crate's platform layer).
//!    The kernel releases it when the holder exits or is killed, so a crashed holder never
//!    leaves a stale lock behind, and no timeout or pid check is involved.
//! 2. **Between threads of this process**, a registry keyed by the canonical lock path. Only
//!    one thread at a time owns a path's entry, and only that thread touches the OS lock;
//!    the others wait on a condition variable, with the same deadline as the caller asked for.
//!
//! Lock files are never deleted: deleting one while another process has it open would let two
//! processes lock two different files of the same name.
//!
//! # Modes
//!
//! * [`FileLock::lock`] waits as long as it takes.
//! * [`FileLock::try_lock`] never waits and returns `Ok(None)` if the lock is held.
//! * [`FileLock::lock_timeout`] waits at most about one timeout in total, both layers
//!   included, and fails with [`FileLockError::Timeout`] no earlier than the timeout.
//!   While another *process* holds the lock, it retries a non-blocking `flock` with an
//!   exponential back-off from 50 µs up to [`MAX_RETRY_PAUSE`] (4 ms), so it notices a
//!   release at most about 4 ms late. A blocking `flock` interrupted by a timer signal or
//!   parked on a helper thread would be exact, but a signal can hit other code of the
//!   process and a helper thread stuck in the kernel cannot be cancelled; [`FileLock::lock`]
//!   does block in the kernel and wakes at once.
//!
//! # Liveness
//!
//! The lock also serves as a liveness token: a process locks a path for its whole life, and a
//! monitor asks [`FileLock::is_held_elsewhere`] (or [`FileLock::probe`]) whether the holder is
//! still there. The kernel, not a heartbeat, answers.
//!
//! # Naming
//!
//! The target is canonicalised if it exists; otherwise it is made absolute and normalised
//! lexically (`a/./b/../c` is `a/c`). A directory's lock is `<parent>/<name>.dir.lock`, where
//! `<name>` is the canonical directory's own name (so `d`, `d/` and `d/sub/..` share a lock).
//! The root directory has no parent and no name; its lock is `/labhub_root.dir.lock`, which
//! only a user who may write to `/` can create. Missing parent directories of the lock file
//! are created. A path that is empty, contains a control character, or runs through a regular
//! file is [`FileLockError::InvalidPath`].
//!
//! # Example
//!
//! ```
//! use labhub::filelock::FileLock;
//! use std::time::Duration;
//!
//! # let dir = std::env::temp_dir().join(format!("labhub-doc-filelock-{}", std::process::id()));
//! let target = dir.join("run.h5");
//! let guard = FileLock::lock(&target)?;
//! assert!(guard.lock_path().ends_with("run.h5.lock"));
//!
//! // Another thread (or process) cannot take it meanwhile.
//! let other = std::thread::spawn({
//!     let target = target.clone();
//!     move || FileLock::try_lock(&target).map(|g| g.is_some())
//! });
//! assert!(!other.join().unwrap()?);
//!
//! drop(guard);
//! let again = FileLock::lock_timeout(&target, Duration::from_secs(1))?;
//! # drop(again);
//! # Ok::<(), labhub::filelock::FileLockError>(())
//! ```
#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::sys::LockFile;

/// The longest pause between two non-blocking `flock` attempts of [`FileLock::lock_timeout`].
pub const MAX_RETRY_PAUSE: Duration = Duration::from_millis(4);

/// The first pause between two non-blocking `flock` attempts; it doubles up to
/// [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_micros(50);

/// The file name of the root directory's lock, placed in the root itself.
const ROOT_DIR_LOCK_NAME: &str = "labhub_root.dir.lock";

/// Why a lock could not be taken or probed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileLockError {
    /// The target path cannot name a lock: it is empty, contains a control character, or
    /// runs through something that is not a directory.
    #[error("invalid lock target {path:?}: {reason}")]
    InvalidPath {
        /// The target path as given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An operating-system call on the lock file or its directory failed.
    #[error("cannot {operation} {path:?}")]
    Io {
        /// What was being done: "resolve", "create directory", "open", "lock", ….
        operation: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error the operating system reported.
        #[source]
        source: io::Error,
    },
    /// [`FileLock::lock_timeout`] waited its whole timeout and the lock stayed held.
    #[error("timed out after {waited:?} waiting for lock file {path:?}")]
    Timeout {
        /// The lock file.
        path: PathBuf,
        /// How long the call waited; never less than the timeout.
        waited: Duration,
    },
}

impl FileLockError {
    fn io(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io {
            operation,
            path,
            source,
        }
    }

    fn invalid(path: &Path, reason: impl Into<String>) -> Self {
        Self::InvalidPath {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// Who holds a lock, as seen by [`FileLock::probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockHolder {
    /// Nobody: the lock was free at the moment of the probe.
    Nobody,
    /// A thread of this process holds the lock or is waiting for it; the OS lock was not
    /// probed, since this process's own lock would answer.
    ThisProcess,
    /// Another process holds the lock.
    OtherProcess,
}

/// The lock operations; each returns a [`FileLockGuard`] that unlocks when dropped.
///
/// See the [module documentation](self) for naming, modes and guarantees.
#[derive(Debug)]
pub enum FileLock {}

impl FileLock {
    /// Locks `path`, waiting as long as another thread or process holds it.
    ///
    /// The lock is not re-entrant: a thread that locks a path it already holds waits for
    /// itself forever.
    ///
    /// # Errors
    ///
    /// [`FileLockError::InvalidPath`] for a path that cannot name a lock,
    /// [`FileLockError::Io`] if the lock file cannot be created, opened or locked.
    pub fn lock(path: impl AsRef<Path>) -> Result<FileLockGuard, FileLockError> {
        match acquire(path.as_ref(), Wait::Forever)? {
            Acquired::Locked(guard) => Ok(guard),
            Acquired::Busy { .. } => unreachable!("waiting forever cannot run out"),
        }
    }

    /// Locks `path` if nobody holds it, without waiting: `Ok(None)` if it is held.
    ///
    /// # Errors
    ///
    /// As [`FileLock::lock`]; contention is `Ok(None)`, not an error.
    pub fn try_lock(path: impl AsRef<Path>) -> Result<Option<FileLockGuard>, FileLockError> {
        match acquire(path.as_ref(), Wait::No)? {
            Acquired::Locked(guard) => Ok(Some(guard)),
            Acquired::Busy { .. } => Ok(None),
        }
    }

    /// Locks `path`, waiting at most about `timeout` in total.
    ///
    /// # Errors
    ///
    /// [`FileLockError::Timeout`] if the lock is still held after `timeout` (the error's
    /// `waited` is at least `timeout`); otherwise as [`FileLock::lock`].
    pub fn lock_timeout(
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<FileLockGuard, FileLockError> {
        let path = path.as_ref();
        let start = Instant::now();
        // A timeout too large for `Instant` means waiting forever.
        let wait = start
            .checked_add(timeout)
            .map_or(Wait::Forever, Wait::Until);
        match acquire(path, wait)? {
            Acquired::Locked(guard) => Ok(guard),
            Acquired::Busy { lock_path } => Err(FileLockError::Timeout {
                path: lock_path,
                waited: start.elapsed(),
            }),
        }
    }

    /// Who holds the lock on `path` right now.
    ///
    /// Meant for a monitor that does not lock `path` itself. The probe takes the lock for an
    /// instant if it is free, so a concurrent [`FileLock::try_lock`], in this process or
    /// another, may find it held during that instant. Like any probe, the answer may be out
    /// of date by the time it is read; [`LockHolder::OtherProcess`] turning into
    /// [`LockHolder::Nobody`] means the holder unlocked or died. A lock file that does not
    /// exist is free; the probe creates nothing.
    ///
    /// # Errors
    ///
    /// [`FileLockError::InvalidPath`] for a path that cannot name a lock,
    /// [`FileLockError::Io`] if the lock file exists but cannot be opened or probed.
    pub fn probe(path: impl AsRef<Path>) -> Result<LockHolder, FileLockError> {
        let Some(lock_path) = lock_path_for(path.as_ref(), CreateParents::No)? else {
            return Ok(LockHolder::Nobody);
        };
        let claim = match Claim::take(&lock_path, Wait::No) {
            Some(claim) => claim,
            None => return Ok(LockHolder::ThisProcess),
        };
        let file = match LockFile::open_existing(&lock_path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LockHolder::Nobody),
            Err(e) => return Err(FileLockError::io("open", &lock_path)(e)),
        };
        let free = file
            .try_lock_exclusive()
            .map_err(FileLockError::io("lock", &lock_path))?;
        // Release the probe's own lock explicitly (a close alone would leave it held by any
        // child forked meanwhile, until that child execs), before other threads may claim it.
        if free {
            file.unlock()
                .map_err(FileLockError::io("unlock", &lock_path))?;
        }
        drop(file);
        drop(claim);
        Ok(if free {
            LockHolder::Nobody
        } else {
            LockHolder::OtherProcess
        })
    }

    /// Whether another process holds the lock on `path`: the liveness question a monitor asks
    /// about a process that holds `path` for its whole life.
    ///
    /// # Errors
    ///
    /// As [`FileLock::probe`].
    pub fn is_held_elsewhere(path: impl AsRef<Path>) -> Result<bool, FileLockError> {
        Ok(Self::probe(path)? == LockHolder::OtherProcess)
    }
}

/// A held lock; dropping it unlocks.
///
/// The guard may move to another thread: the OS lock belongs to the open lock file, not to a
/// thread. Dropping the guard releases the OS lock with an explicit `LOCK_UN`, closes the lock
/// file, and then releases the in-process claim.
///
/// The unlock is explicit rather than a mere close because a process that spawns children
/// shares every open descriptor with each child between `fork` and `exec` (close-on-exec only
/// closes it at `exec`): a close alone would leave the lock held by such a child for that
/// window, and another process could find it locked after this guard was dropped. A child
/// forked *without* exec that drops its copy of a guard therefore does release the parent's
/// lock; do not lock in a process you fork without exec.
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct FileLockGuard {
    // Field order matters: fields drop in declaration order, so the file (and with it the OS
    // lock) is released before the in-process claim, and a thread woken by the claim finds
    // the OS lock free.
    file: LockFile,
    claim: Claim,
}

impl Drop for FileLockGuard {
    fn drop(&mut self) {
        // Release the lock on the open file description itself, so a descriptor copy held
        // by a child between fork and exec cannot keep it locked. If this fails (it cannot
        // for a valid descriptor), closing the file below still releases it eventually.
        if let Err(e) = self.file.unlock() {
            tracing::warn!(lock = %self.claim.lock_path.display(), error = %e, "unlock failed");
        }
    }
}

impl FileLockGuard {
    /// The lock file this guard holds locked (absolute, with a canonical parent directory).
    pub fn lock_path(&self) -> &Path {
        &self.claim.lock_path
    }
}

#[derive(Debug, Clone, Copy)]
enum Wait {
    No,
    Forever,
    Until(Instant),
}

enum Acquired {
    Locked(FileLockGuard),
    /// `wait` ran out (at once for [`Wait::No`]) with the lock still held.
    Busy {
        lock_path: PathBuf,
    },
}

/// Takes both layers, the in-process claim first.
fn acquire(path: &Path, wait: Wait) -> Result<Acquired, FileLockError> {
    let Some(lock_path) = lock_path_for(path, CreateParents::Yes)? else {
        unreachable!("lock_path_for creates the parent directories or fails");
    };
    let Some(claim) = Claim::take(&lock_path, wait) else {
        return Ok(Acquired::Busy { lock_path });
    };
    let file =
        LockFile::open_or_create(&lock_path).map_err(FileLockError::io("open", &lock_path))?;
    let locked = match wait {
        Wait::Forever => file.lock_exclusive().map(|()| true),
        Wait::No => file.try_lock_exclusive(),
        Wait::Until(deadline) => lock_until(&file, deadline),
    }
    .map_err(FileLockError::io("lock", &lock_path))?;
    Ok(if locked {
        Acquired::Locked(FileLockGuard { file, claim })
    } else {
        Acquired::Busy { lock_path }
    })
}

/// Retries a non-blocking `flock` with exponential back-off until it succeeds or `deadline`
/// passes; the last attempt is made at or after the deadline.
fn lock_until(file: &LockFile, deadline: Instant) -> io::Result<bool> {
    let mut pause = FIRST_RETRY_PAUSE;
    loop {
        if file.try_lock_exclusive()? {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    }
}

// ---------------------------------------------------------------------------------------------
// In-process registry
// ---------------------------------------------------------------------------------------------

/// One lock path known to this process. It is in the registry while claimed or waited for.
#[derive(Debug)]
struct Entry {
    claimed: bool,
    waiters: usize,
    released: Arc<Condvar>,
}

/// Lock paths of this process, each claimed by at most one thread.
static REGISTRY: Mutex<BTreeMap<PathBuf, Entry>> = Mutex::new(BTreeMap::new());

fn registry() -> MutexGuard<'static, BTreeMap<PathBuf, Entry>> {
    // Nothing panics while the registry is locked, but if something did, the map is still
    // consistent: every update is a single field store.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This thread's exclusive claim on a lock path within the process; released on drop.
#[derive(Debug)]
struct Claim {
    lock_path: PathBuf,
}

impl Claim {
    /// Claims `lock_path`, waiting as `wait` allows; `None` if it stayed claimed.
    fn take(lock_path: &Path, wait: Wait) -> Option<Self> {
        let mut map = registry();
        let entry = map.entry(lock_path.to_path_buf()).or_insert_with(|| Entry {
            claimed: false,
            waiters: 0,
            released: Arc::new(Condvar::new()),
        });
        if !entry.claimed {
            entry.claimed = true;
            return Some(Self::new(lock_path));
        }
        if let Wait::No = wait {
            return None;
        }
        entry.waiters += 1;
        let released = Arc::clone(&entry.released);
        loop {
            map = match wait {
                Wait::Until(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    released
                        .wait_timeout(map, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                _ => released.wait(map).unwrap_or_else(PoisonError::into_inner),
            };
            // The entry cannot have gone: it stays while it has waiters, and we are one.
            if let Some(entry) = map.get_mut(lock_path)
                && !entry.claimed
            {
                entry.claimed = true;
                entry.waiters -= 1;
                return Some(Self::new(lock_path));
            }
        }
        // Timed out while another thread holds the claim, so the entry stays.
        if let Some(entry) = map.get_mut(lock_path) {
            entry.waiters -= 1;
        }
        None
    }

    fn new(lock_path: &Path) -> Self {
        Self {
            lock_path: lock_path.to_path_buf(),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut map = registry();
        if let Some(entry) = map.get_mut(&self.lock_path) {
            entry.claimed = false;
            if entry.waiters == 0 {
                map.remove(&self.lock_path);
            } else {
                // All waiters wake and one wins; waking one could pick a waiter that has just
                // timed out, leaving the others asleep on a free lock.
                entry.released.notify_all();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Naming
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CreateParents {
    Yes,
    No,
}

/// The lock file for `target`, with a canonical parent directory (the registry key).
///
/// With [`CreateParents::No`], `None` if the lock file's directory does not exist.
fn lock_path_for(target: &Path, create: CreateParents) -> Result<Option<PathBuf>, FileLockError> {
    if target.as_os_str().is_empty() {
        return Err(FileLockError::invalid(target, "the path is empty"));
    }
    if let Some(c) = target.to_string_lossy().chars().find(|c| c.is_control()) {
        return Err(FileLockError::invalid(
            target,
            format!("the path contains the control character {c:?}"),
        ));
    }
    let resolved = match fs::canonicalize(target) {
        Ok(canonical) => canonical,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            let absolute =
                std::path::absolute(target).map_err(FileLockError::io("resolve", target))?;
            normalize_lexically(&absolute)
        }
        Err(e) => return Err(FileLockError::io("resolve", target)(e)),
    };
    let is_dir = fs::metadata(&resolved).is_ok_and(|m| m.is_dir());
    let lock_path = lock_file_name(&resolved, is_dir);
    let Some(dir) = lock_path.parent() else {
        unreachable!("a lock path is absolute and ends in a file name");
    };
    if !dir.is_dir() {
        check_ancestors_are_directories(target, dir)?;
        if create == CreateParents::No {
            return Ok(None);
        }
        fs::create_dir_all(dir).map_err(FileLockError::io("create directory", dir))?;
    }
    let dir = fs::canonicalize(dir).map_err(FileLockError::io("resolve", dir))?;
    let Some(name) = lock_path.file_name() else {
        unreachable!("a lock path ends in a file name");
    };
    Ok(Some(dir.join(name)))
}

/// The lock file of an absolute, normalised target.
fn lock_file_name(resolved: &Path, is_dir: bool) -> PathBuf {
    match (resolved.parent(), resolved.file_name()) {
        (Some(parent), Some(name)) => {
            let mut name = name.to_os_string();
            name.push(if is_dir { ".dir.lock" } else { ".lock" });
            parent.join(name)
        }
        // Only the root has no parent or no name after normalisation.
        _ => resolved.join(ROOT_DIR_LOCK_NAME),
    }
}

/// Fails with `InvalidPath` if the nearest existing ancestor of `dir` is not a directory.
fn check_ancestors_are_directories(target: &Path, dir: &Path) -> Result<(), FileLockError> {
    for ancestor in dir.ancestors() {
        match fs::metadata(ancestor) {
            Ok(meta) if meta.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(FileLockError::invalid(
                    target,
                    format!("{ancestor:?} is not a directory"),
                ));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) => {}
            Err(e) => return Err(FileLockError::io("resolve", ancestor)(e)),
        }
    }
    Ok(())
}

/// Removes `.` and resolves `..` without looking at the file system (`/..` is `/`).
fn normalize_lexically(absolute: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_normalisation_drops_dots_and_resolves_parents() {
        assert_eq!(
            normalize_lexically(Path::new("/a/./b/../c/")),
            Path::new("/a/c")
        );
        assert_eq!(normalize_lexically(Path::new("/../..")), Path::new("/"));
    }

    #[test]
    fn files_get_a_lock_suffix_and_directories_a_dir_lock_suffix() {
        assert_eq!(
            lock_file_name(Path::new("/data/run.h5"), false),
            Path::new("/data/run.h5.lock")
        );
        assert_eq!(
            lock_file_name(Path::new("/data/raw"), true),
            Path::new("/data/raw.dir.lock")
        );
    }

    #[test]
    fn the_root_directory_locks_a_named_file_inside_itself() {
        assert_eq!(
            lock_file_name(Path::new("/"), true),
            Path::new("/labhub_root.dir.lock")
        );
        // `/` exists as root or not, so the root's lock path is derived without writing.
        let path = lock_path_for(Path::new("/.."), CreateParents::No)
            .unwrap()
            .unwrap();
        assert_eq!(path, Path::new("/labhub_root.dir.lock"));
    }

    #[test]
    fn a_released_claim_leaves_no_registry_entry() {
        let key = PathBuf::from(format!("/nonexistent/labhub-claim-{}", std::process::id()));
        let claim = Claim::take(&key, Wait::No).unwrap();
        assert!(Claim::take(&key, Wait::No).is_none());
        drop(claim);
        assert!(!registry().contains_key(&key));
    }
}
