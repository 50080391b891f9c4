//! Anonymous shared memory (memfd) with seals, reopening a descriptor as a new open file
//! description, and byte-range open-file-description locks (the liveness of memfd channels).
//!
//! Thin, checked wrappers over one system call each; the policy (which seals, which bytes)
//! lives in `shm::segment` and `shm::layout` above.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{MemfdFlags, SealFlags};

/// The seals of a channel's data memfd once its producer mapped it: no writable mapping and
/// no `write` from then on (the producer's own mapping keeps writing), no size change, no
/// further seal.
pub const DATA_SEALS: u32 = SealFlags::FUTURE_WRITE.bits()
    | SealFlags::SHRINK.bits()
    | SealFlags::GROW.bits()
    | SealFlags::SEAL.bits();

/// The seals of a channel's control memfd: it stays writable (consumers write their entries),
/// but its size is fixed (a shrink would kill every other holder with SIGBUS) and nobody may
/// add a seal (say, `F_SEAL_FUTURE_WRITE`, which would lock later consumers out).
pub const CONTROL_SEALS: u32 =
    SealFlags::SHRINK.bits() | SealFlags::GROW.bits() | SealFlags::SEAL.bits();

/// Creates an anonymous shared-memory file named `name` (shown in `/proc/<pid>/fd` as
/// `/memfd:<name> (deleted)`), close-on-exec, sealable, of `size` bytes with its pages
/// reserved (`fallocate`: no room is an error now, not SIGBUS later).
pub fn memfd_create(name: &str, size: u64) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, size)?;
    if size > 0 {
        match rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), 0, size) {
            Ok(()) | Err(rustix::io::Errno::OPNOTSUPP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(fd)
}

/// Adds `seals` (bits of `F_ADD_SEALS`) to a memfd.
pub fn add_seals(fd: BorrowedFd<'_>, seals: u32) -> io::Result<()> {
    Ok(rustix::fs::fcntl_add_seals(
        fd,
        SealFlags::from_bits_retain(seals),
    )?)
}

#[cfg_attr(not(feature = "broker"), allow(dead_code))] // the broker grants memfds
/// The seals of a memfd (`F_GET_SEALS`); `InvalidInput` for a file that takes no seals (not
/// a memfd).
pub fn seals(fd: BorrowedFd<'_>) -> io::Result<u32> {
    Ok(rustix::fs::fcntl_get_seals(fd)?.bits())
}

/// The size of an open file (`fstat`).
pub fn file_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let st = rustix::fs::fstat(fd)?;
    u64::try_from(st.st_size).map_err(|_| io::Error::other("negative file size"))
}

#[cfg_attr(not(feature = "broker"), allow(dead_code))] // the broker grants memfds
/// Whether `fd` is a memfd: its `/proc/self/fd` link names `/memfd:…`.
pub fn is_memfd(fd: BorrowedFd<'_>) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).is_ok_and(|target| {
        target
            .as_os_str()
            .as_encoded_bytes()
            .starts_with(b"/memfd:")
    })
}

#[cfg_attr(not(feature = "broker"), allow(dead_code))] // the broker grants memfds
/// Opens the file behind `fd` again (`/proc/self/fd/N`), read-write or read-only,
/// close-on-exec: a new open file description of the same file, whose byte-range locks are
/// its own (a descriptor passed over a socket shares its sender's description, and with it
/// the sender's locks).
pub fn reopen(fd: BorrowedFd<'_>, writable: bool) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let access = if writable {
        OFlags::RDWR
    } else {
        OFlags::RDONLY
    };
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(rustix::fs::open(
        path.as_str(),
        access | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn ofd_lock(
    fd: BorrowedFd<'_>,
    cmd: libc::c_int,
    kind: libc::c_short,
    byte: u64,
) -> io::Result<libc::flock> {
    let start = libc::off_t::try_from(byte)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "lock offset too large"))?;
    let mut lock = libc::flock {
        l_type: kind,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: 1,
        // Open-file-description locks require 0 here.
        l_pid: 0,
    };
    // SAFETY: `lock` is a valid, writable flock for the duration of the call; `fd` is open.
    if unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &mut lock) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lock)
}

/// Takes a write lock on byte `byte` of the file through `fd`'s open file description
/// (`F_OFD_SETLK`), without waiting. `Ok(false)` if another description holds it. The kernel
/// releases it when the last descriptor of that description closes: when its holder dies.
pub fn lock_byte(fd: BorrowedFd<'_>, byte: u64) -> io::Result<bool> {
    match ofd_lock(fd, libc::F_OFD_SETLK, libc::F_WRLCK as libc::c_short, byte) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases a lock [`lock_byte`] took through the same description.
pub fn unlock_byte(fd: BorrowedFd<'_>, byte: u64) -> io::Result<()> {
    ofd_lock(fd, libc::F_OFD_SETLK, libc::F_UNLCK as libc::c_short, byte).map(|_| ())
}

/// Whether another open file description than `fd`'s holds a lock on byte `byte`
/// (`F_OFD_GETLK`; a lock of `fd`'s own description does not count).
pub fn byte_locked(fd: BorrowedFd<'_>, byte: u64) -> io::Result<bool> {
    let found = ofd_lock(fd, libc::F_OFD_GETLK, libc::F_WRLCK as libc::c_short, byte)?;
    Ok(found.l_type != libc::F_UNLCK as libc::c_short)
}
