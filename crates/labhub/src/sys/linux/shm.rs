//! Named POSIX shared memory: create (with the pages reserved), open, stat, map, unlink; and
//! the few ids and clocks the shm module needs (user id, monotonic and real-time nanoseconds).
//!
//! Everything here is a thin, checked wrapper over one system call; the policy (names, sizes,
//! layout) lives in `shm::segment` above.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

fn cstring(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

/// Creates the named segment exclusively (`O_CREAT | O_EXCL`), owner-only, and sizes it.
///
/// The mode is forced to 0600 with `fchmod` after creation, so a permissive umask cannot widen it
/// and a restrictive one cannot lock the owner out. Fails with `AlreadyExists` if the name exists.
pub fn shm_create_exclusive(name: &str, size: u64) -> io::Result<OwnedFd> {
    let c = cstring(name)?;
    // SAFETY: `c` is a valid NUL-terminated string; flags and mode are plain integers.
    let fd = unsafe {
        libc::shm_open(
            c.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
            0o600 as libc::mode_t,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by shm_open and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sized = (|| {
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let len = libc::off_t::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment size too large"))?;
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        reserve(&fd, size)
    })();
    if let Err(e) = sized {
        let _ = shm_unlink(name);
        return Err(e);
    }
    Ok(fd)
}

/// Where Linux keeps POSIX shared-memory objects (glibc's `shm_open` directory).
pub const SHM_DIR: &str = "/dev/shm";

/// Allocates the pages of a freshly sized segment (`fallocate`, mode 0), so that a file system
/// too small for it fails here with `StorageFull` (ENOSPC) instead of killing the first process
/// that touches a missing page with SIGBUS. A file system without `fallocate` (EOPNOTSUPP) is
/// left as it is: its segments are only reserved when written.
fn reserve(fd: &OwnedFd, size: u64) -> io::Result<()> {
    if size == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Bytes a process of this user may still allocate in the shared-memory file system
/// (`statvfs`: available blocks × fragment size), if it can be read.
pub fn shm_space_available() -> Option<u64> {
    let st = rustix::fs::statvfs(SHM_DIR).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// What a name in the shared-memory directory is, without following a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmEntry {
    /// `regular file`, `symbolic link`, `directory`, … in words.
    pub kind: &'static str,
    /// Owning user id.
    pub uid: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// `lstat` of the file that holds segment `name`; `None` if there is none.
pub fn shm_lstat(name: &str) -> io::Result<Option<ShmEntry>> {
    use rustix::fs::FileType;
    let path = shm_path(name);
    let st = match rustix::fs::lstat(&path) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => "regular file",
        FileType::Symlink => "symbolic link",
        FileType::Directory => "directory",
        FileType::Fifo => "named pipe",
        FileType::Socket => "socket",
        FileType::CharacterDevice | FileType::BlockDevice => "device",
        _ => "file of unknown type",
    };
    Ok(Some(ShmEntry {
        kind,
        uid: st.st_uid,
        mode: st.st_mode & 0o7777,
    }))
}

/// The path of segment `name` in the shared-memory directory.
pub fn shm_path(name: &str) -> String {
    format!("{SHM_DIR}/{}", name.trim_start_matches('/'))
}

/// Separates a segment name from the suffix of its private creation name. Channel names cannot
/// contain it, so a private name never collides with a channel's.
pub const HIDDEN_MARK: char = '@';

/// Creates a segment of `size` bytes under a private name derived from `name` and the creating
/// process (`<name>@<pid>-<start_time>-<n>`), for [`shm_publish_hidden`] to give it `name`
/// once it is initialised. Returns the descriptor and the private name.
pub fn shm_create_hidden(
    name: &str,
    size: u64,
    pid: u32,
    start_time: u64,
) -> io::Result<(OwnedFd, String)> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let hidden = format!("{name}{HIDDEN_MARK}{pid}-{start_time}-{n}");
        match shm_create_exclusive(&hidden, size) {
            Ok(fd) => return Ok((fd, hidden)),
            // A name left by an earlier process with our pid and start time cannot exist
            // (that process is us), but one left by a forked sibling can: take the next.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < u32::MAX => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Gives the segment created under private name `hidden` the name `name`, atomically (a hard
/// link: it fails with `AlreadyExists` if `name` exists, and no process ever sees `name` before
/// the segment was initialised). The private name is removed either way.
pub fn shm_publish_hidden(hidden: &str, name: &str) -> io::Result<()> {
    let linked = std::fs::hard_link(shm_path(hidden), shm_path(name));
    let _ = shm_unlink(hidden);
    linked
}

/// Private creation names of segment `name` (see [`shm_create_hidden`]), each with the pid and
/// start time of the process that made it.
pub fn shm_hidden_of(name: &str) -> io::Result<Vec<(String, u32, u64)>> {
    let prefix = format!("{name}{HIDDEN_MARK}");
    let mut found = Vec::new();
    for full in super::shm_list(&prefix)? {
        let mut parts = full[prefix.len()..].splitn(3, '-');
        let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
            continue;
        };
        if let (Ok(pid), Ok(start)) = (pid.parse(), start.parse()) {
            found.push((full, pid, start));
        }
    }
    Ok(found)
}

/// Opens an existing named segment for reading and writing.
pub fn shm_open_existing(name: &str) -> io::Result<OwnedFd> {
    let c = cstring(name)?;
    // SAFETY: `c` is a valid NUL-terminated string; no O_CREAT so the mode is ignored.
    let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by shm_open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes the name of a segment; existing mappings stay valid until unmapped.
pub fn shm_unlink(name: &str) -> io::Result<()> {
    let c = cstring(name)?;
    // SAFETY: `c` is a valid NUL-terminated string.
    if unsafe { libc::shm_unlink(c.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What `fstat` says about a segment: size, owner and permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmStat {
    /// Size in bytes.
    pub size: u64,
    /// Owning user id.
    pub uid: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// `fstat` on a segment descriptor.
pub fn shm_stat(fd: &OwnedFd) -> io::Result<ShmStat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a writable buffer of the right type; `fd` is open.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Ok(ShmStat {
        size: u64::try_from(st.st_size).unwrap_or(0),
        uid: st.st_uid,
        mode: st.st_mode & 0o7777,
    })
}

/// A shared, read-write mapping of a whole segment; unmapped on drop.
#[derive(Debug)]
pub struct ShmMapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; all shared access to its contents goes
// through atomics or is argued at each use in shm::layout.
unsafe impl Send for ShmMapping {}
// SAFETY: as above; `&ShmMapping` only hands out the base pointer and length.
unsafe impl Sync for ShmMapping {}

impl ShmMapping {
    /// Maps `len` bytes of `fd` from offset 0, `MAP_SHARED`, readable and writable.
    pub fn map(fd: &OwnedFd, len: usize) -> io::Result<Self> {
        Self::map_with(fd, len, libc::PROT_READ | libc::PROT_WRITE)
    }

    /// Maps `len` bytes of `fd` from offset 0, `MAP_SHARED`, readable only: a write through it
    /// faults.
    pub fn map_read_only(fd: &OwnedFd, len: usize) -> io::Result<Self> {
        Self::map_with(fd, len, libc::PROT_READ)
    }

    fn map_with(fd: &OwnedFd, len: usize, prot: libc::c_int) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map an empty segment",
            ));
        }
        // SAFETY: a fresh mapping chosen by the kernel (addr null) over an open descriptor; the
        // result is checked against MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }

    /// Base address (page-aligned).
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for ShmMapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe exactly the mapping created in `map`, unmapped only here.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The real user id of this process.
pub fn getuid() -> u32 {
    // SAFETY: getuid cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the machine, so
/// heartbeats written by one process can be compared by another.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the same clock as [`monotonic_ns`] at tick
/// resolution (1–4 ms), several times cheaper to read; for heartbeats.
pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE exists since Linux 2.6.32.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts);
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// `CLOCK_REALTIME` in nanoseconds since the Unix epoch (frame timestamps).
pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME always exists.
    unsafe {
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}
