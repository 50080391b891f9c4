//! The platform layer for systems labhub does not support yet: everything compiles, nothing
//! that needs the OS works. Waits return [`io::ErrorKind::Unsupported`]; there is no robust
//! list (so a dead owner is never detected), and liveness checks answer "alive".

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{what} is not supported on this platform"),
    )
}

/// Not supported: returns [`io::ErrorKind::Unsupported`].
pub fn futex_wait(
    _word: &AtomicU32,
    _expected: u32,
    _timeout: Option<Duration>,
) -> io::Result<bool> {
    Err(unsupported("futex wait"))
}

/// Not supported: wakes nobody.
pub fn futex_wake(_word: &AtomicU32, _count: u32) -> usize {
    0
}

/// Same size and layout as on Linux; never linked here.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RobustListNode {
    prev: AtomicU64,
    next: AtomicU64,
}

impl RobustListNode {
    /// An unlinked node (all zero).
    pub const fn new() -> Self {
        Self {
            prev: AtomicU64::new(0),
            next: AtomicU64::new(0),
        }
    }

    /// The address list pointers would use for this node: that of its `next` field.
    pub fn entry(&self) -> usize {
        self.next.as_ptr() as usize
    }
}

/// Same as on Linux, so shared layouts do not change.
pub const ROBUST_NODE_OFFSET: usize = 24;

/// The calling thread's identity; there is no robust list.
#[derive(Clone, Copy, Debug)]
pub struct ThreadContext {
    tid: u32,
    _not_send: std::marker::PhantomData<*const ()>,
}

thread_local! {
    static TID: Cell<u32> = const { Cell::new(0) };
}

/// The calling thread's [`ThreadContext`], with a process-unique non-zero id.
pub fn current_thread() -> ThreadContext {
    ThreadContext {
        tid: gettid(),
        _not_send: std::marker::PhantomData,
    }
}

/// Nothing to disable.
pub fn disable_robust_list_for_current_thread() {}

impl ThreadContext {
    /// The thread's id (non-zero).
    pub fn tid(&self) -> u32 {
        self.tid
    }
    /// Always false.
    pub fn has_robust_list(&self) -> bool {
        false
    }
    /// Never called (no robust list).
    ///
    /// # Safety
    /// None needed; kept `unsafe` to match the Linux contract.
    pub unsafe fn set_pending(&self, _node: &RobustListNode) {}
    /// Never called (no robust list).
    ///
    /// # Safety
    /// None needed; kept `unsafe` to match the Linux contract.
    pub unsafe fn clear_pending(&self) {}
    /// Never called (no robust list).
    ///
    /// # Safety
    /// None needed; kept `unsafe` to match the Linux contract.
    pub unsafe fn link(&self, _node: &RobustListNode) {}
    /// Never called (no robust list).
    ///
    /// # Safety
    /// None needed; kept `unsafe` to match the Linux contract.
    pub unsafe fn unlink(&self, _node: &RobustListNode) {}
    /// Always empty.
    pub fn robust_list_entries(&self) -> Vec<usize> {
        Vec::new()
    }
}

/// A process-unique thread id (not the OS's).
pub fn gettid() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    TID.with(|tid| {
        if tid.get() == 0 {
            tid.set(NEXT.fetch_add(1, Ordering::Relaxed) & 0x3fff_ffff);
        }
        tid.get()
    })
}

/// The calling process's id.
pub fn getpid() -> u32 {
    std::process::id()
}

/// Unknown here: answers true, so no lock is ever taken from a live owner.
pub fn thread_alive(_tid: u32) -> bool {
    true
}

/// A process identity; cannot be read on this platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessId {
    /// The process id.
    pub pid: u32,
    /// When the process started (unknown here).
    pub start_time: u64,
}

impl ProcessId {
    /// Not supported.
    pub fn current() -> io::Result<Self> {
        Err(unsupported("process identity"))
    }
    /// Not supported.
    pub fn of(_pid: u32) -> io::Result<Self> {
        Err(unsupported("process identity"))
    }
    /// Unknown here: answers true.
    pub fn is_alive(&self) -> bool {
        true
    }
}

/// Names of shared-memory objects starting with `prefix`: unsupported here.
pub fn shm_list(_prefix: &str) -> io::Result<Vec<String>> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// An open lock file; on this platform no lock can be taken.
#[derive(Debug)]
pub struct LockFile {
    _file: std::fs::File,
}

impl LockFile {
    /// Not supported: returns [`io::ErrorKind::Unsupported`].
    pub fn open_or_create(_path: &std::path::Path) -> io::Result<Self> {
        Err(unsupported("file locking"))
    }

    /// Not supported: returns [`io::ErrorKind::Unsupported`].
    pub fn open_existing(_path: &std::path::Path) -> io::Result<Self> {
        Err(unsupported("file locking"))
    }

    /// Not supported: returns [`io::ErrorKind::Unsupported`].
    pub fn lock_exclusive(&self) -> io::Result<()> {
        Err(unsupported("file locking"))
    }

    /// Not supported: returns [`io::ErrorKind::Unsupported`].
    pub fn try_lock_exclusive(&self) -> io::Result<bool> {
        Err(unsupported("file locking"))
    }

    /// Not supported: returns [`io::ErrorKind::Unsupported`].
    pub fn unlock(&self) -> io::Result<()> {
        Err(unsupported("file locking"))
    }
}

/// The `log` module's OS calls; on this platform none is available.
pub mod log_sys {
    use std::io;

    /// Severity of a syslog message.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum SyslogSeverity {
        /// `LOG_ERR`
        Error,
        /// `LOG_WARNING`
        Warning,
        /// `LOG_INFO`
        Info,
        /// `LOG_DEBUG`
        Debug,
    }

    /// Not supported: returns [`io::ErrorKind::Unsupported`].
    pub fn syslog_open(_ident: &str) -> io::Result<()> {
        Err(super::unsupported("syslog"))
    }

    /// Not supported: does nothing.
    pub fn syslog_write(_severity: SyslogSeverity, _message: &str) {}
}

/// No asymmetric fences here: a producer must use full barriers.
pub fn register_light_fence() -> bool {
    false
}

/// Never called usefully where registration fails; a compiler barrier like Linux's.
#[inline(always)]
pub fn light_fence() {
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Unsupported: the caller falls back (see the Linux version).
pub fn heavy_fence() -> bool {
    false
}
