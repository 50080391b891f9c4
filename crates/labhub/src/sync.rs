//! A robust mutex and an event that live inside shared memory and work between processes.
//!
//! [`ProcessMutex`] (64 bytes) and [`ProcessEvent`] (8 bytes) are `#[repr(C)]` values made of
//! atomics; put them in a mapping that several processes share, and lock or wait on them
//! from any of those processes. An all-zero region is a valid unlocked mutex and an idle
//! event, so a freshly truncated shared-memory file needs no initialisation.
//!
//! When a process dies holding a [`ProcessMutex`] (even by SIGKILL), the next locker gets the
//! lock inside [`LockError::OwnerDied`], so no caller can miss that the state the mutex guards
//! may be half-updated. [`ProcessEvent`] wakes waiters without losing a notification that
//! lands between a waiter's check and its sleep, alone (an event counter) or with the mutex
//! (a condition variable).
//!
//! # Example
//!
//! ```
//! use labhub::sync::{LockError, ProcessEvent, ProcessMutex};
//! use std::time::Duration;
//!
//! // In real use both live in a shared mapping, reached through `from_ptr`.
//! let mutex = ProcessMutex::new();
//! let ready = ProcessEvent::new();
//!
//! let guard = match mutex.lock() {
//!     Ok(guard) => guard,
//!     Err(LockError::OwnerDied(guard)) => guard, // repair the guarded state here
//!     Err(other) => panic!("{other}"),
//! };
//! drop(guard);
//! ready.notify_all();
//! assert!(ready.wait_until(Some(Duration::from_millis(10)), || true));
//! ```

mod event;
mod mutex;

pub use event::ProcessEvent;
pub use mutex::{LockError, ProcessMutex, ProcessMutexGuard};

/// A process identity that survives pid reuse: the pid and the process's start time (clock
/// ticks after boot, `/proc/<pid>/stat` field 22). What the mutex's liveness fallback and the
/// shared-memory consumer table judge processes by.
pub use crate::sys::ProcessId;

/// The kernel thread id of the calling thread: what [`ProcessMutex::owner`] reports.
pub fn current_thread_id() -> u32 {
    crate::sys::gettid()
}

/// Hooks the integration tests use to force fallback paths; not API (cargo feature
/// `test-support`).
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub mod testing {
    /// Unregisters the calling thread's kernel robust list, so its locks rely on the liveness
    /// fallback alone.
    pub fn disable_robust_list_for_current_thread() {
        crate::sys::disable_robust_list_for_current_thread();
    }
}
