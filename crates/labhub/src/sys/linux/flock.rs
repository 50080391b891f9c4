//! Whole-file advisory locks with `flock(2)`.
//!
//! `flock` locks belong to the open file description, not to the process: the kernel drops
//! the lock when the last descriptor of that description closes, including when the holder is
//! killed. Two descriptions of one file (two `open` calls, even in one process) exclude each
//! other. POSIX record locks (`fcntl(F_SETLK)`) are deliberately not used: they belong to the
//! process and vanish when *any* descriptor of the file is closed.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// An open lock file on which an exclusive `flock` can be taken.
///
/// Dropping it closes the descriptor. That releases the lock unless another descriptor of the
/// same open file description still exists (a copy inherited by a child forked without exec),
/// in which case the lock lasts until that one closes too.
#[derive(Debug)]
pub struct LockFile {
    file: File,
}

impl LockFile {
    /// Opens `path` read-write, creating it with mode 0644 (less the umask) if it is missing.
    ///
    /// The descriptor is close-on-exec, and a symbolic link at `path` is refused (`ELOOP`)
    /// rather than followed, so a planted link cannot redirect the lock file.
    pub fn open_or_create(path: &Path) -> io::Result<Self> {
        Self::open_with(path, true)
    }

    /// Opens an existing lock file; a missing one is `ErrorKind::NotFound`.
    pub fn open_existing(path: &Path) -> io::Result<Self> {
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, create: bool) -> io::Result<Self> {
        // std adds O_CLOEXEC itself; it is spelled out so the flag set is visible in one place.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Self { file })
    }

    /// Takes the exclusive lock, sleeping in the kernel until it is free.
    ///
    /// An interrupting signal (`EINTR`) restarts the wait.
    pub fn lock_exclusive(&self) -> io::Result<()> {
        loop {
            match self.flock(libc::LOCK_EX) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// Tries to take the exclusive lock without waiting: `Ok(false)` if another open file
    /// description holds it.
    pub fn try_lock_exclusive(&self) -> io::Result<bool> {
        loop {
            match self.flock(libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Releases the lock while keeping the file open, for holders that lock and unlock the
    /// same file many times (the log's rotation lock, once per batch).
    pub fn unlock(&self) -> io::Result<()> {
        self.flock(libc::LOCK_UN)
    }

    fn flock(&self, operation: libc::c_int) -> io::Result<()> {
        // SAFETY: flock takes a descriptor and an integer and touches no memory of ours; the
        // descriptor is owned by `self.file`, so it is open for the duration of the call.
        let rc = unsafe { libc::flock(self.file.as_raw_fd(), operation) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("labhub-sys-flock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn two_descriptions_of_one_file_exclude_each_other() {
        let path = scratch("two.lock");
        let a = LockFile::open_or_create(&path).unwrap();
        let b = LockFile::open_or_create(&path).unwrap();
        assert!(a.try_lock_exclusive().unwrap());
        assert!(!b.try_lock_exclusive().unwrap());
        drop(a);
        assert!(b.try_lock_exclusive().unwrap());
        drop(b);
        let c = LockFile::open_existing(&path).unwrap();
        c.lock_exclusive().unwrap();
    }

    #[test]
    fn a_symlink_is_not_followed() {
        let target = scratch("real");
        let link = scratch("link.lock");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = LockFile::open_or_create(&link).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        assert!(!target.exists());
    }

    #[test]
    fn open_existing_does_not_create() {
        let path = scratch("missing.lock");
        let err = LockFile::open_existing(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(!path.exists());
    }
}
