//! Futex wait/wake on words in shared memory, and the calling thread's kernel robust list.
//!
//! The robust list follows the kernel ABI (Documentation/locking/robust-futex-ABI.rst) and,
//! so that our entries can sit in the list glibc registers for every thread, glibc's node
//! format on 64-bit targets (`__PTHREAD_MUTEX_HAVE_PREV`): a node is `{ prev, next }`, every
//! list pointer points at a node's `next` field, and `head.futex_offset` (-32 for glibc's
//! `pthread_mutex_t`) is the distance from a `next` field to its futex word. Bit 0 of a list
//! pointer marks a PI futex and is masked off when following it.
//!
//! Only the owning thread changes its list; the kernel reads it when the thread dies
//! (SIGKILL included), so every step leaves the `next` chain walkable, with a compiler fence
//! between steps, as glibc does. `list_op_pending` names the node being locked or unlocked
//! so that a death in between is handled too.

use std::cell::Cell;
use std::io;
use std::ptr;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, compiler_fence};
use std::time::Duration;

/// Sleeps while `*word == expected`, for at most `timeout` (`None`: no limit).
///
/// Returns `Ok(true)` when woken, when the word did not hold `expected`, or on a signal
/// (callers re-check their condition in a loop), `Ok(false)` when the timeout elapsed.
/// The wait is process-shared (no `FUTEX_PRIVATE_FLAG`): the word may live in shared memory.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> io::Result<bool> {
    let timespec = timeout.map(|d| libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        // Always below 1e9, so it fits every platform's `c_long`.
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let timeout_ptr = timespec
        .as_ref()
        .map_or(ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32 for the whole call and FUTEX_WAIT only reads it;
    // `timeout_ptr` is null or points at `timespec`, which outlives the call; the last two
    // arguments are ignored by FUTEX_WAIT.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            timeout_ptr,
            ptr::null::<u32>(),
            0u32,
        )
    };
    if ret == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::EINTR) => Ok(true),
        Some(libc::ETIMEDOUT) => Ok(false),
        _ => Err(err),
    }
}

/// Wakes at most `count` threads (of any process) sleeping in [`futex_wait`] on `word`.
/// Returns how many were woken.
pub fn futex_wake(word: &AtomicU32, count: u32) -> usize {
    let count = count.min(i32::MAX as u32);
    // SAFETY: FUTEX_WAKE only uses the address of `word` as a key (it neither reads nor
    // writes it); the remaining arguments are ignored.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            count,
            ptr::null::<libc::timespec>(),
            ptr::null::<u32>(),
            0u32,
        )
    };
    // FUTEX_WAKE fails only for a bad address or operation, which a `&AtomicU32` excludes.
    debug_assert!(
        ret >= 0,
        "FUTEX_WAKE failed: {}",
        io::Error::last_os_error()
    );
    usize::try_from(ret).unwrap_or(0)
}

/// A robust-list node: 16 bytes that a lock places [`ROBUST_NODE_OFFSET`] bytes after its
/// futex word, so that the kernel finds the word from the node when the owner dies.
///
/// The fields hold addresses in the owning process; they are meaningful only while the
/// owner holds the lock, and all zero when no thread holds it through the robust list.
#[repr(C)]
#[derive(Debug)]
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

    /// The address list pointers use for this node: that of its `next` field.
    pub fn entry(&self) -> usize {
        self.next.as_ptr() as usize
    }
}

impl Default for RobustListNode {
    fn default() -> Self {
        Self::new()
    }
}

/// The offset of a [`RobustListNode`] from the futex word it protects: word at 0, node
/// `{ prev @24, next @32 }`, as in glibc's 64-bit `pthread_mutex_t`, whose list head says
/// `futex_offset = -32`. The offset is checked against the thread's list head at run time.
pub const ROBUST_NODE_OFFSET: usize = 24;

/// `futex_offset` our layout needs: from a node's `next` field back to the word.
const FUTEX_OFFSET: isize = -((ROBUST_NODE_OFFSET + 8) as isize);

/// The kernel's `struct robust_list_head`.
#[repr(C)]
struct RobustListHead {
    list: AtomicUsize,
    futex_offset: isize,
    list_op_pending: AtomicUsize,
}

/// Our own head for threads nobody registered one for; `prev` mirrors glibc's `robust_prev`
/// word, which sits right before the head and serves as the head's `prev` slot.
#[repr(C)]
struct OwnRobustList {
    prev: AtomicUsize,
    head: RobustListHead,
}

/// Masks the PI marker bit off a list pointer.
const fn unmarked(entry: usize) -> usize {
    entry & !1
}

/// The address of the `prev` slot of the node whose list pointer is `entry`.
const fn prev_slot(entry: usize) -> usize {
    unmarked(entry) - 8
}

thread_local! {
    /// The calling thread's TID and usable robust list head (0: none); TID 0 = not yet known.
    static CONTEXT: Cell<(u32, usize)> = const { Cell::new((0, 0)) };
    /// A head for threads that have none (not glibc's); its address is stable for the thread's life.
    static OWN_LIST: OwnRobustList = const {
        OwnRobustList {
            prev: AtomicUsize::new(0),
            head: RobustListHead {
                list: AtomicUsize::new(0),
                futex_offset: FUTEX_OFFSET,
                list_op_pending: AtomicUsize::new(0),
            },
        }
    };
}

/// The calling thread's identity and robust list, cached per thread.
///
/// It holds a raw pointer into the thread's own storage, so it is neither `Send` nor `Sync`:
/// a value must be used only on the thread that made it.
#[derive(Clone, Copy, Debug)]
pub struct ThreadContext {
    tid: u32,
    head: *const RobustListHead,
}

/// The calling thread's [`ThreadContext`]: its TID (`gettid` once per thread) and the kernel
/// robust list head our locks may be linked into.
///
/// The list is glibc's own head when the kernel reports one whose layout matches ours
/// (glibc on 64-bit targets); a head of our own, registered with `set_robust_list`, when the
/// thread has none; otherwise there is no list and locks fall back to liveness polling.
#[inline]
pub fn current_thread() -> ThreadContext {
    let (tid, head) = CONTEXT.get();
    if tid != 0 {
        return ThreadContext {
            tid,
            head: head as *const RobustListHead,
        };
    }
    init_current_thread()
}

#[cold]
fn init_current_thread() -> ThreadContext {
    static ATFORK: Once = Once::new();
    ATFORK.call_once(|| {
        // SAFETY: registering a plain `extern "C"` handler without preconditions; a failure
        // (ENOMEM) only means a forked child keeps the parent's cache, as before.
        unsafe { libc::pthread_atfork(None, None, Some(forget_thread_after_fork)) };
    });
    let tid = super::process::gettid();
    let head = find_robust_list();
    CONTEXT.set((tid, head));
    ThreadContext {
        tid,
        head: head as *const RobustListHead,
    }
}

/// In a forked child the only thread has a new TID, and glibc has emptied its robust list.
extern "C" fn forget_thread_after_fork() {
    CONTEXT.set((0, 0));
}

/// Decides which list head this thread's locks use (0: none).
fn find_robust_list() -> usize {
    if cfg!(not(target_pointer_width = "64")) {
        return 0; // our node layout holds 64-bit pointers
    }
    let mut head: *mut RobustListHead = ptr::null_mut();
    let mut len: usize = 0;
    // SAFETY: get_robust_list(0, ...) writes one pointer and one size_t to the two valid,
    // writable locals passed by address.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0 as libc::c_long,
            &mut head as *mut *mut RobustListHead,
            &mut len as *mut usize,
        )
    };
    if ret != 0 {
        return 0;
    }
    if head.is_null() {
        return register_own_list();
    }
    if !cfg!(target_env = "gnu") || len != size_of::<RobustListHead>() {
        return 0; // someone else's list with a format we do not know: never write into it
    }
    // SAFETY: the kernel returned the head glibc registered for this thread; it lives in
    // the thread's descriptor for the thread's whole life and only this thread writes it.
    let futex_offset = unsafe { (*head).futex_offset };
    if futex_offset == FUTEX_OFFSET {
        head as usize
    } else {
        0
    }
}

fn register_own_list() -> usize {
    let own = OWN_LIST.with(|own| own as *const OwnRobustList);
    // SAFETY: `own` points at this thread's `OWN_LIST`, which lives until the thread exits,
    // after the kernel's last use of the list.
    let head = unsafe { &(*own).head };
    let head_addr = head as *const RobustListHead as usize;
    head.list.store(head_addr, Ordering::Relaxed); // empty: the list points at itself
    // SAFETY: `head` is a valid robust_list_head of the size passed, living as long as the
    // thread (see above).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_set_robust_list,
            head_addr,
            size_of::<RobustListHead>(),
        )
    };
    if ret == 0 { head_addr } else { 0 }
}

/// Makes the calling thread's future locks skip the kernel robust list, so that a lock it
/// holds when it dies is found only by the liveness fallback (a waiter that sees the owner's
/// TID gone). For tests of that fallback; call it while holding no lock.
#[cfg(feature = "test-support")]
pub fn disable_robust_list_for_current_thread() {
    let tid = current_thread().tid;
    CONTEXT.set((tid, 0));
}

impl ThreadContext {
    /// The thread's kernel TID (non-zero).
    #[inline]
    pub fn tid(&self) -> u32 {
        self.tid
    }

    /// Whether locks taken on this thread are linked into a kernel robust list.
    #[inline]
    pub fn has_robust_list(&self) -> bool {
        !self.head.is_null()
    }

    #[inline]
    fn head(&self) -> &RobustListHead {
        debug_assert!(self.has_robust_list());
        // SAFETY: a non-null `head` was validated by `find_robust_list` and points at this
        // thread's head, alive as long as the thread; `ThreadContext` is `!Send`, so we are
        // on that thread.
        unsafe { &*self.head }
    }

    /// Announces that `node` is being locked or unlocked (`list_op_pending`), so that the
    /// kernel handles its word if the thread dies before the list is updated.
    ///
    /// # Safety
    /// The thread has a robust list, and `node` sits [`ROBUST_NODE_OFFSET`] bytes after a
    /// futex word and stays at that address, mapped, until the pending mark is cleared.
    #[inline]
    pub unsafe fn set_pending(&self, node: &RobustListNode) {
        self.head()
            .list_op_pending
            .store(node.entry(), Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
    }

    /// Clears the pending mark set by [`set_pending`](Self::set_pending).
    ///
    /// # Safety
    /// The thread has a robust list.
    #[inline]
    pub unsafe fn clear_pending(&self) {
        compiler_fence(Ordering::SeqCst);
        self.head().list_op_pending.store(0, Ordering::Relaxed);
    }

    /// Links `node` at the front of the thread's robust list, after its futex word has been
    /// set to this thread's TID.
    ///
    /// # Safety
    /// The thread has a robust list; `node` is unlinked, sits [`ROBUST_NODE_OFFSET`] bytes
    /// after a futex word this thread owns, and stays at that address, mapped, until
    /// [`unlink`](Self::unlink) removes it.
    #[inline]
    pub unsafe fn link(&self, node: &RobustListNode) {
        let head = self.head();
        let first = head.list.load(Ordering::Relaxed);
        let entry = node.entry();
        // SAFETY: `first` is the head itself or the entry of a node linked by this thread
        // (ours or glibc's), all of which are live per the contracts of this function and
        // glibc's; its `prev` slot is the 8 bytes before it (for the head: `robust_prev`).
        unsafe { (*(prev_slot(first) as *const AtomicUsize)).store(entry, Ordering::Relaxed) };
        node.next.store(first as u64, Ordering::Relaxed);
        node.prev
            .store(head as *const RobustListHead as u64, Ordering::Relaxed);
        // The node must be complete before the head publishes it to the kernel.
        compiler_fence(Ordering::SeqCst);
        head.list.store(entry, Ordering::Relaxed);
    }

    /// Unlinks `node` from the thread's robust list, before its futex word is released.
    ///
    /// # Safety
    /// The thread has a robust list and `node` was linked by [`link`](Self::link) on this
    /// thread and not unlinked since.
    #[inline]
    pub unsafe fn unlink(&self, node: &RobustListNode) {
        let next = node.next.load(Ordering::Relaxed) as usize;
        let prev = node.prev.load(Ordering::Relaxed) as usize;
        debug_assert!(
            next != 0 && prev != 0,
            "unlinking a node that is not linked"
        );
        // SAFETY: `next` and `prev` are list entries (or the head) of this thread's list,
        // live per the list's contracts; an entry's `prev` slot is 8 bytes before it and its
        // `next` slot is the entry itself.
        unsafe {
            (*(prev_slot(next) as *const AtomicUsize)).store(prev, Ordering::Relaxed);
            (*(unmarked(prev) as *const AtomicUsize)).store(next, Ordering::Relaxed);
        }
        compiler_fence(Ordering::SeqCst);
        node.prev.store(0, Ordering::Relaxed);
        node.next.store(0, Ordering::Relaxed);
    }

    /// The entries of the thread's robust list, front first (for tests).
    #[cfg(test)]
    pub fn robust_list_entries(&self) -> Vec<usize> {
        let mut entries = Vec::new();
        if !self.has_robust_list() {
            return entries;
        }
        let head = self.head();
        let end = head as *const RobustListHead as usize;
        let mut entry = unmarked(head.list.load(Ordering::Relaxed));
        while entry != end && entries.len() < 2048 {
            entries.push(entry);
            // SAFETY: every entry of this thread's list is a live node's `next` field.
            entry = unmarked(unsafe { (*(entry as *const AtomicUsize)).load(Ordering::Relaxed) });
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[repr(C, align(64))]
    struct Lock {
        word: AtomicU32,
        _pad: [u32; 5],
        node: RobustListNode,
    }

    const _: () = assert!(std::mem::offset_of!(Lock, node) == ROBUST_NODE_OFFSET);

    fn lock() -> Box<Lock> {
        Box::new(Lock {
            word: AtomicU32::new(0),
            _pad: [0; 5],
            node: RobustListNode::new(),
        })
    }

    #[test]
    fn glibc_threads_get_glibcs_list_with_our_layout() {
        let thread = current_thread();
        assert_ne!(thread.tid(), 0);
        if cfg!(all(target_env = "gnu", target_pointer_width = "64")) {
            assert!(thread.has_robust_list());
        }
    }

    #[test]
    fn a_forked_child_gets_its_own_tid_and_an_empty_list() {
        let parent = current_thread();
        let held = lock();
        if parent.has_robust_list() {
            // SAFETY: the box stays put until unlinked below.
            unsafe { parent.link(&held.node) };
        }
        // SAFETY: the child makes only syscalls and thread-local accesses, then `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let child = current_thread();
            let ok = child.tid() == super::super::process::gettid()
                && child.tid() != parent.tid()
                && child.has_robust_list() == parent.has_robust_list()
                && child.robust_list_entries().is_empty();
            // SAFETY: ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        assert!(pid > 0, "fork failed");
        let mut status = 0;
        // SAFETY: waits for our own child, writing its status to a local.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        if parent.has_robust_list() {
            // SAFETY: linked above on this thread.
            unsafe { parent.unlink(&held.node) };
        }
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }

    #[test]
    fn nodes_link_and_unlink_in_any_order_beside_glibc_mutexes() {
        let thread = current_thread();
        if !thread.has_robust_list() {
            return;
        }
        // A glibc robust mutex locked in between ours shares the list.
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        let mut glibc = Box::new(libc::PTHREAD_MUTEX_INITIALIZER);
        // SAFETY: standard initialisation of a mutex attribute and a boxed mutex that
        // outlives every use below.
        unsafe {
            libc::pthread_mutexattr_init(attr.as_mut_ptr());
            libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
            libc::pthread_mutex_init(&mut *glibc, attr.as_ptr());
        }
        let before = thread.robust_list_entries();
        let (a, b) = (lock(), lock());
        // SAFETY: the boxes stay put until after they are unlinked.
        unsafe { thread.link(&a.node) };
        // SAFETY: the mutex is initialised and unlocked.
        assert_eq!(unsafe { libc::pthread_mutex_lock(&mut *glibc) }, 0);
        // SAFETY: as above.
        unsafe { thread.link(&b.node) };
        let glibc_entry = thread.robust_list_entries()[1];
        assert_eq!(
            thread.robust_list_entries()[..3],
            [b.node.entry(), glibc_entry, a.node.entry()]
        );
        // SAFETY: `a` was linked above on this thread.
        unsafe { thread.unlink(&a.node) };
        assert_eq!(
            thread.robust_list_entries()[..2],
            [b.node.entry(), glibc_entry]
        );
        // SAFETY: locked above by this thread.
        assert_eq!(unsafe { libc::pthread_mutex_unlock(&mut *glibc) }, 0);
        assert_eq!(thread.robust_list_entries()[..1], [b.node.entry()]);
        // SAFETY: `b` was linked above on this thread.
        unsafe { thread.unlink(&b.node) };
        assert_eq!(thread.robust_list_entries(), before);
        assert_eq!(a.node.next.load(Ordering::Relaxed), 0);
    }
}
