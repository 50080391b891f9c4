//! [`ProcessEvent`]: a futex event counter for shared memory.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{LockError, ProcessMutexGuard};
use crate::sys;

/// An event in shared memory: notify one or all waiters, from any process.
///
/// 8 bytes, aligned to 4; all zero is an idle event:
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | `seq`: incremented by every notify (wraps); the futex word waiters sleep on |
/// | 4 | 4 | `waiters`: threads registered to sleep; a notify makes a wake call only if non-zero |
///
/// A waiter reads the sequence, checks its condition, and sleeps only while the sequence
/// still has the value it read, so a notify that lands between the check and the sleep wakes
/// it (the kernel compares the word as it queues the sleeper). `waiters` is a Dekker pair
/// with `seq` (sequentially consistent on both sides): either the notifier sees the waiter's
/// registration and wakes, or the waiter sees the new sequence and does not sleep.
///
/// A waiter killed while registered leaves `waiters` too high; notifies then make a wake call
/// that finds nobody, which costs time, never correctness.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ProcessEvent {
    seq: AtomicU32,
    waiters: AtomicU32,
}

const _: () = assert!(size_of::<ProcessEvent>() == 8);
const _: () = assert!(align_of::<ProcessEvent>() == 4);
const _: () = assert!(std::mem::offset_of!(ProcessEvent, seq) == 0);
const _: () = assert!(std::mem::offset_of!(ProcessEvent, waiters) == 4);

impl ProcessEvent {
    /// An idle event (all zero).
    pub const fn new() -> Self {
        Self {
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }

    /// The event at `ptr`, inside a shared mapping; zero-filled memory is an idle event.
    ///
    /// # Safety
    /// `ptr` is aligned to 4 and points at 8 bytes that hold a `ProcessEvent`, are accessed
    /// only through `ProcessEvent` methods, and stay mapped for `'a`.
    pub unsafe fn from_ptr<'a>(ptr: *const Self) -> &'a Self {
        // SAFETY: guaranteed by the caller.
        unsafe { &*ptr }
    }

    /// Wakes one waiter (of any process), if any waits.
    pub fn notify_one(&self) {
        self.notify(1);
    }

    /// Wakes every waiter (of every process).
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }

    #[inline]
    fn notify(&self, count: u32) {
        // SYNC: pairs with the waiter's `waiters` increment and `seq` re-check (SeqCst both).
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) != 0 {
            sys::futex_wake(&self.seq, count);
        }
    }

    /// The current sequence number (Acquire: what the notifier wrote before notifying is
    /// visible once the change is seen). Read it before checking a condition, then pass it
    /// to [`wait_changed`](Self::wait_changed).
    #[inline]
    pub fn sequence(&self) -> u32 {
        self.seq.load(Ordering::Acquire)
    }

    /// Sleeps until the sequence differs from `seen` or the timeout elapses (`None`: no
    /// limit). Returns false on timeout, never earlier than `timeout`.
    ///
    /// It does not spin: on a busy machine a spinning waiter takes the CPU its notifier
    /// needs (measured: spinning 100 checks doubled the cross-process wake latency on a loaded
    /// 2-core host; see docs/PERFORMANCE.md). Off Linux it cannot sleep and returns false
    /// at once.
    pub fn wait_changed(&self, seen: u32, timeout: Option<Duration>) -> bool {
        self.wait_changed_spinning(seen, 0, timeout)
    }

    /// [`wait_changed`](Self::wait_changed) after up to `spins` checks of the sequence in a
    /// spin loop (a few hundred at most): lower latency when the notifier runs on another,
    /// otherwise idle core and notifies within a few microseconds; wasted CPU otherwise.
    pub fn wait_changed_spinning(&self, seen: u32, spins: u32, timeout: Option<Duration>) -> bool {
        for _ in 0..spins {
            if self.seq.load(Ordering::Acquire) != seen {
                return true;
            }
            std::hint::spin_loop();
        }
        self.sleep_while(seen, timeout)
    }

    #[cold]
    fn sleep_while(&self, seen: u32, timeout: Option<Duration>) -> bool {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        // SYNC: pairs with `notify` (see the type's documentation).
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let changed = loop {
            if self.seq.load(Ordering::SeqCst) != seen {
                break true;
            }
            let left = match deadline {
                None => None,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break false,
                },
            };
            if sys::futex_wait(&self.seq, seen, left).is_err() {
                break false;
            }
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        changed
    }

    /// Waits until `ready()` returns true or the timeout elapses (`None`: no limit); returns
    /// whether it was ready. `ready` is checked first, then after every notify; make the
    /// condition true before notifying, and it is never missed.
    pub fn wait_until(&self, timeout: Option<Duration>, mut ready: impl FnMut() -> bool) -> bool {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let seen = self.sequence();
            if ready() {
                return true;
            }
            let left = match deadline {
                None => None,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return false,
                },
            };
            self.wait_changed(seen, left);
        }
    }

    /// Condition-variable use: releases the guard's mutex, waits for a notify (or the
    /// timeout), and locks the mutex again. Returns the relock result and whether a notify
    /// came (false: timed out). As with any condition variable, the notifier changes the
    /// condition while holding the mutex and notifies after that (under the mutex or after
    /// releasing it); such a notify is never missed. The relock itself has no timeout.
    /// Spurious returns are possible: re-check the condition in a loop.
    pub fn wait_with<'a>(
        &self,
        guard: ProcessMutexGuard<'a>,
        timeout: Option<Duration>,
    ) -> (Result<ProcessMutexGuard<'a>, LockError<'a>>, bool) {
        let mutex = guard.mutex();
        // Read under the lock: a notifier that changes the state under the lock and then
        // notifies moves the sequence past `seen`.
        let seen = self.sequence();
        drop(guard);
        let notified = self.wait_changed(seen, timeout);
        (mutex.lock(), notified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::ProcessMutex;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_waiter_with_a_timeout_returns_no_earlier() {
        let event = ProcessEvent::new();
        let timeout = Duration::from_millis(30);
        let start = Instant::now();
        assert!(!event.wait_changed(event.sequence(), Some(timeout)));
        assert!(start.elapsed() >= timeout);
        let start = Instant::now();
        assert!(!event.wait_until(Some(timeout), || false));
        assert!(start.elapsed() >= timeout);
    }

    #[test]
    fn a_changed_sequence_returns_at_once() {
        let event = ProcessEvent::new();
        let seen = event.sequence();
        event.notify_one();
        assert!(event.wait_changed(seen, None));
    }

    #[test]
    fn notify_all_wakes_every_waiter() {
        let event = ProcessEvent::new();
        let go = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| assert!(event.wait_until(None, || go.load(Ordering::Acquire) == 1)));
            }
            // Let them sleep (not needed for correctness), then release all at once.
            while event.waiters.load(Ordering::SeqCst) < 4 {
                std::thread::yield_now();
            }
            go.store(1, Ordering::Release);
            event.notify_all();
        });
    }

    #[test]
    fn a_condition_variable_hands_off_every_item() {
        const ITEMS: u64 = 10_000;
        let mutex = ProcessMutex::new();
        let changed = ProcessEvent::new();
        // Guarded by `mutex`: (items produced, items consumed); a slot holds one item.
        let produced = AtomicU64::new(0);
        let consumed = AtomicU64::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..ITEMS {
                    let mut guard = mutex.lock().unwrap();
                    while produced.load(Ordering::Relaxed) != consumed.load(Ordering::Relaxed) {
                        guard = changed.wait_with(guard, None).0.unwrap();
                    }
                    produced.fetch_add(1, Ordering::Relaxed);
                    drop(guard);
                    changed.notify_all();
                }
            });
            for _ in 0..ITEMS {
                let mut guard = mutex.lock().unwrap();
                while produced.load(Ordering::Relaxed) == consumed.load(Ordering::Relaxed) {
                    guard = changed.wait_with(guard, None).0.unwrap();
                }
                consumed.fetch_add(1, Ordering::Relaxed);
                drop(guard);
                changed.notify_all();
            }
        });
        assert_eq!(consumed.load(Ordering::Relaxed), ITEMS);
    }

    #[test]
    fn wait_with_times_out_and_relocks() {
        let mutex = ProcessMutex::new();
        let event = ProcessEvent::new();
        let guard = mutex.lock().unwrap();
        let (relocked, notified) = event.wait_with(guard, Some(Duration::from_millis(5)));
        assert!(!notified);
        let guard = relocked.unwrap();
        assert!(
            mutex.try_lock().unwrap().is_none(),
            "still held after the wait"
        );
        drop(guard);
    }
}
