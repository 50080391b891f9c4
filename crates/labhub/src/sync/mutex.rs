//! [`ProcessMutex`]: a robust futex mutex for shared memory.
//!
//! # The lock word
//!
//! One `u32` in the Linux robust-futex format, so that the kernel can mark it when its owner
//! dies: `owner TID (bits 0..30) | OWNER_DIED (bit 30) | WAITERS (bit 31)`.
//!
//! | word | meaning |
//! |---|---|
//! | `0` | unlocked |
//! | `tid` | locked by thread `tid`, nobody sleeping |
//! | `tid \| WAITERS` | locked, threads may be sleeping on the word |
//! | `OWNER_DIED [\| WAITERS]` | unlocked: the kernel saw the owner die and released it |
//! | `dead_tid [\| WAITERS]` | the owner died without the kernel robust list; a waiter finds out by polling |
//!
//! | transition | by |
//! |---|---|
//! | `0 → tid` | lock, fast path: one compare-and-swap |
//! | `tid → tid \| WAITERS` | a waiter, before it sleeps on the word |
//! | `[OWNER_DIED] [\| WAITERS] → tid [\| WAITERS]` | lock, slow path; `OWNER_DIED` is reported as [`LockError::OwnerDied`] and cleared |
//! | `tid [\| WAITERS] → OWNER_DIED [\| WAITERS]` | the kernel, when the owner dies with the lock in its robust list; it wakes one waiter |
//! | `dead_tid [\| WAITERS] → tid \| WAITERS` | a waiter that, once per 100 ms of sleep, found `dead_tid` gone: reported as owner death |
//! | `tid [\| WAITERS] → 0` | unlock: one swap, then `FUTEX_WAKE` of one waiter only if `WAITERS` was set |
//!
//! A thread that has slept keeps `WAITERS` set when it takes the lock, since others may still
//! sleep; at worst one unlock makes a needless wake call.
//!
//! # The robust list
//!
//! While a thread holds the lock, the mutex's [`RobustListNode`](crate::sys::RobustListNode)
//! (at byte 24) is linked into the thread's kernel robust list: the list glibc registered for
//! the thread, in glibc's own node format, so ours and glibc's robust mutexes share it. The
//! order is glibc's: mark the node pending, take the word, link, clear the mark; to unlock,
//! mark, unlink, release the word, wake, clear. The list is used for every mutex whose flags
//! word does not carry `new()`'s mark: one reached through [`ProcessMutex::from_ptr`], or
//! through any other cast into zeroed memory (a `#[repr(C)]` header holding one), whose author
//! takes on `from_ptr`'s promises that the mutex stays put. It is never used for a value made
//! by [`ProcessMutex::new`], which safe code could move or free while a leaked guard keeps it
//! linked.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sys::{self, RobustListNode, ThreadContext};

/// Owner TID bits of the lock word (the kernel's `FUTEX_TID_MASK`).
const TID_MASK: u32 = 0x3fff_ffff;
/// The owner died (set by the kernel, or implied by a vanished owner TID).
const OWNER_DIED: u32 = 0x4000_0000;
/// Threads may be sleeping on the word: unlock must wake one.
const WAITERS: u32 = 0x8000_0000;

/// `flags` bit: the mutex was made by `new()` and may move, so never link it into a robust list.
const LOCAL: u32 = 1;

/// How often a contended locker checks the word, spinning, before it sleeps: critical
/// sections are short, and a sleep and wake cost microseconds. Kept small (a pause is up to
/// ~140 cycles on recent Intel cores) so a spinner does not starve the owner on a busy host.
const SPIN_LIMIT: u32 = 40;
/// Longest sleep between checks of the owner's liveness, for owners without a robust list.
const LIVENESS_SLICE: Duration = Duration::from_millis(100);

/// A mutex that lives in shared memory and works between processes, robust to owner death.
///
/// 64 bytes, aligned to 64 (one cache line); all zero is unlocked:
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | lock word: owner TID \| `OWNER_DIED` \| `WAITERS` |
/// | 4 | 4 | flags (bit 0: made by `new()`, not linked into robust lists) |
/// | 8 | 16 | reserved, zero |
/// | 24 | 16 | kernel robust-list node `{ prev, next }` (owner's addresses while locked) |
/// | 40 | 24 | reserved, zero |
///
/// Locking is one compare-and-swap when free; a contended locker spins briefly, then sleeps
/// on a futex. The lock is not reentrant: a thread that locks it twice deadlocks. Guards are
/// `!Send` (the word names the owning thread).
///
/// Everyone who can write the mapping is trusted: a process that scribbles on the node can
/// make the owner's unlock corrupt its memory, as with glibc's robust mutexes.
///
/// All processes that share a mutex must share a pid namespace: the word holds TIDs, and a
/// waiter's liveness probe would find an owner of another namespace missing and take its lock.
/// Locking and unlocking are not async-signal-safe: a signal handler that locks a mutex on a
/// thread interrupted inside `lock` or a guard's drop can corrupt that thread's robust list.
#[repr(C, align(64))]
pub struct ProcessMutex {
    word: AtomicU32,
    flags: AtomicU32,
    _reserved: [u8; 16],
    node: RobustListNode,
    _tail: [u8; 24],
}

const _: () = assert!(size_of::<ProcessMutex>() == 64);
const _: () = assert!(align_of::<ProcessMutex>() == 64);
const _: () = assert!(std::mem::offset_of!(ProcessMutex, word) == 0);
const _: () = assert!(std::mem::offset_of!(ProcessMutex, flags) == 4);
const _: () = assert!(std::mem::offset_of!(ProcessMutex, node) == sys::ROBUST_NODE_OFFSET);
const _: () = assert!(sys::ROBUST_NODE_OFFSET == 24);

/// Why a lock attempt did not simply succeed.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum LockError<'a> {
    /// The previous owner died holding the lock. The lock is now held (the guard is here);
    /// the state it protects may be half-updated: repair it, then use or drop the guard.
    /// Nothing else is needed: the next locker is not told again.
    #[error(
        "the previous owner of the process mutex died holding it; the lock is held now and the state it guards may need repair"
    )]
    OwnerDied(ProcessMutexGuard<'a>),
    /// [`ProcessMutex::lock_timeout`] gave up.
    #[error("timed out waiting for the process mutex")]
    Timeout,
    /// The platform cannot put a thread to sleep on the lock (not Linux).
    #[error("cannot wait for the process mutex")]
    Wait(#[source] io::Error),
}

impl fmt::Debug for LockError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            Self::Timeout => f.write_str("Timeout"),
            Self::Wait(e) => f.debug_tuple("Wait").field(e).finish(),
        }
    }
}

impl<'a> LockError<'a> {
    /// The guard, if the lock was acquired (the owner-died case).
    pub fn into_guard(self) -> Option<ProcessMutexGuard<'a>> {
        match self {
            Self::OwnerDied(guard) => Some(guard),
            _ => None,
        }
    }
}

/// Why the slow path failed (the guard is built by the caller).
enum SlowFailure {
    Timeout,
    Wait(io::Error),
}

impl ProcessMutex {
    /// A new unlocked mutex, as a value in process memory.
    ///
    /// Such a value may move, so it is never linked into the kernel robust list; a thread
    /// that dies holding it is still detected, by the waiters' liveness polling. For
    /// shared memory, zero the region (or write `new()` into it) and reach it through
    /// [`from_ptr`](Self::from_ptr).
    pub const fn new() -> Self {
        Self {
            word: AtomicU32::new(0),
            flags: AtomicU32::new(LOCAL),
            _reserved: [0; 16],
            node: RobustListNode::new(),
            _tail: [0; 24],
        }
    }

    /// The mutex at `ptr`, inside a shared mapping; zero-filled memory is an unlocked mutex.
    ///
    /// Lockers through the returned reference use the kernel robust list, so the kernel
    /// releases the lock the moment its owner dies.
    ///
    /// # Safety
    /// `ptr` is aligned to 64 and points at 64 bytes that hold a `ProcessMutex` (all zero, or
    /// written by `new()` or by another process's use of one), that are accessed only through
    /// `ProcessMutex` methods, and that stay mapped at this address for `'a` and, if a guard
    /// is leaked (`mem::forget`), until the leaking thread exits. The mark this call clears is
    /// stored in the mutex: from then on every locker, whatever reference it holds, links the
    /// mutex into its robust list, so the bytes must never be moved (only unmapped, as above).
    pub unsafe fn from_ptr<'a>(ptr: *const Self) -> &'a Self {
        // SAFETY: guaranteed by the caller: aligned, valid, mapped for 'a.
        let mutex = unsafe { &*ptr };
        if mutex.flags.load(Ordering::Relaxed) & LOCAL != 0 {
            mutex.flags.fetch_and(!LOCAL, Ordering::Relaxed);
        }
        mutex
    }

    /// Locks, sleeping as long as it takes. `Err` is only [`LockError::OwnerDied`] (which
    /// holds the lock) or [`LockError::Wait`] (off Linux, or an unexpected futex error).
    #[inline]
    pub fn lock(&self) -> Result<ProcessMutexGuard<'_>, LockError<'_>> {
        self.acquire(None)
    }

    /// Locks, giving up with [`LockError::Timeout`] once `timeout` has passed (never earlier).
    #[inline]
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ProcessMutexGuard<'_>, LockError<'_>> {
        self.acquire(Some(timeout))
    }

    /// Locks if nobody holds the lock: `Ok(None)` if someone does, `Err(OwnerDied)` if the
    /// kernel released it from a dead owner. It never sleeps and does not probe the owner's
    /// liveness (`lock` and `lock_timeout` do).
    #[inline]
    pub fn try_lock(&self) -> Result<Option<ProcessMutexGuard<'_>>, LockError<'_>> {
        let thread = sys::current_thread();
        let listed = self.uses_robust_list(&thread);
        if listed {
            // SAFETY: the thread has a list, and `from_ptr`'s caller keeps us in place.
            unsafe { thread.set_pending(&self.node) };
        }
        let mut word = self.word.load(Ordering::Relaxed);
        let acquired = loop {
            if word & TID_MASK != 0 {
                break None;
            }
            let new = thread.tid() | (word & WAITERS);
            match self
                .word
                .compare_exchange_weak(word, new, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break Some(word & OWNER_DIED != 0),
                Err(actual) => word = actual,
            }
        };
        match acquired {
            None => {
                if listed {
                    // SAFETY: the thread has a list.
                    unsafe { thread.clear_pending() };
                }
                Ok(None)
            }
            Some(owner_died) => {
                let guard = self.guard_after_acquire(thread, listed);
                if owner_died {
                    Err(LockError::OwnerDied(guard))
                } else {
                    Ok(Some(guard))
                }
            }
        }
    }

    /// The TID of the thread holding the lock, if any (a snapshot, for diagnostics).
    pub fn owner(&self) -> Option<u32> {
        match self.word.load(Ordering::Relaxed) & TID_MASK {
            0 => None,
            tid => Some(tid),
        }
    }

    #[inline]
    fn uses_robust_list(&self, thread: &ThreadContext) -> bool {
        thread.has_robust_list() && self.flags.load(Ordering::Relaxed) & LOCAL == 0
    }

    #[inline]
    fn acquire(&self, timeout: Option<Duration>) -> Result<ProcessMutexGuard<'_>, LockError<'_>> {
        let thread = sys::current_thread();
        let listed = self.uses_robust_list(&thread);
        if listed {
            // SAFETY: the thread has a list, and `from_ptr`'s caller keeps us in place.
            unsafe { thread.set_pending(&self.node) };
        }
        let owner_died =
            match self
                .word
                .compare_exchange(0, thread.tid(), Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => false,
                Err(_) => match self.lock_contended(thread.tid(), timeout) {
                    Ok(owner_died) => owner_died,
                    Err(failure) => {
                        if listed {
                            // SAFETY: the thread has a list.
                            unsafe { thread.clear_pending() };
                        }
                        return Err(match failure {
                            SlowFailure::Timeout => LockError::Timeout,
                            SlowFailure::Wait(e) => LockError::Wait(e),
                        });
                    }
                },
            };
        let guard = self.guard_after_acquire(thread, listed);
        if owner_died {
            Err(LockError::OwnerDied(guard))
        } else {
            Ok(guard)
        }
    }

    /// Links the node (the word now holds our TID) and builds the guard.
    #[inline]
    fn guard_after_acquire(&self, thread: ThreadContext, listed: bool) -> ProcessMutexGuard<'_> {
        if listed {
            // SAFETY: the thread has a list; we own the word, so nobody else touches the
            // node, which is unlinked (its previous owner unlinked it or died, and the kernel
            // does not follow a dead thread's list again); `from_ptr`'s caller keeps it in place.
            unsafe {
                thread.link(&self.node);
                thread.clear_pending();
            }
        }
        ProcessMutexGuard {
            mutex: self,
            thread,
            listed,
        }
    }

    /// Waits for the word to become free and takes it. `Ok(owner_died)`.
    #[cold]
    fn lock_contended(&self, tid: u32, timeout: Option<Duration>) -> Result<bool, SlowFailure> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut spins = 0;
        // Once we have slept, others may sleep too: keep WAITERS when we take the lock.
        let mut waiters_bit = 0;
        // When the owner's liveness was last probed (or the first sleep began).
        let mut last_probe: Option<Instant> = None;
        loop {
            let word = self.word.load(Ordering::Relaxed);
            if word & TID_MASK == 0 {
                let new = tid | (word & WAITERS) | waiters_bit;
                match self
                    .word
                    .compare_exchange(word, new, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => return Ok(word & OWNER_DIED != 0),
                    Err(_) => continue,
                }
            }
            if word & WAITERS == 0 && spins < SPIN_LIMIT {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            if word & WAITERS == 0
                && self
                    .word
                    .compare_exchange(word, word | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let slice = match deadline {
                None => LIVENESS_SLICE, // no timeout, or one past `Instant`'s range
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(LIVENESS_SLICE),
                    _ => return Err(SlowFailure::Timeout),
                },
            };
            waiters_bit = WAITERS;
            let probed = *last_probe.get_or_insert_with(Instant::now);
            match sys::futex_wait(&self.word, word | WAITERS, Some(slice)) {
                // Probe when a slice ran out, and also when early returns (signals, changes of
                // the word) have added up to a slice, or a dead owner would never be noticed.
                Ok(woken) => {
                    if !woken || probed.elapsed() >= LIVENESS_SLICE {
                        last_probe = Some(Instant::now());
                        if let Some(owner_died) = self.take_from_vanished_owner(tid) {
                            return Ok(owner_died);
                        }
                    }
                }
                Err(e) => return Err(SlowFailure::Wait(e)),
            }
        }
    }

    /// After a sleep slice ran out: if the word names a thread that no longer exists (it
    /// died without a robust list), take the lock as from a dead owner.
    #[cold]
    fn take_from_vanished_owner(&self, tid: u32) -> Option<bool> {
        let word = self.word.load(Ordering::Relaxed);
        let owner = word & TID_MASK;
        if owner == 0 || owner == tid || sys::thread_alive(owner) {
            return None;
        }
        // Only if the word still names that dead owner: a compare-and-swap on the exact value.
        self.word
            .compare_exchange(word, tid | WAITERS, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| true)
    }

    #[inline]
    fn unlock(&self, thread: &ThreadContext, listed: bool) {
        if listed {
            // SAFETY: the thread has a list and linked the node when it took the lock; the
            // guard's borrow keeps the mutex in place until now.
            unsafe {
                thread.set_pending(&self.node);
                thread.unlink(&self.node);
            }
        }
        let word = self.word.swap(0, Ordering::Release);
        debug_assert_eq!(
            word & TID_MASK,
            thread.tid(),
            "unlock by a thread that is not the owner"
        );
        if word & WAITERS != 0 {
            self.wake_one();
        }
        if listed {
            // SAFETY: the thread has a list.
            unsafe { thread.clear_pending() };
        }
    }

    #[cold]
    fn wake_one(&self) {
        sys::futex_wake(&self.word, 1);
    }
}

impl Default for ProcessMutex {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ProcessMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = self.word.load(Ordering::Relaxed);
        f.debug_struct("ProcessMutex")
            .field("owner", &(word & TID_MASK))
            .field("owner_died", &(word & OWNER_DIED != 0))
            .field("waiters", &(word & WAITERS != 0))
            .finish()
    }
}

/// Holds a [`ProcessMutex`]; unlocks it when dropped.
///
/// `!Send`: the lock word and the robust list name the thread that locked it, so the same
/// thread must unlock it. For the same reason a guard copied into a child by `fork()` (an
/// unsafe call) belongs to the parent: dropping it in the child does nothing (the child's
/// thread has another TID), and the parent's lock stays held until the parent drops its guard.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<labhub::sync::ProcessMutexGuard<'static>>();
/// ```
#[must_use = "if unused the ProcessMutex unlocks at once"]
pub struct ProcessMutexGuard<'a> {
    mutex: &'a ProcessMutex,
    thread: ThreadContext,
    listed: bool,
}

impl<'a> ProcessMutexGuard<'a> {
    /// The mutex this guard holds.
    pub fn mutex(&self) -> &'a ProcessMutex {
        self.mutex
    }
}

impl Drop for ProcessMutexGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // A copy made by `fork()` runs on another thread (new TID, emptied robust list) and
        // must leave the parent's lock and list node alone, even when it unwinds.
        if sys::current_thread().tid() == self.thread.tid() {
            self.mutex.unlock(&self.thread, self.listed);
        }
    }
}

impl fmt::Debug for ProcessMutexGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessMutexGuard")
            .field("owner", &self.thread.tid())
            .field("robust_list", &self.listed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    /// A mutex at a stable heap address, used as in shared memory (robust list on).
    fn placed() -> &'static ProcessMutex {
        let leaked: &'static mut ProcessMutex = Box::leak(Box::new(ProcessMutex::new()));
        // SAFETY: a leaked, aligned, never-freed ProcessMutex.
        unsafe { ProcessMutex::from_ptr(leaked) }
    }

    #[test]
    fn a_zeroed_region_is_an_unlocked_mutex() {
        let zeroed = std::mem::MaybeUninit::<ProcessMutex>::zeroed();
        // SAFETY: the contract under test: all-zero bytes are a valid mutex.
        let mutex = unsafe { ProcessMutex::from_ptr(zeroed.as_ptr()) };
        assert_eq!(mutex.owner(), None);
        let guard = mutex.lock().unwrap();
        assert_eq!(mutex.owner(), Some(sys::current_thread().tid()));
        drop(guard);
        assert_eq!(mutex.word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_placed_mutex_is_in_the_robust_list_exactly_while_locked() {
        let thread = sys::current_thread();
        if !thread.has_robust_list() {
            return;
        }
        let (a, b) = (placed(), placed());
        let entry = |m: &ProcessMutex| m.node.entry();
        let before = thread.robust_list_entries();
        let ga = a.lock().unwrap();
        let gb = b.lock().unwrap();
        assert_eq!(thread.robust_list_entries()[..2], [entry(b), entry(a)]);
        drop(ga);
        assert_eq!(thread.robust_list_entries()[..1], [entry(b)]);
        drop(gb);
        assert_eq!(thread.robust_list_entries(), before);
        // A `new()` value may move, so it stays out of the list.
        let local = ProcessMutex::new();
        let _g = local.lock().unwrap();
        assert_eq!(thread.robust_list_entries(), before);
    }

    #[test]
    fn try_lock_fails_while_held_and_succeeds_after() {
        let mutex = placed();
        let guard = mutex.try_lock().unwrap().expect("free");
        std::thread::scope(|s| {
            s.spawn(|| assert!(mutex.try_lock().unwrap().is_none()));
        });
        drop(guard);
        std::thread::scope(|s| {
            s.spawn(|| assert!(mutex.try_lock().unwrap().is_some()));
        });
    }

    #[test]
    fn try_lock_reports_an_owner_the_kernel_marked_dead() {
        let mutex = placed();
        mutex.word.store(OWNER_DIED, Ordering::Relaxed);
        let guard = mutex
            .try_lock()
            .unwrap_err()
            .into_guard()
            .expect("lock held");
        drop(guard);
        assert!(mutex.try_lock().unwrap().is_some(), "reported once only");
    }

    #[test]
    fn lock_timeout_gives_up_no_earlier_than_the_timeout() {
        let mutex = placed();
        let _held = mutex.lock().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let timeout = Duration::from_millis(50);
                let start = Instant::now();
                assert!(matches!(
                    mutex.lock_timeout(timeout),
                    Err(LockError::Timeout)
                ));
                assert!(start.elapsed() >= timeout);
            });
        });
    }

    #[test]
    fn lock_takes_over_from_a_vanished_owner() {
        let mutex = placed();
        // A TID that cannot exist (above pid_max's hard limit of 2^22).
        mutex.word.store(0x3fff_fff0, Ordering::Relaxed);
        let guard = mutex.lock().unwrap_err().into_guard().expect("lock held");
        assert_eq!(mutex.owner(), Some(sys::current_thread().tid()));
        drop(guard);
    }

    #[test]
    fn a_thread_that_exits_holding_a_placed_mutex_is_reported_by_the_kernel() {
        let mutex = placed();
        std::thread::spawn(|| std::mem::forget(mutex.lock().unwrap()))
            .join()
            .unwrap();
        if sys::current_thread().has_robust_list() {
            // The kernel walked the exited thread's robust list.
            assert_eq!(mutex.word.load(Ordering::Relaxed), OWNER_DIED);
        }
        assert!(matches!(mutex.try_lock(), Err(LockError::OwnerDied(_))));
    }

    #[test]
    fn a_thread_that_exits_holding_a_local_mutex_is_found_by_liveness_polling() {
        let mutex = ProcessMutex::new();
        let owner = std::thread::scope(|s| {
            s.spawn(|| {
                std::mem::forget(mutex.lock().unwrap());
                sys::current_thread().tid()
            })
            .join()
            .unwrap()
        });
        assert_eq!(mutex.owner(), Some(owner), "not in any robust list");
        assert!(matches!(mutex.lock(), Err(LockError::OwnerDied(_))));
    }

    #[test]
    fn eight_threads_increment_exactly() {
        const THREADS: u64 = 8;
        const ROUNDS: u64 = 20_000;
        let mutex = placed();
        let counter = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        let _guard = mutex.lock().unwrap();
                        // A non-atomic read-modify-write: only the lock makes it exact.
                        let v = counter.load(Ordering::Relaxed);
                        counter.store(v + 1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), THREADS * ROUNDS);
        assert_eq!(mutex.word.load(Ordering::Relaxed) & TID_MASK, 0);
    }
}
