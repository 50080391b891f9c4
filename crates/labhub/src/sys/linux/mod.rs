//! Linux implementation of the platform layer.

mod flock;
pub use flock::LockFile;
mod futex;
mod process;
mod shm;

pub use futex::{
    ROBUST_NODE_OFFSET, RobustListNode, ThreadContext, current_thread,
    disable_robust_list_for_current_thread, futex_wait, futex_wake,
};
pub use process::{ProcessId, getpid, gettid, thread_alive};
pub use shm::*;

pub mod log_sys;
