//! The platform layer: the only module that calls operating-system APIs.
//!
//! Private to the crate. Everything above it (sync, filelock, shm) is written against the items
//! re-exported here, so a port to another OS replaces one submodule and nothing else. Each platform module
//! exports the same names; `unsupported` compiles anywhere and returns
//! [`std::io::ErrorKind::Unsupported`] (or the documented degraded answer) instead of panicking.
//!
//! # Contract
//!
//! Futex (used by `sync`; every word may live in shared memory, so never process-private):
//! - `futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> io::Result<bool>`:
//!   sleep while `*word == expected`; `Ok(true)` when woken or the word differed (or a signal:
//!   callers loop), `Ok(false)` on timeout.
//! - `futex_wake(word: &AtomicU32, count: u32) -> usize`: wake up to `count` sleepers of any process.
//!
//! Robust list (the kernel marks a dead owner's lock word `OWNER_DIED` and wakes a waiter):
//! - `RobustListNode` (16 bytes, `#[repr(C)]`, zero = unlinked) placed `ROBUST_NODE_OFFSET`
//!   bytes after the lock word;
//! - `current_thread() -> ThreadContext`: the calling thread's TID (cached per thread, reset in
//!   a forked child) and its robust list, if usable; `ThreadContext` is `!Send`;
//! - `unsafe ThreadContext::{set_pending, link, unlink, clear_pending}`: the lock and unlock
//!   protocol of the list (see `sync`'s mutex for the order);
//! - `disable_robust_list_for_current_thread()`: tests force the liveness fallback with it.
//!
//! Processes and threads:
//! - `gettid() -> u32`, `getpid() -> u32`;
//! - `thread_alive(tid) -> bool`: the thread exists and is not a zombie (tid reuse aside);
//! - `ProcessId { pid, start_time }` with `current()`, `of(pid)`, `is_alive()`: an identity
//!   that survives pid reuse.
//!
//! File locks (used by `filelock` and by the log's rotation lock):
//! - `LockFile::{open_or_create, open_existing}(path)`: a close-on-exec descriptor that never
//!   follows a symbolic link; `lock_exclusive()` (blocking) and `try_lock_exclusive() -> bool`
//!   take a whole-file `flock`, which the kernel releases when the holder dies; `unlock()`
//!   releases it and keeps the descriptor open.
//!
//! Named shared memory (used by `shm::segment`):
//! - `shm_create_hidden` / `shm_publish_hidden`: create a segment under a private name, sized and
//!   its pages reserved (`fallocate`: `StorageFull` when the file system has no room), then link
//!   it to its public name; `shm_open_existing`, `shm_stat`, `shm_lstat` (what a name holds, not
//!   following a symbolic link), `shm_unlink`, `shm_list`, `shm_space_available`;
//! - `ShmMapping::map`: a shared read-write mapping of a whole segment.
//!
//! Asymmetric fences (used by `shm` for the commit / sleep Dekker pair):
//! - `register_light_fence() -> bool`: this process may use `light_fence` (compiler-only) in a
//!   Dekker pair whose other side calls `heavy_fence`;
//! - `heavy_fence() -> bool`: a full barrier on every CPU running a registered process (Linux
//!   `membarrier(GLOBAL_EXPEDITED)`); false when unavailable.
//!
//! Logging (used by `log`), in the submodule `log_sys`:
//! - `syslog_open(ident) -> io::Result<()>` (`InvalidInput` for a NUL in `ident`) and
//!   `syslog_write(SyslogSeverity, message)`.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
#[allow(unused_imports)] // not every platform item is used on every build (test hooks)
pub use linux::*;

#[cfg(not(target_os = "linux"))]
mod unsupported;
#[cfg(not(target_os = "linux"))]
pub use unsupported::*;

/// Type-checks the fallback on Linux too, so it cannot rot unseen.
#[cfg(all(test, target_os = "linux"))]
#[allow(dead_code)]
#[path = "unsupported.rs"]
mod unsupported_compiles;
