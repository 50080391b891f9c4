//! Linux implementation of the platform layer.

mod futex;
mod process;
mod shm;

pub use futex::{
    ROBUST_NODE_OFFSET, RobustListNode, ThreadContext, current_thread,
    disable_robust_list_for_current_thread, futex_wait, futex_wake,
};
pub use process::{ProcessId, getpid, gettid, thread_alive};
pub use shm::*;
